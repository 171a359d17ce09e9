"""A residual-current monitor on GPIOs: its fault output in, its test input out.

The module (a 6 mA DC detection module such as an RDC-DD to IEC 62955, or an
RCM with a fault relay) does the measuring; the station sees a fault output
and, where the module has one, drives a test input.  A trip must cut the
energy before anything else happens, so the fault output is read by edge
(gpiozero's ``when_activated``, in its callback thread) and every ``on_trip``
callback runs right there, synchronously: hal.pi.station wires the
contactor's ``open_now()`` to it, which drops the coil without waiting for
the event loop.  No debounce on the way in (a glitch that opens the contactor
is the safe side); the way out is debounced: the trip stands until the fault
output has read inactive for several reads over ``release_window_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from gpiozero import DigitalInputDevice, OutputDevice

from hal.config import RcdConfig
from hal.errors import HardwareConfigError, RcdError
from hal.interfaces import Fault
from hal.pi.contactor import GpioContactor
from hal.pi.debounce import DebouncedInput

__all__ = ["GpioRcd", "interlock_rcd"]

log = logging.getLogger(__name__)


class GpioRcd:
    """A ResidualCurrentMonitor on ``cfg.fault_pin`` (and ``cfg.test_pin`` if wired)."""

    def __init__(
        self,
        cfg: RcdConfig,
        *,
        pin_factory: object | None = None,
        release_reads: int = 3,
        release_window_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if cfg.fault_pin is None:
            raise HardwareConfigError("a residual-current monitor needs its fault_pin")
        self._cfg = cfg
        self._clock = clock
        self._sleep = sleep
        self._callbacks: list[Callable[[], None]] = []
        self._testing = False
        self._failed = False
        self._test_out: OutputDevice | None = None
        self.last_trip_time_s: float | None = None  # measured by the last self-test
        self._input = DigitalInputDevice(
            cfg.fault_pin, pull_up=not cfg.fault_active_high, pin_factory=pin_factory
        )
        try:
            self._fault = DebouncedInput(
                self._input,
                reads=release_reads,
                window_s=release_window_s,
                clock=clock,
                sleep=sleep,
            )
            self._latched = self._fault.value  # a module already tripped at start
            if self._latched:
                log.error("residual-current monitor on GPIO%s: tripped at start", cfg.fault_pin)
            if cfg.test_pin is not None:
                self._test_out = OutputDevice(
                    cfg.test_pin,
                    active_high=cfg.test_active_high,
                    initial_value=False,
                    pin_factory=pin_factory,
                )
            self._input.when_activated = self._edge
        except BaseException:
            self.release()
            raise

    # -- ResidualCurrentMonitor -------------------------------------------------------
    @property
    def tripped(self) -> bool:
        return self._latched

    @property
    def can_self_test(self) -> bool:
        return self._test_out is not None

    def on_trip(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def faults(self) -> frozenset[Fault]:
        if self._latched and not self._testing and not self._fault.sample():
            self._latched = False
            log.info("residual-current monitor on GPIO%s: released", self._cfg.fault_pin)
        faults = set()
        if self._latched:
            faults.add(Fault.RCD_TRIPPED)
        if self._failed:
            faults.add(Fault.RCD_FAILURE)
        return frozenset(faults)

    async def self_test(self) -> None:
        out = self._test_out
        if out is None:
            raise RcdError(f"residual-current monitor on GPIO{self._cfg.fault_pin}: no test input")
        if self._latched or self._input.is_active:
            raise RcdError(
                f"residual-current monitor on GPIO{self._cfg.fault_pin} is tripped: cannot test"
            )
        self._testing = True
        try:
            started = self._clock()
            out.on()
            try:
                tripped = await self._wait_for(True, self._cfg.trip_time_s)
            finally:
                out.off()
            elapsed = self._clock() - started
            if not tripped:
                self._fail(f"did not trip within {self._cfg.trip_time_s * 1000:.0f} ms of its test")
            released = await self._wait_for(False, self._cfg.release_s)
            if not released:
                self._fail(f"fault output still active {self._cfg.release_s:g} s after the test")
        finally:
            self._testing = False
        self.last_trip_time_s = elapsed
        if self._failed:
            log.info("residual-current monitor on GPIO%s: self-test passed", self._cfg.fault_pin)
        self._failed = False

    # -- internals -----------------------------------------------------------------------
    def _edge(self) -> None:
        """The fault output went active (gpiozero's callback thread): act first, then log."""
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:  # one failing listener must not keep the others from acting
                log.exception("residual-current monitor: a trip listener failed")
        if self._testing:
            return  # the self-test's own trip: expected, judged by self_test()
        self._fault.force(True)
        if not self._latched:
            self._latched = True
            log.error(
                "residual-current monitor on GPIO%s tripped: contactor opened",
                self._cfg.fault_pin,
            )

    async def _wait_for(self, active: bool, within_s: float) -> bool:
        deadline = self._clock() + within_s
        while True:
            if bool(self._input.is_active) == active:
                if not active:
                    settled = await self._fault.settle()
                    if settled is False:
                        return True
                else:
                    return True
            if self._clock() >= deadline:
                return False
            await self._sleep(0.001)

    def _fail(self, why: str) -> None:
        if not self._failed:
            log.error(
                "residual-current monitor on GPIO%s: self-test failed: %s", self._cfg.fault_pin, why
            )
        self._failed = True
        raise RcdError(f"residual-current monitor on GPIO{self._cfg.fault_pin}: {why}")

    def release(self) -> None:
        """Stop driving the test input and free the pins."""
        if self._test_out is not None:
            self._test_out.off()
            self._test_out.close()
            self._test_out = None
        self._input.when_activated = None
        self._input.close()

    close = release


def interlock_rcd(rcd: GpioRcd, contactor: GpioContactor) -> None:
    """Wire a monitor to its connector's contactor, as a hardware interlock would be.

    A trip drops the coil inside the trip callback; while the monitor stands
    tripped the contactor refuses to close.
    """
    rcd.on_trip(contactor.open_now)
    contactor.add_interlock(lambda: "residual-current monitor tripped" if rcd.tripped else None)
