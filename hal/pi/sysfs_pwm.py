"""The pilot's PWM from the kernel's hardware PWM, through ``/sys/class/pwm``.

A hardware PWM block keeps the 1 kHz square wave exact whatever Python, the
scheduler or a garbage collection do: the kernel's ``pwm-bcm2835`` (Pi 3/4) or
the RP1's PWM (Pi 5) drive the pin, we only write period and duty in
nanoseconds.  The software PWM of lgpio (one thread, normal scheduling) and
gpiozero's whole-percent duty are what this replaces (see ``LgpioPwmOutput``
for the fallback).

The kernel's rules this driver follows (``drivers/pwm/sysfs.c``):

- ``export`` creates ``pwmN/``; its files get their group (``gpio``, by udev)
  a moment later, so the driver waits until ``period`` is writable.  Writing
  ``export`` for a channel already exported fails with EBUSY: after a crash
  the channel is still ours and is taken over as it is.
- ``duty_cycle`` may never exceed ``period`` (EINVAL): when both change, the
  one that keeps ``duty <= period`` true is written first.
- ``polarity`` changes only while disabled (EBUSY otherwise).
- The channel keeps running when the process dies: the last duty stays on the
  line.  ``close()`` therefore leaves a steady high level (100 %: nothing
  offered), not whatever was offered last.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from hal.errors import PilotError

__all__ = ["PERIOD_NS", "SysfsPwmOutput", "duty_ns_for"]

log = logging.getLogger(__name__)

PERIOD_NS = 1_000_000  # 1 kHz, IEC 61851-1
OVERLAY_HINT = (
    "add 'dtoverlay=pwm,pin=18,func=2' to /boot/firmware/config.txt and reboot "
    "(see the README's Control pilot section)"
)


def duty_ns_for(duty: float, period_ns: int = PERIOD_NS) -> int:
    """The duty_cycle (ns) for a duty fraction, rounded down: never more current than asked.

    The tiny allowance absorbs binary fractions (0.3 * 1e6 = 299999.99999999994).
    """
    if math.isnan(duty) or not 0.0 <= duty <= 1.0:
        raise ValueError(f"duty {duty} is not within 0..1")
    return min(period_ns, math.floor(duty * period_ns + 1e-6))


class SysfsPwmOutput:
    """One kernel PWM channel at 1 kHz; ``duty`` is the fraction of the period at high level.

    ``settle`` is called after every write and while waiting for the kernel:
    an emulation of the kernel (hal.emulated.sysfs_pwm) judges each write there,
    in order, as the real kernel does inside ``write()``.  ``sleep`` and
    ``clock`` bound the wait for an exported channel.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "/sys/class/pwm",
        chip: int = 0,
        channel: int = 0,
        *,
        initial_duty: float = 1.0,
        settle: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        export_timeout_s: float = 2.0,
    ) -> None:
        self._chip_dir = Path(root) / f"pwmchip{chip}"
        self._dir = self._chip_dir / f"pwm{channel}"
        self._channel = channel
        self._settle = settle or (lambda: None)
        self._clock = clock
        self._sleep = sleep
        self._duty_ns: int | None = None
        self._open = False
        self.name = f"{self._chip_dir}/pwm{channel}"
        self._export(export_timeout_s)
        self._start(duty_ns_for(initial_duty))
        self._open = True
        log.info("pilot PWM on %s: %d ns period (1 kHz), hardware PWM", self.name, PERIOD_NS)

    # --- what the pilot uses -----------------------------------------------------------

    @property
    def duty(self) -> float:
        """The duty the kernel was last given (fraction of the period)."""
        return (self._duty_ns or 0) / PERIOD_NS

    @duty.setter
    def duty(self, value: float) -> None:
        if not self._open:
            raise PilotError(f"pilot PWM {self.name} is closed")
        duty_ns = duty_ns_for(value)
        if duty_ns != self._duty_ns:
            self._write("duty_cycle", duty_ns)
            self._duty_ns = duty_ns

    @property
    def duty_ns(self) -> int:
        return self._duty_ns or 0

    def close(self) -> None:
        """Leave the line steady high (nothing offered) and let go of the channel.

        The channel stays exported and enabled: unexporting would let the pin
        fall low, which the EV reads as -12 V (state F) during a restart.
        """
        if not self._open:
            return
        self._open = False
        try:
            self._write("duty_cycle", PERIOD_NS)
            self._duty_ns = PERIOD_NS
        except PilotError:
            log.exception("pilot PWM %s: could not leave the line steady high", self.name)

    # --- the kernel's order ------------------------------------------------------------

    def _export(self, timeout_s: float) -> None:
        if not self._chip_dir.is_dir():
            root = self._chip_dir.parent
            chips = sorted(p.name for p in root.glob("pwmchip*")) if root.is_dir() else []
            found = ", ".join(_describe(root / c) for c in chips) or "none"
            raise PilotError(f"no PWM chip {self._chip_dir} (found: {found}); {OVERLAY_HINT}")
        npwm = _read_int(self._chip_dir / "npwm")
        if npwm is not None and self._channel >= npwm:
            raise PilotError(f"{self._chip_dir} has {npwm} channel(s), no channel {self._channel}")
        if not self._dir.is_dir():
            try:
                (self._chip_dir / "export").write_text(f"{self._channel}\n")
            except OSError as exc:
                if exc.errno != errno.EBUSY:  # EBUSY: exported meanwhile; taken over below
                    raise PilotError(f"cannot export {self.name}: {exc}{_hint(exc)}") from exc
            self._settle()
        else:
            log.warning("pilot PWM %s was left exported (a crash?): taking it over", self.name)
        deadline = self._clock() + timeout_s
        period = self._dir / "period"
        while not (period.exists() and os.access(period, os.W_OK)):
            if self._clock() >= deadline:
                raise PilotError(
                    f"{self.name} did not become writable within {timeout_s:g} s "
                    "(is the chargerd user in the gpio group, and udev running?)"
                )
            self._sleep(0.01)
            self._settle()

    def _start(self, duty_ns: int) -> None:
        period = _read_int(self._dir / "period") or 0
        duty = _read_int(self._dir / "duty_cycle") or 0
        enabled = _read_int(self._dir / "enable") == 1
        polarity = self._read("polarity")
        if polarity != "normal":
            if enabled:
                self._write("enable", 0)  # polarity changes only while disabled
                enabled = False
            self._write("polarity", "normal")
        if PERIOD_NS >= duty:  # duty <= period must hold after every single write
            if period != PERIOD_NS:
                self._write("period", PERIOD_NS)
            self._write("duty_cycle", duty_ns)
        else:
            self._write("duty_cycle", duty_ns)
            self._write("period", PERIOD_NS)
        self._duty_ns = duty_ns
        if not enabled:
            self._write("enable", 1)

    def _write(self, attr: str, value: int | str) -> None:
        try:
            (self._dir / attr).write_text(f"{value}\n")
        except OSError as exc:
            raise PilotError(
                f"{self.name}/{attr}: writing {value} failed: {exc}{_hint(exc)}"
            ) from exc
        finally:
            self._settle()

    def _read(self, attr: str) -> str:
        try:
            return (self._dir / attr).read_text().strip()
        except OSError as exc:
            raise PilotError(f"{self.name}/{attr}: {exc}") from exc


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _describe(chip: Path) -> str:
    npwm = _read_int(chip / "npwm")
    return f"{chip.name} ({npwm} channels)" if npwm is not None else chip.name


def _hint(exc: OSError) -> str:
    """What to check for the errors a misconfigured Pi gives."""
    if exc.errno == errno.EACCES:
        return " (is the chargerd user in the gpio group?)"
    if exc.errno == errno.EROFS:
        return " (the systemd unit needs ReadWritePaths= on the PWM chip's directory)"
    return ""
