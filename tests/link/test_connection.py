"""The Link against a raw websockets CSMS on 127.0.0.1: what the CSMS sees on the wire."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from ocpp.exceptions import PropertyConstraintViolationError
from ocpp.routing import after, on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from chargerd.clock import SystemClock
from chargerd.link import (
    CallErrorReceived,
    CallResultInvalid,
    CallTimeout,
    FrameLog,
    Link,
    NotConnected,
)

NOW = "2026-01-01T00:00:00.000Z"


class Station:
    """A feature object as features write them: ocpp's decorators, call_result dataclasses."""

    def __init__(self, link: Link | None = None) -> None:
        self.link = link
        self.release_reset = asyncio.Event()
        self.config: dict[str, str] = {}

    @on(Action.change_configuration)
    async def on_change_configuration(
        self, key: str, value: str
    ) -> call_result.ChangeConfiguration:
        self.config[key] = value
        return call_result.ChangeConfiguration(status="Accepted")

    @on(Action.reset)
    async def on_reset(self, type: str) -> call_result.Reset:
        await self.release_reset.wait()  # a slow handler
        return call_result.Reset(status="Accepted")

    @on(Action.unlock_connector)
    def on_unlock_connector(self, connector_id: int) -> call_result.UnlockConnector:
        if connector_id == 98:
            raise RuntimeError("the handler has a bug")
        if connector_id == 99:
            raise PropertyConstraintViolationError(description="no such connector")
        return call_result.UnlockConnector(status="Unlocked")

    @on(Action.clear_cache)
    def on_clear_cache(self) -> call_result.ClearCache:
        return call_result.ClearCache(status="Accepted")

    @after(Action.clear_cache)
    async def after_clear_cache(self) -> None:
        if self.link is not None:
            await self.link.call("Heartbeat", {})


async def test_connects_to_url_plus_id_with_ocpp16(raw_csms, make_link):
    link = make_link(raw_csms.url + "/", "CP 7")
    conn = await raw_csms.accept()
    await link.wait_connected(2)
    assert conn.path == "/ocpp/CP%207"
    assert conn.ws.subprotocol == "ocpp1.6"
    assert "Authorization" not in conn.headers
    assert link.connected


async def test_basic_auth_header_for_security_profiles_1_and_2(raw_csms, make_link):
    make_link(raw_csms.url, "CP1", basic_auth=("CP1", "s3cret:pw"))
    conn = await raw_csms.accept()
    token = base64.b64encode(b"CP1:s3cret:pw").decode()
    assert conn.headers["Authorization"] == f"Basic {token}"


async def test_server_without_ocpp16_is_refused_and_retried(new_raw_csms, make_link, caplog):
    csms = await new_raw_csms(subprotocols=[])  # selects no subprotocol
    link = make_link(csms.url)
    first = await csms.accept()
    second = await csms.accept()  # retried after backoff
    async with asyncio.timeout(2):
        await first.closed.wait()
    assert not link.connected
    assert second is not first
    assert any("did not select ocpp1.6" in r.getMessage() for r in caplog.records)


async def test_call_round_trip(connected):
    link, conn = connected
    task = asyncio.create_task(link.call("Heartbeat", {}))
    frame = await conn.expect_call("Heartbeat")
    assert frame[3] == {}
    assert len(frame[1]) == 36  # uuid4
    await conn.send([3, frame[1], {"currentTime": NOW}])
    assert await task == {"currentTime": NOW}


async def test_callerror_raises_with_code(connected):
    link, conn = connected
    task = asyncio.create_task(link.call("Heartbeat", {}))
    frame = await conn.expect_call("Heartbeat")
    await conn.send([4, frame[1], "SecurityError", "go away", {"why": "no"}])
    with pytest.raises(CallErrorReceived) as err:
        await task
    assert (err.value.code, err.value.description, err.value.details) == (
        "SecurityError",
        "go away",
        {"why": "no"},
    )


async def test_no_answer_times_out(connected):
    link, conn = connected
    with pytest.raises(CallTimeout) as err:
        await link.call("Heartbeat", {}, timeout=0.2)
    assert isinstance(err.value, asyncio.TimeoutError)
    # the next call is not confused by the late answer to the first one
    late = await conn.expect_call("Heartbeat")
    task = asyncio.create_task(link.call("Heartbeat", {}))
    frame = await conn.expect_call("Heartbeat")
    await conn.send([3, late[1], {"currentTime": "2000-01-01T00:00:00Z"}])
    await conn.send([3, frame[1], {"currentTime": NOW}])
    assert await task == {"currentTime": NOW}


async def test_invalid_callresult_is_raised(connected):
    link, conn = connected
    task = asyncio.create_task(
        link.call("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
    )
    frame = await conn.expect_call("BootNotification")
    await conn.send([3, frame[1], {"status": "Maybe", "currentTime": NOW, "interval": 10}])
    with pytest.raises(CallResultInvalid) as err:
        await task
    assert err.value.payload["status"] == "Maybe"


async def test_our_own_invalid_payload_is_never_sent(connected):
    link, conn = connected
    with pytest.raises(ValueError):
        await link.call("Heartbeat", {"bogus": 1})
    with pytest.raises(asyncio.TimeoutError):
        await conn.recv(timeout=0.1)


async def test_offline_call_fails_at_once(make_link):
    link = make_link("ws://127.0.0.1:9/ocpp")  # nothing listens on the discard port
    with pytest.raises(NotConnected):
        await link.call("Heartbeat", {})


async def test_drop_while_waiting_raises_not_connected(connected):
    link, conn = connected
    task = asyncio.create_task(link.call("Heartbeat", {}))
    await conn.expect_call("Heartbeat")
    conn.ws.transport.abort()
    with pytest.raises(NotConnected):
        await task


async def test_one_outstanding_call_at_a_time(connected):
    link, conn = connected
    first = asyncio.create_task(link.call("Heartbeat", {}))
    second = asyncio.create_task(link.call("Heartbeat", {}))
    f1 = await conn.expect_call("Heartbeat")
    with pytest.raises(asyncio.TimeoutError):
        await conn.recv(timeout=0.1)  # the second waits for the first's answer
    await conn.send([3, f1[1], {"currentTime": NOW}])
    f2 = await conn.expect_call("Heartbeat")
    await conn.send([3, f2[1], {"currentTime": NOW}])
    assert await first == await second == {"currentTime": NOW}


async def test_csms_request_answered_while_our_call_waits(connected):
    link, conn = connected
    station = Station()
    link.register(station)
    ours = asyncio.create_task(link.call("Heartbeat", {}))
    hb = await conn.expect_call("Heartbeat")
    await conn.send([2, "csms-1", "ChangeConfiguration", {"key": "K", "value": "V"}])
    assert await conn.response_to("csms-1") == [3, "csms-1", {"status": "Accepted"}]
    assert station.config == {"K": "V"}
    await conn.send([3, hb[1], {"currentTime": NOW}])
    assert await ours == {"currentTime": NOW}


async def test_slow_handler_does_not_block_other_calls(connected):
    link, conn = connected
    station = Station()
    link.register(station)
    await conn.send([2, "slow", "Reset", {"type": "Soft"}])
    await conn.send([2, "quick", "ClearCache", {}])
    assert await conn.recv() == [3, "quick", {"status": "Accepted"}]
    station.release_reset.set()
    assert await conn.response_to("slow") == [3, "slow", {"status": "Accepted"}]


async def test_handler_errors_become_callerrors_and_the_link_stays_up(connected):
    link, conn = connected
    link.register(Station())
    await conn.send([2, "e1", "UnlockConnector", {"connectorId": 99}])
    e1 = await conn.response_to("e1")
    assert e1[:4] == [4, "e1", "PropertyConstraintViolation", "no such connector"]
    await conn.send([2, "e2", "UnlockConnector", {"connectorId": 98}])
    e2 = await conn.response_to("e2")
    assert e2[:3] == [4, "e2", "InternalError"]
    assert "bug" not in json.dumps(e2)  # no internals leaked to the CSMS
    await conn.send([2, "ok", "UnlockConnector", {"connectorId": 1}])
    assert await conn.response_to("ok") == [3, "ok", {"status": "Unlocked"}]
    assert link.connected


async def test_after_handler_runs_once_the_result_is_sent(connected):
    link, conn = connected
    link.register(Station(link))
    await conn.send([2, "cc", "ClearCache", {}])
    assert await conn.recv() == [3, "cc", {"status": "Accepted"}]
    hb = await conn.expect_call("Heartbeat")  # sent by the @after hook, after the result
    await conn.send([3, hb[1], {"currentTime": NOW}])


async def test_two_on_handlers_for_one_action_is_a_wiring_error(connected):
    link, _ = connected
    link.register(Station())
    with pytest.raises(ValueError):
        link.register(Station())


async def test_out_of_order_and_duplicate_results_are_dropped(connected):
    link, conn = connected
    task = asyncio.create_task(link.call("Heartbeat", {}))
    frame = await conn.expect_call("Heartbeat")
    await conn.send([3, "someone-else", {"currentTime": "1999-01-01T00:00:00Z"}])
    await conn.send([4, "another", "GenericError", "", {}])
    await conn.send([3, frame[1], {"currentTime": NOW}])
    await conn.send([3, frame[1], {"currentTime": "1999-01-01T00:00:00Z"}])  # duplicate
    assert await task == {"currentTime": NOW}
    task = asyncio.create_task(link.call("Heartbeat", {}))
    frame2 = await conn.expect_call("Heartbeat")
    await conn.send([3, frame2[1], {"currentTime": "2026-02-02T00:00:00Z"}])
    assert await task == {"currentTime": "2026-02-02T00:00:00Z"}


async def test_every_frame_goes_to_the_frame_log(raw_csms, make_link):
    frame_log = FrameLog()
    link = make_link(raw_csms.url, frame_log=frame_log)
    conn = await raw_csms.accept()
    await link.wait_connected(2)
    task = asyncio.create_task(link.call("Heartbeat", {}))
    frame = await conn.expect_call("Heartbeat")
    await conn.send([3, frame[1], {"currentTime": NOW}])
    await task
    await conn.send("nonsense")
    await conn.recv()
    logged = [(e["direction"], e["frame"]) for e in frame_log.tail(10)]
    assert logged == [
        ("out", json.dumps(frame, separators=(",", ":"))),
        ("in", json.dumps([3, frame[1], {"currentTime": NOW}])),
        ("in", "nonsense"),
        ("out", '[4,"-1","FormationViolation","frame is not valid JSON",{}]'),
    ]


async def test_connect_and_disconnect_listeners(raw_csms, make_link):
    events: list[str] = []
    second_up = asyncio.Event()

    async def up() -> None:
        events.append("up")
        if events.count("up") == 2:
            second_up.set()

    async def down() -> None:
        events.append("down")

    link = make_link(raw_csms.url)
    link.add_connect_listener(up)
    link.add_disconnect_listener(down)
    conn = await raw_csms.accept()
    await link.wait_connected(2)
    await conn.ws.close()
    await raw_csms.accept()
    await link.wait_connected(2)
    async with asyncio.timeout(2):
        await second_up.wait()
    assert events == ["up", "down", "up"]


async def test_reconnects_after_the_server_closes(connected, raw_csms):
    link, conn = connected
    await conn.ws.close(1001, "CSMS restarting")
    conn2 = await raw_csms.accept()
    await link.wait_connected(2)
    task = asyncio.create_task(link.call("Heartbeat", {}))
    frame = await conn2.expect_call("Heartbeat")
    await conn2.send([3, frame[1], {"currentTime": NOW}])
    assert await task == {"currentTime": NOW}


async def test_reconnects_after_the_server_process_dies(new_raw_csms, make_link):
    csms = await new_raw_csms()
    port = csms.port
    down = asyncio.Event()
    link = make_link(csms.url)
    link.add_disconnect_listener(down.set)
    await csms.accept()
    await link.wait_connected(2)
    await csms.kill()
    async with asyncio.timeout(2):
        await down.wait()
    assert not link.connected
    await asyncio.sleep(0.3)  # a few refused attempts while it is down
    reborn = await new_raw_csms(port=port)
    await reborn.accept()
    await link.wait_connected(2)


async def test_dead_link_is_detected_by_ping(raw_csms, make_link, proxy_to):
    proxy = await proxy_to(raw_csms.port)
    down = asyncio.Event()
    link = make_link(f"ws://127.0.0.1:{proxy.port}/ocpp", ping_interval=lambda: 0.1)
    link.add_disconnect_listener(down.set)
    await raw_csms.accept()
    await link.wait_connected(2)
    await asyncio.sleep(0.25)  # pings answered: still up
    assert link.connected and not down.is_set()
    proxy.go_silent()
    async with asyncio.timeout(2):
        await down.wait()
    proxy.silent = False  # the network is back: a new connection gets through
    await raw_csms.accept()
    await link.wait_connected(2)


async def test_blocked_drops_without_close_handshake_and_holds_down(raw_csms, make_link):
    link = make_link(raw_csms.url, backoff_base=5.0, backoff_cap=10.0)
    conn = await raw_csms.accept()
    await link.wait_connected(2)
    link.set_blocked(True)
    async with asyncio.timeout(2):
        await conn.closed.wait()
    assert conn.ws.close_code == 1006  # abnormal closure: no close frame, like a cut cable
    assert not link.connected
    with pytest.raises(NotConnected):
        await link.call("Heartbeat", {})
    with pytest.raises(asyncio.TimeoutError):
        await raw_csms.accept(timeout=0.4)  # backoff would have retried by now
    link.set_blocked(False)
    await raw_csms.accept(timeout=1)  # at once, not after the 5 s backoff
    await link.wait_connected(1)
    assert link.status()["blocked"] is False


async def test_quick_unblock_skips_the_backoff(raw_csms, make_link):
    link = make_link(raw_csms.url, backoff_base=5.0, backoff_cap=10.0)
    await raw_csms.accept()
    await link.wait_connected(2)
    link.set_blocked(True)
    link.set_blocked(False)
    await raw_csms.accept(timeout=1)
    await link.wait_connected(1)


async def test_status_tells_why_it_is_offline(new_raw_csms, make_link):
    csms = await new_raw_csms()
    port = csms.port
    await csms.stop()
    link = make_link(f"ws://127.0.0.1:{port}/ocpp")
    async with asyncio.timeout(2):
        while link.status()["failed_attempts"] < 2:
            await asyncio.sleep(0.02)
    status = link.status()
    assert status["connected"] is False and status["connected_since"] is None
    assert "ConnectionRefused" in status["last_error"]
    await new_raw_csms(port=port)
    await link.wait_connected(2)
    status = link.status()
    assert status["connected"] and status["last_error"] is None
    assert status["connected_since"].endswith("Z")


async def test_close_ends_run(raw_csms):
    link = Link(
        url=raw_csms.url,
        charge_point_id="CP1",
        clock=SystemClock(),
        frame_log=FrameLog(),
        ping_interval=lambda: 0,
    )
    task = asyncio.create_task(link.run())
    conn = await raw_csms.accept()
    await link.wait_connected(2)
    await link.close()
    async with asyncio.timeout(2):
        await task
        await conn.closed.wait()
    assert conn.ws.close_code == 1001
    assert not link.connected
