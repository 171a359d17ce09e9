"""Residual current and lock loss end to end: the real daemon on the mock station against
the bench CSMS, driven through ``chargerctl`` as a technician would.

An RCD trip during a charge opens the contactor, stops the transaction
(EmergencyStop) and shows Faulted / GroundFailure; its self-test runs before the
contactor closes and ``chargerctl selftest rcd`` reports it.  A lock that lets go
under the plug stops the energy and the transaction (Faulted /
ConnectorLockFailure).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.e2e

CP = "CP-TEST"


async def ctl(rig, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chargerd.cli", "--socket", str(rig.socket), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def notified(csms, connector: int, status: str, error_code: str, *, since: datetime):
    def match(r) -> bool:
        p = r.payload
        return (
            r.time >= since
            and r.cp_id == CP
            and p["connectorId"] == connector
            and p["status"] == status
            and p["errorCode"] == error_code
        )

    (first, *_) = await csms.wait_for("StatusNotification", predicate=match)
    return first


async def test_an_rcd_trip_stops_the_charge_as_faulted_ground_failure(rig, csms, start_charging):
    await start_charging(rig)
    tx_id = (await rig.connector(1))["transaction_id"]
    t = datetime.now(UTC)
    out = await ctl(rig, "sim", "fault", "rcd_trip", "on", "--connector", "1")
    assert out.returncode == 0, out.stderr
    await notified(csms, 1, "Faulted", "GroundFailure", since=t)
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["reason"] == "EmergencyStop"
    assert stop.payload["transactionId"] == tx_id
    c = await rig.connector(1)
    assert c["contactor_closed"] is False and c["offered_current_a"] is None
    assert c["rcd_tripped"] is True and "rcd_tripped" in c["faults"]
    status = json.loads((await ctl(rig, "status", "--json")).stdout)
    assert {"connector": 1, "fault": "rcd_tripped"} in status["faults"]

    out = await ctl(rig, "sim", "fault", "rcd_trip", "off", "--connector", "1")
    assert out.returncode == 0
    await rig.wait_status(
        lambda s: s["connectors"][0]["error_code"] == "NoError", what="the trip released"
    )


async def test_selftest_rcd_passes_on_a_healthy_monitor_and_fails_on_a_dead_one(rig):
    ok = await ctl(rig, "selftest", "rcd", "--connector", "1")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "residual-current monitor" in ok.stdout
    await ctl(rig, "sim", "fault", "rcd_test_fail", "on", "--connector", "1")
    bad = await ctl(rig, "selftest", "rcd", "--connector", "1", "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["passed"] is False
    await rig.wait_connector(1, "Faulted")
    await ctl(rig, "sim", "fault", "rcd_test_fail", "off", "--connector", "1")
    again = await ctl(rig, "selftest", "rcd", "--connector", "1")
    assert again.returncode == 0  # a passing test clears the standing failure
    await rig.wait_connector(1, "Available")


async def test_a_lock_lost_while_charging_stops_the_energy(rig, csms, start_charging):
    await start_charging(rig)
    t = datetime.now(UTC)
    await rig.fault("lock_lost", True, connector=1)
    await notified(csms, 1, "Faulted", "ConnectorLockFailure", since=t)
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["reason"] == "EmergencyStop"
    c = await rig.connector(1)
    assert c["contactor_closed"] is False and c["offered_current_a"] is None


async def test_the_fault_list_names_the_new_faults(rig):
    listing = await ctl(rig, "sim", "fault", "--list")
    assert listing.returncode == 0
    for name in ("rcd_trip", "lock_lost", "rcd_test_fail", "contactor_welded"):
        assert name in listing.stdout
