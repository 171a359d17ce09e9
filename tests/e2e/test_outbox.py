"""The durable outbox against a CSMS that refuses or goes silent.

TransactionMessageAttempts / TransactionMessageRetryInterval govern a CSMS
that answers with a CALLERROR: so many tries, spaced by the interval times the
attempt number, then the message is given up and the next one goes.  A CSMS
that says nothing is not refusing: nothing is given up, and everything goes
out once it answers again, in order, each message accepted once.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
CARD = "0A1B2C3D"


async def wait_frame(csms, predicate, *, timeout: float = 10.0):
    """The first frame the CSMS sent (out) whose parsed message matches ``predicate``."""
    async with asyncio.timeout(timeout):
        while True:
            for f in list(csms.frames):
                if f.direction == "out" and predicate(json.loads(f.frame)):
                    return f
            await asyncio.sleep(0.01)


async def drained(rig, timeout: float = 15) -> None:
    await rig.wait_status(
        lambda s: s["ocpp"]["outbox_pending"] == 0, timeout=timeout, what="outbox drained"
    )


def received(csms, action: str) -> list:
    return [r for r in csms.received if r.cp_id == CP and r.action == action]


async def test_refused_meter_values_are_tried_n_times_then_dropped_and_the_stop_still_goes(
    make_registered_rig, csms, start_charging, tx_audit
):
    rig = await make_registered_rig(
        ocpp={
            "MeterValueSampleInterval": 1,
            "TransactionMessageAttempts": 2,
            "TransactionMessageRetryInterval": 1,
        }
    )
    csms.callerror_actions = {"MeterValues"}
    start = await start_charging(rig)
    await csms.wait_for("MeterValues", count=3)
    await rig.card(CARD)
    await rig.wait_connector(1, "Finishing")
    await drained(rig)

    tries = received(csms, "MeterValues")
    # Each sample tried twice in a row (the queue is strictly ordered), then given up.
    runs: list[list] = []
    for r in tries:
        if runs and runs[-1][0].payload == r.payload:
            runs[-1].append(r)
        else:
            runs.append([r])
    assert len(runs) >= 2
    assert all(len(run) == 2 for run in runs), [len(run) for run in runs]
    assert len({json.dumps(run[0].payload) for run in runs}) == len(runs)  # none came back
    # The retry waited TransactionMessageRetryInterval x attempts (1 s after the first).
    for first, second in runs:
        assert second.time - first.time >= timedelta(seconds=0.9)
    # The StopTransaction was not held up by the refused samples: delivered, once, last.
    audit = tx_audit()
    by_tx = audit.check()
    tx_id = audit.assigned_id(start)
    assert [m.action for m in by_tx[tx_id]] == ["StartTransaction", "StopTransaction"]
    (stop,) = received(csms, "StopTransaction")
    assert stop.payload["reason"] == "Local"
    assert stop.time > tries[-1].time


async def test_a_start_refused_once_then_accepted_is_delivered_once_before_the_rest(
    make_registered_rig, csms, tx_audit
):
    rig = await make_registered_rig(
        ocpp={"MeterValueSampleInterval": 1, "TransactionMessageRetryInterval": 1}
    )
    csms.callerror_actions = {"StartTransaction"}
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(CARD)
    await rig.charge(1)
    await wait_frame(csms, lambda m: m[0] == 4)  # the CALLERROR is on its way
    csms.callerror_actions = set()
    c = await rig.wait_connector(1, "Charging")
    assert c["transaction_id"] is None  # charging goes on while the CSMS is difficult
    await rig.wait_status(
        lambda s: s["connectors"][0]["transaction_id"] is not None, what="the CSMS's id"
    )
    await csms.wait_for("MeterValues", count=2)
    await rig.card(CARD)
    await rig.wait_connector(1, "Finishing")
    await drained(rig)

    starts = received(csms, "StartTransaction")
    assert len(starts) == 2
    assert audit_answer_codes(tx_audit(), starts) == [4, 3]
    assert starts[1].time - starts[0].time >= timedelta(seconds=0.9)
    assert starts[0].payload == starts[1].payload  # the same StartTransaction, tried again
    audit = tx_audit()
    by_tx = audit.check()
    ((tx_id, msgs),) = by_tx.items()
    assert msgs[0] is starts[1]
    assert [m.action for m in msgs[1:-1]] == ["MeterValues"] * (len(msgs) - 2)
    assert len(msgs) >= 4
    # Every later message went out after the accepted start, with its id.
    assert all(m.time > starts[1].time and m.payload["transactionId"] == tx_id for m in msgs[1:])


def audit_answer_codes(audit, records) -> list[int]:
    return [audit.answer(r)[0] for r in records]


async def started_with_call_timeout(make_rig, seconds: float, **kw):
    """A registered station that gives up waiting for an answer after ``seconds``.

    ([csms] call_timeout_s; the rig has no parameter for it, so the file is amended.)
    """
    rig = await make_rig(start=False, **kw)
    text = rig.config_path.read_text()
    rig.config_path.write_text(text.replace("[csms]\n", f"[csms]\ncall_timeout_s = {seconds}\n"))
    await rig.start()
    await rig.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
    )
    return rig


async def test_a_silent_csms_loses_nothing(make_rig, csms, start_charging, tx_audit):
    rig = await started_with_call_timeout(make_rig, 1, ocpp={"MeterValueSampleInterval": 1})
    await start_charging(rig)
    await csms.wait_for("MeterValues")
    csms.hang = True  # takes everything in, answers nothing
    silent_from = len(csms.received)
    await asyncio.sleep(2.5)
    await rig.card(CARD)
    await rig.wait_connector(1, "Finishing")
    assert (await rig.status())["ocpp"]["outbox_pending"] >= 3  # samples and the stop wait
    unanswered = [r for r in csms.received[silent_from:] if r.action == "MeterValues"]
    assert len(unanswered) >= 2  # the head message, tried again after each timeout...
    assert len({json.dumps(r.payload) for r in unanswered}) == 1  # ...and nothing after it
    csms.hang = False
    await drained(rig)

    audit = tx_audit()
    by_tx = audit.check()  # once each, in order, with the CSMS's transactionId
    ((_, msgs),) = by_tx.items()
    assert msgs[-1].payload["reason"] == "Local"
    delivered = {audit.identity(m) for m in msgs}
    assert audit.identity(unanswered[0]) in delivered
    assert all(audit.answer(r) is None for r in unanswered)


async def test_a_start_refused_every_time_takes_its_later_messages_with_it(
    make_registered_rig, csms, start_charging, tx_audit
):
    """Never a made-up transactionId: without the CSMS's id, nothing of it is sent."""
    rig = await make_registered_rig(
        ocpp={
            "MeterValueSampleInterval": 1,
            "TransactionMessageAttempts": 2,
            "TransactionMessageRetryInterval": 0,
        }
    )
    csms.callerror_actions = {"StartTransaction"}
    await rig.plug(1)
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    await csms.wait_for("StartTransaction", count=2)
    await asyncio.sleep(1.5)  # samples are taken meanwhile
    await rig.card(CARD)
    await rig.wait_connector(1, "Finishing")
    await drained(rig)
    assert len(received(csms, "StartTransaction")) == 2
    assert received(csms, "MeterValues") == []
    assert received(csms, "StopTransaction") == []
    assert tx_audit().check() == {}

    # The next session is not held up by the lost one.
    csms.callerror_actions = set()
    await rig.unplug(1)
    await rig.wait_connector(1, "Available")
    await start_charging(rig)
    await rig.card(CARD)
    await drained(rig)
    ((_, msgs),) = tx_audit().check().items()
    assert msgs[-1].action == "StopTransaction"


async def test_a_refused_stop_is_given_up_after_the_attempts_and_the_next_session_goes_on(
    make_registered_rig, csms, start_charging, tx_audit
):
    rig = await make_registered_rig(
        ocpp={"TransactionMessageAttempts": 2, "TransactionMessageRetryInterval": 0}
    )
    first = await start_charging(rig)
    csms.callerror_actions = {"StopTransaction"}
    await rig.card(CARD)
    await csms.wait_for("StopTransaction", count=2)
    await drained(rig)
    assert len(received(csms, "StopTransaction")) == 2
    csms.callerror_actions = set()
    await rig.unplug(1)
    await rig.wait_connector(1, "Available")
    second = await start_charging(rig)
    await rig.card(CARD)
    (stop, *_) = await csms.wait_for(
        "StopTransaction", predicate=lambda r: r.time > second.time, timeout=10
    )
    await drained(rig)
    audit = tx_audit()
    assert stop.payload["transactionId"] == audit.assigned_id(second)
    assert audit.assigned_id(second) != audit.assigned_id(first)
    assert [r.action for r in audit.of("StopTransaction")] == ["StopTransaction"]


async def test_an_invalid_callresult_counts_as_a_failed_attempt(make_rig, csms, tx_audit):
    """A StartTransaction.conf without a transactionId is not applied; the start is retried."""
    rig = await started_with_call_timeout(make_rig, 3, ocpp={"TransactionMessageRetryInterval": 1})
    await rig.card(CARD)  # authorized first, the EV plugged after: the start follows the plug
    await rig.wait_status(lambda s: s["connectors"][0]["id_tag"] == CARD, what="authorized")
    csms.hang = True  # so that the test answers the StartTransaction itself
    await rig.plug(1)
    await rig.charge(1)
    (first,) = await csms.wait_for("StartTransaction")
    csms.hang = False
    await csms.send_raw(CP, json.dumps([3, first.unique_id, {"idTagInfo": {"status": "Accepted"}}]))
    await rig.wait_status(
        lambda s: s["connectors"][0]["transaction_id"] is not None, what="the CSMS's id"
    )
    starts = received(csms, "StartTransaction")
    assert len(starts) == 2 and starts[1].time - starts[0].time >= timedelta(seconds=0.9)
    audit = tx_audit()
    assert (await rig.connector(1))["transaction_id"] == audit.assigned_id(starts[1])
    await rig.card(CARD)
    await drained(rig)
    audit = tx_audit()
    assert not audit.accepted(first)
    ((tx_id, msgs),) = audit.check().items()
    assert msgs[0] is starts[1] and msgs[-1].payload["transactionId"] == tx_id
