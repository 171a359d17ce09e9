"""Protocol details back ends rely on, seen on the wire and in chargerctl.

Any idTag on the bench and what the station did with it, the ids of a
transaction, the power shown with the contactor open, Authorize answers that
are not valid, a registration that is not Accepted, Finishing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
CARD = "0A1B2C3D"


async def card(rig, id_tag: str) -> dict:
    return await rig.ctl("sim.card", uid=id_tag)


def chargerctl(rig, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chargerd.cli", "--socket", str(rig.socket), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


# -- the bench speaks every idTag -------------------------------------------------------------


async def test_any_id_tag_and_what_the_station_did_with_it(rig, csms):
    csms.cards.update({"TOKEN-0001": "Accepted", "USER_42": "Invalid"})
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")

    refused = await card(rig, "USER_42")
    assert (refused["outcome"], refused["status"]) == ("refused", "Invalid")
    assert refused["message"] == "refused: Invalid"

    out = await asyncio.to_thread(chargerctl, rig, "sim", "card", "TOKEN-0001")
    assert out.returncode == 0, out.stderr
    (start,) = await csms.wait_for("StartTransaction")
    assert start.payload["idTag"] == "TOKEN-0001"  # sent as given, case kept
    st = await rig.wait_status(
        lambda s: s["connectors"][0]["transaction_id"] is not None, what="transactionId"
    )
    tx_id = st["connectors"][0]["transaction_id"]
    assert out.stdout.startswith("card TOKEN-0001: accepted and started transaction ")
    assert "on connector 1" in out.stdout

    stopped = await card(rig, "TOKEN-0001")
    assert stopped["outcome"] == "stopped" and stopped["transaction_id"] == tx_id
    assert stopped["message"].startswith(f"stopped transaction {tx_id} (local ")
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "Local"

    bad = await asyncio.to_thread(chargerctl, rig, "sim", "card", "X" * 21)
    assert bad.returncode == 1 and "1 to 20 printable ASCII" in bad.stderr


# -- energy and ids that add up ---------------------------------------------------------------


async def test_an_offline_transaction_shows_its_local_id_and_logs_both(make_registered_rig, csms):
    rig = await make_registered_rig(ocpp={"AllowOfflineTxForUnknownId": True})
    await rig.network(False)
    await rig.wait_status(lambda s: not s["ocpp"]["connected"], what="link down")
    await rig.plug(1)
    await rig.charge(1)
    answer = await card(rig, CARD)
    assert answer["outcome"] == "started" and answer["transaction_id"] is None
    local = answer["local_transaction_id"]
    assert (
        answer["message"]
        == f"accepted and started transaction local {local} (no CSMS id yet) on connector 1"
    )
    c = await rig.wait_connector(1, "Charging")
    assert (c["transaction_id"], c["transaction_local_id"]) == (None, local)
    out = await asyncio.to_thread(chargerctl, rig, "status")
    assert f"local {local}" in out.stdout

    await rig.network(True)
    await csms.wait_for("StartTransaction", timeout=15)
    st = await rig.wait_status(
        lambda s: s["connectors"][0]["transaction_id"] is not None, timeout=15, what="tx id"
    )
    tx_id = st["connectors"][0]["transaction_id"]
    log = rig.log_path.read_text()
    assert f"transaction local {local} (no CSMS id yet) started on connector 1" in log
    assert f"transaction {tx_id} (local {local}) on connector 1: the CSMS's id is known" in log


async def test_power_is_zero_once_the_contactor_is_open(rig, csms, start_charging):
    await start_charging(rig)
    c = await rig.wait_status(
        lambda s: (s["connectors"][0]["power_w"] or 0) > 0, what="power flowing"
    )
    assert c["connectors"][0]["contactor_closed"]
    await rig.fault("meter_silent", True, connector=1)  # the last reading stays 22 kW
    await card(rig, CARD)
    c = await rig.wait_connector(1, "Finishing")
    assert c["contactor_closed"] is False and c["power_w"] == 0.0


async def test_meter_stop_after_a_power_cut_is_the_meter_register(make_registered_rig, csms):
    # Samples (and so the persisted register) only every 30 s: the meter counts on after.
    rig = await make_registered_rig(ocpp={"MeterValueSampleInterval": 0})
    await rig.plug(1)
    await rig.charge(1)
    await card(rig, CARD)
    (start,) = await csms.wait_for("StartTransaction")
    await rig.wait_status(
        lambda s: (s["connectors"][0]["energy_wh"] or 0) >= start.payload["meterStart"] + 10,
        timeout=15,
        what="some energy charged",
    )
    await asyncio.sleep(1.2)  # the mock meter persists its register once a second
    rig.kill9()
    await rig.start()
    (stop,) = await csms.wait_for("StopTransaction", timeout=15)
    assert stop.payload["reason"] == "PowerLoss"
    register = (await rig.connector(1))["energy_wh"]
    # The contactor stays open after the restart: the register stands still, and the
    # StopTransaction bills every Wh up to it (the persisted reading was the meterStart).
    assert abs(stop.payload["meterStop"] - register) <= 0.51  # status shows 0.1 Wh, meterStop 1
    assert stop.payload["meterStop"] >= start.payload["meterStart"] + 10
    await card(rig, CARD)  # the next session starts where the last one was billed
    starts = await csms.wait_for("StartTransaction", count=2)
    assert starts[1].payload["meterStart"] == stop.payload["meterStop"]


# -- protocol details -------------------------------------------------------------------------


async def test_an_authorize_answer_that_is_not_valid_is_a_refusal(make_registered_rig, csms):
    rig = await make_registered_rig(ocpp={"AllowOfflineTxForUnknownId": True})
    csms.cards["BADANSWER"] = {}  # Authorize.conf {"idTagInfo": {}}: no status
    await rig.plug(1)
    await rig.charge(1)
    answer = await card(rig, "BADANSWER")
    assert answer["outcome"] == "refused"
    (auth,) = await csms.wait_for("Authorize")
    assert auth.payload == {"idTag": "BADANSWER"}
    await asyncio.sleep(0.5)
    assert not csms.calls("StartTransaction")  # no free offline transaction
    assert (await rig.connector(1))["status"] == "Preparing"


async def test_remote_start_and_stop_are_rejected_until_the_boot_is_accepted(make_rig, csms):
    csms.boot_status = "Pending"
    csms.heartbeat_interval = 1  # the Pending boot is retried after 1 s
    csms.cards["APP-USER"] = "Accepted"
    rig = await make_rig()
    await rig.wait_status(lambda s: s["ocpp"]["registration"] == "Pending", what="Pending")
    await rig.plug(1)
    await rig.charge(1)
    answer = await csms.call(CP, "RemoteStartTransaction", {"idTag": "APP-USER", "connectorId": 1})
    assert answer == {"status": "Rejected"}
    assert await csms.call(CP, "RemoteStopTransaction", {"transactionId": 1}) == {
        "status": "Rejected"
    }
    await asyncio.sleep(0.3)
    c = await rig.connector(1)
    assert c["id_tag"] is None and c["transaction_id"] is None  # nothing authorized

    csms.boot_status = "Accepted"
    await rig.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", what="Accepted")
    answer = await csms.call(CP, "RemoteStartTransaction", {"idTag": "APP-USER", "connectorId": 1})
    assert answer == {"status": "Accepted"}
    await csms.wait_for("StartTransaction")


async def test_a_card_in_finishing_starts_nothing_until_the_ev_is_unplugged(rig, csms):
    csms.cards["NEXT-USER"] = "Accepted"
    await rig.plug(1)
    await rig.charge(1)
    await card(rig, CARD)
    await csms.wait_for("StartTransaction")
    await card(rig, CARD)  # the driver ends the session; the cable stays in
    await rig.wait_connector(1, "Finishing")
    answer = await card(rig, "NEXT-USER")
    assert answer["outcome"] == "authorized"
    assert "waits until the EV whose session just ended is unplugged" in answer["message"]
    await asyncio.sleep(0.5)
    assert len(csms.calls("StartTransaction")) == 1
    assert (await rig.connector(1))["status"] == "Finishing"
    await rig.unplug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.plug(1)
    await rig.charge(1)
    starts = await csms.wait_for("StartTransaction", count=2)
    assert starts[1].payload["idTag"] == "NEXT-USER"


async def test_interval_energy_in_sampled_and_stop_transaction_data(make_registered_rig, csms):
    interval = "Energy.Active.Import.Interval"
    register = "Energy.Active.Import.Register"
    rig = await make_registered_rig(
        ocpp={
            "MeterValueSampleInterval": 1,
            "MeterValuesSampledData": f"{register},{interval}",
            "StopTxnSampledData": interval,
        }
    )
    got = await rig.ctl("config.get", keys=["MeterValuesSampledData"])
    assert interval in got["configuration_key"][0]["value"]
    await rig.plug(1)
    await rig.charge(1)
    await card(rig, CARD)
    (start,) = await csms.wait_for("StartTransaction")
    mvs = await csms.wait_for("MeterValues", count=3, timeout=15)
    await card(rig, CARD)
    (stop,) = await csms.wait_for("StopTransaction")

    previous = start.payload["meterStart"]
    for mv in mvs:
        values = {v["measurand"]: v for v in mv.payload["meterValue"][0]["sampledValue"]}
        assert values[interval]["unit"] == "Wh" and "phase" not in values[interval]
        assert values[interval]["context"] == "Sample.Periodic"
        now = float(values[register]["value"])
        # each interval is the register's growth since the previous sample (one decimal)
        assert float(values[interval]["value"]) == pytest.approx(now - previous, abs=0.6)
        previous = now
    begin, end = stop.payload["transactionData"]
    assert begin["sampledValue"][0]["value"] == "0.0"
    assert end["sampledValue"][0]["context"] == "Transaction.End"
    total = float(end["sampledValue"][0]["value"])
    assert total == pytest.approx(stop.payload["meterStop"] - start.payload["meterStart"], abs=1)
