"""The durable outbox: order, exactly-once deletion, retries, transactionId, reopening."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from chargerd.clock import iso
from chargerd.features.outbox import Outbox
from chargerd.link import CallErrorReceived, CallResultInvalid, CallTimeout, NotConnected
from chargerd.store import Store

ERRORS = (CallErrorReceived, CallResultInvalid)
OFFLINE = (NotConnected, CallTimeout)


def refused() -> CallErrorReceived:
    return CallErrorReceived("InternalError", "try later", {})


def add_tx(store: Store, clock, *, transaction_id: int | None = None) -> int:
    with store.transaction():
        cur = store.execute(
            "INSERT INTO transactions(connector_id, id_tag, meter_start_wh, start_time, state, "
            "last_energy_wh, last_energy_time, transaction_id) "
            "VALUES (1, 'TAG', 0, ?, 'active', 0, ?, ?)",
            (iso(clock.now()), iso(clock.now()), transaction_id),
        )
    return int(cur.lastrowid)


def enqueue(store: Store, outbox: Outbox, action: str, payload: dict, tx: int | None = None):
    with store.transaction():
        return outbox.enqueue(action, payload, tx_local_id=tx)


def queued(store: Store) -> list[tuple[str, dict, int]]:
    return [
        (r["action"], json.loads(r["payload"]), r["attempts"])
        for r in store.query("SELECT * FROM outbox ORDER BY seq")
    ]


class Runner:
    """Runs Outbox.run against the fake link; ``gate`` is the link-up-and-registered state."""

    def __init__(self, outbox: Outbox, link) -> None:
        self.outbox = outbox
        self.link = link
        self.gate = asyncio.Event()
        self.gate.set()
        self.task: asyncio.Task | None = None

    async def _ready(self) -> None:
        await self.gate.wait()

    def start(self) -> Runner:
        self.task = asyncio.create_task(
            self.outbox.run(self.link.call, self._ready, errors=ERRORS, offline_errors=OFFLINE)
        )
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def until_empty(self, timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout):
            while self.outbox.pending():
                if self.task is not None and self.task.done():
                    self.task.result()  # raise what ended it
                await asyncio.sleep(0.005)


@pytest.fixture
async def runner(outbox, link):
    r = Runner(outbox, link)
    yield r
    if r.task is not None:
        await r.stop()


def small_outbox(store, clock, *, attempts: int = 3, interval: float = 0.05) -> Outbox:
    """Retry intervals of a few real milliseconds, so the retries happen within the test."""
    return Outbox(store, clock, attempts=lambda: attempts, retry_interval=lambda: interval)


# -- order and delivery --------------------------------------------------------------------


async def test_messages_go_out_strictly_in_the_order_they_were_queued(store, clock, outbox, link):
    link.default = {"MeterValues": {}, "StopTransaction": {}}
    link.answer("StartTransaction", {"transactionId": 42, "idTagInfo": {"status": "Accepted"}})
    tx = add_tx(store, clock)

    def start_result(msg, result):
        store.execute(
            "UPDATE transactions SET transaction_id = ? WHERE local_id = ?",
            (result["transactionId"], msg.tx_local_id),
        )

    outbox.on_result("StartTransaction", start_result)
    enqueue(store, outbox, "StartTransaction", {"connectorId": 1, "idTag": "TAG"}, tx)
    for i in range(5):
        enqueue(store, outbox, "MeterValues", {"connectorId": 1, "transactionId": 0, "n": i}, tx)
    enqueue(store, outbox, "StopTransaction", {"transactionId": 0, "meterStop": 5}, tx)
    runner = Runner(outbox, link).start()
    try:
        await runner.until_empty()
    finally:
        await runner.stop()
    assert link.actions() == ["StartTransaction"] + ["MeterValues"] * 5 + ["StopTransaction"]
    assert [p.get("n") for a, p in link.calls if a == "MeterValues"] == [0, 1, 2, 3, 4]
    # filled in at send time from what the StartTransaction result wrote
    assert all(p["transactionId"] == 42 for a, p in link.calls[1:])
    assert "transactionId" not in link.calls[0][1]
    assert outbox.delivered == 7 and outbox.dropped == 0


async def test_a_refused_head_blocks_the_messages_behind_it(store, clock, link):
    outbox = small_outbox(store, clock, interval=0.02)
    link.answer("Heartbeat", refused())  # any action will do for the outbox
    link.default = {"Heartbeat": {}, "DataTransfer": {}}
    enqueue(store, outbox, "Heartbeat", {"n": 1})
    enqueue(store, outbox, "DataTransfer", {"n": 2})
    runner = Runner(outbox, link).start()
    try:
        await link.wait_calls(1)
        clock.advance(0.02)  # the retry is due
        await runner.until_empty()
    finally:
        await runner.stop()
    assert link.actions() == ["Heartbeat", "Heartbeat", "DataTransfer"]


async def test_nothing_is_sent_until_the_link_is_up_and_the_boot_accepted(store, outbox, runner):
    runner.link.default = {"Heartbeat": {}}
    runner.gate.clear()
    enqueue(store, outbox, "Heartbeat", {})
    runner.start()
    await asyncio.sleep(0.05)
    assert runner.link.calls == []
    runner.gate.set()
    await runner.until_empty()
    assert runner.link.actions() == ["Heartbeat"]


async def test_a_message_queued_while_idle_wakes_the_sender(store, outbox, runner):
    runner.link.default = {"Heartbeat": {}}
    runner.start()
    await asyncio.sleep(0.02)
    enqueue(store, outbox, "Heartbeat", {})
    await runner.link.wait_calls(1)


# -- a message is deleted only together with its result's effects --------------------------


async def test_a_failing_result_handler_leaves_the_message_queued_and_applies_nothing(
    store, clock, outbox, link
):
    link.default = {"StartTransaction": {"transactionId": 7, "idTagInfo": {"status": "Accepted"}}}
    tx = add_tx(store, clock)

    def broken(msg, result):
        store.execute("UPDATE transactions SET transaction_id = 7 WHERE local_id = ?", (tx,))
        raise RuntimeError("bug in the handler")

    outbox.on_result("StartTransaction", broken)
    enqueue(store, outbox, "StartTransaction", {"connectorId": 1, "idTag": "TAG"}, tx)
    runner = Runner(outbox, link).start()
    await link.wait_calls(1)
    await asyncio.sleep(0.02)
    assert not runner.task.done()  # the sender survives the failure (no restart loop)
    await runner.stop()
    assert [a for a, _, _ in queued(store)] == ["StartTransaction"]
    row = store.query_one("SELECT transaction_id FROM transactions WHERE local_id = ?", (tx,))
    assert row["transaction_id"] is None  # the handler's write was rolled back with it
    assert outbox.delivered == 0

    # The next sender (after the restart the failure causes) delivers it again, once.
    outbox.on_result(
        "StartTransaction",
        lambda msg, result: store.execute(
            "UPDATE transactions SET transaction_id = ? WHERE local_id = ?",
            (result["transactionId"], msg.tx_local_id),
        ),
    )
    runner = Runner(outbox, link).start()
    try:
        await runner.until_empty()
    finally:
        await runner.stop()
    row = store.query_one("SELECT transaction_id FROM transactions WHERE local_id = ?", (tx,))
    assert row["transaction_id"] == 7
    assert outbox.delivered == 1


# -- retries -------------------------------------------------------------------------------


async def test_a_callerror_counts_an_attempt_and_waits_interval_times_attempts(
    store, clock, config, outbox, runner
):
    assert config.set("TransactionMessageRetryInterval", "60") == "Accepted"
    runner.link.answer("MeterValues", refused(), refused())
    runner.link.default = {"MeterValues": {}, "Heartbeat": {}}
    enqueue(store, outbox, "MeterValues", {"connectorId": 1, "meterValue": []})
    t0 = clock.now().timestamp()
    runner.start()
    await runner.link.wait_calls(1)
    await asyncio.sleep(0.02)
    row = store.query_one("SELECT attempts, not_before FROM outbox")
    assert (row["attempts"], row["not_before"]) == (1, t0 + 60)

    await asyncio.sleep(0.05)  # not due: nothing is sent again
    assert len(runner.link.calls) == 1

    clock.advance(60)
    enqueue(store, outbox, "Heartbeat", {})  # wakes the sender; the head goes first
    await runner.link.wait_calls(2)
    await asyncio.sleep(0.02)
    row = store.query_one("SELECT attempts, not_before FROM outbox ORDER BY seq LIMIT 1")
    assert (row["attempts"], row["not_before"]) == (2, t0 + 60 + 120)
    assert runner.link.actions() == ["MeterValues", "MeterValues"]


async def test_a_message_is_dropped_after_transaction_message_attempts(store, clock, link, caplog):
    outbox = small_outbox(store, clock, attempts=3, interval=0.01)
    link.answer(
        "StopTransaction",
        refused(),
        CallResultInvalid("StopTransaction", "FormationViolation", "bad", {}),
        refused(),
    )
    link.default = {"Heartbeat": {}}
    enqueue(store, outbox, "StopTransaction", {"meterStop": 1})
    enqueue(store, outbox, "Heartbeat", {})
    runner = Runner(outbox, link).start()
    try:
        for n in (1, 2):
            await link.wait_calls(n)
            await asyncio.sleep(0.01)
            row = store.query_one("SELECT attempts, not_before FROM outbox ORDER BY seq LIMIT 1")
            assert row["attempts"] == n
            assert row["not_before"] == pytest.approx(clock.now().timestamp() + 0.01 * n)
            clock.advance(0.01 * n)
        await runner.until_empty()
    finally:
        await runner.stop()
    assert link.actions() == ["StopTransaction"] * 3 + ["Heartbeat"]
    assert outbox.dropped == 1 and outbox.delivered == 1
    assert any(
        r.levelno == logging.ERROR and "after 3 attempts" in r.getMessage() for r in caplog.records
    )


async def test_offline_errors_do_not_count_as_attempts(store, clock, link):
    outbox = small_outbox(store, clock, attempts=1, interval=0.01)
    link.answer("StopTransaction", NotConnected("link down"), CallTimeout("no answer"))
    link.default = {"StopTransaction": {}}
    enqueue(store, outbox, "StopTransaction", {"meterStop": 1})
    runner = Runner(outbox, link).start()
    try:
        await link.wait_calls(2)
        assert store.query_one("SELECT attempts FROM outbox")["attempts"] == 0
        await runner.until_empty()
    finally:
        await runner.stop()
    # with TransactionMessageAttempts=1 a single counted failure would have dropped it
    assert outbox.delivered == 1 and outbox.dropped == 0
    assert link.actions() == ["StopTransaction"] * 3


# -- transactionId -------------------------------------------------------------------------


async def test_the_transaction_id_is_taken_from_the_transactions_table_at_send_time(
    store, clock, outbox, runner
):
    runner.link.default = {"MeterValues": {}}
    tx = add_tx(store, clock)
    enqueue(store, outbox, "MeterValues", {"connectorId": 1, "transactionId": 0}, tx)
    # learned after the message was queued (the StartTransaction result of an offline start)
    with store.transaction():
        store.execute("UPDATE transactions SET transaction_id = 991 WHERE local_id = ?", (tx,))
    runner.start()
    await runner.until_empty()
    assert runner.link.calls == [("MeterValues", {"connectorId": 1, "transactionId": 991})]
    # the stored payload is not rewritten: it kept the placeholder
    assert outbox.delivered == 1


async def test_a_message_of_a_transaction_that_never_got_an_id_is_dropped_with_an_error(
    store, clock, outbox, runner, caplog
):
    runner.link.default = {"Heartbeat": {}}
    tx = add_tx(store, clock)  # its StartTransaction was dropped: no transaction_id
    enqueue(store, outbox, "StopTransaction", {"transactionId": 0, "meterStop": 3}, tx)
    enqueue(store, outbox, "Heartbeat", {})
    runner.start()
    await runner.until_empty()
    assert runner.link.actions() == ["Heartbeat"]
    assert outbox.dropped == 1
    assert any(
        r.levelno == logging.ERROR and "never got a transactionId" in r.getMessage()
        for r in caplog.records
    )


# -- durability ------------------------------------------------------------------------------


async def test_queued_messages_survive_reopening_the_store_in_order(tmp_path, clock, link):
    path = tmp_path / "reopen.db"
    first = Store.open(path)
    ob = small_outbox(first, clock)
    for n in range(4):
        enqueue(first, ob, "DataTransfer", {"vendorId": "x", "messageId": str(n)})
    first.close()

    second = Store.open(path)
    try:
        ob2 = small_outbox(second, clock)
        assert ob2.pending() == 4
        assert ob2.head().payload == {"vendorId": "x", "messageId": "0"}
        link.default = {"DataTransfer": {"status": "Accepted"}}
        runner = Runner(ob2, link).start()
        try:
            await runner.until_empty()
        finally:
            await runner.stop()
        assert [p["messageId"] for _, p in link.calls] == ["0", "1", "2", "3"]
    finally:
        second.close()


async def test_attempts_already_counted_survive_reopening(tmp_path, clock, link):
    path = tmp_path / "attempts.db"
    first = Store.open(path)
    ob = small_outbox(first, clock, attempts=2, interval=0.01)
    enqueue(first, ob, "StopTransaction", {"meterStop": 1})
    link.answer("StopTransaction", refused(), refused())
    runner = Runner(ob, link).start()
    await link.wait_calls(1)
    await asyncio.sleep(0.01)
    await runner.stop()
    first.close()

    second = Store.open(path)
    try:
        ob2 = small_outbox(second, clock, attempts=2, interval=0.01)
        assert ob2.head().attempts == 1
        clock.advance(1)
        runner = Runner(ob2, link).start()
        try:
            await runner.until_empty()
        finally:
            await runner.stop()
        assert ob2.dropped == 1  # the second refusal was the last of 2 attempts
    finally:
        second.close()
