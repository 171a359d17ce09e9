"""Registration (BootNotification), Heartbeat and the live StatusNotifications, on a fake link."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from chargerd.features.boot import BootService, Identity
from chargerd.link import CallErrorReceived, CallTimeout, LinkError, NotConnected
from chargerd.link.frames import check_outgoing_call

CSMS_TIME = "2026-05-05T10:00:00.000Z"
IDENTITY = Identity(
    charge_point_vendor="Acme",
    charge_point_model="AC22",
    firmware_version="1.2.3",
    charge_point_serial_number="SN-1",
    meter_type="chargerd mock meter",
)


def boot_result(status: str = "Accepted", interval: int = 30) -> dict:
    return {"status": status, "interval": interval, "currentTime": CSMS_TIME}


class Station:
    """A BootService with its three loops running, as the daemon starts them."""

    def __init__(self, link, clock, config) -> None:
        self.link = link
        self.statuses = [(1, "Available", "NoError"), (0, "Available", "NoError")]
        self.boot = BootService(
            link=link,
            clock=clock,
            identity=IDENTITY,
            config=config,
            link_errors=(LinkError,),
            current_statuses=lambda: list(self.statuses),
        )
        self.tasks: list[asyncio.Task] = []

    def start(self) -> Station:
        for coro in (self.boot.run(), self.boot.live_loop(), self.boot.heartbeat_loop()):
            self.tasks.append(asyncio.create_task(coro))
        return self

    async def connect(self) -> None:
        self.link.connected = True
        await self.boot.on_connect()

    async def disconnect(self) -> None:
        self.link.connected = False
        await self.boot.on_disconnect()

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def station(link, clock, config):
    link.connected = False
    link.default = {"StatusNotification": {}, "Heartbeat": {"currentTime": CSMS_TIME}}
    s = Station(link, clock, config).start()
    yield s
    await s.stop()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_accepted_boot_sets_heartbeat_clock_and_sends_the_statuses(
    station, link, clock, config
):
    link.answer("BootNotification", boot_result(interval=45))
    await station.connect()
    await link.wait_calls(2, "StatusNotification")
    action, payload = link.calls[0]
    assert action == "BootNotification"
    assert payload == {
        "chargePointVendor": "Acme",
        "chargePointModel": "AC22",
        "firmwareVersion": "1.2.3",
        "chargePointSerialNumber": "SN-1",
        "chargeBoxSerialNumber": "SN-1",
        "meterType": "chargerd mock meter",
    }
    await check_outgoing_call(action, payload)
    assert station.boot.registration == "Accepted" and station.boot.online()
    assert config.get("HeartbeatInterval") == 45
    assert clock.now() == datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
    sent = [
        (p["connectorId"], p["status"], p["errorCode"]) for _, p in link.sent("StatusNotification")
    ]
    assert sent == station.statuses
    for _, p in link.sent("StatusNotification"):
        assert p["timestamp"] == CSMS_TIME
        await check_outgoing_call("StatusNotification", p)


@pytest.mark.parametrize("verdict", ["Pending", "Rejected"])
async def test_pending_or_rejected_is_retried_after_the_interval_and_nothing_else_goes(
    station, link, verdict
):
    link.answer("BootNotification", boot_result(verdict, interval=1), boot_result())
    await station.connect()
    await link.wait_calls(1)
    await settle()
    assert station.boot.registration == verdict and not station.boot.online()
    station.boot.send_status(1, "Preparing", "NoError")  # dropped: not registered
    station.boot.send_live("MeterValues", {"connectorId": 1, "meterValue": []})
    await asyncio.sleep(0.5)
    assert link.actions() == ["BootNotification"]  # not before the interval
    await link.wait_calls(2, "BootNotification", timeout=3)
    await link.wait_calls(2, "StatusNotification")
    assert link.actions() == ["BootNotification"] * 2 + ["StatusNotification"] * 2
    assert station.boot.online()


async def test_an_unanswered_boot_is_sent_again_on_the_next_connection(station, link):
    link.answer("BootNotification", CallTimeout("no answer"), boot_result())
    await station.connect()
    await link.wait_calls(1)
    assert not station.boot.online()
    await station.disconnect()
    await settle()
    await station.connect()
    await link.wait_calls(2, "BootNotification")
    await link.wait_calls(2, "StatusNotification")
    assert station.boot.online()


async def test_a_reconnect_resends_the_statuses_without_a_second_boot(station, link):
    link.answer("BootNotification", boot_result())
    await station.connect()
    await link.wait_calls(2, "StatusNotification")
    await station.disconnect()
    station.boot.send_status(1, "Charging", "NoError")  # offline: dropped, not queued
    station.statuses[0] = (1, "Charging", "NoError")
    await settle()
    assert not station.boot.online()
    await station.connect()
    await link.wait_calls(4, "StatusNotification")
    await asyncio.sleep(0.05)
    assert link.actions().count("BootNotification") == 1
    assert [p["status"] for _, p in link.sent("StatusNotification")] == [
        "Available",
        "Available",
        "Charging",
        "Available",
    ]


async def test_live_messages_queued_while_offline_are_dropped(station, link):
    link.answer("BootNotification", boot_result())
    await station.connect()
    await link.wait_calls(2, "StatusNotification")
    await station.disconnect()
    station.boot.send_live("MeterValues", {"connectorId": 1, "meterValue": []})
    await settle()
    await station.connect()
    await link.wait_calls(4, "StatusNotification")
    await asyncio.sleep(0.05)
    assert "MeterValues" not in link.actions()


async def test_a_live_message_the_link_fails_to_deliver_is_dropped(station, link):
    link.answer("BootNotification", boot_result())
    link.answer("StatusNotification", NotConnected("gone"), CallErrorReceived("X", "y", {}))
    await station.connect()
    await link.wait_calls(2, "StatusNotification")
    station.boot.send_status(1, "Preparing", "NoError")
    await link.wait_calls(3, "StatusNotification")
    # each went once; a failure is not retried (live messages are not transaction messages)
    assert [p["status"] for _, p in link.sent("StatusNotification")] == [
        "Available",
        "Available",
        "Preparing",
    ]


async def test_heartbeat_runs_at_the_interval_and_adopts_the_csms_time(
    station, link, clock, config
):
    link.answer("BootNotification", boot_result(interval=1))
    link.default["Heartbeat"] = {"currentTime": "2026-06-01T00:00:00.000Z"}
    await station.connect()
    await link.wait_calls(1, "Heartbeat", timeout=3)
    await settle()
    assert clock.now() == datetime(2026, 6, 1, tzinfo=UTC)
    assert station.boot.last_heartbeat == "2026-06-01T00:00:00.000Z"


class SlowToNoticeLink:
    """A link whose websocket is gone before its disconnect listeners have run."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.reads = 0

    @property
    def connected(self) -> bool:
        self.reads += 1
        if self.reads > 10_000:
            raise RuntimeError("ready() polls link.connected without ever yielding")
        return self._inner.connected

    async def call(self, action, payload):
        return await self._inner.call(action, payload)


async def test_ready_waits_without_spinning_while_the_disconnect_is_being_noticed(
    link, clock, config
):
    link.connected = False
    link.default = {"StatusNotification": {}}
    slow = SlowToNoticeLink(link)
    station = Station(slow, clock, config)
    station.link = link
    station.start()
    try:
        link.answer("BootNotification", boot_result())
        await station.connect()
        await station.boot.ready()
        # The websocket drops; the link's disconnect listeners have not run yet.
        link.connected = False
        waiter = asyncio.create_task(station.boot.ready())
        await asyncio.sleep(0.05)  # never returns if ready() spins
        assert not waiter.done()
        await station.disconnect()
        await station.connect()
        async with asyncio.timeout(1):
            await waiter
    finally:
        await station.stop()
