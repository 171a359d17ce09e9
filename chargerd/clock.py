"""The one clock of the daemon.

Everything that needs the time takes a Clock, so that decisions are tested with
a fixed or stepped clock and never sleep in real time.  ``now()`` is wall time
in UTC, corrected by the CSMS's currentTime once it is known (a Pi has no RTC
and may boot with a stale clock); ``monotonic()`` is for intervals and timeouts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall time plus an offset learned from the CSMS."""

    #: A correction smaller than this is drift, not a jump worth telling anyone about.
    JUMP = timedelta(seconds=1)

    def __init__(self) -> None:
        self._offset = timedelta(0)
        # Called after the wall clock jumped (a timer planned on wall time plans again).
        self.on_jump: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def adjust_to(self, csms_now: datetime) -> None:
        """Adopt the CSMS's time (BootNotification / Heartbeat currentTime)."""
        if csms_now.tzinfo is None:
            csms_now = csms_now.replace(tzinfo=UTC)
        old, self._offset = self._offset, csms_now - datetime.now(UTC)
        if abs(self._offset - old) >= self.JUMP:
            for listener in list(self.on_jump):
                listener()


class ManualClock:
    """A clock for tests: time moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)

    def adjust_to(self, csms_now: datetime) -> None:
        self._now = csms_now if csms_now.tzinfo else csms_now.replace(tzinfo=UTC)


async def sleep_or_wake(clock: Clock, seconds: float, wake: asyncio.Event) -> None:
    """Sleep ``seconds`` on ``clock``, or less if ``wake`` is set meanwhile.

    The timers of the features (profile boundaries, reservation expiry, certificate
    renewal, reconnect backoff) sleep on the injectable clock but must re-plan at once
    when their state changes; the caller clears ``wake`` before it plans.
    """
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waker = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waker):
            task.cancel()
        await asyncio.gather(sleeper, waker, return_exceptions=True)


def iso(dt: datetime) -> str:
    """OCPP timestamps: UTC, ISO 8601, 'Z' suffix, millisecond precision."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
