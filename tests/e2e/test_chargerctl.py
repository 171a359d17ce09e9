"""chargerctl against the real daemon, as a technician types it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

CARD = "0A1B2C3D"


async def ctl(rig, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chargerd.cli", "--socket", str(rig.socket), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_status_json_is_the_documented_contract(rig):
    out = await ctl(rig, "status", "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["station"]["charge_point_id"] == "CP-TEST"
    assert st["station"]["hardware"] == "mock"
    assert st["ocpp"]["registration"] == "Accepted"
    (c,) = st["connectors"]
    for key in (
        "id",
        "status",
        "ev_state",
        "contactor_closed",
        "power_w",
        "energy_wh",
        "transaction_id",
    ):
        assert key in c
    assert c["id"] == 1 and c["ev_state"] == "A" and c["contactor_closed"] is False


async def test_human_status_during_a_session(rig, csms):
    await rig.plug(1)
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_status(lambda s: s["connectors"][0]["transaction_id"] == 1, what="tx id")
    out = await ctl(rig, "status")
    assert out.returncode == 0
    assert "Charging" in out.stdout
    assert CARD in out.stdout


async def test_selftest_refused_while_in_use_and_passes_when_idle(rig):
    ok = await ctl(rig, "selftest", "contactor")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "close contactor" in ok.stdout
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    refused = await ctl(rig, "selftest", "contactor")
    assert refused.returncode == 1
    assert "in use" in refused.stderr


async def test_selftest_reports_a_welded_contactor(rig):
    await rig.fault("contactor_welded", True, connector=1)
    out = await ctl(rig, "selftest", "contactor", "--json")
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert result["passed"] is False
    assert any(not s["ok"] for s in result["steps"])


async def test_unknown_connector_and_fault_names(rig):
    out = await ctl(rig, "sim", "plug", "7")
    assert out.returncode == 1
    assert "unknown connector 7" in out.stderr
    listing = await ctl(rig, "sim", "fault", "--list")
    assert listing.returncode == 0
    for name in ("meter_silent", "contactor_welded", "lock_jammed", "reader_dead", "ev_error"):
        assert name in listing.stdout


async def test_config_get_and_set(rig, csms):
    out = await ctl(rig, "config", "HeartbeatInterval")
    # The BootNotification result's interval is the heartbeat interval in force.
    assert out.returncode == 0 and str(csms.heartbeat_interval) in out.stdout
    assert (await ctl(rig, "config", "HeartbeatInterval", "120")).returncode == 0
    assert "120" in (await ctl(rig, "config", "HeartbeatInterval")).stdout
    bad = await ctl(rig, "config", "HeartbeatInterval", "soon")
    assert bad.returncode == 1
    ro = await ctl(rig, "config", "NumberOfConnectors", "4")
    assert ro.returncode == 1


async def test_log_shows_the_ocpp_frames(rig):
    out = await ctl(rig, "log", "--lines", "50", "--json")
    assert out.returncode == 0
    frames = json.loads(out.stdout)["frames"]
    assert any("BootNotification" in f["frame"] and f["direction"] == "out" for f in frames)


async def test_meter_reads_the_mock_meter(rig):
    await rig.plug(1, ev_max_current_a=16)
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    await asyncio.sleep(1.1)
    out = await ctl(rig, "meter", "--json")
    assert out.returncode == 0
    (m,) = json.loads(out.stdout)["connectors"]
    assert m["power_w"] == pytest.approx(16 * 230 * 3, rel=0.01)
    assert m["current_a"] == [16.0, 16.0, 16.0]
    assert m["energy_wh"] > 0


async def test_daemon_not_running(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "chargerd.cli", "--socket", str(tmp_path / "none.sock"), "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 3
    assert "not running" in out.stderr


async def test_power_cut_kills_without_cleanup(rig, csms):
    await rig.plug(1)
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    out = await ctl(rig, "sim", "power-cut")
    assert out.returncode == 0
    assert await rig.wait_exit() == -9
    await rig.start()
    (stop,) = await csms.wait_for("StopTransaction", timeout=10)
    assert stop.payload["reason"] == "PowerLoss"
