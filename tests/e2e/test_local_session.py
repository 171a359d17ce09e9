"""A driver's session at the station: plug, card, charge, card, unplug; and a power cut."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.e2e


def tx_messages(csms, cp_id="CP-TEST"):
    return [
        r
        for r in csms.received
        if r.cp_id == cp_id and r.action in ("StartTransaction", "MeterValues", "StopTransaction")
    ]


async def test_plug_card_charge_card_unplug(rig, csms):
    await rig.plug(1, ev_max_current_a=16)
    await rig.wait_connector(1, "Preparing")
    await rig.card("0A1B2C3D")
    await rig.charge(1)
    c = await rig.wait_connector(1, "Charging")
    assert c["contactor_closed"] is True
    assert c["locked"] is True
    assert c["offered_current_a"] == 32.0
    (start,) = await csms.wait_for("StartTransaction")
    assert start.payload["idTag"] == "0A1B2C3D"
    assert start.payload["connectorId"] == 1
    await rig.wait_status(
        lambda s: s["connectors"][0]["transaction_id"] == 1, what="transaction id"
    )
    await asyncio.sleep(1.2)
    await rig.card("0A1B2C3D")
    c = await rig.wait_connector(1, "Finishing")
    assert c["contactor_closed"] is False
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["reason"] == "Local"
    assert stop.payload["transactionId"] == 1
    assert stop.payload["meterStop"] > start.payload["meterStart"]
    await rig.unplug(1)
    await rig.wait_connector(1, "Available")


async def test_power_cut_mid_transaction_sends_powerloss_stop_once(make_rig, csms):
    rig = await make_rig(ocpp={"MeterValueSampleInterval": 1})
    await rig.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", what="boot")
    await rig.plug(1)
    await rig.card("0A1B2C3D")
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    await csms.wait_for("MeterValues", count=2, timeout=10)
    rig.kill9()
    last_mv = [r for r in tx_messages(csms) if r.action == "MeterValues"][-1]
    await rig.start()
    (stop,) = await csms.wait_for("StopTransaction", timeout=15)
    assert stop.payload["reason"] == "PowerLoss"
    assert stop.payload["transactionId"] == 1
    energies = [
        float(v["value"])
        for v in last_mv.payload["meterValue"][0]["sampledValue"]
        if v.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register"
    ]
    assert stop.payload["meterStop"] >= round(energies[-1])
    msgs = tx_messages(csms)
    assert [m.action for m in msgs].count("StartTransaction") == 1
    assert msgs[0].action == "StartTransaction" and msgs[-1].action == "StopTransaction"
    # The cable is still in: the connector comes back Preparing, not charging.
    c = await rig.wait_connector(1, "Preparing")
    assert c["contactor_closed"] is False
