"""The Modbus energy meter driver against a real pymodbus server (TCP and RTU)."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest

from hal.config import MeterBusConfig
from hal.emulated import modbus_meter as emu
from hal.errors import HardwareConfigError, MeterError
from hal.interfaces import EnergyMeter, Fault
from hal.meters import known_models, load_register_map
from hal.pi.meter import ModbusBus, ModbusMeter

TIMEOUT_S = 0.3

SDM630_VALUES = {
    0x0000: 230.5,  # L1 V
    0x0002: 231.0,
    0x0004: 229.5,
    0x0006: 16.25,  # L1 A
    0x0008: 15.5,
    0x000A: 16.0,
    0x000C: 3740.0,  # L1 W
    0x000E: 3580.5,
    0x0010: 3672.0,
    0x0034: 10992.5,  # total W
    0x0046: 50.0,  # Hz
    0x0048: 1234.5,  # import kWh
}
SDM120_VALUES = {
    0x0000: 228.0,
    0x0006: 7.5,
    0x000C: 1710.0,
    0x0046: 49.5,
    0x0048: 42.25,
}


@pytest.fixture
async def tcp_meter():
    """An SDM630 at unit 1 behind a Modbus TCP server on 127.0.0.1."""
    fake = emu.FakeMeter(1, SDM630_VALUES)
    port = emu.free_port()
    server = await emu.start_tcp_server([fake], port)
    bus = ModbusBus(
        MeterBusConfig(transport="tcp", host="127.0.0.1", tcp_port=port, timeout_s=TIMEOUT_S),
        retries=0,
    )
    state = {"server": server}

    async def stop() -> None:
        await state["server"].shutdown()

    async def restart() -> None:
        state["server"] = await emu.start_tcp_server([fake], port)

    yield fake, bus, stop, restart
    await bus.close()
    await state["server"].shutdown()


@pytest.fixture
async def rtu_line():
    """Two meters (SDM630 unit 1, SDM120 unit 2) on an RTU line over a pty cable."""
    cable = emu.PtyCable()
    meters = [emu.FakeMeter(1, SDM630_VALUES), emu.FakeMeter(2, SDM120_VALUES)]
    server = await emu.start_rtu_server(meters, cable.paths[0])
    bus = ModbusBus(
        MeterBusConfig(transport="rtu", port=cable.paths[1], baudrate=9600, timeout_s=TIMEOUT_S),
        retries=0,
    )
    yield cable, meters, bus
    await bus.close()
    await server.shutdown()
    cable.close()


def test_register_maps_are_shipped_for_the_eastron_meters():
    assert {"sdm630", "sdm120"} <= set(known_models())
    sdm630 = load_register_map("SDM630")
    assert sdm630.phases == 3
    assert sdm630.energy_wh.address == 0x0048 and sdm630.energy_wh.scale == 1000.0
    assert [(b.start, b.count) for b in sdm630.blocks()] == [(0x0000, 18), (0x0034, 22)]
    assert load_register_map("sdm120").phases == 1


def test_unknown_model_names_the_known_ones():
    with pytest.raises(HardwareConfigError) as err:
        load_register_map("abb-b23")
    assert "sdm630" in str(err.value) and "sdm120" in str(err.value)
    with pytest.raises(HardwareConfigError):
        load_register_map("../errors")
    with pytest.raises(HardwareConfigError):
        ModbusMeter(ModbusBus(MeterBusConfig(transport="tcp")), model="nosuchmeter", unit_id=1)


async def test_sdm630_over_tcp_gives_every_quantity(tcp_meter):
    fake, bus, _, _ = tcp_meter
    meter = ModbusMeter(bus, model="sdm630", unit_id=1)
    assert isinstance(meter, EnergyMeter)
    assert meter.last_sample is None

    sample = await meter.read()

    assert sample.energy_wh == 1_234_500.0
    assert sample.power_w == 10992.5
    assert tuple(sample.voltage_v) == (230.5, 231.0, 229.5)
    assert tuple(sample.current_a) == (16.25, 15.5, 16.0)
    assert tuple(sample.power_per_phase_w) == (3740.0, 3580.5, 3672.0)
    assert sample.frequency_hz == 50.0
    assert sample.phases == 3
    assert meter.last_sample == sample
    assert meter.faults() == frozenset()
    # Two requests, both function 04 (input registers), no register read twice.
    assert fake.requests == [(4, 0x0000, 18), (4, 0x0034, 22)]


async def test_two_meters_share_one_rtu_line(rtu_line):
    _, (fake630, fake120), bus = rtu_line
    m630 = ModbusMeter(bus, model="sdm630", unit_id=1)
    m120 = ModbusMeter(bus, model="sdm120", unit_id=2)

    s630, s120 = await asyncio.gather(m630.read(), m120.read())

    assert s630.energy_wh == 1_234_500.0
    assert tuple(s630.voltage_v) == (230.5, 231.0, 229.5)
    assert s120.energy_wh == 42_250.0
    assert s120.power_w == 1710.0
    assert tuple(s120.voltage_v) == (228.0,)
    assert tuple(s120.current_a) == (7.5,)
    assert tuple(s120.power_per_phase_w) == (1710.0,)
    assert s120.frequency_hz == 49.5
    assert s120.phases == 1
    assert fake630.requests and fake120.requests
    assert all(fc == 4 for fc, _, _ in fake630.requests + fake120.requests)


async def test_silent_meter_raises_keeps_last_sample_and_recovers(rtu_line, caplog):
    cable, (fake630, _), bus = rtu_line
    meter = ModbusMeter(bus, model="sdm630", unit_id=1)
    good = await meter.read()

    cable.cut()
    caplog.set_level(logging.INFO, logger="hal.pi.meter")
    for _ in range(2):
        with pytest.raises(MeterError) as err:
            await meter.read()
        assert err.value.fault is Fault.METER_FAILURE
    assert meter.faults() == {Fault.METER_FAILURE}
    assert meter.last_sample == good
    errors = [r for r in caplog.records if r.name == "hal.pi.meter" and r.levelno >= logging.ERROR]
    assert len(errors) == 1, "a fault is logged once, not at every poll"

    cable.mend()
    fake630.set(0x0048, 1235.0)
    sample = await meter.read()
    assert sample.energy_wh == 1_235_000.0
    assert meter.faults() == frozenset()
    assert any(
        r.levelno == logging.INFO and "again" in r.getMessage()
        for r in caplog.records
        if r.name == "hal.pi.meter"
    )


async def test_tcp_meter_gone_and_back(tcp_meter):
    _, bus, stop, restart = tcp_meter
    meter = ModbusMeter(bus, model="sdm630", unit_id=1)
    good = await meter.read()

    await stop()
    with pytest.raises(MeterError):
        await meter.read()
    assert meter.faults() == {Fault.METER_FAILURE}
    assert meter.last_sample == good

    await restart()
    assert (await meter.read()).energy_wh == good.energy_wh
    assert meter.faults() == frozenset()


async def test_energy_going_backwards_is_refused(tcp_meter):
    fake, bus, _, _ = tcp_meter
    meter = ModbusMeter(bus, model="sdm630", unit_id=1)
    good = await meter.read()

    fake.set(0x0048, 1200.0)
    with pytest.raises(MeterError, match="went back"):
        await meter.read()
    assert meter.last_sample == good
    assert meter.faults() == {Fault.METER_FAILURE}

    fake.set(0x0048, 1240.0)
    assert (await meter.read()).energy_wh == 1_240_000.0
    assert meter.faults() == frozenset()


async def test_nan_energy_is_refused_and_nan_values_read_as_none(tcp_meter):
    fake, bus, _, _ = tcp_meter
    meter = ModbusMeter(bus, model="sdm630", unit_id=1)
    fake.set(0x0048, math.nan)
    with pytest.raises(MeterError):
        await meter.read()
    assert meter.last_sample is None

    fake.set(0x0048, 1234.5)
    fake.set(0x0046, math.nan)
    sample = await meter.read()
    assert sample.frequency_hz is None
    assert sample.energy_wh == 1_234_500.0


async def test_exception_response_is_a_meter_error(tcp_meter):
    fake, bus, _, _ = tcp_meter
    meter = ModbusMeter(bus, model="sdm630", unit_id=1)
    fake.busy = True
    with pytest.raises(MeterError, match="exception response"):
        await meter.read()
    assert meter.faults() == {Fault.METER_FAILURE}
    fake.busy = False
    await meter.read()
    assert meter.faults() == frozenset()


async def test_closed_bus_refuses_reads(tcp_meter):
    _, bus, _, _ = tcp_meter
    meter = ModbusMeter(bus, model="sdm630", unit_id=1)
    await meter.read()
    await bus.close()
    with pytest.raises(MeterError, match="closed"):
        await meter.read()
