"""Security events (OCPP Security Whitepaper Ed. 3): SecurityEventNotification and the security log.

Every module that notices something security-relevant calls
``SecurityEvents.emit(kind, tech_info)``.  ``emit`` is synchronous, cheap and
never raises: a security event must never be the reason a charging session,
a TLS handshake or a firmware install fails.  What happens to it:

- it is appended to the security log on disk (bounded, rotated; a full disk
  loses the line, never the process);
- a *critical* event (the whitepaper's table) is queued in the durable,
  ordered outbox, in its own SQLite transaction, so that it reaches the CSMS
  after any outage or reboot, in order;
- any other event is sent live and dropped when offline, as the whitepaper
  allows.

Wiring: the daemon builds one instance early (before the link, so that the
link and the TLS code can emit), then ``bind()``s the outbox and the live
sender once they exist.  Events emitted before ``bind()`` wait in memory and
go out at bind time.  Call ``emit`` from the event loop's thread only (a
worker thread hands the call over with ``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from chargerd.clock import Clock, iso
from chargerd.features.security_log import SecurityLog

log = logging.getLogger(__name__)

# -- event types (the whitepaper's names, sent as-is in "type") -------------------------
FIRMWARE_UPDATED = "FirmwareUpdated"
FAILED_TO_AUTHENTICATE_AT_CSMS = "FailedToAuthenticateAtCsms"
CSMS_FAILED_TO_AUTHENTICATE = "CentralSystemFailedToAuthenticate"
SETTING_SYSTEM_TIME = "SettingSystemTime"
STARTUP_OF_THE_DEVICE = "StartupOfTheDevice"
RESET_OR_REBOOT = "ResetOrReboot"
SECURITY_LOG_WAS_CLEARED = "SecurityLogWasCleared"
RECONFIGURATION_OF_SECURITY_PARAMETERS = "ReconfigurationOfSecurityParameters"
MEMORY_EXHAUSTION = "MemoryExhaustion"
INVALID_MESSAGES = "InvalidMessages"
ATTEMPTED_REPLAY_ATTACKS = "AttemptedReplayAttacks"
TAMPER_DETECTION_ACTIVATED = "TamperDetectionActivated"
INVALID_FIRMWARE_SIGNATURE = "InvalidFirmwareSignature"
INVALID_FIRMWARE_SIGNING_CERTIFICATE = "InvalidFirmwareSigningCertificate"
INVALID_CENTRAL_SYSTEM_CERTIFICATE = "InvalidCentralSystemCertificate"
INVALID_CHARGE_POINT_CERTIFICATE = "InvalidChargePointCertificate"
INVALID_TLS_VERSION = "InvalidTLSVersion"
INVALID_TLS_CIPHER_SUITE = "InvalidTLSCipherSuite"

#: The whitepaper's critical events: kept in the durable outbox until delivered.
CRITICAL: frozenset[str] = frozenset(
    {
        FIRMWARE_UPDATED,
        SETTING_SYSTEM_TIME,
        STARTUP_OF_THE_DEVICE,
        RESET_OR_REBOOT,
        SECURITY_LOG_WAS_CLEARED,
        MEMORY_EXHAUSTION,
        TAMPER_DETECTION_ACTIVATED,
    }
)

#: Every known type; ``emit`` accepts others too (logged, sent as non-critical).
KNOWN: frozenset[str] = CRITICAL | {
    FAILED_TO_AUTHENTICATE_AT_CSMS,
    CSMS_FAILED_TO_AUTHENTICATE,
    RECONFIGURATION_OF_SECURITY_PARAMETERS,
    INVALID_MESSAGES,
    ATTEMPTED_REPLAY_ATTACKS,
    INVALID_FIRMWARE_SIGNATURE,
    INVALID_FIRMWARE_SIGNING_CERTIFICATE,
    INVALID_CENTRAL_SYSTEM_CERTIFICATE,
    INVALID_CHARGE_POINT_CERTIFICATE,
    INVALID_TLS_VERSION,
    INVALID_TLS_CIPHER_SUITE,
}

ACTION = "SecurityEventNotification"
#: techInfo is a CiString255Type in the whitepaper's schema.
TECH_INFO_MAX = 255


def is_critical(kind: str) -> bool:
    return kind in CRITICAL


def notification_payload(kind: str, timestamp: datetime, tech_info: str | None) -> dict:
    """The SecurityEventNotification.req payload; techInfo cut to the schema's 255 chars."""
    payload: dict = {"type": kind, "timestamp": iso(timestamp)}
    if tech_info:
        payload["techInfo"] = str(tech_info)[:TECH_INFO_MAX]
    return payload


class SecurityEvents:
    """The one entry point for security events; see the module docstring."""

    #: Events kept in memory before ``bind()`` (or while the store refuses writes).
    MAX_PENDING = 200
    #: ``emit_soon`` of one type at most once per this many seconds.
    QUIET_S = 600.0
    #: How often ``run`` retries the events the store refused.
    RETRY_S = 30.0

    def __init__(self, *, clock: Clock, security_log: SecurityLog | None = None) -> None:
        self._clock = clock
        self.log = security_log
        self._store = None
        self._outbox = None
        self._send_live: Callable[[str, dict], None] | None = None
        self._pending: list[dict] = []  # critical payloads not yet in the outbox
        self.emitted = 0  # for status and tests
        self.listeners: list[Callable[[str, str | None], None]] = []
        self._soon_last: dict[str, float] = {}

    def bind(self, *, store, outbox, send_live: Callable[[str, dict], None]) -> None:
        """Attach the durable outbox and the live sender; flush what waited."""
        self._store = store
        self._outbox = outbox
        self._send_live = send_live
        pending, self._pending = self._pending, []
        for payload in pending:
            self._deliver(payload, critical=True)

    def emit(self, kind: str, tech_info: str | None = None) -> None:
        """Record and notify a security event.  Non-blocking; never raises."""
        try:
            self._emit(kind, tech_info)
        except Exception:  # a security event must never break its caller
            log.exception("security event %s could not be recorded", kind)

    def emit_soon(self, kind: str, tech_info: str | None = None) -> None:
        """``emit`` from the next loop turn: for callers inside a store transaction that is
        failing (a full disk), where writing the outbox now would nest in the broken one.
        The same type is emitted at most once per ``QUIET_S`` this way (a full disk fails
        every write; the CSMS needs to hear it once, not a thousand times)."""
        now = self._clock.monotonic()
        last = self._soon_last.get(kind)
        if last is not None and now - last < self.QUIET_S:
            return
        self._soon_last[kind] = now
        try:
            asyncio.get_running_loop().call_soon(self.emit, kind, tech_info)
        except RuntimeError:  # no loop (a tool, a test): at once
            self.emit(kind, tech_info)

    async def run(self) -> None:
        """Every ``RETRY_S``, queue durably the critical events the store refused."""
        while True:
            await asyncio.sleep(self.RETRY_S)
            self.retry_pending()

    def _emit(self, kind: str, tech_info: str | None) -> None:
        now = self._clock.now()
        self.emitted += 1
        if kind not in KNOWN:
            log.warning("unknown security event type %r, sent as non-critical", kind)
        log.warning("security event %s%s", kind, f": {tech_info}" if tech_info else "")
        if self.log is not None:
            self.log.append(now, kind, tech_info)
        payload = notification_payload(kind, now, tech_info)
        self._deliver(payload, critical=is_critical(kind))
        for listener in list(self.listeners):
            try:
                listener(kind, tech_info)
            except Exception:
                log.exception("security event listener failed")

    def _deliver(self, payload: dict, *, critical: bool) -> None:
        if critical:
            if self._outbox is None or self._store is None:
                self._keep(payload)
                return
            try:
                with self._store.transaction():
                    self._outbox.enqueue(ACTION, payload)
                return
            except Exception as exc:
                # The store refuses (a full disk): keep it in memory and also try live,
                # so that an online CSMS still hears about it.
                log.error("critical security event %s not queued durably: %s", payload["type"], exc)
                self._keep(payload)
        if self._send_live is not None:
            self._send_live(ACTION, payload)

    def _keep(self, payload: dict) -> None:
        if len(self._pending) >= self.MAX_PENDING:
            self._pending.pop(0)
        self._pending.append(payload)

    def retry_pending(self) -> None:
        """Try again to queue the critical events the store refused earlier."""
        if self._outbox is None or self._store is None or not self._pending:
            return
        pending, self._pending = self._pending, []
        for i, payload in enumerate(pending):
            try:
                with self._store.transaction():
                    self._outbox.enqueue(ACTION, payload)
            except Exception:
                self._pending = pending[i:] + self._pending
                return
