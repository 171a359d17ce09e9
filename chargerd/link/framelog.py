"""The frame log: every OCPP frame in and out, for `chargerctl link log|follow`.

A technician's first question is always "what went over the wire?", so the
link records each frame here before anything else happens to it.  The recent
history is kept in memory (bounded); live followers get their own bounded
queue so that a slow terminal can never hold up the link.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal

from chargerd.clock import Clock, SystemClock, iso
from chargerd.privacy import Redactor

frame_logger = logging.getLogger("chargerd.link.frames")

Direction = Literal["in", "out"]

# A ChangeConfiguration of a write-only key carries a secret (the HTTP Basic password):
# the frame log, `chargerctl log` and a diagnostics bundle show it masked.
_SECRET = r'"key"\s*:\s*"AuthorizationKey"'
_SECRET_VALUE = re.compile(
    rf'({_SECRET}\s*,\s*"value"\s*:\s*)"(?:[^"\\]|\\.)*"'
    rf'|("value"\s*:\s*)"(?:[^"\\]|\\.)*"(\s*,\s*{_SECRET})',
    re.IGNORECASE,
)


def hide_secrets(frame: str) -> str:
    """``frame`` with the value of an AuthorizationKey change replaced by ``"****"``."""
    if "changeconfiguration" not in frame.casefold():
        return frame

    def masked(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return f'{m.group(1)}"****"'
        return f'{m.group(2)}"****"{m.group(3)}'

    return _SECRET_VALUE.sub(masked, frame)


class Subscription:
    """A live view of the frame log; iterate it with ``async for``.

    Registered at creation (not at first iteration) so no frame recorded after
    ``subscribe()`` returns is missed.  When the follower falls behind by more
    than its queue, frames are dropped for it and one ``{"direction": "gap"}``
    entry tells how many, once there is room again.
    """

    def __init__(self, owner: FrameLog, maxsize: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[dict] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0
        self._closed = False

    def _offer(self, entry: dict) -> None:
        if self._closed:
            return
        if self.dropped and self._queue.qsize() < self._queue.maxsize - 1:
            gap = {"time": entry["time"], "direction": "gap", "frame": f"{self.dropped} dropped"}
            self._queue.put_nowait(gap)
            self.dropped = 0
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict:
        if self._closed:
            raise StopAsyncIteration
        return await self._queue.get()

    def close(self) -> None:
        self._closed = True
        self._owner._subscribers.discard(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class FrameLog:
    def __init__(
        self,
        maxlen: int = 2000,
        *,
        clock: Clock | None = None,
        subscriber_queue: int = 256,
        redactor: Redactor | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        # [logging] redact_id_tags: what is kept and shown has the idTags masked
        # (the wire is untouched: this is a copy for people to read).
        self._redactor = redactor
        self._entries: deque[dict] = deque(maxlen=maxlen)
        # Weak: a follower that forgets to close() must not stay registered forever.
        self._subscribers: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._subscriber_queue = subscriber_queue

    #: Longer frames are kept cut to this many characters: 2000 frames of up to
    #: max_frame_bytes each would otherwise hold over 100 MB on a small board.
    max_kept_chars = 8192

    def record(self, direction: Direction, frame: str) -> None:
        if len(frame) > self.max_kept_chars:
            frame = f"{frame[: self.max_kept_chars]}... ({len(frame)} characters, cut)"
        if self._redactor is not None:
            frame = self._redactor.redact(frame)
        frame = hide_secrets(frame)
        entry = {"time": iso(self._clock.now()), "direction": direction, "frame": frame}
        self._entries.append(entry)
        frame_logger.debug("%s %s", direction, frame)
        for sub in list(self._subscribers):
            sub._offer(entry)

    def tail(self, n: int) -> list[dict]:
        """The last ``n`` frames, oldest first."""
        if n <= 0:
            return []
        return list(self._entries)[-n:]

    def subscribe(self) -> AsyncIterator[dict]:
        sub = Subscription(self, self._subscriber_queue)
        self._subscribers.add(sub)
        return sub
