"""Ended transactions (and their idTags) are forgotten after 30 days, never before delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chargerd.clock import iso
from chargerd.features.retention import forget_old_transactions
from chargerd.store import Store

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "chargerd.db") as s:
        yield s


def add(store: Store, *, ended_days_ago: float | None, queued: bool = False) -> int:
    start = iso(NOW - timedelta(days=(ended_days_ago or 0) + 1))
    stop = None if ended_days_ago is None else iso(NOW - timedelta(days=ended_days_ago))
    with store.transaction():
        cur = store.execute(
            "INSERT INTO transactions(connector_id, id_tag, meter_start_wh, start_time, state, "
            "last_energy_wh, last_energy_time, stop_time) VALUES (1, 'DEADBEEF', 0, ?, ?, 0, ?, ?)",
            (start, "active" if stop is None else "stopped", start, stop),
        )
        local_id = int(cur.lastrowid)
        if queued:
            store.execute(
                "INSERT INTO outbox(action, payload, tx_local_id, created_at) "
                "VALUES ('StopTransaction', '{}', ?, ?)",
                (local_id, start),
            )
    return local_id


def ids(store: Store) -> set[int]:
    return {int(r["local_id"]) for r in store.query("SELECT local_id FROM transactions")}


def test_only_ended_delivered_transactions_older_than_30_days_are_forgotten(store):
    old = add(store, ended_days_ago=31)
    recent = add(store, ended_days_ago=29)
    undelivered = add(store, ended_days_ago=400, queued=True)
    running = add(store, ended_days_ago=None)
    assert forget_old_transactions(store, NOW) == 1
    assert ids(store) == {recent, undelivered, running}
    assert old not in ids(store)
    assert forget_old_transactions(store, NOW) == 0


def test_ids_are_not_reused_after_forgetting(store):
    first = add(store, ended_days_ago=60)
    forget_old_transactions(store, NOW)
    assert add(store, ended_days_ago=None) > first
