"""Smart Charging: the profiles the CSMS sets, and the limit in force on the pilot.

The service owns the profiles (in memory and in SQLite), answers
SetChargingProfile, ClearChargingProfile and GetCompositeSchedule, checks the
TxProfile a RemoteStartTransaction carries, and keeps the pilot's offer within
the limit in force:

- the connector supervisor asks :meth:`SmartChargingService.limit_for` each
  time it offers current (the start of a transaction, an EV plugged back), so
  the first PWM of a transaction already obeys the profiles;
- a timer (:meth:`run`) wakes at the next instant a limit may change (a
  period boundary, a recurrence, validFrom/validTo, the end of a duration),
  and when a profile or a transaction changes, and re-offers where the limit
  moved.  It sleeps on the injectable clock and needs no link: limits apply
  offline as online.

A ChargePointMaxProfile limits the station as a whole: it is split among the
connectors with a running transaction (see composite.allocate: evenly, each
taking at most its own limit, the last started paused when a share would fall
below 6 A).  A limit below 6 A (or below the profile's minChargingRate)
pauses the EV: no PWM, SuspendedEVSE, until the limit rises again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from ocpp.exceptions import InternalError
from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import (
    Action,
    ChargingProfileStatus,
    ClearChargingProfileStatus,
    GetCompositeScheduleStatus,
)

from chargerd.clock import Clock, iso, sleep_or_wake
from chargerd.features.configuration import CSL, ConfigurationService
from chargerd.features.smart_charging.composite import (
    MIN_OFFER_A,
    Composite,
    Demand,
    Electrical,
    Limit,
    allocate,
    boundaries,
    composite_schedule,
    floor_tenth,
    limit_at,
    purpose_limit,
)
from chargerd.features.smart_charging.model import (
    AMPS,
    CP_MAX,
    TX,
    UNIT_NAMES,
    Profile,
    ProfileRejected,
    parse_profile,
    to_wire,
)
from chargerd.features.smart_charging.store import Installed, ProfileStore
from chargerd.store import StoreError

if TYPE_CHECKING:
    from chargerd.features.connectors import ConnectorRuntime, ConnectorSupervisor
    from chargerd.store import Store

log = logging.getLogger(__name__)

#: The timer never sleeps longer than this.  A wall clock the CSMS corrects
#: (BootNotification/Heartbeat currentTime) wakes it at once through the clock's
#: on_jump; this bound is for a clock that cannot say it jumped.
MAX_SLEEP_S = 300.0
#: GetCompositeSchedule answers for at most this long (a longer request is cut): two days
#: of 32 stacked 48-period profiles take about 30 ms, computed off the event loop.
MAX_COMPOSITE_S = 2 * 86400


def declare_smart_charging_keys(config: ConfigurationService) -> None:
    """The Smart Charging profile's keys (OCPP 1.6 §9.4), all read-only, and the profile itself."""
    config.declare_int("ChargeProfileMaxStackLevel", 10, 0, 100, readonly=True)
    config.declare_csl(
        "ChargingScheduleAllowedChargingRateUnit",
        "Current,Power",
        allowed=("Current", "Power"),
        max_items=2,
        what="unit",
        readonly=True,
    )
    config.declare_int("ChargingScheduleMaxPeriods", 48, 1, 1000, readonly=True)
    # The pilot offers a current per phase; it cannot make an EV use fewer phases.
    config.declare_bool("ConnectorSwitch3to1PhaseSupported", False, readonly=True)
    config.declare_int("MaxChargingProfilesInstalled", 32, 1, 1000, readonly=True)
    profiles = config.get("SupportedFeatureProfiles")
    if "SmartCharging" not in profiles:
        config.set_internal("SupportedFeatureProfiles", CSL((*profiles, "SmartCharging")))


class SmartChargingService:
    def __init__(
        self,
        *,
        store: Store,
        config: ConfigurationService,
        clock: Clock,
        supervisor: ConnectorSupervisor,
        elec: Electrical,
        station_max_a: float,
    ) -> None:
        self._store = ProfileStore(store)
        self._config = config
        self._clock = clock
        self._sup = supervisor
        self.elec = elec
        self.station_max_a = station_max_a
        self._wake = asyncio.Event()
        self._applied: dict[int, float] = {}  # connector -> the limit last handed to its offer
        # connector -> (idTag, TxProfile in wire form) of a RemoteStartTransaction
        self._pending: dict[int, tuple[str, dict]] = {}
        self.profiles = self._store.load()
        # No transaction survives a restart (they end as PowerLoss): neither do their TxProfiles.
        orphans = [i for i, item in self.profiles.items() if item.profile.purpose == TX]
        if orphans:
            log.info("dropping %d TxProfile(s) of transactions that ended", len(orphans))
            self._forget(orphans)
        supervisor.on_idle.append(self._transaction_ended)
        jumps = getattr(clock, "on_jump", None)
        if jumps is not None:
            jumps.append(self.poke)  # the wall clock moved: plan the next boundary again

    # -- what the supervisor asks ---------------------------------------------------------

    def limit_for(self, connector_id: int) -> float:
        """The current (A, 0.1 A steps) connector ``connector_id`` may offer now.

        Called when the supervisor offers current.  Other connectors whose share of a
        ChargePointMaxProfile shrinks because this one starts charging are lowered
        here and now, before this one's offer goes up.  A failure offers nothing.
        """
        try:
            conn = self._sup.connectors[connector_id]
            if conn.tx is not None and connector_id in self._pending:
                self._adopt_pending(conn)
            shares, _ = self._allocation(self._clock.now())
            for other_id, share in shares.items():
                if other_id == connector_id:
                    continue
                other = self._sup.connectors[other_id]
                offered = other.hw.pilot.offered_current_a
                if offered is not None and offered > share:
                    other.hw.pilot.set_offered_current(share if share >= MIN_OFFER_A else None)
                    self._applied[other_id] = share
                    self._sup.poke()  # a paused one's contactor opens on the next pass
            amps = shares.get(connector_id, 0.0)
        except Exception:
            log.exception(
                "connector %d: smart charging limit failed; offering nothing", connector_id
            )
            amps = 0.0
        self._applied[connector_id] = amps
        self._wake.set()
        return amps

    def status_fields(self, connector_id: int) -> dict[str, Any]:
        """``limit_a`` and ``limit_source`` for chargerctl status."""
        conn = self._sup.connectors[connector_id]
        now = self._clock.now()
        usable = MIN_OFFER_A
        if self._charging(conn):
            shares, limits = self._allocation(now)
            lim = limits[connector_id]
            own, amps = floor_tenth(lim.amps), shares.get(connector_id, 0.0)
            usable = max(MIN_OFFER_A, lim.min_rate_a or 0.0)
            source = lim.source_name
            if own < usable:
                amps = own  # paused by its own limit, not by the split
            elif amps < own:
                cp = purpose_limit(self._cp_max(), now, None, self.elec)
                sharing = len([a for a in shares.values() if a > 0])
                if cp is not None and cp.source is not None:
                    source = f"{CP_MAX} #{cp.source.id} shared by {sharing}"
        else:
            lim = self._limit(conn, now)
            amps, source = floor_tenth(lim.amps), lim.source_name
        if amps < usable:
            source += f" (paused: below {usable:g} A)"
        return {"limit_a": amps, "limit_source": source}

    # -- the limit in force ---------------------------------------------------------------

    def _charging(self, conn: ConnectorRuntime) -> bool:
        tx = conn.tx
        return tx is not None and not tx.energy_blocked and conn.stop_pending is None

    def _cp_max(self) -> list[Profile]:
        return [i.profile for i in self.profiles.values() if i.profile.purpose == CP_MAX]

    def _profiles_for(self, conn: ConnectorRuntime) -> list[Profile]:
        """The profiles that concern ``conn``: all but other transactions' TxProfiles."""
        local_id = conn.tx.local_id if conn.tx is not None else None
        return [
            i.profile
            for i in self.profiles.values()
            if i.profile.purpose != TX
            or (
                local_id is not None
                and i.profile.connector_id == conn.id
                and i.tx_local_id == local_id
            )
        ]

    def _limit(self, conn: ConnectorRuntime, now: datetime) -> Limit:
        tx_start = conn.tx.start_time if conn.tx is not None else None
        return limit_at(
            self._profiles_for(conn),
            now,
            connector_id=conn.id,
            tx_start=tx_start,
            elec=self.elec,
            station_max_a=self.station_max_a,
        )

    def _allocation(self, now: datetime) -> tuple[dict[int, float], dict[int, Limit]]:
        """Each charging connector's share (A, rounded down) and its own limit."""
        limits: dict[int, Limit] = {}
        demands: list[Demand] = []
        for conn in self._sup.connectors.values():
            if not self._charging(conn):
                continue
            lim = self._limit(conn, now)
            limits[conn.id] = lim
            assert conn.tx is not None
            demands.append(
                Demand(
                    conn.id,
                    floor_tenth(lim.amps),
                    order=conn.tx.local_id,
                    min_a=max(MIN_OFFER_A, lim.min_rate_a or 0.0),
                )
            )
        cp = purpose_limit(self._cp_max(), now, None, self.elec)
        shares = allocate(None if cp is None else cp.amps, demands)
        return {cid: floor_tenth(a) for cid, a in shares.items()}, limits

    # -- the timer ------------------------------------------------------------------------

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Re-evaluate at every instant a limit may change, and when anything changed."""
        while True:
            self._wake.clear()
            delay = MAX_SLEEP_S
            try:
                delay = await self.apply()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("smart charging evaluation failed; trying again shortly")
                delay = 1.0
            await sleep_or_wake(self._clock, delay, self._wake)

    async def apply(self) -> float:
        """Re-offer where the limit moved; the seconds until the next instant it may move."""
        now = self._clock.now()
        self._drop_expired(now)
        for cid in list(self._pending):
            conn = self._sup.connectors[cid]
            if conn.tx is None and conn.authorization is None and not conn.held:
                log.info("connector %d: remote start's TxProfile dropped (no transaction)", cid)
                del self._pending[cid]
        shares, _ = self._allocation(now)
        # Lower first, then raise: the sum never exceeds a shared limit on the way.
        changed = [(share, cid) for cid, share in shares.items() if self._applied.get(cid) != share]
        for share, cid in sorted(changed, key=lambda x: x[0] - self._applied.get(x[1], 0.0)):
            conn = self._sup.connectors[cid]
            log.info(
                "connector %d: limit %.1f A -> %.1f A",
                cid,
                self._applied.get(cid, float("nan")),
                share,
            )
            await self._sup.reoffer(conn)
        return self._next_change(now)

    def _next_change(self, now: datetime) -> float:
        horizon = now + timedelta(seconds=MAX_SLEEP_S)
        soonest = horizon
        for conn in self._sup.connectors.values():
            if not self._charging(conn):
                continue
            assert conn.tx is not None
            found = boundaries(self._profiles_for(conn), now, horizon, conn.tx.start_time)
            if found:
                soonest = min(soonest, found[0])
        expiring = [i.profile.valid_to for i in self.profiles.values() if i.profile.valid_to]
        soonest = min([soonest, *(t for t in expiring if t > now)])
        return max(0.0, (soonest - now).total_seconds())

    def _drop_expired(self, now: datetime) -> None:
        gone = [
            pid
            for pid, i in self.profiles.items()
            if i.profile.valid_to is not None and i.profile.valid_to <= now
        ]
        if gone:
            log.info("charging profile(s) %s expired (validTo passed)", gone)
            self._forget(gone)

    def _transaction_ended(self) -> None:
        """A transaction ended somewhere: its TxProfile ends with it; shares grow again."""
        running = {c.tx.local_id for c in self._sup.connectors.values() if c.tx is not None}
        ended = [
            pid
            for pid, i in self.profiles.items()
            if i.profile.purpose == TX and i.tx_local_id not in running
        ]
        if ended:
            log.info("TxProfile(s) %s ended with their transaction", ended)
            self._forget(ended)
        for cid, conn in self._sup.connectors.items():
            if conn.tx is None:
                self._applied.pop(cid, None)
        self._wake.set()

    def _forget(self, ids: list[int], *, strict: bool = False) -> None:
        """Delete profiles, from the disk first.  ``strict``: a store failure raises and
        changes nothing (ClearChargingProfile must not claim what a restart would undo);
        otherwise the profiles leave memory anyway (an ended TxProfile, an expired one:
        at the next start they are dropped again)."""
        try:
            self._store.delete(ids)
        except StoreError as exc:
            log.error("could not delete charging profile(s) %s from the store: %s", ids, exc)
            if strict:
                raise
        for pid in ids:
            self.profiles.pop(pid, None)

    # -- installing -----------------------------------------------------------------------

    def _check_station_rules(self, profile: Profile, *, extra: int = 1) -> None:
        """The configuration keys' limits; ProfileRejected when one is exceeded."""
        max_stack = int(self._config.get("ChargeProfileMaxStackLevel"))
        if profile.stack_level > max_stack:
            raise ProfileRejected(
                f"stackLevel {profile.stack_level} above ChargeProfileMaxStackLevel {max_stack}"
            )
        allowed = self._config.get("ChargingScheduleAllowedChargingRateUnit")
        if UNIT_NAMES[profile.schedule.unit] not in allowed:
            raise ProfileRejected(
                f"chargingRateUnit {profile.schedule.unit} not allowed "
                f"(ChargingScheduleAllowedChargingRateUnit is {allowed})"
            )
        max_periods = int(self._config.get("ChargingScheduleMaxPeriods"))
        if len(profile.schedule.periods) > max_periods:
            raise ProfileRejected(
                f"{len(profile.schedule.periods)} periods, ChargingScheduleMaxPeriods is "
                f"{max_periods}"
            )
        p = profile
        kept = [
            i
            for i in self.profiles.values()
            if i.profile.id != p.id
            and (i.profile.connector_id, i.profile.purpose, i.profile.stack_level)
            != (p.connector_id, p.purpose, p.stack_level)
        ]
        limit = int(self._config.get("MaxChargingProfilesInstalled"))
        if len(kept) + extra > limit:
            raise ProfileRejected(f"MaxChargingProfilesInstalled ({limit}) reached")

    def _install(self, profile: Profile, wire: dict, tx_local_id: int | None) -> None:
        item = Installed(profile, wire, tx_local_id)
        self._store.install(item, now=self._clock.now())
        for pid, other in list(self.profiles.items()):
            o = other.profile
            if pid == profile.id or (o.connector_id, o.purpose, o.stack_level) == (
                profile.connector_id,
                profile.purpose,
                profile.stack_level,
            ):
                del self.profiles[pid]
        self.profiles[profile.id] = item
        self._wake.set()

    def set_profile(self, connector_id: int, raw: dict) -> str:
        """SetChargingProfile's decision and effect; the status to answer."""
        if connector_id not in range(len(self._sup.connectors) + 1):
            log.info("SetChargingProfile refused: connector %s does not exist", connector_id)
            return ChargingProfileStatus.rejected
        wire = to_wire(raw)
        tx_local_id = None
        try:
            profile = parse_profile(wire, connector_id)
            self._check_station_rules(profile)
            if profile.purpose == TX:
                tx = self._sup.connectors[connector_id].tx
                if tx is None:
                    raise ProfileRejected(f"no transaction on connector {connector_id}")
                if profile.transaction_id not in (None, tx.transaction_id):
                    raise ProfileRejected(
                        f"transactionId {profile.transaction_id} is not the one running on "
                        f"connector {connector_id} ({tx.transaction_id})"
                    )
                tx_local_id = tx.local_id
            self._install(profile, wire, tx_local_id)
        except ProfileRejected as exc:
            log.info("SetChargingProfile on connector %s rejected: %s", connector_id, exc)
            return ChargingProfileStatus.rejected
        except StoreError as exc:
            log.error("SetChargingProfile: the store refused the profile: %s", exc)
            return ChargingProfileStatus.rejected
        log.info(
            "charging profile #%d installed: %s on connector %d, stack level %d",
            profile.id,
            profile.purpose,
            connector_id,
            profile.stack_level,
        )
        return ChargingProfileStatus.accepted

    def accept_remote_profile(self, connector_id: int, id_tag: str, raw: dict) -> bool:
        """The chargingProfile of a RemoteStartTransaction: False rejects the remote start.

        Kept for the connector until the transaction of ``id_tag`` starts there (then it is
        installed as that transaction's TxProfile), or the remote start lapses.
        """
        wire = to_wire(raw)
        try:
            profile = parse_profile(wire, connector_id)
            if profile.purpose != TX:
                raise ProfileRejected(
                    f"a remote start carries a TxProfile, not a {profile.purpose}"
                )
            if profile.transaction_id is not None:
                raise ProfileRejected("a remote start's TxProfile has no transactionId yet")
            self._check_station_rules(profile)
        except ProfileRejected as exc:
            log.info("RemoteStartTransaction rejected: its charging profile: %s", exc)
            return False
        self._pending[connector_id] = (id_tag, wire)
        self._wake.set()
        return True

    def _adopt_pending(self, conn: ConnectorRuntime) -> None:
        id_tag, wire = self._pending.pop(conn.id)
        assert conn.tx is not None
        if conn.tx.id_tag.casefold() != id_tag.casefold():
            log.info(
                "connector %d: %s started, not the remote start's %s: its TxProfile is dropped",
                conn.id,
                conn.tx.id_tag,
                id_tag,
            )
            return
        try:
            profile = parse_profile(wire, conn.id)
            self._check_station_rules(profile)
            self._install(profile, wire, conn.tx.local_id)
            log.info("connector %d: remote start's TxProfile #%d in force", conn.id, profile.id)
        except (ProfileRejected, StoreError) as exc:
            log.error("connector %d: remote start's TxProfile not installed: %s", conn.id, exc)

    def clear(
        self,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> list[int]:
        """ClearChargingProfile: every profile matching all the given criteria; their ids."""
        gone = [
            pid
            for pid, i in self.profiles.items()
            if (profile_id is None or pid == profile_id)
            and (connector_id is None or i.profile.connector_id == connector_id)
            and (purpose is None or i.profile.purpose == purpose)
            and (stack_level is None or i.profile.stack_level == stack_level)
        ]
        if gone:
            self._forget(gone, strict=True)
            log.info("charging profile(s) %s cleared", gone)
            self._wake.set()
        return gone

    # -- OCPP -----------------------------------------------------------------------------

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict, **_: Any):
        return call_result.SetChargingProfile(
            status=self.set_profile(connector_id, cs_charging_profiles)
        )

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ):
        try:
            gone = self.clear(
                profile_id=id,
                connector_id=connector_id,
                purpose=charging_profile_purpose,
                stack_level=stack_level,
            )
        except StoreError as exc:
            raise InternalError(description=f"the profiles could not be deleted: {exc}") from exc
        status = ClearChargingProfileStatus.accepted if gone else ClearChargingProfileStatus.unknown
        return call_result.ClearChargingProfile(status=status)

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any
    ):
        if connector_id not in range(len(self._sup.connectors) + 1) or duration <= 0:
            return call_result.GetCompositeSchedule(status=GetCompositeScheduleStatus.rejected)
        start = self._clock.now().replace(microsecond=0)
        # A pure function of a snapshot: computed in a thread, so that many stacked
        # profiles never hold up the supervisor (a fault opens the contactor meanwhile).
        compute = self.composite(
            connector_id, start, min(duration, MAX_COMPOSITE_S), charging_rate_unit or AMPS
        )
        comp = await asyncio.to_thread(compute)
        schedule: dict[str, Any] = {
            "duration": comp.duration_s,
            "start_schedule": iso(comp.start),
            "charging_rate_unit": comp.unit,
            "charging_schedule_period": [
                {"start_period": p.start_s, "limit": p.limit, "number_phases": p.number_phases}
                for p in comp.periods
            ],
        }
        if comp.min_rate is not None:
            schedule["min_charging_rate"] = comp.min_rate
        return call_result.GetCompositeSchedule(
            status=GetCompositeScheduleStatus.accepted,
            connector_id=connector_id,
            schedule_start=iso(comp.start),
            charging_schedule=schedule,
        )

    def composite(
        self, connector_id: int, start: datetime, duration_s: int, unit: str = AMPS
    ) -> Callable[[], Composite]:
        """The composite schedule of a connector (0: the station) from ``start``, to compute.

        Returns a call on a snapshot of the profiles, which may run in another thread.
        """
        if connector_id == 0:
            return partial(
                composite_schedule,
                self._cp_max(),
                start=start,
                duration_s=duration_s,
                connector_id=0,
                tx_start=None,
                elec=self.elec,
                station_max_a=self.station_max_a * len(self._sup.connectors),
                unit=unit,
            )
        conn = self._sup.connectors[connector_id]
        # Without a transaction, a Relative TxDefaultProfile is shown as if one started now.
        tx_start = conn.tx.start_time if conn.tx is not None else start
        return partial(
            composite_schedule,
            self._profiles_for(conn),
            start=start,
            duration_s=duration_s,
            connector_id=connector_id,
            tx_start=tx_start,
            elec=self.elec,
            station_max_a=self.station_max_a,
            unit=unit,
        )
