"""The composite schedule and the split of a station limit: table-driven, no clock, no I/O.

Every row is a case a CSMS engineer would check by hand; the rows named after the
field's known bugs (midnight, the week boundary, Relative started before the
request, gaps, stack levels ending at different times, a TxProfile ending first,
W and A mixed, TxDefault on connector 0 and on the connector) are the reason
this table exists.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chargerd.clock import iso
from chargerd.features.smart_charging.composite import (
    Demand,
    Electrical,
    allocate,
    composite_schedule,
    floor_tenth,
    limit_at,
)
from chargerd.features.smart_charging.model import parse_profile

ELEC = Electrical(voltage_v=230.0, phases=3)
# 2026-01-11 is a Sunday; the requests below are made around it.
SUN = datetime(2026, 1, 11, tzinfo=UTC)


def at(day: datetime, hh: int, mm: int = 0) -> datetime:
    return day + timedelta(hours=hh, minutes=mm)


def prof(
    pid: int,
    purpose: str = "TxDefaultProfile",
    *,
    stack: int = 0,
    kind: str = "Absolute",
    periods: list[tuple[int, float] | tuple[int, float, int]] = ((0, 16.0),),
    unit: str = "A",
    start: datetime | None = None,
    duration: int | None = None,
    recurrency: str | None = None,
    connector: int = 1,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    min_rate: float | None = None,
):
    schedule: dict = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [
            {"startPeriod": p[0], "limit": p[1], **({"numberPhases": p[2]} if len(p) > 2 else {})}
            for p in periods
        ],
    }
    if start is not None:
        schedule["startSchedule"] = iso(start)
    if duration is not None:
        schedule["duration"] = duration
    if min_rate is not None:
        schedule["minChargingRate"] = min_rate
    raw: dict = {
        "chargingProfileId": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": schedule,
    }
    if recurrency:
        raw["recurrencyKind"] = recurrency
    if valid_from:
        raw["validFrom"] = iso(valid_from)
    if valid_to:
        raw["validTo"] = iso(valid_to)
    return parse_profile(raw, 0 if purpose == "ChargePointMaxProfile" else connector)


NOW = at(SUN, 12)
H = 3600

# (name, profiles, request start, duration s, connector, tx start, unit, expected periods)
CASES = [
    ("no profile: the station's maximum", [], NOW, 3600, 1, None, "A", [(0, 32.0)]),
    (
        "an Absolute TxDefault from before the request",
        [prof(1, start=NOW - timedelta(hours=1))],
        NOW,
        3600,
        1,
        None,
        "A",
        [(0, 16.0)],
    ),
    (
        "recurring daily across midnight: 22:00-06:00 at 10 A, asked at 23:00",
        [
            prof(
                1,
                kind="Recurring",
                recurrency="Daily",
                start=at(SUN - timedelta(days=6), 22),
                duration=8 * H,
                periods=[(0, 10.0)],
            )
        ],
        at(SUN, 23),
        24 * H,
        1,
        None,
        "A",
        [(0, 10.0), (7 * H, 32.0), (23 * H, 10.0)],
    ),
    (
        "recurring daily across midnight, periods on both sides of it",
        [
            prof(
                1,
                kind="Recurring",
                recurrency="Daily",
                start=at(SUN, 22),  # anchored in the future: the time of day counts
                periods=[(0, 8.0), (3 * H, 20.0), (8 * H, 32.0)],
            )
        ],
        at(SUN, 0, 30),
        6 * H,
        1,
        None,
        "A",
        [(0, 8.0), (1800, 20.0), (int(5.5 * H), 32.0)],
    ),
    (
        "recurring weekly across the week boundary (Sunday 20:00 to Monday 06:00)",
        [
            prof(
                1,
                kind="Recurring",
                recurrency="Weekly",
                start=at(SUN - timedelta(days=7), 20),
                duration=10 * H,
                periods=[(0, 8.0)],
            )
        ],
        at(SUN, 12),
        24 * H,
        1,
        None,
        "A",
        [(0, 32.0), (8 * H, 8.0), (18 * H, 32.0)],
    ),
    (
        "recurring weekly, asked on the Monday after",
        [
            prof(
                1,
                kind="Recurring",
                recurrency="Weekly",
                start=at(SUN - timedelta(days=7), 20),
                duration=10 * H,
                periods=[(0, 8.0)],
            )
        ],
        at(SUN + timedelta(days=1), 2),
        6 * H,
        1,
        None,
        "A",
        [(0, 8.0), (4 * H, 32.0)],
    ),
    (
        "Relative started before the request: the schedule counts from the transaction",
        [prof(1, kind="Relative", periods=[(0, 16.0), (3600, 8.0)])],
        NOW,
        2 * H,
        1,
        NOW - timedelta(minutes=30),
        "A",
        [(0, 16.0), (1800, 8.0)],
    ),
    (
        "a gap between two profiles: the station's maximum applies in it",
        [
            prof(1, stack=2, start=NOW, duration=H, periods=[(0, 10.0)]),
            prof(2, stack=1, start=NOW + timedelta(hours=2), periods=[(0, 20.0)]),
        ],
        NOW,
        3 * H,
        1,
        None,
        "A",
        [(0, 10.0), (H, 32.0), (2 * H, 20.0)],
    ),
    (
        "overlapping stack levels ending at different times: the next one down takes over",
        [
            prof(1, stack=0, start=NOW, duration=3 * H, periods=[(0, 20.0)]),
            prof(2, stack=1, start=NOW, duration=H, periods=[(0, 10.0)]),
            prof(3, stack=2, start=NOW, duration=1800, periods=[(0, 6.0)]),
        ],
        NOW,
        4 * H,
        1,
        None,
        "A",
        [(0, 6.0), (1800, 10.0), (H, 20.0), (3 * H, 32.0)],
    ),
    (
        "a higher stack level wins even when its limit is higher",
        [
            prof(1, stack=0, start=NOW, periods=[(0, 10.0)]),
            prof(2, stack=1, start=NOW, periods=[(0, 25.0)]),
        ],
        NOW,
        H,
        1,
        None,
        "A",
        [(0, 25.0)],
    ),
    (
        "a TxProfile ending before the transaction: the TxDefaultProfile again",
        [
            prof(1, stack=0, periods=[(0, 16.0)], start=NOW - timedelta(days=1)),
            prof(2, "TxProfile", stack=0, kind="Relative", duration=H, periods=[(0, 8.0)]),
        ],
        NOW,
        2 * H,
        1,
        NOW - timedelta(minutes=10),
        "A",
        [(0, 8.0), (3000, 16.0)],
    ),
    (
        "W and A mixed: a ChargePointMax in W below a TxDefault in A, answered in A",
        [
            prof(1, "ChargePointMaxProfile", unit="W", start=NOW, periods=[(0, 6900.0)]),
            prof(2, start=NOW, periods=[(0, 12.0)]),
        ],
        NOW,
        H,
        1,
        None,
        "A",
        [(0, 10.0)],
    ),
    (
        "W and A mixed, answered in W",
        [
            prof(1, "ChargePointMaxProfile", unit="W", start=NOW, periods=[(0, 6900.0)]),
            prof(2, start=NOW, duration=H, periods=[(0, 8.0)]),
        ],
        NOW,
        2 * H,
        1,
        None,
        "W",
        [(0, 5520.0), (H, 6900.0)],
    ),
    (
        "a limit in W is converted with the connector's phases, whatever numberPhases says",
        [
            prof(1, unit="W", start=NOW, periods=[(0, 6900.0, 1)]),
            prof(2, "ChargePointMaxProfile", start=NOW, periods=[(0, 16.0)]),
        ],
        NOW,
        H,
        1,
        None,
        "A",
        [(0, 10.0)],
    ),
    (
        "TxDefault on connector 0 and on the connector: the connector's, then connector 0's",
        [
            prof(1, stack=5, connector=0, start=NOW, periods=[(0, 10.0)]),
            prof(2, stack=0, connector=1, start=NOW, duration=H, periods=[(0, 20.0)]),
        ],
        NOW,
        2 * H,
        1,
        None,
        "A",
        [(0, 20.0), (H, 10.0)],
    ),
    (
        "TxDefault on connector 0 applies to a connector without its own",
        [
            prof(1, stack=5, connector=0, start=NOW, periods=[(0, 10.0)]),
            prof(2, stack=0, connector=1, start=NOW, periods=[(0, 20.0)]),
        ],
        NOW,
        H,
        2,
        None,
        "A",
        [(0, 10.0)],
    ),
    (
        "validFrom and validTo bound a profile",
        [
            prof(
                1,
                start=NOW - timedelta(days=1),
                valid_from=NOW + timedelta(hours=1),
                valid_to=NOW + timedelta(hours=2),
                periods=[(0, 10.0)],
            )
        ],
        NOW,
        3 * H,
        1,
        None,
        "A",
        [(0, 32.0), (H, 10.0), (2 * H, 32.0)],
    ),
    (
        "ChargePointMax limits every connector; connector 0 shows it against the station",
        [prof(1, "ChargePointMaxProfile", start=NOW, duration=H, periods=[(0, 40.0)])],
        NOW,
        2 * H,
        0,
        None,
        "A",
        [(0, 40.0), (H, 64.0)],
    ),
    (
        "equal neighbouring periods are merged",
        [prof(1, start=NOW, periods=[(0, 16.0), (600, 16.0), (1200, 10.0)])],
        NOW,
        H,
        1,
        None,
        "A",
        [(0, 16.0), (1200, 10.0)],
    ),
    (
        "an Absolute schedule not yet started: the station until it starts",
        [prof(1, start=NOW + timedelta(minutes=5), periods=[(0, 6.0)])],
        NOW,
        H,
        1,
        None,
        "A",
        [(0, 32.0), (300, 6.0)],
    ),
]


@pytest.mark.parametrize(
    ("profiles", "start", "duration", "connector", "tx_start", "unit", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_composite_schedule(profiles, start, duration, connector, tx_start, unit, expected):
    station_max = 32.0 if connector else 64.0
    comp = composite_schedule(
        profiles,
        start=start,
        duration_s=duration,
        connector_id=connector,
        tx_start=tx_start,
        elec=ELEC,
        station_max_a=station_max,
        unit=unit,
    )
    assert [(p.start_s, p.limit) for p in comp.periods] == expected
    assert comp.unit == unit and comp.duration_s == duration


def test_a_period_in_w_on_one_phase_is_reported_with_its_phase():
    p = prof(1, unit="W", start=NOW, periods=[(0, 2300.0, 1)])
    comp = composite_schedule(
        [p],
        start=NOW,
        duration_s=60,
        connector_id=1,
        tx_start=None,
        elec=ELEC,
        station_max_a=32.0,
        unit="W",
    )
    assert [(x.limit, x.number_phases) for x in comp.periods] == [(2300.0, 1)]


def test_min_charging_rate_is_reported_while_one_profile_is_in_force():
    p = prof(1, start=NOW, periods=[(0, 16.0)], min_rate=8.0)
    comp = composite_schedule(
        [p], start=NOW, duration_s=60, connector_id=1, tx_start=None, elec=ELEC, station_max_a=32
    )
    assert comp.min_rate == 8.0


def test_a_relative_profile_without_a_transaction_sets_nothing():
    p = prof(1, kind="Relative", periods=[(0, 6.0)])
    lim = limit_at([p], NOW, connector_id=1, tx_start=None, elec=ELEC, station_max_a=32.0)
    assert lim.amps == 32.0 and lim.source is None


def test_the_limit_names_the_profile_it_comes_from():
    profiles = [
        prof(7, "TxProfile", kind="Relative", periods=[(0, 12.0)]),
        prof(3, "ChargePointMaxProfile", start=NOW, periods=[(0, 20.0)]),
    ]
    lim = limit_at(profiles, NOW, connector_id=1, tx_start=NOW, elec=ELEC, station_max_a=32.0)
    assert (lim.amps, lim.source_name) == (12.0, "TxProfile #7")


# -- the split of a ChargePointMaxProfile -------------------------------------------------------

SPLITS = [
    ("no station cap: each its own limit", None, [(1, 32.0, 1), (2, 16.0, 2)], {1: 32.0, 2: 16.0}),
    ("evenly between two", 32.0, [(1, 32.0, 1), (2, 32.0, 2)], {1: 16.0, 2: 16.0}),
    ("what one cannot use goes to the other", 32.0, [(1, 10.0, 1), (2, 32.0, 2)], {1: 10, 2: 22}),
    ("a share below 6 A pauses the last started", 10.0, [(1, 32, 1), (2, 32, 2)], {1: 10, 2: 0}),
    (
        "three sharing 15 A: the last started waits",
        15.0,
        [(1, 32, 1), (2, 32, 2), (3, 32, 3)],
        {1: 7.5, 2: 7.5, 3: 0.0},
    ),
    (
        "three sharing 20 A: 6.67 A each",
        20.0,
        [(1, 32, 1), (2, 32, 2), (3, 32, 3)],
        {1: 20 / 3, 2: 20 / 3, 3: 20 / 3},
    ),
    ("a connector limited below 6 A takes nothing", 32.0, [(1, 4.0, 1), (2, 32, 2)], {1: 0, 2: 32}),
    ("a zero cap pauses everyone", 0.0, [(1, 32, 1), (2, 32, 2)], {1: 0.0, 2: 0.0}),
]


@pytest.mark.parametrize(
    ("cap", "demands", "expected"), [pytest.param(*s[1:], id=s[0]) for s in SPLITS]
)
def test_allocate(cap, demands, expected):
    got = allocate(cap, [Demand(cid, float(lim), order) for cid, lim, order in demands])
    assert got == pytest.approx(expected)
    if cap is not None:
        assert sum(got.values()) <= cap


def test_allocate_pauses_the_connector_whose_min_charging_rate_is_not_met():
    got = allocate(
        24.0,
        [Demand(1, 32.0, order=2, min_a=6.0), Demand(2, 32.0, order=1, min_a=16.0)],
    )
    assert got == {1: 24.0, 2: 0.0}


@pytest.mark.parametrize(
    ("amps", "expected"), [(16.0, 16.0), (15.99, 15.9), (6.06, 6.0), (0.3, 0.3), (10.0 / 3, 3.3)]
)
def test_limits_are_rounded_down_to_a_tenth(amps, expected):
    assert floor_tenth(amps) == expected
