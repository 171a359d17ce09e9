"""The cable lock of a socket outlet: a motor on an H-bridge, or a solenoid, plus a sense switch.

A motor lock is moved by a pulse on one of two inputs of its H-bridge; both at
once would short the bridge, so one is always off before the other turns on.
A solenoid is held energised for as long as the plug is to stay locked, which
also means it lets go when this process dies.

The sense input is debounced (hal.pi.debounce) and watched while locked: a
lock that lets go under a plug (a broken pin, a plug forced out) is
LOCK_FAILURE at the supervisor's next pass, which cuts the energy.
"""

from __future__ import annotations

import asyncio
import logging

from gpiozero import DigitalInputDevice, OutputDevice

from hal.config import LockConfig
from hal.errors import HardwareConfigError, LockError
from hal.interfaces import Fault
from hal.pi.debounce import DebouncedInput

__all__ = ["GpioCableLock"]

log = logging.getLogger(__name__)


class GpioCableLock:
    """A cable lock on ``cfg.pins``; its position read on ``cfg.sense_pin`` if wired.

    The sense input is read ``pulse_s`` after each command.  A mismatch raises
    LockError and leaves LOCK_FAILURE standing until a later lock or unlock is
    confirmed.  While locked, every ``faults()`` reads the sense again: a lock
    lost shows as LOCK_FAILURE for as long as it reads unlocked.  Without a
    sense input the command is trusted.
    """

    def __init__(
        self,
        cfg: LockConfig,
        *,
        pin_factory: object | None = None,
        debounce_reads: int = 3,
        debounce_s: float = 0.02,
    ) -> None:
        wanted = {"motor": 2, "solenoid": 1}.get(cfg.kind)
        if wanted is None:
            raise HardwareConfigError(f"lock kind {cfg.kind!r} has no driver (motor or solenoid)")
        if len(cfg.pins) != wanted or len(set(cfg.pins)) != wanted:
            raise HardwareConfigError(
                f"a {cfg.kind} lock needs {wanted} distinct pin(s), got {cfg.pins!r}"
            )
        self._cfg = cfg
        self._commanded = False
        self._failed = False
        self._lost = False
        self._moving = False
        self._lock = asyncio.Lock()
        self._outs: list[OutputDevice] = []
        self._sense: DebouncedInput | None = None
        try:
            for pin in cfg.pins:
                self._outs.append(OutputDevice(pin, initial_value=False, pin_factory=pin_factory))
            if cfg.sense_pin is not None:
                self._sense = DebouncedInput(
                    DigitalInputDevice(
                        cfg.sense_pin, pull_up=not cfg.sense_active_high, pin_factory=pin_factory
                    ),
                    reads=debounce_reads,
                    window_s=debounce_s,
                )
        except BaseException:
            self.release()
            raise

    @property
    def locked(self) -> bool:
        """The sensed position if a sense input is wired, else the last command."""
        if self._sense is not None:
            return self._sense.sample()
        return self._commanded

    async def lock(self) -> None:
        await self._move(locked=True)

    async def unlock(self) -> None:
        await self._move(locked=False)

    def faults(self) -> frozenset[Fault]:
        if self._sense is not None and self._commanded and not self._moving:
            lost = not self._sense.sample()
            if lost and not self._lost:
                log.error("%s: lock lost (the sense reads unlocked while locked)", self._name())
            elif self._lost and not lost:
                log.info("%s: sense reads locked again", self._name())
            self._lost = lost
        elif not self._commanded:
            self._lost = False
        failed = self._failed or self._lost
        return frozenset({Fault.LOCK_FAILURE}) if failed else frozenset()

    def release(self) -> None:
        """Stop driving the lock and free its pins (a solenoid lets go)."""
        for out in self._outs:
            out.off()
            out.close()
        self._outs = []
        if self._sense is not None:
            self._sense.close()
            self._sense = None

    close = release  # gpiozero's name for it

    async def _move(self, *, locked: bool) -> None:
        verb = "lock" if locked else "unlock"
        async with self._lock:
            if not self._outs:
                raise LockError(f"{self._name()} is released: cannot {verb}")
            self._moving = True
            try:
                await self._drive(locked)
            finally:
                self._moving = False
            self._commanded = locked
            sensed = None if self._sense is None else await self._sense.settle()
            if self._sense is not None and sensed is not locked:
                if not self._failed:
                    log.error("%s: did not %s (sense reads the other position)", self._name(), verb)
                self._failed = True
                raise LockError(f"{self._name()} did not {verb}: the sense input disagrees")
            if self._failed:
                log.info("%s: %s confirmed, lock failure cleared", self._name(), verb)
            self._failed = False
            self._lost = False

    async def _drive(self, locked: bool) -> None:
        if self._cfg.kind == "motor":
            towards, away = (self._outs[0], self._outs[1])
            if not locked:
                towards, away = away, towards
            away.off()  # never both sides of the H-bridge at once
            towards.on()
            try:
                await asyncio.sleep(self._cfg.pulse_s)
            finally:
                towards.off()
        else:
            self._outs[0].value = locked
            await asyncio.sleep(self._cfg.pulse_s)

    def _name(self) -> str:
        pins = "/".join(f"GPIO{p}" for p in self._cfg.pins)
        return f"{self._cfg.kind} lock on {pins}"
