"""The kernel's PWM sysfs tree (``/sys/class/pwm``) as a directory of real files.

The Pi's pilot driver (``hal.pi.sysfs_pwm``) writes ordinary files; this
emulation lays out the same files under any directory and plays the kernel's
part: it reads what was written, checks it as ``drivers/pwm/sysfs.c`` and
``pwm_apply_state()`` do, and either accepts it (the waveform changes) or
refuses it (the file gets the kernel's value back and the refusal is recorded
with the errno a real kernel would have returned).  A file cannot fail a
``write()`` on its own, so a refusal shows up in ``violations`` instead of as
an ``OSError`` in the writer: tests assert that list stays empty.

Layout (chip N with ``npwm`` channels, channel M once exported)::

    root/pwmchipN/npwm            read: the number of channels
    root/pwmchipN/export          write M: creates pwmM/ (after ``export_delay_s``, as udev
                                  gives the files their group a moment after the kernel
                                  creates them); an exported channel: EBUSY; M >= npwm: EINVAL
    root/pwmchipN/unexport        write M: removes pwmM/ (the kernel disables it first)
    root/pwmchipN/pwmM/period     nanoseconds; 0, or less than duty_cycle: EINVAL
    root/pwmchipN/pwmM/duty_cycle nanoseconds; more than period (0 at export): EINVAL
    root/pwmchipN/pwmM/enable     0 or 1; 1 while period is 0: EINVAL
    root/pwmchipN/pwmM/polarity   normal or inversed; changed while enabled: EBUSY

Public API (stable; ``./dev pibox`` and the MCP3008 emulation rely on it):

``SysfsPwmTree(root, *, chips={0: 2}, clock=time.monotonic, export_delay_s=0.0,
resolution_ns=10)``
    creates the tree.  ``resolution_ns`` is the PWM clock's tick: the waveform
    realises period and duty rounded down to it (the files keep what was written,
    as on the kernel).
``tree.sync()``
    plays the kernel once: processes every write since the last call.  Cheap;
    pass it as the driver's ``settle`` hook to have each write judged on its own,
    exactly in the order the driver made them.
``tree.start(interval_s=0.001)`` / ``tree.stop()`` (or ``with tree:``)
    a thread that calls ``sync()`` periodically, for a daemon that runs free.
``tree.channel(chip, channel) -> PwmChannelState``
    what the hardware does now: ``exported``, ``period_ns``, ``duty_ns``,
    ``enabled``, ``polarity``, ``phase_ns`` (settable: where in its period the
    output was at clock time 0) and ``level_at(t) -> bool`` (is the output pin high
    at clock time ``t``).
``tree.violations``
    list of ``PwmViolation(path, value, errno_name, reason)``, oldest first.
``tree.writes``
    list of ``(path relative to root, value)`` accepted, in order.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PwmChannelState", "PwmViolation", "SysfsPwmTree"]

log = logging.getLogger(__name__)

_ATTRS = ("period", "duty_cycle", "enable", "polarity")


@dataclass(frozen=True, slots=True)
class PwmViolation:
    """A write the kernel would have refused."""

    path: str
    value: str
    errno_name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} <- {self.value!r}: {self.errno_name} ({self.reason})"


@dataclass(slots=True)
class PwmChannelState:
    """One PWM channel as the hardware runs it."""

    exported: bool = False
    period_ns: int = 0
    duty_ns: int = 0
    enabled: bool = False
    polarity: str = "normal"
    phase_ns: int = 0
    resolution_ns: int = 10
    _ready_at: float = field(default=math.inf, repr=False)

    @property
    def realised_period_ns(self) -> int:
        return self.period_ns - self.period_ns % self.resolution_ns

    @property
    def realised_duty_ns(self) -> int:
        return min(self.duty_ns - self.duty_ns % self.resolution_ns, self.realised_period_ns)

    @property
    def duty(self) -> float:
        """The fraction of the period the output is high (normal polarity), as realised."""
        period = self.realised_period_ns
        return self.realised_duty_ns / period if period else 0.0

    def level_at(self, t: float) -> bool:
        """Is the output pin high at clock time ``t`` (seconds)?

        A disabled channel idles at its inactive level (low for normal
        polarity), as the Pi's PWM blocks do.
        """
        inverted = self.polarity == "inversed"
        period = self.realised_period_ns
        if not (self.exported and self.enabled) or period == 0:
            return inverted
        at = (round(t * 1e9) + self.phase_ns) % period
        return (at < self.realised_duty_ns) != inverted


class SysfsPwmTree:
    """A fake ``/sys/class/pwm`` in a directory; see the module docstring."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        chips: Mapping[int, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        export_delay_s: float = 0.0,
        resolution_ns: int = 10,
    ) -> None:
        self.root = Path(root)
        self._clock = clock
        self._export_delay_s = export_delay_s
        self._resolution_ns = resolution_ns
        self._lock = threading.RLock()
        self._chips: dict[int, int] = dict(chips if chips is not None else {0: 2})
        self._channels: dict[tuple[int, int], PwmChannelState] = {}
        self._files: dict[Path, str] = {}  # the content the kernel last showed, per file
        self.violations: list[PwmViolation] = []
        self.writes: list[tuple[str, str]] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.root.mkdir(parents=True, exist_ok=True)
        for chip, npwm in self._chips.items():
            d = self.root / f"pwmchip{chip}"
            d.mkdir(exist_ok=True)
            self._show(d / "npwm", f"{npwm}\n")
            self._show(d / "export", "")
            self._show(d / "unexport", "")
            for ch in range(npwm):
                self._channels[(chip, ch)] = PwmChannelState(resolution_ns=resolution_ns)

    # --- the API -----------------------------------------------------------------

    def channel(self, chip: int = 0, channel: int = 0) -> PwmChannelState:
        try:
            return self._channels[(chip, channel)]
        except KeyError:
            raise ValueError(f"pwmchip{chip} has no channel {channel}") from None

    def sync(self) -> None:
        """Judge every write made since the last call, as the kernel judges each write."""
        with self._lock:
            now = self._clock()
            for (chip, ch), state in self._channels.items():
                if state.exported and state._ready_at <= now:
                    self._create_channel_files(chip, ch, state)
            for chip in self._chips:
                d = self.root / f"pwmchip{chip}"
                for name in ("export", "unexport"):
                    value = self._take(d / name)
                    if value is not None and name == "export":
                        self._export(chip, value, now)
                    elif value is not None:
                        self._unexport(chip, value)
            for (chip, ch), state in self._channels.items():
                d = self.root / f"pwmchip{chip}" / f"pwm{ch}"
                if not state.exported or not d.is_dir():
                    continue
                for attr in _ATTRS:
                    path = d / attr
                    value = self._changed(path)
                    if value is not None:
                        self._store(path, attr, state, value)

    def start(self, interval_s: float = 0.001) -> SysfsPwmTree:
        """Run ``sync()`` every ``interval_s`` in a thread until ``stop()``."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, args=(interval_s,), name="sysfs-pwm", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None
        self.sync()

    def __enter__(self) -> SysfsPwmTree:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the kernel's rules -----------------------------------------------------------

    def _export(self, chip: int, value: str, now: float) -> None:
        path = self.root / f"pwmchip{chip}" / "export"
        ch = _parse_uint(value)
        if ch is None or ch >= self._chips[chip]:
            self._refuse(path, value, errno.EINVAL, f"pwmchip{chip} has no channel {value!r}")
            return
        state = self._channels[(chip, ch)]
        if state.exported:
            self._refuse(path, value, errno.EBUSY, f"pwm{ch} is already exported")
            return
        state.exported = True
        state.period_ns = state.duty_ns = 0
        state.enabled = False
        state.polarity = "normal"
        state._ready_at = now + self._export_delay_s
        self._accept(path, value)
        if self._export_delay_s <= 0:
            self._create_channel_files(chip, ch, state)

    def _unexport(self, chip: int, value: str) -> None:
        path = self.root / f"pwmchip{chip}" / "unexport"
        ch = _parse_uint(value)
        if ch is None or ch >= self._chips[chip] or not self._channels[(chip, ch)].exported:
            self._refuse(path, value, errno.EINVAL, f"pwm{value} is not exported")
            return
        state = self._channels[(chip, ch)]
        state.exported = state.enabled = False
        state._ready_at = math.inf
        d = self.root / f"pwmchip{chip}" / f"pwm{ch}"
        for attr in _ATTRS:
            (d / attr).unlink(missing_ok=True)
            self._files.pop(d / attr, None)
        if d.is_dir():
            d.rmdir()
        self._accept(path, value)

    def _store(self, path: Path, attr: str, state: PwmChannelState, value: str) -> None:
        if attr == "polarity":
            if value not in ("normal", "inversed"):
                self._refuse(path, value, errno.EINVAL, "polarity is normal or inversed")
            elif state.enabled and value != state.polarity:
                self._refuse(path, value, errno.EBUSY, "polarity changed while enabled")
            else:
                state.polarity = value
                self._accept(path, value)
            return
        number = _parse_uint(value)
        if number is None:
            self._refuse(path, value, errno.EINVAL, "not an unsigned integer")
        elif attr == "enable":
            if number not in (0, 1):
                self._refuse(path, value, errno.EINVAL, "enable takes 0 or 1")
            elif number == 1 and state.period_ns == 0:
                self._refuse(path, value, errno.EINVAL, "enabled before a period was set")
            else:
                state.enabled = number == 1
                self._accept(path, value)
        elif attr == "period":
            if number == 0 or number < state.duty_ns:
                self._refuse(
                    path, value, errno.EINVAL, f"period below duty_cycle ({state.duty_ns} ns)"
                )
            else:
                state.period_ns = number
                self._accept(path, value)
        elif number > state.period_ns or state.period_ns == 0:  # duty_cycle
            self._refuse(
                path, value, errno.EINVAL, f"duty_cycle above period ({state.period_ns} ns)"
            )
        else:
            state.duty_ns = number
            self._accept(path, value)

    # --- files ----------------------------------------------------------------------

    def _create_channel_files(self, chip: int, ch: int, state: PwmChannelState) -> None:
        state._ready_at = math.inf
        d = self.root / f"pwmchip{chip}" / f"pwm{ch}"
        d.mkdir(exist_ok=True)
        self._show(d / "period", f"{state.period_ns}\n")
        self._show(d / "duty_cycle", f"{state.duty_ns}\n")
        self._show(d / "enable", f"{int(state.enabled)}\n")
        self._show(d / "polarity", f"{state.polarity}\n")

    def _show(self, path: Path, content: str) -> None:
        path.write_text(content)
        self._files[path] = content

    def _changed(self, path: Path) -> str | None:
        """What was written to ``path`` since the kernel last showed it; None if nothing."""
        try:
            content = path.read_text()
        except FileNotFoundError:
            return None
        if content == self._files.get(path) or content == "":
            return None  # unchanged, or a writer between its truncate and its write
        return content.strip()

    def _take(self, path: Path) -> str | None:
        """A write to a write-only file (export/unexport); the file is emptied again."""
        value = self._changed(path)
        if value is not None:
            self._show(path, "")
        return value

    def _accept(self, path: Path, value: str) -> None:
        rel = str(path.relative_to(self.root))
        self.writes.append((rel, value))
        if path.name not in ("export", "unexport"):
            self._show(path, f"{value}\n")

    def _refuse(self, path: Path, value: str, code: int, reason: str) -> None:
        violation = PwmViolation(
            str(path.relative_to(self.root)), value, errno.errorcode[code], reason
        )
        self.violations.append(violation)
        log.warning("emulated kernel refuses %s", violation)
        if path.name in ("export", "unexport"):
            self._show(path, "")
        else:
            state_content = self._kernel_value(path)
            self._show(path, state_content)

    def _kernel_value(self, path: Path) -> str:
        chip = int(path.parent.parent.name.removeprefix("pwmchip"))
        state = self._channels[(chip, int(path.parent.name.removeprefix("pwm")))]
        return {
            "period": f"{state.period_ns}\n",
            "duty_cycle": f"{state.duty_ns}\n",
            "enable": f"{int(state.enabled)}\n",
            "polarity": f"{state.polarity}\n",
        }[path.name]

    def _run(self, interval_s: float) -> None:
        while not self._stopping.wait(interval_s):
            try:
                self.sync()
            except Exception:  # a test deleting the tree under us must not kill the thread
                log.exception("sysfs PWM emulation: sync failed")


def _parse_uint(value: str) -> int | None:
    """The kernel's kstrtoul/kstrtouint: decimal digits (a trailing newline is stripped)."""
    return int(value) if value.isdigit() else None
