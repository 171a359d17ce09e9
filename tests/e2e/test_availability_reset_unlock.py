"""ChangeAvailability, UnlockConnector and Reset without a running transaction (and around one)."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
CARD = "0A1B2C3D"


def sent(csms, action: str, **match) -> list:
    return csms.calls(action, cp_id=CP, **match)


async def status_sent(csms, connector: int, status: str, count: int = 1) -> None:
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.payload["connectorId"] == connector and r.payload["status"] == status,
        count=count,
    )


async def change(csms, connector: int, kind: str) -> str:
    answer = await csms.call(CP, "ChangeAvailability", {"connectorId": connector, "type": kind})
    return answer["status"]


# -- UnlockConnector ------------------------------------------------------------------------


async def test_unlock_without_a_transaction(make_registered_rig, csms, start_charging):
    """TC_005_2: the EV left, the cable stays locked at the station until the CSMS unlocks it."""
    rig = await make_registered_rig(
        ocpp={"StopTransactionOnEVSideDisconnect": True, "UnlockConnectorOnEVSideDisconnect": False}
    )
    await start_charging(rig)
    await rig.unplug(1)
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["reason"] == "EVDisconnected"
    c = await rig.wait_connector(1, "Available")
    assert c["locked"] is True and c["transaction_id"] is None
    assert await csms.call(CP, "UnlockConnector", {"connectorId": 1}) == {"status": "Unlocked"}
    assert (await rig.connector(1))["locked"] is False
    await asyncio.sleep(0.3)
    assert len(sent(csms, "StopTransaction")) == 1


async def test_unlock_on_a_tethered_cable_is_not_supported(make_registered_rig, csms):
    rig = await make_registered_rig(mock={"lock": False})
    assert (await rig.connector(1))["locked"] is None
    answer = await csms.call(CP, "UnlockConnector", {"connectorId": 1})
    assert answer == {"status": "NotSupported"}


async def test_unlock_with_a_jammed_lock_fails(rig, csms):
    await rig.fault("lock_jammed", True, connector=1)
    answer = await csms.call(CP, "UnlockConnector", {"connectorId": 1})
    assert answer == {"status": "UnlockFailed"}
    # The jammed lock is reported to the CSMS too.
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: (
            r.payload["connectorId"] == 1 and r.payload["errorCode"] == "ConnectorLockFailure"
        ),
    )


async def test_unlock_of_an_unknown_connector_is_not_a_success(rig, csms):
    """TC_031: an unknown connector is NotSupported."""
    answer = await csms.call(CP, "UnlockConnector", {"connectorId": 7})
    assert answer == {"status": "NotSupported"}


# -- ChangeAvailability -----------------------------------------------------------------------


async def test_inoperative_connector_is_unavailable_and_takes_no_card(rig, csms):
    assert await change(csms, 1, "Inoperative") == "Accepted"
    c = await rig.wait_connector(1, "Unavailable")
    assert c["operative"] is False
    await status_sent(csms, 1, "Unavailable")
    await rig.plug(1)
    await rig.charge(1)
    await rig.card(CARD)
    await asyncio.sleep(0.4)
    c = await rig.connector(1)
    assert c["status"] == "Unavailable" and c["transaction_id"] is None
    assert c["contactor_closed"] is False
    assert not sent(csms, "StartTransaction")

    assert await change(csms, 1, "Operative") == "Accepted"
    await rig.wait_connector(1, "Preparing")
    await status_sent(csms, 1, "Preparing")


async def test_operative_again_is_available(rig, csms):
    assert await change(csms, 1, "Inoperative") == "Accepted"
    await status_sent(csms, 1, "Unavailable")
    assert await change(csms, 1, "Operative") == "Accepted"
    await rig.wait_connector(1, "Available")
    await status_sent(csms, 1, "Available", count=2)


async def test_operative_when_already_operative_is_accepted(rig, csms):
    assert await change(csms, 1, "Operative") == "Accepted"
    assert await change(csms, 0, "Operative") == "Accepted"
    await asyncio.sleep(0.3)
    assert (await rig.connector(1))["status"] == "Available"
    assert not sent(csms, "StatusNotification", status="Unavailable")


async def test_operative_cancels_a_scheduled_inoperative(rig, csms, start_charging):
    await start_charging(rig)
    assert await change(csms, 1, "Inoperative") == "Scheduled"
    assert await change(csms, 1, "Operative") == "Accepted"
    await rig.card(CARD)
    await csms.wait_for("StopTransaction")
    c = await rig.wait_connector(1, "Finishing")
    assert c["operative"] is True
    await asyncio.sleep(0.3)
    assert not sent(csms, "StatusNotification", status="Unavailable")


async def test_the_whole_station_inoperative_and_back(make_registered_rig, csms):
    rig = await make_registered_rig(connectors=2)
    assert await change(csms, 0, "Inoperative") == "Accepted"
    for connector in (0, 1, 2):
        await status_sent(csms, connector, "Unavailable")
    st = await rig.status()
    assert st["station"]["operative"] is False
    assert [c["status"] for c in st["connectors"]] == ["Unavailable", "Unavailable"]
    await rig.card(CARD)
    await asyncio.sleep(0.3)
    assert not sent(csms, "Authorize")

    assert await change(csms, 0, "Operative") == "Accepted"
    for connector in (0, 1, 2):
        await status_sent(csms, connector, "Available", count=2)


async def test_inoperative_during_a_transaction_is_scheduled(rig, csms, start_charging):
    await start_charging(rig)
    assert await change(csms, 1, "Inoperative") == "Scheduled"
    await asyncio.sleep(0.3)
    c = await rig.connector(1)
    assert c["status"] == "Charging" and c["contactor_closed"] is True
    assert not sent(csms, "StopTransaction")
    await rig.card(CARD)
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["reason"] == "Local"
    c = await rig.wait_connector(1, "Unavailable")
    assert c["operative"] is False
    await status_sent(csms, 1, "Unavailable")


async def test_station_inoperative_during_a_transaction_is_scheduled(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig(connectors=2)
    await start_charging(rig, connector=1)
    assert await change(csms, 0, "Inoperative") == "Scheduled"
    # The idle connector goes out of service at once, the busy one when its session ends.
    await rig.wait_connector(2, "Unavailable")
    assert (await rig.connector(1))["status"] == "Charging"
    await rig.card(CARD)
    await csms.wait_for("StopTransaction")
    await rig.wait_connector(1, "Unavailable")
    await status_sent(csms, 0, "Unavailable")
    assert (await rig.status())["station"]["operative"] is False


async def test_unavailable_survives_a_restart(rig, csms):
    assert await change(csms, 1, "Inoperative") == "Accepted"
    await rig.wait_connector(1, "Unavailable")
    await status_sent(csms, 1, "Unavailable")
    assert await rig.stop() == 0
    await rig.start()
    await csms.wait_for("BootNotification", count=2)
    c = await rig.wait_connector(1, "Unavailable")
    assert c["operative"] is False
    await status_sent(csms, 1, "Unavailable", count=2)
    # ... and so does Operative.
    assert await change(csms, 1, "Operative") == "Accepted"
    await rig.wait_connector(1, "Available")
    assert await rig.stop() == 0
    await rig.start()
    await csms.wait_for("BootNotification", count=3)
    await rig.wait_connector(1, "Available")


async def test_an_inoperative_station_stays_so_after_a_restart(make_registered_rig, csms):
    rig = await make_registered_rig(connectors=2)
    assert await change(csms, 0, "Inoperative") == "Accepted"
    await status_sent(csms, 0, "Unavailable")
    assert await rig.stop() == 0
    await rig.start()
    (_, boot) = await csms.wait_for("BootNotification", count=2)
    await rig.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", what="registration")
    for connector in (0, 1, 2):
        await csms.wait_for(
            "StatusNotification",
            predicate=lambda r, c=connector: r.payload["connectorId"] == c and r.time >= boot.time,
        )
    after_boot = {
        r.payload["connectorId"]: r.payload["status"]
        for r in sent(csms, "StatusNotification")
        if r.time >= boot.time
    }
    assert after_boot == {0: "Unavailable", 1: "Unavailable", 2: "Unavailable"}
    assert (await rig.status())["station"]["operative"] is False


async def test_change_availability_of_an_unknown_connector_is_rejected(rig, csms):
    assert await change(csms, 5, "Inoperative") == "Rejected"
    assert (await rig.connector(1))["status"] == "Available"


# -- Reset without a transaction --------------------------------------------------------------


async def test_reset_when_idle_reboots_and_boots_again(rig, csms):
    assert await csms.call(CP, "Reset", {"type": "Soft"}) == {"status": "Accepted"}
    await csms.wait_for("BootNotification", count=2, timeout=15)
    await rig.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
    )
    assert not sent(csms, "StopTransaction")
