"""The wire format of the control socket, shared by the daemon and chargerctl.

Technicians' scripts talk to this socket directly (``socat``, ``nc -U``, a
few lines of Python), so the format is a stable contract and deliberately
boring: one JSON object per line, UTF-8, over a unix stream socket.

    request:   {"cmd": "status", "args": {...}}
    answer:    {"ok": true, "result": {...}}
               {"ok": false, "error": "human readable reason", "kind": KIND}
    streaming: {"ok": true, "event": {...}}   one line per event, until the
               client disconnects; if the daemon ends a stream itself it says
               so with a final {"ok": true, "result": {"ended": true}}, or an
               error answer, and the connection takes requests again.

KIND is one of "refused" (the station will not do it now), "usage" (the
request is malformed or names no command), "not_found" (it names something
that does not exist, such as a connector) and "internal" (a bug).

This module is imported by the CLI, which must start fast on a Pi: stdlib only
and nothing heavier than ``json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

DEFAULT_SOCKET: Final = Path("/run/chargerd/control.sock")
SOCKET_ENV: Final = "CHARGERD_SOCKET"

# A request line longer than this is refused without being parsed, so that a
# runaway client cannot make the daemon buffer without bound.
MAX_LINE: Final = 64 * 1024

REFUSED: Final = "refused"
USAGE: Final = "usage"
NOT_FOUND: Final = "not_found"
INTERNAL: Final = "internal"
KINDS: Final = (REFUSED, USAGE, NOT_FOUND, INTERNAL)


class ProtocolError(ValueError):
    """A line that is not a well-formed message of this protocol."""


def encode(message: dict[str, Any]) -> bytes:
    """One message as one line; compact, so that a line never contains a newline."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line (without or with its newline) into a JSON object."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"expected a JSON object, got {type(message).__name__}")
    return message


def request(cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"cmd": cmd, "args": args or {}}


def result(value: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "result": value}


def event(value: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "event": value}


def error(kind: str, message: str) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown error kind {kind!r}")
    return {"ok": False, "error": message, "kind": kind}


def default_socket(environ: Mapping[str, str] | None = None) -> Path:
    """The socket path: $CHARGERD_SOCKET when set (a bench), else the system path."""
    env = os.environ if environ is None else environ
    value = env.get(SOCKET_ENV)
    return Path(value) if value else DEFAULT_SOCKET
