"""The technician's control channel: a unix-socket server in the daemon, spoken by chargerctl.

chargerctl imports ``chargerd.control.protocol`` and must start fast, so the
server (and asyncio with it) is only imported when one of its names is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chargerd.control.server import (
        CommandRefused,
        CommandUsageError,
        ControlServer,
        ControlSocketInUse,
        Handler,
        NotFound,
        StreamHandler,
    )

__all__ = [
    "CommandRefused",
    "CommandUsageError",
    "ControlServer",
    "ControlSocketInUse",
    "Handler",
    "NotFound",
    "StreamHandler",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from chargerd.control import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
