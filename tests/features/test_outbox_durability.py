"""Which deliveries the outbox forgets with an fsync, and which without.

Observed from inside the delete's own SQLite transaction: a result handler
runs there, and PRAGMA synchronous says whether that commit will be synced
(2 = FULL) or not (1 = NORMAL).
"""

from __future__ import annotations

import asyncio

from chargerd.clock import iso
from chargerd.features.outbox import Outbox
from chargerd.link import CallErrorReceived, CallResultInvalid, CallTimeout, NotConnected
from chargerd.store import Store

FULL, NORMAL = 2, 1


def synchronous(store: Store) -> int:
    row = store.query_one("PRAGMA synchronous")
    assert row is not None
    return int(row[0])


def add_tx(store: Store, clock) -> int:
    with store.transaction():
        cur = store.execute(
            "INSERT INTO transactions(connector_id, id_tag, meter_start_wh, start_time, state, "
            "last_energy_wh, last_energy_time, transaction_id) "
            "VALUES (1, 'TAG', 0, ?, 'active', 0, ?, 7)",
            (iso(clock.now()), iso(clock.now())),
        )
    return int(cur.lastrowid)


async def deliver_all(store: Store, outbox: Outbox, link) -> None:
    async def ready() -> None:
        return None

    task = asyncio.create_task(
        outbox.run(
            link.call,
            ready,
            errors=(CallErrorReceived, CallResultInvalid),
            offline_errors=(NotConnected, CallTimeout),
        )
    )
    try:
        async with asyncio.timeout(5):
            while outbox.pending():
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_meter_values_are_forgotten_without_fsync_but_every_nth_is_synced(
    store, clock, outbox, link
):
    outbox.max_unsynced_deliveries = 3
    tx = add_tx(store, clock)
    seen: list[tuple[str, int]] = []
    outbox.on_result("MeterValues", lambda msg, _r: seen.append((msg.action, synchronous(store))))
    with store.transaction():
        for i in range(8):
            outbox.enqueue(
                "MeterValues", {"connectorId": 1, "meterValue": [], "i": i}, tx_local_id=tx
            )
    link.default["MeterValues"] = {}
    await deliver_all(store, outbox, link)
    assert [s for _, s in seen] == [NORMAL, NORMAL, NORMAL, FULL, NORMAL, NORMAL, NORMAL, FULL]
    assert synchronous(store) == FULL  # the connection is back to durable commits
    assert outbox.delivered == 8


async def test_start_and_stop_deliveries_stay_durable_one_by_one(store, clock, outbox, link):
    tx = add_tx(store, clock)
    seen: list[tuple[str, int]] = []
    for action in ("StartTransaction", "StopTransaction", "MeterValues"):
        outbox.on_result(action, lambda msg, _r: seen.append((msg.action, synchronous(store))))
    start = {"connectorId": 1, "idTag": "TAG", "meterStart": 0, "timestamp": iso(clock.now())}
    with store.transaction():
        outbox.enqueue("StartTransaction", start, tx_local_id=tx)
        outbox.enqueue("MeterValues", {"connectorId": 1, "meterValue": []}, tx_local_id=tx)
        outbox.enqueue("StopTransaction", {"meterStop": 1, "reason": "Local"}, tx_local_id=tx)
    link.default.update(
        {
            "StartTransaction": {"transactionId": 7, "idTagInfo": {"status": "Accepted"}},
            "MeterValues": {},
            "StopTransaction": {},
        }
    )
    await deliver_all(store, outbox, link)
    assert seen == [
        ("StartTransaction", FULL),
        ("MeterValues", NORMAL),
        ("StopTransaction", FULL),
    ]


def test_a_non_durable_transaction_commits_and_restores_full_sync(store):
    with store.transaction(durable=False):
        assert synchronous(store) == NORMAL
        store.set_kv("k", "v")
    assert synchronous(store) == FULL
    assert store.get_kv("k") == "v"
    try:
        with store.transaction(durable=False):
            store.set_kv("k", "w")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert synchronous(store) == FULL
    assert store.get_kv("k") == "v"
