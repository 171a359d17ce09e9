"""systemd service notifications: READY, STATUS, STOPPING and the watchdog.

The unit is ``Type=notify`` with ``WatchdogSec``: systemd restarts the daemon
when the pings stop.  The pings are sent by a coroutine on the event loop
itself, so a loop blocked by a stuck call stops them and gets the daemon
restarted -- a ping from a helper thread would keep a dead daemon "alive" --
and only while every connector's supervision completes its passes (the
``stale`` check): a hung driver call stops them too.

Uses systemd-python when it is installed (the ``pi`` extra); otherwise speaks
the protocol itself, which is one datagram on an AF_UNIX socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chargerd.clock import Clock

log = logging.getLogger(__name__)

try:  # pragma: no cover - depends on the optional systemd-python package
    from systemd import daemon as _sd_daemon
except ImportError:
    _sd_daemon = None


def notify(state: str) -> bool:
    """Send ``state`` (e.g. "READY=1", "STATUS=connecting", "WATCHDOG=1").

    Returns False when not started by systemd (no NOTIFY_SOCKET), so callers
    need not care whether they run under systemd.  Raises OSError when the
    socket is there but the send fails.
    """
    if _sd_daemon is not None:
        return bool(_sd_daemon.notify(state))
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode("utf-8"))
    return True


def watchdog_interval() -> float | None:
    """WatchdogSec in seconds when systemd expects pings from this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():  # meant for another process (e.g. our parent)
                return None
        except ValueError:
            log.warning("Ignoring invalid WATCHDOG_PID=%r", pid)
            return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("Ignoring invalid WATCHDOG_USEC=%r", usec)
        return None
    return value / 1_000_000 if value > 0 else None


async def watchdog_loop(
    interval: float,
    *,
    clock: Clock | None = None,
    stale: Callable[[], str | None] | None = None,
    send: Callable[[str], bool] = notify,
) -> None:
    """Ping every ``interval / 4`` while ``stale()`` finds nothing wrong, until cancelled.

    ``stale`` returns why the daemon must not be called alive (e.g. a connector
    whose supervision has stopped), or None.  While it says something, no ping
    is sent: systemd kills and restarts the daemon after ``interval``.  Said
    once at ERROR, not at every skipped ping.

    A failing send is logged once at ERROR and then quietly retried; systemd
    will restart the daemon if the pings really do not arrive, which is the
    right outcome.
    """
    if interval <= 0:
        raise ValueError(f"watchdog interval must be > 0, got {interval}")
    failing = False
    withheld: str | None = None
    while True:
        why = stale() if stale is not None else None
        if why is not None:
            if withheld is None:
                log.critical("watchdog not fed: %s; systemd will restart chargerd", why)
            withheld = why
        else:
            if withheld is not None:
                log.warning("supervision resumed; feeding the watchdog again")
                withheld = None
            try:
                send("WATCHDOG=1")
            except OSError as exc:
                if not failing:
                    log.error("Watchdog ping to systemd failed: %s", exc)
                    failing = True
            else:
                if failing:
                    log.info("Watchdog ping to systemd works again")
                    failing = False
        if clock is None:
            await asyncio.sleep(interval / 4)
        else:
            await clock.sleep(interval / 4)
