"""What the CSMS saw: every CALL a station sent and how the CSMS answered it.

Built from BenchCsms's public frame hook rather than from its ``received``
list, because the invariants need two things a Record does not carry: the
answer (a CALLRESULT, a CALLERROR, or nothing because the CSMS hung, died or
lost the connection) and which websocket connection a CALL came on (a message
re-sent on a *new* connection after its CALLRESULT was given is a redelivery
after a crash or a cut; on the *same* connection it is a station bug).

The connection is told apart by the asyncio task that reads it: websockets
runs one handler task per connection, and BenchCsms calls the frame hook for
inbound frames from inside that task.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chargerd.bench.csms.csms import FrameRecord


@dataclass(slots=True)
class Exchange:
    """One CALL the CSMS received from the station, and its answer."""

    index: int  # arrival order, 0-based
    time: float  # epoch seconds when the CSMS read it
    connection: int  # 1 for the station's first websocket, 2 for the next, ...
    action: str
    payload: dict[str, Any]
    unique_id: str
    answer: str = "none"  # "result", "error" or "none" (never answered)
    result: dict[str, Any] | None = None
    error_code: str | None = None
    answer_time: float | None = None

    @property
    def latency(self) -> float | None:
        return None if self.answer_time is None else self.answer_time - self.time


class Journal:
    """Collects the Exchanges of one station; pass ``journal.on_frame`` to BenchCsms."""

    def __init__(self, cp_id: str, *, clock: Callable[[], float] = time.time) -> None:
        self.cp_id = cp_id
        self._clock = clock
        self.exchanges: list[Exchange] = []
        self._by_id: dict[str, Exchange] = {}
        self._connections: dict[int, int] = {}  # id(handler task) -> connection number
        self._tasks: list[asyncio.Task] = []  # keeps ids from being reused
        self.connections_seen = 0

    def _connection(self) -> int:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        if task is None:
            return 0
        key = id(task)
        if key not in self._connections:
            self.connections_seen += 1
            self._connections[key] = self.connections_seen
            self._tasks.append(task)
        return self._connections[key]

    def answered(self, frame: str) -> Exchange | None:
        """The Exchange an outgoing CALLRESULT/CALLERROR frame answers, if any."""
        try:
            msg = json.loads(frame)
        except ValueError:
            return None
        if isinstance(msg, list) and len(msg) >= 2 and msg[0] in (3, 4):
            return self._by_id.get(str(msg[1]))
        return None

    def on_frame(self, rec: FrameRecord) -> None:
        if rec.cp_id != self.cp_id:
            return
        try:
            msg = json.loads(rec.frame)
        except ValueError:
            return
        if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str):
            return
        now = self._clock()
        if rec.direction == "in":
            if msg[0] == 2 and len(msg) == 4 and isinstance(msg[3], dict):
                ex = Exchange(
                    index=len(self.exchanges),
                    time=now,
                    connection=self._connection(),
                    action=str(msg[2]),
                    payload=msg[3],
                    unique_id=msg[1],
                )
                self.exchanges.append(ex)
                self._by_id[msg[1]] = ex
            return
        ex = self._by_id.get(msg[1])
        if ex is None or ex.answer != "none":
            return
        if msg[0] == 3 and isinstance(msg[2], dict):
            ex.answer, ex.result, ex.answer_time = "result", msg[2], now
        elif msg[0] == 4:
            ex.answer, ex.error_code, ex.answer_time = "error", str(msg[2]), now
