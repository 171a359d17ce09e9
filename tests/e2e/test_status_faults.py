"""Hardware faults as the CSMS sees them: StatusNotification status and errorCode.

A fault that makes charging unsafe opens the contactor and shows Faulted
(welded contactor: PowerSwitchFailure; lock: ConnectorLockFailure); a fault
that does not stop energy flowing keeps the status and names itself in the
errorCode (silent meter: PowerMeterFailure, the charge goes on; dead reader:
ReaderFailure on connector 0; EV in state E: EVCommunicationError, the
session shows SuspendedEV).  MinimumStatusDuration keeps a flapping status
from reaching the CSMS.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
CARD = "0A1B2C3D"


def now() -> datetime:
    return datetime.now(UTC)


def notifications(csms, connector: int, since: datetime | None = None) -> list[tuple[str, str]]:
    return [
        (r.payload["status"], r.payload["errorCode"])
        for r in csms.received
        if r.cp_id == CP
        and r.action == "StatusNotification"
        and r.payload["connectorId"] == connector
        and (since is None or r.time >= since)
    ]


async def notified(csms, connector: int, status: str, error_code: str, *, since: datetime):
    """The StatusNotification (connector, status, errorCode) sent after ``since``."""

    def match(r) -> bool:
        p = r.payload
        return (
            r.time >= since
            and p["connectorId"] == connector
            and p["status"] == status
            and p["errorCode"] == error_code
        )

    (first, *_) = await csms.wait_for("StatusNotification", predicate=match)
    return first


async def test_welded_contactor_is_faulted_power_switch_failure_and_blocks_new_sessions(
    rig, csms, start_charging
):
    await start_charging(rig)
    await rig.fault("contactor_welded", True, connector=1)
    t = now()
    await rig.card(CARD)  # the driver stops: the contacts do not open
    await notified(csms, 1, "Faulted", "PowerSwitchFailure", since=t)
    c = await rig.connector(1)
    assert c["status"] == "Faulted"
    assert c["contactor_closed"] is False  # the coil is released; the contacts are stuck
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["reason"] == "Local"
    # Nobody may start a session on it: the card finds no connector.
    await rig.card(CARD)
    await asyncio.sleep(0.5)
    c = await rig.connector(1)
    assert (c["status"], c["transaction_local_id"], c["contactor_closed"]) == (
        "Faulted",
        None,
        False,
    )
    assert len([r for r in csms.received if r.action == "StartTransaction"]) == 1
    # Repaired: back in service, and the CSMS is told.
    t = now()
    await rig.fault("contactor_welded", False, connector=1)
    await notified(csms, 1, "Finishing", "NoError", since=t)


async def test_jammed_lock_while_charging_stops_the_session_and_shows_connector_lock_failure(
    rig, csms, start_charging
):
    await start_charging(rig)
    t = now()
    await rig.fault("lock_jammed", True, connector=1)
    await notified(csms, 1, "Faulted", "ConnectorLockFailure", since=t)
    c = await rig.connector(1)
    assert c["contactor_closed"] is False
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["reason"] == "EmergencyStop"


async def test_jammed_lock_before_the_session_refuses_to_start(rig, csms):
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    t = now()
    await rig.fault("lock_jammed", True, connector=1)
    await notified(csms, 1, "Faulted", "ConnectorLockFailure", since=t)
    await rig.card(CARD)
    await rig.charge(1)
    await asyncio.sleep(0.5)
    c = await rig.connector(1)
    assert c["status"] == "Faulted" and c["contactor_closed"] is False
    assert c["offered_current_a"] is None
    assert not [r for r in csms.received if r.action == "StartTransaction"]
    t = now()
    await rig.fault("lock_jammed", False, connector=1)
    await notified(csms, 1, "Preparing", "NoError", since=t)


async def test_silent_meter_is_power_meter_failure_and_the_charge_goes_on(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig(ocpp={"MeterValueSampleInterval": 1})
    await start_charging(rig)
    t = now()
    await rig.fault("meter_silent", True, connector=1)
    await notified(csms, 1, "Charging", "PowerMeterFailure", since=t)
    await asyncio.sleep(1.2)
    c = await rig.connector(1)
    assert (c["status"], c["error_code"], c["contactor_closed"]) == (
        "Charging",
        "PowerMeterFailure",
        True,
    )
    assert not [r for r in csms.received if r.action == "StopTransaction"]
    t = now()
    await rig.fault("meter_silent", False, connector=1)
    await notified(csms, 1, "Charging", "NoError", since=t)


async def test_dead_reader_is_reader_failure_on_connector_0(rig, csms):
    t = now()
    await rig.fault("reader_dead", True)
    await notified(csms, 0, "Available", "ReaderFailure", since=t)
    assert ("Faulted", "ReaderFailure") not in notifications(csms, 1)
    t = now()
    await rig.fault("reader_dead", False)
    await notified(csms, 0, "Available", "NoError", since=t)


async def test_ev_error_suspends_the_session_with_ev_communication_error(rig, csms, start_charging):
    await start_charging(rig)
    t = now()
    await rig.fault("ev_error", True, connector=1)
    await notified(csms, 1, "SuspendedEV", "EVCommunicationError", since=t)
    c = await rig.connector(1)
    assert c["contactor_closed"] is False
    assert c["transaction_id"] is not None  # the session is kept
    t = now()
    await rig.fault("ev_error", False, connector=1)
    await notified(csms, 1, "Charging", "NoError", since=t)
    assert (await rig.connector(1))["contactor_closed"] is True
    assert not [r for r in csms.received if r.action == "StopTransaction"]


async def test_minimum_status_duration_holds_a_flapping_status(make_registered_rig, csms):
    rig = await make_registered_rig(ocpp={"MinimumStatusDuration": 2})
    # The boot's own StatusNotification of the connector may still be on its way when
    # the registration is seen: it is not part of the flapping.
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.cp_id == CP and r.payload["connectorId"] == 1,
    )
    t = now()
    for _ in range(2):  # a cable wiggled in and out
        await rig.plug(1)
        await rig.wait_connector(1, "Preparing")
        await rig.unplug(1)
        await rig.wait_connector(1, "Available")
    await asyncio.sleep(0.3)
    assert notifications(csms, 1, since=t) == []
    # Plugged and left: Preparing goes out, once it has lasted MinimumStatusDuration.
    await rig.plug(1)
    plugged = now()
    sent = await notified(csms, 1, "Preparing", "NoError", since=t)
    assert sent.time - plugged >= timedelta(seconds=1.8)
    assert notifications(csms, 1, since=t) == [("Preparing", "NoError")]
