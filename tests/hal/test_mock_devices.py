"""The mock devices seen from the daemon: pilot, lock, indicator, reader, contactor."""

from __future__ import annotations

import asyncio

import pytest

from hal.config import HardwareConfig
from hal.errors import LockError
from hal.interfaces import Fault, IndicatorState
from hal.mock import open_mock_station


@pytest.fixture
async def hw(tmp_path, clock):
    station = open_mock_station(HardwareConfig(), tmp_path, connectors=1, monotonic=clock)
    yield station
    await station.aclose()


@pytest.mark.parametrize(("amps", "offered"), [(6, 6.0), (80, 80.0), (13.5, 13.5), (0, None)])
def test_pilot_accepts_the_iec_range(hw, amps, offered):
    pilot = hw.connectors[0].pilot
    pilot.set_offered_current(amps)
    assert pilot.offered_current_a == offered
    pilot.set_offered_current(None)
    assert pilot.offered_current_a is None


@pytest.mark.parametrize("amps", [5.9, 80.5, -6, float("nan"), "16", True])
def test_pilot_refuses_an_offer_outside_the_iec_range(hw, amps):
    pilot = hw.connectors[0].pilot
    pilot.set_offered_current(16)
    with pytest.raises(ValueError, match="offered current"):
        pilot.set_offered_current(amps)
    assert pilot.offered_current_a == 16  # a refused offer changes nothing


async def test_contactor_follows_commands(hw):
    contactor = hw.connectors[0].contactor
    assert not contactor.closed
    await contactor.close()
    assert contactor.closed
    await contactor.open()
    assert not contactor.closed
    assert contactor.faults() == frozenset()


async def test_cable_lock_moves_unless_jammed(hw):
    lock = hw.connectors[0].lock
    await lock.lock()
    assert lock.locked
    hw.sim.fault("lock_jammed", True)
    with pytest.raises(LockError, match="jammed"):
        await lock.unlock()
    assert lock.locked  # stuck where it was: the cable cannot be released
    assert lock.faults() == {Fault.LOCK_FAILURE}
    hw.sim.fault("lock_jammed", False)
    assert lock.faults() == frozenset()
    await lock.unlock()
    assert not lock.locked


def test_indicator_records_what_it_showed_and_when(hw, clock):
    ind = hw.connectors[0].indicator
    assert ind.state is IndicatorState.OFF
    ind.show(IndicatorState.AVAILABLE)
    clock.t = 12.5
    ind.show(IndicatorState.CHARGING)
    assert ind.state is IndicatorState.CHARGING
    assert ind.history == [(7.0, IndicatorState.AVAILABLE), (12.5, IndicatorState.CHARGING)]
    with pytest.raises(ValueError):
        ind.show("disco")
    assert ind.state is IndicatorState.CHARGING


async def _nothing_pending(reader) -> bool:
    """True when next_card() has nothing to yield (checked without real-time waits)."""
    task = asyncio.ensure_future(reader.next_card())
    for _ in range(5):
        await asyncio.sleep(0)
    pending = not task.done()
    task.cancel()
    return pending


async def test_a_card_is_yielded_once_in_upper_case(hw):
    reader = hw.reader
    assert hw.sim.present_card("04a1b2c3d4e5f6") is True
    hw.sim.present_card(" DEADBEEF ")
    assert await reader.next_card() == "04A1B2C3D4E5F6"
    assert await reader.next_card() == "DEADBEEF"
    assert await _nothing_pending(reader)


async def test_next_card_waits_for_a_presentation(hw):
    task = asyncio.ensure_future(hw.reader.next_card())
    await asyncio.sleep(0)
    assert not task.done()
    hw.sim.present_card("0123456789ABCDEF0123")
    assert await task == "0123456789ABCDEF0123"


@pytest.mark.parametrize("uid", ["", "   ", "X" * 21, "TAB\tTAG", "NEWLINE\n2", 1234])
def test_an_invalid_id_tag_is_refused(hw, uid):
    with pytest.raises(ValueError, match="idTag"):
        hw.sim.present_card(uid)


async def test_any_printable_id_tag_is_read_as_given_and_hex_uids_upper_cased(hw):
    for given, read in (
        ("TOKEN-0001", "TOKEN-0001"),
        ("USER_42", "USER_42"),
        ("04a1b2c3", "04A1B2C3"),
    ):
        assert hw.sim.present_card(given)
        assert await hw.reader.next_card() == read


async def test_a_dead_reader_loses_the_cards_presented_to_it(hw):
    reader = hw.reader
    hw.sim.fault("reader_dead", True)
    assert reader.faults() == {Fault.READER_FAILURE}
    assert hw.sim.present_card("AABBCCDD") is False
    assert await _nothing_pending(reader)
    hw.sim.fault("reader_dead", False)
    assert reader.faults() == frozenset()
    hw.sim.present_card("11223344")
    assert await reader.next_card() == "11223344"  # not the lost one
    assert await _nothing_pending(reader)
