"""A residual-current monitor module (e.g. a 6 mA DC RDC-DD) on gpiozero MockFactory pins.

What the station sees of the module: a fault output it reads and a test input it
drives.  ``attach(factory, fault_pin=..., test_pin=...)`` wires one: the test
input, when driven active, makes the fault output active (after
``trip_after_s``, from a timer thread as a real module's own time would pass,
or at once when 0); releasing it releases the output unless a real fault
current flows.  ``trip()`` / ``reset()`` are a fault current appearing and
going; ``dead = True`` is a module whose output no longer moves (its self-test
fails).  hal.pi.rcd runs on it in tests and in ``./dev pibox``.
"""

from __future__ import annotations

import threading
from typing import Any

from gpiozero.pins.mock import MockPin

__all__ = ["RcdModule", "attach"]


class RcdModule:
    def __init__(
        self,
        fault: Any,
        *,
        fault_active_high: bool = True,
        trip_after_s: float = 0.0,
    ) -> None:
        self.fault = fault  # the MockPin the module drives
        self.fault_active_high = fault_active_high
        self.trip_after_s = trip_after_s
        self.dead = False
        self._fault_current = False
        self._testing = False
        self._lock = threading.Lock()
        self._drive(False)

    def trip(self) -> None:
        """A residual current above the threshold flows: the fault output goes active."""
        with self._lock:
            self._fault_current = True
            self._update()

    def reset(self) -> None:
        """The fault current is gone: the output releases (unless a test holds it)."""
        with self._lock:
            self._fault_current = False
            self._update()

    @property
    def tripped(self) -> bool:
        return bool(self.fault.state) == self.fault_active_high

    def test_input(self, active: bool) -> None:
        """The station drives the module's test input."""
        with self._lock:
            self._testing = active
        if active and self.trip_after_s > 0:
            threading.Timer(self.trip_after_s, self._after_delay).start()
        else:
            self._after_delay()

    def _after_delay(self) -> None:
        with self._lock:
            self._update()

    def _update(self) -> None:
        if self.dead:
            return
        self._drive(self._fault_current or self._testing)

    def _drive(self, active: bool) -> None:
        if active == self.fault_active_high:
            self.fault.drive_high()
        else:
            self.fault.drive_low()


class TestInputPin:
    """The module's test input as a pin: it tells the module when the station drives it.

    A mixin, so that any mock pin class (a plain MockPin here, pibox's world pins) can
    carry the module's pins.
    """

    def __init__(self, factory: Any, info: Any, *, module: RcdModule, active_high: bool) -> None:
        super().__init__(factory, info)
        self.module, self.active_high = module, active_high

    def _change_state(self, value: Any) -> bool:
        changed = super()._change_state(value)
        if changed:
            self.module.test_input(bool(value) == self.active_high)
        return changed


class FaultOutputPin:
    """The module's push-pull fault output (a mixin): the Pi's weak pull does not move it."""

    def _set_pull(self, value: str) -> None:
        self._pull = value


class _TestInput(TestInputPin, MockPin):
    pass


class _FaultOutput(FaultOutputPin, MockPin):
    pass


def attach(
    factory: Any,
    *,
    fault_pin: int,
    test_pin: int | None = None,
    fault_active_high: bool = True,
    test_active_high: bool = True,
    trip_after_s: float = 0.0,
    fault_class: type = _FaultOutput,
    test_class: type = _TestInput,
) -> RcdModule:
    """Wire a module to ``factory`` before the station opens its pins; the module.

    ``fault_class`` / ``test_class``: the pin classes, for a factory whose pins must be of
    its own kind (pibox's world pins).
    """
    module = RcdModule(
        factory.pin(fault_pin, pin_class=fault_class),
        fault_active_high=fault_active_high,
        trip_after_s=trip_after_s,
    )
    if test_pin is not None:
        factory.pin(test_pin, pin_class=test_class, module=module, active_high=test_active_high)
    return module
