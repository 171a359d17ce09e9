"""Chaos for Smart Charging: random charging profiles, and the invariant on the offered current.

The driver (:class:`ProfileDriver`) sends, now and then, a random
ChargePointMaxProfile or TxDefaultProfile (Absolute or Recurring, in A or W,
with a period boundary a few seconds ahead, sometimes a validTo, ids and stack
levels drawn from small sets so that replacements happen) or a
ClearChargingProfile, and records what the CSMS asked and what it was told.

The checker (:func:`check_profiles`) replays that record with the same pure
composite function the daemon uses and judges every status snapshot: **no
connector is ever offered more current than the composite schedule allows,
and the charging connectors together never more than the
ChargePointMaxProfile.**  What the daemon did is read from its status (the
pilot's offer), not from its own limit fields.

A request whose answer never came (CSMS hung, link cut, daemon killed) may
or may not have been applied: both worlds are kept, and a snapshot passes if
it fits one of them.  A change takes effect between the request and a short
grace after its answer (the daemon's timer re-offers right after it
answers); a period boundary likewise within the grace.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from chargerd.bench.chaoslib.records import Sample, Verdict
from chargerd.clock import iso
from chargerd.features.smart_charging.composite import (
    Electrical,
    boundaries,
    floor_tenth,
    limit_at,
    purpose_limit,
)
from chargerd.features.smart_charging.model import CP_MAX, Profile, ProfileRejected, parse_profile

GRACE_S = 3.0
MAX_WORLDS = 32
LIMITS_A = (0.0, 4.0, 6.0, 8.5, 10.0, 13.0, 16.0, 20.0, 32.0)


@dataclass(frozen=True, slots=True)
class ProfileRequest:
    """One SetChargingProfile / ClearChargingProfile: when, what, and the answer (None: none)."""

    sent: float  # epoch seconds
    answered: float
    action: str
    payload: dict[str, Any]
    status: str | None


World = tuple[tuple[int, Profile], ...]  # installed profiles, sorted by id


class ProfileDriver:
    """Draws random profile requests and sends them through the session's CSMS."""

    def __init__(self, rng: random.Random, connectors: int) -> None:
        self.rng = rng
        self.connectors = connectors
        self.requests: list[ProfileRequest] = []

    def draw(self, now: datetime) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        if rng.random() < 0.15:
            return "ClearChargingProfile", {}
        purpose = rng.choice((CP_MAX, "TxDefaultProfile", "TxDefaultProfile"))
        connector = 0 if purpose == CP_MAX else rng.choice(range(self.connectors + 1))
        unit = rng.choice(("A", "A", "W"))
        first, second = rng.choice(LIMITS_A), rng.choice(LIMITS_A)
        if unit == "W":
            first, second = first * 690.0, second * 690.0  # 3 phases x 230 V
        periods = [{"startPeriod": 0, "limit": first}]
        if rng.random() < 0.6:
            periods.append({"startPeriod": rng.randint(2, 12), "limit": second})
        recurring = rng.random() < 0.3
        schedule: dict[str, Any] = {
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": periods,
            "startSchedule": iso(now - timedelta(seconds=rng.uniform(0, 3))),
        }
        if rng.random() < 0.3:
            schedule["duration"] = rng.randint(5, 30)
        raw: dict[str, Any] = {
            "chargingProfileId": rng.randint(1, 6),
            "stackLevel": rng.randint(0, 2),
            "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Recurring" if recurring else "Absolute",
            "chargingSchedule": schedule,
        }
        if recurring:
            raw["recurrencyKind"] = rng.choice(("Daily", "Weekly"))
        if rng.random() < 0.2:
            raw["validTo"] = iso(now + timedelta(seconds=rng.uniform(3, 20)))
        return "SetChargingProfile", {"connectorId": connector, "csChargingProfiles": raw}

    async def step(self, csms: Any, cp_id: str, errors: tuple[type[BaseException], ...]) -> None:
        """Send one random request; record it with its answer (None when none came)."""
        import time

        action, payload = self.draw(csms.now())
        sent = time.time()
        status = None
        with contextlib.suppress(*errors):
            reply = await csms.call(cp_id, action, payload, timeout=5)
            status = str(reply.get("status"))
        self.requests.append(ProfileRequest(sent, time.time(), action, payload, status))


def _apply(world: World, req: ProfileRequest) -> World:
    installed = dict(world)
    if req.action == "ClearChargingProfile":
        return ()
    raw = req.payload["csChargingProfiles"]
    try:
        p = parse_profile(raw, req.payload["connectorId"])
    except ProfileRejected:
        return world
    for pid, q in list(installed.items()):
        if pid == p.id or (q.connector_id, q.purpose, q.stack_level) == (
            p.connector_id,
            p.purpose,
            p.stack_level,
        ):
            del installed[pid]
    installed[p.id] = p
    return tuple(sorted(installed.items()))


def worlds_over_time(
    requests: list[ProfileRequest],
) -> list[tuple[float, float, set[World] | None]]:
    """(from, until, the possible sets of installed profiles); None: too uncertain to judge."""
    out: list[tuple[float, float, set[World] | None]] = []
    worlds: set[World] | None = {()}
    since = 0.0
    for req in requests:
        out.append((since, req.answered + GRACE_S, worlds))
        since = req.sent
        if req.action == "ClearChargingProfile" and req.status in ("Accepted", "Unknown"):
            worlds = {()}
        elif worlds is not None:
            if req.status == "Accepted":
                worlds = {_apply(w, req) for w in worlds}
            elif req.status is None:
                worlds = worlds | {_apply(w, req) for w in worlds}
            if len(worlds) > MAX_WORLDS:
                worlds = None
    out.append((since, float("inf"), worlds))
    return out


def _highest(profiles: list[Profile], t: datetime, limit_of) -> float:
    """The highest ``limit_of(profiles, instant)`` within the grace before ``t``."""
    t0 = t - timedelta(seconds=GRACE_S)
    instants = [t0, t, *boundaries(profiles, t0, t, None)]
    return max(limit_of(profiles, x) for x in instants)


def _connector_limit(
    profiles: list[Profile], x: datetime, *, cid: int, elec: Electrical, station_max_a: float
) -> float:
    return limit_at(
        profiles, x, connector_id=cid, tx_start=None, elec=elec, station_max_a=station_max_a
    ).amps


def _station_cap(profiles: list[Profile], x: datetime, elec: Electrical) -> float:
    got = purpose_limit([p for p in profiles if p.purpose == CP_MAX], x, None, elec)
    return float("inf") if got is None else got.amps


def check_profiles(
    samples: list[Sample],
    requests: list[ProfileRequest],
    v: Verdict,
    *,
    station_max_a: float = 32.0,
    elec: Electrical | None = None,
) -> None:
    """Never more current offered than the composite schedule allows (see the module doc)."""
    elec = elec or Electrical()
    v.counts["charging profiles sent"] += sum(r.action == "SetChargingProfile" for r in requests)
    if not requests:
        return
    spans = worlds_over_time(requests)
    for s in samples:
        offers = {
            c["id"]: c.get("offered_current_a")
            for c in s.status.get("connectors", [])
            if c.get("transaction_local_id") is not None and c.get("offered_current_a")
        }
        if not offers:
            continue
        candidates = [w for a, b, w in spans if a <= s.time <= b]
        if any(w is None for w in candidates):
            continue
        worlds = set().union(*candidates)
        t = datetime.fromtimestamp(s.time, UTC)
        allowed: dict[int, float] = {cid: 0.0 for cid in offers}
        cap = 0.0
        for world in worlds:
            profiles = [p for _, p in world]
            for cid in offers:
                one = partial(_connector_limit, cid=cid, elec=elec, station_max_a=station_max_a)
                allowed[cid] = max(allowed[cid], _highest(profiles, t, one))
            cap = max(cap, _highest(profiles, t, partial(_station_cap, elec=elec)))
        v.counts["offered currents checked against the profiles"] += len(offers)
        for cid, amps in offers.items():
            if amps > floor_tenth(allowed[cid]) + 1e-6:
                v.add(
                    "more current offered than the composite schedule allows",
                    f"at {s.time:.3f} connector {cid} offered {amps} A, at most "
                    f"{floor_tenth(allowed[cid])} A allowed",
                )
        if sum(offers.values()) > cap + 1e-6:
            v.add(
                "the charging connectors together exceed the ChargePointMaxProfile",
                f"at {s.time:.3f} offered {offers}, station limit {cap} A",
            )
