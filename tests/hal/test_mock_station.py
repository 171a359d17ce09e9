"""The bench controls of the mock station: the car, the cable, faults, snapshot."""

from __future__ import annotations

import json

import pytest

from hal.config import HardwareConfig, MockConfig
from hal.errors import ContactorError, HardwareConfigError, RcdError
from hal.interfaces import (
    CableLock,
    Contactor,
    EnergyMeter,
    EvState,
    Fault,
    Indicator,
    Pilot,
    RfidReader,
)
from hal.mock import FAULT_NAMES, MockStation, open_mock_station


@pytest.fixture
async def hw(tmp_path, clock):
    station = open_mock_station(HardwareConfig(), tmp_path, connectors=2, monotonic=clock)
    yield station
    await station.aclose()


@pytest.fixture
def sim(hw) -> MockStation:
    assert isinstance(hw.sim, MockStation)
    return hw.sim


async def test_station_has_one_set_of_devices_per_connector_and_one_reader(hw):
    # cfg.connectors holds one entry, the station has two connectors
    assert hw.kind == "mock"
    assert len(hw.connectors) == 2
    assert isinstance(hw.reader, RfidReader)
    for c in hw.connectors:
        assert isinstance(c.contactor, Contactor)
        assert isinstance(c.lock, CableLock)
        assert isinstance(c.meter, EnergyMeter)
        assert isinstance(c.pilot, Pilot)
        assert isinstance(c.indicator, Indicator)
    assert hw.connectors[0].pilot is not hw.connectors[1].pilot


async def test_ev_walks_through_the_iec_61851_states(hw, sim):
    pilot = hw.connectors[0].pilot
    assert await pilot.ev_state() is EvState.A
    sim.plug(1)
    assert await pilot.ev_state() is EvState.B
    sim.charge(1)
    assert await pilot.ev_state() is EvState.B  # no PWM: the EV must not close S2
    pilot.set_offered_current(16)
    assert await pilot.ev_state() is EvState.C
    pilot.set_offered_current(None)
    assert await pilot.ev_state() is EvState.B  # PWM stopped
    pilot.set_offered_current(16)
    assert await pilot.ev_state() is EvState.C  # still wants to charge
    sim.suspend(1)
    assert await pilot.ev_state() is EvState.B
    sim.unplug(1)
    assert await pilot.ev_state() is EvState.A
    assert await hw.connectors[1].pilot.ev_state() is EvState.A  # the other connector


async def test_plug_uses_config_defaults_and_overrides(tmp_path, clock):
    cfg = HardwareConfig(mock=MockConfig(ev_max_current_a=20, ev_phases=1, cable_capacity_a=13))
    hw = open_mock_station(cfg, tmp_path, connectors=1, monotonic=clock)
    hw.sim.plug(1)
    snap = hw.sim.snapshot()["connectors"][0]
    assert (snap["ev_max_current_a"], snap["phases"], snap["cable_capacity_a"]) == (20, 1, 13)
    assert await hw.connectors[0].pilot.cable_capacity_a() == 13
    hw.sim.unplug(1)
    assert await hw.connectors[0].pilot.cable_capacity_a() is None
    hw.sim.plug(1, ev_max_current_a=11, phases=3, cable_capacity_a=63)
    snap = hw.sim.snapshot()["connectors"][0]
    assert (snap["ev_max_current_a"], snap["phases"], snap["cable_capacity_a"]) == (11, 3, 63)
    await hw.aclose()


async def test_unplug_under_load_stops_the_current(hw, sim):
    c = hw.connectors[0]
    sim.plug(1)
    sim.charge(1)
    c.pilot.set_offered_current(16)
    await c.contactor.close()
    assert (await c.meter.read()).power_w > 0
    sim.unplug(1)
    assert await c.pilot.ev_state() is EvState.A
    assert (await c.meter.read()).power_w == 0
    assert c.contactor.closed  # the daemon has not reacted yet: nothing moved by itself


async def test_ev_error_reads_state_e_and_stops_drawing(hw, sim):
    c = hw.connectors[0]
    sim.plug(1)
    sim.charge(1)
    c.pilot.set_offered_current(32)
    await c.contactor.close()
    sim.fault("ev_error", True, connector=1)
    assert await c.pilot.ev_state() is EvState.E
    assert Fault.EV_ERROR in c.pilot.faults()
    assert (await c.meter.read()).power_w == 0
    sim.fault("ev_error", False, connector=1)
    assert await c.pilot.ev_state() is EvState.C
    assert c.pilot.faults() == frozenset()


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda s: s.charge(1), "no EV is plugged"),
        (lambda s: s.suspend(1), "no EV is plugged"),
        (lambda s: s.unplug(1), "nothing is plugged"),
        (lambda s: s.plug(0), "unknown connector"),
        (lambda s: s.plug(3), "unknown connector"),
        (lambda s: s.charge(True), "unknown connector"),
        (lambda s: s.plug(1, phases=2), "1 or 3 phases"),
        (lambda s: s.plug(1, cable_capacity_a=25), "cable capacity"),
        (lambda s: s.plug(1, ev_max_current_a=0), "EV max current"),
        (lambda s: s.fault("meter_broken", True), "unknown fault"),
        (lambda s: s.fault("meter_silent", True, connector=5), "unknown connector"),
        (lambda s: s.fault("reader_dead", True, connector=1), "station fault"),
        (lambda s: s.fault("meter_silent", "yes"), "True or False"),
        (lambda s: s.present_card("TOKEN-0001-TOO-LONG-X"), "1 to 20 printable"),
        (lambda s: s.set_energy_wh(1, -5), "never goes backwards"),
    ],
)
async def test_impossible_actions_are_refused_with_a_reason(sim, action, message):
    with pytest.raises(ValueError, match=message):
        action(sim)


async def test_plugging_twice_is_refused(sim):
    sim.plug(1)
    with pytest.raises(ValueError, match="already plugged"):
        sim.plug(1)


async def test_faults_are_listed_per_connector(sim):
    assert set(FAULT_NAMES) == {
        "meter_silent",
        "contactor_welded",
        "lock_jammed",
        "reader_dead",
        "ev_error",
        "rcd_trip",
        "lock_lost",
        "rcd_test_fail",
        "tamper",
    }
    assert sim.active_faults() == {}
    sim.fault("meter_silent", True)  # all connectors
    sim.fault("lock_jammed", True, connector=2)
    sim.fault("reader_dead", True)
    assert sim.active_faults() == {
        "meter_silent": [1, 2],
        "lock_jammed": [2],
        "reader_dead": True,
    }
    sim.fault("meter_silent", False, connector=1)
    sim.fault("reader_dead", False)
    assert sim.active_faults() == {"meter_silent": [2], "lock_jammed": [2]}


async def test_a_station_without_lock_refuses_lock_jammed(tmp_path, clock):
    hw = open_mock_station(
        HardwareConfig(mock=MockConfig(lock=False)), tmp_path, connectors=1, monotonic=clock
    )
    assert hw.connectors[0].lock is None
    with pytest.raises(ValueError, match="no cable lock"):
        hw.sim.fault("lock_jammed", True)
    await hw.aclose()


async def test_snapshot_shows_the_bench_state_as_json(hw, sim, clock):
    c = hw.connectors[1]
    sim.plug(2, ev_max_current_a=10, phases=1)
    sim.charge(2)
    c.pilot.set_offered_current(16)
    await c.contactor.close()
    await c.lock.lock()
    sim.present_card("04a1b2c3")
    clock.t += 360
    snap = json.loads(json.dumps(sim.snapshot()))
    two = snap["connectors"][1]
    assert two["connector"] == 2
    assert two["plugged"] and two["wants_charge"]
    assert two["ev_state"] == "C"
    assert two["offered_current_a"] == 16
    assert two["contactor_closed"] and two["locked"]
    assert two["current_a"] == 10
    assert two["power_w"] == pytest.approx(2300)
    assert two["energy_wh"] == pytest.approx(230)
    one = snap["connectors"][0]
    assert one["ev_state"] == "A" and one["power_w"] == 0 and not one["plugged"]
    assert snap["reader"] == {"dead": False, "pending_cards": 1}
    assert snap["faults"] == {}


@pytest.mark.parametrize(
    "mock",
    [MockConfig(ev_phases=2), MockConfig(cable_capacity_a=16), MockConfig(voltage_v=0)],
)
def test_an_impossible_mock_config_is_refused(tmp_path, mock):
    with pytest.raises(HardwareConfigError, match=r"\[hardware.mock\]"):
        open_mock_station(HardwareConfig(mock=mock), tmp_path, connectors=1)


def test_a_station_needs_a_connector(tmp_path):
    with pytest.raises(HardwareConfigError, match="at least 1 connector"):
        open_mock_station(HardwareConfig(), tmp_path, connectors=0)


def test_the_ev_stays_plugged_across_a_daemon_restart(tmp_path):
    from hal.config import HardwareConfig
    from hal.interfaces import EvState
    from hal.mock import open_mock_station

    hw = open_mock_station(HardwareConfig(), tmp_path, connectors=2)
    hw.sim.plug(2, ev_max_current_a=16, phases=1)
    hw.sim.charge(2)
    # no close: a kill -9 closes nothing
    again = open_mock_station(HardwareConfig(), tmp_path, connectors=2)
    snap = again.sim.snapshot()["connectors"]
    assert snap[0]["plugged"] is False
    assert snap[1]["plugged"] is True
    assert snap[1]["wants_charge"] is True
    assert snap[1]["ev_max_current_a"] == 16
    assert snap[1]["phases"] == 1
    import asyncio

    assert asyncio.run(again.connectors[1].pilot.ev_state()) is EvState.B  # no PWM yet
    again.sim.unplug(2)
    assert (
        open_mock_station(HardwareConfig(), tmp_path, connectors=2).sim.snapshot()["connectors"][1][
            "plugged"
        ]
        is False
    )


async def test_an_rcd_trip_opens_the_contactor_inside_the_trip(tmp_path, clock):
    hw = open_mock_station(HardwareConfig(), tmp_path, connectors=2, monotonic=clock)
    one, two = hw.connectors
    await one.contactor.close()
    await two.contactor.close()
    hw.sim.fault("rcd_trip", True, connector=1)  # synchronous: no await in between
    assert not one.contactor.closed and two.contactor.closed
    assert hw.sim.connector(1).sim.contacts_closed is False
    assert one.rcd.faults() == {Fault.RCD_TRIPPED}
    with pytest.raises(ContactorError, match="residual-current monitor tripped"):
        await one.contactor.close()
    assert hw.sim.active_faults() == {"rcd_trip": [1]}
    hw.sim.fault("rcd_trip", False, connector=1)
    await one.contactor.close()
    assert one.contactor.closed and one.rcd.faults() == frozenset()
    await hw.aclose()


async def test_a_failing_rcd_self_test_stands_until_one_passes(tmp_path, clock):
    hw = open_mock_station(HardwareConfig(), tmp_path, connectors=1, monotonic=clock)
    (one,) = hw.connectors
    await one.rcd.self_test()
    hw.sim.fault("rcd_test_fail", True)
    with pytest.raises(RcdError):
        await one.rcd.self_test()
    assert one.rcd.faults() == {Fault.RCD_FAILURE}
    hw.sim.fault("rcd_test_fail", False)
    await one.rcd.self_test()
    assert one.rcd.faults() == frozenset()
    await hw.aclose()


async def test_a_lost_lock_is_a_lock_failure_while_locked(tmp_path, clock):
    hw = open_mock_station(HardwareConfig(), tmp_path, connectors=1, monotonic=clock)
    (one,) = hw.connectors
    await one.lock.lock()
    hw.sim.fault("lock_lost", True)
    assert one.lock.faults() == {Fault.LOCK_FAILURE} and not one.lock.locked
    hw.sim.fault("lock_lost", False)
    assert one.lock.faults() == frozenset() and one.lock.locked
    await hw.aclose()


async def test_tamper_opens_and_closes_the_enclosure(sim):
    seen: list[bool] = []
    sim.tamper.on_change(seen.append)
    sim.fault("tamper", True)
    sim.fault("tamper", True)  # already open: no second change
    assert sim.tamper.opened and sim.active_faults() == {"tamper": True}
    sim.fault("tamper", False)
    assert seen == [True, False] and sim.active_faults() == {}
    with pytest.raises(ValueError, match="station fault"):
        sim.fault("tamper", True, connector=1)
