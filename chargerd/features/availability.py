"""ChangeAvailability: operative / inoperative per connector and for the station.

The choice is persisted, so that a station taken out of service stays out of
service across a restart.  A change that would interrupt a running transaction
is Scheduled and applied when that transaction ends.
"""

from __future__ import annotations

import json
import logging

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, AvailabilityStatus, AvailabilityType

from chargerd.features.connectors import ConnectorSupervisor
from chargerd.store import Store

log = logging.getLogger(__name__)

_KEY = "availability"


class AvailabilityService:
    def __init__(self, *, store: Store, supervisor: ConnectorSupervisor) -> None:
        self._store = store
        self._sup = supervisor
        self._station_scheduled: bool | None = None
        supervisor.on_idle.append(self._apply_station_schedule)

    def restore(self) -> None:
        raw = self._store.get_kv(_KEY)
        if not raw:
            return
        saved = json.loads(raw)
        self._sup.station_operative = bool(saved.get("0", True))
        for conn in self._sup.connectors.values():
            conn.operative = bool(saved.get(str(conn.id), True))
        if not self._sup.station_operative or not all(
            c.operative for c in self._sup.connectors.values()
        ):
            log.info("availability restored: %s", saved)

    def _save(self) -> None:
        saved = {"0": self._sup.station_operative}
        for conn in self._sup.connectors.values():
            target = (
                conn.scheduled_operative if conn.scheduled_operative is not None else conn.operative
            )
            saved[str(conn.id)] = target
        if self._station_scheduled is not None:
            saved["0"] = self._station_scheduled
        with self._store.transaction():
            self._store.set_kv(_KEY, json.dumps(saved))

    @on(Action.change_availability)
    def change_availability(self, connector_id: int, type: str):
        operative = type == AvailabilityType.operative
        if connector_id == 0:
            targets = list(self._sup.connectors.values())
        elif connector_id in self._sup.connectors:
            targets = [self._sup.connectors[connector_id]]
        else:
            return call_result.ChangeAvailability(status=AvailabilityStatus.rejected)
        scheduled = False
        for conn in targets:
            if conn.tx is not None and not operative:
                conn.scheduled_operative = False
                scheduled = True
            else:
                conn.operative = operative
                conn.scheduled_operative = None
                if not operative and conn.authorization is not None:
                    # A driver's card waiting for the plug does not survive going out of service.
                    log.info(
                        "connector %d: authorization for %s withdrawn (Inoperative)",
                        conn.id,
                        conn.authorization.id_tag,
                    )
                    conn.authorization = None
        if connector_id == 0:
            if scheduled:
                self._station_scheduled = operative
            else:
                self._sup.station_operative = operative
                self._station_scheduled = None
        self._save()
        self._sup.poke()
        status = AvailabilityStatus.scheduled if scheduled else AvailabilityStatus.accepted
        log.info("ChangeAvailability connector %d -> %s: %s", connector_id, type, status)
        return call_result.ChangeAvailability(status=status)

    def _apply_station_schedule(self) -> None:
        """After every transaction end: persist a connector's applied change, and apply a
        station-wide one once the last transaction is over."""
        if self._station_scheduled is not None and all(
            c.tx is None for c in self._sup.connectors.values()
        ):
            self._sup.station_operative = self._station_scheduled
            self._station_scheduled = None
            log.info(
                "scheduled station availability applied (operative=%s)", self._sup.station_operative
            )
        self._save()
