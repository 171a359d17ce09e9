"""A real ControlServer on a real unix socket, for the server and the CLI tests."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chargerd.control.server import ControlServer, Handler, StreamHandler


@pytest.fixture
def sock_path() -> Iterator[Path]:
    # pytest's tmp_path can exceed the ~107 bytes a unix socket path may have.
    d = tempfile.mkdtemp(prefix="cctl-", dir="/tmp")
    try:
        yield Path(d) / "control.sock"
    finally:
        shutil.rmtree(d, ignore_errors=True)


class ServerThread:
    """A ControlServer running on its own event loop in a thread.

    The CLI under test is blocking code, so the server must run elsewhere
    while main() runs in the test's thread (or in a subprocess).
    """

    def __init__(
        self,
        path: Path,
        handlers: dict[str, Handler],
        streams: dict[str, StreamHandler] | None = None,
    ) -> None:
        self.path = path
        self.server = ControlServer(path, handlers=handlers, streams=streams or {})
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.background: set[asyncio.Task[Any]] = set()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()

    def start(self) -> ServerThread:
        self._thread.start()
        self._started.wait(5)
        if self._error is not None:
            raise self._error
        return self

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)

    def close_soon(self) -> None:
        """From inside a handler: take the whole server down, as a dying daemon would."""
        task = self.loop.create_task(self.server.close())
        self.background.add(task)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.run(self.server.close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        self.loop.close()


@pytest.fixture
def serve(sock_path: Path) -> Iterator[Any]:
    """serve(handlers, streams) -> a started ServerThread, stopped after the test."""
    started: list[ServerThread] = []

    def _serve(
        handlers: dict[str, Handler], streams: dict[str, StreamHandler] | None = None
    ) -> ServerThread:
        st = ServerThread(sock_path, handlers, streams)
        started.append(st)
        return st.start()

    yield _serve
    for st in started:
        st.stop()
