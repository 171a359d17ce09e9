"""Requests the CSMS makes of a running station: remote start/stop, unlock, reset, data transfer.

Each handler answers at once (milliseconds) with its decision and does the
slow part afterwards (@after), so that the CSMS never waits on a cable lock or
an Authorize round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ocpp.routing import after, on
from ocpp.v16 import call_result
from ocpp.v16.enums import (
    Action,
    DataTransferStatus,
    RemoteStartStopStatus,
    ResetStatus,
    UnlockStatus,
)

from chargerd.features.connectors import ConnectorSupervisor

if TYPE_CHECKING:
    from chargerd.features.auth import Authorizer
    from chargerd.features.configuration import ConfigurationService

log = logging.getLogger(__name__)


class RemoteService:
    def __init__(
        self,
        *,
        supervisor: ConnectorSupervisor,
        authorizer: Authorizer,
        config: ConfigurationService,
        online: Callable[[], bool],
        restart: Callable[[str], Awaitable[None]],
    ) -> None:
        self._sup = supervisor
        self._authorizer = authorizer
        self._config = config
        self._online = online
        self._restart = restart
        # Connectors held for remote starts waiting on their Authorize.conf, per idTag in
        # the order the CSMS asked (AuthorizeRemoteTxRequests=true).
        self._pending_remote: dict[str, deque[int]] = {}
        self._accepted_stops: set[int] = set()  # RemoteStopTransaction answered Accepted
        # Smart charging: judges (and keeps) the TxProfile a remote start carries; False rejects.
        self.check_charging_profile: Callable[[int, str, dict], bool] | None = None

    # -- RemoteStartTransaction ---------------------------------------------------------

    def _registered(self) -> bool:
        """Whether the CSMS accepted our BootNotification.

        A request reaches us over the link, so "not online" here means a registration
        that is Pending or Rejected: OCPP 1.6 §4.2 lets the CSMS configure a station
        then, but the station starts nothing for it until the boot is Accepted.
        """
        return self._online()

    @on(Action.remote_start_transaction)
    def remote_start(self, id_tag: str, connector_id: int | None = None, charging_profile=None):
        if not self._registered():
            log.info("RemoteStartTransaction for %s rejected: registration not accepted", id_tag)
            return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
        if connector_id is not None and connector_id not in self._sup.connectors:
            return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
        conn = self._sup.first_free(connector_id, id_tag=id_tag)
        ask_parent = False
        gate = self._sup.reservations
        if conn is None and connector_id is not None and gate is not None:
            # Maybe a sibling of the reserving idTag whose parent only the CSMS knows: the
            # connector is claimed and Authorize's parentIdTag decides (OCPP 1.6 §5.13).
            conn = self._sup.first_free(connector_id)
            ask_parent = conn is not None and gate.parent_unknown_for(conn, id_tag)
            conn = conn if ask_parent else None
        if conn is None or conn.authorization is not None:
            log.info("RemoteStartTransaction for %s rejected: no free connector", id_tag)
            return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
        if charging_profile is not None and not (
            self.check_charging_profile is not None
            and self.check_charging_profile(conn.id, id_tag, charging_profile)
        ):
            return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
        # Claim the connector now, before the answer goes out, so that a second
        # RemoteStart (or a card) arriving in the same instant does not get it too.
        if self._config.get("AuthorizeRemoteTxRequests") or ask_parent:
            conn.held = True
            self._pending_remote.setdefault(id_tag, deque()).append(conn.id)
        else:
            self._grant(conn.id, id_tag, None)
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)

    @after(Action.remote_start_transaction)
    async def _remote_start_after(
        self, id_tag: str, connector_id: int | None = None, charging_profile=None
    ) -> None:
        waiting = self._pending_remote.get(id_tag)
        if not waiting:
            return
        conn_id = waiting.popleft()
        if not waiting:
            del self._pending_remote[id_tag]
        try:
            info = await self._authorizer.authorize(id_tag, online=self._online())
        finally:
            self._sup.connectors[conn_id].held = False
        if info.status != "Accepted":
            log.warning("remote start for %s: Authorize answered %s", id_tag, info.status)
            self._sup.poke()
            return
        gate = self._sup.reservations
        if gate is not None:
            admission = gate.admit(self._sup.connectors[conn_id], id_tag, info.parent_id_tag)
            if not admission.allowed:
                log.warning("remote start for %s refused: %s", id_tag, admission.reason)
                self._sup.poke()
                return
        self._grant(conn_id, id_tag, info.parent_id_tag)

    def _grant(self, conn_id: int, id_tag: str, parent: str | None) -> None:
        conn = self._sup.connectors[conn_id]
        self._sup.grant(conn, id_tag=id_tag, parent_id_tag=parent, remote=True)
        log.info("remote start: %s authorized on connector %d", id_tag, conn_id)

    # -- RemoteStopTransaction ----------------------------------------------------------

    @on(Action.remote_stop_transaction)
    def remote_stop(self, transaction_id: int):
        if not self._registered():
            log.info("RemoteStopTransaction %s rejected: registration not accepted", transaction_id)
            return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.rejected)
        conn = self._sup.transactions.find_by_transaction_id(transaction_id)
        if conn is None:
            return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.rejected)
        self._accepted_stops.add(transaction_id)
        return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.accepted)

    @after(Action.remote_stop_transaction)
    async def _remote_stop_after(self, transaction_id: int) -> None:
        # An @after hook rather than a bare create_task: the link keeps a reference to it,
        # so the stop cannot be garbage-collected half-way.
        if transaction_id not in self._accepted_stops:
            return  # answered Rejected
        self._accepted_stops.discard(transaction_id)
        conn = self._sup.transactions.find_by_transaction_id(transaction_id)
        if conn is not None:
            await self._sup.stop(conn, "Remote")

    # -- UnlockConnector ----------------------------------------------------------------

    @on(Action.unlock_connector)
    async def unlock_connector(self, connector_id: int):
        conn = self._sup.connectors.get(connector_id)
        if conn is None or conn.hw.lock is None:
            return call_result.UnlockConnector(status=UnlockStatus.not_supported)
        result = await self._sup.unlock(conn)
        status = UnlockStatus.unlocked if result else UnlockStatus.unlock_failed
        return call_result.UnlockConnector(status=status)

    # -- Reset ------------------------------------------------------------------------------

    @on(Action.reset)
    def reset(self, type: str):
        return call_result.Reset(status=ResetStatus.accepted)

    @after(Action.reset)
    async def _reset_after(self, type: str) -> None:
        reason = "HardReset" if type == "Hard" else "SoftReset"
        log.warning("%s reset requested by the CSMS; stopping transactions and restarting", type)
        await asyncio.sleep(0.2)  # let the CALLRESULT leave first
        for conn in self._sup.connectors.values():
            if conn.tx is not None:
                await self._sup.stop(conn, reason)
        await self._restart(reason)

    # -- DataTransfer -----------------------------------------------------------------------

    @on(Action.data_transfer)
    def data_transfer(self, vendor_id: str, message_id: str | None = None, data: str | None = None):
        log.info("DataTransfer from vendor %s (message %s): no handler", vendor_id, message_id)
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)
