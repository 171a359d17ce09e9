"""The connector status machine: every rule of the table, the fault mapping, the reporter."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from ocpp.v16.enums import ChargePointErrorCode as Code
from ocpp.v16.enums import ChargePointStatus as St

from chargerd.features.status import (
    BLOCKING_FAULTS,
    FAULT_TABLE,
    RULES,
    TRANSACTION_STATUSES,
    ConnectorInputs,
    StatusReport,
    StatusReporter,
    connector_status,
    explain,
    indicator_for,
    station_status,
    status_info,
)
from hal.interfaces import EvState, Fault, IndicatorState

IDLE = ConnectorInputs(
    ev_state=EvState.A,
    operative=True,
    reserved=False,
    authorized_pending=False,
    transaction_active=False,
    offered_current_a=None,
    contactor_closed=False,
    transaction_stopped_plugged=False,
)


def inputs(**changes) -> ConnectorInputs:
    return replace(IDLE, **changes)


TX = dict(transaction_active=True, offered_current_a=16.0)
CHARGING = dict(TX, ev_state=EvState.C, contactor_closed=True)

# The rules of the table, by name.
FAULT, NO_OFFER, DRAWS = (
    "blocking fault",
    "transaction, EVSE offers no current",
    "transaction, EV draws, contactor closed",
)
WAITS, NOT_REQ = "transaction, EV ready, contactor open", "transaction, EV not requesting"
INOP, AUTH, FIN = "inoperative", "authorized, waiting for the EV", "transaction ended, cable in"
RES, PLUG, IDLE_RULE = "reserved, nobody there", "plugged", "idle"

B, C, D = (dict(ev_state=s) for s in (EvState.B, EvState.C, EvState.D))
RESERVED, INOPERATIVE, AUTHORIZED = (
    dict(reserved=True),
    dict(operative=False),
    dict(authorized_pending=True),
)
ENDED = dict(ev_state=EvState.B, transaction_stopped_plugged=True)


def faults(*fs: Fault) -> dict:
    return dict(faults=frozenset(fs))


def row(case, status, rule, *parts: dict, code=Code.no_error, **changes):
    merged = {k: v for part in parts for k, v in part.items()} | changes
    return pytest.param(merged, status, code, rule, id=case)


TABLE = [
    row("idle", St.available, IDLE_RULE),
    row("EV plugged", St.preparing, PLUG, B),
    row("EV plugged, ready", St.preparing, PLUG, C),
    row("card first", St.preparing, AUTH, AUTHORIZED),
    row("reserved", St.reserved, RES, RESERVED),
    row("reserved, plugged", St.preparing, PLUG, RESERVED, B),
    row("reserved, its idTag presented", St.preparing, AUTH, RESERVED, AUTHORIZED),
    row("inoperative", St.unavailable, INOP, INOPERATIVE),
    row("inoperative, plugged", St.unavailable, INOP, INOPERATIVE, B),
    row("inoperative, reserved", St.unavailable, INOP, INOPERATIVE, RESERVED),
    row("inoperative after a transaction", St.unavailable, INOP, INOPERATIVE, ENDED),
    row("transaction ended, cable in", St.finishing, FIN, ENDED),
    row("finishing, reserved meanwhile", St.finishing, FIN, ENDED, RESERVED),
    row("finishing, next card", St.preparing, AUTH, ENDED, AUTHORIZED),
    row("charging C", St.charging, DRAWS, CHARGING),
    row("charging D", St.charging, DRAWS, CHARGING, D),
    row("charging while inoperative (scheduled)", St.charging, DRAWS, CHARGING, INOPERATIVE),
    row("charging while reserved", St.charging, DRAWS, CHARGING, RESERVED),
    row("EV ready, contactor not closed yet", St.suspended_evse, WAITS, TX, C),
    row("smart charging limit 0", St.suspended_evse, NO_OFFER, CHARGING, offered_current_a=0.0),
    row("no PWM", St.suspended_evse, NO_OFFER, CHARGING, offered_current_a=None),
    row("no PWM, EV paused: EVSE wins", St.suspended_evse, NO_OFFER, TX, B, offered_current_a=None),
    row("EV paused, contactor closed", St.suspended_ev, NOT_REQ, CHARGING, B),
    row("EV paused, contactor open", St.suspended_ev, NOT_REQ, TX, B),
    row("EV unplugged, transaction kept", St.suspended_ev, NOT_REQ, TX, ev_state=EvState.A),
    row("EV in state E during a transaction", St.suspended_ev, NOT_REQ, TX,
        faults(Fault.EV_ERROR), ev_state=EvState.E, code=Code.ev_communication_error),
    row("EV error without transaction", St.available, IDLE_RULE, faults(Fault.EV_ERROR),
        ev_state=EvState.F, code=Code.ev_communication_error),
    row("meter silent while charging", St.charging, DRAWS, CHARGING, faults(Fault.METER_FAILURE),
        code=Code.power_meter_failure),
    row("reader dead while idle", St.available, IDLE_RULE, faults(Fault.READER_FAILURE),
        code=Code.reader_failure),
    row("welded while charging", St.faulted, FAULT, CHARGING, faults(Fault.CONTACTOR_WELDED),
        code=Code.power_switch_failure),
    row("contactor does not close", St.faulted, FAULT, TX, C,
        faults(Fault.CONTACTOR_FAILED_TO_CLOSE), code=Code.power_switch_failure),
    row("lock jammed", St.faulted, FAULT, B, faults(Fault.LOCK_FAILURE),
        code=Code.connector_lock_failure),
    row("pilot unreadable", St.faulted, FAULT, faults(Fault.PILOT_FAILURE), code=Code.other_error),
    row("fault beats inoperative", St.faulted, FAULT, INOPERATIVE, faults(Fault.CONTACTOR_WELDED),
        code=Code.power_switch_failure),
    row("welded and meter: the blocking fault names the code", St.faulted, FAULT, CHARGING,
        faults(Fault.METER_FAILURE, Fault.CONTACTOR_WELDED), code=Code.power_switch_failure),
    row("meter and reader: meter first", St.available, IDLE_RULE,
        faults(Fault.READER_FAILURE, Fault.METER_FAILURE), code=Code.power_meter_failure),
    row("lock and pilot: lock first", St.faulted, FAULT,
        faults(Fault.PILOT_FAILURE, Fault.LOCK_FAILURE), code=Code.connector_lock_failure),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "status", "code", "rule"), TABLE)
def test_status_table(changes, status, code, rule):
    i = inputs(**changes)
    assert connector_status(i) == (status, code)
    assert explain(i).name == rule


def test_every_rule_has_a_row():
    decided = {param.values[3] for param in TABLE}
    assert decided == {rule.name for rule in RULES}


@pytest.mark.parametrize(
    ("fault", "code", "blocking"),
    [
        (Fault.CONTACTOR_WELDED, Code.power_switch_failure, True),
        (Fault.CONTACTOR_FAILED_TO_CLOSE, Code.power_switch_failure, True),
        (Fault.LOCK_FAILURE, Code.connector_lock_failure, True),
        (Fault.PILOT_FAILURE, Code.other_error, True),
        (Fault.EV_ERROR, Code.ev_communication_error, False),
        (Fault.METER_FAILURE, Code.power_meter_failure, False),
        (Fault.READER_FAILURE, Code.reader_failure, False),
    ],
)
def test_each_fault_idle_and_charging(fault, code, blocking):
    for base in ({}, CHARGING):
        status, got = connector_status(inputs(**base, faults=frozenset({fault})))
        assert got == code
        unfaulted, _ = connector_status(inputs(**base))
        assert status == (St.faulted if blocking else unfaulted)


def test_every_hal_fault_is_mapped():
    assert set(FAULT_TABLE) == set(Fault)


FAULT_SETS = [
    frozenset(),
    *(frozenset({f}) for f in Fault),
    frozenset({Fault.METER_FAILURE, Fault.LOCK_FAILURE}),
]


def _all_inputs():
    for ev, op, res, auth, tx, offered, closed, fin, faults in itertools.product(
        EvState,
        (True, False),
        (True, False),
        (True, False),
        (True, False),
        (None, 0.0, 16.0),
        (True, False),
        (True, False),
        FAULT_SETS,
    ):
        yield ConnectorInputs(ev, op, res, auth, tx, offered, closed, fin, faults)


def test_invariants_over_every_combination():
    """Over every combination of inputs: the properties a CSMS relies on hold."""
    fired = set()
    for i in _all_inputs():
        status, code = connector_status(i)
        fired.add(explain(i).name)
        blocked = bool(i.faults & BLOCKING_FAULTS)
        assert (status == St.faulted) == blocked, i
        assert (code == Code.no_error) == (not i.faults), i
        if not blocked:
            assert (status in TRANSACTION_STATUSES) == i.transaction_active, i
        if status == St.charging:
            assert i.contactor_closed and i.ev_state.requesting and i.offered_current_a, i
        if status == St.unavailable:
            assert not i.operative and not i.transaction_active, i
        if status == St.reserved:
            assert i.reserved and not i.ev_state.plugged, i
    assert fired == {rule.name for rule in RULES}, "a rule of the table is never reached"


# OCPP 1.6 §4.9 status transitions (as in EVerest libocpp's FSM_DEF); Faulted from anywhere.
ALLOWED = {
    St.available: {
        St.preparing,
        St.charging,
        St.suspended_ev,
        St.suspended_evse,
        St.reserved,
        St.unavailable,
    },
    St.preparing: {St.available, St.charging, St.suspended_ev, St.suspended_evse, St.finishing},
    St.charging: {St.available, St.suspended_ev, St.suspended_evse, St.finishing, St.unavailable},
    St.suspended_ev: {St.available, St.charging, St.suspended_evse, St.finishing, St.unavailable},
    St.suspended_evse: {St.available, St.charging, St.suspended_ev, St.finishing, St.unavailable},
    St.finishing: {St.available, St.preparing, St.unavailable},
    St.reserved: {St.available, St.preparing, St.unavailable},
    St.unavailable: {St.available, St.preparing, St.charging, St.suspended_ev, St.suspended_evse},
    St.faulted: set(St) - {St.faulted},
}
for _targets in ALLOWED.values():
    _targets.add(St.faulted)

JOURNEYS = {
    "plug first, EV pauses, card stop": [
        ({}, St.available),
        (dict(ev_state=EvState.B), St.preparing),
        (dict(ev_state=EvState.B, **TX), St.suspended_ev),
        (dict(TX, ev_state=EvState.C), St.suspended_evse),
        (CHARGING, St.charging),
        (dict(CHARGING, ev_state=EvState.B), St.suspended_ev),
        (CHARGING, St.charging),
        (dict(ev_state=EvState.C, transaction_stopped_plugged=True), St.finishing),
        ({}, St.available),
    ],
    "card first, smart charging pause": [
        (dict(authorized_pending=True), St.preparing),
        (dict(authorized_pending=True, ev_state=EvState.C), St.preparing),
        (CHARGING, St.charging),
        (dict(CHARGING, offered_current_a=0.0, contactor_closed=False), St.suspended_evse),
        (CHARGING, St.charging),
        (dict(ev_state=EvState.B, transaction_stopped_plugged=True), St.finishing),
        (
            dict(ev_state=EvState.B, transaction_stopped_plugged=True, authorized_pending=True),
            St.preparing,
        ),
    ],
    "reservation used": [
        (dict(reserved=True), St.reserved),
        (dict(reserved=True, authorized_pending=True), St.preparing),
        (dict(CHARGING), St.charging),
        (dict(TX, ev_state=EvState.A), St.suspended_ev),  # unplugged, transaction kept
        ({}, St.available),
    ],
    "reservation expires": [
        ({}, St.available),
        (dict(reserved=True), St.reserved),
        ({}, St.available),
    ],
    "inoperative scheduled during a charge": [
        (dict(CHARGING, operative=False), St.charging),
        (
            dict(operative=False, ev_state=EvState.B, transaction_stopped_plugged=True),
            St.unavailable,
        ),
        (dict(operative=False), St.unavailable),
        ({}, St.available),
    ],
    "contactor welds at the stop, repaired": [
        (CHARGING, St.charging),
        (
            dict(
                ev_state=EvState.B,
                transaction_stopped_plugged=True,
                faults=frozenset({Fault.CONTACTOR_WELDED}),
            ),
            St.faulted,
        ),
        (dict(ev_state=EvState.B, transaction_stopped_plugged=True), St.finishing),
        ({}, St.available),
    ],
}


@pytest.mark.parametrize("journey", list(JOURNEYS))
def test_journeys_follow_the_spec_transitions(journey):
    statuses = []
    for changes, expected in JOURNEYS[journey]:
        status, _ = connector_status(inputs(**changes))
        assert status == expected, (changes, status)
        statuses.append(status)
    for before, after in itertools.pairwise(statuses):
        if before != after:
            assert after in ALLOWED[before], f"{before} -> {after} is not an OCPP 1.6 transition"


# -- connector 0 and the light --------------------------------------------------------


@pytest.mark.parametrize(
    ("connectors", "faults", "operative", "expected"),
    [
        ([St.available, St.charging], frozenset(), True, (St.available, Code.no_error)),
        ([St.faulted, St.faulted], frozenset(), True, (St.available, Code.no_error)),
        ([St.unavailable], frozenset(), False, (St.unavailable, Code.no_error)),
        ([St.charging, St.unavailable], frozenset(), False, (St.available, Code.no_error)),
        ([St.suspended_ev], frozenset(), False, (St.available, Code.no_error)),
        ([St.finishing], frozenset(), False, (St.unavailable, Code.no_error)),
        (
            [St.available],
            frozenset({Fault.READER_FAILURE}),
            True,
            (St.available, Code.reader_failure),
        ),
        (
            [St.unavailable],
            frozenset({Fault.READER_FAILURE}),
            False,
            (St.unavailable, Code.reader_failure),
        ),
        ([St.charging], frozenset({Fault.PILOT_FAILURE}), True, (St.faulted, Code.other_error)),
        ([St.available], frozenset({Fault.PILOT_FAILURE}), False, (St.faulted, Code.other_error)),
    ],
)
def test_station_status(connectors, faults, operative, expected):
    assert station_status(connectors, faults, operative) == expected


def test_station_status_uses_only_the_three_allowed_values():
    seen = set()
    for statuses in itertools.product(list(St), repeat=2):
        for faults in FAULT_SETS:
            for operative in (True, False):
                seen.add(station_status(statuses, faults, operative)[0])
    assert seen == {St.available, St.unavailable, St.faulted}


def test_indicator_for_every_status():
    expected = {
        St.available: IndicatorState.AVAILABLE,
        St.preparing: IndicatorState.PREPARING,
        St.charging: IndicatorState.CHARGING,
        St.suspended_ev: IndicatorState.SUSPENDED,
        St.suspended_evse: IndicatorState.SUSPENDED,
        St.finishing: IndicatorState.FINISHING,
        St.reserved: IndicatorState.RESERVED,
        St.unavailable: IndicatorState.UNAVAILABLE,
        St.faulted: IndicatorState.FAULTED,
    }
    assert {s: indicator_for(s) for s in St} == expected
    assert indicator_for("Charging") == IndicatorState.CHARGING


def test_status_info_names_the_faults_within_50_chars():
    assert status_info(frozenset()) is None
    assert status_info({Fault.METER_FAILURE}) == "meter_failure"
    everything = status_info(set(Fault))
    # A ground failure outranks everything: it names the code and comes first.
    assert everything.startswith("rcd_tripped,contactor_welded,contactor_failed")
    assert len(everything) <= 50


# -- StatusReporter -------------------------------------------------------------------


def report(cid, status, code=Code.no_error):
    return StatusReport(cid, status, code)


def test_first_status_goes_out_at_once_even_with_a_minimum_duration():
    r = StatusReporter(minimum_duration_s=10)
    assert r.observe(1, St.available, Code.no_error, now=0.0) == report(1, St.available)
    assert r.observe(1, St.available, Code.no_error, now=1.0) is None


def test_without_minimum_duration_every_change_goes_out():
    r = StatusReporter()
    r.observe(1, St.available, Code.no_error, now=0.0)
    assert r.observe(1, St.preparing, Code.no_error, now=0.1) == report(1, St.preparing)
    assert r.observe(1, St.preparing, Code.no_error, now=0.2) is None
    assert r.observe(1, St.available, Code.no_error, now=0.3) == report(1, St.available)


def test_a_change_is_held_until_stable_for_the_minimum_duration():
    r = StatusReporter(minimum_duration_s=5)
    r.observe(1, St.available, Code.no_error, now=0.0)
    assert r.observe(1, St.preparing, Code.no_error, now=10.0) is None
    assert r.next_deadline() == 15.0
    assert r.due(now=14.9) == []
    assert r.observe(1, St.preparing, Code.no_error, now=14.0) is None
    assert r.due(now=15.0) == [report(1, St.preparing)]
    assert r.due(now=16.0) == []
    assert r.next_deadline() is None


def test_observe_itself_releases_a_hold_that_has_lasted():
    r = StatusReporter(minimum_duration_s=5)
    r.observe(1, St.available, Code.no_error, now=0.0)
    r.observe(1, St.preparing, Code.no_error, now=10.0)
    assert r.observe(1, St.preparing, Code.no_error, now=15.0) == report(1, St.preparing)


def test_a_flicker_back_to_the_reported_status_sends_nothing():
    r = StatusReporter(minimum_duration_s=5)
    r.observe(1, St.available, Code.no_error, now=0.0)
    r.observe(1, St.preparing, Code.no_error, now=10.0)
    assert r.observe(1, St.available, Code.no_error, now=12.0) is None
    assert r.due(now=100.0) == []
    assert r.next_deadline() is None


def test_a_new_status_during_a_hold_restarts_the_hold():
    r = StatusReporter(minimum_duration_s=5)
    r.observe(1, St.available, Code.no_error, now=0.0)
    r.observe(1, St.preparing, Code.no_error, now=10.0)
    r.observe(1, St.charging, Code.no_error, now=13.0)
    assert r.due(now=15.0) == []
    assert r.due(now=18.0) == [report(1, St.charging)]


def test_an_error_code_change_alone_is_a_change():
    r = StatusReporter()
    r.observe(1, St.charging, Code.no_error, now=0.0)
    assert r.observe(1, St.charging, Code.power_meter_failure, now=1.0) == report(
        1, St.charging, Code.power_meter_failure
    )


def test_connectors_are_held_independently():
    r = StatusReporter(minimum_duration_s=5)
    for cid in (0, 1, 2):
        r.observe(cid, St.available, Code.no_error, now=0.0)
    r.observe(2, St.preparing, Code.no_error, now=1.0)
    r.observe(1, St.preparing, Code.no_error, now=3.0)
    assert r.due(now=6.0) == [report(2, St.preparing)]
    assert r.due(now=8.0) == [report(1, St.preparing)]


def test_a_shorter_minimum_duration_applies_to_a_running_hold():
    r = StatusReporter(minimum_duration_s=60)
    r.observe(1, St.available, Code.no_error, now=0.0)
    r.observe(1, St.preparing, Code.no_error, now=10.0)
    r.minimum_duration_s = 0
    assert r.due(now=10.0) == [report(1, St.preparing)]


def test_after_reconnect_every_connector_is_sent_again_holds_stay_held():
    r = StatusReporter(minimum_duration_s=5)
    r.observe(1, St.available, Code.no_error, now=0.0)
    r.observe(0, St.available, Code.no_error, now=0.0)
    r.observe(2, St.charging, Code.no_error, now=0.0)
    r.observe(2, St.suspended_ev, Code.no_error, now=10.0)  # held until 15
    assert r.pending_after_reconnect() == [
        report(0, St.available),
        report(1, St.available),
        report(2, St.charging),
    ]
    assert r.pending_after_reconnect() == r.pending_after_reconnect()  # nothing consumed
    assert r.due(now=15.0) == [report(2, St.suspended_ev)]
    assert r.pending_after_reconnect()[2] == report(2, St.suspended_ev)


def test_reporter_accepts_plain_strings():
    r = StatusReporter()
    assert r.observe(1, "Faulted", "PowerSwitchFailure", now=0.0) == report(
        1, St.faulted, Code.power_switch_failure
    )


def test_protection_faults_map_to_their_ocpp_codes():
    tx = dict(
        ev_state=EvState.D,
        operative=True,
        reserved=False,
        authorized_pending=False,
        transaction_active=True,
        offered_current_a=16.0,
        contactor_closed=False,
        transaction_stopped_plugged=False,
    )
    assert connector_status(
        ConnectorInputs(**tx, faults=frozenset({Fault.VENTILATION_REQUIRED}))
    ) == (St.suspended_evse, Code.other_error)
    assert connector_status(
        ConnectorInputs(**tx, faults=frozenset({Fault.RCD_TRIPPED, Fault.CONTACTOR_WELDED}))
    ) == (St.faulted, Code.ground_failure)
    assert connector_status(ConnectorInputs(**tx, faults=frozenset({Fault.RCD_FAILURE}))) == (
        St.faulted,
        Code.other_error,
    )
