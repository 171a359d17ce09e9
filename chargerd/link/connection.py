"""The OCPP-J websocket to the CSMS: connect, reconnect, route, call.

It knows no feature: feature objects register their @on/@after handlers and
connect/disconnect listeners, and send their own requests with ``call()``.

Why not ocpp's ChargePoint.start(): it awaits each handler inside the receive
loop, so one slow handler (a Reset that waits for a transaction to stop)
stalls every other frame, including the CALLRESULT our own pending CALL is
waiting for; and it drops a malformed frame without the CALLERROR OCPP-J
asks for.  Here each inbound CALL runs in its own task and the receive loop
only parses and dispatches.  ocpp's routing, schema validation and error
classes are reused unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import logging
import random
import ssl
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from ocpp.exceptions import OCPPError
from ocpp.messages import Call
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from chargerd.clock import Clock, iso, sleep_or_wake
from chargerd.link import frames
from chargerd.link.backoff import reconnect_delay
from chargerd.link.errors import CallErrorReceived, CallResultInvalid, CallTimeout, NotConnected
from chargerd.link.framelog import FrameLog
from chargerd.link.replay import RecentIds
from chargerd.link.router import Router
from chargerd.link.tlsdiag import (
    connect_failure_kind,
    diagnose_handshake_failure,
    is_handshake_failure,
)

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"
Listener = Callable[[], Awaitable[None] | None]
#: ``cb(kind, reason)`` after a failed connect; kind from tlsdiag.connect_failure_kind.
FailureListener = Callable[[str, str], None]
_KEEP: Any = object()


class _Refused(Exception):
    """The server accepted the websocket but not as OCPP 1.6."""


class _Pending:
    __slots__ = ("action", "future", "unique_id")

    def __init__(self, unique_id: str, action: str, future: asyncio.Future) -> None:
        self.unique_id = unique_id
        self.action = action
        self.future = future


class Link:
    """One charge point's connection to its CSMS, kept up forever by ``run()``."""

    # A CSMS may (against the spec) send many CALLs without waiting; a few run at
    # once, a bounded number more wait, and beyond that the CSMS gets a CALLERROR.
    max_running_handlers = 8
    max_inbound_calls = 64
    # With pings off, how often to look whether WebSocketPingInterval was switched on.
    ping_recheck_s = 1.0

    def __init__(
        self,
        *,
        url: str,
        charge_point_id: str,
        clock: Clock,
        frame_log: FrameLog,
        ping_interval: Callable[[], float],
        call_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        basic_auth: tuple[str, str] | None = None,
        max_frame_bytes: int = 2 * 1024 * 1024,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        rng: random.Random | None = None,
        open_timeout: float = 10.0,
        stable_after: float = 30.0,
    ) -> None:
        # The id is a path segment: percent-encode anything a URL cannot carry as is.
        self._charge_point_id = charge_point_id
        self._url = url.rstrip("/") + "/" + quote(charge_point_id, safe="")
        self._clock = clock
        self._frame_log = frame_log
        self._ping_interval = ping_interval
        self._call_timeout = call_timeout
        self._ssl_context = ssl_context
        self._headers: dict[str, str] = {}
        self._set_basic_auth(basic_auth)
        self._max_frame_bytes = max_frame_bytes
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._rng = rng or random.Random()
        self._open_timeout = open_timeout
        self._stable_after = stable_after  # a connection older than this resets the backoff

        self._router = Router()
        self._connect_listeners: list[Listener] = []
        self._disconnect_listeners: list[Listener] = []
        self._failure_listeners: list[FailureListener] = []
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._call_lock = asyncio.Lock()
        self._pending: _Pending | None = None
        self._handler_slots = asyncio.Semaphore(self.max_running_handlers)
        self._inbound: set[asyncio.Task] = set()  # CALLs being answered
        self._background: set[asyncio.Task] = set()  # @after hooks, connect listeners
        self._blocked = False
        self._closing = False
        self._wake = asyncio.Event()  # cuts a backoff short (unblock, close)
        self._loop_task: asyncio.Task | None = None
        self._failing = False  # a connect failure was logged at ERROR; quiet until success
        self._skip_backoff = False  # unblocked: reconnect at once
        self._failures = 0  # consecutive failed attempts, for status()
        self._last_error: str | None = None
        self._connected_at: datetime | None = None
        # Called with a short reason for each malformed CSMS frame (InvalidMessages).
        self.invalid_frame_listeners: list[Callable[[str], None]] = []
        # Called with the id of a CSMS CALL repeating one of this connection's (replay.py).
        self.replay_listeners: list[Callable[[str], None]] = []
        self._recent_ids = RecentIds(self._clock.monotonic)

    # -- wiring -------------------------------------------------------------------------

    def register(self, obj: object) -> None:
        """Route the CSMS requests ``obj`` declares with @on/@after to it."""
        self._router.register(obj)

    def add_connect_listener(self, cb: Listener) -> None:
        """``cb()`` runs (in its own task) each time the websocket opens."""
        self._connect_listeners.append(cb)

    def add_disconnect_listener(self, cb: Listener) -> None:
        """``cb()`` is awaited each time the websocket closes, before any reconnect."""
        self._disconnect_listeners.append(cb)

    def add_connect_failure_listener(self, cb: FailureListener) -> None:
        """``cb(kind, reason)`` runs after each failed connect (kind: auth, tls_version...)."""
        self._failure_listeners.append(cb)

    def set_endpoint(
        self,
        *,
        url: str | None = None,
        ssl_context: ssl.SSLContext | None = _KEEP,
        basic_auth: tuple[str, str | bytes] | None = _KEEP,
    ) -> None:
        """Where and how the NEXT connection goes (security profile, key, certificates).

        The connection up now is left alone: a new AuthorizationKey or CSMS root
        takes effect when the link next connects (``reconnect()`` forces that).
        """
        if url is not None:
            self._url = url.rstrip("/") + "/" + quote(self._charge_point_id, safe="")
        if ssl_context is not _KEEP:
            self._ssl_context = ssl_context
        if basic_auth is not _KEEP:
            self._set_basic_auth(basic_auth)

    def _set_basic_auth(self, basic_auth: tuple[str, str | bytes] | None) -> None:
        self._headers.pop("Authorization", None)
        if basic_auth is not None:
            user, password = basic_auth
            secret = password if isinstance(password, bytes) else password.encode()
            token = base64.b64encode(user.encode() + b":" + secret).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def reconnect(self, why: str) -> None:
        """Close the connection up now (if any) and connect again at once, with the
        endpoint in force (a raised security profile)."""
        self._skip_backoff = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            log.info("reconnecting to the CSMS: %s", why)
            self._spawn(self._background, self._close_for_reconnect(ws))

    async def _close_for_reconnect(self, ws: ClientConnection) -> None:
        try:
            async with asyncio.timeout(2.0):
                await ws.close(1012, "reconnecting")
        except Exception:
            ws.transport.abort()

    # -- state --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def url(self) -> str:
        return self._url

    def status(self) -> dict[str, Any]:
        """For `chargerctl status`: is the link up, since when, and why not."""
        return {
            "url": self._url,
            "connected": self.connected,
            "connected_since": iso(self._connected_at) if self._connected_at else None,
            "blocked": self._blocked,
            "failed_attempts": self._failures,
            "last_error": self._last_error,
        }

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until ``close()``."""
        if self._loop_task is not None:
            raise RuntimeError("Link.run() is already running")
        self._loop_task = asyncio.current_task()
        try:
            await self._reconnect_loop()
        except asyncio.CancelledError:
            if not self._closing:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # the cancel came from close(): a normal end of run()
        finally:
            self._loop_task = None

    async def close(self) -> None:
        """Close the websocket politely and stop ``run()`` and every task of the link."""
        self._closing = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await ws.close(1001, "charge point shutting down")
        if self._loop_task is not None and self._loop_task is not asyncio.current_task():
            self._loop_task.cancel()
        tasks = self._inbound | self._background
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def set_blocked(self, blocked: bool) -> None:
        """Cut the network (the bench's `sim network down`) or restore it.

        Blocking aborts the TCP connection without a close handshake, as a cut
        cable would, and holds reconnection until unblocked; unblocking
        reconnects at once, without waiting out the backoff.
        """
        self._blocked = blocked
        self._skip_backoff = not blocked
        self._wake.set()
        if blocked and self._ws is not None:
            log.warning("network blocked: dropping the link to %s", self._url)
            self._ws.transport.abort()
        elif not blocked:
            log.info("network unblocked")

    async def _reconnect_loop(self) -> None:
        attempt = 0
        while not self._closing:
            while self._blocked and not self._closing:
                self._wake.clear()
                await self._wake.wait()
                attempt = 0
            if self._closing:
                return
            lived = await self._connect_once()
            if self._closing:
                return
            if lived is not None and lived >= self._stable_after:
                attempt = 0
            if self._blocked:
                continue
            delay = reconnect_delay(
                attempt, base=self._backoff_base, cap=self._backoff_cap, rng=self._rng
            )
            attempt += 1
            log.debug("reconnecting to %s in %.2f s", self._url, delay)
            await self._sleep_or_wake(delay)
            if self._skip_backoff:
                self._skip_backoff = False
                attempt = 0

    async def _sleep_or_wake(self, seconds: float) -> None:
        self._wake.clear()
        if self._skip_backoff or self._closing:
            return
        await sleep_or_wake(self._clock, seconds, self._wake)

    async def _connect_once(self) -> float | None:
        """One connection from handshake to close; returns how long it lived (None: never up)."""
        try:
            ws = await connect(
                self._url,
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                additional_headers=self._headers or None,
                open_timeout=self._open_timeout,
                ping_interval=None,  # our own ping loop re-reads WebSocketPingInterval
                max_size=4 * self._max_frame_bytes,
                proxy=None,
                **({"ssl": self._ssl_context} if self._ssl_context is not None else {}),
            )
        except (OSError, EOFError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            diagnosis = None
            if self._ssl_context is not None and not self._failing and is_handshake_failure(exc):
                diagnosis = await diagnose_handshake_failure(self._url, exc)
                reason = diagnosis.text
            kind = connect_failure_kind(exc, diagnosis)
            if kind == "auth":
                reason = (
                    "the CSMS refused the station's HTTP Basic credentials (HTTP 401): "
                    "the AuthorizationKey is not the one the CSMS expects"
                )
            self._connect_failed(reason)
            for cb in self._failure_listeners:
                try:
                    cb(kind, reason)
                except Exception:
                    log.exception("connect failure listener %r failed", cb)
            return None
        if ws.subprotocol != SUBPROTOCOL:
            self._connect_failed(f"server did not select {SUBPROTOCOL} (got {ws.subprotocol!r})")
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await ws.close(1002, f"{SUBPROTOCOL} required")
            return None
        if self._blocked or self._closing:
            ws.transport.abort()
            return None

        if self._failing:
            log.info("connected to %s again", self._url)
        else:
            log.info("connected to %s", self._url)
        self._failing = False
        self._failures = 0
        self._last_error = None
        self._connected_at = self._clock.now()
        started = self._clock.monotonic()
        self._ws = ws
        self._connected.set()
        for cb in self._connect_listeners:
            self._spawn(self._background, self._run_listener(cb, "connect"))
        pinger = asyncio.create_task(self._ping_loop(ws))
        try:
            await self._receive_loop(ws)
        finally:
            pinger.cancel()
            self._ws = None
            self._connected.clear()
            self._connected_at = None
            self._fail_pending(NotConnected("link to the CSMS dropped while waiting"))
            await asyncio.wait({pinger})
        log.log(
            logging.INFO if self._closing else logging.WARNING,
            "link to %s closed (code %s %s)",
            self._url,
            ws.close_code,
            ws.close_reason or "",
        )
        for cb in self._disconnect_listeners:
            await self._run_listener(cb, "disconnect")
        return self._clock.monotonic() - started

    def _connect_failed(self, reason: str) -> None:
        self._failures += 1
        self._last_error = reason
        if not self._failing:
            log.error("cannot connect to %s: %s", self._url, reason)
            self._failing = True
        else:
            log.debug("cannot connect to %s: %s", self._url, reason)

    async def _run_listener(self, cb: Listener, what: str) -> None:
        try:
            result = cb()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s listener %r failed", what, cb)

    def _spawn(self, bucket: set[asyncio.Task], coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        return task

    # -- dead link detection --------------------------------------------------------------

    async def _ping_loop(self, ws: ClientConnection) -> None:
        """Ping every WebSocketPingInterval; no pong within that long means a dead link.

        The interval is re-read on every round, so a ChangeConfiguration takes
        effect without reconnecting.
        """
        while True:
            interval = self._ping_interval() or 0.0
            if interval <= 0:
                await self._clock.sleep(self.ping_recheck_s)
                continue
            await self._clock.sleep(interval)
            try:
                waiter = await ws.ping()
                async with asyncio.timeout(interval):
                    await waiter
            except TimeoutError:
                log.warning("no pong from %s within %.1f s: dropping the link", self._url, interval)
                ws.transport.abort()
                return
            except ConnectionClosed:
                return

    # -- inbound --------------------------------------------------------------------------

    async def _receive_loop(self, ws: ClientConnection) -> None:
        self._recent_ids = RecentIds(self._clock.monotonic)  # ids are unique per connection
        while True:
            try:
                data = await ws.recv(decode=False)
            except ConnectionClosed:
                return
            raw = bytes(data) if not isinstance(data, bytes) else data
            try:
                await self._dispatch(ws, raw)
            except Exception:  # a bug here must not take the link down
                log.exception("failed to process an inbound frame")

    async def _dispatch(self, ws: ClientConnection, raw: bytes) -> None:
        """Parse and route one frame; only quick work here, so the loop never stalls."""
        if len(raw) > self._max_frame_bytes:
            head = raw[:512].decode("utf-8", errors="replace")
            self._frame_log.record("in", f"{head}... ({len(raw)} bytes, refused)")
            log.warning("refusing a %d-byte frame (limit %d)", len(raw), self._max_frame_bytes)
            await self._reply(ws, frames.refuse_unreadable(head, "frame too large"))
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            self._frame_log.record("in", text)
            await self._reply(ws, frames.refuse_unreadable(text, "frame is not valid UTF-8"))
            return
        self._frame_log.record("in", text)

        msg = frames.parse_frame(text)
        if isinstance(msg, frames.InboundCall):
            if len(self._inbound) >= self.max_inbound_calls:
                log.error("too many CSMS requests in flight; refusing %s", msg.unique_id)
                await self._send_quietly(
                    ws,
                    frames.callerror_json(
                        msg.unique_id, "InternalError", "too many requests in flight", {}
                    ),
                )
                return
            if self._recent_ids.repeated(msg.unique_id):  # still answered: see replay.py
                log.warning("CSMS CALL %s repeats a message id", msg.unique_id)
                self._notify(self.replay_listeners, msg.unique_id)
            self._spawn(self._inbound, self._answer(ws, msg))
        elif isinstance(msg, frames.InboundResult | frames.InboundError):
            self._match_response(msg)
        elif isinstance(msg, frames.ReplyError):
            await self._reply(ws, msg)
        else:
            log.warning("ignoring frame (%s): %.200s", msg.reason, text)

    async def _reply(self, ws: ClientConnection, msg: frames.ReplyError | frames.Ignore) -> None:
        if isinstance(msg, frames.Ignore):
            log.warning("ignoring frame: %s", msg.reason)
            return
        log.warning("answering a malformed frame with %s: %s", msg.code, msg.description)
        self._notify(self.invalid_frame_listeners, f"{msg.code}: {msg.description}")
        await self._send_quietly(ws, msg.to_json())

    @staticmethod
    def _notify(listeners: list[Callable[[str], None]], what: str) -> None:
        for listener in list(listeners):  # security events InvalidMessages, replays
            try:
                listener(what)
            except Exception:
                log.exception("a security listener failed")

    async def _answer(self, ws: ClientConnection, call: frames.InboundCall) -> None:
        try:
            async with self._handler_slots:
                answer = await self._router.answer(call)
        except Exception:
            log.exception("answering %s %s failed", call.action, call.unique_id)
            err = frames.callerror_json(call.unique_id, "InternalError", "internal error", {})
            await self._send_quietly(ws, err)
            return
        # Answered on the connection that asked: after a reconnect the CSMS
        # would not know this unique id anyway.
        if not await self._send_quietly(ws, answer.frame):
            return
        if answer.after is not None:
            self._spawn(self._background, self._run_after(call, answer.after))

    async def _run_after(self, call: frames.InboundCall, after: Callable[[], Any]) -> None:
        try:
            result = after()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("@after handler for %s %s failed", call.action, call.unique_id)

    def _match_response(self, msg: frames.InboundResult | frames.InboundError) -> None:
        pending = self._pending
        if pending is None or pending.unique_id != msg.unique_id or pending.future.done():
            log.warning("dropping a response to no pending CALL (unique id %s)", msg.unique_id)
            return
        pending.future.set_result(msg)

    def _fail_pending(self, exc: Exception) -> None:
        pending = self._pending
        if pending is not None and not pending.future.done():
            pending.future.set_exception(exc)

    async def _send_quietly(self, ws: ClientConnection, text: str) -> bool:
        try:
            self._frame_log.record("out", text)
            await ws.send(text)
        except ConnectionClosed:
            log.info("could not send (link closed): %.200s", text)
            return False
        return True

    # -- outbound -------------------------------------------------------------------------

    async def call(
        self,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send a CALL (camelCase payload) and return its CALLRESULT payload.

        One CALL is outstanding at a time, as OCPP-J requires; requests from
        the CSMS are still answered meanwhile.  Raises NotConnected,
        CallTimeout, CallErrorReceived or CallResultInvalid; ValueError when
        the payload itself violates the schema (our bug: never sent).
        """
        if self._ws is None:
            raise NotConnected(f"not connected to {self._url}")
        try:
            await frames.check_outgoing_call(action, payload)
        except OCPPError as exc:
            raise ValueError(f"refusing to send an invalid {action}: {exc}") from exc
        limit = self._call_timeout if timeout is None else timeout
        unique_id = str(uuid.uuid4())
        text = Call(unique_id, action, payload).to_json()
        async with self._call_lock:
            ws = self._ws
            if ws is None:
                raise NotConnected(f"not connected to {self._url}")
            pending = _Pending(unique_id, action, asyncio.get_running_loop().create_future())
            self._pending = pending
            try:
                if not await self._send_quietly(ws, text):
                    raise NotConnected(f"link to {self._url} closed while sending {action}")
                try:
                    async with asyncio.timeout(limit):
                        response = await pending.future
                except TimeoutError:
                    raise CallTimeout(f"no answer to {action} within {limit} s") from None
            finally:
                self._pending = None
        if isinstance(response, frames.InboundError):
            raise CallErrorReceived(response.code, response.description, response.details)
        try:
            await frames.check_result(action, unique_id, response.payload)
        except OCPPError as exc:
            cause = str(exc.details.get("cause", exc.description))
            log.error("invalid %s CALLRESULT from the CSMS: %s", action, response.payload)
            raise CallResultInvalid(action, exc.code, cause, response.payload) from exc
        return response.payload
