"""AttemptedReplayAttacks: a CSMS CALL repeating a message id is reported (and answered)."""

from __future__ import annotations

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from chargerd.link.replay import RecentIds


class Counting:
    def __init__(self) -> None:
        self.resets = 0

    @on(Action.reset)
    def on_reset(self, type: str) -> call_result.Reset:
        self.resets += 1
        return call_result.Reset(status="Accepted")


async def test_repeated_call_id_is_reported_and_still_answered(connected):
    link, conn = connected
    handlers = Counting()
    link.register(handlers)
    replays: list[str] = []
    link.replay_listeners.append(replays.append)

    await conn.send([2, "r1", "Reset", {"type": "Soft"}])
    assert await conn.response_to("r1") == [3, "r1", {"status": "Accepted"}]
    assert replays == []
    await conn.send([2, "r1", "Reset", {"type": "Soft"}])
    assert await conn.response_to("r1") == [3, "r1", {"status": "Accepted"}]
    assert replays == ["r1"]
    await conn.send([2, "r2", "Reset", {"type": "Soft"}])
    assert await conn.response_to("r2") == [3, "r2", {"status": "Accepted"}]
    assert replays == ["r1"] and handlers.resets == 3 and link.connected


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_ids_are_forgotten_after_the_window():
    t = FakeTime()
    ids = RecentIds(t, window_s=10.0)
    assert not ids.repeated("a")
    t.t = 5.0
    assert ids.repeated("a")
    t.t = 20.0
    assert not ids.repeated("a")  # older than the window: a new id again


def test_memory_is_bounded():
    ids = RecentIds(FakeTime(), max_ids=3)
    for uid in "abcde":
        assert not ids.repeated(uid)
    assert len(ids) == 3
    assert not ids.repeated("a")  # evicted: forgotten
    assert ids.repeated("e")
