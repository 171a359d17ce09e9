"""Meter values on the wire, clock alignment, the periodic task and the sampler."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from ocpp.messages import Call, validate_payload

from chargerd.clock import iso
from chargerd.features.metering import (
    CURRENT,
    ENERGY,
    ENERGY_INTERVAL,
    FREQUENCY,
    OFFERED,
    POWER,
    SUPPORTED_MEASURANDS,
    VOLTAGE,
    MeterSampler,
    PeriodicTask,
    displayed_power_w,
    meter_value,
    next_aligned,
    parse_measurands,
    sampled_values,
)
from chargerd.link.frames import check_outgoing_call
from hal.interfaces import MeterSample

THREE_PHASE = MeterSample(
    energy_wh=12345.678,
    power_w=22080.0,
    voltage_v=(230.04, 229.5, 231.0),
    current_a=(32.0, 31.996, 32.004),
    power_per_phase_w=(7360.0, 7360.0, 7360.0),
    frequency_hz=49.987,
)
ONE_PHASE_METER = MeterSample(
    energy_wh=10.0, power_w=3680.0, voltage_v=(230.0,), current_a=(16.0,), frequency_hz=50.0
)
T = datetime(2026, 3, 1, 12, 0, 5, 250000, tzinfo=UTC)


def item(measurand, value, unit, phase=None, context="Sample.Periodic"):
    d = {
        "value": value,
        "context": context,
        "format": "Raw",
        "measurand": measurand,
        "location": "Outlet",
        "unit": unit,
    }
    if phase:
        d["phase"] = phase
    return d


# -- wire shapes --------------------------------------------------------------------------


def test_energy_register_is_watt_hours_with_one_decimal_and_no_phase():
    assert sampled_values(THREE_PHASE, [ENERGY], context="Sample.Periodic") == [
        item(ENERGY, "12345.7", "Wh")
    ]


def test_power_is_the_total_in_watts_without_a_phase():
    assert sampled_values(THREE_PHASE, [POWER], context="Sample.Clock") == [
        item(POWER, "22080.0", "W", context="Sample.Clock")
    ]


def test_current_is_reported_per_phase_l1_to_l3_with_two_decimals():
    assert sampled_values(THREE_PHASE, [CURRENT], context="Sample.Periodic") == [
        item(CURRENT, "32.00", "A", "L1"),
        item(CURRENT, "32.00", "A", "L2"),
        item(CURRENT, "32.00", "A", "L3"),
    ]


def test_voltage_is_reported_phase_to_neutral():
    assert sampled_values(THREE_PHASE, [VOLTAGE], context="Sample.Periodic") == [
        item(VOLTAGE, "230.0", "V", "L1-N"),
        item(VOLTAGE, "229.5", "V", "L2-N"),
        item(VOLTAGE, "231.0", "V", "L3-N"),
    ]


def test_a_single_phase_meter_reports_only_l1():
    values = sampled_values(ONE_PHASE_METER, [CURRENT, VOLTAGE], context="Sample.Periodic")
    assert [(v["measurand"], v["phase"]) for v in values] == [(CURRENT, "L1"), (VOLTAGE, "L1-N")]


def test_offered_current_is_what_the_pilot_offers_and_zero_without_pwm():
    assert sampled_values(
        THREE_PHASE, [OFFERED], context="Transaction.End", offered_current_a=16
    ) == [item(OFFERED, "16.0", "A", context="Transaction.End")]
    assert sampled_values(THREE_PHASE, [OFFERED], context="Sample.Periodic") == [
        item(OFFERED, "0.0", "A")
    ]


def test_frequency_has_no_unit_because_ocpp_1_6_has_none_for_hertz():
    (freq,) = sampled_values(THREE_PHASE, [FREQUENCY], context="Sample.Periodic")
    assert freq == {
        "value": "49.99",
        "context": "Sample.Periodic",
        "format": "Raw",
        "measurand": FREQUENCY,
        "location": "Outlet",
    }


def test_values_a_meter_does_not_deliver_are_left_out():
    bare = MeterSample(energy_wh=5.0, current_a=(None, 3.0, None))
    values = sampled_values(
        bare, [ENERGY, POWER, CURRENT, VOLTAGE, FREQUENCY], context="Sample.Periodic"
    )
    assert values == [item(ENERGY, "5.0", "Wh"), item(CURRENT, "3.00", "A", "L2")]


def test_measurands_come_out_in_the_configured_order():
    values = sampled_values(THREE_PHASE, [VOLTAGE, ENERGY, POWER], context="Sample.Periodic")
    assert [v["measurand"] for v in values] == [VOLTAGE] * 3 + [ENERGY, POWER]


def test_meter_value_has_an_iso_utc_millisecond_timestamp():
    mv = meter_value(THREE_PHASE, [ENERGY], context="Sample.Clock", timestamp=T)
    assert mv == {
        "timestamp": "2026-03-01T12:00:05.250Z",
        "sampledValue": [item(ENERGY, "12345.7", "Wh", context="Sample.Clock")],
    }


def test_interval_energy_follows_the_register_rules_and_is_left_out_when_unknown():
    values = sampled_values(
        THREE_PHASE, [ENERGY, ENERGY_INTERVAL], context="Sample.Clock", interval_energy_wh=368.04
    )
    assert values == [
        item(ENERGY, "12345.7", "Wh", context="Sample.Clock"),
        item(ENERGY_INTERVAL, "368.0", "Wh", context="Sample.Clock"),  # no phase, Wh
    ]
    assert sampled_values(THREE_PHASE, [ENERGY_INTERVAL], context="Sample.Clock") == []
    assert ENERGY_INTERVAL in SUPPORTED_MEASURANDS  # so the measurand keys accept it


@pytest.mark.parametrize(
    "sample, closed, shown",
    [
        (THREE_PHASE, True, 22080.0),
        (THREE_PHASE, False, 0.0),  # a stale reading while the contactor is open
        (MeterSample(energy_wh=1, power_w=11040.0, current_a=(0.0, 0.02, 0.0)), True, 0.0),
        (MeterSample(energy_wh=1, power_w=3680.0), True, 3680.0),  # no currents: trust power
        (None, True, None),
    ],
)
def test_the_power_shown_is_zero_when_the_contactor_is_open_or_no_current_flows(
    sample, closed, shown
):
    assert displayed_power_w(sample, contactor_closed=closed) == shown


def test_parse_measurands_trims_and_skips_empty_items():
    assert parse_measurands(" Energy.Active.Import.Register , Voltage,") == [ENERGY, VOLTAGE]
    assert parse_measurands("") == []


@pytest.mark.parametrize(
    "context", ["Sample.Periodic", "Sample.Clock", "Transaction.Begin", "Transaction.End"]
)
async def test_the_ocpp_schema_accepts_meter_values_of_every_measurand(context):
    everything = sorted(SUPPORTED_MEASURANDS)
    payload = {
        "connectorId": 1,
        "transactionId": 7,
        "meterValue": [
            meter_value(
                THREE_PHASE,
                everything,
                context=context,
                timestamp=T,
                offered_current_a=32,
                interval_energy_wh=368.0,
            ),
            meter_value(ONE_PHASE_METER, everything, context=context, timestamp=T),
        ],
    }
    # The ocpp package's own schema check, and the link's (which the daemon runs).
    await validate_payload(Call("1", "MeterValues", payload), "1.6")
    await check_outgoing_call("MeterValues", payload)
    # and a StopTransaction carrying them as transactionData
    stop = {
        "transactionId": 7,
        "meterStop": 12346,
        "timestamp": iso(T),
        "reason": "Local",
        "transactionData": payload["meterValue"],
    }
    await check_outgoing_call("StopTransaction", stop)


async def test_the_schema_check_does_catch_a_bad_sampled_value():
    """The check above can fail: a unit OCPP 1.6 does not know is refused."""
    bad = item(FREQUENCY, "50.00", "Hz")
    payload = {"connectorId": 1, "meterValue": [{"timestamp": iso(T), "sampledValue": [bad]}]}
    with pytest.raises(Exception):  # noqa: B017 - any schema error will do
        await validate_payload(Call("1", "MeterValues", payload), "1.6")


# -- clock alignment ----------------------------------------------------------------------


def at(h, m=0, s=0, us=0, day=1):
    return datetime(2026, 3, day, h, m, s, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "interval", "expected"),
    [
        (at(0), 900, at(0, 15)),  # exactly midnight: the next one, not now
        (at(12), 900, at(12, 15)),  # on a boundary
        (at(12, 14, 59, 999000), 900, at(12, 15)),
        (at(12, 15, 0, 1000), 900, at(12, 30)),
        (at(23, 50), 900, at(0, day=2)),  # across midnight
        (at(23, 59, 59), 86400, at(0, day=2)),
        (at(0), 86400, at(0, day=2)),
        (at(10), 7 * 3600, at(14)),  # 7 h does not divide a day: 0, 7, 14, 21 ...
        (at(21, 30), 7 * 3600, at(0, day=2)),  # ... and starts again at midnight
        (at(23), 25000, at(0, day=2)),
    ],
)
def test_next_aligned(now, interval, expected):
    assert next_aligned(now, interval) == expected


def test_next_aligned_is_always_after_now_and_at_most_one_interval_away():
    now = at(0)
    for _ in range(500):
        for interval in (60, 900, 3600, 7 * 3600, 86400):
            nxt = next_aligned(now, interval)
            assert now < nxt <= now + timedelta(seconds=interval)
        now += timedelta(seconds=997.3)


# -- PeriodicTask -------------------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.event = asyncio.Event()

    async def tick(self) -> None:
        self.n += 1
        self.event.set()

    async def wait(self, n: int, timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout):
            while self.n < n:
                self.event.clear()
                await self.event.wait()


async def test_a_shorter_interval_applies_at_once_when_poked(clock):
    interval = [3600.0]
    counter = Counter()
    task = PeriodicTask("test", lambda: interval[0], counter.tick, clock)
    runner = asyncio.create_task(task.run())
    try:
        await asyncio.sleep(0.02)
        assert counter.n == 0
        interval[0] = 0.01
        task.poke()  # without it the hour-long wait would run out first
        await counter.wait(3)
    finally:
        runner.cancel()


async def test_a_zero_interval_stops_the_task_until_poked(clock):
    interval = [0.0]
    counter = Counter()
    task = PeriodicTask("test", lambda: interval[0], counter.tick, clock)
    runner = asyncio.create_task(task.run())
    try:
        await asyncio.sleep(0.05)
        assert counter.n == 0
        interval[0] = 0.01
        task.poke()
        await counter.wait(1)
    finally:
        runner.cancel()


async def test_a_failing_tick_does_not_end_the_task(clock, caplog):
    calls = []

    async def tick():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("meter exploded")

    task = PeriodicTask("flaky", lambda: 0.01, tick, clock)
    runner = asyncio.create_task(task.run())
    try:
        async with asyncio.timeout(2):
            while len(calls) < 3:
                await asyncio.sleep(0.01)
    finally:
        runner.cancel()
    assert "periodic task flaky failed" in caplog.text


# -- the sampler --------------------------------------------------------------------------


async def charging_bench(make_bench, **ocpp):
    b = make_bench(ocpp=ocpp)
    b.sim.plug(1)
    b.supervisor.grant(b.conn(1), id_tag="0A1B2C3D", parent_id_tag=None)
    await b.tick()
    b.sim.charge(1)
    await b.tick()
    assert b.conn(1).hw.contactor.closed
    return b


async def test_periodic_sample_queues_transaction_meter_values_and_persists_energy(make_bench):
    b = await charging_bench(
        make_bench,
        MeterValueSampleInterval=60,
        MeterValuesSampledData=f"{ENERGY},{POWER},{OFFERED}",
    )
    sampler = MeterSampler(
        supervisor=b.supervisor,
        transactions=b.transactions,
        config=b.config,
        clock=b.clock,
        send_live=lambda *a: pytest.fail("a transaction's values must not go live"),
    )
    b.clock.advance(60)  # 22.08 kW for a minute: 368 Wh
    await sampler.sample()
    rows = b.outbox_rows()
    assert [r["action"] for r in rows] == ["StartTransaction", "MeterValues"]
    mv = json.loads(rows[1]["payload"])
    assert mv["connectorId"] == 1
    (value,) = mv["meterValue"]
    assert value["timestamp"] == iso(b.clock.now())
    assert [(s["measurand"], s["value"], s["context"]) for s in value["sampledValue"]] == [
        (ENERGY, "368.0", "Sample.Periodic"),
        (POWER, "22080.0", "Sample.Periodic"),
        (OFFERED, "32.0", "Sample.Periodic"),
    ]
    (tx,) = b.tx_rows()
    assert tx["last_energy_wh"] == pytest.approx(368.0)
    assert tx["last_energy_time"] == iso(b.clock.now())


async def test_periodic_interval_energy_starts_at_meter_start_then_at_each_sample(make_bench):
    b = await charging_bench(
        make_bench, MeterValueSampleInterval=60, MeterValuesSampledData=f"{ENERGY_INTERVAL}"
    )
    sampler = MeterSampler(
        supervisor=b.supervisor,
        transactions=b.transactions,
        config=b.config,
        clock=b.clock,
        send_live=lambda *a: None,
    )
    b.clock.advance(60)
    await sampler.sample()
    b.clock.advance(30)  # half a minute at 22.08 kW: 184 Wh
    await sampler.sample()
    values = [
        json.loads(r["payload"])["meterValue"][0]["sampledValue"]
        for r in b.outbox_rows()
        if r["action"] == "MeterValues"
    ]
    assert [(v["measurand"], v["value"], v["unit"]) for [v] in values] == [
        (ENERGY_INTERVAL, "368.0", "Wh"),
        (ENERGY_INTERVAL, "184.0", "Wh"),
    ]


async def test_aligned_interval_energy_needs_the_previous_grid_instant(make_bench):
    b = await charging_bench(
        make_bench,
        ClockAlignedDataInterval=900,
        MeterValuesAlignedData=f"{ENERGY},{ENERGY_INTERVAL}",
        StopTxnAlignedData=ENERGY_INTERVAL,
    )
    sampler = MeterSampler(
        supervisor=b.supervisor,
        transactions=b.transactions,
        config=b.config,
        clock=b.clock,
        send_live=lambda *a: None,
    )
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    await sampler.aligned(at=t0)  # where this interval began is not known: left out
    b.clock.advance(60)
    await sampler.aligned(at=t0 + timedelta(seconds=900))
    mvs = [
        json.loads(r["payload"])["meterValue"][0]["sampledValue"]
        for r in b.outbox_rows()
        if r["action"] == "MeterValues"
    ]
    assert [v["measurand"] for v in mvs[0]] == [ENERGY]
    assert [(v["measurand"], v["value"]) for v in mvs[1]][1] == (ENERGY_INTERVAL, "368.0")
    # the StopTransaction keeps the same aligned intervals
    kept = b.conn(1).tx.stop_aligned
    assert [[v["value"] for v in mv["sampledValue"]] for mv in kept] == [[], ["368.0"]]


async def test_stop_transaction_data_carries_the_transaction_energy_as_interval(make_bench):
    b = await charging_bench(make_bench, StopTxnSampledData=f"{ENERGY},{ENERGY_INTERVAL}")
    b.clock.advance(120)
    await b.supervisor.stop(b.conn(1), "Local")
    [stop] = [json.loads(r["payload"]) for r in b.outbox_rows() if r["action"] == "StopTransaction"]
    begin, end = stop["transactionData"]
    assert [(v["measurand"], v["value"], v["context"]) for v in begin["sampledValue"]] == [
        (ENERGY, "0.0", "Transaction.Begin"),
        (ENERGY_INTERVAL, "0.0", "Transaction.Begin"),
    ]
    assert [(v["measurand"], v["value"], v["context"]) for v in end["sampledValue"]] == [
        (ENERGY, "736.0", "Transaction.End"),
        (ENERGY_INTERVAL, "736.0", "Transaction.End"),
    ]
    await check_outgoing_call("StopTransaction", stop)


async def test_with_sampling_off_the_register_is_still_persisted(make_bench):
    b = await charging_bench(make_bench, MeterValueSampleInterval=0)
    sampler = MeterSampler(
        supervisor=b.supervisor,
        transactions=b.transactions,
        config=b.config,
        clock=b.clock,
        send_live=lambda *a: None,
    )
    b.clock.advance(30)
    await sampler.sample()
    assert [r["action"] for r in b.outbox_rows()] == ["StartTransaction"]
    assert b.tx_rows()[0]["last_energy_wh"] == pytest.approx(184.0)


async def test_clock_aligned_values_go_live_without_a_transaction(make_bench):
    b = make_bench(ocpp={"MeterValuesAlignedData": f"{ENERGY},{VOLTAGE}"})
    live = []
    sampler = MeterSampler(
        supervisor=b.supervisor,
        transactions=b.transactions,
        config=b.config,
        clock=b.clock,
        send_live=lambda action, payload: live.append((action, payload)),
    )
    await sampler.aligned()
    ((action, payload),) = live
    assert action == "MeterValues"
    assert "transactionId" not in payload
    assert payload["connectorId"] == 1
    assert {s["context"] for s in payload["meterValue"][0]["sampledValue"]} == {"Sample.Clock"}
    await check_outgoing_call(action, payload)
    assert b.outbox_rows() == []


async def test_clock_aligned_values_of_a_transaction_go_through_the_outbox(make_bench):
    b = await charging_bench(make_bench, MeterValuesAlignedData=ENERGY)
    sampler = MeterSampler(
        supervisor=b.supervisor,
        transactions=b.transactions,
        config=b.config,
        clock=b.clock,
        send_live=lambda *a: pytest.fail("a transaction's values must not go live"),
    )
    await sampler.aligned()
    assert [r["action"] for r in b.outbox_rows()] == ["StartTransaction", "MeterValues"]
    assert '"context":"Sample.Clock"' in b.outbox_rows()[1]["payload"]


async def test_a_clock_set_back_does_not_send_the_same_aligned_instant_twice(make_bench, clock):
    """The wait runs on the monotonic clock; the wall clock can be behind when it ends
    (a Heartbeat's currentTime set it back, NTP slewing).  One value per aligned instant."""
    b = make_bench(ocpp={"MeterValuesAlignedData": ENERGY, "ClockAlignedDataInterval": 60})
    clock.adjust_to(datetime(2026, 3, 1, 11, 59, 59, 970000, tzinfo=UTC))
    live = []
    sampler = MeterSampler(
        supervisor=b.supervisor,
        transactions=b.transactions,
        config=b.config,
        clock=clock,
        send_live=lambda action, payload: live.append(payload),
    )
    loop = asyncio.create_task(sampler.aligned_loop())
    try:
        async with asyncio.timeout(2):
            while not live:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.15)  # the wall clock still reads 11:59:59.970
        assert len(live) == 1
        clock.adjust_to(datetime(2026, 3, 1, 12, 0, 59, 950000, tzinfo=UTC))
        sampler.aligned_changed()
        async with asyncio.timeout(2):
            while len(live) < 2:
                await asyncio.sleep(0.01)
    finally:
        loop.cancel()


async def test_a_silent_meter_sends_no_values_rather_than_stale_ones(make_bench):
    b = await charging_bench(
        make_bench,
        MeterValueSampleInterval=60,
        MeterValuesSampledData=ENERGY,
        MeterValuesAlignedData=ENERGY,
    )
    live: list = []
    sampler = MeterSampler(
        supervisor=b.supervisor,
        transactions=b.transactions,
        config=b.config,
        clock=b.clock,
        send_live=lambda *a: live.append(a),
    )
    b.sim.fault("meter_silent", True, connector=1)
    b.clock.advance(60)
    await sampler.sample()
    await sampler.aligned()
    assert [r["action"] for r in b.outbox_rows()] == ["StartTransaction"]
    b.sim.fault("meter_silent", False, connector=1)
    b.clock.advance(60)
    await sampler.sample()
    actions = [r["action"] for r in b.outbox_rows()]
    assert actions == ["StartTransaction", "MeterValues"]
    mv = json.loads(b.outbox_rows()[1]["payload"])
    # The register kept counting while the bus was silent: two minutes of 22.08 kW.
    assert float(mv["meterValue"][0]["sampledValue"][0]["value"]) == pytest.approx(736.0)
