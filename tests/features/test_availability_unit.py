"""ChangeAvailability: Accepted or Scheduled, per connector and for connector 0, persisted."""

from __future__ import annotations

import json

import pytest

from chargerd.features.availability import AvailabilityService
from chargerd.features.connectors import ConnectorRuntime, ConnectorSupervisor
from chargerd.features.outbox import Outbox
from chargerd.features.transactions import TransactionService

TAG = "0A1B2C3D"


def service(b) -> AvailabilityService:
    svc = AvailabilityService(store=b.store, supervisor=b.supervisor)
    svc.restore()
    return svc


def restarted(b) -> ConnectorSupervisor:
    """A fresh supervisor on the same database, its availability restored (a daemon restart)."""
    outbox = Outbox(b.store, b.clock, attempts=lambda: 3, retry_interval=lambda: 60)
    transactions = TransactionService(
        store=b.store, clock=b.clock, outbox=outbox, config=b.config, cache=b.cache
    )
    sup = ConnectorSupervisor(
        connectors=[ConnectorRuntime(id=c.id, hw=c.hw) for c in b.supervisor.connectors.values()],
        transactions=transactions,
        config=b.config,
        clock=b.clock,
        report_status=lambda *a: None,
    )
    AvailabilityService(store=b.store, supervisor=sup).restore()
    return sup


def status_of(result) -> str:
    return str(result.status)


async def charging(b, n: int = 1) -> None:
    b.sim.plug(n)
    b.supervisor.grant(b.conn(n), id_tag=TAG, parent_id_tag=None)
    await b.tick()
    b.sim.charge(n)
    await b.tick()
    assert b.conn(n).status == "Charging"


def stops(b) -> list[dict]:
    return [json.loads(r["payload"]) for r in b.outbox_rows() if r["action"] == "StopTransaction"]


async def test_an_idle_connector_goes_inoperative_at_once_and_stays_so_after_a_restart(
    make_bench,
):
    b = make_bench(connectors=2)
    svc = service(b)
    assert status_of(svc.change_availability(connector_id=1, type="Inoperative")) == "Accepted"
    await b.tick()
    assert [b.conn(n).status for n in (1, 2)] == ["Unavailable", "Available"]
    sup = restarted(b)
    assert [sup.connectors[n].operative for n in (1, 2)] == [False, True]
    assert sup.station_operative

    assert status_of(svc.change_availability(connector_id=1, type="Operative")) == "Accepted"
    await b.tick()
    assert b.conn(1).status == "Available"
    assert restarted(b).connectors[1].operative


async def test_an_inoperative_connector_refuses_cards_and_evs(make_bench):
    b = make_bench()
    service(b).change_availability(connector_id=1, type="Inoperative")
    assert b.supervisor.first_free() is None and b.supervisor.first_free(1) is None
    b.sim.plug(1)
    await b.tick()
    assert b.conn(1).status == "Unavailable" and b.conn(1).tx is None


async def test_a_running_transaction_makes_it_scheduled_until_the_stop(make_bench):
    b = make_bench()
    svc = service(b)
    await charging(b)
    assert status_of(svc.change_availability(connector_id=1, type="Inoperative")) == "Scheduled"
    await b.tick()
    assert b.conn(1).status == "Charging" and b.conn(1).hw.contactor.closed
    assert stops(b) == []
    # the target is what is persisted: a restart now comes back inoperative
    assert restarted(b).connectors[1].operative is False

    await b.supervisor.stop(b.conn(1), "Local")
    await b.tick()
    assert b.conn(1).status == "Unavailable"
    assert b.conn(1).operative is False and b.conn(1).scheduled_operative is None


async def test_operative_again_cancels_a_scheduled_change(make_bench):
    b = make_bench()
    svc = service(b)
    await charging(b)
    assert status_of(svc.change_availability(connector_id=1, type="Inoperative")) == "Scheduled"
    assert status_of(svc.change_availability(connector_id=1, type="Operative")) == "Accepted"
    await b.supervisor.stop(b.conn(1), "Local")
    await b.tick()
    assert b.conn(1).operative and b.conn(1).status == "Finishing"
    assert restarted(b).connectors[1].operative


async def test_connector_0_takes_the_whole_station_out_of_service(make_bench):
    b = make_bench(connectors=2)
    svc = service(b)
    assert status_of(svc.change_availability(connector_id=0, type="Inoperative")) == "Accepted"
    await b.tick()
    assert [b.conn(n).status for n in (1, 2)] == ["Unavailable", "Unavailable"]
    assert b.supervisor.station_status(frozenset()) == ("Unavailable", "NoError")
    sup = restarted(b)
    assert not sup.station_operative
    assert not any(c.operative for c in sup.connectors.values())

    assert status_of(svc.change_availability(connector_id=0, type="Operative")) == "Accepted"
    await b.tick()
    assert [b.conn(n).status for n in (1, 2)] == ["Available", "Available"]
    assert b.supervisor.station_status(frozenset()) == ("Available", "NoError")
    assert restarted(b).station_operative


async def test_connector_0_with_a_transaction_is_scheduled_for_the_station(make_bench):
    b = make_bench(connectors=2)
    svc = service(b)
    await charging(b, 1)
    assert status_of(svc.change_availability(connector_id=0, type="Inoperative")) == "Scheduled"
    await b.tick()
    # the idle connector goes at once, the busy one and the station when the charge ends
    assert [b.conn(n).status for n in (1, 2)] == ["Charging", "Unavailable"]
    assert b.supervisor.station_status(frozenset()) == ("Available", "NoError")
    assert not restarted(b).station_operative

    await b.supervisor.stop(b.conn(1), "Local")
    await b.tick()
    assert [b.conn(n).status for n in (1, 2)] == ["Unavailable", "Unavailable"]
    assert not b.supervisor.station_operative
    assert b.supervisor.station_status(frozenset()) == ("Unavailable", "NoError")


@pytest.mark.parametrize("connector_id", [3, 99])
async def test_an_unknown_connector_is_rejected_and_nothing_changes(make_bench, connector_id):
    b = make_bench(connectors=2)
    svc = service(b)
    result = svc.change_availability(connector_id=connector_id, type="Inoperative")
    assert status_of(result) == "Rejected"
    assert all(c.operative for c in b.supervisor.connectors.values())
    assert b.store.get_kv("availability") is None


async def test_a_fresh_station_is_operative(make_bench):
    b = make_bench(connectors=2)
    service(b)
    sup = restarted(b)
    assert sup.station_operative and all(c.operative for c in sup.connectors.values())


async def test_a_waiting_authorization_is_withdrawn_when_the_connector_goes_inoperative(
    make_bench,
):
    b = make_bench()
    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    assert b.conn(1).authorization is not None
    assert status_of(service(b).change_availability(connector_id=1, type="Inoperative")) == (
        "Accepted"
    )
    assert b.conn(1).authorization is None
    b.sim.plug(1)
    await b.tick()
    assert b.conn(1).tx is None and b.conn(1).status == "Unavailable"


async def test_a_station_schedule_survives_a_cancelled_connector_schedule(make_bench):
    """ChangeAvailability(0, Inoperative) during a charge, then (1, Operative): the station
    still goes out of service when the charge ends."""
    b = make_bench(connectors=2)
    svc = service(b)
    await charging(b, 1)
    assert status_of(svc.change_availability(connector_id=0, type="Inoperative")) == "Scheduled"
    assert status_of(svc.change_availability(connector_id=1, type="Operative")) == "Accepted"
    await b.supervisor.stop(b.conn(1), "Local")
    await b.tick()
    assert not b.supervisor.station_operative
    assert b.supervisor.station_status(frozenset()) == ("Unavailable", "NoError")
    assert not restarted(b).station_operative
