"""What must hold after a chaos session: pure functions of what the CSMS saw and what the rig did.

No clock, no network, no daemon: :func:`check_session` takes the CSMS's
journal (every CALL and its answer, see chaoslib.journal) and the rig's
:class:`Knowledge` (its kills, the station's own transaction table read after
the session, the status snapshots it took, the faults it injected) and
returns the violations and the counters of the summary.  That is what makes
the checks themselves testable on synthetic records.

The delivery guarantee being checked is the design's: a transaction message
is delivered exactly once *per accepted CALLRESULT*, in order.  A message the
CSMS accepted and then received again is therefore not a violation when the
second copy came on a new connection (the station died, or the link was cut,
before it could commit the CALLRESULT): it is counted as "redelivered after a
crash or a cut".  The same message again on the same connection after a
prompt CALLRESULT is a station bug.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chargerd.bench.chaoslib.journal import Exchange
from chargerd.bench.chaoslib.records import Kill, Knowledge, Sample, Verdict

TX_ACTIONS = ("StartTransaction", "MeterValues", "StopTransaction")
ENERGY = "Energy.Active.Import.Register"
#: Wh: meterStart/meterStop are whole Wh, sampled values have one decimal.
ENERGY_SLACK = 0.6
#: Seconds of clock difference tolerated between the station's timestamps and the rig's.
CLOCK_SLACK = 0.5
#: Faults with which the contactor must be commanded open (hal Fault values).
UNSAFE = frozenset(
    {"contactor_welded", "contactor_failed_to_close", "ev_error", "pilot_failure", "lock_failure"}
)
#: Injected fault -> (hal Fault the daemon reports, OCPP errorCode of the StatusNotification).
FAULT_CODES: dict[str, tuple[str, str]] = {
    "meter_silent": ("meter_failure", "PowerMeterFailure"),
    "contactor_welded": ("contactor_welded", "PowerSwitchFailure"),
    "lock_jammed": ("lock_failure", "ConnectorLockFailure"),
    "reader_dead": ("reader_failure", "ReaderFailure"),
    "ev_error": ("ev_error", "EVCommunicationError"),
}
#: Seconds after a fault shows in the status by which its StatusNotification must have arrived.
NOTIFY_GRACE = 3.0


#: Stop reason -> the rig events that can explain it (PowerLoss is judged by the kills).
REASON_EVIDENCE: dict[str, tuple[str, ...]] = {
    "Local": ("card",),
    "Remote": ("remote_stop",),
    "EVDisconnected": ("unplug",),
    "EmergencyStop": ("fault",),
    "Reboot": ("term",),
    "DeAuthorized": ("card", "remote_start"),
}


# -- helpers ----------------------------------------------------------------------------


@dataclass
class Logical:
    """One message as the station meant it: every wire copy with the same payload."""

    action: str
    payload: dict[str, Any]
    copies: list[Exchange]

    @property
    def first(self) -> int:
        return self.copies[0].index

    @property
    def accepted(self) -> list[Exchange]:
        return [c for c in self.copies if c.answer == "result"]


def _key(ex: Exchange) -> str:
    return ex.action + json.dumps(ex.payload, sort_keys=True, separators=(",", ":"))


def group_copies(exchanges: list[Exchange]) -> list[Logical]:
    """Transaction messages grouped by identical payload, in order of first arrival."""
    groups: dict[str, Logical] = {}
    for ex in exchanges:
        if ex.action not in TX_ACTIONS:
            continue
        if ex.action == "MeterValues" and "transactionId" not in ex.payload:
            continue  # a live (clock-aligned) MeterValues, not a transaction message
        k = _key(ex)
        if k not in groups:
            groups[k] = Logical(ex.action, ex.payload, [])
        groups[k].copies.append(ex)
    return sorted(groups.values(), key=lambda g: g.first)


def _ts(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def energies(payload: dict[str, Any]) -> list[float]:
    """The energy register readings (Wh) of a MeterValues.req, in order."""
    out: list[float] = []
    for mv in payload.get("meterValue") or []:
        for sv in mv.get("sampledValue") or []:
            if sv.get("measurand", ENERGY) != ENERGY:
                continue
            try:
                value = float(sv["value"])
            except (KeyError, TypeError, ValueError):
                continue
            out.append(value * 1000 if sv.get("unit") == "kWh" else value)
    return out


def _brief(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True)
    return text if len(text) <= 240 else text[:240] + "..."


# -- delivery ---------------------------------------------------------------------------


def check_delivery(logicals: list[Logical], k: Knowledge, v: Verdict) -> None:
    """Every message accepted once; every extra copy explained; nothing silently lost."""
    for msg in logicals:
        for prev, cur in itertools.pairwise(msg.copies):
            if prev.answer == "error":
                v.counts["retried after a CALLERROR"] += 1
            elif prev.answer == "none":
                v.counts["re-sent after no answer"] += 1
            elif prev.connection != cur.connection:
                v.counts["redelivered after a crash or cut"] += 1
            elif prev.latency is not None and prev.latency >= k.call_timeout - 1.0:
                v.counts["re-sent after a late CALLRESULT"] += 1
            else:
                v.add(
                    "re-sent after its CALLRESULT",
                    f"{msg.action} {_brief(msg.payload)} answered at #{prev.index} and sent "
                    f"again at #{cur.index} on the same connection {cur.connection}",
                )
        if msg.accepted:
            continue
        refusals = sum(1 for c in msg.copies if c.answer == "error")
        if refusals >= k.attempts:
            v.counts["dropped after TransactionMessageAttempts CALLERRORs"] += 1
        else:
            answers = ", ".join(c.answer for c in msg.copies)
            v.add(
                "never accepted",
                f"{msg.action} {_brief(msg.payload)}: {len(msg.copies)} copies ({answers}), "
                f"{refusals} CALLERROR(s) < TransactionMessageAttempts={k.attempts}",
            )


# -- transactions -----------------------------------------------------------------------


@dataclass
class Tx:
    """One transaction as the CSMS saw it: a StartTransaction and what refers to it."""

    start: Logical
    ids: list[int]  # transactionIds the CSMS gave its accepted copies
    meter_values: list[Logical] = field(default_factory=list)
    stops: list[Logical] = field(default_factory=list)
    used_ids: set[int] = field(default_factory=set)

    @property
    def connector(self) -> int:
        return int(self.start.payload.get("connectorId", 0))

    @property
    def label(self) -> str:
        p = self.start.payload
        ids = "/".join(map(str, self.ids)) or "-"
        where = f"connector {p.get('connectorId')}, {p.get('idTag')}, {p.get('timestamp')}"
        return f"tx {ids} ({where})"


def assemble(logicals: list[Logical], v: Verdict) -> list[Tx]:
    txs: list[Tx] = []
    by_id: dict[int, Tx] = {}
    for msg in logicals:
        if msg.action != "StartTransaction":
            continue
        ids = []
        for c in msg.accepted:
            try:
                ids.append(int((c.result or {})["transactionId"]))
            except (KeyError, TypeError, ValueError):
                v.add("malformed StartTransaction result", f"#{c.index}: {c.result}")
        tx = Tx(msg, ids)
        txs.append(tx)
        for tid in ids:
            if tid in by_id:
                v.add("transactionId given twice", f"{tid}: {by_id[tid].label} and {tx.label}")
            by_id[tid] = tx
    for msg in logicals:
        if msg.action == "StartTransaction":
            continue
        tid = msg.payload.get("transactionId")
        tx = by_id.get(tid) if isinstance(tid, int) else None
        if tx is None:
            v.add(
                "message for an unknown transaction",
                f"{msg.action} #{msg.first} names transactionId {tid!r}, which no accepted "
                f"StartTransaction was given: {_brief(msg.payload)}",
            )
            continue
        tx.used_ids.add(tid)
        (tx.stops if msg.action == "StopTransaction" else tx.meter_values).append(msg)
    return txs


def _kill_inside(k: Knowledge, start: float, stop: float) -> Kill | None:
    """A kill that happened wholly while the transaction ran (so it should have ended it)."""
    for kill in k.kills:
        if start + CLOCK_SLACK < kill.before and kill.after < stop - CLOCK_SLACK:
            return kill
    return None


def _kill_ending(k: Knowledge, start: float, stop: float) -> Kill | None:
    """A kill after the transaction's start and its last persisted reading."""
    for kill in k.kills:
        if start <= kill.after + CLOCK_SLACK and stop <= kill.after + CLOCK_SLACK:
            return kill
    return None


def check_transaction(tx: Tx, k: Knowledge, v: Verdict) -> None:
    v.counts["transactions"] += 1
    if not tx.start.accepted:
        return  # dropped per TransactionMessageAttempts (check_delivery judged it)
    if len(tx.used_ids) > 1:
        v.add("one transaction, several ids", f"{tx.label} uses {sorted(tx.used_ids)}")
    orphans = set(tx.ids) - tx.used_ids
    if tx.stops and orphans:
        v.counts["CSMS transactions orphaned by a redelivered StartTransaction"] += len(orphans)
    if not tx.stops:
        v.add("never stopped", f"{tx.label}: no StopTransaction reached the CSMS")
        return
    if len(tx.stops) > 1:
        detail = "; ".join(_brief(s.payload) for s in tx.stops)
        v.add("stopped twice", f"{tx.label}: {len(tx.stops)} different StopTransactions: {detail}")
    stop = tx.stops[0]
    for mv in tx.meter_values:
        if mv.first > stop.first:
            v.add("MeterValues after StopTransaction", f"{tx.label}: #{mv.first} > #{stop.first}")
        if mv.first < tx.start.first:
            v.add("MeterValues before StartTransaction", f"{tx.label}: #{mv.first}")
    # Energy: meterStart <= every reading, non-decreasing, <= meterStop.
    meter_start = float(tx.start.payload.get("meterStart", 0))
    meter_stop = float(stop.payload.get("meterStop", 0))
    last = meter_start - ENERGY_SLACK
    for mv in tx.meter_values:
        for wh in energies(mv.payload):
            v.counts["energy readings checked"] += 1
            if wh < last - 0.05:
                v.add(
                    "energy went backwards",
                    f"{tx.label}: {wh} Wh at #{mv.first} after {last} Wh",
                )
            last = max(last, wh)
    if meter_stop < last - ENERGY_SLACK:
        v.add("meterStop below a reading", f"{tx.label}: meterStop {meter_stop} < {last} Wh")
    if meter_stop < meter_start:
        v.add("meterStop below meterStart", f"{tx.label}: {meter_stop} < {meter_start}")
    # PowerLoss exactly when the process died under the transaction.
    reason = stop.payload.get("reason", "Local")
    v.counts[f"stop reason {reason}"] += 1
    start_ts = _ts(tx.start.payload.get("timestamp"))
    stop_ts = _ts(stop.payload.get("timestamp"))
    if start_ts is None or stop_ts is None:
        v.add("unreadable timestamp", f"{tx.label}: {stop.payload.get('timestamp')!r}")
        return
    if stop_ts < start_ts - CLOCK_SLACK:
        v.add("stopped before it started", f"{tx.label}: stop at {stop.payload['timestamp']}")
    if reason == "PowerLoss":
        if _kill_ending(k, start_ts, stop_ts) is None:
            v.add(
                "PowerLoss without a power loss",
                f"{tx.label}: stopped {stop.payload.get('timestamp')} as PowerLoss, "
                "but the daemon was not killed while it ran",
            )
    else:
        kill = _kill_inside(k, start_ts, stop_ts)
        if kill is not None:
            v.add(
                "survived a kill",
                f"{tx.label}: the daemon was killed at {kill.before:.3f} while it ran, "
                f"yet it stopped later as {reason}",
            )
        check_reason(tx, reason, start_ts, stop_ts, k, v)


def check_reason(
    tx: Tx, reason: str, start_ts: float, stop_ts: float, k: Knowledge, v: Verdict
) -> None:
    """A stop reason the rig's own actions explain (an unplug for EVDisconnected, ...)."""
    kinds = REASON_EVIDENCE.get(reason)
    if kinds is None:
        v.add("unexpected stop reason", f"{tx.label}: {reason}, which no chaos action causes")
        return
    for e in k.events:
        if (
            e.kind in kinds
            and (e.connector is None or e.connector == tx.connector)
            and e.start - CLOCK_SLACK <= stop_ts
            and start_ts - CLOCK_SLACK <= e.end
        ):
            return
    v.add(
        "unexplained stop reason",
        f"{tx.label} stopped as {reason} at {datetime.fromtimestamp(stop_ts).isoformat()} "
        f"but the rig did nothing of the kind ({', '.join(kinds)}) while it ran",
    )


def check_connector_order(txs: list[Tx], k: Knowledge, v: Verdict) -> None:
    """On one connector, transaction n is stopped at the CSMS before n+1 starts."""
    by_connector: dict[int, list[Tx]] = defaultdict(list)
    for tx in txs:
        if tx.start.accepted:
            by_connector[tx.connector].append(tx)
    for conn, seq in by_connector.items():
        for a, b in itertools.pairwise(seq):
            if not a.stops:
                continue
            stop = a.stops[0]
            if stop.first > b.start.first:
                v.add(
                    "transactions overlap",
                    f"connector {conn}: {b.label} started at #{b.start.first} before "
                    f"{a.label} stopped at #{stop.first}",
                )
            before = float(stop.payload.get("meterStop", 0))
            after = float(b.start.payload.get("meterStart", 0))
            if after >= before - ENERGY_SLACK:
                continue
            stop_ts = _ts(stop.payload.get("timestamp")) or 0.0
            start_ts = _ts(b.start.payload.get("timestamp")) or 0.0
            killed_between = any(
                stop_ts - CLOCK_SLACK <= kill.before <= start_ts + CLOCK_SLACK for kill in k.kills
            )
            if killed_between:
                # The mock persists its register once a second: a kill may lose that much.
                v.counts["meter register behind after a kill (mock persists 1/s)"] += 1
            else:
                v.add(
                    "meter went backwards between transactions",
                    f"connector {conn}: {b.label} meterStart {after} < {a.label} "
                    f"meterStop {before}",
                )


# -- the station's own record -------------------------------------------------------------


def check_station_record(txs: list[Tx], k: Knowledge, v: Verdict) -> None:
    """The station's transactions table and the CSMS agree, one to one."""
    matched: set[int] = set()
    rows = {row.local_id: row for row in k.station_txs}
    for row in k.station_txs:
        found = None
        for i, tx in enumerate(txs):
            p = tx.start.payload
            if (
                p.get("connectorId") == row.connector_id
                and p.get("idTag") == row.id_tag
                and p.get("timestamp") == row.start_time
                and p.get("meterStart") == round(row.meter_start_wh)
            ):
                found = (i, tx)
                break
        label = f"station transaction {row.local_id} (connector {row.connector_id}, {row.id_tag})"
        if row.state != "stopped":
            v.add("still active at the end", f"{label} is {row.state}")
        if found is None:
            v.add("lost", f"{label} started {row.start_time} never reached the CSMS")
            continue
        i, tx = found
        matched.add(i)
        if not tx.start.accepted:
            continue
        if tx.used_ids and row.transaction_id not in tx.used_ids:
            v.add(
                "station and CSMS disagree on the id",
                f"{label}: station has {row.transaction_id}, messages use {sorted(tx.used_ids)}",
            )
        if tx.stops and row.stop_reason != tx.stops[0].payload.get("reason", "Local"):
            v.add(
                "station and CSMS disagree on the stop reason",
                f"{label}: station {row.stop_reason}, CSMS {tx.stops[0].payload.get('reason')}",
            )
    for i, tx in enumerate(txs):
        if i not in matched:
            v.add("phantom", f"{tx.label} reached the CSMS but the station has no record of it")
    seen_local = set()
    for s in k.samples:
        for c in s.status.get("connectors", []):
            if c.get("transaction_local_id") is not None:
                seen_local.add(c["transaction_local_id"])
    for local_id in sorted(seen_local - set(rows)):
        v.add("forgotten", f"transaction {local_id} was running but is not in the station's table")
    if k.outbox_left:
        v.add("undelivered", f"{k.outbox_left} message(s) still in the outbox at the end")
    if k.integrity != "ok":
        v.add("store corrupt", f"integrity_check: {k.integrity}")
    if not k.settled:
        v.add("did not settle", k.settle_detail)
    if k.final_exit_code not in (0, None):
        v.add("unclean exit", f"SIGTERM at the end gave exit code {k.final_exit_code}")
    for what in k.unexpected_exits:
        v.add("daemon died", what)


# -- hardware faults -----------------------------------------------------------------------


def check_samples(k: Knowledge, v: Verdict) -> None:
    """Whenever a fault makes charging unsafe, the contactor is commanded open."""
    for s in k.samples:
        for c in s.status.get("connectors", []):
            v.counts["status snapshots checked"] += 1
            unsafe = set(UNSAFE & set(c.get("faults") or []))
            if c.get("ev_state") in ("E", "F"):
                unsafe.add(f"EV state {c['ev_state']}")
            if unsafe and c.get("contactor_closed"):
                v.add(
                    "contactor closed despite a fault",
                    f"connector {c.get('id')} at {s.time:.3f}: {sorted(unsafe)}, "
                    f"status {c.get('status')}",
                )


def _fault_seen(s: Sample, fault: str, connector: int | None) -> bool:
    for f in s.status.get("faults", []):
        if f.get("fault") == fault and (connector is None or f.get("connector") == connector):
            return True
    return False


def check_fault_notifications(exchanges: list[Exchange], k: Knowledge, v: Verdict) -> None:
    """A fault the daemon saw while the link was healthy reached the CSMS as its errorCode."""
    for w in k.faults:
        v.counts[f"hw fault {w.kind}"] += 1
        fault, code = FAULT_CODES[w.kind]
        where = 0 if w.kind == "reader_dead" else w.connector
        seen = [
            s
            for s in k.samples
            if w.on <= s.time <= w.off
            and _fault_seen(s, fault, None if where is None else where)
            and s.status.get("ocpp", {}).get("connected")
        ]
        if not w.healthy or not seen:
            v.counts["fault notifications not owed (offline or not visible)"] += 1
            continue
        first = seen[0].time
        notes = [
            e
            for e in exchanges
            if e.action == "StatusNotification"
            and e.payload.get("errorCode") == code
            and (where is None or e.payload.get("connectorId") == where)
            and w.on - CLOCK_SLACK <= e.time <= max(w.off, first) + NOTIFY_GRACE
        ]
        if notes:
            v.counts["fault notifications checked"] += 1
        else:
            v.add(
                "fault not notified",
                f"{w.kind} on connector {where} from {w.on:.3f} to {w.off:.3f} "
                f"(visible at {first:.3f}): no StatusNotification with errorCode {code}",
            )


def check_disk_full(k: Knowledge, v: Verdict) -> None:
    for d in k.disk_full:
        v.counts["disk full episodes"] += 1
        if not d.daemon_alive:
            v.add("died on a full disk", f"at {d.time:.3f} the daemon did not survive")
        if not d.armed:
            v.counts["disk full episodes not armed"] += 1
            continue
        if d.kind == "stop":
            if d.energy_cut:
                v.counts["charges stopped on a full disk"] += 1
            else:
                v.add("kept charging on a full disk", f"at {d.time:.3f} the stop card was ignored")
            continue
        if d.started:
            v.add("started on a full disk", f"at {d.time:.3f} a transaction started anyway")
        elif not d.refused_logged:
            v.add("silent refusal", f"at {d.time:.3f}: no 'transaction refused' log line")
        else:
            v.counts["transactions refused on a full disk"] += 1


def check_session(exchanges: list[Exchange], k: Knowledge) -> Verdict:
    """Every invariant of one session."""
    v = Verdict()
    v.counts["messages checked"] += len(exchanges)
    logicals = group_copies(exchanges)
    check_delivery(logicals, k, v)
    txs = assemble(logicals, v)
    for tx in txs:
        check_transaction(tx, k, v)
    check_connector_order(txs, k, v)
    check_station_record(txs, k, v)
    check_samples(k, v)
    check_fault_notifications(exchanges, k, v)
    check_disk_full(k, v)
    v.counts["kills"] += len(k.kills)
    for kill in k.kills:
        v.counts[f"kill during {kill.when or 'idle'}"] += 1
    return v
