"""Mock physics: current, power and energy, the meter's faults and its register on disk."""

from __future__ import annotations

import json

import pytest

from hal.config import HardwareConfig, MockConfig
from hal.errors import ContactorError, HardwareConfigError, MeterError
from hal.interfaces import Fault
from hal.mock import open_mock_station


@pytest.fixture
async def hw(tmp_path, clock):
    station = open_mock_station(HardwareConfig(), tmp_path, connectors=1, monotonic=clock)
    yield station
    await station.aclose()


async def start_charging(hw, *, offer: float = 16, **ev) -> None:
    c = hw.connectors[0]
    hw.sim.plug(1, **ev)
    hw.sim.charge(1)
    c.pilot.set_offered_current(offer)
    await c.contactor.close()


async def test_an_hour_at_16_a_on_three_phases_is_11040_wh(hw, clock):
    meter = hw.connectors[0].meter
    await start_charging(hw, offer=16)
    clock.t += 3600
    s = await meter.read()
    assert s.energy_wh == pytest.approx(11040)
    assert s.power_w == pytest.approx(11040)
    assert list(s.voltage_v) == [230, 230, 230]
    assert list(s.current_a) == [16, 16, 16]
    assert list(s.power_per_phase_w) == pytest.approx([3680, 3680, 3680])
    assert s.frequency_hz == 50
    assert meter.last_sample == s


async def test_a_single_phase_ev_draws_on_l1_only(hw, clock):
    await start_charging(hw, offer=16, phases=1)
    clock.t += 1800
    s = await hw.connectors[0].meter.read()
    assert list(s.current_a) == [16, 0, 0]
    assert s.power_w == pytest.approx(3680)
    assert s.energy_wh == pytest.approx(1840)
    assert s.phases == 3  # the mock meter is a three-phase meter


@pytest.mark.parametrize(
    ("offer", "ev_max", "cable", "expected_a"),
    [
        (10, 32, 32, 10),  # the station's offer limits
        (32, 16, 32, 16),  # the car's onboard charger limits
        (32, 32, 20, 20),  # the cable limits
        (80, 63, 63, 63),
    ],
)
async def test_current_is_the_smallest_of_offer_ev_and_cable(hw, offer, ev_max, cable, expected_a):
    await start_charging(hw, offer=offer, ev_max_current_a=ev_max, cable_capacity_a=cable)
    s = await hw.connectors[0].meter.read()
    assert list(s.current_a) == [expected_a] * 3
    assert s.power_w == pytest.approx(230 * expected_a * 3)


async def test_energy_is_exact_across_changes_without_reads_in_between(hw, clock):
    c = hw.connectors[0]
    await start_charging(hw, offer=16)
    clock.t += 1800
    c.pilot.set_offered_current(32)  # nothing read here: integration must happen on change
    clock.t += 1800
    hw.sim.suspend(1)
    clock.t += 1000  # state B: draws nothing
    hw.sim.charge(1)
    clock.t += 900
    await c.contactor.open()
    clock.t += 5000
    s = await c.meter.read()
    expected = 230 * 3 * (16 * 0.5 + 32 * 0.5 + 32 * 0.25)
    assert s.energy_wh == pytest.approx(expected)


async def test_no_energy_when_contactor_open_or_ev_not_charging(hw, clock):
    c = hw.connectors[0]
    hw.sim.plug(1)
    hw.sim.charge(1)
    c.pilot.set_offered_current(32)  # state C but the contactor is open
    clock.t += 3600
    assert (await c.meter.read()).energy_wh == 0
    hw.sim.suspend(1)
    await c.contactor.close()  # contacts closed, EV in state B
    clock.t += 3600
    assert (await c.meter.read()).energy_wh == 0
    hw.sim.charge(1)
    c.pilot.set_offered_current(None)  # no PWM: the EV stays in B
    clock.t += 3600
    s = await c.meter.read()
    assert s.energy_wh == 0 and s.power_w == 0 and list(s.current_a) == [0, 0, 0]


async def test_a_welded_contactor_keeps_feeding_the_ev(hw, clock):
    c = hw.connectors[0]
    await start_charging(hw, offer=16)
    hw.sim.fault("contactor_welded", True, connector=1)
    with pytest.raises(ContactorError) as err:
        await c.contactor.open()
    assert err.value.fault is Fault.CONTACTOR_WELDED
    assert not c.contactor.closed  # commanded open...
    assert c.contactor.faults() == {Fault.CONTACTOR_WELDED}  # ...yet closed
    clock.t += 3600
    assert (await c.meter.read()).energy_wh == pytest.approx(11040)
    hw.sim.fault("contactor_welded", False, connector=1)  # repaired: the contacts follow
    assert c.contactor.faults() == frozenset()
    clock.t += 3600
    assert (await c.meter.read()).energy_wh == pytest.approx(11040)


async def test_welding_shows_from_the_next_closing_when_injected_open(hw, clock):
    c = hw.connectors[0]
    hw.sim.fault("contactor_welded", True)
    assert c.contactor.faults() == frozenset()  # open contacts do not weld by themselves
    await c.contactor.close()
    with pytest.raises(ContactorError):
        await c.contactor.open()
    assert hw.sim.snapshot()["connectors"][0]["contactor_closed"] is True


async def test_a_silent_meter_raises_keeps_last_sample_and_catches_up(hw, clock):
    meter = hw.connectors[0].meter
    await start_charging(hw, offer=16)
    clock.t += 1800
    before = await meter.read()
    hw.sim.fault("meter_silent", True)
    clock.t += 1800
    with pytest.raises(MeterError):
        await meter.read()
    with pytest.raises(OSError):  # a bus error is an OSError to the caller
        await meter.read()
    assert meter.faults() == {Fault.METER_FAILURE}
    assert meter.last_sample == before
    hw.sim.fault("meter_silent", False)
    after = await meter.read()
    assert meter.faults() == frozenset()
    assert before.energy_wh == pytest.approx(5520)
    assert after.energy_wh == pytest.approx(11040)  # counted while silent


async def test_the_register_continues_across_a_restart(tmp_path, clock, another_clock):
    hw = open_mock_station(HardwareConfig(), tmp_path, connectors=2, monotonic=clock)
    await start_charging(hw, offer=16)
    clock.t += 3600
    await hw.aclose()
    assert json.loads((tmp_path / "mock-meter-1.json").read_text())["energy_wh"] == pytest.approx(
        11040
    )

    restarted = another_clock()  # a new process: its monotonic clock starts elsewhere
    restarted.t = 3.0
    hw = open_mock_station(HardwareConfig(), tmp_path, connectors=2, monotonic=restarted)
    assert (await hw.connectors[0].meter.read()).energy_wh == pytest.approx(11040)
    assert (await hw.connectors[1].meter.read()).energy_wh == 0
    # The EV did not move while the daemon was down: still plugged, still asking.
    assert hw.sim.snapshot()["connectors"][0]["plugged"] is True
    assert hw.connectors[0].contactor.closed is False  # a new process starts open
    hw.connectors[0].pilot.set_offered_current(16)
    await hw.connectors[0].contactor.close()
    restarted.t += 1800
    assert (await hw.connectors[0].meter.read()).energy_wh == pytest.approx(16560)
    await hw.aclose()


async def test_the_register_is_written_about_every_second_without_close(tmp_path, clock):
    hw = open_mock_station(HardwareConfig(), tmp_path, connectors=1, monotonic=clock)
    path = tmp_path / "mock-meter-1.json"
    await start_charging(hw, offer=16)
    clock.t += 0.5
    await hw.connectors[0].meter.read()
    assert not path.exists()  # not on every read: at most once a second
    clock.t += 3599.5
    await hw.connectors[0].meter.read()
    # no close: this is what a power cut leaves behind
    assert json.loads(path.read_text())["energy_wh"] == pytest.approx(11040)
    hw2 = open_mock_station(HardwareConfig(), tmp_path, connectors=1, monotonic=clock)
    assert (await hw2.connectors[0].meter.read()).energy_wh == pytest.approx(11040)


async def test_a_closed_station_no_longer_writes_the_file(tmp_path, clock):
    hw = open_mock_station(HardwareConfig(), tmp_path, connectors=1, monotonic=clock)
    await start_charging(hw, offer=16)
    await hw.aclose()
    hw2 = open_mock_station(HardwareConfig(), tmp_path, connectors=1, monotonic=clock)
    hw2.sim.set_energy_wh(1, 500_000)
    # a leftover task still drives the old station's devices
    hw.connectors[0].pilot.set_offered_current(16)
    await hw.connectors[0].contactor.close()
    clock.t += 10
    assert (await hw.connectors[0].meter.read()).energy_wh > 0
    await hw2.aclose()
    data = json.loads((tmp_path / "mock-meter-1.json").read_text())
    assert data["energy_wh"] == 500_000


async def test_set_energy_moves_the_register_forward_only(hw):
    hw.sim.set_energy_wh(1, 123_456.5)
    assert (await hw.connectors[0].meter.read()).energy_wh == 123_456.5
    with pytest.raises(ValueError, match="never goes backwards"):
        hw.sim.set_energy_wh(1, 100)


async def test_restore_takes_the_largest_complete_file(tmp_path, clock):
    (tmp_path / "mock-meter-1.json").write_text(json.dumps({"energy_wh": 100.0}))
    (tmp_path / "mock-meter-1.json.tmp").write_text(json.dumps({"energy_wh": 101.0}))
    (tmp_path / "mock-meter-2.json").write_text(json.dumps({"energy_wh": 200.0}))
    (tmp_path / "mock-meter-2.json.tmp").write_text('{"energy_w')  # torn write
    hw = open_mock_station(HardwareConfig(), tmp_path, connectors=2, monotonic=clock)
    assert (await hw.connectors[0].meter.read()).energy_wh == 101
    assert (await hw.connectors[1].meter.read()).energy_wh == 200
    await hw.aclose()


@pytest.mark.parametrize("content", ["not json", '{"energy_wh": -1}', '{"kwh": 3}', "[]"])
def test_an_unreadable_register_is_refused_with_advice(tmp_path, content):
    (tmp_path / "mock-meter-1.json").write_text(content)
    with pytest.raises(HardwareConfigError, match="delete it"):
        open_mock_station(HardwareConfig(), tmp_path, connectors=1)


async def test_voltage_and_frequency_come_from_the_config(tmp_path, clock):
    cfg = HardwareConfig(mock=MockConfig(voltage_v=120, frequency_hz=60))
    hw = open_mock_station(cfg, tmp_path, connectors=1, monotonic=clock)
    await start_charging(hw, offer=10, phases=1)
    s = await hw.connectors[0].meter.read()
    assert (s.power_w, s.frequency_hz, s.voltage_v[0]) == (1200, 60, 120)
    await hw.aclose()
