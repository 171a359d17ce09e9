"""Replay detection on the OCPP-J link (the whitepaper's AttemptedReplayAttacks).

OCPP-J 1.6 section 4.1.1: the message id of a CALL "MUST be different from all
message IDs previously used by the same sender for CALL messages on the same
websocket connection".  A CSMS CALL that repeats such an id is either a broken
CSMS or a frame captured and sent again; the station raises
AttemptedReplayAttacks (rate-limited by the daemon) so that the operator hears of
it.  The CALL is still answered as any other: that is the link's contract since
the beginning (tests/fuzz: "the CSMS broke the rule, not us"), a CSMS that reuses
ids by mistake keeps working, and over TLS (profiles 2 and 3) a third party
cannot inject a captured frame into the session anyway; a refusal would only hurt
the broken-CSMS case.  Recording, not blocking, is what the whitepaper asks.

The ids are remembered per connection (a new connection starts empty, as the
rule is per connection), for ``window_s`` seconds and at most ``max_ids`` of
them, so memory stays bounded whatever the CSMS sends.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class RecentIds:
    """The CALL ids seen on one connection: bounded in count and in age."""

    def __init__(
        self, monotonic: Callable[[], float], *, max_ids: int = 1000, window_s: float = 3600.0
    ) -> None:
        if max_ids < 1 or window_s <= 0:
            raise ValueError("max_ids must be >= 1 and window_s > 0")
        self._monotonic = monotonic
        self.max_ids = max_ids
        self.window_s = window_s
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def repeated(self, unique_id: str) -> bool:
        """True if ``unique_id`` was already seen within the window; records it otherwise."""
        now = self._monotonic()
        while self._seen:
            oldest_id, when = next(iter(self._seen.items()))
            if now - when <= self.window_s and len(self._seen) < self.max_ids:
                break
            del self._seen[oldest_id]
        if unique_id in self._seen:
            return True
        self._seen[unique_id] = now
        return False
