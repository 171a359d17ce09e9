"""Remote Trigger: TriggerMessage answered first, the message sent after, per connector or all."""

from __future__ import annotations

import json

import pytest

from chargerd.features.boot import BootService, Identity
from chargerd.features.trigger import TriggerService
from chargerd.link.frames import InboundCall
from chargerd.link.router import Router

NOW = "2026-03-01T12:00:00.000Z"


@pytest.fixture
def bench(make_bench):
    return make_bench(connectors=2)


def trigger_for(b) -> tuple[TriggerService, Router]:
    boot = BootService(
        link=b.link,
        clock=b.clock,
        identity=Identity("chargerd", "test", "0.1.0"),
        config=b.config,
        link_errors=(ConnectionError,),
        current_statuses=lambda: [],
    )
    svc = TriggerService(
        supervisor=b.supervisor,
        config=b.config,
        clock=b.clock,
        call=b.link.call,
        send_boot=boot.send_boot_notification,
        send_heartbeat=boot.send_heartbeat,
        station_status=lambda: b.supervisor.station_status(frozenset()),
        errors=(ConnectionError,),
    )
    router = Router()
    router.register(svc)
    b.link.default.update(
        {
            "BootNotification": {"status": "Accepted", "currentTime": NOW, "interval": 77},
            "Heartbeat": {"currentTime": NOW},
            "StatusNotification": {},
            "MeterValues": {},
            "DiagnosticsStatusNotification": {},
            "FirmwareStatusNotification": {},
        }
    )
    return svc, router


async def trigger(router: Router, message: str, connector: int | None = None):
    """The answer's status, and what was sent before and after the @after hook ran."""
    payload = {"requestedMessage": message}
    if connector is not None:
        payload["connectorId"] = connector
    answer = await router.answer(InboundCall("t1", "TriggerMessage", payload))
    frame = json.loads(answer.frame)
    assert frame[0] == 3, frame
    return frame[2]["status"], answer.after


@pytest.mark.parametrize(
    "message, connector, expected",
    [
        ("BootNotification", None, "Accepted"),
        ("DiagnosticsStatusNotification", None, "Accepted"),
        ("FirmwareStatusNotification", None, "Accepted"),
        ("Heartbeat", None, "Accepted"),
        ("MeterValues", None, "Accepted"),
        ("MeterValues", 2, "Accepted"),
        ("StatusNotification", None, "Accepted"),
        ("StatusNotification", 1, "Accepted"),
        ("StatusNotification", 0, "Accepted"),
        ("StatusNotification", 3, "Rejected"),
        ("MeterValues", 9, "Rejected"),
    ],
)
async def test_answers(bench, message, connector, expected):
    _, router = trigger_for(bench)
    status, _after = await trigger(router, message, connector)
    assert status == expected


async def test_a_message_the_station_cannot_send_is_not_implemented(bench):
    svc, _ = trigger_for(bench)
    assert svc.decide("LogStatusNotification", None) == "NotImplemented"
    assert svc.decide("SignChargePointCertificate", None) == "NotImplemented"


async def test_meter_values_of_a_silent_meter_are_rejected(bench):
    _, router = trigger_for(bench)
    bench.sim.fault("meter_silent", True, connector=1)
    await bench.tick()
    assert (await trigger(router, "MeterValues", 1))[0] == "Rejected"
    assert (await trigger(router, "MeterValues", 2))[0] == "Accepted"


@pytest.mark.parametrize(
    "message, action, payload",
    [
        ("BootNotification", "BootNotification", {"chargePointVendor": "chargerd"}),
        ("Heartbeat", "Heartbeat", {}),
        ("DiagnosticsStatusNotification", "DiagnosticsStatusNotification", {"status": "Idle"}),
        ("FirmwareStatusNotification", "FirmwareStatusNotification", {"status": "Idle"}),
    ],
)
async def test_the_message_goes_out_after_the_answer(bench, message, action, payload):
    _, router = trigger_for(bench)
    status, after = await trigger(router, message)
    assert status == "Accepted" and bench.link.calls == []  # nothing before the answer
    await after()
    assert [a for a, _ in bench.link.calls] == [action]
    sent = bench.link.calls[0][1]
    assert {k: sent[k] for k in payload} == payload


async def test_a_triggered_heartbeat_and_boot_adopt_the_csms_time(bench):
    _, router = trigger_for(bench)
    await (await trigger(router, "Heartbeat"))[1]()
    assert bench.clock.now().isoformat().startswith("2026-03-01T12:00")
    await (await trigger(router, "BootNotification"))[1]()
    assert bench.config.get("HeartbeatInterval") == 77


async def test_status_notification_for_all_and_for_one_connector(bench):
    _, router = trigger_for(bench)
    bench.sim.plug(2)
    await bench.tick()
    await (await trigger(router, "StatusNotification"))[1]()
    got = [(p["connectorId"], p["status"]) for _, p in bench.link.sent("StatusNotification")]
    assert got == [(0, "Available"), (1, "Available"), (2, "Preparing")]
    bench.link.calls.clear()
    await (await trigger(router, "StatusNotification", 2))[1]()
    got = [(p["connectorId"], p["status"]) for _, p in bench.link.sent("StatusNotification")]
    assert got == [(2, "Preparing")]
    bench.link.calls.clear()
    await (await trigger(router, "StatusNotification", 0))[1]()
    assert [p["connectorId"] for _, p in bench.link.sent("StatusNotification")] == [0]


async def test_meter_values_carry_the_transaction_and_the_trigger_context(bench):
    _, router = trigger_for(bench)
    bench.sim.plug(1)
    bench.supervisor.grant(bench.conn(1), id_tag="AAAA", parent_id_tag=None)
    await bench.tick()
    bench.conn(1).tx.transaction_id = 42
    bench.sim.charge(1)
    await bench.run_for(10)
    await (await trigger(router, "MeterValues"))[1]()
    sent = [p for _, p in bench.link.sent("MeterValues")]
    assert [(p["connectorId"], p.get("transactionId")) for p in sent] == [(1, 42), (2, None)]
    values = sent[0]["meterValue"][0]["sampledValue"]
    assert values[0]["context"] == "Trigger" and float(values[0]["value"]) > 0


async def test_a_link_failure_while_sending_is_logged_not_raised(bench):
    _, router = trigger_for(bench)
    bench.link.default["Heartbeat"] = ConnectionError("link down")
    bench.link.default["FirmwareStatusNotification"] = ConnectionError("link down")
    await (await trigger(router, "Heartbeat"))[1]()
    await (await trigger(router, "FirmwareStatusNotification"))[1]()
