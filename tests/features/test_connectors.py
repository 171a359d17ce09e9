"""The connector supervisor on the real mock station, one pass at a time (no real waits)."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

TAG = "0A1B2C3D"


def stops(b) -> list[dict]:
    return [json.loads(r["payload"]) for r in b.outbox_rows() if r["action"] == "StopTransaction"]


def starts(b) -> list[dict]:
    return [json.loads(r["payload"]) for r in b.outbox_rows() if r["action"] == "StartTransaction"]


def snap(b, n: int = 1) -> dict:
    return b.sim.snapshot()["connectors"][n - 1]


async def charging(b, n: int = 1, **plug) -> None:
    """Plug, authorize, let the EV ask for energy: the contactor is closed after this."""
    b.sim.plug(n, **plug)
    await b.tick()
    b.supervisor.grant(b.conn(n), id_tag=TAG, parent_id_tag=None)
    await b.tick()
    b.sim.charge(n)
    await b.tick()
    assert b.conn(n).status == "Charging"


# -- a session -------------------------------------------------------------------------------


async def test_plug_and_card_lock_the_cable_start_and_offer_the_most_allowed(make_bench):
    b = make_bench(max_current_a=32)
    b.sim.plug(1, cable_capacity_a=20)
    await b.tick()
    assert b.conn(1).status == "Preparing"
    assert not snap(b)["locked"] and snap(b)["offered_current_a"] is None

    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    await b.tick()
    assert snap(b)["locked"]
    assert snap(b)["offered_current_a"] == 20.0  # the cable's capacity is below the station's
    (start,) = starts(b)
    assert (start["connectorId"], start["idTag"]) == (1, TAG)
    assert b.conn(1).authorization is None and b.conn(1).tx is not None
    # The EV has not asked for energy: the contactor stays open.
    assert not snap(b)["contactor_commanded"]
    assert b.conn(1).status == "SuspendedEV"

    b.sim.charge(1)
    await b.tick()
    assert snap(b)["contactor_commanded"] and snap(b)["contactor_closed"]
    assert b.conn(1).status == "Charging"
    b.clock.advance(3600)  # 20 A x 3 phases x 230 V for an hour
    assert snap(b)["energy_wh"] == pytest.approx(13800)


async def test_the_station_limit_applies_when_the_cable_carries_more(make_bench):
    b = make_bench(max_current_a=16)
    await charging(b, cable_capacity_a=32)
    assert snap(b)["offered_current_a"] == 16.0


async def test_a_suspending_ev_opens_the_contactor_and_the_transaction_goes_on(make_bench):
    b = make_bench()
    await charging(b)
    b.sim.suspend(1)
    await b.tick()
    assert not snap(b)["contactor_commanded"]
    assert b.conn(1).tx is not None and stops(b) == []
    assert b.conn(1).status == "SuspendedEV"
    assert snap(b)["offered_current_a"] == 32.0  # still offered: the EV may resume
    b.sim.charge(1)
    await b.tick()
    assert snap(b)["contactor_commanded"] and b.conn(1).status == "Charging"


async def test_status_sequence_of_a_whole_session(make_bench):
    b = make_bench()
    await b.tick()
    await charging(b)
    b.sim.suspend(1)
    await b.tick()
    await b.supervisor.stop(b.conn(1), "Local", id_tag=TAG)
    await b.tick()
    b.sim.unplug(1)
    await b.tick()
    assert b.status_changes(1) == [
        "Available",
        "Preparing",
        "SuspendedEV",  # started, the EV has not reacted to the PWM yet
        "Charging",
        "SuspendedEV",
        "Finishing",
        "Available",
    ]
    assert {code for _, _, code in b.statuses} == {"NoError"}
    assert stops(b)[0]["reason"] == "Local"


async def test_a_stop_with_the_cable_in_releases_the_lock_and_shows_finishing(make_bench):
    b = make_bench()
    await charging(b)
    await b.supervisor.stop(b.conn(1), "Local", id_tag=TAG)
    s = snap(b)
    assert not s["contactor_commanded"] and s["offered_current_a"] is None and not s["locked"]
    assert b.conn(1).status == "Finishing"


async def test_a_card_in_finishing_waits_for_the_ev_to_be_unplugged(make_bench):
    """OCPP 1.6 §4.9: Finishing is not yet available for a new user (the same EV stays)."""
    b = make_bench()
    await charging(b)
    await b.supervisor.stop(b.conn(1), "Local", id_tag=TAG)
    await b.tick()
    assert b.conn(1).status == "Finishing"
    b.supervisor.grant(b.conn(1), id_tag="11223344", parent_id_tag=None)
    await b.tick(3)
    assert len(starts(b)) == 1 and b.conn(1).tx is None  # nothing new on the same EV
    assert b.conn(1).status == "Finishing"
    b.sim.unplug(1)
    await b.tick()
    assert b.conn(1).status == "Preparing"  # the card waits for the next EV
    b.sim.plug(1)
    await b.tick()
    assert len(starts(b)) == 2 and starts(b)[1]["idTag"] == "11223344"


# -- unplugging ----------------------------------------------------------------------------


async def test_unplug_stops_the_transaction_as_ev_disconnected_and_unlocks(make_bench):
    b = make_bench()
    await charging(b)
    b.clock.advance(60)
    b.sim.unplug(1)
    await b.tick()
    (stop,) = stops(b)
    assert stop["reason"] == "EVDisconnected"
    assert stop["meterStop"] == 368  # 22.08 kW for the minute before the unplug
    s = snap(b)
    assert not s["contactor_commanded"] and s["offered_current_a"] is None and not s["locked"]
    assert b.conn(1).tx is None and b.conn(1).status == "Available"


async def test_unplug_keeps_the_lock_when_unlock_on_ev_side_disconnect_is_off(make_bench):
    b = make_bench(ocpp={"UnlockConnectorOnEVSideDisconnect": False})
    await charging(b)
    b.sim.unplug(1)
    await b.tick()
    assert stops(b)[0]["reason"] == "EVDisconnected"
    assert snap(b)["locked"]


async def test_unplug_keeps_the_transaction_when_stop_on_ev_side_disconnect_is_off(make_bench):
    b = make_bench(ocpp={"StopTransactionOnEVSideDisconnect": False})
    await charging(b)
    b.sim.unplug(1)
    await b.tick()
    assert stops(b) == [] and b.conn(1).tx is not None
    s = snap(b)
    assert not s["contactor_commanded"] and s["locked"]
    assert b.conn(1).status == "SuspendedEV"
    # the EV comes back and charges within what its cable carries
    b.sim.plug(1, cable_capacity_a=13)
    b.sim.charge(1)
    await b.tick(2)
    assert snap(b)["offered_current_a"] == 13.0
    assert b.conn(1).status == "Charging"
    assert len(starts(b)) == 1


# -- authorization without an EV -----------------------------------------------------------


async def test_an_authorization_expires_after_connection_timeout(make_bench):
    b = make_bench(ocpp={"ConnectionTimeOut": 30})
    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    await b.tick()
    assert b.conn(1).status == "Preparing"
    await b.run_for(30)
    assert b.conn(1).authorization is not None  # not yet beyond the deadline
    await b.run_for(1)
    assert b.conn(1).authorization is None and b.conn(1).status == "Available"
    b.sim.plug(1)
    await b.tick()
    assert starts(b) == [] and b.conn(1).tx is None


async def test_connection_timeout_zero_waits_for_the_ev_forever(make_bench):
    b = make_bench(ocpp={"ConnectionTimeOut": 0})
    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    b.clock.advance(7 * 86400)
    b.sim.plug(1)
    await b.tick()
    assert len(starts(b)) == 1


async def test_an_ev_plugged_within_the_timeout_starts(make_bench):
    b = make_bench(ocpp={"ConnectionTimeOut": 30})
    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    await b.run_for(29)
    b.sim.plug(1)
    await b.tick()
    assert len(starts(b)) == 1


# -- faults ----------------------------------------------------------------------------------


async def test_a_welded_contactor_ends_the_transaction_and_faults_the_connector(make_bench, caplog):
    b = make_bench()
    await charging(b)
    b.sim.fault("contactor_welded", True, connector=1)
    b.sim.suspend(1)  # the contactor is told to open: the contacts stay closed
    await b.tick(3)
    (stop,) = stops(b)
    assert stop["reason"] == "EmergencyStop"
    s = snap(b)
    assert not s["contactor_commanded"] and s["contactor_closed"]  # commanded open, stuck
    assert s["offered_current_a"] is None
    assert (b.conn(1).status, b.conn(1).error_code) == ("Faulted", "PowerSwitchFailure")
    assert b.supervisor.first_free() is None


async def test_a_jammed_lock_during_charging_ends_the_transaction(make_bench):
    b = make_bench()
    await charging(b)
    b.sim.fault("lock_jammed", True, connector=1)
    await b.tick()
    assert stops(b)[0]["reason"] == "EmergencyStop"
    s = snap(b)
    assert not s["contactor_commanded"] and s["offered_current_a"] is None
    assert s["locked"]  # jammed where it was
    assert (b.conn(1).status, b.conn(1).error_code) == ("Faulted", "ConnectorLockFailure")


async def test_a_lock_that_does_not_close_prevents_the_start(make_bench):
    b = make_bench()
    b.sim.plug(1)
    b.sim.fault("lock_jammed", True, connector=1)
    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    await b.tick(2)
    assert starts(b) == [] and b.conn(1).tx is None and b.conn(1).authorization is None
    assert snap(b)["offered_current_a"] is None and not snap(b)["contactor_commanded"]


async def test_an_ev_error_suspends_the_transaction_and_charging_resumes_after(make_bench):
    b = make_bench()
    await charging(b)
    b.sim.fault("ev_error", True, connector=1)
    await b.tick()
    assert not snap(b)["contactor_commanded"]
    assert stops(b) == [] and b.conn(1).tx is not None
    assert snap(b)["locked"]
    assert (b.conn(1).status, b.conn(1).error_code) == ("SuspendedEV", "EVCommunicationError")
    b.sim.fault("ev_error", False, connector=1)
    await b.tick()
    assert snap(b)["contactor_commanded"]
    assert (b.conn(1).status, b.conn(1).error_code) == ("Charging", "NoError")


async def test_a_silent_meter_keeps_charging_and_stops_on_the_last_good_reading(make_bench):
    b = make_bench()
    await charging(b)
    b.clock.advance(60)
    await b.tick()
    b.sim.fault("meter_silent", True, connector=1)
    b.clock.advance(60)
    await b.tick()
    assert snap(b)["contactor_commanded"]
    assert (b.conn(1).status, b.conn(1).error_code) == ("Charging", "PowerMeterFailure")
    await b.supervisor.stop(b.conn(1), "Local")
    assert stops(b)[0]["meterStop"] == 368


async def test_a_store_failure_at_start_refuses_it_once_and_releases_the_lock(
    make_bench, monkeypatch, caplog
):
    b = make_bench()

    def failing(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(b.outbox, "enqueue", failing)
    b.sim.plug(1)
    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    caplog.set_level(logging.ERROR)
    for _ in range(5):
        await b.supervisor.tick(b.conn(1))
    assert b.conn(1).tx is None and b.conn(1).authorization is None
    assert not snap(b)["locked"] and snap(b)["offered_current_a"] is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "refused" in errors[0].getMessage()


# -- an id the CSMS declares invalid ----------------------------------------------------------


async def test_stop_transaction_on_invalid_id_stops_as_deauthorized(make_bench):
    b = make_bench()
    await charging(b)
    b.link.answer("StartTransaction", {"transactionId": 9, "idTagInfo": {"status": "Invalid"}})
    b.link.default["StopTransaction"] = {}
    await b.deliver()
    (stop,) = [p for _, p in b.link.sent("StopTransaction")]
    assert (stop["reason"], stop["transactionId"]) == ("DeAuthorized", 9)
    assert not snap(b)["contactor_commanded"] and b.conn(1).tx is None


async def test_max_energy_on_invalid_id_stops_the_energy_not_the_transaction(make_bench):
    """OCPP 1.6, StopTransactionOnInvalidId=false: charge up to MaxEnergyOnInvalidId, then
    stop delivering energy; the transaction stays open until its owner ends it."""
    b = make_bench(ocpp={"StopTransactionOnInvalidId": False, "MaxEnergyOnInvalidId": 1000})
    await charging(b)
    b.link.answer("StartTransaction", {"transactionId": 9, "idTagInfo": {"status": "Blocked"}})
    await b.deliver()
    assert b.conn(1).tx.invalid
    await b.run_for(120, step=10)  # 22.08 kW: 736 Wh
    assert stops(b) == [] and snap(b)["contactor_commanded"]
    await b.run_for(60, step=10)  # 1104 Wh >= 1000
    assert stops(b) == []
    assert b.conn(1).tx is not None and b.conn(1).tx.energy_blocked
    assert not snap(b)["contactor_commanded"]
    assert b.conn(1).hw.pilot.offered_current_a is None
    assert b.conn(1).status == "SuspendedEVSE"
    energy = snap(b)["energy_wh"]
    await b.run_for(60, step=10)
    assert snap(b)["energy_wh"] == energy  # no more energy


# -- availability and the choice of connector -----------------------------------------------


async def test_a_scheduled_availability_change_applies_when_the_transaction_ends(make_bench):
    b = make_bench()
    await charging(b)
    idle_calls = []
    b.supervisor.on_idle.append(lambda: idle_calls.append(1))
    b.conn(1).scheduled_operative = False
    await b.tick()
    assert b.conn(1).status == "Charging"  # the transaction outlives the change
    await b.supervisor.stop(b.conn(1), "Local")
    assert b.conn(1).operative is False and b.conn(1).scheduled_operative is None
    assert b.conn(1).status == "Unavailable"
    assert idle_calls == [1]
    b.supervisor.grant(b.conn(1), id_tag=TAG, parent_id_tag=None)
    await b.tick()
    assert len(starts(b)) == 1  # nothing starts on an inoperative connector


async def test_first_free_prefers_plugged_then_empty_then_finishing(make_bench):
    b = make_bench(connectors=3)
    sup = b.supervisor
    b.sim.plug(2)
    await charging(b, 3)
    await sup.stop(b.conn(3), "Local")  # connector 3: Finishing, cable still in
    await b.tick()
    assert [b.conn(n).status for n in (1, 2, 3)] == ["Available", "Preparing", "Finishing"]
    assert sup.first_free() is b.conn(2)
    sup.grant(b.conn(2), id_tag="11111111", parent_id_tag=None)
    assert sup.first_free() is b.conn(1)
    sup.grant(b.conn(1), id_tag="22222222", parent_id_tag=None)
    assert sup.first_free() is b.conn(3)
    sup.grant(b.conn(3), id_tag="33333333", parent_id_tag=None)
    assert sup.first_free() is None


async def test_first_free_skips_busy_held_inoperative_and_faulted_connectors(make_bench):
    b = make_bench(connectors=4)
    sup = b.supervisor
    await charging(b, 1)
    b.conn(2).held = True
    b.conn(3).operative = False
    b.sim.fault("lock_jammed", True, connector=4)
    await b.tick()
    assert sup.first_free() is None
    for n in (1, 2, 3, 4):
        assert sup.first_free(n) is None
    b.sim.fault("lock_jammed", False, connector=4)
    await b.tick()
    assert sup.first_free() is b.conn(4) and sup.first_free(4) is b.conn(4)
    sup.station_operative = False
    assert sup.first_free() is None and sup.first_free(4) is None


async def test_a_card_given_before_plugging_follows_the_ev_to_its_socket(make_bench):
    b = make_bench(connectors=2)
    target = b.supervisor.first_free()
    assert target is b.conn(1)
    b.supervisor.grant(target, id_tag=TAG, parent_id_tag=None)
    b.sim.plug(2)
    await b.tick(2)
    assert [s["connectorId"] for s in starts(b)] == [2]
    assert b.conn(1).authorization is None and b.conn(1).status == "Available"


async def test_the_connector_0_status_follows_the_station(make_bench):
    b = make_bench(connectors=2)
    await b.tick()
    assert b.supervisor.station_status(frozenset()) == ("Available", "NoError")
    b.supervisor.station_operative = False
    await b.tick()
    assert b.supervisor.station_status(frozenset()) == ("Unavailable", "NoError")
    assert {b.conn(n).status for n in (1, 2)} == {"Unavailable"}
