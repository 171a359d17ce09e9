"""Cold boot as the OCA test cases check it: Accepted, Pending, Rejected, and the heartbeat."""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest

pytestmark = pytest.mark.e2e

CP = "CP-TEST"


def actions(csms) -> list[str]:
    return [r.action for r in csms.received if r.cp_id == CP]


async def test_boot_payload_carries_the_identity_from_the_config(make_rig, csms):
    rig = await make_rig(start=False, connectors=2)
    text = rig.config_path.read_text()
    rig.config_path.write_text(
        text.replace(
            'model = "rig"',
            'model = "rig"\nserial_number = "SN-0042"\nfirmware_version = "7.3.1-bench"',
        )
    )
    await rig.start()
    (boot,) = await csms.wait_for("BootNotification")
    assert boot.payload["chargePointVendor"] == "chargerd"
    assert boot.payload["chargePointModel"] == "rig"
    assert boot.payload["chargePointSerialNumber"] == "SN-0042"
    assert boot.payload["chargeBoxSerialNumber"] == "SN-0042"  # what older back ends read
    assert boot.payload["firmwareVersion"] == "7.3.1-bench"


async def test_accepted_boot_then_every_connector_status_then_heartbeats(make_rig, csms):
    csms.heartbeat_interval = 1
    rig = await make_rig(connectors=2)
    for connector in (0, 1, 2):
        await csms.wait_for(
            "StatusNotification",
            predicate=lambda r, c=connector: r.payload["connectorId"] == c,
        )
    beats = await csms.wait_for("Heartbeat", count=3, timeout=8)
    seen = actions(csms)
    assert seen[0] == "BootNotification"
    assert seen.count("BootNotification") == 1
    statuses = [r for r in csms.received if r.action == "StatusNotification"]
    assert {r.payload["connectorId"]: r.payload["status"] for r in statuses[:3]} == {
        0: "Available",
        1: "Available",
        2: "Available",
    }
    assert all(r.payload["errorCode"] == "NoError" for r in statuses[:3])
    # The interval the CSMS gave is the one in force, and the heartbeat keeps it.
    gaps = [(b.time - a.time).total_seconds() for a, b in pairwise(beats)]
    assert all(gap >= 0.8 for gap in gaps), gaps
    st = await rig.status()
    assert st["ocpp"]["registration"] == "Accepted"
    assert st["ocpp"]["last_heartbeat"] is not None
    hb = await rig.ctl("config.get", keys=["HeartbeatInterval"])
    assert hb["configuration_key"][0]["value"] == "1"


async def test_pending_boot_is_retried_and_nothing_else_is_sent_until_accepted(make_rig, csms):
    csms.boot_status = "Pending"
    csms.heartbeat_interval = 1
    rig = await make_rig()
    boots = await csms.wait_for("BootNotification", count=2, timeout=8)
    gaps = [(b.time - a.time).total_seconds() for a, b in pairwise(boots)]
    assert all(gap >= 0.8 for gap in gaps), gaps
    assert (await rig.status())["ocpp"]["registration"] == "Pending"
    # The CSMS may configure a pending station; the station answers it.
    answer = await csms.call(CP, "GetConfiguration", {"key": ["NumberOfConnectors"]})
    assert answer["configurationKey"][0]["value"] == "1"
    # A driver at a pending station: no Authorize, no StatusNotification, no transaction.
    await rig.plug(1)
    await rig.card("0A1B2C3D")
    await rig.wait_connector(1, "Preparing")
    await csms.wait_for("BootNotification", count=len(boots) + 1, timeout=5)
    assert set(actions(csms)) == {"BootNotification"}

    csms.boot_status = "Accepted"
    csms.heartbeat_interval = 300
    await rig.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=5, what="registration"
    )
    await csms.wait_for("StatusNotification", predicate=lambda r: r.payload["connectorId"] == 1)
    seen = actions(csms)
    first_other = next(i for i, a in enumerate(seen) if a != "BootNotification")
    # StartupOfTheDevice (a critical security event, queued since the start) follows too.
    assert set(seen[first_other:]) <= {"StatusNotification", "SecurityEventNotification"}


async def test_rejected_boot_is_retried_after_the_interval_and_nothing_else_is_sent(make_rig, csms):
    csms.boot_status = "Rejected"
    csms.heartbeat_interval = 1
    rig = await make_rig()
    boots = await csms.wait_for("BootNotification", count=2, timeout=8)
    gaps = [(b.time - a.time).total_seconds() for a, b in pairwise(boots)]
    assert all(gap >= 0.8 for gap in gaps), gaps
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.unplug(1)
    await rig.wait_connector(1, "Available")
    await csms.wait_for("BootNotification", count=len(boots) + 1, timeout=5)
    assert set(actions(csms)) == {"BootNotification"}
    st = await rig.status()
    assert st["ocpp"]["registration"] == "Rejected"
    assert st["ocpp"]["last_heartbeat"] is None
    # A Rejected interval is a retry interval, not a heartbeat interval.
    hb = await rig.ctl("config.get", keys=["HeartbeatInterval"])
    assert hb["configuration_key"][0]["value"] != "1"

    csms.boot_status = "Accepted"
    await rig.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=5, what="registration"
    )
    await csms.wait_for("StatusNotification", predicate=lambda r: r.payload["connectorId"] == 0)


async def test_boot_is_sent_once_per_start_and_again_after_a_restart(make_registered_rig, csms):
    rig = await make_registered_rig()
    await csms.wait_for("StatusNotification", predicate=lambda r: r.payload["connectorId"] == 1)
    assert await rig.stop() == 0
    await rig.start()
    await csms.wait_for("BootNotification", count=2)
    await asyncio.sleep(0.3)
    assert actions(csms).count("BootNotification") == 2
