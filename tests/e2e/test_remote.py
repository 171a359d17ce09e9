"""What a CSMS asks of a running station: remote start/stop, DataTransfer; chargerctl status."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from chargerd.bench.csms.csms import CsmsCallError

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
CARD = "0A1B2C3D"
APP_USER = "A1B2C3D4"


@pytest.fixture(autouse=True)
def app_user_known(csms):
    """The app user's idTag is valid at this CSMS (it answers StartTransaction with it)."""
    csms.cards[APP_USER] = "Accepted"


def sent(csms, action: str, **match) -> list:
    return csms.calls(action, cp_id=CP, **match)


async def ev_ready(rig, connector: int = 1) -> None:
    await rig.plug(connector)
    await rig.charge(connector)
    await rig.wait_connector(connector, "Preparing")


async def test_remote_start_on_a_given_connector_with_the_ev_plugged(rig, csms):
    await ev_ready(rig)
    answer = await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1})
    assert answer == {"status": "Accepted"}
    (start,) = await csms.wait_for("StartTransaction")
    assert start.payload["idTag"] == APP_USER and start.payload["connectorId"] == 1
    c = await rig.wait_connector(1, "Charging")
    assert c["contactor_closed"] is True
    # AuthorizeRemoteTxRequests is false: the CSMS's word is enough.
    assert not sent(csms, "Authorize")


async def test_remote_start_without_a_connector_takes_the_one_with_the_ev(
    make_registered_rig, csms
):
    rig = await make_registered_rig(connectors=2)
    await ev_ready(rig, 2)
    answer = await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER})
    assert answer == {"status": "Accepted"}
    (start,) = await csms.wait_for("StartTransaction")
    assert start.payload["connectorId"] == 2 and start.payload["idTag"] == APP_USER
    await rig.wait_connector(2, "Charging")
    assert (await rig.connector(1))["status"] == "Available"


async def test_remote_start_first_then_the_ev_is_plugged(rig, csms):
    """TC_011_1: the app starts, then the driver plugs in within ConnectionTimeOut."""
    answer = await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1})
    assert answer == {"status": "Accepted"}
    c = await rig.wait_connector(1, "Preparing")
    assert c["id_tag"] == APP_USER and c["transaction_id"] is None
    await rig.plug(1)
    await rig.charge(1)
    await rig.wait_connector(1, "Charging")
    (start,) = await csms.wait_for("StartTransaction")
    assert start.payload["idTag"] == APP_USER


async def test_remote_start_times_out_without_an_ev(make_registered_rig, csms):
    """TC_011_2: nobody plugs in within ConnectionTimeOut: back to Available, no transaction."""
    rig = await make_registered_rig(ocpp={"ConnectionTimeOut": 1})
    await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1})
    await rig.wait_connector(1, "Preparing")
    await rig.wait_connector(1, "Available", timeout=5)
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.payload["connectorId"] == 1 and r.payload["status"] == "Available",
        count=2,
    )
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await asyncio.sleep(0.4)
    assert (await rig.connector(1))["transaction_id"] is None
    assert not sent(csms, "StartTransaction")


async def test_remote_start_on_connector_0_is_rejected(rig, csms):
    """TC_027: connectorId 0 is the station, not a place to charge."""
    await ev_ready(rig)
    answer = await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 0})
    assert answer == {"status": "Rejected"}
    await asyncio.sleep(0.3)
    assert not sent(csms, "StartTransaction")


async def test_remote_start_on_an_unavailable_connector_is_rejected(rig, csms):
    await ev_ready(rig)
    await csms.call(CP, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
    await rig.wait_connector(1, "Unavailable")
    answer = await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1})
    assert answer == {"status": "Rejected"}
    anywhere = await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER})
    assert anywhere == {"status": "Rejected"}
    await asyncio.sleep(0.3)
    assert not sent(csms, "StartTransaction")


async def test_authorize_remote_tx_requests_sends_authorize_first(make_registered_rig, csms):
    rig = await make_registered_rig(ocpp={"AuthorizeRemoteTxRequests": True})
    await ev_ready(rig)
    answer = await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1})
    assert answer == {"status": "Accepted"}
    (start,) = await csms.wait_for("StartTransaction")
    (auth,) = sent(csms, "Authorize", idTag=APP_USER)
    assert csms.received.index(auth) < csms.received.index(start)
    await rig.wait_connector(1, "Charging")


async def test_authorize_remote_tx_requests_with_a_refused_id_starts_nothing(
    make_registered_rig, csms
):
    csms.cards[APP_USER] = "Blocked"
    rig = await make_registered_rig(ocpp={"AuthorizeRemoteTxRequests": True})
    await ev_ready(rig)
    await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1})
    await csms.wait_for("Authorize")
    await asyncio.sleep(0.4)
    c = await rig.connector(1)
    assert c["status"] == "Preparing" and c["transaction_id"] is None
    assert c["contactor_closed"] is False
    assert not sent(csms, "StartTransaction")


async def test_remote_start_is_rejected_on_a_busy_or_unknown_connector(rig, csms, start_charging):
    await start_charging(rig)
    busy = await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1})
    assert busy == {"status": "Rejected"}
    anywhere = await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER})
    assert anywhere == {"status": "Rejected"}
    unknown = await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 5})
    assert unknown == {"status": "Rejected"}
    await asyncio.sleep(0.3)
    assert len(sent(csms, "StartTransaction")) == 1
    c = await rig.connector(1)
    assert c["status"] == "Charging" and c["id_tag"] == CARD


async def test_remote_stop_by_transaction_id(rig, csms, start_charging):
    start = await start_charging(rig)
    tx_id = (await rig.connector(1))["transaction_id"]
    answer = await csms.call(CP, "RemoteStopTransaction", {"transactionId": tx_id})
    assert answer == {"status": "Accepted"}
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["transactionId"] == tx_id
    assert stop.payload["reason"] == "Remote"
    assert stop.payload["meterStop"] >= start.payload["meterStart"]
    c = await rig.wait_connector(1, "Finishing")
    assert c["contactor_closed"] is False and c["transaction_id"] is None


async def test_remote_stop_of_an_unknown_transaction_is_rejected(rig, csms, start_charging):
    await start_charging(rig)
    tx_id = (await rig.connector(1))["transaction_id"]
    answer = await csms.call(CP, "RemoteStopTransaction", {"transactionId": tx_id + 100})
    assert answer == {"status": "Rejected"}
    await asyncio.sleep(0.3)
    assert (await rig.connector(1))["status"] == "Charging"
    assert not sent(csms, "StopTransaction")


async def test_remote_start_then_remote_stop_a_whole_app_session(rig, csms):
    """The app user's session: no card at all, from Preparing back to Available."""
    await ev_ready(rig)
    await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1})
    await rig.wait_connector(1, "Charging")
    await rig.wait_status(lambda s: s["connectors"][0]["transaction_id"] is not None)
    tx_id = (await rig.connector(1))["transaction_id"]
    await csms.call(CP, "RemoteStopTransaction", {"transactionId": tx_id})
    (stop,) = await csms.wait_for("StopTransaction")
    assert stop.payload["idTag"] == APP_USER
    await rig.unplug(1)
    await rig.wait_connector(1, "Available")
    await csms.wait_for(
        "StatusNotification",
        predicate=lambda r: r.payload["connectorId"] == 1 and r.payload["status"] == "Available",
        count=2,
    )
    statuses = [r.payload["status"] for r in sent(csms, "StatusNotification", connectorId=1)]
    assert statuses[-3:] == ["Charging", "Finishing", "Available"]


async def test_data_transfer_from_the_csms_is_answered_unknown_vendor(rig, csms):
    answer = await csms.call(
        CP, "DataTransfer", {"vendorId": "com.example", "messageId": "hello", "data": "{}"}
    )
    assert answer["status"] == "UnknownVendorId"


async def test_a_malformed_remote_start_is_a_callerror_not_a_start(rig, csms):
    await ev_ready(rig)
    with pytest.raises(CsmsCallError):
        await csms.call(CP, "RemoteStartTransaction", {"connectorId": 1})
    await asyncio.sleep(0.3)
    assert not sent(csms, "StartTransaction")


async def chargerctl_status(rig) -> dict:
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chargerd.cli", "--socket", str(rig.socket), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def test_chargerctl_status_json_during_a_remote_session(rig, csms):
    await ev_ready(rig)
    await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1})
    # The meter is read once a second: wait for a reading taken while charging.
    await rig.wait_status(
        lambda s: (
            s["connectors"][0]["transaction_id"] is not None
            and (s["connectors"][0]["power_w"] or 0) > 0
        ),
        what="transaction id and power",
    )
    first = (await chargerctl_status(rig))["connectors"][0]
    assert first["status"] == "Charging"
    assert first["transaction_id"] == 1
    assert first["contactor_closed"] is True
    assert first["id_tag"] == APP_USER
    assert first["power_w"] == pytest.approx(32 * 230 * 3, rel=0.02)
    await asyncio.sleep(1.2)
    second = (await chargerctl_status(rig))["connectors"][0]
    assert second["energy_wh"] > first["energy_wh"]
    assert second["transaction_id"] == first["transaction_id"]


@pytest.mark.parametrize("authorize_first", [False, True])
async def test_two_remote_starts_for_one_connector_one_is_rejected(
    make_registered_rig, csms, authorize_first
):
    other = "B1B2B3B4"
    csms.cards[other] = "Accepted"
    rig = await make_registered_rig(ocpp={"AuthorizeRemoteTxRequests": authorize_first})
    await ev_ready(rig)
    answers = await asyncio.gather(
        csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1}),
        csms.call(CP, "RemoteStartTransaction", {"idTag": other, "connectorId": 1}),
    )
    assert sorted(a["status"] for a in answers) == ["Accepted", "Rejected"]
    winner = APP_USER if answers[0]["status"] == "Accepted" else other
    (start,) = await csms.wait_for("StartTransaction")
    assert start.payload["idTag"] == winner
    await rig.wait_connector(1, "Charging")


@pytest.mark.parametrize("fault", ["lock_jammed", "contactor_welded"])
async def test_remote_start_on_a_faulted_connector_is_rejected(rig, csms, fault):
    await rig.fault(fault, True, connector=1)
    if fault == "contactor_welded":
        # A weld shows itself at the next closing: the self-test closes and opens it.
        await rig.ctl("selftest", device="contactor", connector=1)
    await rig.plug(1)
    await rig.charge(1)
    await rig.wait_connector(1, "Faulted")
    answer = await csms.call(CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1})
    assert answer == {"status": "Rejected"}
    await asyncio.sleep(0.3)
    assert not sent(csms, "StartTransaction")
