"""Transactions: start, stop, the power-loss stop after a crash, and the CSMS's verdicts.

Write ahead: every start and stop is committed to SQLite together with its
StartTransaction / StopTransaction in the outbox *before* the contactor moves
or anything is sent.  Whatever instant the process dies at, the disk then
says exactly what the CSMS still has to hear:

- died before the start commit: no transaction, the contactor never closed;
- died between start and stop commits: the row is 'active', and the next
  start sends StopTransaction(PowerLoss) with the last persisted energy;
- died after the stop commit: the StopTransaction waits in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from chargerd.clock import Clock, iso, parse_iso
from chargerd.features import metering
from chargerd.features.outbox import Outbox, OutboxMessage
from chargerd.features.powerloss import power_loss_meter_stop, read_registers
from chargerd.features.txids import tx_label
from chargerd.store import Store, StoreError
from hal.interfaces import EnergyMeter, MeterSample

if TYPE_CHECKING:
    from chargerd.features.auth import AuthorizationCache
    from chargerd.features.configuration import ConfigurationService
    from hal.interfaces import ConnectorHardware


class ConnectorRuntime(Protocol):
    """What this service needs of a connector; connectors.ConnectorRuntime is one.

    A Protocol, not an import: connectors.py imports this module, and this one
    never imports connectors.py back (the two used to import each other).
    """

    id: int
    tx: ActiveTx | None
    begin_sample: MeterSample | None

    @property
    def hw(self) -> ConnectorHardware: ...


log = logging.getLogger(__name__)


class TransactionRefused(Exception):
    """A transaction could not start (disk full, lock failed, meter unreadable...)."""


@dataclass
class ActiveTx:
    local_id: int
    id_tag: str
    parent_id_tag: str | None
    meter_start_wh: float
    start_time: datetime
    transaction_id: int | None = None
    invalid: bool = False  # the CSMS answered StartTransaction with a status other than Accepted
    energy_blocked: bool = False  # MaxEnergyOnInvalidId reached: no more energy, still open
    # StopTxnAlignedData readings for the StopTransaction's transactionData.  In memory
    # only: a PowerLoss stop carries no transactionData at all.
    stop_aligned: list[dict] = field(default_factory=list)
    stop_aligned_full: bool = False  # max_stop_aligned_values reached (logged once)


def stop_payload(
    *,
    id_tag: str | None,
    meter_stop_wh: float,
    timestamp: datetime,
    reason: str,
    transaction_data: list[dict] | None = None,
) -> dict:
    """StopTransaction.req; transactionId is filled in by the outbox at send time."""
    payload: dict = {
        "transactionId": 0,
        "meterStop": round(meter_stop_wh),
        "timestamp": iso(timestamp),
        "reason": reason,
    }
    if id_tag:
        payload["idTag"] = id_tag
    if transaction_data:
        payload["transactionData"] = transaction_data
    return payload


class TransactionService:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        outbox: Outbox,
        config: ConfigurationService,
        cache: AuthorizationCache,
        on_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._outbox = outbox
        self._config = config
        self._cache = cache
        self._on_changed = on_changed
        self.connectors: dict[int, ConnectorRuntime] = {}
        outbox.on_result("StartTransaction", self._start_result)
        outbox.on_result("StopTransaction", self._stop_result)
        self._deauthorize: Callable[[int], None] = lambda connector_id: None

    def set_deauthorize(self, callback: Callable[[int], None]) -> None:
        """Who stops a transaction the CSMS declared invalid (the connector supervisor)."""
        self._deauthorize = callback

    # -- recovery --------------------------------------------------------------------

    def active_connectors(self) -> list[int]:
        """Connectors with a transaction a previous process left running."""
        rows = self._store.query("SELECT connector_id FROM transactions WHERE state = 'active'")
        return sorted({int(r["connector_id"]) for r in rows})

    async def recover_power_loss_reading(
        self, meters: Mapping[int, EnergyMeter], *, max_power_w: float
    ) -> list[int]:
        """recover_power_loss with the registers the meters show now (read only if needed)."""
        wanted = self.active_connectors()
        registers = await read_registers({c: m for c, m in meters.items() if c in wanted})
        return self.recover_power_loss(registers, max_power_w=max_power_w)

    def recover_power_loss(
        self,
        registers: Mapping[int, float | None] | None = None,
        *,
        max_power_w: float = 0.0,
    ) -> list[int]:
        """Close every transaction a previous process left running.  Returns their local ids.

        The meterStop is the connector's register at the restart when the meter answered
        and the value is plausible (chargerd.features.powerloss), else the last energy
        register persisted for the transaction.  The timestamp is that of the last
        persisted reading: the last instant the station knew the session was running.
        """
        rows = self._store.query("SELECT * FROM transactions WHERE state = 'active'")
        recovered = []
        now = self._clock.now()
        for row in rows:
            when = parse_iso(row["last_energy_time"])
            meter_stop, why = power_loss_meter_stop(
                persisted_wh=float(row["last_energy_wh"]),
                persisted_at=when,
                register_wh=(registers or {}).get(row["connector_id"]),
                now=now,
                max_power_w=max_power_w,
            )
            payload = stop_payload(
                id_tag=row["id_tag"],
                meter_stop_wh=meter_stop,
                timestamp=when,
                reason="PowerLoss",
            )
            with self._store.transaction():
                self._store.execute(
                    "UPDATE transactions SET state = 'stopped', stop_reason = 'PowerLoss', "
                    "stop_time = ?, meter_stop_wh = ?, last_energy_wh = ? WHERE local_id = ?",
                    (row["last_energy_time"], meter_stop, meter_stop, row["local_id"]),
                )
                self._outbox.enqueue("StopTransaction", payload, tx_local_id=row["local_id"])
            log.warning(
                "%s on connector %d was running when chargerd stopped; "
                "StopTransaction(PowerLoss) queued with meterStop=%.0f Wh (%s), last persisted "
                "%.0f Wh at %s",
                tx_label(row["local_id"], row["transaction_id"]),
                row["connector_id"],
                meter_stop,
                why,
                row["last_energy_wh"],
                row["last_energy_time"],
            )
            recovered.append(row["local_id"])
        return recovered

    # -- start / stop -------------------------------------------------------------------

    def begin(
        self,
        conn: ConnectorRuntime,
        *,
        id_tag: str,
        parent_id_tag: str | None,
        sample: MeterSample | None,
        reservation_id: int | None = None,
    ) -> ActiveTx:
        """Commit the start and its StartTransaction.req.  The caller closes the contactor after."""
        if conn.tx is not None:
            raise TransactionRefused(
                f"connector {conn.id} already has transaction {conn.tx.local_id}"
            )
        if sample is None:
            raise TransactionRefused(f"connector {conn.id}: the meter has never been read")
        now = self._clock.now()
        payload = {
            "connectorId": conn.id,
            "idTag": id_tag,
            "meterStart": round(sample.energy_wh),
            "timestamp": iso(now),
        }
        if reservation_id is not None:
            payload["reservationId"] = reservation_id
        try:
            with self._store.transaction():
                cur = self._store.execute(
                    "INSERT INTO transactions(connector_id, id_tag, parent_id_tag, reservation_id, "
                    "meter_start_wh, start_time, state, last_energy_wh, last_energy_time) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?)",
                    (
                        conn.id,
                        id_tag,
                        parent_id_tag,
                        reservation_id,
                        sample.energy_wh,
                        iso(now),
                        sample.energy_wh,
                        iso(now),
                    ),
                )
                local_id = int(cur.lastrowid)
                self._outbox.enqueue("StartTransaction", payload, tx_local_id=local_id)
        except (OSError, StoreError, sqlite3.Error) as exc:
            # A full disk (StoreFullError is an OSError) or a failing one (SQLITE_IOERR):
            # refuse, corrupt nothing.  Raised on, the supervisor would retry and log the
            # same failure on every pass until ConnectionTimeOut.
            raise TransactionRefused(f"cannot record the transaction: {exc}") from exc
        tx = ActiveTx(local_id, id_tag, parent_id_tag, sample.energy_wh, now)
        conn.tx = tx
        conn.begin_sample = sample
        log.info(
            "%s started on connector %d for %s, meterStart=%.0f Wh",
            tx_label(local_id, None),
            conn.id,
            id_tag,
            sample.energy_wh,
            extra={"fields": {"connector_id": conn.id, "tx_local_id": local_id}},
        )
        self._on_changed()
        return tx

    def end(
        self,
        conn: ConnectorRuntime,
        *,
        reason: str,
        sample: MeterSample | None,
        id_tag: str | None = None,
    ) -> None:
        """Commit the stop and its StopTransaction.req.  The caller opens the contactor after."""
        tx = conn.tx
        if tx is None:
            return
        now = self._clock.now()
        energy = sample.energy_wh if sample is not None else self._last_energy(tx.local_id)
        data = self._transaction_data(conn, sample, now)
        payload = stop_payload(
            id_tag=id_tag or tx.id_tag,
            meter_stop_wh=energy,
            timestamp=now,
            reason=reason,
            transaction_data=data,
        )
        with self._store.transaction():
            self._store.execute(
                "UPDATE transactions SET state = 'stopped', stop_reason = ?, stop_time = ?, "
                "meter_stop_wh = ?, last_energy_wh = ?, last_energy_time = ? WHERE local_id = ?",
                (reason, iso(now), energy, energy, iso(now), tx.local_id),
            )
            self._outbox.enqueue("StopTransaction", payload, tx_local_id=tx.local_id)
        conn.tx = None
        log.info(
            "%s stopped on connector %d: reason %s, meterStop=%.0f Wh (%.0f Wh charged)",
            tx_label(tx.local_id, tx.transaction_id),
            conn.id,
            reason,
            energy,
            energy - tx.meter_start_wh,
            extra={"fields": {"connector_id": conn.id, "tx_local_id": tx.local_id}},
        )
        self._on_changed()

    def _last_energy(self, local_id: int) -> float:
        row = self._store.query_one(
            "SELECT last_energy_wh FROM transactions WHERE local_id = ?", (local_id,)
        )
        return float(row["last_energy_wh"]) if row else 0.0

    def _transaction_data(
        self, conn: ConnectorRuntime, sample: MeterSample | None, now: datetime
    ) -> list[dict]:
        aligned = list(conn.tx.stop_aligned) if conn.tx is not None else []
        measurands = metering.parse_measurands(str(self._config.get("StopTxnSampledData")))
        if not measurands or sample is None:
            return aligned
        values = []
        begin = conn.begin_sample
        if begin is not None and conn.tx is not None:
            values.append(
                metering.meter_value(
                    begin,
                    measurands,
                    context="Transaction.Begin",
                    timestamp=conn.tx.start_time,
                    interval_energy_wh=0.0,
                )
            )
        values.extend(aligned)
        values.append(
            metering.meter_value(
                sample,
                measurands,
                context="Transaction.End",
                timestamp=now,
                offered_current_a=conn.hw.pilot.offered_current_a,
                # The interval of the End value is the whole transaction: what is billed.
                interval_energy_wh=metering.interval_wh(sample, conn.tx.meter_start_wh)
                if conn.tx is not None
                else None,
            )
        )
        return values

    #: StopTxnAlignedData readings kept for one StopTransaction; beyond this (a 1 s
    #: interval over hours) the message would outgrow what a CSMS accepts in one frame.
    max_stop_aligned_values = 500

    def note_stop_aligned(self, conn: ConnectorRuntime, meter_value: dict) -> None:
        """Keep a clock-aligned reading (StopTxnAlignedData) for the transaction's stop."""
        tx = conn.tx
        if tx is None:
            return
        if len(tx.stop_aligned) >= self.max_stop_aligned_values:
            if not tx.stop_aligned_full:
                tx.stop_aligned_full = True
                log.warning(
                    "%s: more than %d StopTxnAlignedData readings; "
                    "later ones are left out of its StopTransaction",
                    tx_label(tx.local_id, tx.transaction_id),
                    self.max_stop_aligned_values,
                )
            return
        tx.stop_aligned.append(meter_value)

    def persist_energy(self, conn: ConnectorRuntime, sample: MeterSample) -> None:
        """Remember the register so that a power-loss stop reports it."""
        if conn.tx is None:
            return
        self._store.execute(
            "UPDATE transactions SET last_energy_wh = ?, last_energy_time = ? WHERE local_id = ?",
            (sample.energy_wh, iso(self._clock.now()), conn.tx.local_id),
        )

    def queue_meter_values(
        self, conn: ConnectorRuntime, meter_values: list[dict], *, sample: MeterSample
    ) -> None:
        """Queue a transaction's MeterValues with the energy persisted in the same commit."""
        tx = conn.tx
        if tx is None:
            return
        payload = {"connectorId": conn.id, "transactionId": 0, "meterValue": meter_values}
        with self._store.transaction():
            self.persist_energy(conn, sample)
            self._outbox.enqueue("MeterValues", payload, tx_local_id=tx.local_id)

    def store_transaction(self):
        return self._store.transaction()

    # -- CSMS results (run inside the outbox's delete transaction) -----------------------

    def _start_result(self, msg: OutboxMessage, result: dict) -> None:
        tx_id = int(result["transactionId"])
        info = result.get("idTagInfo") or {}
        status = info.get("status", "Accepted")
        # The CSMS's word on the parent: a transaction started remotely or offline never
        # had an Authorize.conf to learn it from, and a sibling card must still stop it.
        parent = info.get("parentIdTag") or None
        self._store.execute(
            "UPDATE transactions SET transaction_id = ?, id_tag_status = ?, "
            "parent_id_tag = COALESCE(?, parent_id_tag) WHERE local_id = ?",
            (tx_id, status, parent, msg.tx_local_id),
        )
        id_tag = msg.payload.get("idTag")
        if id_tag and info:
            self._cache.update(id_tag, info)
        for conn in self.connectors.values():
            if conn.tx is not None and conn.tx.local_id == msg.tx_local_id:
                conn.tx.transaction_id = tx_id
                log.info(
                    "%s on connector %d: the CSMS's id is known",
                    tx_label(conn.tx.local_id, tx_id),
                    conn.id,
                    extra={"fields": {"tx_local_id": conn.tx.local_id, "transaction_id": tx_id}},
                )
                if parent is not None:
                    conn.tx.parent_id_tag = parent
                if status != "Accepted":
                    conn.tx.invalid = True
                    log.warning(
                        "CSMS answered %s for %s on %s (connector %d)",
                        status,
                        id_tag,
                        tx_label(conn.tx.local_id, tx_id),
                        conn.id,
                    )
                    asyncio.get_running_loop().call_soon(self._deauthorize, conn.id)
        self._on_changed()

    def _stop_result(self, msg: OutboxMessage, result: dict) -> None:
        info = result.get("idTagInfo")
        id_tag = msg.payload.get("idTag")
        if id_tag and info:
            self._cache.update(id_tag, info)

    # -- queries ------------------------------------------------------------------------

    def find_by_transaction_id(self, transaction_id: int) -> ConnectorRuntime | None:
        for conn in self.connectors.values():
            if conn.tx is not None and conn.tx.transaction_id == transaction_id:
                return conn
        return None

    def restore_tx_energy(self, local_id: int) -> float:
        return self._last_energy(local_id)
