"""The Link against the bench CSMS (an independent OCPP implementation: mobilityhouse's)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from chargerd.bench.csms import BenchCsms, CsmsCallError
from chargerd.link import CallErrorReceived, CallTimeout

BOOT = {"chargePointVendor": "Acme", "chargePointModel": "Pi-AC-22"}


class Configurable:
    def __init__(self) -> None:
        self.config: dict[str, str] = {}

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> call_result.ChangeConfiguration:
        self.config[key] = value
        return call_result.ChangeConfiguration(status="Accepted")


@pytest.fixture
async def bench():
    csms = BenchCsms()
    await csms.start()
    yield csms
    await csms.stop()


@pytest.fixture
async def station(bench, make_link):
    link = make_link(bench.url, "CP-1")
    await bench.wait_connected("CP-1", timeout=2)
    await link.wait_connected(2)
    return link


async def test_boot_round_trip(bench, station):
    bench.heartbeat_interval = 42
    result = await station.call("BootNotification", BOOT)
    assert result["status"] == "Accepted" and result["interval"] == 42
    [rec] = await bench.wait_for("BootNotification", timeout=1)
    assert (rec.cp_id, rec.payload) == ("CP-1", BOOT)
    assert len(rec.unique_id) == 36
    bench.boot_status = "Pending"
    assert (await station.call("BootNotification", BOOT))["status"] == "Pending"


async def test_csms_to_station_call(bench, station):
    feature = Configurable()
    station.register(feature)
    answer = await bench.call("CP-1", "ChangeConfiguration", {"key": "K", "value": "V"}, timeout=2)
    assert answer == {"status": "Accepted"}
    assert feature.config == {"K": "V"}
    with pytest.raises(CsmsCallError) as err:
        await bench.call("CP-1", "ReserveNow", {}, timeout=2)
    assert err.value.code == "NotSupported"


async def test_cards_and_transaction_ids(bench, station):
    bench.cards = {
        "GOOD": "Accepted",
        "CHILD": ("Accepted", "PARENT"),
        "OLD": {"status": "Expired"},
    }
    assert await station.call("Authorize", {"idTag": "GOOD"}) == {
        "idTagInfo": {"status": "Accepted"}
    }
    assert (await station.call("Authorize", {"idTag": "CHILD"}))["idTagInfo"] == {
        "status": "Accepted",
        "parentIdTag": "PARENT",
    }
    assert (await station.call("Authorize", {"idTag": "OLD"}))["idTagInfo"]["status"] == "Expired"
    assert (await station.call("Authorize", {"idTag": "NOPE"}))["idTagInfo"]["status"] == "Invalid"
    bench.accept_all_cards = True
    assert (await station.call("Authorize", {"idTag": "NOPE"}))["idTagInfo"]["status"] == "Accepted"

    start = {
        "connectorId": 1,
        "idTag": "GOOD",
        "meterStart": 0,
        "timestamp": "2026-01-01T00:00:00Z",
    }
    first = await station.call("StartTransaction", start)
    second = await station.call("StartTransaction", start)
    assert (first["transactionId"], second["transactionId"]) == (1, 2)
    bench.start_transaction_status = "ConcurrentTx"
    third = await station.call("StartTransaction", start)
    assert third == {"transactionId": 3, "idTagInfo": {"status": "ConcurrentTx"}}
    stop = {"transactionId": 3, "meterStop": 10, "timestamp": "2026-01-01T01:00:00Z"}
    assert await station.call("StopTransaction", stop) == {}


async def test_hang_times_out_and_callerror_raises(bench, station):
    bench.hang = True
    with pytest.raises(CallTimeout):
        await station.call("Heartbeat", {}, timeout=0.2)
    assert [r.action for r in bench.received] == ["Heartbeat"]  # received, never answered
    bench.hang = False
    bench.callerror_actions = {"Heartbeat"}
    with pytest.raises(CallErrorReceived) as err:
        await station.call("Heartbeat", {})
    assert err.value.code == "InternalError"
    bench.callerror_actions = set()
    assert "currentTime" in await station.call("Heartbeat", {})


async def test_slow_answers_still_arrive(bench, station):
    bench.delay_s = 0.2
    assert "currentTime" in await station.call("Heartbeat", {}, timeout=2)


async def test_raw_frames_and_their_answers(bench, station):
    await bench.send_raw("CP-1", "garbage")
    answer = await bench.recv_raw_response("CP-1", "-1", timeout=2)
    assert answer[:3] == [4, "-1", "FormationViolation"]
    await bench.send_raw("CP-1", '[2,"raw-1","MakeCoffee",{}]')
    assert (await bench.recv_raw_response("CP-1", "raw-1", timeout=2))[2] == "NotImplemented"
    directions = [f.direction for f in bench.frames if f.cp_id == "CP-1"]
    assert directions == ["out", "in", "out", "in"]


async def test_drop_makes_the_station_reconnect(bench, station):
    await bench.drop("CP-1")
    await bench.wait_connected("CP-1", timeout=2, count=2)
    await station.wait_connected(2)
    assert "currentTime" in await station.call("Heartbeat", {})


async def test_cli_starts_and_answers(make_link, tmp_path):
    log_file = tmp_path / "frames.log"
    args = ["--port", "0", "--cards", "A1,B2", "--boot", "Pending", "--heartbeat", "7"]
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "chargerd.bench.csms", *args, "--log-file", str(log_file)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(10):
            banner = (await proc.stdout.readline()).decode()
        url = banner.split()[-1]
        assert url.startswith("ws://127.0.0.1:")
        link = make_link(url + "ocpp", "CLI-1")
        await link.wait_connected(5)
        boot = await link.call("BootNotification", BOOT)
        assert (boot["status"], boot["interval"]) == ("Pending", 7)
        auth = await link.call("Authorize", {"idTag": "B2"})
        assert auth["idTagInfo"]["status"] == "Accepted"
        async with asyncio.timeout(5):
            line = (await proc.stdout.readline()).decode()
        _time, cp_id, direction, frame = line.rstrip("\n").split(" ", 3)
        assert (cp_id, direction) == ("CLI-1", "in")
        assert json.loads(frame)[2] == "BootNotification"
        assert "CLI-1 out" in log_file.read_text()
        await link.close()
    finally:
        proc.terminate()
        async with asyncio.timeout(5):
            await proc.wait()
