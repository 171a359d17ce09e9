"""A residual-current monitor for the simulated station, drivable like its hardware.

``trip()`` is a fault current (the fault output goes active), ``reset()`` its
release; ``fail_test`` makes the next self-tests fail (a module whose test
input or fault output is dead).  As on the Pi, every ``on_trip`` callback runs
synchronously inside ``trip()``, so the wired contactor is open when the call
returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hal.errors import RcdError
from hal.interfaces import Fault

log = logging.getLogger(__name__)


class MockRcd:
    """A ResidualCurrentMonitor with a test input; one per simulated connector."""

    def __init__(self, number: int, *, can_self_test: bool = True) -> None:
        self._number = number
        self._can_self_test = can_self_test
        self._callbacks: list[Callable[[], None]] = []
        self._tripped = False
        self._failed = False
        self.fail_test = False
        self.self_tests = 0  # how many were run (a test checks one ran before closing)

    @property
    def tripped(self) -> bool:
        return self._tripped

    @property
    def can_self_test(self) -> bool:
        return self._can_self_test

    def on_trip(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def trip(self) -> None:
        """A residual current: the fault output goes active, the listeners act at once."""
        for callback in list(self._callbacks):
            callback()
        if not self._tripped:
            log.error("mock: connector %s: residual-current monitor tripped", self._number)
        self._tripped = True

    def reset(self) -> None:
        """The fault current is gone and the module released its output."""
        if self._tripped:
            log.info("mock: connector %s: residual-current monitor released", self._number)
        self._tripped = False

    async def self_test(self) -> None:
        self.self_tests += 1
        if not self._can_self_test:
            raise RcdError(f"connector {self._number}: residual-current monitor has no test input")
        if self._tripped:
            raise RcdError(f"connector {self._number}: residual-current monitor is tripped")
        if self.fail_test:
            self._failed = True
            raise RcdError(
                f"connector {self._number}: residual-current monitor did not trip on its test"
            )
        self._failed = False

    def faults(self) -> frozenset[Fault]:
        faults = set()
        if self._tripped:
            faults.add(Fault.RCD_TRIPPED)
        if self._failed:
            faults.add(Fault.RCD_FAILURE)
        return frozenset(faults)
