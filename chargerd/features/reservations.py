"""Reservation (OCPP 1.6 §5.13, §5.2, §9.5): ReserveNow, CancelReservation, and the rules.

A reservation holds a connector (or, for connectorId 0, "one of the
connectors") for an idTag until ``expiryDate``.  Only that idTag, or one with
the same parentIdTag, may start there; the transaction that uses it carries
the reservationId in its StartTransaction and ends the reservation.  The
reservation also ends at its expiryDate (a timer on the injectable clock, no
polling), by CancelReservation, and when its connector (or, for connector 0,
the charge point) becomes Faulted or Unavailable (§5.13, case 3).

The rules are plain functions of a snapshot of the connectors
(:class:`ConnectorView`) and the reservations:

- :func:`reserve_answer`: what ReserveNow answers (Accepted, Faulted,
  Unavailable, Occupied, Rejected).
- :func:`shows_reserved`: whether a connector is Reserved.  A connector with
  its own reservation is; with connector-0 reservations, every free connector
  is once the free connectors are no more than those reservations, so that
  one stays for each reserving driver.
- :func:`admission`: whether an idTag may start on a connector, and which
  reservation that start uses.

:class:`ReservationService` keeps the reservations in SQLite (migration 0020)
so that they survive a restart, and is the connector supervisor's
``reservations`` gate.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, CancelReservationStatus, ReservationStatus

from chargerd.clock import Clock, iso, parse_iso, sleep_or_wake
from chargerd.features.authz import IdTagInfo, same_id_tag
from chargerd.features.status import BLOCKING_FAULTS
from chargerd.store import Store, StoreError

if TYPE_CHECKING:
    from chargerd.features.configuration import ConfigurationService
    from chargerd.features.connectors import ConnectorRuntime, ConnectorSupervisor

log = logging.getLogger(__name__)


def declare_keys(config: ConfigurationService) -> None:
    """ReserveConnectorZeroSupported (§9.5, read-only)."""
    config.declare("ReserveConnectorZeroSupported", True, type=bool, readonly=True)


@dataclass(frozen=True, slots=True)
class Reservation:
    reservation_id: int
    connector_id: int  # 0: any connector
    id_tag: str
    parent_id_tag: str | None
    expiry_date: datetime

    def matches(self, id_tag: str | None, parent_id_tag: str | None) -> bool:
        """The reserving idTag, or another one under the same (non-empty) parentIdTag."""
        return same_id_tag(self.id_tag, id_tag) or same_id_tag(self.parent_id_tag, parent_id_tag)

    def to_json(self) -> dict[str, Any]:
        return {
            "reservation_id": self.reservation_id,
            "connector_id": self.connector_id,
            "id_tag": self.id_tag,
            "parent_id_tag": self.parent_id_tag,
            "expiry_date": iso(self.expiry_date),
        }


@dataclass(frozen=True, slots=True)
class ConnectorView:
    """What the reservation rules need of one connector at one instant."""

    id: int
    faulted: bool  # a fault that makes charging impossible
    unavailable: bool  # inoperative (ChangeAvailability), itself or the station
    free: bool  # Available: nobody plugged, authorized, charging or finishing there


# -- the rules ----------------------------------------------------------------------------


def _own(reservations: Iterable[Reservation], connector_id: int) -> Reservation | None:
    for r in reservations:
        if r.connector_id == connector_id:
            return r
    return None


def _unreserved_free(reservations: list[Reservation], views: Iterable[ConnectorView]) -> list[int]:
    """Free connectors without a reservation of their own: what connector-0 ones draw on."""
    own = {r.connector_id for r in reservations if r.connector_id}
    return [v.id for v in views if v.free and v.id not in own]


def reserve_answer(
    reservations: list[Reservation],
    views: dict[int, ConnectorView],
    connector_id: int,
    *,
    zero_supported: bool,
) -> ReservationStatus:
    """ReserveNow's answer for a new reservation (``reservations``: the others in force)."""
    if connector_id == 0:
        if not zero_supported or not views:
            return ReservationStatus.rejected
        zero = sum(1 for r in reservations if r.connector_id == 0)
        if len(_unreserved_free(reservations, views.values())) > zero:
            return ReservationStatus.accepted
        if all(v.faulted for v in views.values()):
            return ReservationStatus.faulted
        if all(v.unavailable for v in views.values()):
            return ReservationStatus.unavailable
        return ReservationStatus.occupied
    view = views.get(connector_id)
    if view is None:
        return ReservationStatus.rejected
    if view.faulted:
        return ReservationStatus.faulted
    if view.unavailable:
        return ReservationStatus.unavailable
    if not view.free or _own(reservations, connector_id) is not None:
        return ReservationStatus.occupied
    zero = sum(1 for r in reservations if r.connector_id == 0)
    if zero and len(_unreserved_free(reservations, views.values())) - 1 < zero:
        # This connector is the one a connector-0 reservation is counting on.
        return ReservationStatus.occupied
    return ReservationStatus.accepted


def shows_reserved(
    reservations: list[Reservation], views: dict[int, ConnectorView], connector_id: int
) -> bool:
    """Whether the connector's status is Reserved (the status machine still needs it idle)."""
    if _own(reservations, connector_id) is not None:
        return True
    zero = sum(1 for r in reservations if r.connector_id == 0)
    if not zero:
        return False
    free = _unreserved_free(reservations, views.values())
    return connector_id in free and len(free) <= zero


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    reservation_id: int | None = None
    reason: str = ""


def admission(
    reservations: list[Reservation],
    views: dict[int, ConnectorView],
    connector_id: int,
    id_tag: str,
    parent_id_tag: str | None,
) -> Admission:
    """May ``id_tag`` start on ``connector_id``, and with which reservation?

    The connector's own reservation admits only its idTag or a sibling.  Any
    connector admits the holder of a connector-0 reservation.  Anyone else may
    take a connector only if enough free connectors stay for the connector-0
    reservations without this one.
    """
    own = _own(reservations, connector_id)
    if own is not None:
        if own.matches(id_tag, parent_id_tag):
            return Admission(True, own.reservation_id, "its reservation")
        return Admission(False, None, f"reserved for {own.id_tag} ({own.reservation_id})")
    zero = [r for r in reservations if r.connector_id == 0]
    for r in zero:
        if r.matches(id_tag, parent_id_tag):
            return Admission(True, r.reservation_id, "its connector-0 reservation")
    if zero:
        others = [c for c in _unreserved_free(reservations, views.values()) if c != connector_id]
        if len(others) < len(zero):
            return Admission(
                False,
                None,
                f"the free connectors are held by {len(zero)} connector-0 reservation(s)",
            )
    return Admission(True, None, "not reserved")


# -- the service ---------------------------------------------------------------------------


class ReservationService:
    """The reservations in force: persisted, expired by a timer, the supervisor's gate."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        config: ConfigurationService,
        supervisor: ConnectorSupervisor,
        parent_of: Callable[[str], IdTagInfo | None] = lambda _tag: None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._config = config
        self._sup = supervisor
        # The list/cache entry of an idTag whose parent is not known (a remote start).
        self._parent_of = parent_of
        self._wake = asyncio.Event()
        self._reservations: dict[int, Reservation] = {}
        for row in store.query("SELECT * FROM reservations ORDER BY reservation_id"):
            r = Reservation(
                int(row["reservation_id"]),
                int(row["connector_id"]),
                str(row["id_tag"]),
                row["parent_id_tag"],
                parse_iso(row["expiry_date"]),
            )
            self._reservations[r.reservation_id] = r
        if self._reservations:
            log.info("%d reservation(s) restored", len(self._reservations))
        supervisor.reservations = self

    # -- state -----------------------------------------------------------------------------

    def all(self) -> list[Reservation]:
        return sorted(self._reservations.values(), key=lambda r: r.reservation_id)

    def of_connector(self, connector_id: int) -> Reservation | None:
        return _own(self._reservations.values(), connector_id)

    def views(self) -> dict[int, ConnectorView]:
        sup = self._sup
        return {c.id: self._view(c) for c in sup.connectors.values()}

    def _view(self, c: ConnectorRuntime) -> ConnectorView:
        sup = self._sup
        faulted = bool(c.faults & BLOCKING_FAULTS)
        unavailable = not (c.operative and sup.station_operative)
        free = (
            not faulted
            and not unavailable
            and c.tx is None
            and c.authorization is None
            and not c.held
            and not c.finishing
            and not c.ev_state.plugged
        )
        return ConnectorView(c.id, faulted, unavailable, free)

    # -- the supervisor's gate ---------------------------------------------------------

    def is_reserved(self, conn: ConnectorRuntime) -> bool:
        if not self._reservations:
            return False
        return shows_reserved(self.all(), self.views(), conn.id)

    def admit(self, conn: ConnectorRuntime, id_tag: str, parent_id_tag: str | None) -> Admission:
        if not self._reservations:
            return Admission(True)
        if parent_id_tag is None:
            known = self._parent_of(id_tag)
            parent_id_tag = known.parent_id_tag if known is not None else None
        return admission(self.all(), self.views(), conn.id, id_tag, parent_id_tag)

    def prefers(self, conn: ConnectorRuntime, id_tag: str, parent_id_tag: str | None) -> bool:
        """The connector is reserved for this idTag (a driver goes to their own connector)."""
        own = self.of_connector(conn.id)
        return own is not None and own.matches(id_tag, parent_id_tag)

    def parent_unknown_for(self, conn: ConnectorRuntime, id_tag: str) -> bool:
        """The connector's reservation would admit ``id_tag`` if it were a sibling, and
        neither the list nor the cache knows its parent: an Authorize.req will tell."""
        own = self.of_connector(conn.id)
        if own is None or own.parent_id_tag is None or same_id_tag(own.id_tag, id_tag):
            return False
        return self._parent_of(id_tag) is None

    def started(self, conn: ConnectorRuntime, reservation_id: int) -> None:
        """A transaction using the reservation started: the reservation has done its job."""
        if self._remove(reservation_id):
            log.info(
                "reservation %d used by the transaction started on connector %d",
                reservation_id,
                conn.id,
            )

    def connector_status(self, connector_id: int, status: str) -> None:
        """§5.13 case 3: a Faulted or Unavailable connector ends its reservation."""
        if status not in ("Faulted", "Unavailable"):
            return
        own = self.of_connector(connector_id)
        if own is not None and self._remove(own.reservation_id):
            log.warning(
                "reservation %d ended: connector %d is %s",
                own.reservation_id,
                connector_id,
                status,
            )
        if not self._sup.station_operative:
            for r in [r for r in self.all() if r.connector_id == 0]:
                if self._remove(r.reservation_id):
                    log.warning(
                        "reservation %d ended: the station is Unavailable", r.reservation_id
                    )

    # -- changes -----------------------------------------------------------------------

    def reserve(
        self,
        *,
        reservation_id: int,
        connector_id: int,
        id_tag: str,
        expiry_date: datetime,
        parent_id_tag: str | None = None,
    ) -> ReservationStatus:
        """ReserveNow: decide, and on Accepted persist (replacing the same reservationId)."""
        if expiry_date <= self._clock.now():
            log.info("ReserveNow %d refused: expiryDate %s has passed", reservation_id, expiry_date)
            return ReservationStatus.rejected
        others = [r for r in self.all() if r.reservation_id != reservation_id]
        views = self.views()
        old = self._reservations.get(reservation_id)  # replaced on Accepted, kept otherwise
        status = reserve_answer(
            others,
            views,
            connector_id,
            zero_supported=bool(self._config.get("ReserveConnectorZeroSupported")),
        )
        if status != ReservationStatus.accepted:
            log.info(
                "ReserveNow %d for %s on connector %d answered %s",
                reservation_id,
                id_tag,
                connector_id,
                status,
            )
            return status
        new = Reservation(reservation_id, connector_id, id_tag, parent_id_tag or None, expiry_date)
        with self._store.transaction():
            self._store.execute(
                "INSERT INTO reservations(reservation_id, connector_id, id_tag, parent_id_tag, "
                "expiry_date, created_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(reservation_id) DO UPDATE SET connector_id = excluded.connector_id, "
                "id_tag = excluded.id_tag, parent_id_tag = excluded.parent_id_tag, "
                "expiry_date = excluded.expiry_date, created_at = excluded.created_at",
                (
                    reservation_id,
                    connector_id,
                    id_tag,
                    new.parent_id_tag,
                    iso(expiry_date),
                    iso(self._clock.now()),
                ),
            )
        self._reservations[reservation_id] = new
        log.info(
            "reservation %d %s: connector %d for %s until %s",
            reservation_id,
            "replaced" if old is not None else "accepted",
            connector_id,
            id_tag,
            iso(expiry_date),
        )
        self._changed()
        return ReservationStatus.accepted

    def cancel(self, reservation_id: int) -> bool:
        if not self._remove(reservation_id):
            return False
        log.info("reservation %d cancelled by the CSMS", reservation_id)
        return True

    def _remove(self, reservation_id: int) -> bool:
        if reservation_id not in self._reservations:
            return False
        with self._store.transaction():
            self._store.execute(
                "DELETE FROM reservations WHERE reservation_id = ?", (reservation_id,)
            )
        del self._reservations[reservation_id]
        self._changed()
        return True

    def _changed(self) -> None:
        self._wake.set()
        self._sup.poke()

    # -- expiry --------------------------------------------------------------------------

    def expire_due(self) -> list[int]:
        """End every reservation whose expiryDate has come; their ids."""
        now = self._clock.now()
        gone = [r.reservation_id for r in self.all() if r.expiry_date <= now]
        for rid in gone:
            try:
                self._remove(rid)
            except (StoreError, sqlite3.Error, OSError) as exc:
                # In memory it stays until the store takes the delete; it no longer binds.
                log.error("reservation %d expired but cannot be removed: %s", rid, exc)
                self._reservations.pop(rid, None)
                continue
            log.info("reservation %d expired", rid)
        return gone

    def next_expiry(self) -> datetime | None:
        return min((r.expiry_date for r in self._reservations.values()), default=None)

    async def run(self) -> None:
        """Sleep until the next expiryDate (or a change), then end what expired."""
        while True:
            self._wake.clear()
            self.expire_due()
            nxt = self.next_expiry()
            if nxt is None:
                await self._wake.wait()
                continue
            delay = max(0.0, (nxt - self._clock.now()).total_seconds())
            await sleep_or_wake(self._clock, delay, self._wake)

    # -- OCPP ----------------------------------------------------------------------------

    @on(Action.reserve_now)
    def on_reserve_now(
        self,
        connector_id: int,
        expiry_date: str,
        id_tag: str,
        reservation_id: int,
        parent_id_tag: str | None = None,
        **_: Any,
    ) -> call_result.ReserveNow:
        try:
            expiry = parse_iso(expiry_date)
        except ValueError:
            log.warning("ReserveNow %d: expiryDate %r is not a date", reservation_id, expiry_date)
            return call_result.ReserveNow(status=ReservationStatus.rejected)
        try:
            status = self.reserve(
                reservation_id=reservation_id,
                connector_id=connector_id,
                id_tag=id_tag,
                expiry_date=expiry,
                parent_id_tag=parent_id_tag,
            )
        except (StoreError, sqlite3.Error, OSError) as exc:
            log.error("ReserveNow %d not stored: %s", reservation_id, exc)
            return call_result.ReserveNow(status=ReservationStatus.rejected)
        return call_result.ReserveNow(status=status)

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, reservation_id: int, **_: Any) -> call_result.CancelReservation:
        try:
            done = self.cancel(reservation_id)
        except (StoreError, sqlite3.Error, OSError) as exc:
            log.error("CancelReservation %d not stored: %s", reservation_id, exc)
            done = False
        status = CancelReservationStatus.accepted if done else CancelReservationStatus.rejected
        return call_result.CancelReservation(status=status)
