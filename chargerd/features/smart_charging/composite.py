"""The composite schedule and the split of the station's limit: pure functions, no clock, no I/O.

Everything here is a function of (profiles, an instant, a connector, the
transaction's start), so that every tricky case of the field is a row in a
table-driven test rather than a scenario on a bench.

How a limit at an instant ``t`` is found (OCPP 1.6 §3.13):

1. A profile *yields* at ``t`` when ``t`` is within validFrom/validTo and
   within its schedule: after the schedule's start (startSchedule for Absolute,
   the transaction's start for Relative, the last recurrence of startSchedule
   for Recurring) and before its duration ends.  The period in force is the
   last one whose startPeriod has passed; a schedule without a duration keeps
   its last period.  A Recurring schedule longer than its cycle is cut at the
   next recurrence.  A recurrence is anchored on startSchedule's time of day
   (and weekday), before as after that date: validFrom says from when.
2. Within a purpose, the highest stackLevel among the profiles that yield
   wins; when it ends (duration, validTo) the next one down applies again.
3. TxProfile beats TxDefaultProfile; a TxDefaultProfile set on the connector
   beats one set on connector 0 (the station-wide default is the fallback).
4. The limit is the minimum of ChargePointMaxProfile, the Tx/TxDefault result
   and the station's own maximum (which also fills any gap no profile covers).

Limits in W are converted to A with the connector's phases and the nominal
voltage: A = W / (V x phases), whatever numberPhases says.  The pilot offers a
current per phase and cannot make an EV charge on fewer phases
(ConnectorSwitch3to1PhaseSupported is false), so only the connector's phases
bound the power: 6900 W "on one phase" is offered as 10 A, which a three-phase
EV turns into 6900 W, not 20700.  The composite is computed in A and converted
back the same way for a W answer, so W and A profiles mix; numberPhases is
reported as given (at most the connector's).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from chargerd.features.smart_charging.model import (
    AMPS,
    CP_MAX,
    DAILY,
    RECURRING,
    RELATIVE,
    TX,
    TX_DEFAULT,
    WATTS,
    Period,
    Profile,
)

DAY = timedelta(days=1)
WEEK = timedelta(days=7)
MIN_OFFER_A = 6.0  # IEC 61851-1: the least current the pilot can offer


@dataclass(frozen=True, slots=True)
class Electrical:
    """What converts watts to amperes at a connector (or the whole station)."""

    voltage_v: float = 230.0
    phases: int = 3

    def amps(self, watts: float) -> float:
        return watts / (self.voltage_v * self.phases)

    def watts(self, amps: float) -> float:
        return amps * self.voltage_v * self.phases


@dataclass(frozen=True, slots=True)
class Limit:
    """The limit in force at an instant, in A, and the profile it comes from (None: the station)."""

    amps: float
    phases: int
    source: Profile | None = None
    min_rate_a: float | None = None

    @property
    def source_name(self) -> str:
        return "station" if self.source is None else f"{self.source.purpose} #{self.source.id}"


@dataclass(frozen=True, slots=True)
class CompositePeriod:
    start_s: int
    limit: float
    number_phases: int


@dataclass(frozen=True, slots=True)
class Composite:
    start: datetime
    duration_s: int
    unit: str
    periods: tuple[CompositePeriod, ...]
    min_rate: float | None = None


def _cycle(profile: Profile) -> timedelta | None:
    if profile.kind != RECURRING:
        return None
    return DAY if profile.recurrency == DAILY else WEEK


def schedule_start(profile: Profile, t: datetime, tx_start: datetime | None) -> datetime | None:
    """When the schedule in force at ``t`` started; None when it has no start (Relative, no tx)."""
    if profile.kind == RELATIVE:
        return tx_start
    anchor = profile.schedule.start
    cycle = _cycle(profile)
    if anchor is None or cycle is None:
        return anchor
    cycles = math.floor((t - anchor) / cycle)
    return anchor + cycles * cycle


def _effective_duration(profile: Profile) -> float | None:
    duration = profile.schedule.duration_s
    cycle = _cycle(profile)
    if cycle is None:
        return None if duration is None else float(duration)
    seconds = cycle.total_seconds()
    return seconds if duration is None else min(float(duration), seconds)


def _period_at(periods: Sequence[Period], offset_s: float) -> Period:
    if len(periods) == 1 or offset_s < periods[1].start_s:
        return periods[0]
    i = bisect.bisect_right(periods, offset_s, key=lambda p: p.start_s) - 1
    return periods[max(i, 0)]


def profile_limit(
    profile: Profile, t: datetime, tx_start: datetime | None, elec: Electrical
) -> Limit | None:
    """The limit ``profile`` sets at ``t``, in A; None when it does not apply then."""
    if not profile.is_valid_at(t):
        return None
    start = schedule_start(profile, t, tx_start)
    if start is None or t < start:
        return None
    offset = (t - start).total_seconds()
    duration = _effective_duration(profile)
    if duration is not None and offset >= duration:
        return None
    sched = profile.schedule
    period = _period_at(sched.periods, offset)
    phases = min(period.number_phases or elec.phases, elec.phases)
    amps = period.limit if sched.unit == AMPS else elec.amps(period.limit)
    min_rate = sched.min_rate
    if min_rate is not None and sched.unit == WATTS:
        min_rate = elec.amps(min_rate)
    return Limit(amps=amps, phases=phases, source=profile, min_rate_a=min_rate)


def purpose_limit(
    profiles: Iterable[Profile], t: datetime, tx_start: datetime | None, elec: Electrical
) -> Limit | None:
    """Among ``profiles`` (one purpose), the limit of the highest stack level that applies."""
    for p in sorted(profiles, key=lambda p: (p.stack_level, p.id), reverse=True):
        got = profile_limit(p, t, tx_start, elec)
        if got is not None:
            return got
    return None


def limit_at(
    profiles: Iterable[Profile],
    t: datetime,
    *,
    connector_id: int,
    tx_start: datetime | None,
    elec: Electrical,
    station_max_a: float,
) -> Limit:
    """The limit in force at ``t`` on ``connector_id`` (0: the station as a whole).

    ``profiles`` are those installed; TxProfiles among them are taken as the
    running transaction's (the caller passes no other).  ``station_max_a`` is
    what the hardware allows there without any profile.
    """
    groups: dict[tuple[str, bool], list[Profile]] = {}
    for p in profiles:
        if p.purpose == CP_MAX or p.connector_id in (0, connector_id):
            groups.setdefault((p.purpose, p.connector_id == 0), []).append(p)
    cp_max = purpose_limit(groups.get((CP_MAX, True), ()), t, tx_start, elec)
    candidates: list[Limit] = []
    tx: Limit | None = None
    if connector_id != 0:
        # TxProfile, then the connector's TxDefaultProfile, then connector 0's.
        for key in ((TX, False), (TX_DEFAULT, False), (TX_DEFAULT, True)):
            tx = purpose_limit(groups.get(key, ()), t, tx_start, elec)
            if tx is not None:
                break
        if tx is not None:
            candidates.append(tx)
    if cp_max is not None:
        candidates.append(cp_max)
    candidates.append(Limit(amps=station_max_a, phases=elec.phases))
    chosen = min(candidates, key=lambda lim: lim.amps)  # first of equals: Tx, then CP max
    # minChargingRate describes the EV of the transaction: it stays whichever limit is lowest.
    min_rate = tx.min_rate_a if tx is not None else None
    if chosen.min_rate_a != min_rate:
        chosen = replace(chosen, min_rate_a=min_rate)
    return chosen


def boundaries(
    profiles: Iterable[Profile], t0: datetime, t1: datetime, tx_start: datetime | None
) -> list[datetime]:
    """Every instant in (t0, t1) at which a limit of ``profiles`` may change, sorted."""
    found: set[datetime] = set()
    for p in profiles:
        found.update(x for x in (p.valid_from, p.valid_to) if x is not None)
        duration = _effective_duration(p)
        cycle = _cycle(p)
        first = schedule_start(p, t0, tx_start)
        if first is None:
            continue
        starts = [first]
        if cycle is not None:
            n = math.floor((t1 - first) / cycle)
            starts = [first + k * cycle for k in range(n + 1)]
        for s in starts:
            found.add(s)
            found.update(s + timedelta(seconds=per.start_s) for per in p.schedule.periods)
            if duration is not None:
                found.add(s + timedelta(seconds=duration))
    return sorted(x for x in found if t0 < x < t1)


def composite_schedule(
    profiles: Iterable[Profile],
    *,
    start: datetime,
    duration_s: int,
    connector_id: int,
    tx_start: datetime | None,
    elec: Electrical,
    station_max_a: float,
    unit: str = AMPS,
) -> Composite:
    """The schedule that will be in force on ``connector_id`` from ``start`` for ``duration_s``.

    Periods with the same limit and phases are merged; limits are rounded to 0.1 (A or W).
    minChargingRate is reported when one profile's rate is in force throughout.
    """
    profiles = list(profiles)
    end = start + timedelta(seconds=duration_s)
    instants = [start, *boundaries(profiles, start, end, tx_start)]
    periods: list[CompositePeriod] = []
    min_rates: set[float | None] = set()
    for t in instants:
        lim = limit_at(
            profiles,
            t,
            connector_id=connector_id,
            tx_start=tx_start,
            elec=elec,
            station_max_a=station_max_a,
        )
        value = lim.amps if unit == AMPS else elec.watts(lim.amps)
        min_rates.add(lim.min_rate_a)
        period = CompositePeriod(
            start_s=round((t - start).total_seconds()),
            limit=round(value, 1),
            number_phases=lim.phases,
        )
        if periods and periods[-1].start_s == period.start_s:
            periods[-1] = period
        elif periods and (periods[-1].limit, periods[-1].number_phases) == (
            period.limit,
            period.number_phases,
        ):
            continue
        else:
            periods.append(period)
    min_rate = None
    if len(min_rates) == 1:
        (rate,) = min_rates
        if rate is not None:
            min_rate = round(rate if unit == AMPS else elec.watts(rate), 1)
    return Composite(
        start=start, duration_s=duration_s, unit=unit, periods=tuple(periods), min_rate=min_rate
    )


def floor_tenth(amps: float) -> float:
    """Round down to 0.1 A: never offer more than the limit, however the float falls."""
    return math.floor(amps * 10 + 1e-9) / 10


@dataclass(frozen=True, slots=True)
class Demand:
    """A charging connector's own limit and its place in the queue (earlier starts first)."""

    connector_id: int
    limit_a: float
    order: float
    min_a: float = MIN_OFFER_A


def allocate(station_cap_a: float | None, demands: Sequence[Demand]) -> dict[int, float]:
    """Split the station's cap (ChargePointMaxProfile) among the charging connectors.

    The rule: evenly, each connector taking at most its own limit and the rest
    shared among the others (water filling).  A connector whose share would
    fall below what it can use (6 A, or its minChargingRate) is paused (0 A)
    rather than offered nothing useful; the one that started last goes first,
    and the others share again.  Without a cap each gets its own limit.
    """
    out = {d.connector_id: 0.0 for d in demands}
    active = [d for d in demands if d.limit_a >= d.min_a]
    if station_cap_a is None:
        out.update({d.connector_id: d.limit_a for d in active})
        return out
    while active:
        shares = _water_fill(station_cap_a, active)
        short = [d for d in active if shares[d.connector_id] < d.min_a]
        if not short:
            out.update(shares)
            break
        active.remove(max(short, key=lambda d: d.order))
    return out


def _water_fill(cap: float, demands: Sequence[Demand]) -> dict[int, float]:
    shares: dict[int, float] = {}
    remaining = max(cap, 0.0)
    ordered = sorted(demands, key=lambda d: d.limit_a)
    for i, d in enumerate(ordered):
        give = min(d.limit_a, remaining / (len(ordered) - i))
        shares[d.connector_id] = give
        remaining -= give
    return shares
