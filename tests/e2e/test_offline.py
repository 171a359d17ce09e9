"""Charging without the CSMS: whatever happens offline reaches it afterwards, once, in order.

The network is cut with the bench's `sim network down` (the link is dropped
and kept down) or by the CSMS itself going away; the driver's session goes on,
and once the link is back the CSMS must see the StartTransaction (with the
time the charge really began), every MeterValues and the StopTransaction, in
that order, each delivered once, the later ones carrying the transactionId the
CSMS assigned, never one the station made up.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from chargerd.bench.csms.csms import BenchCsms
from chargerd.clock import parse_iso

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
CARD = "0A1B2C3D"
SLACK = timedelta(milliseconds=500)
IN_FLIGHT = timedelta(milliseconds=100)


def now() -> datetime:
    return datetime.now(UTC)


async def cut(rig) -> None:
    await rig.network(False)
    await rig.wait_status(lambda s: not s["ocpp"]["connected"], what="link down")


async def restore(rig) -> None:
    await rig.network(True)
    await rig.wait_status(lambda s: s["ocpp"]["connected"], what="link up")


async def queued_at_least(rig, n: int, timeout: float = 6) -> int:
    st = await rig.wait_status(
        lambda s: s["ocpp"]["outbox_pending"] >= n, timeout=timeout, what=f"{n} messages queued"
    )
    return st["ocpp"]["outbox_pending"]


async def drained(rig, timeout: float = 15) -> None:
    await rig.wait_status(
        lambda s: s["ocpp"]["outbox_pending"] == 0, timeout=timeout, what="outbox drained"
    )


async def cache_the_card(rig, csms, card: str = CARD) -> None:
    """An online authorization (the CSMS's answer lands in the cache), then withdrawn."""
    before = len([r for r in csms.received if r.action == "Authorize"])
    await rig.card(card)
    await csms.wait_for("Authorize", count=before + 1)
    await rig.wait_status(lambda s: s["connectors"][0]["id_tag"] == card, what="authorized")
    await rig.card(card)  # the same card again withdraws the authorization
    await rig.wait_status(lambda s: s["connectors"][0]["id_tag"] is None, what="withdrawn")


def in_flight(audit, record, t_from: datetime, t_to: datetime) -> bool:
    """Was ``record``'s CALLRESULT on the wire while the link went down?

    The CSMS took the message in and answered, but the answer died with the
    connection, so the station (rightly) sends it again: the one duplicate
    "exactly once per accepted CALLRESULT" allows.
    """
    answered = audit.answered_at(record)
    return answered is not None and t_from - IN_FLIGHT <= answered <= t_to


def tx_received(csms) -> list:
    return [
        r
        for r in csms.received
        if r.cp_id == CP and r.action in ("StartTransaction", "MeterValues", "StopTransaction")
    ]


async def test_a_whole_offline_transaction_is_delivered_in_order_once_with_the_csms_id(
    make_registered_rig, csms, tx_audit
):
    rig = await make_registered_rig(
        ocpp={"MeterValueSampleInterval": 1, "LocalAuthorizeOffline": True}
    )
    csms.next_transaction_id = 4711  # an id the station cannot guess
    await cache_the_card(rig, csms)
    await cut(rig)

    t_card = now()
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(CARD)
    await rig.charge(1)
    c = await rig.wait_connector(1, "Charging")
    t_charging = now()
    assert c["contactor_closed"] is True
    assert c["transaction_id"] is None  # no id until the CSMS gives one
    await queued_at_least(rig, 3)  # the start and at least two samples
    await rig.card(CARD)
    c = await rig.wait_connector(1, "Finishing")
    assert c["contactor_closed"] is False
    queued = (await rig.status())["ocpp"]["outbox_pending"]
    assert tx_received(csms) == []  # nothing went out while the link was down

    t_back = now()
    await restore(rig)
    await drained(rig)

    audit = tx_audit()
    by_tx = audit.check()
    assert list(by_tx) == [4711]
    msgs = by_tx[4711]
    assert len(msgs) == queued  # every queued message, no more, no less
    assert len(audit.attempts) == queued  # and each one sent once: the CSMS accepted them all
    assert [m.action for m in msgs] == (
        ["StartTransaction"] + ["MeterValues"] * (queued - 2) + ["StopTransaction"]
    )
    start, stop = msgs[0], msgs[-1]
    assert all(m.time >= t_back for m in msgs)
    # The StartTransaction tells when the charge began, not when the CSMS heard of it.
    began = parse_iso(start.payload["timestamp"])
    assert t_card - SLACK <= began <= t_charging + SLACK
    assert start.payload["idTag"] == CARD
    samples = msgs[1:-1]
    stamps = [parse_iso(m.payload["meterValue"][0]["timestamp"]) for m in samples]
    assert stamps == sorted(stamps) and stamps[-1] < t_back
    assert stop.payload["reason"] == "Local"
    assert stop.payload["transactionId"] == 4711
    assert parse_iso(stop.payload["timestamp"]) < t_back
    # The CSMS also learns the connector's state that changed while it was away.
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.time >= t_back and r.payload["status"] == "Finishing",
    )


async def test_offline_transaction_for_an_unknown_card_when_allowed(
    make_registered_rig, csms, tx_audit
):
    rig = await make_registered_rig(
        ocpp={"MeterValueSampleInterval": 1, "AllowOfflineTxForUnknownId": True}
    )
    stranger = "11223344"  # never seen by the station; the CSMS knows it
    csms.cards[stranger] = "Accepted"
    await cut(rig)
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card(stranger)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    await queued_at_least(rig, 2)
    await rig.card(stranger)
    await rig.wait_connector(1, "Finishing")
    await restore(rig)
    await drained(rig)
    by_tx = tx_audit().check()
    ((tx_id, msgs),) = by_tx.items()
    assert msgs[0].payload["idTag"] == stranger
    assert msgs[-1].payload == {**msgs[-1].payload, "reason": "Local", "transactionId": tx_id}
    assert len(msgs) >= 3
    # The CSMS's verdict on the card (in StartTransaction.conf) reached the cache: offline
    # again, with unknown cards no longer allowed, it is accepted as a known one.
    await rig.ctl("config.set", key="AllowOfflineTxForUnknownId", value="false")
    await rig.unplug(1)
    await rig.wait_connector(1, "Available")
    await cut(rig)
    await rig.card("55667788")  # a card still unknown is refused now
    await asyncio.sleep(0.3)
    assert (await rig.connector(1))["id_tag"] is None
    await rig.card(stranger)
    await rig.wait_status(lambda s: s["connectors"][0]["id_tag"] == stranger, what="authorized")


async def test_link_cut_mid_charge_then_stopped_offline(
    make_registered_rig, csms, start_charging, tx_audit
):
    rig = await make_registered_rig(ocpp={"MeterValueSampleInterval": 1})
    await start_charging(rig)
    tx_id = (await rig.connector(1))["transaction_id"]
    await csms.wait_for("MeterValues", count=1)
    t_cut = now()
    await cut(rig)
    t_down = now()
    await queued_at_least(rig, 2)
    await rig.card(CARD)
    await rig.wait_connector(1, "Finishing")
    queued = (await rig.status())["ocpp"]["outbox_pending"]
    t_back = now()
    await restore(rig)
    await drained(rig)

    audit = tx_audit()
    by_tx = audit.check(allow_duplicate_of=lambda r: in_flight(audit, r, t_cut, t_down))
    assert list(by_tx) == [tx_id]
    msgs = by_tx[tx_id]
    late = [m for m in msgs if m.time >= t_back]
    assert len(late) == queued
    assert late[-1].action == "StopTransaction"
    assert late[-1].payload["reason"] == "Local"
    assert all(m.payload["transactionId"] == tx_id for m in msgs[1:])
    # Samples taken while the link was down carry their own (offline) timestamps.
    offline_samples = [m for m in late if m.action == "MeterValues"]
    assert offline_samples
    assert all(
        t_cut - SLACK <= parse_iso(m.payload["meterValue"][0]["timestamp"]) < t_back
        for m in offline_samples
    )


async def test_the_csms_process_dies_mid_transaction(make_registered_rig, csms, tx_audit):
    rig = await make_registered_rig(ocpp={"MeterValueSampleInterval": 1})
    await rig.plug(1)
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_status(
        lambda s: s["connectors"][0]["transaction_id"] is not None, what="transaction id"
    )
    tx_id = (await rig.connector(1))["transaction_id"]
    await csms.wait_for("MeterValues")
    port = csms.port

    t_died = now()
    await csms.stop()  # the CSMS process is gone
    t_gone = now()
    await rig.wait_status(lambda s: not s["ocpp"]["connected"], what="link down")
    await queued_at_least(rig, 2)
    # A new CSMS process on the same address, with the same database behind it.
    reborn = BenchCsms()
    reborn.cards.update(csms.cards)
    reborn.next_transaction_id = csms.next_transaction_id
    await reborn.start("127.0.0.1", port)
    try:
        await reborn.wait_connected(CP, timeout=10)
        await rig.wait_status(lambda s: s["ocpp"]["connected"], what="link up")
        await rig.wait_status(
            lambda s: s["ocpp"]["outbox_pending"] == 0, timeout=10, what="backlog delivered"
        )
        await rig.card(CARD)
        await rig.wait_connector(1, "Finishing")
        await drained(rig)
        audit = tx_audit(servers=[csms, reborn])
        # A CALL the dying CSMS took in but answered only once it was closing never got
        # its CALLRESULT to the station, which rightly sends it again to the new one.
        by_tx = audit.check(allow_duplicate_of=lambda r: in_flight(audit, r, t_died, t_gone))
        assert list(by_tx) == [tx_id]
        msgs = by_tx[tx_id]
        assert msgs[-1].payload["reason"] == "Local"
        # The new CSMS got the samples queued while it was away, then the stop.
        got = [r for r in reborn.received if r.action in ("MeterValues", "StopTransaction")]
        assert len(got) >= 3
        assert all(r.payload["transactionId"] == tx_id for r in got)
        # ...and is told the connector's state.
        await reborn.wait_for(
            "StatusNotification", predicate=lambda r: r.payload["connectorId"] == 1
        )
    finally:
        await rig.stop()
        await reborn.stop()


async def test_an_offline_start_the_csms_then_declares_invalid_is_deauthorized(
    make_registered_rig, csms, tx_audit
):
    rig = await make_registered_rig(
        ocpp={"AllowOfflineTxForUnknownId": True, "StopTransactionOnInvalidId": True}
    )
    impostor = "DEADBEEF"  # unknown to the CSMS: its StartTransaction.conf says Invalid
    await cut(rig)
    await rig.plug(1)
    await rig.card(impostor)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    await restore(rig)
    # Once the CSMS's verdict is in, the session ends; the CSMS hears why, once.
    await rig.wait_status(
        lambda s: s["connectors"][0]["transaction_local_id"] is None, what="session ended"
    )
    c = await rig.connector(1)
    assert c["contactor_closed"] is False and c["offered_current_a"] is None
    await drained(rig)
    ((tx_id, msgs),) = tx_audit().check().items()
    assert [m.action for m in msgs] == ["StartTransaction", "StopTransaction"]
    assert msgs[-1].payload["reason"] == "DeAuthorized"
    assert msgs[-1].payload["transactionId"] == tx_id


async def test_a_station_that_never_reached_the_csms_delivers_after_its_boot(make_rig, tx_audit):
    """Powered up with the CSMS away: sessions go on, and nothing precedes the boot."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rig = await make_rig(
        start=False, ocpp={"MeterValueSampleInterval": 1, "AllowOfflineTxForUnknownId": True}
    )
    rig.csms_url = f"ws://127.0.0.1:{port}/ocpp"
    rig.write_config()
    await rig.start()
    await rig.plug(1)
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    await queued_at_least(rig, 3)
    await rig.card(CARD)
    await rig.wait_connector(1, "Finishing")
    queued = (await rig.status())["ocpp"]["outbox_pending"]

    late = BenchCsms()
    late.cards[CARD] = "Accepted"
    await late.start("127.0.0.1", port)
    try:
        await late.wait_connected(CP, timeout=10)
        await rig.wait_status(
            lambda s: s["ocpp"]["outbox_pending"] == 0, timeout=10, what="backlog delivered"
        )
        assert late.received[0].action == "BootNotification"
        by_tx = tx_audit(servers=[late]).check()
        ((_, msgs),) = by_tx.items()
        # The outbox also held the StartupOfTheDevice security event, queued at the start.
        startup = [
            r
            for r in late.received
            if r.action == "SecurityEventNotification"
            and r.payload["type"] == "StartupOfTheDevice"
        ]
        assert len(startup) == 1
        assert len(msgs) == queued - 1
        assert msgs[-1].payload["reason"] == "Local"
    finally:
        await rig.stop()
        await late.stop()
