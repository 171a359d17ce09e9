"""Transactions: write-ahead start and stop, the power-loss stop, the CSMS's verdicts."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

import pytest

from chargerd.clock import iso
from chargerd.features.metering import ENERGY, POWER
from chargerd.features.transactions import TransactionRefused, TransactionService
from chargerd.store import StoreFullError
from hal.interfaces import MeterSample

TAG = "0A1B2C3D"


def rows(b, action: str | None = None) -> list[dict]:
    return [
        {**r, "payload": json.loads(r["payload"])}
        for r in b.outbox_rows()
        if action is None or r["action"] == action
    ]


async def started(b, *, id_tag: str = TAG, parent: str | None = None):
    conn = b.conn(1)
    sample = await b.supervisor.read_meter(conn)
    tx = b.transactions.begin(conn, id_tag=id_tag, parent_id_tag=parent, sample=sample)
    return conn, tx


# -- begin ---------------------------------------------------------------------------------


async def test_begin_writes_the_transaction_and_its_start_transaction_together(make_bench):
    b = make_bench()
    b.sim.set_energy_wh(1, 1234.6)
    conn, tx = await started(b, parent="PARENT")
    (row,) = b.tx_rows()
    assert row["state"] == "active"
    assert (row["connector_id"], row["id_tag"], row["parent_id_tag"]) == (1, TAG, "PARENT")
    assert row["meter_start_wh"] == pytest.approx(1234.6)
    assert row["transaction_id"] is None
    (msg,) = rows(b)
    assert msg["action"] == "StartTransaction"
    assert msg["tx_local_id"] == row["local_id"] == tx.local_id
    assert msg["payload"] == {
        "connectorId": 1,
        "idTag": TAG,
        "meterStart": 1235,
        "timestamp": iso(b.clock.now()),
    }
    assert conn.tx is tx and conn.begin_sample is not None


async def test_a_reservation_id_goes_into_start_transaction(make_bench):
    b = make_bench()
    conn = b.conn(1)
    sample = await b.supervisor.read_meter(conn)
    b.transactions.begin(conn, id_tag=TAG, parent_id_tag=None, sample=sample, reservation_id=9)
    assert rows(b)[0]["payload"]["reservationId"] == 9


async def test_a_failure_inside_begin_leaves_neither_the_row_nor_the_message(
    make_bench, monkeypatch
):
    b = make_bench()

    def broken(*args, **kwargs):
        raise RuntimeError("crash between the two writes")

    monkeypatch.setattr(b.outbox, "enqueue", broken)
    with pytest.raises(RuntimeError):
        await started(b)
    assert b.tx_rows() == [] and b.outbox_rows() == []
    assert b.conn(1).tx is None


@pytest.mark.parametrize(
    "error",
    [StoreFullError("database or disk is full"), sqlite3.OperationalError("disk I/O error")],
    ids=["full", "io-error"],
)
async def test_a_store_that_cannot_write_refuses_the_transaction(make_bench, monkeypatch, error):
    b = make_bench()

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(b.outbox, "enqueue", failing)
    with pytest.raises(TransactionRefused):
        await started(b)
    assert b.tx_rows() == [] and b.outbox_rows() == []
    assert b.conn(1).tx is None


async def test_a_really_full_database_refuses_the_start_and_stays_intact(make_bench):
    b = make_bench()
    store = b.store
    # Fill the outbox's pages up to a page-count limit: SQLITE_FULL, as on a full disk.
    pages = store.query_one("PRAGMA page_count")[0]
    store.execute(f"PRAGMA max_page_count = {pages + 8}")
    for size in (3000, 300, 30, 1):  # large rows first, then fill the last page's gaps
        with pytest.raises(StoreFullError):
            for _ in range(1000):
                with store.transaction():
                    b.outbox.enqueue("DataTransfer", {"vendorId": "fill", "data": "x" * size})
    filler = len(b.outbox_rows())
    with pytest.raises(TransactionRefused):
        await started(b)
    assert b.tx_rows() == []
    assert len(b.outbox_rows()) == filler
    assert b.conn(1).tx is None
    assert store.query_one("PRAGMA integrity_check")[0] == "ok"
    # once there is room again, the station starts normally
    store.execute("PRAGMA max_page_count = 1000000")
    await started(b)
    assert [r["state"] for r in b.tx_rows()] == ["active"]


async def test_begin_refuses_a_second_transaction_and_a_meter_never_read(make_bench):
    b = make_bench()
    await started(b)
    with pytest.raises(TransactionRefused):
        await started(b)
    b2 = b.conn(1)
    b2.tx = None
    with pytest.raises(TransactionRefused):
        b.transactions.begin(b2, id_tag=TAG, parent_id_tag=None, sample=None)
    assert len(b.tx_rows()) == 1


# -- end -----------------------------------------------------------------------------------


async def test_end_writes_stop_transaction_with_reason_and_rounded_meter_stop(make_bench):
    b = make_bench()
    b.sim.set_energy_wh(1, 100.0)
    conn, tx = await started(b)
    b.clock.advance(600)
    b.sim.set_energy_wh(1, 5432.5)
    sample = await b.supervisor.read_meter(conn)
    b.transactions.end(conn, reason="EVDisconnected", sample=sample)
    assert conn.tx is None
    (row,) = b.tx_rows()
    assert (row["state"], row["stop_reason"]) == ("stopped", "EVDisconnected")
    assert row["meter_stop_wh"] == pytest.approx(5432.5)
    assert row["stop_time"] == iso(b.clock.now())
    stop = rows(b, "StopTransaction")[0]
    assert stop["tx_local_id"] == tx.local_id
    assert stop["payload"] == {
        "transactionId": 0,  # the outbox fills it in at send time
        "meterStop": 5432,  # round half to even: 5432.5 -> 5432
        "timestamp": iso(b.clock.now()),
        "reason": "EVDisconnected",
        "idTag": TAG,
    }


async def test_end_names_the_card_that_stopped(make_bench):
    b = make_bench()
    conn, _ = await started(b)
    b.transactions.end(conn, reason="Local", sample=conn.sample, id_tag="99AABBCC")
    assert rows(b, "StopTransaction")[0]["payload"]["idTag"] == "99AABBCC"


async def test_end_without_a_reading_uses_the_last_persisted_energy(make_bench):
    b = make_bench()
    conn, _ = await started(b)
    b.clock.advance(5)
    b.transactions.persist_energy(conn, MeterSample(energy_wh=777.4))
    b.transactions.end(conn, reason="Other", sample=None)
    assert rows(b, "StopTransaction")[0]["payload"]["meterStop"] == 777


async def test_end_attaches_stop_txn_sampled_data_as_begin_and_end_values(make_bench):
    b = make_bench(ocpp={"StopTxnSampledData": f"{ENERGY},{POWER}"})
    b.sim.plug(1)
    b.sim.set_energy_wh(1, 1000.0)
    conn, _tx = await started(b)
    start_time = b.clock.now()
    conn.hw.pilot.set_offered_current(16)
    b.sim.charge(1)
    await conn.hw.contactor.close()
    b.clock.advance(3600)  # 16 A x 3 phases x 230 V for an hour = 11040 Wh
    sample = await b.supervisor.read_meter(conn)
    b.transactions.end(conn, reason="Local", sample=sample)
    data = rows(b, "StopTransaction")[0]["payload"]["transactionData"]
    assert [d["timestamp"] for d in data] == [iso(start_time), iso(b.clock.now())]
    begin, end = (d["sampledValue"] for d in data)
    assert [(v["measurand"], v["value"], v["context"]) for v in begin] == [
        (ENERGY, "1000.0", "Transaction.Begin"),
        (POWER, "0.0", "Transaction.Begin"),
    ]
    assert [(v["measurand"], v["value"], v["context"]) for v in end] == [
        (ENERGY, "12040.0", "Transaction.End"),
        (POWER, "11040.0", "Transaction.End"),
    ]


async def test_end_without_stop_txn_sampled_data_sends_no_transaction_data(make_bench):
    b = make_bench()
    conn, _ = await started(b)
    b.transactions.end(conn, reason="Local", sample=conn.sample)
    assert "transactionData" not in rows(b, "StopTransaction")[0]["payload"]


async def test_end_of_a_connector_without_transaction_does_nothing(make_bench):
    b = make_bench()
    b.transactions.end(b.conn(1), reason="Local", sample=None)
    assert b.outbox_rows() == []


# -- meter values and the power-loss stop --------------------------------------------------


async def test_queue_meter_values_persists_the_energy_in_the_same_commit(make_bench):
    b = make_bench()
    conn, tx = await started(b)
    b.clock.advance(60)
    sample = MeterSample(energy_wh=321.0)
    mv = [{"timestamp": iso(b.clock.now()), "sampledValue": [{"value": "321.0"}]}]
    b.transactions.queue_meter_values(conn, mv, sample=sample)
    msg = rows(b, "MeterValues")[0]
    assert msg["payload"] == {"connectorId": 1, "transactionId": 0, "meterValue": mv}
    assert msg["tx_local_id"] == tx.local_id
    (row,) = b.tx_rows()
    assert (row["last_energy_wh"], row["last_energy_time"]) == (321.0, iso(b.clock.now()))


async def test_power_loss_recovery_stops_what_was_running_once(make_bench, clock):
    b = make_bench()
    b.sim.set_energy_wh(1, 50.0)
    conn, tx = await started(b)
    clock.advance(90)
    b.transactions.persist_energy(conn, MeterSample(energy_wh=2500.4))
    persisted_at = clock.now()
    clock.advance(3600)  # the process died; it comes back an hour later

    restarted = TransactionService(
        store=b.store, clock=clock, outbox=b.outbox, config=b.config, cache=b.cache
    )
    assert restarted.recover_power_loss() == [tx.local_id]
    stop = rows(b, "StopTransaction")
    assert len(stop) == 1
    assert stop[0]["tx_local_id"] == tx.local_id
    assert stop[0]["payload"] == {
        "transactionId": 0,
        "meterStop": 2500,
        "timestamp": iso(persisted_at),
        "reason": "PowerLoss",
        "idTag": TAG,
    }
    (row,) = b.tx_rows()
    assert (row["state"], row["stop_reason"], row["stop_time"]) == (
        "stopped",
        "PowerLoss",
        iso(persisted_at),
    )
    assert restarted.recover_power_loss() == []
    assert len(rows(b, "StopTransaction")) == 1


async def test_power_loss_stop_takes_the_meter_register_read_at_the_restart(make_bench, clock):
    b = make_bench()
    conn, tx = await started(b)
    b.transactions.persist_energy(conn, MeterSample(energy_wh=276.0))
    persisted_at = clock.now()
    clock.advance(60)  # the register grew to 301 Wh before the power went, then stood still
    b.sim.set_energy_wh(1, 301.0)
    restarted = TransactionService(
        store=b.store, clock=clock, outbox=b.outbox, config=b.config, cache=b.cache
    )
    meters = {1: b.conn(1).hw.meter}
    assert await restarted.recover_power_loss_reading(meters, max_power_w=22080.0) == [
        tx.local_id
    ]
    (stop,) = rows(b, "StopTransaction")
    assert stop["payload"]["meterStop"] == 301
    assert stop["payload"]["timestamp"] == iso(persisted_at)
    (row,) = b.tx_rows()
    assert row["meter_stop_wh"] == 301.0


async def test_an_implausible_register_leaves_the_last_persisted_reading(make_bench, clock):
    b = make_bench()
    conn, tx = await started(b)
    b.transactions.persist_energy(conn, MeterSample(energy_wh=276.0))
    clock.advance(10)
    restarted = TransactionService(
        store=b.store, clock=clock, outbox=b.outbox, config=b.config, cache=b.cache
    )
    assert restarted.recover_power_loss({1: 5000.0}, max_power_w=22080.0) == [tx.local_id]
    (stop,) = rows(b, "StopTransaction")
    assert stop["payload"]["meterStop"] == 276


async def test_power_loss_recovery_leaves_stopped_transactions_alone(make_bench):
    b = make_bench()
    conn, _ = await started(b)
    b.transactions.end(conn, reason="Local", sample=conn.sample)
    assert b.transactions.recover_power_loss() == []
    assert len(rows(b, "StopTransaction")) == 1


# -- the CSMS's answer to StartTransaction -------------------------------------------------


async def test_an_accepted_start_sets_the_transaction_id_and_caches_the_card(make_bench):
    b = make_bench()
    conn, tx = await started(b)
    expiry = iso(b.clock.now() + timedelta(days=1))
    b.link.answer(
        "StartTransaction",
        {
            "transactionId": 55,
            "idTagInfo": {"status": "Accepted", "parentIdTag": "FLEET", "expiryDate": expiry},
        },
    )
    invalidated = []
    b.transactions.set_deauthorize(invalidated.append)
    await b.deliver()
    assert tx.transaction_id == 55 and tx.parent_id_tag == "FLEET" and not tx.invalid
    (row,) = b.tx_rows()
    assert (row["transaction_id"], row["id_tag_status"], row["parent_id_tag"]) == (
        55,
        "Accepted",
        "FLEET",
    )
    cached = b.cache.get(TAG)
    assert cached is not None and cached.status == "Accepted" and cached.parent_id_tag == "FLEET"
    assert b.transactions.find_by_transaction_id(55) is conn
    assert b.transactions.find_by_transaction_id(56) is None
    assert invalidated == []


async def test_an_invalid_start_flags_the_transaction_and_asks_for_deauthorization(make_bench):
    b = make_bench()
    _conn, tx = await started(b)
    b.link.answer("StartTransaction", {"transactionId": 56, "idTagInfo": {"status": "Invalid"}})
    invalidated = []
    b.transactions.set_deauthorize(invalidated.append)
    await b.deliver()
    assert tx.invalid and tx.transaction_id == 56
    assert invalidated == [1]
    assert b.tx_rows()[0]["id_tag_status"] == "Invalid"
    assert b.cache.get(TAG).status == "Invalid"


async def test_a_start_result_after_the_transaction_ended_still_records_the_id(make_bench):
    """An offline start: the stop is queued before the StartTransaction is answered."""
    b = make_bench()
    conn, _tx = await started(b)
    b.transactions.end(conn, reason="Local", sample=conn.sample)
    b.link.answer("StartTransaction", {"transactionId": 77, "idTagInfo": {"status": "Blocked"}})
    b.link.answer("StopTransaction", {"idTagInfo": {"status": "Blocked"}})
    invalidated = []
    b.transactions.set_deauthorize(invalidated.append)
    await b.deliver()
    assert b.tx_rows()[0]["transaction_id"] == 77
    assert b.link.actions() == ["StartTransaction", "StopTransaction"]
    assert b.link.calls[1][1]["transactionId"] == 77
    assert invalidated == []  # nothing left to stop
