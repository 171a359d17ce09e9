"""MeterValues as a CSMS bills and plots them: measurands, units, phases, contexts.

Sampled values (MeterValueSampleInterval, MeterValuesSampledData) come with
context Sample.Periodic and belong to the transaction; clock-aligned values
(ClockAlignedDataInterval, MeterValuesAlignedData) come with Sample.Clock, at
multiples of the interval since midnight; StopTxnSampledData puts the
Transaction.Begin and Transaction.End readings in StopTransaction's
transactionData.  A measurand the meter cannot deliver is Rejected.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from chargerd.bench.csms.csms import CsmsCallError
from chargerd.clock import parse_iso

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
CARD = "0A1B2C3D"
ENERGY = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"
CURRENT = "Current.Import"
VOLTAGE = "Voltage"
OFFERED = "Current.Offered"
FREQUENCY = "Frequency"
EVERY_MEASURAND = [ENERGY, POWER, CURRENT, VOLTAGE, OFFERED, FREQUENCY]


def now() -> datetime:
    return datetime.now(UTC)


def values(mv: dict, measurand: str) -> list[dict]:
    return [v for v in mv["sampledValue"] if v.get("measurand", ENERGY) == measurand]


async def test_every_supported_measurand_sampled_periodically(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig(
        ocpp={"MeterValueSampleInterval": 1, "MeterValuesSampledData": ",".join(EVERY_MEASURAND)},
        mock={"ev_max_current_a": 16, "ev_phases": 3},
    )
    await start_charging(rig)
    tx_id = (await rig.connector(1))["transaction_id"]
    t = now()
    records = await csms.wait_for("MeterValues", predicate=lambda r: r.time >= t, count=3)

    energies = []
    for r in records:
        assert r.payload["connectorId"] == 1
        assert r.payload["transactionId"] == tx_id
        (mv,) = r.payload["meterValue"]
        assert {v["context"] for v in mv["sampledValue"]} == {"Sample.Periodic"}
        assert {v["measurand"] for v in mv["sampledValue"]} == set(EVERY_MEASURAND)
        for v in mv["sampledValue"]:
            float(v["value"])  # a number, as a string
        (energy,) = values(mv, ENERGY)
        assert (energy["unit"], energy.get("phase")) == ("Wh", None)
        energies.append(float(energy["value"]))
        (power,) = values(mv, POWER)
        assert power["unit"] == "W" and float(power["value"]) > 0
        currents = values(mv, CURRENT)
        assert [(v["phase"], v["unit"]) for v in currents] == [
            ("L1", "A"),
            ("L2", "A"),
            ("L3", "A"),
        ]
        assert all(0 < float(v["value"]) <= 16.5 for v in currents)  # what the EV draws
        volts = values(mv, VOLTAGE)
        assert [(v["phase"], v["unit"]) for v in volts] == [
            ("L1-N", "V"),
            ("L2-N", "V"),
            ("L3-N", "V"),
        ]
        assert all(200 < float(v["value"]) < 260 for v in volts)
        (offered,) = values(mv, OFFERED)
        assert (offered["unit"], float(offered["value"])) == ("A", 32.0)
        (freq,) = values(mv, FREQUENCY)
        assert 49 < float(freq["value"]) < 51
    assert energies == sorted(energies) and energies[-1] > energies[0]
    stamps = [parse_iso(r.payload["meterValue"][0]["timestamp"]) for r in records]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


async def test_clock_aligned_values_in_and_out_of_a_transaction(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig(
        ocpp={"ClockAlignedDataInterval": 2, "MeterValuesAlignedData": f"{ENERGY},{POWER}"}
    )

    def aligned(r) -> bool:
        return values(r.payload["meterValue"][0], ENERGY)[0]["context"] == "Sample.Clock"

    # Idle: sent live for the connector, with no transaction.
    (idle, *_) = await csms.wait_for("MeterValues", predicate=aligned, timeout=5)
    assert idle.payload["connectorId"] == 1
    assert "transactionId" not in idle.payload
    await start_charging(rig)
    tx_id = (await rig.connector(1))["transaction_id"]
    t = now()
    (during, *_) = await csms.wait_for(
        "MeterValues", predicate=lambda r: r.time >= t and aligned(r), timeout=5
    )
    assert during.payload["transactionId"] == tx_id
    for r in (idle, during):
        (mv,) = r.payload["meterValue"]
        assert {v["measurand"] for v in mv["sampledValue"]} == {ENERGY, POWER}
        assert {v["context"] for v in mv["sampledValue"]} == {"Sample.Clock"}
        stamp = parse_iso(mv["timestamp"])
        # On the 2-second grid counted from midnight (read a few ms after the tick).
        since_midnight = stamp - stamp.replace(hour=0, minute=0, second=0, microsecond=0)
        assert since_midnight.total_seconds() % 2 < 0.5, mv["timestamp"]
    # No periodic samples were asked for (MeterValueSampleInterval = 0).
    assert not [
        v
        for r in csms.received
        if r.action == "MeterValues"
        for v in r.payload["meterValue"][0]["sampledValue"]
        if v["context"] == "Sample.Periodic"
    ]


async def test_stop_txn_sampled_data_in_the_stop_transaction(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig(ocpp={"StopTxnSampledData": f"{ENERGY},{CURRENT}"})
    start = await start_charging(rig)
    await asyncio.sleep(1.1)
    await rig.card(CARD)
    (stop,) = await csms.wait_for("StopTransaction")
    begin, end = stop.payload["transactionData"]
    assert {v["context"] for v in begin["sampledValue"]} == {"Transaction.Begin"}
    assert {v["context"] for v in end["sampledValue"]} == {"Transaction.End"}
    assert begin["timestamp"] == start.payload["timestamp"]
    assert end["timestamp"] == stop.payload["timestamp"]
    for mv in (begin, end):
        assert {v["measurand"] for v in mv["sampledValue"]} == {ENERGY, CURRENT}
        assert [v["phase"] for v in values(mv, CURRENT)] == ["L1", "L2", "L3"]
    (e_begin,) = values(begin, ENERGY)
    (e_end,) = values(end, ENERGY)
    assert round(float(e_begin["value"])) == start.payload["meterStart"]
    assert round(float(e_end["value"])) == stop.payload["meterStop"]
    assert float(e_end["value"]) > float(e_begin["value"])


@pytest.mark.parametrize(
    "key", ["MeterValuesSampledData", "MeterValuesAlignedData", "StopTxnSampledData"]
)
async def test_a_measurand_the_meter_cannot_deliver_is_rejected(rig, csms, key):
    async def change(value: str) -> str:
        reply = await csms.call(CP, "ChangeConfiguration", {"key": key, "value": value})
        return reply["status"]

    async def current() -> str:
        reply = await csms.call(CP, "GetConfiguration", {"key": [key]})
        (entry,) = reply["configurationKey"]
        return entry.get("value", "")

    assert await change(f"{ENERGY},{POWER}") == "Accepted"
    for bad in ("SoC", "Temperature", f"{ENERGY},SoC", "Energy.Bogus"):
        try:
            status = await change(bad)
        except CsmsCallError as exc:  # a CALLERROR would leave the CSMS guessing
            pytest.fail(f"{key}={bad!r} answered {exc.code}, not Rejected")
        assert status == "Rejected", bad
    assert await current() == f"{ENERGY},{POWER}"


async def test_stop_txn_aligned_data_in_the_stop_transaction(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig(
        ocpp={
            "ClockAlignedDataInterval": 1,
            "MeterValuesAlignedData": "",  # only the StopTransaction gets clock-aligned values
            "StopTxnAlignedData": f"{ENERGY},{POWER}",
        }
    )
    start = await start_charging(rig)
    await asyncio.sleep(2.2)
    await rig.card(CARD)
    (stop,) = await csms.wait_for("StopTransaction")
    data = stop.payload.get("transactionData") or []
    assert len(data) >= 2, stop.payload
    began = parse_iso(start.payload["timestamp"])
    ended = parse_iso(stop.payload["timestamp"])
    stamps = [parse_iso(mv["timestamp"]) for mv in data]
    assert stamps == sorted(stamps)
    assert began <= stamps[0] and stamps[-1] <= ended
    for mv, stamp in zip(data, stamps, strict=True):
        assert {v["context"] for v in mv["sampledValue"]} == {"Sample.Clock"}
        assert {v["measurand"] for v in mv["sampledValue"]} == {ENERGY, POWER}
        assert stamp.microsecond == 0  # on the 1-second grid
    energies = [float(values(mv, ENERGY)[0]["value"]) for mv in data]
    assert energies == sorted(energies)
    assert (
        start.payload["meterStart"] <= energies[0]
        and energies[-1] <= stop.payload["meterStop"] + 0.5
    )
    assert not [r for r in csms.received if r.action == "MeterValues"]


async def test_the_sample_interval_changed_mid_transaction_applies_at_once(
    rig, csms, start_charging
):
    await start_charging(rig)
    await asyncio.sleep(1.2)
    assert not [r for r in csms.received if r.action == "MeterValues"]  # sampling is off
    t = now()
    reply = await csms.call(
        CP, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "1"}
    )
    assert reply["status"] == "Accepted"
    records = await csms.wait_for("MeterValues", count=2, timeout=4)
    assert all(r.time >= t for r in records)
    reply = await csms.call(
        CP, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "0"}
    )
    assert reply["status"] == "Accepted"
    await asyncio.sleep(0.2)
    count = len([r for r in csms.received if r.action == "MeterValues"])
    await asyncio.sleep(1.5)
    assert len([r for r in csms.received if r.action == "MeterValues"]) == count
