"""Every way a transaction ends, with the StopTransaction reason a CSMS bills by.

Each test checks what the OCA test cases check of the StopTransaction.req:
the reason, the transactionId the CSMS gave, a meterStop not below the
meterStart, and that it is sent exactly once.
"""

from __future__ import annotations

import asyncio

import pytest

from chargerd.clock import parse_iso

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
CARD = "0A1B2C3D"


def sent(csms, action: str, **match) -> list:
    return csms.calls(action, cp_id=CP, **match)


async def the_stop(csms, start, reason: str, *, timeout: float = 10):
    """The one StopTransaction of ``start``'s transaction, checked against it."""
    (stop,) = await csms.wait_for("StopTransaction", timeout=timeout)
    assert stop.payload["reason"] == reason
    assert stop.payload["meterStop"] >= start.payload["meterStart"]
    assert parse_iso(stop.payload["timestamp"]) >= parse_iso(start.payload["timestamp"])
    starts = sent(csms, "StartTransaction")
    assert len(starts) == 1 and starts[0] is start
    return stop


async def some_energy(rig) -> None:
    """Charge for a little over one meter reading, so that meterStop has moved."""
    await asyncio.sleep(1.1)


async def test_local(rig, csms, start_charging):
    start = await start_charging(rig)
    await some_energy(rig)
    await rig.card(CARD)
    stop = await the_stop(csms, start, "Local")
    assert stop.payload["meterStop"] > start.payload["meterStart"]
    assert stop.payload["transactionId"] == 1
    c = await rig.wait_connector(1, "Finishing")
    assert c["locked"] is False  # the driver may take the cable


async def test_remote(rig, csms, start_charging):
    start = await start_charging(rig)
    await some_energy(rig)
    assert await csms.call(CP, "RemoteStopTransaction", {"transactionId": 1}) == {
        "status": "Accepted"
    }
    stop = await the_stop(csms, start, "Remote")
    assert stop.payload["meterStop"] > start.payload["meterStart"]
    assert stop.payload["transactionId"] == 1


async def test_ev_disconnected(make_registered_rig, csms, start_charging):
    rig = await make_registered_rig(ocpp={"StopTransactionOnEVSideDisconnect": True})
    start = await start_charging(rig)
    await rig.unplug(1)
    await the_stop(csms, start, "EVDisconnected")
    c = await rig.wait_connector(1, "Available")
    assert c["contactor_closed"] is False and c["transaction_id"] is None


async def test_ev_side_disconnect_suspends_when_configured_not_to_stop(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig(
        ocpp={
            "StopTransactionOnEVSideDisconnect": False,
            "UnlockConnectorOnEVSideDisconnect": False,
        }
    )
    start = await start_charging(rig)
    await rig.unplug(1)
    # TC_005_3: the transaction stays, the EV is away: SuspendedEV, the contactor open.
    c = await rig.wait_connector(1, "SuspendedEV")
    assert c["contactor_closed"] is False and c["transaction_id"] == 1
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.payload["connectorId"] == 1 and r.payload["status"] == "SuspendedEV",
    )
    await asyncio.sleep(0.4)
    assert not sent(csms, "StopTransaction")
    # The owner comes back with the card: now it stops, as a local stop.
    await rig.card(CARD)
    await the_stop(csms, start, "Local")
    c = await rig.wait_connector(1, "Available")
    assert c["transaction_id"] is None


async def test_remote_stop_while_the_ev_is_away(make_registered_rig, csms, start_charging):
    """TC_005_3: the transaction kept after an EV-side unplug ends by RemoteStopTransaction."""
    rig = await make_registered_rig(
        ocpp={
            "StopTransactionOnEVSideDisconnect": False,
            "UnlockConnectorOnEVSideDisconnect": False,
        }
    )
    start = await start_charging(rig)
    await rig.unplug(1)
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.payload["connectorId"] == 1 and r.payload["status"] == "SuspendedEV",
    )
    assert await csms.call(CP, "RemoteStopTransaction", {"transactionId": 1}) == {
        "status": "Accepted"
    }
    await the_stop(csms, start, "Remote")
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.payload["connectorId"] == 1 and r.payload["status"] == "Available",
        count=2,
    )


async def test_ev_side_disconnect_without_stop_resumes_when_the_ev_is_back(
    make_registered_rig, csms, start_charging
):
    """OCPP 1.6 §4.10: with the transaction kept, energy transfer is allowed again on return."""
    rig = await make_registered_rig(ocpp={"StopTransactionOnEVSideDisconnect": False})
    await start_charging(rig)
    await rig.unplug(1)
    await rig.wait_connector(1, "SuspendedEV")
    await rig.plug(1)
    await rig.charge(1)
    c = await rig.wait_connector(1, "Charging")
    assert c["contactor_closed"] is True and c["transaction_id"] == 1
    assert len(sent(csms, "StartTransaction")) == 1
    assert not sent(csms, "StopTransaction")


async def test_unlock_command(rig, csms, start_charging):
    start = await start_charging(rig)
    answer = await csms.call(CP, "UnlockConnector", {"connectorId": 1})
    assert answer == {"status": "Unlocked"}
    await the_stop(csms, start, "UnlockCommand")
    c = await rig.wait_connector(1, "Finishing")
    assert c["locked"] is False and c["contactor_closed"] is False


@pytest.mark.parametrize(("kind", "reason"), [("Soft", "SoftReset"), ("Hard", "HardReset")])
async def test_reset(rig, csms, start_charging, kind, reason):
    start = await start_charging(rig)
    pid = rig.proc.pid
    assert await csms.call(CP, "Reset", {"type": kind}) == {"status": "Accepted"}
    stop = await the_stop(csms, start, reason)
    assert stop.payload["transactionId"] == 1
    # The daemon re-executes itself (same PID) and boots again.
    await csms.wait_for("BootNotification", count=2, timeout=15)
    assert rig.running and rig.proc.pid == pid
    await rig.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
    )
    st = await rig.status()
    assert st["station"]["uptime_s"] < 15
    assert st["connectors"][0]["transaction_id"] is None
    # Nothing left behind: the reboot's own security events (ResetOrReboot,
    # StartupOfTheDevice, critical, so queued) drain right after the registration.
    await rig.wait_status(lambda s: s["ocpp"]["outbox_pending"] == 0, what="outbox drained")
    # No PowerLoss stop for a transaction that ended cleanly.
    await asyncio.sleep(0.3)
    assert len(sent(csms, "StopTransaction")) == 1


async def test_deauthorized_by_start_transaction_conf(make_registered_rig, csms, start_charging):
    csms.start_transaction_status = "Invalid"
    rig = await make_registered_rig(ocpp={"StopTransactionOnInvalidId": True})
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(CARD)
    await rig.charge(1)
    (start,) = await csms.wait_for("StartTransaction")
    stop = await the_stop(csms, start, "DeAuthorized")
    assert stop.payload["transactionId"] == 1
    c = await rig.wait_connector(1, "Finishing")
    assert c["contactor_closed"] is False and c["transaction_id"] is None


async def test_max_energy_on_invalid_id_stops_energy_then_the_owner_ends_it(
    make_registered_rig, csms
):
    """StopTransactionOnInvalidId=false: charging goes on up to MaxEnergyOnInvalidId, then
    the energy stops (SuspendedEVSE) and the transaction stays open until the card ends it."""
    csms.start_transaction_status = "Invalid"
    limit_wh = 8  # the mock EV draws 22 kW: about 6 Wh a second
    rig = await make_registered_rig(
        ocpp={"StopTransactionOnInvalidId": False, "MaxEnergyOnInvalidId": limit_wh}
    )
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(CARD)
    await rig.charge(1)
    (start,) = await csms.wait_for("StartTransaction")
    await rig.wait_status(lambda s: s["connectors"][0]["transaction_id"] == 1)
    c = await rig.wait_connector(1, "SuspendedEVSE", timeout=10)
    assert c["contactor_closed"] is False and c["offered_current_a"] is None
    assert c["energy_wh"] - start.payload["meterStart"] >= limit_wh
    assert sent(csms, "StopTransaction") == []
    await rig.card(CARD)
    stop = await the_stop(csms, start, "Local", timeout=10)
    assert stop.payload["meterStop"] - start.payload["meterStart"] >= limit_wh


async def test_a_stop_is_delivered_once_even_when_the_answer_is_slow(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig()
    start = await start_charging(rig)
    csms.delay_s = 0.5
    await rig.card(CARD)
    await the_stop(csms, start, "Local")
    await rig.wait_status(lambda s: s["ocpp"]["outbox_pending"] == 0, what="outbox drained")
    await asyncio.sleep(0.6)
    assert len(sent(csms, "StopTransaction")) == 1


async def test_hard_reset_stops_every_transaction(make_registered_rig, csms, start_charging):
    csms.cards["11223344"] = "Accepted"
    rig = await make_registered_rig(connectors=2)
    starts = [
        await start_charging(rig, connector=1),
        await start_charging(rig, card="11223344", connector=2),
    ]
    assert await csms.call(CP, "Reset", {"type": "Hard"}) == {"status": "Accepted"}
    stops = await csms.wait_for("StopTransaction", count=2)
    assert [s.payload["reason"] for s in stops] == ["HardReset", "HardReset"]
    by_tx = {s.payload["transactionId"]: s for s in stops}
    assert sorted(by_tx) == [1, 2]
    for tx_id, start in zip((1, 2), starts, strict=True):
        assert by_tx[tx_id].payload["meterStop"] >= start.payload["meterStart"]
        assert by_tx[tx_id].payload["idTag"] == start.payload["idTag"]
    await csms.wait_for("BootNotification", count=2, timeout=15)
    await rig.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
    )
    assert len(sent(csms, "StopTransaction")) == 2


async def test_deauthorized_keeps_the_cable_locked_until_the_owner_comes(make_registered_rig, csms):
    """OCPP 1.6 §4.8: after DeAuthorized the cable SHOULD stay locked until the owner's card."""
    csms.start_transaction_status = "Invalid"
    csms.cards["55667788"] = "Invalid"
    rig = await make_registered_rig(ocpp={"StopTransactionOnInvalidId": True})
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(CARD)
    await rig.charge(1)
    (start,) = await csms.wait_for("StartTransaction")
    await the_stop(csms, start, "DeAuthorized")
    c = await rig.wait_connector(1, "Finishing")
    assert c["locked"] is True
    # Somebody else's card does not free the owner's cable.
    await rig.card("55667788")
    await csms.wait_for("Authorize", predicate=lambda r: r.payload["idTag"] == "55667788")
    await asyncio.sleep(0.3)
    assert (await rig.connector(1))["locked"] is True
    # The owner's card does, even though the CSMS no longer accepts it for charging.
    authorizes = len(sent(csms, "Authorize"))
    await rig.card(CARD)
    await rig.wait_status(lambda s: s["connectors"][0]["locked"] is False, what="unlocked")
    await asyncio.sleep(0.3)
    assert len(sent(csms, "Authorize")) == authorizes
    assert len(sent(csms, "StartTransaction")) == 1
    await rig.unplug(1)
    await rig.wait_connector(1, "Available")
