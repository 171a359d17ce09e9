"""The main contactor on a GPIO output, with its auxiliary contact read back if wired.

The output starts (and is released) inactive, so the contactor opens whenever
this process lets go of the line.  Without a feedback contact the command is
all we know, and no fault can be seen.  The feedback is debounced
(hal.pi.debounce): an auxiliary contact bounces when it moves, and one bad
read must not declare a contactor welded.

``open_now()`` is the synchronous path of an interlock (the residual-current
monitor's trip, from gpiozero's callback thread): the coil is dropped before
anything else happens.  ``add_interlock()`` makes ``close()`` refuse while a
condition holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gpiozero import DigitalInputDevice, OutputDevice

from hal.config import ContactorConfig, unsafe_contactor_pull
from hal.errors import ContactorError, HardwareConfigError
from hal.interfaces import Fault
from hal.pi.debounce import DebouncedInput

__all__ = ["GpioContactor"]

log = logging.getLogger(__name__)


class GpioContactor:
    """A contactor coil driver on ``cfg.pin``; feedback on ``cfg.feedback_pin``.

    Faults follow the feedback: commanded open but reading closed is a welded
    contactor, standing until the feedback reads open again.  A close that the
    feedback does not confirm opens the output again (fail safe) and stands as
    failed-to-close until a later close is confirmed; a contactor that drops
    out while commanded closed shows the same fault, live.
    """

    def __init__(
        self,
        cfg: ContactorConfig,
        *,
        pin_factory: object | None = None,
        debounce_reads: int = 3,
        debounce_s: float = 0.01,
    ) -> None:
        unsafe = unsafe_contactor_pull(cfg)
        if unsafe is not None:  # the configuration loader refuses it too; this is the last word
            raise HardwareConfigError(f"contactor on GPIO{cfg.pin}: {unsafe}")
        self._cfg = cfg
        self._interlocks: list[Callable[[], str | None]] = []
        self._commanded = False
        self._moving = False  # inside the settle time: the feedback is not yet to be trusted
        self._welded = False
        self._failed_to_close = False
        self._lock = asyncio.Lock()
        self._feedback: DebouncedInput | None = None
        self._out: OutputDevice | None = OutputDevice(
            cfg.pin, active_high=cfg.active_high, initial_value=False, pin_factory=pin_factory
        )
        try:
            if cfg.feedback_pin is not None:
                # The internal pull holds the input at "open" when the aux contact is open.
                self._feedback = DebouncedInput(
                    DigitalInputDevice(
                        cfg.feedback_pin,
                        pull_up=not cfg.feedback_active_high,
                        pin_factory=pin_factory,
                    ),
                    reads=debounce_reads,
                    window_s=debounce_s,
                )
        except BaseException:
            self.release()
            raise

    @property
    def closed(self) -> bool:
        return self._commanded

    @property
    def feedback_closed(self) -> bool | None:
        """What the auxiliary contact reads now (debounced); None when none is wired."""
        return None if self._feedback is None else self._feedback.sample()

    def add_interlock(self, blocked: Callable[[], str | None]) -> None:
        """``close()`` refuses while ``blocked()`` returns a reason (e.g. an RCD tripped)."""
        self._interlocks.append(blocked)

    def open_now(self) -> None:
        """Drop the coil at once, synchronously, from any thread (an interlock's trip)."""
        out = self._out
        if out is not None:
            out.off()
        self._commanded = False

    async def close(self) -> None:
        async with self._lock:
            out = self._output()
            for blocked in self._interlocks:
                reason = blocked()
                if reason:
                    raise ContactorError(
                        f"contactor on GPIO{self._cfg.pin} may not close: {reason}",
                        Fault.CONTACTOR_FAILED_TO_CLOSE,
                    )
            self._moving = True
            try:
                out.on()
                self._commanded = True
                await asyncio.sleep(self._cfg.settle_s)
            except BaseException:
                out.off()  # cancelled mid-way: never leave it closed unasked
                self._commanded = False
                raise
            finally:
                self._moving = False
            if not self._commanded:  # an interlock opened it meanwhile
                raise ContactorError(
                    f"contactor on GPIO{self._cfg.pin} was opened by an interlock while closing",
                    Fault.CONTACTOR_FAILED_TO_CLOSE,
                )
            if self._feedback is not None and await self._feedback.settle() is not True:
                out.off()
                self._commanded = False
                self._set(Fault.CONTACTOR_FAILED_TO_CLOSE, True)
                raise ContactorError(
                    f"contactor on GPIO{self._cfg.pin} did not close "
                    f"(feedback GPIO{self._cfg.feedback_pin} does not read closed); "
                    "output opened again",
                    Fault.CONTACTOR_FAILED_TO_CLOSE,
                )
            self._set(Fault.CONTACTOR_FAILED_TO_CLOSE, False)
            self._set(Fault.CONTACTOR_WELDED, False)

    async def open(self) -> None:
        async with self._lock:
            if self._out is None:
                return  # released: the line is let go, so the contactor is open
            out = self._out
            self._moving = True
            try:
                out.off()
                self._commanded = False
                await asyncio.sleep(self._cfg.settle_s)
            finally:
                self._moving = False
            # A contact that keeps chattering after opening counts as welded (safe side).
            if self._feedback is not None and await self._feedback.settle() is not False:
                self._set(Fault.CONTACTOR_WELDED, True)
                raise ContactorError(
                    f"contactor on GPIO{self._cfg.pin} is welded "
                    f"(feedback GPIO{self._cfg.feedback_pin} does not read open after opening)",
                    Fault.CONTACTOR_WELDED,
                )
            self._set(Fault.CONTACTOR_WELDED, False)

    def faults(self) -> frozenset[Fault]:
        reading = self.feedback_closed
        if reading is not None and not self._moving:
            if self._commanded:
                self._set(Fault.CONTACTOR_FAILED_TO_CLOSE, not reading)
                if reading:
                    self._set(Fault.CONTACTOR_WELDED, False)
            else:
                self._set(Fault.CONTACTOR_WELDED, reading)
        faults: set[Fault] = set()
        if self._welded:
            faults.add(Fault.CONTACTOR_WELDED)
        if self._failed_to_close:
            faults.add(Fault.CONTACTOR_FAILED_TO_CLOSE)
        return frozenset(faults)

    def release(self) -> None:
        """Open the contactor and free its pins (``close()`` is the contactor's own verb)."""
        if self._out is not None:
            self._out.off()
            self._out.close()
            self._out = None
        self._commanded = False
        if self._feedback is not None:
            self._feedback.close()
            self._feedback = None

    def _output(self) -> OutputDevice:
        if self._out is None:
            raise ContactorError(
                f"contactor on GPIO{self._cfg.pin} is released: it cannot close",
                Fault.CONTACTOR_FAILED_TO_CLOSE,
            )
        return self._out

    def _set(self, fault: Fault, present: bool) -> None:
        attr = "_welded" if fault is Fault.CONTACTOR_WELDED else "_failed_to_close"
        if present and not getattr(self, attr):
            log.error("contactor on GPIO%s: %s", self._cfg.pin, fault)
        elif getattr(self, attr) and not present:
            log.info("contactor on GPIO%s: %s cleared", self._cfg.pin, fault)
        setattr(self, attr, present)
