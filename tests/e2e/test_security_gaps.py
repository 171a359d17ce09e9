"""The last Security Whitepaper events from the real daemon: AttemptedReplayAttacks on a
repeated CALL id, SecurityLogWasCleared from ``chargerctl security-log --clear``."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_chargerctl import ctl
from tests.e2e.test_security_events import CP, events, security_log

pytestmark = pytest.mark.e2e


async def test_a_replayed_call_raises_attempted_replay_attacks(rig, csms):
    frame = '[2, "replay-1", "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "120"}]'
    await csms.send_raw(CP, frame)
    assert await csms.recv_raw_response(CP, "replay-1", timeout=5) == [
        3,
        "replay-1",
        {"status": "Accepted"},
    ]
    await csms.send_raw(CP, frame)  # the same id again on this connection
    assert (await csms.recv_raw_response(CP, "replay-1", timeout=5))[0] == 3  # answered
    await csms.wait_for(
        "SecurityEventNotification",
        predicate=lambda r: r.payload["type"] == "AttemptedReplayAttacks",
        timeout=5,
    )
    (replay,) = [e for e in events(csms) if e["type"] == "AttemptedReplayAttacks"]
    assert "replay-1" in replay["techInfo"]
    assert "AttemptedReplayAttacks" in [e["type"] for e in security_log(rig)]


async def test_chargerctl_clears_the_security_log_and_the_csms_hears_it(rig, csms):
    await csms.wait_for("SecurityEventNotification", timeout=10)  # StartupOfTheDevice
    out = await ctl(rig, "security-log", "--json")
    assert out.returncode == 0, out.stderr
    assert "StartupOfTheDevice" in [e["type"] for e in json.loads(out.stdout)["entries"]]

    out = await ctl(rig, "security-log", "--clear")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("security log cleared")
    await csms.wait_for(
        "SecurityEventNotification",
        predicate=lambda r: r.payload["type"] == "SecurityLogWasCleared",
        timeout=10,
    )
    assert [e["type"] for e in security_log(rig)] == ["SecurityLogWasCleared"]
    assert "SecurityLogWasCleared" in [e["type"] for e in events(csms)]


async def test_opening_the_enclosure_raises_tamper_detection_once_and_stays_available(rig, csms):
    await csms.wait_for("SecurityEventNotification", timeout=10)  # StartupOfTheDevice
    out = await ctl(rig, "sim", "fault", "tamper", "on")
    assert out.returncode == 0, out.stderr
    await csms.wait_for(
        "SecurityEventNotification",
        predicate=lambda r: r.payload["type"] == "TamperDetectionActivated",
        timeout=10,
    )
    listing = await ctl(rig, "sim", "fault", "--list")
    assert "tamper  active: true" in listing.stdout
    assert (await ctl(rig, "sim", "fault", "tamper", "off")).returncode == 0
    st = await rig.status()
    assert all(c["status"] == "Available" for c in st["connectors"])  # not taken out of service
    tampers = [e for e in events(csms) if e["type"] == "TamperDetectionActivated"]
    assert len(tampers) == 1 and tampers[0]["techInfo"] == "enclosure opened"
    assert "TamperDetectionActivated" in [e["type"] for e in security_log(rig)]
