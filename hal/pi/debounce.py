"""Debounced digital inputs: a contact's reading is believed only once it holds.

A contactor's auxiliary contact bounces for a few milliseconds when it moves,
a lock's sense switch rattles when the plug is pushed, and a long cable picks
up interference: a single read must not declare a contactor welded or a lock
lost.  A new level is accepted after ``reads`` agreeing reads that span at
least ``window_s``; until then the last accepted level stands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["DebouncedInput"]


class DebouncedInput:
    """Wraps a gpiozero input device (anything with ``is_active``).

    ``sample()`` is cheap and synchronous (one read), for the supervisor's
    passes; ``settle()`` reads until the level is certain, for the moment
    after a command when the driver must know.
    """

    def __init__(
        self,
        device: Any,
        *,
        reads: int = 3,
        window_s: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.device = device
        self._reads = max(1, reads)
        self._window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._value = bool(device.is_active)
        self._candidate: bool | None = None
        self._count = 0
        self._since = 0.0

    @property
    def value(self) -> bool:
        """The last accepted level (no read)."""
        return self._value

    def force(self, value: bool) -> None:
        """Accept ``value`` now (an edge seen by an interrupt is certain enough to act on)."""
        self._value, self._candidate = bool(value), None

    def sample(self) -> bool:
        """Read once; the accepted level after this read."""
        raw = bool(self.device.is_active)
        now = self._clock()
        if raw == self._value:
            self._candidate = None
            return self._value
        if raw != self._candidate:
            self._candidate, self._count, self._since = raw, 1, now
        else:
            self._count += 1
        if self._count >= self._reads and now - self._since >= self._window_s:
            self._value, self._candidate = raw, None
        return self._value

    async def settle(self, *, interval_s: float = 0.002, max_reads: int = 50) -> bool | None:
        """Read until ``reads`` agreeing reads span ``window_s``; that level (also accepted).

        None when the input keeps changing for ``max_reads`` reads: a chattering
        contact, which the caller treats on the safe side.
        """
        last: bool | None = None
        count, since = 0, 0.0
        for _ in range(max_reads):
            raw = bool(self.device.is_active)
            now = self._clock()
            if raw != last:
                last, count, since = raw, 1, now
            else:
                count += 1
            if count >= self._reads and now - since >= self._window_s:
                self._value, self._candidate = raw, None
                return raw
            await self._sleep(interval_s)
        return None

    def close(self) -> None:
        self.device.close()
