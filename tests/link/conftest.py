"""Real sockets on 127.0.0.1: a raw websockets CSMS the test drives frame by frame,
a TCP proxy that can go silent (a dead link), and a Link factory with tiny intervals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from chargerd.clock import SystemClock
from chargerd.link import FrameLog, Link


class RawConn:
    """One station connection as the raw CSMS sees it."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.path = ws.request.path if ws.request else ""
        self.headers = ws.request.headers if ws.request else {}
        self.inbox: asyncio.Queue[str] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def send(self, frame: list | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 2.0) -> list:
        async with asyncio.timeout(timeout):
            return json.loads(await self.inbox.get())

    async def expect_call(self, action: str, timeout: float = 2.0) -> list:
        frame = await self.recv(timeout)
        assert frame[0] == 2 and frame[2] == action, frame
        return frame

    async def response_to(self, unique_id: str, timeout: float = 2.0) -> list:
        """The next CALLRESULT/CALLERROR for ``unique_id``; other frames are skipped."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame[0] in (3, 4) and frame[1] == unique_id:
                    return frame


class RawCsms:
    """A websockets server with no OCPP logic: the test writes and reads frames itself."""

    def __init__(self, *, subprotocols: list[str] | None = None) -> None:
        self.subprotocols = ["ocpp1.6"] if subprotocols is None else subprotocols
        self.server: Server | None = None
        self.port = 0
        self.accepted: asyncio.Queue[RawConn] = asyncio.Queue()
        self.count = 0
        self.conns: list[RawConn] = []

    async def start(self, port: int = 0) -> int:
        self.server = await serve(
            self._handler,
            "127.0.0.1",
            port,
            subprotocols=self.subprotocols or None,  # type: ignore[arg-type]
            ping_interval=None,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def _handler(self, ws: ServerConnection) -> None:
        conn = RawConn(ws)
        self.count += 1
        self.conns.append(conn)
        await self.accepted.put(conn)
        try:
            async for msg in ws:
                await conn.inbox.put(msg if isinstance(msg, str) else msg.decode())
        except ConnectionClosed:
            pass
        finally:
            conn.closed.set()

    async def accept(self, timeout: float = 2.0) -> RawConn:
        async with asyncio.timeout(timeout):
            return await self.accepted.get()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def kill(self) -> None:
        """Die like a crashed process: no close handshake, listening socket gone."""
        if self.server is None:
            return
        for conn in self.conns:
            conn.ws.transport.abort()
        self.server.close(close_connections=False)
        await self.server.wait_closed()
        self.server = None


class SilentableProxy:
    """A TCP proxy whose existing connections can go silent, like a dead mobile link."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_w]
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if self.silent:
                    continue  # swallowed: nothing gets through, nothing is closed
                writer.write(data)
                await writer.drain()
        writer.close()

    def go_silent(self) -> None:
        self.silent = True

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def raw_csms() -> AsyncIterator[RawCsms]:
    csms = RawCsms()
    await csms.start()
    yield csms
    await csms.stop()


LinkFactory = Callable[..., Link]


@pytest.fixture
async def make_link() -> AsyncIterator[LinkFactory]:
    """Links with tiny intervals, run in the background and closed after the test."""
    started: list[tuple[Link, asyncio.Task]] = []

    def factory(url: str, cp_id: str = "CP1", **kw: Any) -> Link:
        kw.setdefault("ping_interval", lambda: 0)
        kw.setdefault("backoff_base", 0.05)
        kw.setdefault("backoff_cap", 0.2)
        kw.setdefault("call_timeout", 2.0)
        kw.setdefault("rng", random.Random(1))
        kw.setdefault("frame_log", FrameLog())
        link = Link(url=url, charge_point_id=cp_id, clock=SystemClock(), **kw)
        started.append((link, asyncio.create_task(link.run())))
        return link

    yield factory
    for link, task in started:
        await link.close()
        async with asyncio.timeout(3):
            await task


@pytest.fixture
async def connected(raw_csms: RawCsms, make_link: LinkFactory) -> tuple[Link, RawConn]:
    link = make_link(raw_csms.url)
    conn = await raw_csms.accept()
    await link.wait_connected(2)
    return link, conn


@pytest.fixture
async def new_raw_csms() -> AsyncIterator[Callable[..., Any]]:
    """Start more raw CSMSs (another subprotocol choice, a fixed port); stopped after."""
    made: list[RawCsms] = []

    async def factory(*, subprotocols: list[str] | None = None, port: int = 0) -> RawCsms:
        csms = RawCsms(subprotocols=subprotocols)
        await csms.start(port)
        made.append(csms)
        return csms

    yield factory
    for csms in made:
        await csms.stop()


@pytest.fixture
async def proxy_to() -> AsyncIterator[Callable[[int], Any]]:
    made: list[SilentableProxy] = []

    async def factory(port: int) -> SilentableProxy:
        proxy = SilentableProxy(port)
        await proxy.start()
        made.append(proxy)
        return proxy

    yield factory
    for proxy in made:
        await proxy.stop()
