"""The chaos invariants of the Reservation and Local Auth List profiles catch what they claim."""

from __future__ import annotations

from datetime import UTC, datetime

from chargerd.bench.chaoslib.journal import Exchange
from chargerd.bench.chaoslib.records import FaultWindow, Knowledge, Verdict
from chargerd.bench.chaoslib.reserve_list import (
    Reserved,
    ReserveListLedger,
    check_reservations_and_list,
)
from chargerd.clock import iso

T = 1_800_000_000.0


def start(at: float, tag: str, connector: int = 1, rid: int | None = None) -> Exchange:
    payload = {"connectorId": connector, "idTag": tag, "meterStart": 0}
    payload["timestamp"] = iso(datetime.fromtimestamp(at, UTC))
    if rid is not None:
        payload["reservationId"] = rid
    return Exchange(0, at, 1, "StartTransaction", payload, f"u{at}")


def judge(ledger: ReserveListLedger, exchanges, faults=()) -> list[str]:
    v = Verdict()
    check_reservations_and_list(
        ledger, list(exchanges), Knowledge(attempts=1, faults=list(faults)), v
    )
    return [str(x) for x in v.violations]


def reserved(**kw) -> ReserveListLedger:
    ledger = ReserveListLedger()
    ledger.reservations.append(Reserved(7, 1, "OWNER", T, T + 60, **kw))
    return ledger


def test_a_foreign_start_on_a_reserved_connector_is_a_violation():
    assert judge(reserved(), [start(T + 5, "STRANGER")])
    assert judge(reserved(), [start(T + 5, "STRANGER", connector=2)]) == []
    assert judge(reserved(), [start(T + 61, "STRANGER")]) == []  # expired
    assert judge(reserved(ended_at=T + 3), [start(T + 5, "STRANGER")]) == []  # cancelled
    assert judge(reserved(), [start(T + 2, "owner", rid=7), start(T + 5, "STRANGER")]) == []
    fault = FaultWindow("lock_jammed", 1, T + 1, T + 2, True)
    assert judge(reserved(), [start(T + 5, "STRANGER")], [fault]) == []


def test_a_start_naming_a_reservation_must_be_its_owner():
    assert judge(reserved(), [start(T + 5, "OWNER", rid=7)]) == []
    assert judge(reserved(), [start(T + 5, "STRANGER", rid=7)])
    assert judge(ReserveListLedger(), [start(T + 5, "OWNER", rid=9)])


def test_the_list_on_disk_must_be_one_the_csms_sent_whole():
    ledger = ReserveListLedger()
    ledger.lists[1] = frozenset({("A", "Accepted"), ("B", "Blocked")})
    ledger.disk = (1, frozenset({("A", "Accepted"), ("B", "Blocked")}))
    assert judge(ledger, []) == []
    ledger.disk = (1, frozenset({("A", "Accepted")}))  # half an update
    assert judge(ledger, [])
    ledger.disk = (2, frozenset())  # a version never sent
    assert judge(ledger, [])
    ledger.disk = (0, frozenset())
    assert judge(ledger, []) == []
    ledger.reported_versions = [5]
    assert judge(ledger, [])
