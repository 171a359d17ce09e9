"""Enclosure tamper switches: the Pi's (a GPIO input) and the simulated station's.

The switch only reports; what an opening means (a security event, not a
stopped session) is the daemon's business (chargerd/features/tamper.py).
Callbacks run in whatever thread saw the change, synchronously.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hal.config import TamperConfig
from hal.errors import HardwareConfigError

__all__ = ["GpioTamperSwitch", "MockTamperSwitch"]

log = logging.getLogger(__name__)


class _Listeners:
    def __init__(self) -> None:
        self._callbacks: list[Callable[[bool], None]] = []

    def on_change(self, callback: Callable[[bool], None]) -> None:
        self._callbacks.append(callback)

    def _fire(self, opened: bool) -> None:
        for cb in list(self._callbacks):
            try:
                cb(opened)
            except Exception:  # a listener's bug must not kill the input's thread
                log.exception("a tamper listener failed")


class MockTamperSwitch(_Listeners):
    """The simulated enclosure: ``set(True)`` opens it (``sim fault tamper on``)."""

    def __init__(self) -> None:
        super().__init__()
        self._opened = False

    @property
    def opened(self) -> bool:
        return self._opened

    def set(self, opened: bool) -> None:
        if opened == self._opened:
            return
        self._opened = opened
        log.warning("mock: enclosure %s", "opened" if opened else "closed")
        self._fire(opened)


class GpioTamperSwitch(_Listeners):
    """A switch on ``cfg.pin``, read by edge (gpiozero's callback thread).

    ``active_high``: the line reads high while the enclosure is open, with the Pi's
    internal pull-down; false: low while open, internal pull-up (a switch to ground).
    """

    def __init__(self, cfg: TamperConfig, *, pin_factory: object | None = None) -> None:
        if cfg.pin is None:
            raise HardwareConfigError("a tamper switch needs its pin")
        from gpiozero import DigitalInputDevice

        super().__init__()
        self._input = DigitalInputDevice(
            cfg.pin, pull_up=not cfg.active_high, pin_factory=pin_factory
        )
        self._input.when_activated = lambda: self._fire(True)
        self._input.when_deactivated = lambda: self._fire(False)

    @property
    def opened(self) -> bool:
        return bool(self._input.value)

    def release(self) -> None:
        self._input.close()
