"""A card on the reader: stop its own (or its group's) transaction, or authorize a new one."""

from __future__ import annotations

import asyncio
import json

import pytest

from chargerd.features.cards import CardService

TAG = "0A1B2C3D"
SIBLING = "11223344"
STRANGER = "55667788"


def accepted(parent: str | None = None) -> dict:
    info = {"status": "Accepted"}
    if parent:
        info["parentIdTag"] = parent
    return {"idTagInfo": info}


def stops(b) -> list[dict]:
    return [json.loads(r["payload"]) for r in b.outbox_rows() if r["action"] == "StopTransaction"]


def starts(b) -> list[dict]:
    return [json.loads(r["payload"]) for r in b.outbox_rows() if r["action"] == "StartTransaction"]


@pytest.fixture
def bench(make_bench):
    return make_bench(connectors=1)


def cards_for(b, online: bool = True) -> CardService:
    return CardService(
        supervisor=b.supervisor,
        authorizer=b.authorizer,
        config=b.config,
        online=lambda: online,
    )


async def charging_with(b, id_tag: str, parent: str | None = None, n: int = 1) -> None:
    b.sim.plug(n)
    b.supervisor.grant(b.conn(n), id_tag=id_tag, parent_id_tag=parent)
    await b.tick()
    b.sim.charge(n)
    await b.tick()
    assert b.conn(n).status == "Charging"


async def test_a_card_authorizes_and_the_plugged_ev_starts(bench):
    b = bench
    cards = cards_for(b)
    b.sim.plug(1)
    await b.tick()
    b.link.answer("Authorize", accepted())
    assert await cards.present(TAG) == "authorized on connector 1"
    assert b.link.sent("Authorize") == [("Authorize", {"idTag": TAG})]
    await b.tick()
    assert [s["idTag"] for s in starts(b)] == [TAG]


async def test_the_same_card_stops_its_transaction_without_asking_the_csms(bench):
    b = bench
    await charging_with(b, TAG)
    result = await cards_for(b).present(TAG)
    assert result == "stopped transaction on connector 1"
    (stop,) = stops(b)
    assert (stop["reason"], stop["idTag"]) == ("Local", TAG)
    assert b.link.calls == []
    assert not b.conn(1).hw.contactor.closed


async def test_the_same_card_stops_whatever_the_case_of_the_id_tag(bench):
    """idTags are CiString20: a remote start for 0a1b2c3d is stopped by card 0A1B2C3D."""
    b = bench
    await charging_with(b, TAG.lower())
    assert await cards_for(b).present(TAG) == "stopped transaction on connector 1"
    assert stops(b)[0]["reason"] == "Local"
    assert b.link.calls == []


async def test_a_card_with_the_same_parent_stops_the_transaction(bench):
    b = bench
    await charging_with(b, TAG, parent="FLEET")
    b.link.answer("Authorize", accepted(parent="FLEET"))
    result = await cards_for(b).present(SIBLING)
    assert result == "stopped transaction on connector 1 (same parent)"
    (stop,) = stops(b)
    assert (stop["reason"], stop["idTag"]) == ("Local", SIBLING)


async def test_another_card_does_not_stop_someone_elses_transaction(bench):
    b = bench
    await charging_with(b, TAG, parent="FLEET")
    b.link.answer("Authorize", accepted(parent="OTHERFLEET"))
    result = await cards_for(b).present(STRANGER)
    assert result == "no connector free"
    assert stops(b) == [] and b.conn(1).tx is not None
    assert b.conn(1).hw.contactor.closed


async def test_another_card_without_any_parent_is_not_even_asked_about(bench):
    b = bench
    await charging_with(b, TAG)
    assert await cards_for(b).present(STRANGER) == "no connector free"
    assert b.link.calls == [] and stops(b) == []


async def test_a_card_is_asked_about_once_when_it_cannot_stop_but_may_start(make_bench):
    b = make_bench(connectors=2)
    await charging_with(b, TAG, parent="FLEET")
    b.link.answer("Authorize", accepted(parent="OTHERFLEET"))
    result = await cards_for(b).present(STRANGER)
    assert result == "authorized on connector 2"
    assert b.link.sent("Authorize") == [("Authorize", {"idTag": STRANGER})]
    assert stops(b) == []


async def test_presenting_the_card_again_withdraws_its_authorization(bench):
    b = bench
    cards = cards_for(b)
    b.link.answer("Authorize", accepted())
    assert await cards.present(TAG) == "authorized on connector 1"
    await b.tick()
    assert b.conn(1).status == "Preparing"
    assert await cards.present(TAG) == "authorization withdrawn on connector 1"
    await b.tick()
    assert b.conn(1).authorization is None and b.conn(1).status == "Available"
    assert len(b.link.sent("Authorize")) == 1
    b.sim.plug(1)
    await b.tick()
    assert starts(b) == []


async def test_a_refused_card_does_nothing(bench):
    b = bench
    cards = cards_for(b)
    b.sim.plug(1)
    await b.tick()
    b.link.answer("Authorize", {"idTagInfo": {"status": "Blocked"}})
    assert await cards.present(STRANGER) == "refused: Blocked"
    await b.tick()
    assert b.conn(1).authorization is None and starts(b) == []
    assert b.conn(1).status == "Preparing"
    assert not b.conn(1).hw.lock.locked


async def test_no_free_connector_refuses_without_asking(bench):
    b = bench
    b.conn(1).operative = False
    assert await cards_for(b).present(TAG) == "no connector free"
    assert b.link.calls == []


async def test_offline_the_cache_decides(bench):
    b = bench
    b.cache.update(TAG, {"status": "Accepted"})
    result = await cards_for(b, online=False).present(TAG)
    assert result == "authorized on connector 1"
    assert b.link.calls == []
    assert await cards_for(b, online=False).present(STRANGER) == "no connector free"


# -- what the station did, for chargerctl sim card ---------------------------------------------


async def _run_until(cards: CardService, reader, fut) -> object:
    task = asyncio.create_task(cards.run(reader))
    try:
        async with asyncio.timeout(2):
            return await fut
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_waiter_gets_the_structured_outcome_of_its_card(bench):
    b = bench
    cards = cards_for(b)
    b.sim.plug(1)
    await b.tick()
    b.link.answer("Authorize", {"idTagInfo": {"status": "Invalid"}}, accepted())
    fut = cards.expect("USER_42")
    b.sim.present_card("USER_42")
    outcome = await _run_until(cards, b.hardware.reader, fut)
    assert (outcome.kind, outcome.status, outcome.connector) == ("refused", "Invalid", None)
    fut = cards.expect("token-0001")  # idTags compare case-insensitively
    b.sim.present_card("TOKEN-0001")
    outcome = await _run_until(cards, b.hardware.reader, fut)
    assert (outcome.kind, outcome.connector) == ("authorized", 1)


async def test_a_stop_outcome_names_both_ids(bench):
    b = bench
    await charging_with(b, TAG)
    b.conn(1).tx.transaction_id = 1000
    local = b.conn(1).tx.local_id
    cards = cards_for(b)
    fut = cards.expect(TAG)
    b.sim.present_card(TAG)
    outcome = await _run_until(cards, b.hardware.reader, fut)
    assert (outcome.kind, outcome.transaction_id, outcome.local_transaction_id) == (
        "stopped",
        1000,
        local,
    )


async def test_a_card_read_under_another_form_answers_the_oldest_waiter(bench):
    cards = cards_for(bench)
    fut = cards.expect("04A1B2C3")  # presented as hex, reported reversed by the reader
    bench.sim.present_card("C3B2A104")
    bench.conn(1).operative = False
    outcome = await _run_until(cards, bench.hardware.reader, fut)
    assert outcome.kind == "no_connector"
    forgotten = cards.expect("X")
    cards.forget(forgotten)
    assert forgotten.cancelled() and not cards._waiters
