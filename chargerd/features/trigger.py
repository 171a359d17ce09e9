"""Remote Trigger (OCPP 1.6 §5.17): TriggerMessage.

The CSMS asks for one message now.  The handler answers at once (Accepted,
Rejected for a connector this station does not have or a message that cannot
be sent for it, NotImplemented for a message it cannot send at all) and the
message goes out from the @after hook, so that it always follows the answer,
as §5.17 requires.  Triggered messages are live messages: they go straight to
the link, not through the live queue, and are not retried.

Firmware update and diagnostics upload are not implemented yet, so the
station truthfully reports their status as Idle (§4.4, §4.5 allow it when
nothing is under way).  Those modules can later plug their status in through
``firmware_status`` / ``diagnostics_status``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ocpp.routing import after, on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, MessageTrigger, TriggerMessageStatus

from chargerd.clock import Clock, iso
from chargerd.features import metering
from hal.interfaces import Fault

if TYPE_CHECKING:
    from chargerd.features.connectors import ConnectorRuntime, ConnectorSupervisor

log = logging.getLogger(__name__)


class TriggerService:
    """Answers TriggerMessage and sends the message asked for once the answer is out."""

    def __init__(
        self,
        *,
        supervisor: ConnectorSupervisor,
        config: Any,
        clock: Clock,
        call: Callable[[str, dict], Awaitable[Any]],
        send_boot: Callable[[], Awaitable[None]],
        send_heartbeat: Callable[[], Awaitable[None]],
        station_status: Callable[[], tuple[str, str]],
        errors: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        self._sup = supervisor
        self._config = config
        self._clock = clock
        self._call = call
        self._send_boot = send_boot
        self._send_heartbeat = send_heartbeat
        self._station_status = station_status
        self._errors = errors
        self.firmware_status: Callable[[], str] = lambda: "Idle"
        self.diagnostics_status: Callable[[], str] = lambda: "Idle"
        # What each requestedMessage sends; a message missing here is NotImplemented.
        self._senders: dict[str, Callable[[int | None], Awaitable[None]]] = {
            MessageTrigger.boot_notification: self._boot,
            MessageTrigger.diagnostics_status_notification: self._diagnostics,
            MessageTrigger.firmware_status_notification: self._firmware,
            MessageTrigger.heartbeat: self._heartbeat,
            MessageTrigger.meter_values: self._meter_values,
            MessageTrigger.status_notification: self._status,
        }
        self._accepted: list[tuple[str, int | None]] = []  # answered Accepted, not yet sent

    # -- the decision ----------------------------------------------------------------------

    def decide(self, requested: str, connector_id: int | None) -> TriggerMessageStatus:
        """Accepted, Rejected or NotImplemented for ``requested`` on ``connector_id``."""
        if requested not in self._senders:
            return TriggerMessageStatus.not_implemented
        if (
            connector_id is not None
            and connector_id != 0
            and connector_id not in self._sup.connectors
        ):
            return TriggerMessageStatus.rejected
        if requested == MessageTrigger.meter_values:
            readable = [c for c in self._targets(connector_id) if not self._meter_silent(c)]
            if not readable:
                return TriggerMessageStatus.rejected  # no measurement to send
        return TriggerMessageStatus.accepted

    def _targets(self, connector_id: int | None) -> list[ConnectorRuntime]:
        """The connectors a message is for: the given one, or all (None or 0)."""
        if connector_id:
            return [self._sup.connectors[connector_id]]
        return list(self._sup.connectors.values())

    @staticmethod
    def _meter_silent(conn: ConnectorRuntime) -> bool:
        return Fault.METER_FAILURE in conn.hw.meter.faults()

    async def send(self, requested: str, connector_id: int | None) -> None:
        """Send the triggered message now; a link failure is logged (a live message)."""
        try:
            await self._senders[requested](connector_id)
        except self._errors as exc:
            log.info("triggered %s not delivered: %s", requested, exc)

    # -- the senders -------------------------------------------------------------------------

    async def _boot(self, _connector_id: int | None) -> None:
        await self._send_boot()

    async def _heartbeat(self, _connector_id: int | None) -> None:
        await self._send_heartbeat()

    async def _diagnostics(self, _connector_id: int | None) -> None:
        await self._call("DiagnosticsStatusNotification", {"status": self.diagnostics_status()})

    async def _firmware(self, _connector_id: int | None) -> None:
        await self._call("FirmwareStatusNotification", {"status": self.firmware_status()})

    async def _status(self, connector_id: int | None) -> None:
        stamp = iso(self._clock.now())
        reports: list[tuple[int, str, str]] = []
        if not connector_id:
            status, code = self._station_status()
            reports.append((0, status, code))
        for conn in self._targets(connector_id) if connector_id != 0 else []:
            if conn.status is not None:
                reports.append((conn.id, conn.status, conn.error_code or "NoError"))
        for cid, status, code in reports:
            await self._call(
                "StatusNotification",
                {"connectorId": cid, "status": status, "errorCode": code, "timestamp": stamp},
            )

    async def _meter_values(self, connector_id: int | None) -> None:
        # What the CSMS configured for sampled values; the energy register when that is empty.
        measurands = metering.parse_measurands(
            str(self._config.get("MeterValuesSampledData") or "")
        ) or ["Energy.Active.Import.Register"]
        for conn in self._targets(connector_id):
            reading = await self._sup.read_meter_now(conn)
            if reading is None:
                log.info("triggered MeterValues: connector %d's meter is silent", conn.id)
                continue
            payload: dict[str, Any] = {
                "connectorId": conn.id,
                "meterValue": [
                    metering.meter_value(
                        reading,
                        measurands,
                        context="Trigger",
                        timestamp=self._clock.now(),
                        offered_current_a=conn.hw.pilot.offered_current_a,
                    )
                ],
            }
            if conn.tx is not None and conn.tx.transaction_id is not None:
                payload["transactionId"] = conn.tx.transaction_id
            await self._call("MeterValues", payload)

    # -- OCPP ----------------------------------------------------------------------------

    @on(Action.trigger_message)
    def on_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> call_result.TriggerMessage:
        status = self.decide(requested_message, connector_id)
        log.info("TriggerMessage %s (connector %s): %s", requested_message, connector_id, status)
        if status == TriggerMessageStatus.accepted:
            self._accepted.append((requested_message, connector_id))
        return call_result.TriggerMessage(status=status)

    @after(Action.trigger_message)
    async def _trigger_after(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> None:
        key = (requested_message, connector_id)
        if key not in self._accepted:
            return  # answered Rejected or NotImplemented
        self._accepted.remove(key)
        await self.send(requested_message, connector_id)
