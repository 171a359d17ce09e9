"""Is every connector really supervised?  The one condition for feeding the systemd watchdog.

A watchdog fed by a task of its own proves only that the event loop turns.  A
driver call that hangs (an SPI read that never returns, a thread that
deadlocks) blocks the supervisor's pass while the loop goes on: the contactor
would stay as it is with nobody watching the pilot.  So the pings depend on
each connector having completed a pass recently; when one has not, they stop,
systemd kills the daemon after WatchdogSec and its ExecStopPost drives the
outputs safe (``chargerd --safe-outputs``).
"""

from __future__ import annotations


def stale_supervision(pass_at: dict[int, float], now: float, max_age_s: float) -> str | None:
    """The first connector whose last completed pass is older than ``max_age_s``, said plainly.

    None when every connector is supervised: the one condition for feeding the
    systemd watchdog.
    """
    for connector_id, at in sorted(pass_at.items()):
        age = now - at
        if age > max_age_s:
            return f"connector {connector_id} has completed no supervision pass for {age:.1f} s"
    return None
