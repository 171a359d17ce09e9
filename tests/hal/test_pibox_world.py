"""The pibox world: the real Pi drivers on emulated chips, in one process.

``open_pi_station`` with ``pin_factory = "emulated"`` gives the daemon's own
drivers (gpiozero devices, the sysfs PWM pilot, the MCP3008, the RC522 reader,
the pymodbus RTU client) and a world that answers them as copper would.  These
tests check what a bench user relies on: an EV plugged in the world is what the
pilot reads, the offered current is the duty in the sysfs files, the contactor
GPIO makes current flow that the Modbus meter reports, a card in the field is
read, and faults act through the chips.  Also: the emulated factory refuses to
load from a file that does not say it is a bench.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chargerd.config import ConfigError, load_config
from chargerd.daemon import main as chargerd_main
from hal.config import (
    ConnectorConfig,
    ContactorConfig,
    EmulatedConfig,
    HardwareConfig,
    LedConfig,
    LockConfig,
    MeterBusConfig,
    PilotConfig,
    RcdConfig,
    ReaderConfig,
)
from hal.errors import ContactorError, HardwareConfigError, LockError
from hal.interfaces import EvState, Fault
from hal.pi.station import open_pi_station
from hal.pilot_math import duty_for_current

PIBOX = HardwareConfig(
    driver="pi",
    pin_factory="emulated",
    emulated=EmulatedConfig(bench=True, card_hold_s=0.5),
    connectors=(
        ConnectorConfig(
            contactor=ContactorConfig(pin=17, feedback_pin=27, settle_s=0.01),
            lock=LockConfig(kind="motor", pins=(22, 23), sense_pin=24, pulse_s=0.01),
            pilot=PilotConfig(),
        ),
    ),
    reader=ReaderConfig(poll_interval_s=0.01),
    meter_bus=MeterBusConfig(port="/dev/null", timeout_s=0.3),
)


@pytest.fixture
async def station(tmp_path: Path):
    hw = await open_pi_station(PIBOX, tmp_path)
    try:
        yield hw
    finally:
        await hw.aclose()


async def settled(pilot, readings: int = 8) -> EvState:
    """The EV state once the pilot's debounce has seen enough agreeing readings."""
    state = EvState.A
    for _ in range(readings):
        state = await pilot.ev_state()
    return state


def sysfs_duty(tmp_path: Path) -> float:
    d = tmp_path / "sysfs-pwm" / "pwmchip0" / "pwm0"
    assert (d / "enable").read_text().strip() == "1"
    return int((d / "duty_cycle").read_text()) / int((d / "period").read_text())


async def test_an_ev_plugged_in_the_world_charges_through_the_pi_drivers(station, tmp_path):
    world, hw = station.sim, station.connectors[0]
    assert station.kind == "pi" and world is not None
    assert await settled(hw.pilot) is EvState.A

    world.plug(1, ev_max_current_a=16, phases=3, cable_capacity_a=20)
    assert await settled(hw.pilot) is EvState.B
    assert await hw.pilot.cable_capacity_a() == 20

    hw.pilot.set_offered_current(16)
    assert sysfs_duty(tmp_path) == pytest.approx(duty_for_current(16), abs=1e-5)
    world.charge(1)
    assert await settled(hw.pilot) is EvState.C

    await hw.contactor.close()
    snap = world.snapshot()
    assert snap["connectors"][0]["coil_energised"] and snap["connectors"][0]["contactor_closed"]
    assert snap["connectors"][0]["coil_changed_at"] == snap["contactor_moves"][-1]["t"]
    assert hw.contactor.faults() == frozenset()  # the auxiliary contact followed

    world.set_energy_wh(1, 1234.5)
    sample = await hw.meter.read()  # pymodbus RTU over the pty, registers from the world
    assert sample.energy_wh == pytest.approx(1234.5, abs=0.5)
    assert sample.power_w == pytest.approx(230 * 16 * 3, rel=1e-4)
    # The kernel realises the duty in 10 ns steps: 16 A arrives as 15.9996 A.
    assert tuple(sample.current_a) == pytest.approx((16.0, 16.0, 16.0), abs=0.01)

    await hw.contactor.open()
    moves = world.snapshot()["contactor_moves"]
    assert [m["closed"] for m in moves] == [True, False]
    assert moves[1]["t"] >= moves[0]["t"]
    assert world.snapshot()["connectors"][0]["power_w"] == 0


async def test_a_card_in_the_field_is_read_by_the_rc522_driver(station):
    assert station.sim.present_card("04A1B2C3D4E5F6") is True
    async with asyncio.timeout(5):
        assert await station.reader.next_card() == "04A1B2C3D4E5F6"
    with pytest.raises(ValueError):
        station.sim.present_card("DEADBE")  # 3 bytes: no such UID


async def test_faults_act_through_the_chips(station):
    world, hw = station.sim, station.connectors[0]
    world.plug(1)
    world.fault("ev_state_f", True, 1)
    assert await settled(hw.pilot) is EvState.F
    world.fault("ev_state_f", False, 1)
    assert await settled(hw.pilot) is EvState.B

    world.fault("contactor_welded", True, 1)
    await hw.contactor.close()
    with pytest.raises(ContactorError, match="welded"):
        await hw.contactor.open()  # the GPIO drops, the auxiliary contact stays closed
    assert Fault.CONTACTOR_WELDED in hw.contactor.faults()
    assert world.active_faults() == {"contactor_welded": [1]}

    world.fault("meter_silent", True)
    with pytest.raises(Exception):  # noqa: B017 - any meter error: the bus is silent
        await hw.meter.read()
    assert Fault.METER_FAILURE in hw.meter.faults()

    with pytest.raises(ValueError, match="unknown fault"):
        world.fault("meltdown", True)
    with pytest.raises(ValueError, match=r"connectors 1\.\.1"):
        world.plug(2)


async def test_the_lock_sense_follows_the_motor(station):
    world, lock = station.sim, station.connectors[0].lock
    await lock.lock()
    assert lock.locked and world.snapshot()["connectors"][0]["locked"]
    world.fault("lock_jammed", True, 1)
    with pytest.raises(LockError, match="sense"):
        await lock.unlock()  # the motor turns, the pin stays: the sense says locked
    assert world.snapshot()["connectors"][0]["locked"]
    assert Fault.LOCK_FAILURE in lock.faults()


async def test_a_residual_current_trips_the_monitor_and_drops_the_coil(tmp_path):
    from dataclasses import replace

    conn = replace(PIBOX.connectors[0], rcd=RcdConfig(fault_pin=4, test_pin=26))
    hw = await open_pi_station(replace(PIBOX, connectors=(conn,)), tmp_path)
    try:
        world, c = hw.sim, hw.connectors[0]
        assert c.rcd is not None and c.rcd.can_self_test
        await c.rcd.self_test()  # the test input trips the emulated module within its time
        assert c.rcd.faults() == frozenset()
        await c.contactor.close()
        world.fault("rcd_trip", True, 1)
        assert c.rcd.tripped and Fault.RCD_TRIPPED in c.rcd.faults()
        assert not world.snapshot()["connectors"][0]["coil_energised"]  # hal dropped it at once
        world.fault("rcd_test_fail", True, 1)
        assert world.active_faults() == {"rcd_trip": [1], "rcd_test_fail": [1]}
    finally:
        await hw.aclose()


async def test_the_world_survives_the_daemon(tmp_path):
    hw = await open_pi_station(PIBOX, tmp_path)
    hw.sim.plug(1)
    hw.sim.charge(1)
    await hw.aclose()
    again = await open_pi_station(PIBOX, tmp_path)  # after a kill -9 the car is still there
    try:
        snap = again.sim.snapshot()["connectors"][0]
        assert snap["plugged"] and snap["wants_charge"]
    finally:
        await again.aclose()


BENCH_TOML = """
[station]
charge_point_id = "CP-1"
vendor = "v"
model = "m"
connectors = 1
[csms]
url = "ws://127.0.0.1:9000"
[paths]
state_dir = "state"
[hardware]
driver = "{driver}"
pin_factory = "emulated"
{emulated}
[[hardware.connector]]
contactor_pin = 17
"""


@pytest.mark.parametrize(
    ("driver", "emulated"),
    [("pi", ""), ("pi", "[hardware.emulated]\nbench = false"), ("mock", "")],
)
def test_the_emulated_factory_needs_a_bench_file(tmp_path, capsys, driver, emulated):
    path = tmp_path / "chargerd.toml"
    path.write_text(BENCH_TOML.format(driver=driver, emulated=emulated))
    with pytest.raises(ConfigError, match="bench") as err:
        load_config(path)
    assert err.value.key == "hardware.pin_factory"
    assert chargerd_main(["--check-config", str(path)]) == 2
    assert "[hardware.emulated] bench = true" in capsys.readouterr().err


def test_a_bench_file_may_select_the_emulated_factory(tmp_path):
    path = tmp_path / "chargerd.toml"
    path.write_text(BENCH_TOML.format(driver="pi", emulated="[hardware.emulated]\nbench = true"))
    cfg = load_config(path)
    assert cfg.hardware.pin_factory == "emulated" and cfg.hardware.emulated.bench


async def test_the_world_refuses_a_config_without_bench(tmp_path):
    from dataclasses import replace

    with pytest.raises(HardwareConfigError, match="bench only"):
        await open_pi_station(replace(PIBOX, emulated=EmulatedConfig(bench=False)), tmp_path)


def test_safe_outputs_has_nothing_to_drive_on_an_emulated_pi(tmp_path, capsys):
    """The unit's ExecStopPost on a bench file: the emulated pins died with the daemon."""
    from chargerd.failsafe import safe_outputs_main

    path = tmp_path / "chargerd.toml"
    path.write_text(BENCH_TOML.format(driver="pi", emulated="[hardware.emulated]\nbench = true"))
    assert safe_outputs_main(load_config(path), exit_holding=False) == 0
    assert "emulated Pi (bench): no outputs to drive" in capsys.readouterr().out


async def test_two_connectors_share_the_adc_the_pwm_chip_and_the_rs485_line(tmp_path):
    from dataclasses import replace

    second = ConnectorConfig(
        contactor=ContactorConfig(pin=16, settle_s=0.01),
        led=LedConfig(kind="single", pins=(20,)),
        pilot=PilotConfig(cp_channel=2, pp_channel=3, pwm_channel=1, pwm_pin=19),
        meter_model="sdm120",
        meter_unit_id=2,
    )
    cfg = replace(PIBOX, connectors=(PIBOX.connectors[0], second))
    hw = await open_pi_station(cfg, tmp_path)
    try:
        world, one, two = hw.sim, hw.connectors[0], hw.connectors[1]
        world.plug(2, phases=1)
        assert await settled(one.pilot) is EvState.A
        assert await settled(two.pilot) is EvState.B
        two.pilot.set_offered_current(10)
        world.charge(2)
        assert await settled(two.pilot) is EvState.C
        await two.contactor.close()
        assert (await one.meter.read()).power_w == 0
        sample = await two.meter.read()  # unit 2 on the same line, an SDM120 map
        assert sample.power_w == pytest.approx(230 * 10, rel=1e-3)
        assert [m["connector"] for m in world.snapshot()["contactor_moves"]] == [2]
    finally:
        await hw.aclose()
