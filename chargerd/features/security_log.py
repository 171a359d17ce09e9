"""The security log on disk: one JSON line per security event, bounded by rotation.

``security.log`` grows to ``max_bytes``, then becomes ``security.log.1`` (the
older files shift up, the oldest beyond ``backups`` is deleted): the log never
takes more than ``(backups + 1) * max_bytes`` of the SD card.  Every write is
guarded: a full disk or a read-only file system loses the line (counted in
``write_failures``), never the caller.  GetLog(SecurityLog) uploads these
files; ``entries()`` reads them back for a time window.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path

from chargerd.clock import iso, parse_iso

log = logging.getLogger(__name__)


class SecurityLog:
    """A bounded, rotated, append-only JSON-lines file."""

    def __init__(self, path: Path, *, max_bytes: int = 256 * 1024, backups: int = 3) -> None:
        if max_bytes < 256:
            raise ValueError("security log max_bytes must be at least 256")
        if backups < 1:
            raise ValueError("security log backups must be at least 1")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.write_failures = 0
        self._failing = False

    def files(self) -> list[Path]:
        """The existing files, oldest first."""
        names = [self.path.with_name(f"{self.path.name}.{i}") for i in range(self.backups, 0, -1)]
        return [p for p in [*names, self.path] if p.exists()]

    def size(self) -> int:
        total = 0
        for p in self.files():
            try:
                total += p.stat().st_size
            except OSError:
                pass
        return total

    def append(self, timestamp: datetime, kind: str, tech_info: str | None = None) -> bool:
        """Write one event; False (and a log line, once per failure streak) if the disk refused."""
        line = (
            json.dumps(
                {"timestamp": iso(timestamp), "type": kind, "techInfo": tech_info},
                separators=(",", ":"),
                ensure_ascii=False,
            )
            + "\n"
        ).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                current = self.path.stat().st_size
            except FileNotFoundError:
                current = 0
            if current and current + len(line) > self.max_bytes:
                self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line[: self.max_bytes])
            finally:
                os.close(fd)
        except OSError as exc:
            self.write_failures += 1
            if not self._failing:
                log.error("the security log %s cannot be written: %s", self.path, exc)
            self._failing = True
            return False
        if self._failing:
            log.warning("the security log %s is writable again", self.path)
        self._failing = False
        return True

    def _rotate(self) -> None:
        oldest = self.path.with_name(f"{self.path.name}.{self.backups}")
        if oldest.exists():
            oldest.unlink()
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))

    def entries(
        self, oldest: datetime | None = None, latest: datetime | None = None
    ) -> list[dict]:
        """The events in [oldest, latest], oldest first; unreadable lines are skipped."""
        out: list[dict] = []
        for p in self.files():
            try:
                text = p.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for raw in text.splitlines():
                try:
                    entry = json.loads(raw)
                    when = parse_iso(entry["timestamp"])
                except (ValueError, KeyError, TypeError):
                    continue
                if oldest is not None and when < oldest:
                    continue
                if latest is not None and when > latest:
                    continue
                out.append(entry)
        return out

    def clear(self) -> None:
        """Delete every file (the caller emits SecurityLogWasCleared afterwards)."""
        for p in self.files():
            try:
                p.unlink()
            except OSError as exc:
                log.error("cannot delete %s: %s", p, exc)
