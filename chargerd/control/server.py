"""The control socket inside the daemon: chargerctl's (and scripts') way in.

The server knows no command: the daemon hands it a table of handlers, so that
each feature module can offer its own commands and the socket code stays a
transport.  A handler answers by returning a dict, and says no by raising one
of the three exceptions below; anything else it raises is a bug, reported to
the client as "internal", logged with its traceback, and the server carries on:
a technician's typo or a broken command must never take the charger down.

Wire format: see chargerd.control.protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from chargerd.control import protocol

logger = logging.getLogger(__name__)

Handler = Callable[[dict], Awaitable[dict]]
StreamHandler = Callable[[dict], AsyncIterator[dict]]

_CHUNK = 64 * 1024
# How long start() waits for an existing socket to answer before calling it stale.
_PROBE_TIMEOUT_S = 1.0


class CommandRefused(Exception):
    """The station will not do this now (charging in progress, not simulated...)."""


class CommandUsageError(Exception):
    """The request is well-formed JSON but its arguments make no sense."""


class NotFound(Exception):
    """The request names something that does not exist, e.g. an unknown connector."""


class ControlSocketInUse(RuntimeError):
    """Another live process answers on the socket path: two daemons must not share a station."""


_KIND_OF: tuple[tuple[type[Exception], str], ...] = (
    (CommandRefused, protocol.REFUSED),
    (CommandUsageError, protocol.USAGE),
    (NotFound, protocol.NOT_FOUND),
)


class _LineTooLong(Exception):
    pass


class _Lines:
    """Newline-framed reading with a hard limit per line.

    asyncio's readline() cannot skip an over-long line cleanly (it either
    drops the buffer mid-line or leaves it there), so framing is done here: an
    over-long line is discarded up to its newline and reported once, and the
    connection goes on with the next line.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buf = bytearray()
        self.eof = False

    async def fill(self) -> None:
        chunk = await self._reader.read(_CHUNK)
        if chunk:
            self._buf += chunk
        else:
            self.eof = True

    @property
    def buffered(self) -> int:
        return len(self._buf)

    async def next_line(self) -> bytes | None:
        """The next line without its newline; None at end of stream."""
        discarding = False
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                if discarding or len(line) > protocol.MAX_LINE:
                    raise _LineTooLong
                return line
            if len(self._buf) > protocol.MAX_LINE:
                discarding = True
                self._buf.clear()
            if self.eof:
                # A last line without its newline (client shut down its side).
                line = bytes(self._buf)
                self._buf.clear()
                if discarding:
                    raise _LineTooLong
                return line or None
            await self.fill()


class ControlServer:
    """Serves the control protocol on a unix socket until close()."""

    def __init__(
        self,
        path: Path,
        *,
        handlers: Mapping[str, Handler],
        streams: Mapping[str, StreamHandler],
        mode: int = 0o660,
    ) -> None:
        clash = set(handlers) & set(streams)
        if clash:
            raise ValueError(f"commands both plain and streaming: {sorted(clash)}")
        self.path = Path(path)
        self._handlers = dict(handlers)
        self._streams = dict(streams)
        self._mode = mode
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def commands(self) -> list[str]:
        return sorted([*self._handlers, *self._streams])

    async def start(self) -> None:
        """Bind and listen; replaces a stale socket, refuses to steal a live one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._clear_stale_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            # Set the mode before listen(): until then a connect() is refused,
            # so no client ever sees the socket with the umask's permissions.
            os.chmod(self.path, self._mode)
            st = os.stat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            self._server = await asyncio.start_unix_server(self._serve_client, sock=sock)
        except BaseException:
            sock.close()
            raise
        logger.info("control socket listening on %s", self.path)

    async def close(self) -> None:
        """Stop listening, drop every client, remove the socket file if still ours."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = [t for t in self._connections if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self._inode is not None:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._inode:
                    self.path.unlink()
            self._inode = None

    async def _clear_stale_socket(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{self.path} exists and is not a socket; not replacing it")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path)), _PROBE_TIMEOUT_S
            )
        except (ConnectionRefusedError, FileNotFoundError):
            logger.info("replacing stale control socket %s", self.path)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        except TimeoutError:
            raise ControlSocketInUse(
                f"{self.path} is busy (a process accepts connections there but is slow); "
                "is another chargerd running?"
            ) from None
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        raise ControlSocketInUse(f"another chargerd is already listening on {self.path}")

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # The conversation runs in a task of our own, which close() cancels:
        # Python 3.11's streams log a spurious error when the task they
        # created for this callback ends cancelled.
        task = asyncio.create_task(self._converse(reader, writer))
        self._connections.add(task)
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
        finally:
            self._connections.discard(task)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines = _Lines(reader)
        try:
            while True:
                try:
                    line = await lines.next_line()
                except _LineTooLong:
                    await _send(
                        writer,
                        protocol.error(
                            protocol.USAGE, f"request line longer than {protocol.MAX_LINE} bytes"
                        ),
                    )
                    continue
                if line is None:
                    return
                if not line.strip():
                    continue
                if not await self._answer(line, lines, writer):
                    return
        except ConnectionError:
            logger.debug("control client went away")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes, lines: _Lines, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is over."""
        try:
            cmd, args = self._parse(line)
        except CommandUsageError as exc:
            await _send(writer, protocol.error(protocol.USAGE, str(exc)))
            return True
        logger.debug("control request %s %s", cmd, args)
        if cmd in self._streams:
            return await self._stream(cmd, args, lines, writer)
        try:
            value = await self._handlers[cmd](args)
            reply = protocol.result(value if value is not None else {})
            data = protocol.encode(reply)
        except Exception as exc:  # every failure becomes an answer
            data = protocol.encode(_error_reply(cmd, exc))
        writer.write(data)
        await writer.drain()
        return True

    def _parse(self, line: bytes) -> tuple[str, dict[str, Any]]:
        try:
            message = protocol.decode(line)
        except protocol.ProtocolError as exc:
            raise CommandUsageError(str(exc)) from None
        cmd = message.get("cmd")
        if not isinstance(cmd, str):
            raise CommandUsageError('a request needs "cmd": a string')
        args = message.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise CommandUsageError('"args" must be a JSON object')
        if cmd not in self._handlers and cmd not in self._streams:
            raise CommandUsageError(
                f"unknown command {cmd!r}; known commands: {', '.join(self.commands)}"
            )
        return cmd, args

    async def _stream(
        self, cmd: str, args: dict[str, Any], lines: _Lines, writer: asyncio.StreamWriter
    ) -> bool:
        """Pump events until the client leaves (False) or the stream ends (True)."""
        pump = asyncio.create_task(self._pump(cmd, args, writer))
        watch = asyncio.create_task(_wait_for_eof(lines))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Cancelling the pump throws CancelledError into the stream handler
            # at its await, so its finally blocks release what it subscribed to.
            for task in (pump, watch):
                task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
        failure = None if pump.cancelled() else pump.exception()
        if failure is not None and not isinstance(failure, ConnectionError):
            logger.error("stream %s failed while closing", cmd, exc_info=failure)
        if pump.cancelled() or failure is not None:
            logger.debug("stream %s ended: client went away", cmd)
            return False
        return True

    async def _pump(self, cmd: str, args: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        events: AsyncIterator[dict] | None = None
        try:
            try:
                events = self._streams[cmd](args)
                async for ev in events:
                    writer.write(protocol.encode(protocol.event(ev)))
                    await writer.drain()
            except ConnectionError:
                raise
            except Exception as exc:  # a broken stream becomes an answer
                writer.write(protocol.encode(_error_reply(cmd, exc)))
            else:
                writer.write(protocol.encode(protocol.result({"ended": True})))
            await writer.drain()
        finally:
            # A handler that raised before yielding, or a plain iterator, has nothing to close.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()


async def _wait_for_eof(lines: _Lines) -> None:
    """Return when the client disconnects during a stream.

    What it sends meanwhile is kept (up to one line's worth) for after the
    stream; past that the client is not read any more and its departure shows
    as a failed write instead.
    """
    while not lines.eof:
        if lines.buffered > protocol.MAX_LINE:
            await asyncio.Event().wait()
        await lines.fill()


def _error_reply(cmd: str, exc: Exception) -> dict[str, Any]:
    for cls, kind in _KIND_OF:
        if isinstance(exc, cls):
            logger.debug("control command %s: %s: %s", cmd, kind, exc)
            return protocol.error(kind, str(exc) or kind.replace("_", " "))
    logger.exception("control command %s failed", cmd)
    return protocol.error(protocol.INTERNAL, f"{type(exc).__name__}: {exc}")


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(protocol.encode(message))
    await writer.drain()
