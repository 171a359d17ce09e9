"""Reservation: the pure rules (table-driven) and the service on the real mock station,
a real SQLite file and a manual clock."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from chargerd.clock import ManualClock, iso
from chargerd.features import reservations as rsv
from chargerd.features.cards import CardService
from chargerd.features.remote import RemoteService
from chargerd.features.reservations import (
    ConnectorView,
    Reservation,
    ReservationService,
    admission,
    reserve_answer,
    shows_reserved,
)
from hal.interfaces import Fault, IndicatorState

T0 = ManualClock().now()
A, SIBLING, STRANGER, FLEET = "AAAA0001", "AAAA0002", "BBBB0001", "FLEET"


def view(i: int, *, free=True, faulted=False, unavailable=False) -> ConnectorView:
    return ConnectorView(i, faulted, unavailable, free and not faulted and not unavailable)


def res(rid: int, cid: int, tag: str = A, parent: str | None = None) -> Reservation:
    return Reservation(rid, cid, tag, parent, T0 + timedelta(hours=1))


TWO_FREE = {1: view(1), 2: view(2)}


# -- the rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "others, views, connector, zero_ok, expected",
    [
        ([], TWO_FREE, 1, True, "Accepted"),
        ([], TWO_FREE, 3, True, "Rejected"),  # no such connector
        ([], {1: view(1, faulted=True)}, 1, True, "Faulted"),
        ([], {1: view(1, unavailable=True)}, 1, True, "Unavailable"),
        ([], {1: view(1, free=False)}, 1, True, "Occupied"),  # plugged, charging...
        ([res(9, 1, STRANGER)], TWO_FREE, 1, True, "Occupied"),  # reserved already
        ([], TWO_FREE, 0, True, "Accepted"),
        ([], TWO_FREE, 0, False, "Rejected"),  # ReserveConnectorZeroSupported false
        ([res(9, 0)], TWO_FREE, 0, True, "Accepted"),  # 2 free, 1 held
        ([res(9, 0), res(8, 0)], TWO_FREE, 0, True, "Occupied"),  # 2 free, 2 held
        ([res(9, 1)], TWO_FREE, 0, True, "Accepted"),  # connector 2 stays for it
        ([res(9, 1)], {1: view(1), 2: view(2, free=False)}, 0, True, "Occupied"),
        ([], {1: view(1, faulted=True), 2: view(2, faulted=True)}, 0, True, "Faulted"),
        ([], {1: view(1, unavailable=True), 2: view(2, unavailable=True)}, 0, True, "Unavailable"),
        ([res(9, 0)], {1: view(1), 2: view(2, free=False)}, 1, True, "Occupied"),  # 0 needs it
        ([res(9, 0)], TWO_FREE, 1, True, "Accepted"),
    ],
)
def test_reserve_answer(others, views, connector, zero_ok, expected):
    assert reserve_answer(others, views, connector, zero_supported=zero_ok) == expected


@pytest.mark.parametrize(
    "reservations, views, connector, expected",
    [
        ([], TWO_FREE, 1, False),
        ([res(1, 1)], TWO_FREE, 1, True),
        ([res(1, 1)], TWO_FREE, 2, False),
        ([res(1, 0)], TWO_FREE, 1, False),  # two free for one reservation: nobody waits
        ([res(1, 0), res(2, 0)], TWO_FREE, 1, True),  # free == reservations: both held
        ([res(1, 0)], {1: view(1), 2: view(2, free=False)}, 1, True),
        ([res(1, 0)], {1: view(1), 2: view(2, free=False)}, 2, False),
        ([res(1, 0), res(2, 2)], TWO_FREE, 1, True),  # 2 is its own reservation's
    ],
)
def test_shows_reserved(reservations, views, connector, expected):
    assert shows_reserved(reservations, views, connector) is expected


@pytest.mark.parametrize(
    "reservations, views, connector, tag, parent, allowed, rid",
    [
        ([], TWO_FREE, 1, STRANGER, None, True, None),
        ([res(1, 1)], TWO_FREE, 1, A, None, True, 1),
        ([res(1, 1)], TWO_FREE, 1, A.lower(), None, True, 1),  # CiString: any case
        ([res(1, 1)], TWO_FREE, 1, STRANGER, None, False, None),
        ([res(1, 1, parent=FLEET)], TWO_FREE, 1, SIBLING, FLEET, True, 1),
        ([res(1, 1, parent=FLEET)], TWO_FREE, 1, STRANGER, "OTHER", False, None),
        ([res(1, 1)], TWO_FREE, 1, STRANGER, None, False, None),  # no parent: no sibling
        ([res(1, 1)], TWO_FREE, 2, STRANGER, None, True, None),  # the other connector
        ([res(1, 0)], TWO_FREE, 1, STRANGER, None, True, None),  # 2 stays free
        ([res(1, 0)], {1: view(1), 2: view(2, free=False)}, 1, STRANGER, None, False, None),
        ([res(1, 0)], {1: view(1), 2: view(2, free=False)}, 1, A, None, True, 1),
        ([res(1, 0, parent=FLEET)], {1: view(1, free=False)}, 1, SIBLING, FLEET, True, 1),
    ],
)
def test_admission(reservations, views, connector, tag, parent, allowed, rid):
    got = admission(reservations, views, connector, tag, parent)
    assert (got.allowed, got.reservation_id) == (allowed, rid)


# -- the service on the mock station ---------------------------------------------------------


def accepted(parent: str | None = None) -> dict:
    return {"idTagInfo": {"status": "Accepted", **({"parentIdTag": parent} if parent else {})}}


def starts(b) -> list[dict]:
    return [json.loads(r["payload"]) for r in b.outbox_rows() if r["action"] == "StartTransaction"]


def attach(b) -> ReservationService:
    """The service wired as the daemon does (statuses end reservations, §5.13 case 3)."""
    if not b.config.is_declared("ReserveConnectorZeroSupported"):
        rsv.declare_keys(b.config)
    svc = ReservationService(
        store=b.store,
        clock=b.clock,
        config=b.config,
        supervisor=b.supervisor,
        parent_of=b.cache.get,
    )
    report = b.supervisor._report_status

    def both(cid, status, code):
        report(cid, status, code)
        svc.connector_status(cid, status)

    b.supervisor._report_status = both
    return svc


def cards(b) -> CardService:
    return CardService(
        supervisor=b.supervisor, authorizer=b.authorizer, config=b.config, online=lambda: True
    )


def reserve(svc, b, rid: int, cid: int, tag: str = A, parent=None, minutes: float = 30):
    answer = svc.on_reserve_now(
        connector_id=cid,
        expiry_date=iso(b.clock.now() + timedelta(minutes=minutes)),
        id_tag=tag,
        reservation_id=rid,
        parent_id_tag=parent,
    )
    return str(answer.status)


async def test_a_reserved_connector_shows_reserved_refuses_a_stranger_and_takes_a_sibling(
    make_bench,
):
    b = make_bench(connectors=1)
    svc = attach(b)
    reader = cards(b)
    b.link.default["Authorize"] = lambda p: {
        A: accepted(FLEET),
        SIBLING: accepted(FLEET),
        STRANGER: accepted("OTHER"),
    }[p["idTag"]]
    await b.tick()
    assert reserve(svc, b, 7, 1, A, FLEET) == "Accepted"
    await b.tick()
    assert b.conn(1).status == "Reserved"
    assert b.conn(1).hw.indicator.state == IndicatorState.RESERVED
    assert await reader.present(STRANGER) == "no connector free"
    b.sim.plug(1)
    await b.tick(2)
    assert starts(b) == []
    assert await reader.present(SIBLING) == "authorized on connector 1"
    await b.tick()
    assert [(s["idTag"], s.get("reservationId")) for s in starts(b)] == [(SIBLING, 7)]
    assert svc.all() == []  # used by the transaction
    assert b.store.query("SELECT * FROM reservations") == []


async def test_reservation_on_connector_zero_with_two_connectors(make_bench):
    b = make_bench(connectors=2)
    svc = attach(b)
    reader = cards(b)
    b.link.default["Authorize"] = lambda p: accepted()
    await b.tick()
    assert reserve(svc, b, 1, 0, A) == "Accepted"
    await b.tick()
    assert [b.conn(1).status, b.conn(2).status] == ["Available", "Available"]
    # A stranger takes connector 1: connector 2 is now the one held for A.
    b.sim.plug(1)
    await b.tick()
    assert await reader.present(STRANGER) == "authorized on connector 1"
    await b.tick()
    assert [b.conn(1).status, b.conn(2).status] == ["SuspendedEV", "Reserved"]
    assert reserve(svc, b, 2, 0, "CCCC0001") == "Occupied"
    assert await reader.present("DDDD0001") == "no connector free"
    b.sim.plug(2)
    await b.tick()
    assert await reader.present(A) == "authorized on connector 2"
    await b.tick()
    assert [(s["connectorId"], s["idTag"], s.get("reservationId")) for s in starts(b)] == [
        (1, STRANGER, None),
        (2, A, 1),
    ]
    assert svc.all() == []


async def test_a_reservation_expires_at_its_expiry_date_by_a_timer(make_bench):
    b = make_bench(connectors=1)
    svc = attach(b)
    slept: list[float] = []
    sleep = b.clock.sleep

    async def recording_sleep(seconds: float) -> None:
        slept.append(seconds)
        await sleep(seconds)

    b.clock.sleep = recording_sleep
    await b.tick()
    expiry = b.clock.now() + timedelta(minutes=5)
    assert reserve(svc, b, 3, 1, minutes=5) == "Accepted"
    await b.tick()
    assert b.conn(1).status == "Reserved"
    task = asyncio.create_task(svc.run())
    for _ in range(50):
        if not svc.all():
            break
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert slept == [300.0]  # one timer to the expiryDate, no polling
    assert b.clock.now() == expiry and svc.all() == []
    await b.tick()
    assert b.conn(1).status == "Available"


async def test_reservations_survive_a_restart_and_expired_ones_end_at_once(make_bench, tmp_path):
    b = make_bench(connectors=2)
    svc = attach(b)
    await b.tick()
    assert reserve(svc, b, 1, 1, A, FLEET, minutes=10) == "Accepted"
    assert reserve(svc, b, 2, 2, A, minutes=60) == "Accepted"
    b2 = make_bench(connectors=2, db_name="chargerd.db")  # the same file, a new process
    svc2 = attach(b2)
    assert [(r.reservation_id, r.connector_id, r.parent_id_tag) for r in svc2.all()] == [
        (1, 1, FLEET),
        (2, 2, None),
    ]
    await b2.tick()
    assert [b2.conn(1).status, b2.conn(2).status] == ["Reserved", "Reserved"]
    b2.clock.advance(15 * 60)
    assert svc2.expire_due() == [1]
    await b2.tick()
    assert [b2.conn(1).status, b2.conn(2).status] == ["Available", "Reserved"]


async def test_the_same_reservation_id_replaces_the_reservation(make_bench):
    b = make_bench(connectors=2)
    svc = attach(b)
    await b.tick()
    assert reserve(svc, b, 5, 1, A) == "Accepted"
    assert reserve(svc, b, 5, 2, STRANGER) == "Accepted"
    await b.tick()
    assert [b.conn(1).status, b.conn(2).status] == ["Available", "Reserved"]
    assert [(r.connector_id, r.id_tag) for r in svc.all()] == [(2, STRANGER)]
    # Replacing onto its own connector is no conflict with itself.
    assert reserve(svc, b, 5, 2, A) == "Accepted"
    assert [(r.connector_id, r.id_tag) for r in svc.all()] == [(2, A)]


async def test_answers_for_busy_faulted_unavailable_and_past_dates(make_bench):
    b = make_bench(connectors=2)
    svc = attach(b)
    await b.tick()
    assert reserve(svc, b, 1, 1, minutes=-1) == "Rejected"
    assert reserve(svc, b, 1, 3) == "Rejected"
    b.sim.plug(1)
    await b.tick()
    assert reserve(svc, b, 1, 1) == "Occupied"
    b.conn(2).operative = False
    assert reserve(svc, b, 2, 2) == "Unavailable"
    b.conn(2).operative = True
    b.conn(2).faults = frozenset({Fault.PILOT_FAILURE})
    assert reserve(svc, b, 2, 2) == "Faulted"
    b.config.set_internal("ReserveConnectorZeroSupported", False)
    assert reserve(svc, b, 3, 0) == "Rejected"
    assert svc.all() == []


async def test_cancel_reservation(make_bench):
    b = make_bench(connectors=1)
    svc = attach(b)
    await b.tick()
    assert reserve(svc, b, 4, 1) == "Accepted"
    assert svc.on_cancel_reservation(reservation_id=99).status == "Rejected"
    assert svc.on_cancel_reservation(reservation_id=4).status == "Accepted"
    await b.tick()
    assert b.conn(1).status == "Available" and svc.all() == []


async def test_an_unavailable_connector_ends_its_reservation(make_bench):
    b = make_bench(connectors=1)
    svc = attach(b)
    await b.tick()
    assert reserve(svc, b, 4, 1) == "Accepted"
    b.conn(1).operative = False
    await b.tick()
    assert b.conn(1).status == "Unavailable" and svc.all() == []
    b.conn(1).operative = True
    await b.tick()
    assert reserve(svc, b, 5, 1) == "Accepted"
    svc.connector_status(1, "Faulted")  # what the supervisor reports for a blocking fault
    assert svc.all() == []


async def test_remote_start_respects_the_reservation(make_bench):
    b = make_bench(connectors=1)
    svc = attach(b)
    remote = RemoteService(
        supervisor=b.supervisor,
        authorizer=b.authorizer,
        config=b.config,
        online=lambda: True,
        restart=lambda reason: asyncio.sleep(0),
    )
    await b.tick()
    assert reserve(svc, b, 2, 1, A) == "Accepted"
    assert remote.remote_start(id_tag=STRANGER, connector_id=1).status == "Rejected"
    assert remote.remote_start(id_tag=A, connector_id=1).status == "Accepted"
    b.sim.plug(1)
    await b.tick()
    assert [(s["idTag"], s.get("reservationId")) for s in starts(b)] == [(A, 2)]


async def test_a_remote_start_for_a_sibling_learns_the_parent_from_authorize(make_bench):
    b = make_bench(connectors=1)
    svc = attach(b)
    remote = RemoteService(
        supervisor=b.supervisor,
        authorizer=b.authorizer,
        config=b.config,
        online=lambda: True,
        restart=lambda reason: asyncio.sleep(0),
    )
    b.link.default["Authorize"] = lambda p: {
        SIBLING: accepted(FLEET),
        STRANGER: accepted("OTHER"),
    }[p["idTag"]]
    await b.tick()
    assert reserve(svc, b, 3, 1, A, FLEET) == "Accepted"
    # The stranger's parent is unknown locally: claimed, asked, refused.
    answer = remote.remote_start(id_tag=STRANGER, connector_id=1)
    assert answer.status == "Accepted" and b.conn(1).held
    await remote._remote_start_after(id_tag=STRANGER, connector_id=1)
    assert b.conn(1).authorization is None and not b.conn(1).held
    # The sibling's Authorize answer names the reservation's parent: it starts there.
    assert remote.remote_start(id_tag=SIBLING, connector_id=1).status == "Accepted"
    await remote._remote_start_after(id_tag=SIBLING, connector_id=1)
    b.sim.plug(1)
    await b.tick()
    assert [(s["idTag"], s.get("reservationId")) for s in starts(b)] == [(SIBLING, 3)]
    assert [a for a, _ in b.link.calls] == ["Authorize", "Authorize"]
