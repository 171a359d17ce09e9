"""The enclosure tamper switch -> security event TamperDetectionActivated.

Opening the enclosure emits TamperDetectionActivated (critical in the
whitepaper: it goes through the durable outbox, so an opening while offline
still reaches the CSMS) once per opening, logged at WARNING.  An opening found
at start (the enclosure already open when chargerd starts) counts as one.

Charging is *not* stopped: the whitepaper (Ed. 3, security events) only asks
that the event be reported, and a technician opening the enclosure for
maintenance is the common case; the electrical protections (contactor, RCD)
do not depend on the enclosure.  An operator who wants a tampered station
out of service does it from the CSMS (ChangeAvailability) on the event.

A switch bounces: a re-opening within ``SETTLE_S`` of the last closing is the
same opening, not a second event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from chargerd.clock import Clock
from chargerd.features.security_events import TAMPER_DETECTION_ACTIVATED
from hal.interfaces import TamperSwitch

log = logging.getLogger(__name__)

SETTLE_S = 2.0


def is_new_opening(
    was_open: bool, now_open: bool, last_closed_at: float | None, now: float, settle_s: float
) -> bool:
    """True when this change is an opening to report (not a bounce of the last one)."""
    if was_open or not now_open:
        return False
    return last_closed_at is None or now - last_closed_at >= settle_s


class TamperWatch:
    """Follows one TamperSwitch; call ``start(loop)`` once, from the event loop."""

    def __init__(
        self,
        switch: TamperSwitch,
        *,
        emit: Callable[[str, str | None], None],
        clock: Clock,
        settle_s: float = SETTLE_S,
    ) -> None:
        self._switch = switch
        self._emit = emit
        self._clock = clock
        self._settle_s = settle_s
        self.opened = False
        self.openings = 0  # reported openings, for status and tests
        self._last_closed_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._switch.on_change(self._from_any_thread)
        if self._switch.opened:
            self.changed(True, at_start=True)

    def _from_any_thread(self, opened: bool) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.changed, opened)

    def changed(self, opened: bool, *, at_start: bool = False) -> None:
        """The switch moved (on the loop's thread)."""
        now = self._clock.monotonic()
        report = is_new_opening(self.opened, opened, self._last_closed_at, now, self._settle_s)
        if self.opened and not opened:
            self._last_closed_at = now
            log.info("enclosure closed")
        self.opened = opened
        if not report:
            return
        self.openings += 1
        why = "enclosure open at start" if at_start else "enclosure opened"
        log.warning("tamper switch: %s", why)
        self._emit(TAMPER_DETECTION_ACTIVATED, why)
