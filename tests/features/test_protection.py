"""Residual current, lock loss, weld and state D on the connector supervisor (mock station,
manual clock, one pass at a time), and the plain decisions of chargerd.features.protection."""

from __future__ import annotations

import json

import pytest

from chargerd.features import protection
from hal.interfaces import EvState, Fault

TAG = "0A1B2C3D"


def stops(b) -> list[dict]:
    return [json.loads(r["payload"]) for r in b.outbox_rows() if r["action"] == "StopTransaction"]


def snap(b, n: int = 1) -> dict:
    return b.sim.snapshot()["connectors"][n - 1]


async def charging(b, n: int = 1) -> None:
    b.sim.plug(n)
    await b.tick()
    b.supervisor.grant(b.conn(n), id_tag=TAG, parent_id_tag=None)
    await b.tick()
    b.sim.charge(n)
    await b.tick()
    assert b.conn(n).status == "Charging"


# -- residual current --------------------------------------------------------------------


async def test_an_rcd_trip_opens_the_contactor_at_once_and_faults_with_ground_failure(make_bench):
    b = make_bench()
    await charging(b)
    b.sim.fault("rcd_trip", True, connector=1)
    # Inside the trip, before any pass of the supervisor: the contacts are open.
    assert not snap(b)["contactor_closed"] and not snap(b)["contactor_commanded"]
    await b.tick()
    (stop,) = stops(b)
    assert stop["reason"] == "EmergencyStop"
    assert (b.conn(1).status, b.conn(1).error_code) == ("Faulted", "GroundFailure")
    assert (1, "Faulted", "GroundFailure") in b.statuses
    assert snap(b)["offered_current_a"] is None
    assert b.supervisor.first_free() is None

    b.sim.fault("rcd_trip", False, connector=1)  # the module released
    await b.tick()
    assert b.conn(1).status == "Finishing" and b.conn(1).error_code == "NoError"


async def test_a_tripped_monitor_keeps_a_new_session_from_closing(make_bench):
    b = make_bench()
    b.sim.plug(1)
    b.sim.fault("rcd_trip", True, connector=1)
    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    await b.tick(3)
    assert not snap(b)["contactor_closed"]
    assert b.conn(1).status == "Faulted"


async def test_the_self_test_runs_once_per_transaction_before_the_contactor_closes(make_bench):
    b = make_bench()
    rcd = b.sim.connector(1).rcd
    b.sim.plug(1)
    await b.tick()
    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    await b.tick()
    assert rcd.self_tests == 0, "not before the EV asks for energy"
    b.sim.charge(1)
    await b.tick()
    assert rcd.self_tests == 1 and snap(b)["contactor_closed"]
    b.sim.suspend(1)
    await b.tick()
    b.sim.charge(1)
    await b.tick()
    assert rcd.self_tests == 1 and snap(b)["contactor_closed"], "once per transaction"
    await b.supervisor.stop(b.conn(1), "Local")
    b.sim.unplug(1)
    await b.tick()
    await charging(b)
    assert rcd.self_tests == 2


async def test_a_failed_self_test_gives_no_energy_and_faults_the_connector(make_bench):
    b = make_bench()
    b.sim.fault("rcd_test_fail", True, connector=1)
    b.sim.plug(1)
    await b.tick()
    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    await b.tick()
    b.sim.charge(1)
    await b.tick(3)
    assert not snap(b)["contactor_closed"] and not snap(b)["contactor_commanded"]
    assert (b.conn(1).status, b.conn(1).error_code) == ("Faulted", "OtherError")
    assert Fault.RCD_FAILURE in b.conn(1).faults
    assert stops(b)[0]["reason"] == "EmergencyStop"


# -- lock and weld -----------------------------------------------------------------------


async def test_a_lock_lost_while_charging_cuts_the_energy_and_ends_the_transaction(make_bench):
    b = make_bench()
    await charging(b)
    b.sim.fault("lock_lost", True, connector=1)
    await b.tick()
    s = snap(b)
    assert not s["contactor_commanded"] and not s["contactor_closed"]
    assert s["offered_current_a"] is None
    assert stops(b)[0]["reason"] == "EmergencyStop"
    assert (b.conn(1).status, b.conn(1).error_code) == ("Faulted", "ConnectorLockFailure")


async def test_after_a_stop_with_a_welded_contactor_the_cable_stays_locked(make_bench, caplog):
    b = make_bench()
    await charging(b)
    b.sim.fault("contactor_welded", True, connector=1)
    await b.supervisor.stop(b.conn(1), "Local")  # a card stop: Local unlocks normally
    assert snap(b)["contactor_closed"]  # stuck closed
    assert snap(b)["locked"], "a live socket must not release the plug"
    assert any("cable kept locked" in r.getMessage() for r in caplog.records)
    await b.tick()
    assert (b.conn(1).status, b.conn(1).error_code) == ("Faulted", "PowerSwitchFailure")
    assert await b.supervisor.unlock(b.conn(1)) is False  # UnlockConnector: UnlockFailed
    assert snap(b)["locked"]

    b.sim.fault("contactor_welded", False, connector=1)  # repaired
    await b.tick()
    assert await b.supervisor.unlock(b.conn(1)) is True
    assert not snap(b)["locked"]


# -- state D -----------------------------------------------------------------------------


async def test_state_d_without_ventilation_gets_no_energy(make_bench):
    b = make_bench()
    b.sim.connector(1).sim.needs_ventilation = True
    b.sim.plug(1)
    await b.tick()
    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    await b.tick()
    b.sim.charge(1)
    await b.tick(3)
    assert b.conn(1).ev_state is EvState.D
    assert not snap(b)["contactor_commanded"]
    assert (b.conn(1).status, b.conn(1).error_code) == ("SuspendedEVSE", "OtherError")
    assert Fault.VENTILATION_REQUIRED in b.conn(1).faults
    assert stops(b) == [], "the transaction stays: the EV may switch to state C"

    b.sim.connector(1).sim.needs_ventilation = False  # the EV now asks without ventilation
    await b.tick(2)
    assert snap(b)["contactor_closed"] and b.conn(1).status == "Charging"


async def test_state_d_is_charged_where_the_site_is_ventilated(make_bench):
    b = make_bench()
    b.supervisor.ventilated = True
    b.sim.connector(1).sim.needs_ventilation = True
    b.sim.plug(1)
    await b.tick()
    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    await b.tick()
    b.sim.charge(1)
    await b.tick(2)
    assert b.conn(1).ev_state is EvState.D and snap(b)["contactor_closed"]
    assert (b.conn(1).status, b.conn(1).error_code) == ("Charging", "NoError")


async def test_going_to_d_while_charging_opens_the_contactor(make_bench):
    b = make_bench()
    await charging(b)
    b.sim.connector(1).sim.needs_ventilation = True
    await b.tick()
    assert not snap(b)["contactor_commanded"]
    assert b.conn(1).status == "SuspendedEVSE"


# -- the plain decisions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ev", "ventilated", "faults"),
    [
        (EvState.D, False, {Fault.VENTILATION_REQUIRED}),
        (EvState.D, True, set()),
        (EvState.C, False, set()),
        (EvState.B, False, set()),
    ],
)
def test_ventilation_faults(ev, ventilated, faults):
    assert protection.ventilation_faults(ev, ventilated) == faults


@pytest.mark.parametrize(
    ("closed", "faults", "refused"),
    [
        (False, frozenset(), None),
        (True, frozenset(), "closed"),
        (False, frozenset({Fault.CONTACTOR_WELDED}), "welded"),
        (False, frozenset({Fault.CONTACTOR_FAILED_TO_CLOSE}), None),
    ],
)
def test_unlock_refusal(closed, faults, refused):
    why = protection.unlock_refusal(contactor_closed=closed, contactor_faults=faults)
    assert (why is None) if refused is None else (refused in why)


@pytest.mark.parametrize(
    ("has", "can", "tested_for", "tx", "due"),
    [
        (True, True, None, 5, True),
        (True, True, 5, 5, False),
        (True, True, 4, 5, True),
        (True, False, None, 5, False),
        (False, True, None, 5, False),
        (True, True, None, None, False),
    ],
)
def test_self_test_due(has, can, tested_for, tx, due):
    assert (
        protection.self_test_due(
            has_monitor=has, can_self_test=can, tested_for=tested_for, tx_local_id=tx
        )
        is due
    )
