"""Control-socket commands for the security log (``chargerctl security-log``).

Reading it lets a technician see on site what the CSMS would get from
GetLog(SecurityLog).  Clearing it is the only way the log is ever emptied, and
the whitepaper wants that visible: the files are deleted first, then
SecurityLogWasCleared (critical, so durable) is emitted, which also makes it
the first line of the fresh log.
"""

from __future__ import annotations

from typing import Any

from chargerd.control.server import CommandRefused, CommandUsageError

DEFAULT_LINES = 20


def security_log_handlers(daemon: Any) -> dict:
    """``security_log`` and ``security_log.clear`` for build_commands()."""

    def _parts():
        log = getattr(daemon, "security_log", None)
        events = getattr(daemon, "security_events", None)
        if log is None or events is None:
            raise CommandRefused("this daemon keeps no security log")
        return log, events

    async def read(args: dict) -> dict:
        log, _ = _parts()
        raw = args.get("lines", DEFAULT_LINES)
        try:
            lines = int(raw)
        except (TypeError, ValueError):
            raise CommandUsageError(f"lines must be a whole number, got {raw!r}") from None
        if lines < 0:
            raise CommandUsageError(f"lines must be >= 0, got {lines}")
        entries = log.entries()
        return {
            "entries": entries[-lines:] if lines else [],
            "total": len(entries),
            "size_bytes": log.size(),
            "path": str(log.path),
        }

    async def clear(args: dict) -> dict:
        from chargerd.features.security_events import SECURITY_LOG_WAS_CLEARED

        log, events = _parts()
        removed = len(log.entries())
        log.clear()
        if log.files():
            raise CommandRefused(f"the security log {log.path} could not be deleted entirely")
        why = f"cleared by a technician (chargerctl), {removed} entries"
        events.emit(SECURITY_LOG_WAS_CLEARED, why)
        return {"cleared": removed}

    return {"security_log": read, "security_log.clear": clear}
