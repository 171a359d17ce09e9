"""SecurityEventNotification from the real daemon: durable across an outage and a restart,
in order; the ones of the existing code (start, reset, malformed frames); the log on disk."""

from __future__ import annotations

import json
import socket

import pytest

from chargerd.bench.csms.csms import BenchCsms
from chargerd.clock import parse_iso

pytestmark = pytest.mark.e2e

CP = "CP-TEST"


def events(csms, cp_id: str = CP) -> list[dict]:
    return [r.payload for r in csms.calls("SecurityEventNotification", cp_id=cp_id)]


def security_log(rig) -> list[dict]:
    path = rig.state_dir / "security.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_events_raised_while_offline_arrive_after_reconnect_in_order(make_rig):
    with socket.socket() as s:  # the CSMS is not there yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rig = await make_rig(start=False)
    rig.csms_url = f"ws://127.0.0.1:{port}/ocpp"
    rig.write_config()
    await rig.start()
    await rig.stop()  # a reboot while offline: a second StartupOfTheDevice
    await rig.start()
    await rig.wait_status(lambda s: s["ocpp"]["outbox_pending"] == 2, timeout=10, what="queued")

    late = BenchCsms()
    await late.start("127.0.0.1", port)
    try:
        await late.wait_for("SecurityEventNotification", count=2, timeout=15)
        got = events(late)
        assert [e["type"] for e in got[:2]] == ["StartupOfTheDevice", "StartupOfTheDevice"]
        stamps = [parse_iso(e["timestamp"]) for e in got[:2]]
        assert stamps[0] < stamps[1]  # in the order they happened
        # Nothing before the boot was accepted (the outbox waits for it).
        assert late.received[0].action == "BootNotification"
        await rig.wait_status(
            lambda s: s["ocpp"]["outbox_pending"] == 0, timeout=10, what="delivered"
        )
        logged = [e["type"] for e in security_log(rig)]
        assert logged.count("StartupOfTheDevice") == 2
    finally:
        await rig.stop()
        await late.stop()


async def test_a_reset_reports_reset_or_reboot_then_startup(rig, csms):
    await csms.wait_for("SecurityEventNotification", timeout=10)
    assert await csms.call(CP, "Reset", {"type": "Soft"}) == {"status": "Accepted"}
    await csms.wait_for("SecurityEventNotification", count=3, timeout=20)
    types = [e["type"] for e in events(csms)]
    assert types[:3] == ["StartupOfTheDevice", "ResetOrReboot", "StartupOfTheDevice"]
    assert events(csms)[1]["techInfo"] == "SoftReset"


async def test_a_malformed_frame_raises_invalid_messages(rig, csms):
    await csms.send_raw(CP, '[2, "bad-1", "Heartbeat"')  # cut short: not JSON
    frame = await csms.recv_raw_response(CP, "bad-1", timeout=3)
    assert frame[0] == 4
    await csms.wait_for(
        "SecurityEventNotification",
        predicate=lambda r: r.payload["type"] == "InvalidMessages",
        timeout=5,
    )
    (invalid,) = [e for e in events(csms) if e["type"] == "InvalidMessages"]
    assert invalid["techInfo"].startswith(frame[2])
    assert "InvalidMessages" in [e["type"] for e in security_log(rig)]


class _AheadClock:
    """A CSMS whose clock runs an hour ahead of the station's."""

    def now(self):
        from datetime import UTC, datetime, timedelta

        return datetime.now(UTC) + timedelta(hours=1)

    def monotonic(self) -> float:
        import time

        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(seconds)


async def test_the_csms_time_moving_the_clock_raises_setting_system_time(tmp_path):
    from chargerd.bench.rig import StationRig

    ahead = BenchCsms(clock=_AheadClock())
    await ahead.start("127.0.0.1", 0)
    rig = StationRig(tmp_path / "station", csms_url=ahead.url)
    try:
        await rig.start()
        await ahead.wait_for(
            "SecurityEventNotification",
            predicate=lambda r: r.payload["type"] == "SettingSystemTime",
            timeout=15,
        )
        (setting,) = [e for e in events(ahead) if e["type"] == "SettingSystemTime"]
        # Stamped with the corrected time: within a minute of the CSMS's clock.
        skew = abs((parse_iso(setting["timestamp"]) - ahead.now()).total_seconds())
        assert skew < 60
    finally:
        await rig.stop()
        await ahead.stop()
