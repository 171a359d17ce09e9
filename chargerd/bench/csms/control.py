"""The running bench CSMS's control endpoint: a unix socket that ``call`` and ``script`` use.

A CSMS team drives a station from a shell: ``python -m chargerd.bench.csms call
CP-1 RemoteStartTransaction '{"idTag": "X"}'`` connects here, the server sends
the CALL over the station's websocket and hands back the answer.  One JSON
object per line both ways (``{"cmd": ...}`` -> ``{"ok": true, ...}``), the same
shape as chargerd's own control socket, so that ``socat`` works too.

Actions are not known here: whatever action and payload arrive are sent as
they are, so a handler the station gains tomorrow (SetChargingProfile,
ReserveNow, TriggerMessage...) is callable without a change to the bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from chargerd.bench.csms.csms import BenchCsms, CsmsCallError, Record
from chargerd.clock import iso

log = logging.getLogger(__name__)

CONTROL_ENV = "BENCHCSMS_CONTROL"
MAX_LINE = 4 * 1024 * 1024

#: Answers the bench CSMS gives that a client may change at run time (``set``).
KNOBS: dict[str, type | tuple[type, ...]] = {
    "boot_status": str,
    "heartbeat_interval": int,
    "accept_all_cards": bool,
    "cards": dict,
    "start_transaction_status": (str, type(None)),
    "data_transfer_status": str,
    "hang": bool,
    "delay_s": (int, float),
    "callerror_actions": list,
}


def default_control_path(port: int) -> Path:
    """Where a bench CSMS on ``port`` listens for control clients (unless told otherwise)."""
    env = os.environ.get(CONTROL_ENV)
    if env:
        return Path(env)
    return Path(f"/tmp/chargerd-benchcsms-{port}.sock")


class ControlRequestError(Exception):
    """A request the endpoint cannot carry out; ``kind`` tells the client's exit status."""

    def __init__(self, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.extra = extra


def record_json(rec: Record, index: int, answer: dict[str, Any] | None) -> dict[str, Any]:
    out = {
        "index": index,
        "cp_id": rec.cp_id,
        "action": rec.action,
        "payload": rec.payload,
        "time": iso(rec.time),
        "unique_id": rec.unique_id,
    }
    if answer is not None:
        out["answer"] = answer
    return out


def matches(expected: Any, actual: Any) -> bool:
    """``expected`` is a subset of ``actual``: dict keys recursively, lists item by item."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return expected == actual


class ControlServer:
    """Serves one BenchCsms to local clients."""

    def __init__(self, csms: BenchCsms, path: Path) -> None:
        self.csms = csms
        self.path = Path(path)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_socket():
                self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._client, path=str(self.path), limit=MAX_LINE
        )
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = await self.handle_line(line)
                writer.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def handle_line(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise ControlRequestError("usage", 'a request is {"cmd": ..., ...}')
            return {"ok": True, **(await self.handle(request))}
        except json.JSONDecodeError as exc:
            return {"ok": False, "kind": "usage", "error": f"not JSON: {exc}"}
        except ControlRequestError as exc:
            return {"ok": False, "kind": exc.kind, "error": str(exc), **exc.extra}
        except Exception as exc:  # the bench must keep serving whatever a client sends
            log.exception("control request failed")
            return {"ok": False, "kind": "internal", "error": f"{type(exc).__name__}: {exc}"}

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req["cmd"]
        if cmd == "stations":
            return {"stations": self.csms.stations()}
        if cmd == "call":
            return await self._call(req)
        if cmd == "mark":
            return {"index": len(self.csms.received)}
        if cmd == "wait_for":
            return await self._wait_for(req)
        if cmd == "set":
            return self._set(req)
        raise ControlRequestError(
            "usage", f"unknown cmd {cmd!r} (stations, call, mark, wait_for, set)"
        )

    async def _call(self, req: dict[str, Any]) -> dict[str, Any]:
        cp_id, action, payload = req.get("cp_id"), req.get("action"), req.get("payload", {})
        if not isinstance(cp_id, str) or not isinstance(action, str) or not action:
            raise ControlRequestError("usage", "call needs cp_id and action")
        if not isinstance(payload, dict):
            raise ControlRequestError("usage", "the payload is a JSON object")
        timeout = _timeout(req)
        try:
            result = await self.csms.call(cp_id, action, payload, timeout=timeout)
        except ConnectionError:
            connected = ", ".join(self.csms.stations()) or "none"
            raise ControlRequestError(
                "not_connected", f"{cp_id} is not connected (connected: {connected})"
            ) from None
        except CsmsCallError as exc:
            raise ControlRequestError(
                "callerror",
                f"CALLERROR {exc.code}: {exc.description}",
                code=exc.code,
                description=exc.description,
                details=exc.details,
            ) from None
        except TimeoutError:
            raise ControlRequestError(
                "timeout", f"{cp_id} did not answer {action} within {timeout:g} s"
            ) from None
        return {"result": result}

    async def _wait_for(self, req: dict[str, Any]) -> dict[str, Any]:
        action = req.get("action")
        if not isinstance(action, str):
            raise ControlRequestError("usage", "wait_for needs an action")
        cp_id = req.get("cp_id")
        match = req.get("match") or {}
        after = req.get("after", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise ControlRequestError("usage", "after is an index >= 0")
        timeout = _timeout(req)
        received = self.csms.received

        def found() -> int | None:
            for i in range(after, len(received)):
                r = received[i]
                if r.action == action and (cp_id is None or r.cp_id == cp_id):
                    if matches(match, r.payload):
                        return i
            return None

        try:
            async with asyncio.timeout(timeout):
                while (index := found()) is None:
                    await self.csms._changed_wait()
        except TimeoutError:
            raise ControlRequestError(
                "timeout", f"no {action} matching {json.dumps(match)} within {timeout:g} s"
            ) from None
        rec = received[index]
        # Give the session a moment to answer, so that the answer (a transactionId) is known.
        answer = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                while (answer := self.csms.answers.get(rec.unique_id)) is None:
                    await asyncio.sleep(0.01)
        return {"record": record_json(rec, index, answer), "index": index + 1}

    def _set(self, req: dict[str, Any]) -> dict[str, Any]:
        values = req.get("values")
        if not isinstance(values, dict) or not values:
            raise ControlRequestError("usage", f"set needs values among {', '.join(KNOBS)}")
        for name, value in values.items():
            kind = KNOBS.get(name)
            if kind is None:
                raise ControlRequestError("usage", f"unknown knob {name!r}: {', '.join(KNOBS)}")
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ControlRequestError("usage", f"{name}: wrong type {type(value).__name__}")
        for name, value in values.items():
            setattr(self.csms, name, set(value) if name == "callerror_actions" else value)
        return {"set": sorted(values)}


def _timeout(req: dict[str, Any]) -> float:
    raw = req.get("timeout", 10)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= 3600:
        raise ControlRequestError("usage", "timeout is a number of seconds in (0, 3600]")
    return float(raw)


# --------------------------------------------------------------------------- the client


class ControlClient:
    """A blocking client of a running bench CSMS (stdlib only, as chargerctl)."""

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(self.path))
        except OSError as exc:
            self._sock.close()
            raise ConnectionError(
                f"no bench CSMS control socket at {self.path} ({exc.strerror or exc}); "
                "is `python -m chargerd.bench.csms` running (see --control / --port)?"
            ) from None
        self._file = self._sock.makefile("rb")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        """The answer (``ok`` true or false); ConnectionError when the server is gone."""
        try:
            self._sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            line = self._file.readline()
        except TimeoutError:
            raise ConnectionError(f"the bench CSMS at {self.path} did not answer") from None
        except OSError as exc:
            raise ConnectionError(f"bench CSMS at {self.path}: {exc}") from None
        if not line:
            raise ConnectionError(f"the bench CSMS at {self.path} closed the connection")
        answer = json.loads(line)
        return answer if isinstance(answer, dict) else {"ok": False, "error": "bad answer"}


def socket_timeout_for(timeout: float) -> float:
    """The client's socket timeout: the station's answer time plus the bench's own margin."""
    return timeout + 5.0
