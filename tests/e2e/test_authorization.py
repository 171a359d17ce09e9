"""Authorization at the station, as the OCA test cases play it with a card and a cable.

Card then plug, plug then card, ConnectionTimeOut, an Invalid card, who may
stop a transaction (the same card, a card under the same parentIdTag), the
authorization cache with LocalPreAuthorize and ClearCache, and the offline
rules (LocalAuthorizeOffline, AllowOfflineTxForUnknownId).
"""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
CARD = "0A1B2C3D"
SIBLING = "11223344"
STRANGER = "55667788"
UNKNOWN = "99887766"


def sent(csms, action: str, **match) -> list:
    return csms.calls(action, cp_id=CP, **match)


async def settle(rig) -> None:
    """A few supervisor passes: long enough for a wrong start to show, short for a test."""
    await asyncio.sleep(0.4)
    await rig.status()


async def test_card_then_plug_starts_the_transaction(rig, csms):
    await rig.card(CARD)
    c = await rig.wait_connector(1, "Preparing")
    assert c["id_tag"] == CARD and c["transaction_id"] is None
    (auth,) = await csms.wait_for("Authorize")
    assert auth.payload == {"idTag": CARD}
    await rig.plug(1)
    await rig.charge(1)
    c = await rig.wait_connector(1, "Charging")
    assert c["contactor_closed"] is True
    (start,) = await csms.wait_for("StartTransaction")
    assert start.payload["idTag"] == CARD and start.payload["connectorId"] == 1
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.payload["connectorId"] == 1 and r.payload["status"] == "Charging",
    )
    statuses = [r.payload["status"] for r in sent(csms, "StatusNotification", connectorId=1)]
    after_card = statuses[statuses.index("Preparing") :]
    assert after_card[-1] == "Charging"
    # The EV may take a moment to ask for energy (SuspendedEV/EVSE) but never goes idle.
    assert set(after_card) <= {"Preparing", "SuspendedEV", "SuspendedEVSE", "Charging"}


async def test_plug_then_card_starts_the_transaction(rig, csms):
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    (auth,) = await csms.wait_for("Authorize")
    (start,) = await csms.wait_for("StartTransaction")
    assert start.payload["idTag"] == CARD
    assert csms.received.index(auth) < csms.received.index(start)


async def test_no_ev_within_connection_timeout_ends_the_authorization(make_registered_rig, csms):
    rig = await make_registered_rig(ocpp={"ConnectionTimeOut": 1})
    await rig.card(CARD)
    await rig.wait_connector(1, "Preparing")
    await csms.wait_for("Authorize")
    c = await rig.wait_connector(1, "Available", timeout=5)
    assert c["id_tag"] is None
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.payload["connectorId"] == 1 and r.payload["status"] == "Available",
        count=2,
    )
    # The driver comes back too late: plugging in starts nothing.
    await rig.plug(1)
    await rig.charge(1)
    await rig.wait_connector(1, "Preparing")
    await settle(rig)
    c = await rig.connector(1)
    assert c["status"] == "Preparing" and c["transaction_id"] is None
    assert c["contactor_closed"] is False
    assert not sent(csms, "StartTransaction")


@pytest.mark.parametrize("verdict", ["Invalid", "Blocked", "Expired"])
async def test_a_refused_card_starts_nothing(rig, csms, verdict):
    """TC_023: Authorize.conf Invalid / Blocked / Expired."""
    csms.cards["DEADBEEF"] = verdict
    await rig.plug(1)
    await rig.charge(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card("DEADBEEF")
    await csms.wait_for("Authorize", predicate=lambda r: r.payload["idTag"] == "DEADBEEF")
    await settle(rig)
    c = await rig.connector(1)
    assert c["status"] == "Preparing"
    assert c["contactor_closed"] is False and c["transaction_id"] is None and c["id_tag"] is None
    assert c["offered_current_a"] is None
    assert not sent(csms, "StartTransaction")


async def test_the_same_card_stops_its_transaction(rig, csms, start_charging):
    start = await start_charging(rig)
    await rig.card(CARD)
    c = await rig.wait_connector(1, "Finishing")
    assert c["contactor_closed"] is False
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["reason"] == "Local"
    assert stop.payload["idTag"] == CARD
    assert stop.payload["transactionId"] == 1  # what this CSMS gave the first transaction
    assert stop.payload["meterStop"] >= start.payload["meterStart"]
    # Stopping with the card that started it needs no Authorize.
    assert len(sent(csms, "Authorize")) == 1


async def test_a_card_with_the_same_parent_id_tag_stops_the_transaction(rig, csms, start_charging):
    csms.cards[CARD] = ("Accepted", "FLEET-1")
    csms.cards[SIBLING] = ("Accepted", "FLEET-1")
    await start_charging(rig)
    await rig.card(SIBLING)
    await rig.wait_connector(1, "Finishing")
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["reason"] == "Local"
    assert stop.payload["idTag"] == SIBLING
    (auth,) = sent(csms, "Authorize", idTag=SIBLING)
    assert csms.received.index(auth) < csms.received.index(stop)
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.payload["connectorId"] == 1 and r.payload["status"] == "Finishing",
    )


@pytest.mark.parametrize("stranger_parent", [None, "FLEET-2"])
async def test_another_card_without_the_parent_cannot_stop(
    rig, csms, start_charging, stranger_parent
):
    csms.cards[CARD] = ("Accepted", "FLEET-1")
    csms.cards[STRANGER] = ("Accepted", stranger_parent)
    await start_charging(rig)
    await rig.card(STRANGER)
    await csms.wait_for("Authorize", predicate=lambda r: r.payload["idTag"] == STRANGER)
    await settle(rig)
    c = await rig.connector(1)
    assert c["status"] == "Charging" and c["contactor_closed"] is True and c["id_tag"] == CARD
    assert not sent(csms, "StopTransaction")
    # The owner still can.
    await rig.card(CARD)
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["idTag"] == CARD


async def session(rig, csms, card: str = CARD) -> None:
    """Plug, card, charge, card, unplug: one whole session, back to Available."""
    starts = len(sent(csms, "StartTransaction"))
    stops = len(sent(csms, "StopTransaction"))
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(card)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    await csms.wait_for("StartTransaction", count=starts + 1)
    await rig.wait_status(lambda s: s["connectors"][0]["transaction_id"] is not None)
    await rig.card(card)
    await rig.wait_connector(1, "Finishing")
    await csms.wait_for("StopTransaction", count=stops + 1)
    await rig.unplug(1)
    await rig.wait_connector(1, "Available")
    # The StopTransaction.conf (whose idTagInfo refreshes the cache) has been taken in.
    await rig.wait_status(lambda s: s["ocpp"]["outbox_pending"] == 0, what="outbox drained")


async def test_local_pre_authorize_starts_a_cached_card_without_asking(make_registered_rig, csms):
    rig = await make_registered_rig(
        ocpp={"LocalPreAuthorize": True, "AuthorizationCacheEnabled": True}
    )
    await session(rig, csms)
    assert len(sent(csms, "Authorize", idTag=CARD)) == 1
    await session(rig, csms)
    assert len(sent(csms, "StartTransaction", idTag=CARD)) == 2
    assert len(sent(csms, "Authorize", idTag=CARD)) == 1

    assert await csms.call(CP, "ClearCache", {}) == {"status": "Accepted"}
    await session(rig, csms)
    assert len(sent(csms, "Authorize", idTag=CARD)) == 2
    assert len(sent(csms, "StartTransaction", idTag=CARD)) == 3


async def test_with_the_cache_disabled_every_start_asks_the_csms(make_registered_rig, csms):
    rig = await make_registered_rig(
        ocpp={"LocalPreAuthorize": True, "AuthorizationCacheEnabled": False}
    )
    await session(rig, csms)
    await session(rig, csms)
    assert len(sent(csms, "Authorize", idTag=CARD)) == 2
    assert len(sent(csms, "StartTransaction", idTag=CARD)) == 2


async def answer_taken_in(rig, record) -> None:
    """Until the station's frame log shows the CSMS's answer to ``record`` arriving.

    Going offline before that would leave the card to the offline rules instead.
    """
    for _ in range(200):
        frames = (await rig.ctl("log", lines=200))["frames"]
        if any(f["direction"] == "in" and record.unique_id in f["frame"] for f in frames):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the answer to {record.action} {record.unique_id} never arrived")


async def go_offline(rig) -> None:
    await rig.network(False)
    await rig.wait_status(lambda s: not s["ocpp"]["connected"], what="link down")


async def go_online(rig) -> None:
    await rig.network(True)
    await rig.wait_status(lambda s: s["ocpp"]["connected"], what="link up")


async def test_a_cached_card_starts_offline_with_local_authorize_offline(make_registered_rig, csms):
    rig = await make_registered_rig(
        ocpp={"LocalAuthorizeOffline": True, "AuthorizationCacheEnabled": True}
    )
    # The CSMS accepts the card once: the station remembers it.
    await rig.card(CARD)
    await csms.wait_for("Authorize")
    await rig.wait_connector(1, "Preparing")
    await rig.card(CARD)  # the same card again withdraws the authorization
    await rig.wait_connector(1, "Available")

    await go_offline(rig)
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(CARD)
    await rig.charge(1)
    c = await rig.wait_connector(1, "Charging")
    assert c["contactor_closed"] is True and c["id_tag"] == CARD
    assert len(sent(csms, "Authorize")) == 1
    assert not sent(csms, "StartTransaction")

    await go_online(rig)
    (start,) = await csms.wait_for("StartTransaction")
    assert start.payload["idTag"] == CARD
    await rig.wait_status(lambda s: s["connectors"][0]["transaction_id"] is not None)


async def test_an_unknown_card_starts_offline_with_allow_offline_tx_for_unknown_id(
    make_registered_rig, csms
):
    rig = await make_registered_rig(ocpp={"AllowOfflineTxForUnknownId": True})
    await go_offline(rig)
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(UNKNOWN)
    await rig.charge(1)
    c = await rig.wait_connector(1, "Charging")
    assert c["id_tag"] == UNKNOWN
    await asyncio.sleep(1.1)  # some energy, so that the stop has something to report
    await go_online(rig)
    (start,) = await csms.wait_for("StartTransaction")
    assert start.payload["idTag"] == UNKNOWN
    # The CSMS does not know the card: StopTransactionOnInvalidId (default true) ends it.
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["reason"] == "DeAuthorized"
    assert stop.payload["meterStop"] >= start.payload["meterStart"]
    c = await rig.wait_connector(1, "Finishing")
    assert c["contactor_closed"] is False


async def test_an_unknown_card_is_refused_offline_without_allow_offline_tx_for_unknown_id(
    make_registered_rig, csms
):
    rig = await make_registered_rig(ocpp={"AllowOfflineTxForUnknownId": False})
    await go_offline(rig)
    await rig.plug(1)
    await rig.charge(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(UNKNOWN)
    await settle(rig)
    c = await rig.connector(1)
    assert c["status"] == "Preparing" and c["transaction_id"] is None and c["id_tag"] is None
    assert c["contactor_closed"] is False
    await go_online(rig)
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.payload["connectorId"] == 1 and r.payload["status"] == "Preparing",
    )
    assert (await rig.status())["ocpp"]["outbox_pending"] == 0
    assert not sent(csms, "StartTransaction")
    assert not sent(csms, "Authorize")


async def test_a_jammed_cable_lock_starts_nothing(rig, csms):
    """TC_024: the lock fails, the connector is Faulted and no transaction starts."""
    await rig.fault("lock_jammed", True, connector=1)
    await rig.plug(1)
    await rig.charge(1)
    c = await rig.wait_connector(1, "Faulted")
    assert c["error_code"] == "ConnectorLockFailure"
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.payload["connectorId"] == 1 and r.payload["status"] == "Faulted",
    )
    await rig.card(CARD)
    await settle(rig)
    c = await rig.connector(1)
    assert c["contactor_closed"] is False and c["transaction_id"] is None
    assert not sent(csms, "StartTransaction")


async def test_a_sibling_card_stops_a_remote_started_transaction(rig, csms):
    """The parentIdTag comes with StartTransaction.conf when nobody asked Authorize before."""
    app_user = "A1B2C3D4"
    csms.cards[app_user] = ("Accepted", "FLEET-1")
    csms.cards[SIBLING] = ("Accepted", "FLEET-1")
    await rig.plug(1)
    await rig.charge(1)
    await rig.wait_connector(1, "Preparing")
    await csms.call(CP, "RemoteStartTransaction", {"idTag": app_user, "connectorId": 1})
    await rig.wait_status(lambda s: s["connectors"][0]["transaction_id"] is not None)
    assert not sent(csms, "Authorize")
    await rig.card(SIBLING)
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["reason"] == "Local"
    assert stop.payload["idTag"] == SIBLING


async def test_a_sibling_card_stops_a_transaction_started_offline(make_registered_rig, csms):
    csms.cards[CARD] = ("Accepted", "FLEET-1")
    csms.cards[SIBLING] = ("Accepted", "FLEET-1")
    rig = await make_registered_rig(ocpp={"AllowOfflineTxForUnknownId": True})
    await go_offline(rig)
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    await go_online(rig)
    await csms.wait_for("StartTransaction")
    await rig.wait_status(lambda s: s["connectors"][0]["transaction_id"] is not None)
    await rig.card(SIBLING)
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["idTag"] == SIBLING


async def test_card_first_then_the_ev_in_another_socket(make_registered_rig, csms):
    """One reader, two sockets: the card waits on the first, the driver plugs into the second."""
    rig = await make_registered_rig(connectors=2)
    await rig.card(CARD)
    await csms.wait_for("Authorize")
    await rig.wait_status(lambda s: [c["status"] for c in s["connectors"]].count("Preparing") == 1)
    await rig.plug(2)
    await rig.charge(2)
    await rig.wait_connector(2, "Charging")
    (start,) = await csms.wait_for("StartTransaction")
    assert start.payload["connectorId"] == 2 and start.payload["idTag"] == CARD
    # The other socket is free again, not held for a driver who is already charging.
    c = await rig.wait_connector(1, "Available")
    assert c["id_tag"] is None


@pytest.mark.parametrize(
    ("cached", "local_authorize_offline", "starts"),
    [
        ("Invalid", True, False),  # a card the station knows to be refused stays refused
        ("Blocked", True, False),
        ("Accepted", False, False),  # known, but local authorization offline is off
        ("Accepted", True, True),
    ],
)
async def test_offline_rules_for_a_cached_card(
    make_registered_rig, csms, cached, local_authorize_offline, starts
):
    """TC_037_3 and its siblings: AllowOfflineTxForUnknownId=true never lets these through."""
    csms.cards[CARD] = cached
    rig = await make_registered_rig(
        ocpp={
            "LocalAuthorizeOffline": local_authorize_offline,
            "AllowOfflineTxForUnknownId": False if cached == "Accepted" else True,
            "AuthorizationCacheEnabled": True,
        }
    )
    await rig.card(CARD)  # online: the CSMS's answer goes into the cache
    (auth,) = await csms.wait_for("Authorize")
    await answer_taken_in(rig, auth)
    if cached == "Accepted":
        await rig.wait_connector(1, "Preparing")
        await rig.card(CARD)
    await rig.wait_connector(1, "Available")
    await go_offline(rig)
    await rig.plug(1)
    await rig.charge(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(CARD)
    await settle(rig)
    c = await rig.connector(1)
    assert (c["transaction_local_id"] is not None) is starts
    assert c["contactor_closed"] is starts
