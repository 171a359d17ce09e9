"""The durable, ordered outbox of transaction messages.

StartTransaction, StopTransaction and the MeterValues of a transaction are
written here in the same SQLite transaction as the state change they report,
before the contactor moves or anything is sent.  One sender task delivers them
strictly in order, and deletes a message only in the same SQLite transaction
that applies its CALLRESULT: after a crash, a message is either still queued
or its result is applied, never both, never neither.

A transaction started offline has no transactionId yet.  Its later messages
carry the local id and get the CSMS's id filled in at send time; since the
queue is ordered, the StartTransaction result has always been applied by then.

Forgetting a delivered message costs an fsync, which would tie a replay
after a long outage to the disk's fsync latency (milliseconds each on a
Pi's SD card), one message at a time.  The delete of a delivered MeterValues
therefore skips the fsync, except every ``max_unsynced_deliveries``-th: after
a power cut (a crash of the process alone loses nothing) at most that many
delivered MeterValues are sent again, never lost, never out of order.  The
deliveries of StartTransaction and StopTransaction, whose results change the
station's state, stay durable one by one.

Retries follow TransactionMessageAttempts / TransactionMessageRetryInterval:
a CALLERROR (or a CALLRESULT that fails validation) counts as an attempt and
the next try waits interval x attempts.  A missing answer or a lost link does
not count: the message waits for the link, since "nothing is ever lost".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chargerd.clock import Clock, iso
from chargerd.store import Store

log = logging.getLogger(__name__)

ResultHandler = Callable[["OutboxMessage", dict], None]
"""Applies a CALLRESULT to the station's state; runs inside the delete transaction."""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    action: str
    payload: dict
    tx_local_id: int | None
    attempts: int


class Outbox:
    #: Wait after the store failed to record a delivery, before sending again.
    STORE_RETRY_S = 5.0
    #: Delivered MeterValues forgotten without an fsync before one is forced; the most
    #: a power cut can make the station send twice.
    max_unsynced_deliveries = 50

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        attempts: Callable[[], int],
        retry_interval: Callable[[], int],
    ) -> None:
        self._store = store
        self._clock = clock
        self._attempts = attempts
        self._retry_interval = retry_interval
        self._handlers: dict[str, ResultHandler] = {}
        self._wake = asyncio.Event()
        self.delivered = 0  # for the bench and status
        self.dropped = 0
        self._unsynced = 0  # deliveries forgotten since the last durable commit

    # -- writing (inside the caller's store transaction) -------------------------

    def enqueue(self, action: str, payload: dict, *, tx_local_id: int | None = None) -> int:
        """Queue a message.  Call inside ``store.transaction()`` with the state change."""
        cur = self._store.execute(
            "INSERT INTO outbox(action, payload, tx_local_id, created_at) VALUES (?, ?, ?, ?)",
            (
                action,
                json.dumps(payload, separators=(",", ":")),
                tx_local_id,
                iso(self._clock.now()),
            ),
        )
        self._wake.set()
        return int(cur.lastrowid)

    def on_result(self, action: str, handler: ResultHandler) -> None:
        self._handlers[action] = handler

    def pending(self) -> int:
        row = self._store.query_one("SELECT COUNT(*) AS n FROM outbox")
        return int(row["n"]) if row else 0

    def pending_for(self, tx_local_id: int) -> int:
        row = self._store.query_one(
            "SELECT COUNT(*) AS n FROM outbox WHERE tx_local_id = ?", (tx_local_id,)
        )
        return int(row["n"]) if row else 0

    def head(self) -> OutboxMessage | None:
        row = self._store.query_one(
            "SELECT seq, action, payload, tx_local_id, attempts, not_before FROM outbox "
            "ORDER BY seq LIMIT 1"
        )
        if row is None:
            return None
        return OutboxMessage(
            row["seq"],
            row["action"],
            json.loads(row["payload"]),
            row["tx_local_id"],
            row["attempts"],
        )

    # -- sending -----------------------------------------------------------------

    def _transaction_id(self, tx_local_id: int) -> int | None:
        row = self._store.query_one(
            "SELECT transaction_id FROM transactions WHERE local_id = ?", (tx_local_id,)
        )
        return None if row is None else row["transaction_id"]

    def _not_before(self, seq: int) -> float:
        row = self._store.query_one("SELECT not_before FROM outbox WHERE seq = ?", (seq,))
        return float(row["not_before"]) if row else 0.0

    async def run(
        self,
        call: Callable[[str, dict], Awaitable[dict]],
        ready: Callable[[], Awaitable[None]],
        *,
        errors: tuple[type[BaseException], ...],
        offline_errors: tuple[type[BaseException], ...],
    ) -> None:
        """Deliver forever.  ``ready()`` returns once the link is up and the boot accepted.

        ``errors``: exceptions that count as a failed attempt (CALLERROR, a bad result);
        ``offline_errors``: exceptions that mean the link is gone or silent (no attempt counted).
        """
        while True:
            msg = self.head()
            if msg is None:
                self._wake.clear()
                if self.head() is None:
                    await self._wake.wait()
                continue
            wait = self._not_before(msg.seq) - self._clock.now().timestamp()
            if wait > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                except TimeoutError:
                    pass
                continue
            await ready()
            payload = dict(msg.payload)
            if msg.tx_local_id is not None and msg.action != "StartTransaction":
                tx_id = self._transaction_id(msg.tx_local_id)
                if tx_id is None:
                    # Its StartTransaction was dropped after all attempts: the CSMS knows no
                    # such transaction, and a made-up id would be worse than nothing.
                    log.error(
                        "dropping %s #%d: its transaction local %d never got a transactionId",
                        msg.action,
                        msg.seq,
                        msg.tx_local_id,
                    )
                    self._drop(msg)
                    continue
                payload["transactionId"] = tx_id
            try:
                result = await call(msg.action, payload)
            except offline_errors as exc:
                log.info(
                    "%s #%d not delivered (%s); waiting for the link", msg.action, msg.seq, exc
                )
                await asyncio.sleep(0.2)
                continue
            except errors as exc:
                self._failed_attempt(msg, exc)
                continue
            handler = self._handlers.get(msg.action)
            durable = msg.action != "MeterValues" or self._unsynced >= self.max_unsynced_deliveries
            try:
                with self._store.transaction(durable=durable):
                    if handler is not None:
                        handler(msg, result)
                    self._store.execute("DELETE FROM outbox WHERE seq = ?", (msg.seq,))
            except Exception:
                # The store refused (disk full, I/O error): the message stays queued and
                # goes again later, which the CSMS may see twice; better than dying in a
                # restart loop, or than forgetting it.
                log.exception(
                    "%s #%d was answered but its result could not be recorded; "
                    "it will be sent again in %.0f s",
                    msg.action,
                    msg.seq,
                    self.STORE_RETRY_S,
                )
                await asyncio.sleep(self.STORE_RETRY_S)
                continue
            self._unsynced = 0 if durable else self._unsynced + 1
            self.delivered += 1

    def _failed_attempt(self, msg: OutboxMessage, exc: BaseException) -> None:
        attempts = msg.attempts + 1
        limit = max(1, self._attempts())
        if attempts >= limit:
            log.error(
                "dropping %s #%d after %d attempts, the CSMS refused it: %s",
                msg.action,
                msg.seq,
                attempts,
                exc,
            )
            self._drop(msg)
            return
        delay = self._retry_interval() * attempts
        log.warning(
            "%s #%d refused by the CSMS (%s); attempt %d of %d, next in %ds",
            msg.action,
            msg.seq,
            exc,
            attempts,
            limit,
            delay,
        )
        with self._store.transaction():
            self._store.execute(
                "UPDATE outbox SET attempts = ?, not_before = ? WHERE seq = ?",
                (attempts, self._clock.now().timestamp() + delay, msg.seq),
            )

    def _drop(self, msg: OutboxMessage) -> None:
        with self._store.transaction():
            self._store.execute("DELETE FROM outbox WHERE seq = ?", (msg.seq,))
        self.dropped += 1
