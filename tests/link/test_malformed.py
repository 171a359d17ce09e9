"""What the CSMS gets back for broken or unwelcome frames, over a real websocket."""

from __future__ import annotations

import asyncio
import json

import pytest
from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action


class Handlers:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> call_result.ChangeConfiguration:
        return call_result.ChangeConfiguration(status="Accepted")

    @on(Action.reset)
    async def on_reset(self, type: str) -> call_result.Reset:
        await self.release.wait()
        return call_result.Reset(status="Accepted")

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list | None = None) -> call_result.GetConfiguration:
        return call_result.GetConfiguration(
            configuration_key=[{"key": "K", "readonly": True, "value": 5}]
        )


@pytest.fixture
async def station(connected):
    link, conn = connected
    link.register(Handlers())
    return link, conn


@pytest.mark.parametrize(
    ("text", "unique_id", "code"),
    [
        ("this is not json", "-1", "FormationViolation"),
        ('[2,"t1","ChangeConfiguration",{"key":', "t1", "FormationViolation"),
        ('{"not": "an array"}', "-1", "FormationViolation"),
        ('[2,"t2","ChangeConfiguration"]', "t2", "ProtocolError"),
        ('[2,"t3","ChangeConfiguration",{},"extra"]', "t3", "FormationViolation"),
        ('[2,"t4","ChangeConfiguration",["k","v"]]', "t4", "FormationViolation"),
        ('[2,"t5","MakeCoffee",{}]', "t5", "NotImplemented"),
        ('[2,"t6","ReserveNow",{}]', "t6", "NotSupported"),  # known in 1.6, not handled here
        ('[2,"t7","ChangeConfiguration",{"key":1,"value":"v"}]', "t7", "TypeConstraintViolation"),
        ('[2,"t8","ChangeConfiguration",{"key":"k"}]', "t8", "ProtocolError"),
        (
            '[2,"t9","ChangeConfiguration",{"key":"k","value":"v","x":0}]',
            "t9",
            "FormationViolation",
        ),
        ('[2,"t10","Reset",{"type":"Sideways"}]', "t10", "FormationViolation"),
    ],
)
async def test_malformed_call_gets_callerror(station, text, unique_id, code):
    _, conn = station
    await conn.send(text)
    answer = await conn.recv()
    assert answer[:3] == [4, unique_id, code]
    assert isinstance(answer[3], str) and isinstance(answer[4], dict)


@pytest.mark.parametrize(
    "text",
    ['[7,"u1","Reset",{}]', '[3,"u1"]', '[4,"u1","GenericError"]', '[3,"u1",{"bro'],
)
async def test_ignored_frames_get_no_answer(station, text):
    link, conn = station
    await conn.send(text)
    await conn.send([2, "after", "ChangeConfiguration", {"key": "k", "value": "v"}])
    assert await conn.recv() == [3, "after", {"status": "Accepted"}]  # nothing for u1 before it
    assert link.connected


async def test_our_invalid_result_is_an_internal_error_not_the_csms_fault(station):
    _, conn = station
    await conn.send([2, "g1", "GetConfiguration", {}])  # handler answers value 5, not a string
    answer = await conn.recv()
    assert answer[:3] == [4, "g1", "InternalError"]


async def test_oversize_frame_is_refused_unparsed(raw_csms, make_link):
    link = make_link(raw_csms.url, max_frame_bytes=300)
    link.register(Handlers())
    conn = await raw_csms.accept()
    await link.wait_connected(2)
    big = json.dumps([2, "big-1", "DataTransfer", {"vendorId": "x", "data": "a" * 500}])
    await conn.send(big)
    answer = await conn.recv()
    assert answer[:4] == [4, "big-1", "FormationViolation", "frame too large"]
    tail = link._frame_log.tail(2)
    assert tail[0]["direction"] == "in" and len(tail[0]["frame"]) < len(big)  # not stored whole
    assert link.connected


async def test_frame_past_the_hard_ceiling_closes_and_reconnects(raw_csms, make_link):
    link = make_link(raw_csms.url, max_frame_bytes=100)
    conn = await raw_csms.accept()
    await link.wait_connected(2)
    await conn.send(json.dumps([2, "huge", "DataTransfer", {"vendorId": "x", "data": "a" * 1000}]))
    async with asyncio.timeout(2):
        await conn.closed.wait()
    assert conn.ws.close_code == 1009  # message too big
    await raw_csms.accept()
    await link.wait_connected(2)


async def test_flood_of_concurrent_calls_is_bounded(station):
    link, conn = station
    link.max_inbound_calls = 2
    for i in range(3):
        await conn.send([2, f"r{i}", "Reset", {"type": "Soft"}])
    assert (await conn.recv())[:3] == [4, "r2", "InternalError"]  # the third is refused


async def test_ping_interval_is_reread_while_connected(raw_csms, make_link, proxy_to):
    proxy = await proxy_to(raw_csms.port)
    interval = {"s": 0.0}
    down = asyncio.Event()
    link = make_link(f"ws://127.0.0.1:{proxy.port}/ocpp", ping_interval=lambda: interval["s"])
    link.ping_recheck_s = 0.05
    link.add_disconnect_listener(down.set)
    await raw_csms.accept()
    await link.wait_connected(2)
    proxy.go_silent()
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.3):
            await down.wait()  # pings off: a silent link goes unnoticed
    interval["s"] = 0.1  # ChangeConfiguration WebSocketPingInterval=...
    async with asyncio.timeout(2):
        await down.wait()
