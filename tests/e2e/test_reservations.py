"""Reservation end to end: the real daemon on the mock station, the bench CSMS over a
real websocket sending ReserveNow / CancelReservation as an operator's CSMS would."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from chargerd.clock import iso

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
OWNER, SIBLING, STRANGER, OTHER = "AA000001", "AA000002", "BB000001", "CC000001"


def expiry(seconds: float) -> str:
    return iso(datetime.now(UTC) + timedelta(seconds=seconds))


async def reserve_now(csms, connector: int, tag: str, rid: int, seconds=600, parent=None) -> str:
    payload = {
        "connectorId": connector,
        "expiryDate": expiry(seconds),
        "idTag": tag,
        "reservationId": rid,
    }
    if parent:
        payload["parentIdTag"] = parent
    return (await csms.call(CP, "ReserveNow", payload))["status"]


async def no_start_for(csms, tag: str, seconds: float = 1.5) -> None:
    """Give the station time to (wrongly) start; assert it did not."""
    await asyncio.sleep(seconds)
    assert csms.calls("StartTransaction", CP, idTag=tag) == []


def statuses(csms, connector: int) -> list[str]:
    out: list[str] = []
    for r in csms.calls("StatusNotification", CP, connectorId=connector):
        if not out or out[-1] != r.payload["status"]:
            out.append(r.payload["status"])
    return out


async def test_reservation_on_connector_zero_with_two_connectors(
    csms, make_registered_rig, start_charging
):
    csms.accept_all_cards = True
    rig = await make_registered_rig(connectors=2)
    assert await reserve_now(csms, 0, OWNER, 11) == "Accepted"
    st = await rig.status()
    assert [c["status"] for c in st["connectors"]] == ["Available", "Available"]
    assert [(r["reservation_id"], r["connector_id"]) for r in st["reservations"]] == [(11, 0)]
    # Someone else charges on connector 1: connector 2 is the one left, it is held.
    await start_charging(rig, card=STRANGER, connector=1)
    await rig.wait_connector(2, "Reserved")
    await csms.wait_for(
        "StatusNotification",
        lambda r: (r.payload["connectorId"], r.payload["status"]) == (2, "Reserved"),
    )
    assert await reserve_now(csms, 0, OTHER, 12) == "Occupied"
    # A third driver plugs into the held connector: refused.
    await rig.plug(2)
    await rig.card(OTHER)
    await no_start_for(csms, OTHER)
    # The owner takes it, and the StartTransaction names the reservation.
    await rig.card(OWNER)
    start = await csms.wait_for("StartTransaction", lambda r: r.payload["idTag"] == OWNER)
    assert (start[0].payload["connectorId"], start[0].payload.get("reservationId")) == (2, 11)
    st = await rig.wait_status(lambda s: s["reservations"] == [], what="reservation used")
    assert st["connectors"][1]["reservation"] is None


async def test_a_reserved_connector_refuses_another_card_and_accepts_a_sibling(
    csms, make_registered_rig
):
    csms.cards.update(
        {
            OWNER: ("Accepted", "FLEET"),
            SIBLING: ("Accepted", "FLEET"),
            STRANGER: ("Accepted", "ELSEWHERE"),
        }
    )
    rig = await make_registered_rig()
    assert await reserve_now(csms, 1, OWNER, 21, parent="FLEET") == "Accepted"
    conn = await rig.wait_connector(1, "Reserved")
    assert conn["reservation"]["id_tag"] == OWNER
    await rig.plug(1)
    await rig.card(STRANGER)
    await no_start_for(csms, STRANGER)
    await rig.card(SIBLING)
    await rig.charge(1)
    start = await csms.wait_for("StartTransaction")
    assert (start[0].payload["idTag"], start[0].payload.get("reservationId")) == (SIBLING, 21)
    await rig.wait_connector(1, "Charging")
    assert (await rig.status())["reservations"] == []
    assert statuses(csms, 1)[:2] == ["Available", "Reserved"]


async def test_a_reservation_expires_also_across_a_restart(csms, make_registered_rig):
    rig = await make_registered_rig()
    assert await reserve_now(csms, 1, OWNER, 31, seconds=5) == "Accepted"
    await rig.wait_connector(1, "Reserved")
    await rig.stop()
    await rig.start()
    conn = await rig.wait_connector(1, "Reserved")  # persisted
    assert conn["reservation"]["reservation_id"] == 31
    await rig.wait_connector(1, "Available", timeout=15)
    assert (await rig.status())["reservations"] == []
    assert statuses(csms, 1)[-2:] == ["Reserved", "Available"]


async def test_cancel_and_answers(csms, make_registered_rig):
    rig = await make_registered_rig(connectors=2)
    assert await reserve_now(csms, 1, OWNER, 41) == "Accepted"
    assert await reserve_now(csms, 1, STRANGER, 42) == "Occupied"
    assert await reserve_now(csms, 3, STRANGER, 43) == "Rejected"
    assert await reserve_now(csms, 2, STRANGER, 44, seconds=-5) == "Rejected"
    assert (await csms.call(CP, "CancelReservation", {"reservationId": 99}))["status"] == (
        "Rejected"
    )
    assert (await csms.call(CP, "CancelReservation", {"reservationId": 41}))["status"] == (
        "Accepted"
    )
    await rig.wait_connector(1, "Available")
    assert (await csms.call(CP, "GetConfiguration", {"key": ["ReserveConnectorZeroSupported"]}))[
        "configurationKey"
    ][0]["value"] == "true"
