"""What the rig knows after a chaos session, and what the invariants make of it.

Plain data: the kills, the station's own transactions table, the status
snapshots, the injected faults and disk-full episodes (:class:`Knowledge`),
and the judgement (:class:`Verdict`).  chaoslib.invariants reads the first and
writes the second; nothing here does anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Kill:
    """SIGKILL sent at ``before``; the process was gone at ``after`` (epoch seconds)."""

    before: float
    after: float
    when: str = ""  # "start", "charging", "stop", "replay", "idle": for the summary


@dataclass(frozen=True, slots=True)
class StationTx:
    """One row of the station's own transactions table, read after the session."""

    local_id: int
    connector_id: int
    id_tag: str
    meter_start_wh: float
    start_time: str
    state: str
    transaction_id: int | None
    stop_reason: str | None
    meter_stop_wh: float | None


@dataclass(frozen=True, slots=True)
class Sample:
    """A `chargerctl status` snapshot taken at ``time`` (epoch seconds)."""

    time: float
    status: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """A hardware fault injected from ``on`` to ``off``.

    ``healthy``: the CSMS answered normally and the station was registered and
    connected throughout, so a StatusNotification is owed.
    """

    kind: str
    connector: int | None
    on: float
    off: float
    healthy: bool


@dataclass(frozen=True, slots=True)
class DiskFull:
    """A card presented while the state disk was full.

    ``kind`` "start": on a plugged idle connector (the transaction must be refused,
    loudly); "stop": the owner's card on a charging connector (the energy must be
    cut although the stop cannot be written yet).
    """

    time: float
    armed: bool  # the disk really was full (filler written, WAL truncated)
    refused_logged: bool  # the daemon logged that it refused the transaction
    started: bool  # a transaction started anyway
    daemon_alive: bool
    kind: str = "start"
    energy_cut: bool = False  # "stop": the contactor was commanded open


@dataclass(frozen=True, slots=True)
class Event:
    """Something the rig did that can end a transaction, from ``start`` to ``end``."""

    kind: str  # "card", "remote_stop", "unplug", "fault", "term"
    connector: int | None  # None: any connector (a card, a station-wide fault)
    start: float
    end: float


@dataclass
class Knowledge:
    attempts: int  # TransactionMessageAttempts the station ran with
    kills: list[Kill] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    station_txs: list[StationTx] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    faults: list[FaultWindow] = field(default_factory=list)
    disk_full: list[DiskFull] = field(default_factory=list)
    call_timeout: float = 30.0
    outbox_left: int = 0
    integrity: str = "ok"
    settled: bool = True
    settle_detail: str = ""
    final_exit_code: int | None = 0
    unexpected_exits: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


@dataclass
class Verdict:
    violations: list[Violation] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, rule: str, detail: str) -> None:
        self.violations.append(Violation(rule, detail))
