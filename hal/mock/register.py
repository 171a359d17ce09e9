"""The mock meter's energy register, kept on disk like a real meter's.

A real meter keeps counting while the daemon restarts, so a daemon that reads
a smaller register after a restart has a bug worth catching on the bench.  The
mock keeps that promise by writing the register to ``state_dir`` at most once
per second of (injected) monotonic time and on close.  A power cut may
therefore lose up to about one second of mock energy; the register still never
goes backwards, because every file we write holds a value at least as large as
the one before and we restore the largest one we find.

Writes are atomic (temp file, fsync, ``os.replace``): after a crash the file
holds either the old or the new value, never half of one.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

from hal.errors import HardwareConfigError

log = logging.getLogger(__name__)

PERSIST_INTERVAL_S = 1.0


class EnergyRegister:
    """An import register (Wh) that only grows and survives a restart."""

    def __init__(
        self,
        path: Path,
        *,
        monotonic: Callable[[], float],
        interval_s: float = PERSIST_INTERVAL_S,
    ) -> None:
        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._interval_s = interval_s
        self._wh = self._restore()
        self._saved_wh = self._wh
        self._saved_at = monotonic()
        self._closed = False
        self._write_failing = False

    @property
    def wh(self) -> float:
        return self._wh

    def add(self, wh: float, now: float) -> None:
        """Count ``wh`` more; persist when the last write is old enough."""
        if wh > 0:
            self._wh += wh
        if self._wh != self._saved_wh and now - self._saved_at >= self._interval_s:
            self._save_quietly(now)

    def set(self, wh: float, now: float) -> None:
        """Jump the register forward (a bench control); it never goes backwards."""
        if not isinstance(wh, int | float) or isinstance(wh, bool) or not math.isfinite(wh):
            raise ValueError(f"energy must be a finite number of Wh, got {wh!r}")
        if wh < self._wh:
            raise ValueError(
                f"an energy register never goes backwards: {wh} Wh < current {self._wh:.3f} Wh"
            )
        self._wh = float(wh)
        self._save_quietly(now)

    def close(self, now: float) -> None:
        """Write the final value; later changes are no longer persisted.

        A closed register must not write again, so that a station reopened on
        the same state_dir (a daemon restart in one process) owns the file.
        """
        if self._closed:
            return
        if self._wh != self._saved_wh:
            self._write(now)
        self._closed = True

    def _save_quietly(self, now: float) -> None:
        # A failing state file must not stop the simulated meter: log once, keep counting.
        try:
            self._write(now)
        except OSError as exc:
            if not self._write_failing:
                log.error("mock meter register %s cannot be written: %s", self.path, exc)
                self._write_failing = True
            return
        if self._write_failing:
            log.info("mock meter register %s is written again", self.path)
            self._write_failing = False

    def _write(self, now: float) -> None:
        if self._closed:
            return
        data = json.dumps({"energy_wh": self._wh}).encode()
        with open(self._tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        self._saved_wh = self._wh
        self._saved_at = now

    def _restore(self) -> float:
        main = self._read(self.path, strict=True)
        # A temp file left by a crash between write and replace holds a value we
        # counted; it is only trusted when it parses completely.
        tmp = self._read(self._tmp, strict=False)
        values = [v for v in (main, tmp) if v is not None]
        return max(values, default=0.0)

    @staticmethod
    def _read(path: Path, *, strict: bool) -> float | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            value = json.loads(raw)["energy_wh"]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(value)
            if not math.isfinite(value) or value < 0:
                raise ValueError(value)
        except (ValueError, TypeError, KeyError) as exc:
            if not strict:
                return None
            raise HardwareConfigError(
                f"mock meter register {path} is unreadable ({exc!r}); "
                "delete it to restart the mock meter at 0 Wh"
            ) from exc
        return float(value)
