"""A writable working directory for lgpio, set before lgpio is imported.

``import lgpio`` opens a notification pipe (``.lgd-nfy<N>``, a FIFO) in the
current directory at import time, or in ``$LG_WD`` (its C library then
changes into that directory).  Under the shipped unit the current directory
would be ``/``, read-only under ``ProtectSystem=strict`` and not the
``chargerd`` user's: the import fails with a FileNotFoundError, the pin
factory with it, and systemd restarts the daemon forever.  So the daemon
points ``LG_WD`` at a writable directory first (the unit's RuntimeDirectory,
else the state directory), or refuses to start with one line saying why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hal.errors import HardwareConfigError

__all__ = ["prepare_lgpio_workdir", "writable"]

log = logging.getLogger(__name__)


def writable(directory: Path) -> bool:
    """Whether a file can really be made in ``directory`` (os.access says yes to root on /proc)."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".chargerd-probe-")
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True


def _cwd() -> Path | None:
    try:
        return Path.cwd()
    except OSError:  # the working directory was deleted
        return None


def prepare_lgpio_workdir(fallbacks: Sequence[Path] = ()) -> Path:
    """Make sure lgpio will find a writable directory; the directory it will use.

    ``$LG_WD`` when set (it must be writable), else the working directory when
    writable, else the first writable of ``$RUNTIME_DIRECTORY`` and
    ``fallbacks``, which then becomes ``$LG_WD``.  Raises HardwareConfigError
    (one line, for the technician) when there is none.
    """
    if "lgpio" in sys.modules:
        return _cwd() or Path("/")  # too late to choose: lgpio has made its pipe already
    chosen = os.environ.get("LG_WD")
    if chosen:
        if writable(Path(chosen)):
            return Path(chosen)
        raise HardwareConfigError(
            f"LG_WD={chosen} is not a writable directory: lgpio makes its notification pipe "
            "there (the shipped unit sets LG_WD=/run/chargerd, its RuntimeDirectory)"
        )
    cwd = _cwd()
    if cwd is not None and writable(cwd):
        return cwd
    runtime = os.environ.get("RUNTIME_DIRECTORY", "")
    candidates = [Path(p) for p in runtime.split(":") if p] + [Path(p) for p in fallbacks]
    for candidate in candidates:
        if writable(candidate):
            os.environ["LG_WD"] = str(candidate)
            log.info("lgpio works in %s (LG_WD): the working directory is not writable", candidate)
            return candidate
    tried = ", ".join(str(c) for c in [cwd or "(deleted working directory)", *candidates])
    raise HardwareConfigError(
        f"lgpio needs a writable directory for its notification pipe and none of {tried} is: "
        "set LG_WD or WorkingDirectory to one (the shipped unit uses /run/chargerd)"
    )
