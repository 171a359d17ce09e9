"""What GetDiagnostics and GetLog upload: tar.gz bundles built from plain data.

A bundle is assembled from what the station knows, filtered to the requested
window, and never carries a secret: the configuration is the CSMS's own view
(GetConfiguration, where AuthorizationKey is write-only) minus any key whose
name says it is a secret, and no file of the certificate directory is ever
read here (the private key stays where it is).
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from chargerd.clock import parse_iso

log = logging.getLogger(__name__)

#: Configuration keys never exported, whatever a CSMS or a TOML file put in them.
SECRET_KEY = re.compile(r"(authorizationkey|password|secret|privatekey|passphrase|token)", re.I)

#: One log file's share of a bundle at most (the SD card and the upload stay small).
MAX_FILE_BYTES = 4 * 1024 * 1024


def is_secret_key(name: str) -> bool:
    return bool(SECRET_KEY.search(name))


def safe_configuration(keys: Iterable[dict]) -> list[dict]:
    """GetConfiguration-shaped entries without secrets: the key stays, its value does not."""
    out = []
    for entry in keys:
        name = str(entry.get("key", ""))
        if is_secret_key(name):
            out.append({"key": name, "readonly": entry.get("readonly"), "value": "(secret)"})
        else:
            out.append(dict(entry))
    return out


def in_window(stamp: str, start: datetime | None, stop: datetime | None) -> bool:
    """True if an ISO timestamp lies in [start, stop]; an unreadable one is kept."""
    if start is None and stop is None:
        return True
    try:
        when = parse_iso(stamp)
    except (ValueError, TypeError):
        return True
    if start is not None and when < start:
        return False
    return not (stop is not None and when > stop)


_LINE_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)")


def filter_log_lines(text: str, start: datetime | None, stop: datetime | None) -> str:
    """The lines of a text log in the window; a line without a timestamp follows its
    predecessor (a traceback stays with its message)."""
    if start is None and stop is None:
        return text
    keep = True
    out = []
    for line in text.splitlines(keepends=True):
        m = _LINE_STAMP.match(line)
        if m:
            keep = in_window(m.group(1).replace(",", "."), start, stop)
        if keep:
            out.append(line)
    return "".join(out)


def journal_text(
    start: datetime | None,
    stop: datetime | None,
    *,
    unit: str = "chargerd",
    journalctl: str = "journalctl",
    timeout: float = 30.0,
) -> str:
    """The unit's journal for the window (on a charger the daemon logs to journald, not a
    file).  Raises OSError when journalctl is missing or fails, with the reason."""
    exe = shutil.which(journalctl)
    if exe is None:
        raise OSError(f"{journalctl} not found")
    cmd = [exe, "-u", unit, "--no-pager", "-q", "-o", "short-iso-precise"]
    if start is not None:
        cmd += ["--since", f"@{int(start.timestamp())}"]
    if stop is not None:
        cmd += ["--until", f"@{int(stop.timestamp()) + 1}"]
    if start is None and stop is None:
        cmd += ["-n", "20000"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise OSError(f"{journalctl} took longer than {timeout:.0f} s") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(f"{journalctl} failed: {why[-1] if why else done.returncode}")
    return done.stdout[-MAX_FILE_BYTES:].decode("utf-8", errors="replace")


def _tail_text(path: Path) -> str:
    """A log file's text, its last MAX_FILE_BYTES at most."""
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - MAX_FILE_BYTES))
        return f.read().decode("utf-8", errors="replace")


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def write_bundle(
    dest: Path,
    *,
    prefix: str,
    created: datetime,
    start: datetime | None = None,
    stop: datetime | None = None,
    log_files: Iterable[Path] = (),
    security_entries: Iterable[dict] | None = None,
    frames: Iterable[dict] | None = None,
    configuration: Iterable[dict] | None = None,
    info: dict | None = None,
    journal: Callable[[], str] | None = None,
) -> list[str]:
    """Write a tar.gz at ``dest``; returns the member names.  Unreadable logs are skipped
    (noted in info.json), never fatal: a partial bundle beats none."""
    names: list[str] = []
    notes: list[str] = []
    mtime = created.timestamp()
    with tarfile.open(dest, "w:gz") as tar:

        def add(name: str, data: bytes) -> None:
            _add(tar, f"{prefix}/{name}", data, mtime)
            names.append(f"{prefix}/{name}")

        for path in log_files:
            try:
                text = filter_log_lines(_tail_text(path), start, stop)
            except OSError as exc:
                notes.append(f"{path.name}: {exc.strerror or exc}")
                continue
            add(f"logs/{path.name}", text.encode())
        if journal is not None:
            try:
                add("logs/journal.txt", journal().encode())
            except OSError as exc:
                notes.append(f"journal: {exc}")
        if security_entries is not None:
            lines = "".join(
                json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n"
                for e in security_entries
            )
            add("security.log", lines.encode())
        if frames is not None:
            kept = [f for f in frames if in_window(str(f.get("time", "")), start, stop)]
            lines = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in kept)
            add("frames.jsonl", lines.encode())
        if configuration is not None:
            text = json.dumps(safe_configuration(configuration), indent=1, ensure_ascii=False)
            add("configuration.json", text.encode())
        meta = dict(info or {})
        meta["window"] = {
            "start": start.isoformat() if start else None,
            "stop": stop.isoformat() if stop else None,
        }
        if notes:
            meta["skipped"] = notes
        add("info.json", json.dumps(meta, indent=1, default=str).encode())
    return names
