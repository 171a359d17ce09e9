"""``./dev pibox``: the real daemon with ``driver = "pi"`` on an emulated Pi, and the bench CSMS.

The whole Pi driver stack runs: gpiozero devices on MockFactory pins, the
register-level RC522 reader on an RC522 emulated at register level, the pilot on
the kernel's PWM sysfs files (an emulated kernel plays them) and gpiozero's
MCP3008 on an emulated chip, the RCD driver on an emulated monitor, the pymodbus
RTU client against a pymodbus RTU server on a pseudo-terminal
(``hal.emulated.pibox`` is the world around them).  The control socket's ``sim``
commands drive that world as they drive the mock station, so a technician's
scripts work unchanged.

``./dev pibox`` runs the bench CSMS and the daemon until Ctrl-C (restarting the
daemon when it dies, as systemd would).  ``./dev pibox --scenario`` runs one
scripted session and exits 0 on success: card, StartTransaction, charging with
the pilot PWM checked in sysfs, MeterValues from the Modbus server, card stop,
RemoteStop, EV state F, an RCD trip, then kill -9 during a charge and
StopTransaction(PowerLoss) after the restart; it prints the contactor reaction
times it measured, from the stimulus to the contactor GPIO going low (the
world's timestamped pin record).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chargerd.bench.rig import StationRig, _toml_value
from hal.pilot_math import duty_for_current

ROOT = Path(__file__).resolve().parents[2]
CARD = "DEADBEEF"
CP_ID = "CP-PIBOX-1"

# One connector wired as etc/chargerd.toml documents, every line of it emulated.
HARDWARE_TOML = """\
[hardware]
driver = "pi"
pin_factory = "emulated"    # Pi in a box: emulated chips, bench only

[hardware.emulated]
bench = true                # the emulated factory refuses to load without it
card_hold_s = 1.0

[hardware.mock]             # the EV the world plugs in by default
ev_max_current_a = 32.0
ev_phases = 3
cable_capacity_a = 32

[hardware.reader]
kind = "rc522"
spi_bus = 0
spi_device = 0
rst_pin = 25
poll_interval_s = 0.05

[hardware.meter_bus]
transport = "rtu"
port = "/dev/null"          # replaced by the world's pseudo-terminal
baudrate = 9600
timeout_s = 1.0

[[hardware.connector]]
contactor_pin = 17
contactor_feedback_pin = 27
lock = "motor"
lock_pins = [22, 23]
lock_sense_pin = 24
lock_pulse_s = 0.05
led = "rgb"
led_pins = [5, 6, 13]
pilot_pwm_pin = 18
pilot_adc_device = 1
pilot_cp_channel = 0
pilot_pp_channel = 1
meter_model = "sdm630"
meter_unit_id = 1
rcd_fault_pin = 4           # a 6 mA DC residual-current monitor, self-tested before each charge
rcd_test_pin = 26
"""


class PiboxRig(StationRig):
    """A StationRig whose daemon runs the Pi drivers on the emulated Pi."""

    def write_config(self) -> None:
        lines = [
            "[station]",
            f'charge_point_id = "{self.charge_point_id}"',
            'vendor = "chargerd"',
            'model = "pibox"',
            "connectors = 1",
            "",
            "[csms]",
            f'url = "{self.csms_url}"',
            "security_profile = 0",
            "",
            "[paths]",
            f'state_dir = "{self.state_dir}"',
            f'control_socket = "{self.socket}"',
            "",
            "[logging]",
            f'level = "{self.log_level}"',
            "",
            HARDWARE_TOML,
            "[ocpp]",
            *(f"{k} = {_toml_value(v)}" for k, v in self.ocpp.items()),
            "",
            self.extra_toml,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    async def world(self, since: float = 0.0) -> dict:
        """The emulated world: EV, pins, meter, and the timestamped records after ``since``."""
        return await self.ctl("sim.world", since=since)


class ScenarioFailed(Exception):
    """A step of the scenario did not happen as a station must do it."""


async def contactor_open_after(rig: PiboxRig, t0: float, *, timeout: float = 10.0) -> float:
    """Seconds from ``t0`` (monotonic) to the first contactor GPIO drop after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        moves = (await rig.world(since=t0))["contactor_moves"]
        opened = [m["t"] for m in moves if not m["closed"]]
        if opened:
            return opened[0] - t0
        await asyncio.sleep(0.02)
    raise ScenarioFailed(f"the contactor did not open within {timeout} s")


async def last_event_time(rig: PiboxRig, name: str, since: float) -> float:
    events = [e for e in (await rig.world(since=since))["events"] if e["event"] == name]
    if not events:
        raise ScenarioFailed(f"the world recorded no {name!r} event")
    return events[-1]["t"]


async def card_taken_away(rig: PiboxRig, settle_s: float = 0.3) -> None:
    """Wait until no card is in the reader's field, and long enough for the reader to see it.

    The reader counts one presentation per card until the card has left the
    field for a few polls, as a driver's hand would take it away.
    """
    deadline = time.monotonic() + 10
    while (await rig.world(since=time.monotonic()))["reader"]["cards"]:
        if time.monotonic() > deadline:
            raise ScenarioFailed("the card never left the reader's field")
        await asyncio.sleep(0.05)
    await asyncio.sleep(settle_s)


async def start_session(rig: PiboxRig, csms: Any, say: Callable[[str], None]) -> dict:
    """Plug, card, the EV asks for power: returns the StartTransaction record."""
    before = len(csms.calls("StartTransaction", rig.charge_point_id))
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing", timeout=15)
    await card_taken_away(rig)
    await rig.card(CARD)
    await rig.charge(1)
    starts = await csms.wait_for(
        "StartTransaction",
        predicate=lambda r: r.cp_id == rig.charge_point_id,
        count=before + 1,
        timeout=20,
    )
    await rig.wait_status(
        lambda s: (
            s["connectors"][0]["status"] == "Charging"
            and s["connectors"][0]["transaction_id"] is not None
            and s["connectors"][0]["contactor_closed"]
        ),
        timeout=15,
        what="charging with a transactionId",
    )
    say(f"  StartTransaction: connector 1, idTag {starts[before].payload.get('idTag')}")
    return starts[before].payload


async def end_after_fault(rig: PiboxRig) -> None:
    """A session a fault interrupted: the card ends it if the fault did not already."""
    st = await rig.connector(1)
    if st["transaction_id"] is not None:
        await card_taken_away(rig)
        await rig.card(CARD)


async def end_session(rig: PiboxRig, csms: Any, stops_before: int) -> dict:
    stops = await csms.wait_for(
        "StopTransaction",
        predicate=lambda r: r.cp_id == rig.charge_point_id,
        count=stops_before + 1,
        timeout=20,
    )
    await rig.unplug(1)
    await rig.wait_connector(1, "Available", timeout=15)
    return stops[stops_before].payload


def sysfs_pwm(rig: PiboxRig, chip: int = 0, channel: int = 0) -> dict[str, str]:
    """The emulated kernel's PWM files of the pilot, as ``cat`` shows them on a Pi."""
    d = rig.state_dir / "sysfs-pwm" / f"pwmchip{chip}" / f"pwm{channel}"
    return {name: (d / name).read_text().strip() for name in ("period", "duty_cycle", "enable")}


async def check_pilot(rig: PiboxRig) -> tuple[float, float]:
    """The PWM the EV sees is the duty of the offered current, at 1 kHz, read in sysfs."""
    st = await rig.connector(1)
    world = (await rig.world(since=time.monotonic()))["connectors"][0]
    offered = st["offered_current_a"]
    if world["pwm"] == "sysfs":
        files = sysfs_pwm(rig)
        period, duty_ns = int(files["period"]), int(files["duty_cycle"])
        if files["enable"] != "1" or period <= 0:
            raise ScenarioFailed(f"the kernel PWM does not run: {files}")
        duty, freq = duty_ns / period, 1e9 / period
    else:
        duty, freq = world["pwm_duty"], world["pwm_frequency_hz"] or 0.0
    if offered is None or abs(duty - duty_for_current(offered)) > 0.001 or abs(freq - 1000) > 5:
        raise ScenarioFailed(f"pilot PWM {duty} at {freq} Hz does not offer {offered} A")
    if world["ev_state"] != "C" or world["power_w"] <= 0:
        raise ScenarioFailed(f"the EV does not draw: {world}")
    return offered, duty


async def run_scenario(
    rig: PiboxRig, csms: Any, *, say: Callable[[str], None] = print
) -> dict[str, float]:
    """The scripted pibox session; returns the reaction times (s) it measured."""
    cp = rig.charge_point_id
    reactions: dict[str, float] = {}
    await rig.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=20, what="registration"
    )
    say("registered with the bench CSMS")

    # 1. card start, pilot, MeterValues from the Modbus server, card stop
    start = await start_session(rig, csms, say)
    offered, duty = await check_pilot(rig)
    say(f"  pilot: {offered:g} A offered as {duty * 100:.3f} % duty at 1 kHz; the EV draws")
    mv_before = len(csms.calls("MeterValues", cp))
    values = await csms.wait_for(
        "MeterValues", predicate=lambda r: r.cp_id == cp, count=mv_before + 2, timeout=20
    )
    energies = [
        float(v["value"])
        for r in values[mv_before:]
        for mv in r.payload.get("meterValue", [])
        for v in mv["sampledValue"]
        if v.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register"
    ]
    if not energies or max(energies) <= start["meterStart"]:
        raise ScenarioFailed(f"MeterValues show no energy flowing: {energies}")
    say(f"  MeterValues from the Modbus meter: {energies[-1]:.0f} Wh")
    stops = len(csms.calls("StopTransaction", cp))
    t0 = time.monotonic()
    await rig.card(CARD)
    t_card = await last_event_time(rig, "card", t0)
    reactions["card stop"] = await contactor_open_after(rig, t_card)
    stop = await end_session(rig, csms, stops)
    if stop["meterStop"] <= start["meterStart"] or stop.get("reason", "Local") != "Local":
        raise ScenarioFailed(f"card stop: {stop}")
    say(f"  card stop: StopTransaction {stop.get('reason', 'Local')}, {stop['meterStop']} Wh")

    # 2. RemoteStop from the CSMS
    await start_session(rig, csms, say)
    st = await rig.connector(1)
    stops = len(csms.calls("StopTransaction", cp))
    t0 = time.monotonic()
    answer = await csms.call(cp, "RemoteStopTransaction", {"transactionId": st["transaction_id"]})
    reactions["RemoteStop"] = await contactor_open_after(rig, t0)
    stop = await end_session(rig, csms, stops)
    say(f"  RemoteStop {answer.get('status')}: StopTransaction {stop.get('reason')}")

    # 3. the CP line falls to -12 V (state F) while charging; then the card ends the session
    await start_session(rig, csms, say)
    stops = len(csms.calls("StopTransaction", cp))
    t0 = time.monotonic()
    await rig.fault("ev_state_f", True, 1)
    t_f = await last_event_time(rig, "ev_state_f_on", t0)
    reactions["EV state F"] = await contactor_open_after(rig, t_f)
    await rig.wait_status(
        lambda s: (
            s["connectors"][0]["transaction_id"] is None
            or s["connectors"][0]["status"] != "Charging"
        ),
        timeout=10,
        what="the station to leave Charging after state F",
    )
    st = await rig.connector(1)
    await rig.fault("ev_state_f", False, 1)
    say(f"  EV state F: contactor open, connector {st['status']} ({st['error_code']})")
    await end_after_fault(rig)
    stop = await end_session(rig, csms, stops)
    say(f"  after state F: StopTransaction {stop.get('reason', 'Local')}")

    # 4. the residual-current monitor trips while charging
    await start_session(rig, csms, say)
    stops = len(csms.calls("StopTransaction", cp))
    t0 = time.monotonic()
    await rig.fault("rcd_trip", True, 1)
    t_rcd = await last_event_time(rig, "rcd_trip_on", t0)
    reactions["RCD trip"] = await contactor_open_after(rig, t_rcd)
    st = await rig.wait_status(
        lambda s: s["connectors"][0]["status"] != "Charging",
        timeout=10,
        what="the station to leave Charging after the RCD trip",
    )
    await rig.fault("rcd_trip", False, 1)
    c = st["connectors"][0]
    say(f"  RCD trip: contactor open, connector {c['status']} ({c['error_code']})")
    await end_after_fault(rig)
    stop = await end_session(rig, csms, stops)
    say(f"  after the RCD trip: StopTransaction {stop.get('reason', 'Local')}")

    # 5. kill -9 while charging: StopTransaction(PowerLoss) after the restart
    await start_session(rig, csms, say)
    stops = len(csms.calls("StopTransaction", cp))
    rig.kill9()
    say("  kill -9 while charging; restarting the daemon as systemd would")
    await rig.start()
    recs = await csms.wait_for(
        "StopTransaction", predicate=lambda r: r.cp_id == cp, count=stops + 1, timeout=30
    )
    reason = recs[stops].payload.get("reason")
    if reason != "PowerLoss":
        raise ScenarioFailed(f"after kill -9 the StopTransaction says {reason!r}, not PowerLoss")
    st = await rig.connector(1)
    if st["contactor_closed"]:
        raise ScenarioFailed("after the restart the contactor is closed")
    meter_now = (await rig.world(since=time.monotonic()))["connectors"][0]["energy_wh"]
    if meter_now < recs[stops].payload["meterStop"] - 0.5:  # meterStop: whole Wh, rounded
        raise ScenarioFailed(
            f"the meter went backwards over the kill: {meter_now} Wh < meterStop "
            f"{recs[stops].payload['meterStop']} Wh"
        )
    await rig.unplug(1)
    await rig.wait_connector(1, "Available", timeout=15)
    say("  after the restart: StopTransaction PowerLoss, contactor open")
    return reactions


def print_reactions(reactions: dict[str, float], say: Callable[[str], None] = print) -> None:
    say("contactor reaction times (stimulus -> contactor GPIO low, world pin record):")
    for name, seconds in reactions.items():
        say(f"  {name:<12} {seconds * 1000:8.1f} ms")


async def _scenario_main(workdir: Path) -> int:
    from chargerd.bench.csms.csms import BenchCsms

    csms = BenchCsms()
    await csms.start("127.0.0.1", 0)
    csms.cards[CARD] = {"status": "Accepted"}
    rig = PiboxRig(
        workdir,
        csms_url=csms.url,
        charge_point_id=CP_ID,
        ocpp={"MeterValueSampleInterval": 1, "StopTxnSampledData": ""},
    )
    try:
        await rig.start(timeout=30)
        print(f"chargerd on the emulated Pi (log: {rig.log_path})", flush=True)
        reactions = await run_scenario(rig, csms, say=lambda s: print(s, flush=True))
        print_reactions(reactions)
        print("pibox scenario completed", flush=True)
        return 0
    except Exception as exc:  # a failed step is a report, not a traceback
        print(f"pibox scenario FAILED: {type(exc).__name__}: {exc}", flush=True)
        print(rig.tail_log(40), flush=True)
        return 1
    finally:
        await rig.stop()
        await csms.stop()


def write_bench_config(path: Path, *, state_dir: Path, port: int) -> Path:
    """The interactive pibox's TOML file (state in ``state_dir``)."""
    text = "\n".join(
        [
            "[station]",
            f'charge_point_id = "{CP_ID}"',
            'vendor = "chargerd"',
            'model = "pibox"',
            "connectors = 1",
            "",
            "[csms]",
            f'url = "ws://127.0.0.1:{port}"',
            "security_profile = 0",
            "",
            "[paths]",
            f"state_dir = {json.dumps(str(state_dir))}",
            f"control_socket = {json.dumps(str(state_dir / 'control.sock'))}",
            "",
            HARDWARE_TOML,
            "[ocpp]",
            "HeartbeatInterval = 60",
            "MeterValueSampleInterval = 10",
            'MeterValuesSampledData = "Energy.Active.Import.Register,Power.Active.Import"',
            "",
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chargerd.bench.pibox", description=__doc__)
    parser.add_argument("--port", type=int, default=9000, help="bench CSMS port (interactive)")
    parser.add_argument("--scenario", action="store_true", help="run one session and exit")
    args = parser.parse_args(argv)
    if args.scenario:
        with tempfile.TemporaryDirectory(prefix="pibox-") as tmp:
            return asyncio.run(_scenario_main(Path(tmp)))
    from chargerd.bench import demo

    state_dir = ROOT / "var" / "pibox"
    config = write_bench_config(state_dir / "chargerd.toml", state_dir=state_dir, port=args.port)
    print(f"pibox: {config} (the Pi drivers on emulated chips)", flush=True)
    return demo.main(["--config", str(config), "--port", str(args.port)])


if __name__ == "__main__":
    sys.exit(main())
