"""Registration with the CSMS: BootNotification, Heartbeat, and the live StatusNotifications.

After each connect the station sends BootNotification until the CSMS accepts
it (Pending and Rejected are retried at the interval the CSMS gives), and sends
nothing else meanwhile.  Once accepted, the CSMS's time becomes the station's
time, the heartbeat runs at the interval it gave, and every connector's status
is sent again (the CSMS may have missed changes while the link was down).

StatusNotifications are not transaction messages: they are sent live, in
order, and dropped while offline, as the specification says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from chargerd.clock import Clock, iso, parse_iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    charge_point_vendor: str
    charge_point_model: str
    firmware_version: str
    charge_point_serial_number: str | None = None
    meter_type: str | None = None

    def payload(self) -> dict:
        p = {
            "chargePointVendor": self.charge_point_vendor,
            "chargePointModel": self.charge_point_model,
            "firmwareVersion": self.firmware_version,
        }
        if self.charge_point_serial_number:
            p["chargePointSerialNumber"] = self.charge_point_serial_number
            # Deprecated in 1.6 but still the field many central systems read: without
            # it they show no serial at all.  Same CiString25, same value.
            p["chargeBoxSerialNumber"] = self.charge_point_serial_number
        if self.meter_type:
            p["meterType"] = self.meter_type
        return p


class BootService:
    def __init__(
        self,
        *,
        link,
        clock: Clock,
        identity: Identity,
        config,
        link_errors: tuple[type[BaseException], ...],
        current_statuses: Callable[[], list[tuple[int, str, str]]],
    ) -> None:
        self._link = link
        self._clock = clock
        self._identity = identity
        self._config = config
        self._errors = link_errors
        self._current_statuses = current_statuses
        self.registration: str | None = None
        self.registered = asyncio.Event()
        self.last_heartbeat: str | None = None
        self.boot_sent_at: float | None = None  # monotonic, for the bench
        self._live: asyncio.Queue[tuple[str, dict]] = asyncio.Queue(maxsize=1000)
        self._connected_event = asyncio.Event()
        self._disconnected_event = asyncio.Event()
        self._heartbeat_wake = asyncio.Event()

    # -- link events ------------------------------------------------------------------

    async def on_connect(self) -> None:
        self._disconnected_event.clear()
        self._connected_event.set()

    async def on_disconnect(self) -> None:
        self._connected_event.clear()
        self._disconnected_event.set()

    async def ready(self) -> None:
        """Returns when the link is up and the CSMS has accepted the boot."""
        while not self.online():
            if not self.registered.is_set():
                await self.registered.wait()
            elif not self._connected_event.is_set():
                await self._connected_event.wait()
            else:
                # The websocket is gone but the link's disconnect listeners have not run
                # yet: both events are still set, and awaiting them would never yield.
                await asyncio.sleep(0.05)

    def online(self) -> bool:
        return bool(self._link.connected and self.registered.is_set())

    # -- boot loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Boot once per process run; after a reconnect, only re-send the statuses.

        OCPP 1.6 sends BootNotification when the station (re)boots, not on every new
        websocket: a reconnect keeps the registration, and the CSMS learns what changed
        while it was away from the StatusNotifications sent right after.
        """
        while True:
            await self._connected_event.wait()
            if not self.registered.is_set():
                interval = await self._boot_once()
                if not self.registered.is_set():
                    await self._sleep_or_disconnect(interval)
                    continue
            self._resend_statuses()
            await self._disconnected_event.wait()

    async def _boot_once(self) -> float:
        self.boot_sent_at = self._clock.monotonic()
        try:
            result = await self._link.call("BootNotification", self._identity.payload())
        except self._errors as exc:
            log.warning("BootNotification not answered: %s", exc)
            return 5.0
        status = result.get("status")
        interval = int(result.get("interval") or 0)
        try:
            self._clock.adjust_to(parse_iso(result["currentTime"]))
        except (KeyError, ValueError):
            log.warning("BootNotification result without a usable currentTime")
        self.registration = status
        if status == "Accepted":
            if interval > 0:
                try:
                    self._config.set_internal("HeartbeatInterval", interval)
                except ValueError as exc:  # out of the key's bounds: keep the current one
                    log.warning("heartbeat interval of the CSMS not used: %s", exc)
            self.registered.set()
            self._heartbeat_wake.set()
            log.info("registered with the CSMS (heartbeat every %ss)", interval or "?")
            return 0.0
        retry = float(interval) if interval > 0 else 30.0
        log.warning("CSMS answered BootNotification %s; trying again in %.0f s", status, retry)
        return retry

    async def _sleep_or_disconnect(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._disconnected_event.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def send_boot_notification(self) -> None:
        """One BootNotification now (TriggerMessage), its answer applied as at boot."""
        await self._boot_once()

    # -- heartbeat ----------------------------------------------------------------------

    async def send_heartbeat(self) -> None:
        """One Heartbeat now (TriggerMessage); the CSMS's time is adopted.  Never raises."""
        try:
            result = await self._link.call("Heartbeat", {})
            self._clock.adjust_to(parse_iso(result["currentTime"]))
            self.last_heartbeat = iso(self._clock.now())
        except self._errors as exc:
            log.info("Heartbeat not answered: %s", exc)
        except (KeyError, ValueError):
            log.warning("Heartbeat result without a usable currentTime")

    def heartbeat_changed(self) -> None:
        self._heartbeat_wake.set()

    async def heartbeat_loop(self) -> None:
        while True:
            interval = int(self._config.get("HeartbeatInterval") or 0)
            self._heartbeat_wake.clear()
            if interval <= 0:
                await self._heartbeat_wake.wait()
                continue
            try:
                await asyncio.wait_for(self._heartbeat_wake.wait(), timeout=interval)
                continue
            except TimeoutError:
                pass
            if not self.online():
                continue
            try:
                result = await self._link.call("Heartbeat", {})
                self._clock.adjust_to(parse_iso(result["currentTime"]))
                self.last_heartbeat = iso(self._clock.now())
            except self._errors as exc:
                log.info("Heartbeat not answered: %s", exc)
            except (KeyError, ValueError):
                log.warning("Heartbeat result without a usable currentTime")

    # -- live messages ----------------------------------------------------------------------

    def send_status(self, connector_id: int, status: str, error_code: str) -> None:
        """Queue a StatusNotification to go out live (dropped when offline)."""
        if not self.online():
            return
        payload = {
            "connectorId": connector_id,
            "status": status,
            "errorCode": error_code,
            "timestamp": iso(self._clock.now()),
        }
        self.send_live("StatusNotification", payload)

    def send_live(self, action: str, payload: dict) -> None:
        try:
            self._live.put_nowait((action, payload))
        except asyncio.QueueFull:
            log.warning("live message queue full; %s dropped", action)

    def _resend_statuses(self) -> None:
        for connector_id, status, error_code in self._current_statuses():
            self.send_status(connector_id, status, error_code)

    async def live_loop(self) -> None:
        while True:
            action, payload = await self._live.get()
            if not self.online():
                continue
            try:
                await self._link.call(action, payload)
            except self._errors as exc:
                log.info("%s not delivered (%s); dropped as the specification allows", action, exc)
