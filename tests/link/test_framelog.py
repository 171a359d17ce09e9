import asyncio
import logging
from datetime import UTC, datetime

from chargerd.clock import ManualClock
from chargerd.link import FrameLog


def test_records_time_direction_frame_and_keeps_the_last_maxlen():
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    log = FrameLog(maxlen=3, clock=clock)
    for i in range(5):
        log.record("out" if i % 2 else "in", f"[{i}]")
        clock.advance(1)
    assert log.tail(10) == [
        {"time": "2026-03-01T12:00:02.000Z", "direction": "in", "frame": "[2]"},
        {"time": "2026-03-01T12:00:03.000Z", "direction": "out", "frame": "[3]"},
        {"time": "2026-03-01T12:00:04.000Z", "direction": "in", "frame": "[4]"},
    ]
    assert [e["frame"] for e in log.tail(1)] == ["[4]"]
    assert log.tail(0) == []


def test_frames_go_to_the_debug_log(caplog):
    log = FrameLog()
    with caplog.at_level(logging.DEBUG, logger="chargerd.link.frames"):
        log.record("in", '[2,"1","Reset",{}]')
    assert [r.getMessage() for r in caplog.records] == ['in [2,"1","Reset",{}]']


async def test_subscriber_follows_live():
    log = FrameLog()
    sub = log.subscribe()
    log.record("in", "a")  # recorded before the first iteration: not missed
    log.record("out", "b")
    got = []
    async with asyncio.timeout(1):
        async for entry in sub:
            got.append((entry["direction"], entry["frame"]))
            if len(got) == 2:
                break
    assert got == [("in", "a"), ("out", "b")]


async def test_slow_subscriber_drops_and_is_told_never_blocks():
    log = FrameLog(subscriber_queue=4)
    sub = log.subscribe()
    for i in range(10):
        log.record("in", str(i))  # returns at once although nobody reads
    assert len(log.tail(100)) == 10
    first = [await anext(sub) for _ in range(4)]
    assert [e["frame"] for e in first] == ["0", "1", "2", "3"]
    log.record("in", "10")
    gap, nxt = await anext(sub), await anext(sub)
    assert gap["direction"] == "gap" and gap["frame"] == "6 dropped"
    assert nxt["frame"] == "10"


async def test_closed_subscription_stops_receiving():
    log = FrameLog()
    async with log.subscribe() as sub:
        pass
    log.record("in", "x")
    assert [e async for e in sub] == []


def test_a_huge_frame_is_kept_cut_so_the_log_stays_small():
    log = FrameLog(maxlen=10)
    log.record("in", "x" * 100_000)
    (entry,) = log.tail(1)
    assert len(entry["frame"]) < FrameLog.max_kept_chars + 100
    assert "100000 characters, cut" in entry["frame"]
