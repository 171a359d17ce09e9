"""A state directory on a tiny filesystem that the chaos runner can fill up.

A full disk is the one fault that cannot be injected through the daemon's
control socket: it has to be a real filesystem returning ENOSPC, so that
SQLite itself reports SQLITE_FULL.  As root we mount a small tmpfs; without
root (or without mount) :func:`mount_tiny` raises and the runner skips the
disk-full episodes and says so in the summary.

Filling must also defeat SQLite's write-ahead log: WAL space already
allocated is reused without asking the filesystem for more, so a "full"
disk would still accept a transaction or two.  :func:`fill` therefore
truncates the WAL (a checkpoint from our own connection, which WAL mode
allows beside the daemon's) before it writes the filler.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

FILLER = ".chaos-filler"


class TinyDiskUnavailable(OSError):
    """No small filesystem can be mounted here (not root, no tmpfs, ...)."""


def mount_tiny(path: Path, size_mb: int = 16) -> None:
    """Mount a ``size_mb`` tmpfs on ``path`` (created if missing)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        raise TinyDiskUnavailable(errno.EPERM, "mounting a tmpfs needs root")
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    if out.returncode != 0:
        raise TinyDiskUnavailable(errno.EPERM, f"mount tmpfs failed: {out.stderr.strip()}")


def unmount(path: Path) -> None:
    """Unmount; lazily if something still holds a file open there."""
    if not os.path.ismount(path):
        return
    out = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, text=True, timeout=20)


def truncate_wal(db: Path, timeout: float = 5.0) -> bool:
    """Checkpoint the daemon's WAL into the database and cut it to zero bytes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = sqlite3.connect(db, timeout=1.0)
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.debug("checkpoint of %s failed: %s", db, exc)
            busy = 1
        wal = db.with_name(db.name + "-wal")
        if not busy and (not wal.exists() or wal.stat().st_size == 0):
            return True
        time.sleep(0.05)
    return False


def fill(directory: Path) -> int:
    """Write a filler file until the filesystem refuses; returns the bytes written."""
    path = directory / FILLER
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 512, 1):
            block = b"\0" * chunk
            while True:
                try:
                    n = os.write(fd, block)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EFBIG):
                        break
                    raise
                if n < chunk:
                    written += n
                    break
                written += n
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
    return written


def free(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / FILLER).unlink()


def integrity(db: Path) -> str:
    """SQLite's integrity_check of the daemon's database ("ok" when sound)."""
    if not db.exists():
        return "ok"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows[:5])
