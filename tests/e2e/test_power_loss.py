"""kill -9 at every stage of a session: what the CSMS ends up knowing after the restart.

Whenever the process dies, after the restart the CSMS must have: at most one
StartTransaction per transaction, exactly one StopTransaction for each, in
order, energy never going backwards, and the StopTransaction reason PowerLoss
when the process died mid-transaction (the original reason when the stop had
been committed).  The station comes back with the contactor open: Preparing
with the cable still in, Available once it is pulled.

Exactly once is "per accepted CALLRESULT": a message the CSMS took in and
answered while the process was dying never had its answer applied, so it is
sent again.  That duplicate is allowed for the one message in flight at the
kill (answered at most IN_FLIGHT before it), and for no other.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from chargerd.clock import parse_iso

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
CARD = "0A1B2C3D"
IN_FLIGHT = timedelta(milliseconds=100)
SLACK = timedelta(milliseconds=500)
SLOW_CSMS_S = 1.0
TX_ACTIONS = ("StartTransaction", "MeterValues", "StopTransaction")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Outcome:
    """What the stage of the kill allows."""

    transaction: bool | None  # True: there must be one; None: either (killed around the start)
    reasons: tuple[str, ...]  # acceptable StopTransaction reasons
    answer_lost: bool = False  # a CALL of the dead process was received, never answered


MID_TX = Outcome(True, ("PowerLoss",))


async def charging(rig, csms) -> None:
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")


async def offline(rig) -> None:
    await rig.network(False)
    await rig.wait_status(lambda s: not s["ocpp"]["connected"], what="link down")


# -- the stages: each drives the station to a point and returns; the test kills it there ----


def after_card(delay_s: float):
    async def stage(rig, csms) -> Outcome:
        await rig.plug(1)
        await rig.charge(1)  # the EV asks at once: the card starts everything
        await rig.wait_connector(1, "Preparing")
        await rig.card(CARD)
        await asyncio.sleep(delay_s)
        return Outcome(None, ("PowerLoss",))

    return stage


async def start_unanswered(rig, csms) -> Outcome:
    csms.delay_s = SLOW_CSMS_S  # StartTransaction.conf is still to come at the kill
    await rig.plug(1)
    await rig.charge(1)
    await rig.card(CARD)
    await csms.wait_for("StartTransaction")
    return Outcome(True, ("PowerLoss",), answer_lost=True)


async def mid_charge(rig, csms) -> Outcome:
    await charging(rig, csms)
    await csms.wait_for("MeterValues", count=2)
    return MID_TX


def after_stop_card(delay_s: float):
    async def stage(rig, csms) -> Outcome:
        await charging(rig, csms)
        await csms.wait_for("MeterValues")
        await rig.card(CARD)
        await asyncio.sleep(delay_s)
        return Outcome(True, ("Local", "PowerLoss"))

    return stage


async def during_replay(rig, csms) -> Outcome:
    await offline(rig)
    await charging(rig, csms)
    await rig.wait_status(lambda s: s["ocpp"]["outbox_pending"] >= 4, what="samples queued")
    await rig.card(CARD)
    await rig.wait_connector(1, "Finishing")
    await rig.network(True)
    await csms.wait_for("MeterValues", count=2)  # the replay is under way
    return Outcome(True, ("Local",))


async def offline_mid_charge(rig, csms) -> Outcome:
    await offline(rig)
    await charging(rig, csms)
    await rig.wait_status(lambda s: s["ocpp"]["outbox_pending"] >= 3, what="samples queued")
    return MID_TX


STAGES = {
    "right-after-card": after_card(0.0),
    "card+40ms": after_card(0.04),
    "card+150ms": after_card(0.15),
    "start-sent-unanswered": start_unanswered,
    "mid-charge": mid_charge,
    "right-after-stop-card": after_stop_card(0.0),
    "stop-card+50ms": after_stop_card(0.05),
    "during-replay": during_replay,
    "offline-mid-charge": offline_mid_charge,
}


@pytest.mark.parametrize("stage", list(STAGES))
async def test_kill_9_then_restart(stage, make_registered_rig, csms, tx_audit):
    rig = await make_registered_rig(
        ocpp={"MeterValueSampleInterval": 1, "AllowOfflineTxForUnknownId": True}
    )
    outcome = await STAGES[stage](rig, csms)

    t_kill = now()
    rig.kill9()
    csms.delay_s = 0.0
    await rig.start()
    await rig.wait_status(
        lambda s: s["ocpp"]["connected"] and s["ocpp"]["outbox_pending"] == 0,
        timeout=15,
        what="everything delivered after the restart",
    )
    c = await rig.wait_connector(1, "Preparing")  # the cable is still in
    assert c["contactor_closed"] is False
    assert c["transaction_local_id"] is None

    audit = tx_audit()

    def in_flight_at_kill(record) -> bool:
        answered = audit.answered_at(record)
        return answered is not None and answered >= t_kill - IN_FLIGHT

    by_tx = audit.check(allow_duplicate_of=in_flight_at_kill)
    if outcome.answer_lost:
        # The CSMS saw the StartTransaction twice: the dead process's copy, never
        # answered, and the restarted one's, accepted; one transaction on its books.
        first, again = [r for r in audit.attempts if r.action == "StartTransaction"]
        assert audit.answer(first) is None and audit.answer(again)[0] == 3
        assert audit.identity(first) == audit.identity(again)
    orphans = {
        audit.assigned_id(g[0]) for g in audit.duplicates() if g[0].action == "StartTransaction"
    }
    real = {tx_id: msgs for tx_id, msgs in by_tx.items() if tx_id not in orphans}
    if outcome.transaction:
        assert len(real) == 1, by_tx
    else:
        assert len(real) <= 1, by_tx
    for msgs in real.values():
        start, stop = msgs[0].payload, msgs[-1].payload
        assert stop["reason"] in outcome.reasons, stop
        began, ended = parse_iso(start["timestamp"]), parse_iso(stop["timestamp"])
        assert began <= ended <= t_kill + SLACK
        assert start["idTag"] == CARD
        if stop["reason"] == "PowerLoss":
            samples = [m for m in msgs[1:-1] if m.action == "MeterValues"]
            if samples:  # the stop is when the last reading was persisted, not later
                last = parse_iso(samples[-1].payload["meterValue"][0]["timestamp"])
                assert ended >= last

    # Nothing is started again on its own, and the cable comes out normally.
    await asyncio.sleep(0.3)
    assert len(audit.of("StartTransaction")) == len(tx_audit().of("StartTransaction"))
    await rig.unplug(1)
    c = await rig.wait_connector(1, "Available")
    assert c["contactor_closed"] is False


async def test_killed_again_before_the_power_loss_stop_went_out(
    make_registered_rig, csms, tx_audit
):
    """Two power cuts in a row: the second start must not close the transaction again."""
    rig = await make_registered_rig(ocpp={"MeterValueSampleInterval": 1})
    await charging(rig, csms)
    await csms.wait_for("MeterValues")
    rig.kill9()
    seen = len(csms.received)
    await rig.start()
    # Killed again as soon as the replay begins (the PowerLoss stop is queued by then).
    async with asyncio.timeout(10):
        while not [r for r in csms.received[seen:] if r.action in TX_ACTIONS]:
            await asyncio.sleep(0.005)
    t_kill = now()
    rig.kill9()
    await rig.start()
    await rig.wait_status(
        lambda s: s["ocpp"]["connected"] and s["ocpp"]["outbox_pending"] == 0,
        timeout=15,
        what="everything delivered",
    )
    audit = tx_audit()

    def in_flight_at_kill(record) -> bool:
        answered = audit.answered_at(record)
        return answered is not None and answered >= t_kill - IN_FLIGHT

    ((_, msgs),) = audit.check(allow_duplicate_of=in_flight_at_kill).items()
    stops = [m for m in msgs if m.action == "StopTransaction"]
    assert [s.payload["reason"] for s in stops] == ["PowerLoss"]
    c = await rig.wait_connector(1, "Preparing")
    assert c["contactor_closed"] is False


async def test_two_connectors_offline_then_a_power_cut(make_rig, csms, tx_audit):
    """Two sessions interleaved in one queue, begun offline, cut by a kill: each gets its id."""
    other = "0A1B2C3E"
    csms.cards[other] = "Accepted"
    rig = await make_rig(
        connectors=2,
        ocpp={"MeterValueSampleInterval": 1, "AllowOfflineTxForUnknownId": True},
    )
    await rig.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
    )
    await offline(rig)
    for n, card in ((1, CARD), (2, other)):
        await rig.plug(n)
        await rig.wait_connector(n, "Preparing")
        await rig.card(card)
        await rig.charge(n)
        await rig.wait_connector(n, "Charging")
    await rig.wait_status(lambda s: s["ocpp"]["outbox_pending"] >= 6, what="samples queued")
    await rig.card(CARD)  # the first session ends; the second is cut by the kill
    await rig.wait_connector(1, "Finishing")
    await asyncio.sleep(1.1)
    t_kill = now()
    rig.kill9()
    await rig.start()
    await rig.wait_status(
        lambda s: s["ocpp"]["connected"] and s["ocpp"]["outbox_pending"] == 0,
        timeout=15,
        what="everything delivered",
    )
    by_tx = tx_audit().check()
    assert len(by_tx) == 2
    by_connector = {msgs[0].payload["connectorId"]: msgs for msgs in by_tx.values()}
    assert by_connector[1][0].payload["idTag"] == CARD
    assert by_connector[2][0].payload["idTag"] == other
    assert by_connector[1][-1].payload["reason"] == "Local"
    assert by_connector[2][-1].payload["reason"] == "PowerLoss"
    assert parse_iso(by_connector[2][-1].payload["timestamp"]) <= t_kill
    for connector, msgs in by_connector.items():
        assert all(m.payload.get("connectorId", connector) == connector for m in msgs)
        assert len(msgs) >= 3  # samples of both went through, each to its own transaction
    for n in (1, 2):
        c = await rig.wait_connector(n, "Preparing")
        assert c["contactor_closed"] is False
