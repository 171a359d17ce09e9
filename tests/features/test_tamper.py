"""TamperWatch: one TamperDetectionActivated per opening of the enclosure, bounces ignored."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from chargerd.clock import ManualClock
from chargerd.features.tamper import TamperWatch, is_new_opening
from hal.tamper import MockTamperSwitch


def test_is_new_opening():
    assert is_new_opening(False, True, None, 0.0, 2.0)
    assert not is_new_opening(True, True, None, 0.0, 2.0)  # still open
    assert not is_new_opening(True, False, None, 0.0, 2.0)  # a closing
    assert not is_new_opening(False, True, 9.5, 10.0, 2.0)  # a bounce
    assert is_new_opening(False, True, 5.0, 10.0, 2.0)


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_each_opening_is_reported_once():
    clock = ManualClock(datetime(2026, 12, 1, tzinfo=UTC))
    switch = MockTamperSwitch()
    events: list[tuple[str, str | None]] = []
    watch = TamperWatch(switch, emit=lambda k, i=None: events.append((k, i)), clock=clock)
    watch.start(asyncio.get_running_loop())
    assert events == []  # closed at start: nothing
    switch.set(True)
    await _settle()
    assert events == [("TamperDetectionActivated", "enclosure opened")]
    switch.set(False)
    clock.advance(0.5)
    switch.set(True)  # the switch bounced
    await _settle()
    assert len(events) == 1 and watch.opened
    switch.set(False)
    await _settle()
    clock.advance(60)
    switch.set(True)  # opened again, a minute later
    await _settle()
    assert len(events) == 2 and watch.openings == 2


async def test_an_enclosure_open_at_start_counts_as_an_opening():
    clock = ManualClock(datetime(2026, 12, 1, tzinfo=UTC))
    switch = MockTamperSwitch()
    switch.set(True)
    events: list[str] = []
    TamperWatch(switch, emit=lambda k, i=None: events.append(i), clock=clock).start(
        asyncio.get_running_loop()
    )
    assert events == ["enclosure open at start"]
