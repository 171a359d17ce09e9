"""The control server on a real unix socket, spoken to as a script would: raw JSON lines."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chargerd.control.server import (
    CommandRefused,
    CommandUsageError,
    ControlServer,
    ControlSocketInUse,
    NotFound,
)

GUARD_S = 5  # only against a hang; no test waits anywhere near this


async def _status(args: dict) -> dict:
    return {"station": {"charge_point_id": "CP-1"}, "echo": args}


async def _refuse(args: dict) -> dict:
    raise CommandRefused("a transaction is running on connector 1")


async def _bad_usage(args: dict) -> dict:
    raise CommandUsageError("phases must be 1 or 3")


async def _unknown_connector(args: dict) -> dict:
    raise NotFound(f"unknown connector {args.get('connector')}")


async def _boom(args: dict) -> dict:
    raise RuntimeError("boom")


async def _measure(args: dict) -> dict:
    return {"size": len(json.dumps(args))}


async def _unserialisable(args: dict) -> dict:
    return {"path": Path("/x")}


HANDLERS = {
    "status": _status,
    "refuse": _refuse,
    "bad": _bad_usage,
    "lookup": _unknown_connector,
    "boom": _boom,
    "weird": _unserialisable,
    "measure": _measure,
}


class Conn:
    """A raw client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: Path) -> Conn:
        return cls(*await asyncio.open_unix_connection(str(path)))

    async def send(self, data: bytes | dict[str, Any]) -> None:
        if isinstance(data, dict):
            data = json.dumps(data).encode() + b"\n"
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), GUARD_S)
        assert line.endswith(b"\n"), f"connection closed: {line!r}"
        return json.loads(line)

    async def ask(self, data: bytes | dict[str, Any]) -> dict[str, Any]:
        await self.send(data)
        return await self.recv()

    async def at_eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), GUARD_S) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def server(sock_path: Path) -> AsyncIterator[ControlServer]:
    srv = ControlServer(sock_path, handlers=HANDLERS, streams={})
    await srv.start()
    yield srv
    await srv.close()


async def test_answers_a_request(server: ControlServer) -> None:
    conn = await Conn.open(server.path)
    answer = await conn.ask({"cmd": "status", "args": {"verbose": True}})
    assert answer == {
        "ok": True,
        "result": {"station": {"charge_point_id": "CP-1"}, "echo": {"verbose": True}},
    }
    await conn.close()


async def test_several_requests_on_one_connection_even_in_one_write(
    server: ControlServer,
) -> None:
    conn = await Conn.open(server.path)
    assert (await conn.ask({"cmd": "status"}))["ok"] is True  # args may be omitted
    await conn.send(b'{"cmd": "refuse"}\n{"cmd": "status", "args": {"n": 2}}\n')
    assert (await conn.recv())["kind"] == "refused"
    assert (await conn.recv())["result"]["echo"] == {"n": 2}
    await conn.close()


async def test_socket_mode_is_0660_and_parent_dir_is_created(sock_path: Path) -> None:
    path = sock_path.parent / "run" / "chargerd" / "control.sock"
    srv = ControlServer(path, handlers=HANDLERS, streams={})
    await srv.start()
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
    finally:
        await srv.close()
    assert not path.exists()


async def test_mode_is_configurable(sock_path: Path) -> None:
    srv = ControlServer(sock_path, handlers=HANDLERS, streams={}, mode=0o600)
    await srv.start()
    try:
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
    finally:
        await srv.close()


@pytest.mark.parametrize(
    ("cmd", "kind", "text"),
    [
        ("refuse", "refused", "a transaction is running on connector 1"),
        ("bad", "usage", "phases must be 1 or 3"),
        ("lookup", "not_found", "unknown connector 7"),
    ],
)
async def test_handler_exceptions_map_to_kinds(
    server: ControlServer, cmd: str, kind: str, text: str
) -> None:
    conn = await Conn.open(server.path)
    answer = await conn.ask({"cmd": cmd, "args": {"connector": 7}})
    assert answer == {"ok": False, "error": text, "kind": kind}
    await conn.close()


async def test_internal_error_is_answered_logged_and_server_stays_up(
    server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await Conn.open(server.path)
    with caplog.at_level(logging.ERROR, logger="chargerd.control.server"):
        answer = await conn.ask({"cmd": "boom"})
    assert answer["ok"] is False
    assert answer["kind"] == "internal"
    assert "boom" in answer["error"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])
    # a result that cannot be sent is a bug too, not a dead connection
    assert (await conn.ask({"cmd": "weird"}))["kind"] == "internal"
    assert (await conn.ask({"cmd": "status"}))["ok"] is True
    await conn.close()


@pytest.mark.parametrize(
    "line",
    [
        b"this is not json\n",
        b"[1, 2]\n",
        b'{"args": {}}\n',
        b'{"cmd": "status", "args": [1]}\n',
        b"\xff\xfe\n",
    ],
)
async def test_malformed_request_is_a_usage_error_and_connection_stays(
    server: ControlServer, line: bytes
) -> None:
    conn = await Conn.open(server.path)
    answer = await conn.ask(line)
    assert answer["ok"] is False and answer["kind"] == "usage"
    assert (await conn.ask({"cmd": "status"}))["ok"] is True
    await conn.close()


@pytest.mark.parametrize(
    "huge",
    [
        b'{"cmd": "status", "args": {"x": "' + b"a" * (200 * 1024) + b'"}}\n',
        # the tail of an over-long line must not pass for a request of its own
        b"x" * (128 * 1024 + 1000) + b'{"cmd": "status", "args": {"n": 0}}\n',
    ],
)
async def test_over_long_line_is_a_usage_error_and_connection_stays(
    server: ControlServer, huge: bytes
) -> None:
    conn = await Conn.open(server.path)
    answer = await conn.ask(huge)
    assert answer["kind"] == "usage"
    assert "65536" in answer["error"]
    assert (await conn.ask({"cmd": "status", "args": {"n": 1}}))["result"]["echo"] == {"n": 1}
    await conn.close()


async def test_line_just_under_the_limit_is_served(server: ControlServer) -> None:
    conn = await Conn.open(server.path)
    head, tail = b'{"cmd": "measure", "args": {"x": "', b'"}}'
    line = head + b"a" * (64 * 1024 - len(head) - len(tail)) + tail
    assert len(line) == 64 * 1024
    answer = await conn.ask(line + b"\n")
    assert answer["ok"] is True
    assert answer["result"]["size"] > 65000
    await conn.close()


async def test_unknown_command_lists_the_commands(server: ControlServer) -> None:
    conn = await Conn.open(server.path)
    answer = await conn.ask({"cmd": "reboot"})
    assert answer["kind"] == "usage"
    assert "reboot" in answer["error"]
    for name in HANDLERS:
        assert name in answer["error"]
    await conn.close()


async def test_last_request_without_newline_is_answered_after_half_close(
    server: ControlServer,
) -> None:
    conn = await Conn.open(server.path)
    await conn.send(b'{"cmd": "status"}')
    conn.writer.write_eof()
    assert (await conn.recv())["ok"] is True
    assert await conn.at_eof()
    await conn.close()


async def test_stale_socket_file_is_replaced(sock_path: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))
    dead.close()  # the file stays, as after a crash
    srv = ControlServer(sock_path, handlers=HANDLERS, streams={})
    await srv.start()
    try:
        conn = await Conn.open(sock_path)
        assert (await conn.ask({"cmd": "status"}))["ok"] is True
        await conn.close()
    finally:
        await srv.close()


async def test_refuses_to_start_when_a_live_daemon_answers(server: ControlServer) -> None:
    second = ControlServer(server.path, handlers=HANDLERS, streams={})
    with pytest.raises(ControlSocketInUse, match="already listening"):
        await second.start()
    # the first one is untouched and still serving
    conn = await Conn.open(server.path)
    assert (await conn.ask({"cmd": "status"}))["ok"] is True
    await conn.close()


async def test_refuses_to_replace_a_file_that_is_not_a_socket(sock_path: Path) -> None:
    sock_path.write_text("precious")
    srv = ControlServer(sock_path, handlers=HANDLERS, streams={})
    with pytest.raises(FileExistsError):
        await srv.start()
    assert sock_path.read_text() == "precious"


async def test_close_drops_clients_and_removes_only_its_own_socket(sock_path: Path) -> None:
    first = ControlServer(sock_path, handlers=HANDLERS, streams={})
    await first.start()
    conn = await Conn.open(sock_path)
    assert (await conn.ask({"cmd": "status"}))["ok"] is True
    # somebody else takes the path over meanwhile
    sock_path.unlink()
    second = ControlServer(sock_path, handlers=HANDLERS, streams={})
    await second.start()
    await first.close()
    assert await conn.at_eof()
    assert sock_path.exists()
    conn2 = await Conn.open(sock_path)
    assert (await conn2.ask({"cmd": "status"}))["ok"] is True
    await conn2.close()
    await second.close()
    assert not sock_path.exists()


def test_a_command_cannot_be_both_plain_and_streaming(sock_path: Path) -> None:
    async def events(args: dict) -> AsyncIterator[dict]:
        yield {}

    with pytest.raises(ValueError, match="status"):
        ControlServer(sock_path, handlers=HANDLERS, streams={"status": events})


# --------------------------------------------------------------------------- streams


class Ticker:
    """A stream handler that records whether its subscription was released."""

    def __init__(self, count: int | None = None, *, fail_first: Exception | None = None) -> None:
        self.count = count
        self.fail_first = fail_first
        self.released = asyncio.Event()
        self.args: dict | None = None

    async def __call__(self, args: dict) -> AsyncIterator[dict]:
        self.args = args
        try:
            if self.fail_first is not None:
                raise self.fail_first
            n = 0
            while self.count is None or n < self.count:
                yield {"id": 1, "energy_wh": 1000.0 + n}
                n += 1
                await asyncio.sleep(0.005)
        finally:
            self.released.set()


async def _quiet(args: dict) -> AsyncIterator[dict]:
    await asyncio.Event().wait()
    yield {}


async def _serve_streams(path: Path, **streams: Any) -> ControlServer:
    srv = ControlServer(path, handlers=HANDLERS, streams=streams)
    await srv.start()
    return srv


async def test_stream_sends_events_until_client_disconnects(sock_path: Path) -> None:
    ticker = Ticker()
    srv = await _serve_streams(sock_path, **{"meter.follow": ticker})
    try:
        conn = await Conn.open(sock_path)
        await conn.send({"cmd": "meter.follow", "args": {"connector": 1}})
        events = [await conn.recv() for _ in range(3)]
        assert events == [
            {"ok": True, "event": {"id": 1, "energy_wh": 1000.0 + n}} for n in range(3)
        ]
        assert ticker.args == {"connector": 1}
        await conn.close()
        await asyncio.wait_for(ticker.released.wait(), GUARD_S)
        # and the server still takes new clients
        conn2 = await Conn.open(sock_path)
        assert (await conn2.ask({"cmd": "status"}))["ok"] is True
        await conn2.close()
    finally:
        await srv.close()


async def test_quiet_stream_is_released_when_client_leaves(sock_path: Path) -> None:
    released = asyncio.Event()

    async def quiet(args: dict) -> AsyncIterator[dict]:
        try:
            await asyncio.Event().wait()
            yield {}
        finally:
            released.set()

    srv = await _serve_streams(sock_path, **{"log.follow": quiet})
    try:
        conn = await Conn.open(sock_path)
        await conn.send({"cmd": "log.follow"})
        await conn.close()
        await asyncio.wait_for(released.wait(), GUARD_S)
    finally:
        await srv.close()


async def test_stream_failing_before_any_event_is_an_error_answer(sock_path: Path) -> None:
    ticker = Ticker(fail_first=NotFound("unknown connector 9"))
    srv = await _serve_streams(sock_path, **{"meter.follow": ticker})
    try:
        conn = await Conn.open(sock_path)
        answer = await conn.ask({"cmd": "meter.follow", "args": {"connector": 9}})
        assert answer == {"ok": False, "error": "unknown connector 9", "kind": "not_found"}
        assert (await conn.ask({"cmd": "status"}))["ok"] is True
        await conn.close()
    finally:
        await srv.close()


async def test_stream_the_daemon_ends_is_marked_and_later_requests_are_kept(
    sock_path: Path,
) -> None:
    srv = await _serve_streams(sock_path, **{"meter.follow": Ticker(count=2)})
    try:
        conn = await Conn.open(sock_path)
        # the status request arrives while the stream runs; it is answered after it
        await conn.send(b'{"cmd": "meter.follow"}\n{"cmd": "status", "args": {"n": 3}}\n')
        assert (await conn.recv())["event"]["energy_wh"] == 1000.0
        assert (await conn.recv())["event"]["energy_wh"] == 1001.0
        assert await conn.recv() == {"ok": True, "result": {"ended": True}}
        assert (await conn.recv())["result"]["echo"] == {"n": 3}
        await conn.close()
    finally:
        await srv.close()


async def test_close_ends_open_streams(sock_path: Path) -> None:
    ticker = Ticker()
    srv = await _serve_streams(sock_path, **{"meter.follow": ticker, "log.follow": _quiet})
    conn = await Conn.open(sock_path)
    await conn.send({"cmd": "meter.follow"})
    await conn.recv()
    await srv.close()
    await asyncio.wait_for(ticker.released.wait(), GUARD_S)
    # whatever events were in flight, the connection then ends
    while (line := await asyncio.wait_for(conn.reader.readline(), GUARD_S)) != b"":
        assert json.loads(line)["ok"] is True
    await conn.close()
