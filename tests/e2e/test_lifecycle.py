"""Daemon lifecycle as systemd and an operator see it: check-config, SIGTERM, reconnects."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

CARD = "0A1B2C3D"


def test_check_config_names_the_bad_ocpp_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[station]\ncharge_point_id = "CP-1"\nvendor = "v"\nmodel = "m"\n'
        '[csms]\nurl = "ws://127.0.0.1:9"\n[hardware]\ndriver = "mock"\n'
        '[ocpp]\nHeartbeatInterval = "soon"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "chargerd.daemon", "--check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "ocpp.HeartbeatInterval" in out.stderr
    assert str(bad) in out.stderr


def test_broken_toml_stops_the_daemon_with_the_line(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text('[station]\ncharge_point_id = "CP-1"\nvendor = \n')
    out = subprocess.run(
        [sys.executable, "-m", "chargerd.daemon", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "line 3" in out.stderr


async def test_sigterm_during_a_transaction_stops_it_as_reboot_and_exits_0(rig, csms):
    await rig.plug(1)
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    await csms.wait_for("StartTransaction")
    assert await rig.stop() == 0
    (stop,) = await csms.wait_for("StopTransaction", timeout=5)
    assert stop.payload["reason"] == "Reboot"
    assert "contactors open" in rig.log_path.read_text()
    # Nothing is left for a PowerLoss stop at the next start.
    await rig.start()
    await rig.wait_connector(1, "Preparing")
    # The outbox holds only the StartupOfTheDevice security event, and drains.
    await rig.wait_status(
        lambda s: s["ocpp"]["outbox_pending"] == 0, timeout=10, what="outbox drained"
    )
    assert [r.action for r in csms.received].count("StopTransaction") == 1
    types = [r.payload["type"] for r in csms.calls("SecurityEventNotification")]
    assert types.count("StartupOfTheDevice") == 2


async def test_a_reconnect_resends_statuses_without_a_new_boot(rig, csms):
    await rig.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", what="boot")
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.network(False)
    await rig.wait_status(lambda s: not s["ocpp"]["connected"], what="link down")
    await rig.unplug(1)
    await rig.wait_connector(1, "Available")

    def available(r):
        return r.payload["connectorId"] == 1 and r.payload["status"] == "Available"

    seen = len([r for r in csms.received if r.action == "StatusNotification" and available(r)])
    await rig.network(True)
    await rig.wait_status(lambda s: s["ocpp"]["connected"], what="link up")
    # The Available that happened offline reaches the CSMS after the reconnect...
    await csms.wait_for("StatusNotification", predicate=available, count=seen + 1)
    # ...without a second BootNotification: the station did not reboot.
    assert [r.action for r in csms.received].count("BootNotification") == 1


async def test_ready_and_watchdog_pings_reach_systemd(tmp_path, csms):
    """Type=notify: READY=1 once the store and hardware are up, then WATCHDOG=1 pings."""
    import asyncio
    import socket

    from chargerd.bench.rig import StationRig

    path = f"/tmp/chargerd-notify-{id(tmp_path):x}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    rig = StationRig(
        tmp_path / "st",
        csms_url=csms.url,
        env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"},
    )
    try:
        await rig.start()
        messages: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while loop.time() < deadline and messages.count("WATCHDOG=1") < 3:
            try:
                messages.append((await asyncio.wait_for(loop.sock_recv(sock, 4096), 1)).decode())
            except TimeoutError:
                pass
        assert "READY=1" in messages
        assert messages.count("WATCHDOG=1") >= 3
        assert await rig.stop() == 0
        while True:
            try:
                messages.append((await asyncio.wait_for(loop.sock_recv(sock, 4096), 1)).decode())
            except TimeoutError:
                break
        assert "STOPPING=1" in messages
    finally:
        await rig.stop()
        sock.close()
        import os

        os.unlink(path)
