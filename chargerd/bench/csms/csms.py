"""A small CSMS for the bench, end-to-end tests, benchmarks and chaos runs.

Built on the same ocpp package as the station (an ocpp.v16.ChargePoint per
connection, served by websockets), so the station is judged by an
independent OCPP implementation rather than by its own code.  Its answers
are knobs that a test turns at run time (boot status, cards, a CSMS that
hangs, answers slowly or with CALLERRORs), and it records everything it
receives so a test asserts what a CSMS operator would see.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import ssl
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from ocpp.messages import Call, CallError
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from chargerd.clock import Clock, SystemClock, iso

log = logging.getLogger(__name__)


def _cp_id_of(path: str) -> str:
    """The charge point id: the last segment of the websocket URL's path."""
    return unquote(path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])


def _basic_credentials(header: str | None) -> tuple[str | None, bytes | None]:
    """(user, password bytes) of an ``Authorization: Basic ...`` header; (None, None) otherwise.

    The password stays bytes: an AuthorizationKey in the whitepaper's hexadecimal
    form stands for 16-20 arbitrary bytes, not text."""
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
        user_raw, sep, password = decoded.partition(b":")
        user = user_raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return (user, password) if sep else (None, None)


CardEntry = str | tuple[str, str | None] | dict[str, Any]
"""A card's answer: a status, (status, parentIdTag), or a full camelCase IdTagInfo."""


@dataclass(frozen=True, slots=True)
class Record:
    """One CALL the CSMS received from a station."""

    cp_id: str
    action: str
    payload: dict[str, Any]
    time: datetime
    unique_id: str


@dataclass(frozen=True, slots=True)
class FrameRecord:
    cp_id: str
    direction: str  # "in": station -> CSMS, "out": CSMS -> station
    frame: str
    time: datetime


class CsmsCallError(Exception):
    """The station answered the CSMS's CALL with a CALLERROR."""

    def __init__(self, code: str, description: str, details: dict[str, Any]) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details


class _Session(ChargePoint):
    """One station's connection, answered with ocpp's own routing."""

    def __init__(self, cp_id: str, ws: ServerConnection, csms: BenchCsms) -> None:
        super().__init__(cp_id, ws, response_timeout=30)
        self.ws = ws
        self._csms = csms
        self.responses: dict[str, deque[list]] = {}  # unique id -> CALLRESULT/CALLERROR frames
        self.response_arrived = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Like ocpp's loop, but each CALL is answered in its own task (so delay_s works)."""
        try:
            async for raw in self.ws:
                text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
                self._csms._frame(self.id, "in", text)
                self._route(text)
        finally:
            for task in self._tasks:
                task.cancel()

    def _route(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            log.warning("%s sent a frame that is not JSON: %.200s", self.id, text)
            return
        if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str):
            log.warning("%s sent a malformed frame: %.200s", self.id, text)
            return
        if msg[0] == 2 and len(msg) == 4 and isinstance(msg[3], dict):
            self._csms._record(Record(self.id, str(msg[2]), msg[3], self._csms.now(), msg[1]))
            task = asyncio.create_task(self._answer(text, msg[1], str(msg[2])))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif msg[0] in (3, 4):
            queue = self.responses.setdefault(msg[1], deque(maxlen=16))
            queue.append(msg)
            while len(self.responses) > 1000:  # unclaimed answers do not pile up forever
                self.responses.pop(next(iter(self.responses)))
            self.response_arrived.set()
        else:
            log.warning("%s sent message type %r", self.id, msg[0])

    async def _answer(self, text: str, unique_id: str, action: str) -> None:
        csms = self._csms
        if csms.hang:
            return
        if csms.delay_s > 0:
            await asyncio.sleep(csms.delay_s)
        if action in csms.callerror_actions:
            err = CallError(unique_id, "InternalError", "bench CSMS told to fail", {})
            await self._send(err.to_json())
            return
        await self.route_message(text)

    async def _send(self, message: str) -> None:
        self._csms._frame(self.id, "out", message)
        if message.startswith("[3"):
            with contextlib.suppress(ValueError, IndexError, TypeError):
                frame = json.loads(message)
                self._csms._answered(str(frame[1]), frame[2])
        await self.ws.send(message)

    async def take_response(self, unique_id: str, timeout: float) -> list:
        async with asyncio.timeout(timeout):
            while True:
                queue = self.responses.get(unique_id)
                if queue:
                    frame = queue.popleft()
                    if not queue:
                        del self.responses[unique_id]
                    return frame
                self.response_arrived.clear()
                await self.response_arrived.wait()

    # -- station -> CSMS requests -----------------------------------------------------------

    @on(Action.boot_notification)
    def on_boot_notification(self, **_: Any) -> call_result.BootNotification:
        return call_result.BootNotification(
            current_time=iso(self._csms.now()),
            interval=self._csms.heartbeat_interval,
            status=self._csms.boot_status,
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=iso(self._csms.now()))

    @on(Action.authorize)
    def on_authorize(self, id_tag: str, **_: Any) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info=self._csms.id_tag_info(id_tag))

    @on(Action.start_transaction)
    def on_start_transaction(self, id_tag: str, **_: Any) -> call_result.StartTransaction:
        info = self._csms.id_tag_info(id_tag)
        if self._csms.start_transaction_status is not None:
            info["status"] = self._csms.start_transaction_status
        tx_id = self._csms.next_transaction_id
        self._csms.next_transaction_id += 1
        return call_result.StartTransaction(transaction_id=tx_id, id_tag_info=info)

    @on(Action.stop_transaction)
    def on_stop_transaction(
        self, id_tag: str | None = None, **_: Any
    ) -> call_result.StopTransaction:
        info = self._csms.id_tag_info(id_tag) if id_tag else None
        return call_result.StopTransaction(id_tag_info=info)

    @on(Action.meter_values)
    def on_meter_values(self, **_: Any) -> call_result.MeterValues:
        return call_result.MeterValues()

    @on(Action.status_notification)
    def on_status_notification(self, **_: Any) -> call_result.StatusNotification:
        return call_result.StatusNotification()

    @on(Action.data_transfer)
    def on_data_transfer(self, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status=self._csms.data_transfer_status)

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status(self, **_: Any) -> call_result.DiagnosticsStatusNotification:
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status(self, **_: Any) -> call_result.FirmwareStatusNotification:
        return call_result.FirmwareStatusNotification()

    # Security whitepaper messages, answered plainly so that e2e runs can send them.

    @on(Action.security_event_notification)
    def on_security_event(self, **_: Any) -> call_result.SecurityEventNotification:
        return call_result.SecurityEventNotification()

    @on(Action.signed_firmware_status_notification)
    def on_signed_firmware_status(self, **_: Any) -> call_result.SignedFirmwareStatusNotification:
        return call_result.SignedFirmwareStatusNotification()

    @on(Action.log_status_notification)
    def on_log_status(self, **_: Any) -> call_result.LogStatusNotification:
        return call_result.LogStatusNotification()

    @on(Action.sign_certificate)
    def on_sign_certificate(self, **_: Any) -> call_result.SignCertificate:
        return call_result.SignCertificate(status="Accepted")

    @after(Action.sign_certificate)
    def after_sign_certificate(self, csr: str, **_: Any) -> None:
        """With a ``csr_signer``, sign the CSR and send CertificateSigned, as a CSMS does."""
        if self._csms.csr_signer is not None:
            task = asyncio.create_task(self._csms.send_signed(self.id, csr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


class BenchCsms:
    """A CSMS whose answers a test or a bench operator steers at run time."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        on_frame: Callable[[FrameRecord], None] | None = None,
        max_frames: int = 100_000,
    ) -> None:
        self._clock = clock or SystemClock()
        self._on_frame = on_frame
        self.boot_status: str = "Accepted"
        self.heartbeat_interval: int = 60
        self.cards: dict[str, CardEntry] = {}
        self.accept_all_cards: bool = False
        self.start_transaction_status: str | None = None
        self.data_transfer_status: str = "Accepted"
        self.hang: bool = False
        self.delay_s: float = 0.0
        self.callerror_actions: set[str] = set()
        self.next_transaction_id: int = 1

        self.received: list[Record] = []
        #: The CSMS's CALLRESULT payload per received unique id (a transactionId given...).
        self.answers: dict[str, Any] = {}
        self.frames: deque[FrameRecord] = deque(maxlen=max_frames)
        self._changed = asyncio.Event()
        self._sessions: dict[str, list[_Session]] = {}
        self._connection_counts: dict[str, int] = {}
        self._server: Server | None = None
        self._tls = False
        #: HTTP Basic credentials (charge point id -> password); empty: no check.
        self.basic_auth: dict[str, str | bytes] = {}
        self.auth_failures: list[str] = []  # charge point ids refused by the Basic check
        #: Signs a station's CSR (PEM in, PEM chain out; certs.sign_csr with a TestCa): set,
        #: the CSMS answers each SignCertificate with a CertificateSigned.
        self.csr_signer: Callable[[str], str] | None = None
        self.certificates_signed: list[tuple[str, str, str]] = []  # (cp id, chain, status)

    def now(self) -> datetime:
        return self._clock.now()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        basic_auth: dict[str, str | bytes] | None = None,
    ) -> int:
        """Listen; returns the port (useful with port 0).

        ``ssl_context`` serves wss:// (security profiles 2 and 3); ``basic_auth``
        (charge point id -> password) makes a station without those credentials
        get HTTP 401 before the websocket opens (profiles 1 and 2).
        """
        if basic_auth is not None:
            self.basic_auth = dict(basic_auth)
        self._tls = ssl_context is not None
        self._server = await serve(
            self._serve_station,
            host,
            port,
            subprotocols=["ocpp1.6"],
            ping_interval=None,
            process_request=self._check_basic_auth,
            **({"ssl": ssl_context} if ssl_context is not None else {}),
        )
        return self._server.sockets[0].getsockname()[1]

    def _check_basic_auth(self, conn: ServerConnection, request: Request) -> Response | None:
        """OCPP security profiles 1-2: user = the charge point id of the URL, its password."""
        if not self.basic_auth:
            return None
        cp_id = _cp_id_of(request.path)
        expected = self.basic_auth.get(cp_id)
        user, password = _basic_credentials(request.headers.get("Authorization"))
        ok = (
            expected is not None
            and user == cp_id
            and password is not None
            and hmac.compare_digest(
                expected if isinstance(expected, bytes) else expected.encode(), password
            )
        )
        if ok:
            return None
        self.auth_failures.append(cp_id)
        self._notify()
        log.warning("%s refused: HTTP Basic credentials missing or wrong", cp_id)
        response = conn.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        response.headers["WWW-Authenticate"] = 'Basic realm="ocpp", charset="UTF-8"'
        return response

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> BenchCsms:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("BenchCsms is not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """The CSMS URL a station is configured with (its id is appended by the station)."""
        scheme = "wss" if self._tls else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/ocpp"

    def stations(self) -> list[str]:
        """The charge point ids connected now."""
        return sorted(cp for cp, sessions in self._sessions.items() if sessions)

    async def _serve_station(self, ws: ServerConnection) -> None:
        cp_id = _cp_id_of(ws.request.path) if ws.request else "?"
        session = _Session(cp_id, ws, self)
        self._sessions.setdefault(cp_id, []).append(session)
        self._connection_counts[cp_id] = self._connection_counts.get(cp_id, 0) + 1
        self._notify()
        log.info("%s connected", cp_id)
        try:
            await session.start()
        except ConnectionClosed:
            pass
        finally:
            self._sessions[cp_id].remove(session)
            self._notify()
            log.info("%s disconnected (code %s)", cp_id, ws.close_code)

    # -- what a test looks at --------------------------------------------------------------------

    def connections(self, cp_id: str) -> int:
        """How many websocket connections this station has opened so far."""
        return self._connection_counts.get(cp_id, 0)

    def is_connected(self, cp_id: str) -> bool:
        return bool(self._sessions.get(cp_id))

    async def wait_connected(self, cp_id: str, timeout: float = 10, count: int = 1) -> None:
        """Until the station is connected and has opened at least ``count`` connections."""
        async with asyncio.timeout(timeout):
            while not (self.is_connected(cp_id) and self.connections(cp_id) >= count):
                await self._changed_wait()

    def calls(self, action: str, cp_id: str | None = None, **match: Any) -> list[Record]:
        """The received ``action`` CALLs (of ``cp_id``) whose payload has every ``match`` value."""
        return [
            r
            for r in self.received
            if r.action == action
            and (cp_id is None or r.cp_id == cp_id)
            and all(r.payload.get(k) == v for k, v in match.items())
        ]

    async def wait_for(
        self,
        action: str,
        predicate: Callable[[Record], bool] | None = None,
        timeout: float = 10,
        count: int = 1,
    ) -> list[Record]:
        """Every received ``action`` CALL matching ``predicate``, once there are ``count``."""

        def matching() -> list[Record]:
            return [
                r
                for r in self.received
                if r.action == action and (predicate is None or predicate(r))
            ]

        try:
            async with asyncio.timeout(timeout):
                while len(found := matching()) < count:
                    await self._changed_wait()
        except TimeoutError:
            seen = [r.action for r in self.received[-20:]]
            raise TimeoutError(
                f"{count} x {action} not received within {timeout} s; last received: {seen}"
            ) from None
        return found

    async def _changed_wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()

    def _record(self, record: Record) -> None:
        self.received.append(record)
        self._notify()

    def _answered(self, unique_id: str, payload: Any) -> None:
        self.answers[unique_id] = payload
        while len(self.answers) > 10_000:
            self.answers.pop(next(iter(self.answers)))

    def _frame(self, cp_id: str, direction: str, frame: str) -> None:
        rec = FrameRecord(cp_id, direction, frame, self.now())
        self.frames.append(rec)
        if self._on_frame is not None:
            self._on_frame(rec)

    def id_tag_info(self, id_tag: str) -> dict[str, Any]:
        """The IdTagInfo (camelCase) this CSMS answers for a card."""
        entry = self.cards.get(id_tag)
        if entry is None:
            return {"status": "Accepted" if self.accept_all_cards else "Invalid"}
        if isinstance(entry, str):
            return {"status": entry}
        if isinstance(entry, tuple):
            status, parent = entry
            return {"status": status, **({"parentIdTag": parent} if parent else {})}
        return dict(entry)

    # -- CSMS -> station ---------------------------------------------------------------------

    def _session(self, cp_id: str) -> _Session:
        sessions = self._sessions.get(cp_id)
        if not sessions:
            raise ConnectionError(f"{cp_id} is not connected")
        return sessions[-1]

    async def call(
        self,
        cp_id: str,
        action: str,
        payload: dict[str, Any],
        timeout: float = 10,
    ) -> dict[str, Any]:
        """Send a CALL (camelCase payload, not validated: a test may send nonsense on purpose)."""
        session = self._session(cp_id)
        unique_id = str(uuid.uuid4())
        await session._send(Call(unique_id, action, payload).to_json())
        frame = await session.take_response(unique_id, timeout)
        if frame[0] == 4:
            details = frame[4] if len(frame) > 4 and isinstance(frame[4], dict) else {}
            raise CsmsCallError(str(frame[2]), str(frame[3]) if len(frame) > 3 else "", details)
        return frame[2]

    async def send_signed(self, cp_id: str, csr: str) -> None:
        """Sign ``csr`` with ``csr_signer`` and send it back in a CertificateSigned."""
        try:
            chain = self.csr_signer(csr) if self.csr_signer else None
            if chain is None:
                return
            answer = await self.call(cp_id, "CertificateSigned", {"certificateChain": chain})
        except (ValueError, TimeoutError, ConnectionError, CsmsCallError) as exc:
            log.warning("CertificateSigned to %s failed: %s", cp_id, exc)
            return
        self.certificates_signed.append((cp_id, chain, str(answer.get("status"))))
        self._notify()

    async def send_raw(self, cp_id: str, text: str) -> None:
        await self._session(cp_id)._send(text)

    async def recv_raw_response(self, cp_id: str, unique_id: str, timeout: float = 5) -> list:
        """The station's next CALLRESULT/CALLERROR frame for ``unique_id`` (even "-1")."""
        return await self._session(cp_id).take_response(unique_id, timeout)

    async def drop(self, cp_id: str) -> None:
        """Cut the station's TCP connection without a close handshake."""
        for session in list(self._sessions.get(cp_id, [])):
            session.ws.transport.abort()
