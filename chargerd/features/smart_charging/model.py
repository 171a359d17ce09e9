"""Charging profiles as values: parsed and checked once, from the wire or from the store.

A profile arrives as the ``csChargingProfiles`` object of SetChargingProfile
(or the ``chargingProfile`` of RemoteStartTransaction).  :func:`parse_profile`
turns that dict (camelCase as on the wire, or snake_case as the ocpp router
hands it over) into an immutable :class:`Profile`, or raises
:class:`ProfileRejected` with the reason a CSMS engineer needs to read in the
log.  The same function reads the profiles back from SQLite, where they are
stored in wire form, so a profile that was accepted once is understood the
same way after a restart.

Rules a schema cannot express, checked here (OCPP 1.6 §3.13, §5.16, §7.8):

- the first period starts at 0 and startPeriod strictly increases (a schedule
  with a hole before its first period would leave the limit undefined);
- limits are not negative, numberPhases is 1..3, duration is positive;
- Absolute and Recurring schedules carry a startSchedule (their anchor in
  time); a Relative one is counted from the transaction's start, and its
  startSchedule, if a CSMS sends one anyway, is ignored;
- Recurring needs a recurrencyKind; validTo after validFrom;
- ChargePointMaxProfile only on connector 0 and not Relative (there is no
  transaction to count from); TxProfile never on connector 0.

Whether a profile fits *this* station (connector numbers, a running
transaction, the configuration limits) is the service's business, not the
model's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from chargerd.clock import parse_iso

CP_MAX = "ChargePointMaxProfile"
TX_DEFAULT = "TxDefaultProfile"
TX = "TxProfile"
PURPOSES = (CP_MAX, TX_DEFAULT, TX)

ABSOLUTE, RECURRING, RELATIVE = "Absolute", "Recurring", "Relative"
KINDS = (ABSOLUTE, RECURRING, RELATIVE)
DAILY, WEEKLY = "Daily", "Weekly"
RECURRENCIES = (DAILY, WEEKLY)

AMPS, WATTS = "A", "W"
UNITS = (AMPS, WATTS)
#: ChargingScheduleAllowedChargingRateUnit speaks of Current and Power.
UNIT_NAMES = {AMPS: "Current", WATTS: "Power"}


class ProfileRejected(ValueError):
    """A charging profile that cannot be installed; the message says why."""


@dataclass(frozen=True, slots=True)
class Period:
    start_s: int  # seconds from the schedule's start
    limit: float  # in the schedule's unit
    number_phases: int | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    unit: str  # "A" or "W"
    periods: tuple[Period, ...]
    duration_s: int | None = None
    start: datetime | None = None
    min_rate: float | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    id: int
    connector_id: int
    stack_level: int
    purpose: str
    kind: str
    schedule: Schedule
    recurrency: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: int | None = None

    def is_valid_at(self, t: datetime) -> bool:
        """validFrom/validTo only; whether the schedule has a period at ``t`` is another matter."""
        if self.valid_from is not None and t < self.valid_from:
            return False
        return not (self.valid_to is not None and t >= self.valid_to)


def _get(d: dict[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    if camel in d:
        return d[camel]
    return d.get(snake, default)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileRejected(f"{what} must be an integer, got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ProfileRejected(f"{what} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ProfileRejected(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _time(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_iso(str(value))
    except ValueError:
        raise ProfileRejected(f"{what} is not an ISO 8601 date-time: {value!r}") from None


def _schedule(raw: Any, kind: str) -> Schedule:
    if not isinstance(raw, dict):
        raise ProfileRejected("chargingSchedule is missing")
    unit = _get(raw, "chargingRateUnit", "charging_rate_unit")
    if unit not in UNITS:
        raise ProfileRejected(f"chargingRateUnit must be A or W, got {unit!r}")
    raw_periods = _get(raw, "chargingSchedulePeriod", "charging_schedule_period")
    if not isinstance(raw_periods, list) or not raw_periods:
        raise ProfileRejected("chargingSchedulePeriod needs at least one period")
    periods: list[Period] = []
    for i, p in enumerate(raw_periods):
        if not isinstance(p, dict):
            raise ProfileRejected(f"period {i} is not an object")
        start = _int(_get(p, "startPeriod", "start_period"), f"period {i} startPeriod")
        limit = _number(p.get("limit"), f"period {i} limit")
        phases = _get(p, "numberPhases", "number_phases")
        if phases is not None and _int(phases, f"period {i} numberPhases") not in (1, 2, 3):
            raise ProfileRejected(f"period {i} numberPhases must be 1, 2 or 3, got {phases}")
        if limit < 0:
            raise ProfileRejected(f"period {i} limit {limit:g} is negative")
        if i == 0 and start != 0:
            raise ProfileRejected(f"the first period must start at 0, not {start}")
        if periods and start <= periods[-1].start_s:
            raise ProfileRejected(
                f"period {i} starts at {start} s, not after the previous one "
                f"({periods[-1].start_s} s)"
            )
        periods.append(Period(start, limit, phases))
    duration = raw.get("duration")
    if duration is not None and _int(duration, "duration") <= 0:
        raise ProfileRejected(f"duration must be positive, got {duration}")
    start = _time(_get(raw, "startSchedule", "start_schedule"), "startSchedule")
    if kind == RELATIVE:
        start = None  # counted from the transaction's start, whatever the CSMS sent
    elif start is None:
        raise ProfileRejected(f"a {kind} schedule needs a startSchedule")
    min_rate = _get(raw, "minChargingRate", "min_charging_rate")
    if min_rate is not None and _number(min_rate, "minChargingRate") < 0:
        raise ProfileRejected("minChargingRate is negative")
    return Schedule(
        unit=unit,
        periods=tuple(periods),
        duration_s=duration,
        start=start,
        min_rate=None if min_rate is None else float(min_rate),
    )


def parse_profile(raw: Any, connector_id: int) -> Profile:
    """A :class:`Profile` from a csChargingProfiles object; ProfileRejected if it is unusable."""
    if not isinstance(raw, dict):
        raise ProfileRejected("the charging profile is not an object")
    pid = _int(_get(raw, "chargingProfileId", "charging_profile_id"), "chargingProfileId")
    stack = _int(_get(raw, "stackLevel", "stack_level"), "stackLevel")
    if stack < 0:
        raise ProfileRejected(f"stackLevel {stack} is negative")
    purpose = _get(raw, "chargingProfilePurpose", "charging_profile_purpose")
    if purpose not in PURPOSES:
        raise ProfileRejected(f"unknown chargingProfilePurpose {purpose!r}")
    kind = _get(raw, "chargingProfileKind", "charging_profile_kind")
    if kind not in KINDS:
        raise ProfileRejected(f"unknown chargingProfileKind {kind!r}")
    recurrency = _get(raw, "recurrencyKind", "recurrency_kind")
    if kind == RECURRING:
        if recurrency not in RECURRENCIES:
            raise ProfileRejected("a Recurring profile needs recurrencyKind Daily or Weekly")
    else:
        recurrency = None
    if purpose == CP_MAX and connector_id != 0:
        raise ProfileRejected("a ChargePointMaxProfile is set on connector 0 only")
    if purpose == CP_MAX and kind == RELATIVE:
        raise ProfileRejected("a ChargePointMaxProfile cannot be Relative (no transaction)")
    if purpose == TX and connector_id == 0:
        raise ProfileRejected("a TxProfile belongs to a connector's transaction, not connector 0")
    valid_from = _time(_get(raw, "validFrom", "valid_from"), "validFrom")
    valid_to = _time(_get(raw, "validTo", "valid_to"), "validTo")
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        raise ProfileRejected("validTo is not after validFrom")
    tx_id = _get(raw, "transactionId", "transaction_id")
    if tx_id is not None:
        tx_id = _int(tx_id, "transactionId")
        if purpose != TX:
            raise ProfileRejected(f"a transactionId belongs only in a TxProfile, not a {purpose}")
    schedule = _schedule(_get(raw, "chargingSchedule", "charging_schedule"), kind)
    return Profile(
        id=pid,
        connector_id=connector_id,
        stack_level=stack,
        purpose=purpose,
        kind=kind,
        schedule=schedule,
        recurrency=recurrency,
        valid_from=valid_from,
        valid_to=valid_to,
        transaction_id=tx_id,
    )


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def to_wire(raw: Any) -> Any:
    """A snake_case profile (as the router hands it over) back in camelCase, for storage.

    The ocpp validator hands decimals over as Decimal; they are stored as JSON numbers.
    """
    if isinstance(raw, Decimal):
        if raw.is_finite() and raw == raw.to_integral_value():
            return int(raw)
        return float(raw)
    if isinstance(raw, dict):
        return {_camel(k): to_wire(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [to_wire(v) for v in raw]
    return raw
