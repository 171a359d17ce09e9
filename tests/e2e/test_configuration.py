"""GetConfiguration and ChangeConfiguration as a CSMS uses them, and what a change does at once."""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest

from chargerd.bench.csms.csms import CsmsCallError

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
CARD = "0A1B2C3D"

#: OCPP 1.6 §9.1, the Core profile: key -> must it be read-only?  (None: either is allowed.)
CORE_KEYS: dict[str, bool | None] = {
    "AllowOfflineTxForUnknownId": None,
    "AuthorizationCacheEnabled": None,
    "AuthorizeRemoteTxRequests": None,
    "BlinkRepeat": None,
    "ClockAlignedDataInterval": False,
    "ConnectionTimeOut": False,
    "ConnectorPhaseRotation": None,
    "ConnectorPhaseRotationMaxLength": True,
    "GetConfigurationMaxKeys": True,
    "HeartbeatInterval": False,
    "LightIntensity": None,
    "LocalAuthorizeOffline": False,
    "LocalPreAuthorize": False,
    "MaxEnergyOnInvalidId": None,
    "MeterValuesAlignedData": False,
    "MeterValuesAlignedDataMaxLength": True,
    "MeterValuesSampledData": False,
    "MeterValuesSampledDataMaxLength": True,
    "MeterValueSampleInterval": False,
    "MinimumStatusDuration": None,
    "NumberOfConnectors": True,
    "ResetRetries": False,
    "StopTransactionOnEVSideDisconnect": None,
    "StopTransactionOnInvalidId": False,
    "StopTxnAlignedData": False,
    "StopTxnAlignedDataMaxLength": True,
    "StopTxnSampledData": False,
    "StopTxnSampledDataMaxLength": True,
    "SupportedFeatureProfiles": True,
    "SupportedFeatureProfilesMaxLength": True,
    "TransactionMessageAttempts": False,
    "TransactionMessageRetryInterval": False,
    "UnlockConnectorOnEVSideDisconnect": None,
    "WebSocketPingInterval": None,
}


async def get(csms, *keys: str) -> dict:
    return await csms.call(CP, "GetConfiguration", {"key": list(keys)} if keys else {})


async def value_of(csms, key: str) -> str:
    answer = await get(csms, key)
    (entry,) = answer["configurationKey"]
    return entry["value"]


async def change(csms, key: str, value: str) -> str:
    answer = await csms.call(CP, "ChangeConfiguration", {"key": key, "value": value})
    return answer["status"]


async def test_get_all_keys_lists_every_core_key(make_registered_rig, csms):
    await make_registered_rig(connectors=2)
    answer = await get(csms)
    entries = {e["key"]: e for e in answer["configurationKey"]}
    assert not answer.get("unknownKey")
    missing = sorted(set(CORE_KEYS) - set(entries))
    assert not missing, f"Core keys missing from GetConfiguration: {missing}"
    for key, readonly in CORE_KEYS.items():
        if readonly is not None:
            assert entries[key]["readonly"] is readonly, key
        assert isinstance(entries[key].get("value"), str), key
    assert entries["NumberOfConnectors"]["value"] == "2"
    assert "Core" in entries["SupportedFeatureProfiles"]["value"].split(",")
    assert int(entries["GetConfigurationMaxKeys"]["value"]) >= 1
    # The values the station's config file gave.
    assert entries["ConnectionTimeOut"]["value"] == "60"
    assert entries["StopTransactionOnInvalidId"]["value"] in ("true", "false")


async def test_get_configuration_max_keys_is_respected(rig, csms):
    limit = int(await value_of(csms, "GetConfigurationMaxKeys"))
    keys = list(CORE_KEYS)
    wanted = (keys * (limit // len(keys) + 1))[:limit]
    answer = await get(csms, *wanted)
    assert answer["configurationKey"]
    too_many = (keys * (limit // len(keys) + 2))[: limit + 1]
    try:
        answer = await get(csms, *too_many)
    except CsmsCallError as exc:
        assert exc.code in ("OccurenceConstraintViolation", "OccurrenceConstraintViolation")
    else:
        returned = len(answer.get("configurationKey") or []) + len(answer.get("unknownKey") or [])
        assert returned <= limit


async def test_get_specific_and_unknown_keys(rig, csms):
    answer = await get(csms, "HeartbeatInterval", "NoSuchKey", "metervaluesampleinterval")
    entries = {e["key"]: e for e in answer["configurationKey"]}
    assert set(entries) == {"HeartbeatInterval", "MeterValueSampleInterval"}
    assert entries["HeartbeatInterval"]["value"] == str(csms.heartbeat_interval)
    assert entries["HeartbeatInterval"]["readonly"] is False
    assert entries["MeterValueSampleInterval"]["value"] == "0"
    assert answer["unknownKey"] == ["NoSuchKey"]


async def test_an_empty_key_list_is_all_keys(rig, csms):
    answer = await get(csms, *[])
    listed = await csms.call(CP, "GetConfiguration", {"key": []})
    assert {e["key"] for e in listed["configurationKey"]} == {
        e["key"] for e in answer["configurationKey"]
    }
    assert set(CORE_KEYS) <= {e["key"] for e in listed["configurationKey"]}


async def test_get_only_unknown_keys(rig, csms):
    answer = await get(csms, "Foo", "Bar")
    assert not answer.get("configurationKey")
    assert sorted(answer["unknownKey"]) == ["Bar", "Foo"]


@pytest.mark.parametrize(
    ("key", "value", "status"),
    [
        ("ConnectionTimeOut", "45", "Accepted"),
        ("LocalPreAuthorize", "true", "Accepted"),
        ("MeterValuesSampledData", "Energy.Active.Import.Register,Power.Active.Import", "Accepted"),
        ("ConnectionTimeOut", "soon", "Rejected"),  # not an integer
        ("ConnectionTimeOut", "-5", "Rejected"),  # out of range
        ("LightIntensity", "150", "Rejected"),  # out of range (percent)
        ("LocalPreAuthorize", "yes", "Rejected"),  # not a boolean
        ("MeterValuesSampledData", "Energy.Active.Import.Register,Foo.Bar", "Rejected"),
        ("NumberOfConnectors", "4", "Rejected"),  # read-only
        ("GetConfigurationMaxKeys", "5", "Rejected"),  # read-only
        ("NoSuchKey", "1", "NotSupported"),
    ],
)
async def test_change_configuration(rig, csms, key, value, status):
    before = await get(csms, key)
    assert await change(csms, key, value) == status
    after = await get(csms, key)
    if status == "Accepted":
        assert after["configurationKey"][0]["value"] == value
    else:
        assert after == before  # nothing changed


async def test_a_changed_value_survives_a_restart(rig, csms):
    assert await change(csms, "ConnectionTimeOut", "42") == "Accepted"
    assert await change(csms, "LocalPreAuthorize", "true") == "Accepted"
    assert await rig.stop() == 0
    await rig.start()
    await rig.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
    )
    # The CSMS's value wins over the config file's ConnectionTimeOut = 60.
    assert await value_of(csms, "ConnectionTimeOut") == "42"
    assert await value_of(csms, "LocalPreAuthorize") == "true"


async def test_heartbeat_interval_change_takes_effect_at_once(rig, csms):
    assert await value_of(csms, "HeartbeatInterval") == "60"
    assert await change(csms, "HeartbeatInterval", "1") == "Accepted"
    beats = await csms.wait_for("Heartbeat", count=3, timeout=6)
    gaps = [(b.time - a.time).total_seconds() for a, b in pairwise(beats)]
    assert all(gap >= 0.8 for gap in gaps), gaps


async def test_heartbeat_interval_zero_stops_the_heartbeat(rig, csms):
    assert await change(csms, "HeartbeatInterval", "1") == "Accepted"
    await csms.wait_for("Heartbeat", timeout=4)
    assert await change(csms, "HeartbeatInterval", "0") == "Accepted"
    seen = len([r for r in csms.received if r.action == "Heartbeat"])
    await asyncio.sleep(2.2)
    # One may have been on its way when the change came; no more after that.
    assert len([r for r in csms.received if r.action == "Heartbeat"]) <= seen + 1


async def test_meter_value_sample_interval_change_takes_effect_during_a_transaction(
    rig, csms, start_charging
):
    await start_charging(rig)
    tx_id = (await rig.connector(1))["transaction_id"]
    assert not [r for r in csms.received if r.action == "MeterValues"]
    assert await change(csms, "MeterValueSampleInterval", "1") == "Accepted"
    values = await csms.wait_for("MeterValues", count=2, timeout=6)
    for mv in values:
        assert mv.payload["connectorId"] == 1
        assert mv.payload["transactionId"] == tx_id
        sampled = mv.payload["meterValue"][0]["sampledValue"]
        assert any(
            v.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register"
            for v in sampled
        )
    # And off again.
    assert await change(csms, "MeterValueSampleInterval", "0") == "Accepted"


async def test_sampled_data_change_shows_in_the_next_meter_values(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig(ocpp={"MeterValueSampleInterval": 1})
    await start_charging(rig)
    await change(
        csms, "MeterValuesSampledData", "Energy.Active.Import.Register,Power.Active.Import"
    )
    count = len([r for r in csms.received if r.action == "MeterValues"])
    values = await csms.wait_for("MeterValues", count=count + 2, timeout=6)
    measurands = {v.get("measurand") for v in values[-1].payload["meterValue"][0]["sampledValue"]}
    assert "Power.Active.Import" in measurands
