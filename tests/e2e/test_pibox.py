"""Pi in a box: the real daemon with ``driver = "pi"`` on emulated chips, against the bench CSMS.

The same scripted session as ``./dev pibox --scenario``: card, StartTransaction,
charging on the pilot PWM, MeterValues read over Modbus RTU from the emulated
meter, card stop, RemoteStop, CP state F, and kill -9 during a charge with
StopTransaction(PowerLoss) after the restart.  The contactor reaction times are
measured from the world's timestamped GPIO record and printed, not asserted
(speed is the bench's business); that the contactor opened at all is asserted.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from chargerd.bench.pibox import CARD, PiboxRig, card_taken_away, run_scenario, start_session

pytestmark = pytest.mark.e2e


@pytest.fixture
async def pibox(tmp_path, csms):
    csms.cards[CARD] = {"status": "Accepted"}
    rig = PiboxRig(
        tmp_path / "pibox",
        csms_url=csms.url,
        charge_point_id="CP-PIBOX",
        ocpp={"MeterValueSampleInterval": 1, "StopTxnSampledData": ""},
    )
    await rig.start(timeout=30)
    try:
        yield rig
    finally:
        await rig.stop()
        if rig.proc is not None and rig.proc.returncode not in (0, -9):
            print(rig.tail_log())


async def test_the_pibox_scenario_runs_on_the_pi_drivers(pibox, csms):
    lines: list[str] = []
    reactions = await run_scenario(pibox, csms, say=lines.append)
    print("\n".join(lines))
    print({name: f"{s * 1000:.1f} ms" for name, s in reactions.items()})
    assert set(reactions) == {"card stop", "RemoteStop", "EV state F", "RCD trip"}
    assert all(0 <= s < 10 for s in reactions.values())
    # It was the Pi driver stack: the daemon says so, and the frames came from it.
    status = await pibox.status()
    assert status["station"]["hardware"] == "pi"
    reasons = [r.payload.get("reason", "Local") for r in csms.calls("StopTransaction")]
    assert len(reasons) == 5
    assert reasons[:2] == ["Local", "Remote"] and reasons[3:] == ["EmergencyStop", "PowerLoss"]
    assert reasons[2] in ("EmergencyStop", "Local")  # state F ends it, or the card after it


async def test_sim_commands_drive_the_emulated_world(pibox, csms):
    """A technician's sim script works unchanged: faults act through the emulated chips."""
    await pibox.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=20, what="registration"
    )
    faults = await pibox.ctl("sim.faults")
    assert {"meter_silent", "contactor_welded", "reader_dead", "ev_error"} <= set(faults["faults"])
    await start_session(pibox, csms, say=lambda _s: None)

    # The RS485 line is cut: the Modbus client times out, a meter fault is reported.
    await pibox.fault("meter_silent", True, 1)
    await pibox.wait_status(
        lambda s: "meter_failure" in s["connectors"][0]["faults"],
        timeout=15,
        what="meter failure reported",
    )
    await pibox.fault("meter_silent", False, 1)
    await pibox.wait_status(
        lambda s: "meter_failure" not in s["connectors"][0]["faults"],
        timeout=15,
        what="meter back",
    )

    # The RC522 falls off the bus: the reader says so.
    await pibox.fault("reader_dead", True)
    await pibox.wait_status(
        lambda s: "reader_failure" in s["reader"]["faults"], timeout=15, what="reader failure"
    )
    await pibox.fault("reader_dead", False)
    await pibox.wait_status(
        lambda s: not s["reader"]["faults"], timeout=15, what="reader answers again"
    )

    # The card ends the session through the revived reader; the world saw the GPIO drop.
    world = await pibox.world()
    assert world["connectors"][0]["coil_energised"]
    await card_taken_away(pibox)
    await pibox.card(CARD)
    await pibox.wait_connector(1, "Finishing", timeout=15)
    world = await pibox.world()
    assert not world["connectors"][0]["coil_energised"]
    assert world["contactor_moves"][-1]["closed"] is False


async def test_chargerctl_shows_the_emulated_world(pibox):
    await pibox.plug(1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chargerd.cli",
        "--socket",
        str(pibox.socket),
        "sim",
        "world",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0
    world = json.loads(out)
    assert world["kind"] == "pibox"
    assert world["connectors"][0]["plugged"] and world["connectors"][0]["pwm"] == "sysfs"
    assert [e["event"] for e in world["events"]] == ["plug"]
    # The supervisor's passes show on the SPI bus as bursts of MCP3008 transfers.
    assert world["pilot_readings"] > 0 and world["adc_bursts"]


async def test_dev_pibox_scenario_exits_0_and_prints_the_reactions(tmp_path):
    """``./dev pibox --scenario`` as a user runs it: its own CSMS and daemon, exit 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chargerd.bench.pibox",
        "--scenario",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=150)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "pibox scenario completed" in text
    for name in ("card stop", "RemoteStop", "EV state F", "RCD trip"):
        assert any(line.strip().startswith(name) and "ms" in line for line in text.splitlines())
