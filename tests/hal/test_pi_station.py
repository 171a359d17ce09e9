"""open_pi_station on MockFactory pins: assembly, pin-clash detection, release on close."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hal.config import (
    ConnectorConfig,
    ContactorConfig,
    HardwareConfig,
    LedConfig,
    LockConfig,
    PilotConfig,
    ReaderConfig,
)
from hal.errors import HardwareConfigError
from hal.interfaces import EvState, Fault, IndicatorState
from hal.pi.contactor import GpioContactor
from hal.pi.indicator import GpioIndicator
from hal.pi.lock import GpioCableLock
from hal.pi.pilot import GpioPilot, Mcp3008MockFactory
from hal.pi.station import check_pins, make_pin_factory, open_pi_station

NO_READER = ReaderConfig(kind="none")


def two_connectors(**reader) -> HardwareConfig:
    one = ConnectorConfig(
        contactor=ContactorConfig(pin=17, feedback_pin=27, settle_s=0.01),
        lock=LockConfig(kind="motor", pins=(23, 24), sense_pin=22, pulse_s=0.01),
        led=LedConfig(kind="rgb", pins=(5, 6, 13)),
        pilot=PilotConfig(pwm_pin=18, cp_channel=0, pp_channel=1, pwm="lgpio"),
        meter_unit_id=1,
    )
    two = ConnectorConfig(
        contactor=ContactorConfig(pin=16, settle_s=0.01),
        lock=LockConfig(kind="none"),
        led=LedConfig(kind="single", pins=(26,)),
        pilot=PilotConfig(pwm_pin=12, cp_channel=2, pp_channel=None, pwm="lgpio"),
        meter_model="sdm120",
        meter_unit_id=2,
    )
    return HardwareConfig(
        driver="pi", connectors=(one, two), reader=reader.get("reader", NO_READER)
    )


@pytest.fixture
def factory():
    factory = Mcp3008MockFactory()
    yield factory
    factory.close()


# --- pin clashes ----------------------------------------------------------------------


def test_the_example_wiring_is_free_of_clashes() -> None:
    check_pins(two_connectors(reader=ReaderConfig(kind="rc522")))
    check_pins(HardwareConfig())  # the defaults (README wiring table)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            HardwareConfig(
                connectors=(ConnectorConfig(), ConnectorConfig(pilot=PilotConfig(cp_channel=2))),
                reader=NO_READER,
            ),
            "GPIO17 is used twice: by connector 1 contactor and by connector 2 contactor",
        ),
        (
            HardwareConfig(
                connectors=(ConnectorConfig(contactor=ContactorConfig(pin=18)),),
                reader=NO_READER,
            ),
            "GPIO18 is used twice: by connector 1 contactor and by connector 1 pilot PWM",
        ),
        (
            HardwareConfig(
                connectors=(ConnectorConfig(led=LedConfig(pins=(5, 6, 9))),), reader=NO_READER
            ),
            "GPIO9 is used twice: by connector 1 LED blue and by connector 1 pilot ADC (SPI0 MISO)",
        ),
        (
            HardwareConfig(
                connectors=(
                    ConnectorConfig(),
                    ConnectorConfig(
                        contactor=ContactorConfig(pin=16),
                        led=LedConfig(kind="none"),
                        pilot=PilotConfig(pwm_pin=12, cp_channel=1, pp_channel=None),
                    ),
                ),
                reader=NO_READER,
            ),
            "MCP3008 on SPI0 CE1 channel 1 is used twice: by connector 1 PP and by connector 2 CP",
        ),
        (
            HardwareConfig(
                connectors=(ConnectorConfig(pilot=PilotConfig(adc_device=0)),),
                reader=ReaderConfig(kind="rc522", spi_device=0),
            ),
            "GPIO8 is used twice: by connector 1 pilot ADC (SPI0 CE0) "
            "and by RC522 reader (SPI0 CE0)",
        ),
        (
            HardwareConfig(
                connectors=(ConnectorConfig(),), reader=ReaderConfig(kind="rc522", spi_bus=1)
            ),
            "GPIO18 is used twice: by connector 1 pilot PWM and by RC522 reader (SPI1 CE0)",
        ),
        (
            HardwareConfig(
                connectors=(ConnectorConfig(contactor=ContactorConfig(feedback_pin=25)),),
            ),
            "GPIO25 is used twice: by connector 1 contactor feedback and by RC522 reader RST",
        ),
        (
            HardwareConfig(
                connectors=(
                    ConnectorConfig(lock=LockConfig(kind="solenoid", pins=(22,), sense_pin=22)),
                ),
                reader=NO_READER,
            ),
            "GPIO22 is used twice: by connector 1 lock solenoid and by connector 1 lock sense",
        ),
    ],
)
def test_a_pin_used_twice_is_named_with_both_uses(cfg: HardwareConfig, message: str) -> None:
    with pytest.raises(HardwareConfigError) as err:
        check_pins(cfg)
    assert str(err.value) == message


@pytest.mark.parametrize(
    "cfg",
    [
        HardwareConfig(connectors=(ConnectorConfig(pilot=PilotConfig(cp_channel=8)),)),
        HardwareConfig(connectors=(ConnectorConfig(pilot=PilotConfig(adc_device=2)),)),
        HardwareConfig(reader=ReaderConfig(kind="rc522", spi_bus=3)),
    ],
)
def test_impossible_spi_or_adc_addresses(cfg: HardwareConfig) -> None:
    with pytest.raises(HardwareConfigError):
        check_pins(cfg)


async def test_a_clash_is_refused_before_any_pin_moves(
    factory: Mcp3008MockFactory, tmp_path: Path
) -> None:
    cfg = HardwareConfig(
        connectors=(ConnectorConfig(contactor=ContactorConfig(pin=18)),), reader=NO_READER
    )
    with pytest.raises(HardwareConfigError, match="GPIO18"):
        await open_pi_station(cfg, tmp_path, pin_factory=factory)
    assert factory.pins == {}


# --- pin factories --------------------------------------------------------------------


def test_pin_factory_by_name() -> None:
    assert isinstance(make_pin_factory("mock"), Mcp3008MockFactory)
    with pytest.raises(HardwareConfigError, match="unknown pin factory 'gpio'"):
        make_pin_factory("gpio")


def test_a_pin_factory_that_cannot_start_is_a_config_error() -> None:
    # pigpio needs its daemon (or its module): neither is there off a Pi.
    with pytest.raises(HardwareConfigError, match="pigpio"):
        make_pin_factory("pigpio")


# --- assembly (needs hal.pi.meter) ---------------------------------------------------------


async def test_assembled_station_drives_its_pins(
    factory: Mcp3008MockFactory, tmp_path: Path
) -> None:
    pytest.importorskip("hal.pi.meter")
    adc = factory.adc(1)
    adc.set_channel(0, 21 / 24)  # connector 1: EV plugged (9 V)
    adc.set_channel(1, 680 / 1680)  # a 20 A cable
    adc.set_channel(2, 1.0)  # connector 2: nothing

    station = await open_pi_station(two_connectors(), tmp_path, pin_factory=factory)
    assert station.kind == "pi" and station.reader is None and len(station.connectors) == 2
    one, two = station.connectors
    assert isinstance(one.contactor, GpioContactor) and isinstance(one.lock, GpioCableLock)
    assert isinstance(one.indicator, GpioIndicator) and isinstance(one.pilot, GpioPilot)
    assert two.lock is None
    assert one.meter is not two.meter

    assert await one.pilot.ev_state() is EvState.B
    assert await one.pilot.cable_capacity_a() == 20
    assert await two.pilot.ev_state() is EvState.A
    assert await two.pilot.cable_capacity_a() is None  # tethered

    one.pilot.set_offered_current(16)
    assert factory.pin(18).state == pytest.approx(0.2667, abs=1e-4)
    assert factory.pin(12).state == 1.0
    one.indicator.show(IndicatorState.AVAILABLE)
    assert factory.pin(6).state == 1.0
    two.indicator.show(IndicatorState.AVAILABLE)
    assert factory.pin(26).state == 1.0
    await two.contactor.close()
    assert factory.pin(16).state == 1 and factory.pin(17).state == 0

    await station.aclose()
    assert factory.pin(16).state == 0  # every contactor opened
    assert factory.pin(18).function == "input"
    used = [17, 27, 23, 24, 22, 5, 6, 13, 18, 16, 26, 12]
    assert all(factory.pin(p).function == "input" for p in used)
    # Everything released: the same wiring opens again on the same factory.
    again = await open_pi_station(two_connectors(), tmp_path, pin_factory=factory)
    await again.aclose()


async def test_mock_pin_factory_by_name_gives_an_idle_bench(tmp_path: Path) -> None:
    pytest.importorskip("hal.pi.meter")
    cfg = HardwareConfig(driver="pi", pin_factory="mock", reader=NO_READER)
    station = await open_pi_station(cfg, tmp_path)
    (c,) = station.connectors
    assert await c.pilot.ev_state() is EvState.A
    assert await c.pilot.cable_capacity_a() is None
    assert c.lock is None  # the default lock kind is "none"
    await station.aclose()


async def test_the_reader_runs_on_the_stations_pin_factory(
    factory: Mcp3008MockFactory, tmp_path: Path
) -> None:
    pytest.importorskip("hal.pi.meter")
    from hal.emulated import rc522 as emu

    chip = emu.Rc522()
    emu.attach(factory, chip, rst_pin=25)
    cfg = two_connectors(reader=ReaderConfig(kind="rc522", poll_interval_s=0.01))
    station = await open_pi_station(cfg, tmp_path, pin_factory=factory)
    try:
        assert station.reader is not None and station.reader.faults() == frozenset()
        assert factory.pin(25).state == 1 and chip.antenna_on
        chip.place(emu.Card("DEADBEEF"))
        async with asyncio.timeout(5):
            assert await station.reader.next_card() == "DEADBEEF"
    finally:
        await station.aclose()
    assert all(factory.pin(p).function == "input" for p in (17, 18, 12, 5, 25))


async def test_a_reader_that_does_not_answer_is_a_fault_not_a_failed_start(
    factory: Mcp3008MockFactory, tmp_path: Path
) -> None:
    pytest.importorskip("hal.pi.meter")
    from hal.emulated import rc522 as emu

    chip = emu.Rc522()
    chip.kill("silent")
    emu.attach(factory, chip, rst_pin=25)
    cfg = two_connectors(reader=ReaderConfig(kind="rc522"))
    station = await open_pi_station(cfg, tmp_path, pin_factory=factory)
    try:
        assert station.reader is not None
        assert station.reader.faults() == {Fault.READER_FAILURE}
    finally:
        await station.aclose()


def test_rcd_pins_are_checked_for_clashes() -> None:
    from hal.config import RcdConfig

    cfg = two_connectors()
    one = cfg.connectors[0]
    clash = ConnectorConfig(
        contactor=one.contactor,
        lock=one.lock,
        led=one.led,
        pilot=one.pilot,
        rcd=RcdConfig(fault_pin=22, test_pin=4),
    )
    with pytest.raises(HardwareConfigError, match="GPIO22 is used twice: by connector 1 lock"):
        check_pins(HardwareConfig(driver="pi", connectors=(clash,), reader=NO_READER))


async def test_an_assembled_rcd_trip_drops_that_connectors_coil(
    factory: Mcp3008MockFactory, tmp_path: Path
) -> None:
    pytest.importorskip("hal.pi.meter")
    from hal.config import RcdConfig

    cfg = two_connectors()
    one = cfg.connectors[0]
    with_rcd = ConnectorConfig(
        contactor=one.contactor,
        lock=one.lock,
        led=one.led,
        pilot=one.pilot,
        rcd=RcdConfig(fault_pin=4, test_pin=20),
    )
    cfg = HardwareConfig(driver="pi", connectors=(with_rcd, cfg.connectors[1]), reader=NO_READER)
    station = await open_pi_station(cfg, tmp_path, pin_factory=factory)
    try:
        first, second = station.connectors
        assert first.rcd is not None and first.rcd.can_self_test and second.rcd is None
        factory.pin(27).drive_high()  # the aux contact follows the coil
        await first.contactor.close()
        await second.contactor.close()
        factory.pin(4).drive_high()  # the monitor of connector 1 trips
        assert not factory.pin(17).state and factory.pin(16).state
        assert first.rcd.faults() == {Fault.RCD_TRIPPED}
    finally:
        await station.aclose()
    assert factory.pin(4).function == "input" and factory.pin(20).function == "input"
