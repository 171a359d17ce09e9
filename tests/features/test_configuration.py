"""Configuration keys: Core profile, Change/GetConfiguration, the config file, the store."""

from __future__ import annotations

import logging

import pytest
from ocpp.exceptions import OccurenceConstraintViolationError
from ocpp.v16.enums import ConfigurationStatus as CS

from chargerd.features.configuration import (
    CSL,
    ConfigurationService,
    csl_of,
    declare_core_keys,
)
from chargerd.store import Store

MEASURANDS = {
    "Energy.Active.Import.Register",
    "Power.Active.Import",
    "Current.Import",
    "Voltage",
    "Current.Offered",
    "Frequency",
}
PROFILES = ("Core", "SmartCharging", "RemoteTrigger")

# OCPP 1.6 §9.1: every Core profile key, its type and access.
CORE_KEYS = {
    "AllowOfflineTxForUnknownId": (bool, False),
    "AuthorizationCacheEnabled": (bool, False),
    "AuthorizeRemoteTxRequests": (bool, False),
    "BlinkRepeat": (int, False),
    "ClockAlignedDataInterval": (int, False),
    "ConnectionTimeOut": (int, False),
    "ConnectorPhaseRotation": (CSL, False),
    "ConnectorPhaseRotationMaxLength": (int, True),
    "GetConfigurationMaxKeys": (int, True),
    "HeartbeatInterval": (int, False),
    "LightIntensity": (int, False),
    "LocalAuthorizeOffline": (bool, False),
    "LocalPreAuthorize": (bool, False),
    "MaxEnergyOnInvalidId": (int, False),
    "MeterValuesAlignedData": (CSL, False),
    "MeterValuesAlignedDataMaxLength": (int, True),
    "MeterValuesSampledData": (CSL, False),
    "MeterValuesSampledDataMaxLength": (int, True),
    "MeterValueSampleInterval": (int, False),
    "MinimumStatusDuration": (int, False),
    "NumberOfConnectors": (int, True),
    "ResetRetries": (int, False),
    "StopTransactionOnEVSideDisconnect": (bool, False),
    "StopTransactionOnInvalidId": (bool, False),
    "StopTxnAlignedData": (CSL, False),
    "StopTxnAlignedDataMaxLength": (int, True),
    "StopTxnSampledData": (CSL, False),
    "StopTxnSampledDataMaxLength": (int, True),
    "SupportedFeatureProfiles": (CSL, True),
    "SupportedFeatureProfilesMaxLength": (int, True),
    "TransactionMessageAttempts": (int, False),
    "TransactionMessageRetryInterval": (int, False),
    "UnlockConnectorOnEVSideDisconnect": (bool, False),
    "WebSocketPingInterval": (int, False),
}


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "chargerd.db"


def make_service(path, **kw) -> tuple[Store, ConfigurationService]:
    store = Store.open(path)
    svc = ConfigurationService(store, max_keys=kw.pop("max_keys", 50))
    declare_core_keys(
        svc, connectors=2, supported_measurands=MEASURANDS, feature_profiles=PROFILES, **kw
    )
    return store, svc


@pytest.fixture
def svc(db_path):
    store, svc = make_service(db_path)
    yield svc
    store.close()


def get_all(svc, keys=None):
    result = svc.on_get_configuration(key=keys)
    return {kv.key: kv for kv in result.configuration_key or []}, result.unknown_key


# -- GetConfiguration --------------------------------------------------------------------


def test_every_core_key_is_in_get_configuration(svc):
    found, unknown = get_all(svc)
    assert unknown is None
    assert set(CORE_KEYS) <= set(found)
    for key, (_, readonly) in CORE_KEYS.items():
        assert found[key].readonly is readonly, key
        assert isinstance(found[key].value, str), key


def test_read_only_values_describe_the_station(svc):
    found, _ = get_all(svc)
    assert found["NumberOfConnectors"].value == "2"
    assert found["GetConfigurationMaxKeys"].value == "50"
    assert found["SupportedFeatureProfiles"].value == "Core,SmartCharging,RemoteTrigger"
    assert found["MeterValuesSampledDataMaxLength"].value == str(len(MEASURANDS))
    assert found["ConnectorPhaseRotationMaxLength"].value == "3"


def test_values_travel_as_strings(svc):
    found, _ = get_all(svc)
    assert found["AuthorizationCacheEnabled"].value == "true"
    assert found["AllowOfflineTxForUnknownId"].value == "false"
    assert found["HeartbeatInterval"].value == "86400"
    assert found["MeterValuesSampledData"].value == "Energy.Active.Import.Register"
    assert found["StopTxnSampledData"].value == ""
    assert found["ConnectorPhaseRotation"].value == "1.Unknown,2.Unknown"


def test_typed_values_for_the_daemon(svc):
    for key, (kind, _) in CORE_KEYS.items():
        assert isinstance(svc.get(key), kind), key
    assert str(svc.get("MeterValuesSampledData")) == "Energy.Active.Import.Register"


def test_requested_keys_known_and_unknown(svc):
    found, unknown = get_all(svc, ["HeartbeatInterval", "NoSuchKey", "heartbeatinterval"])
    assert list(found) == ["HeartbeatInterval"]
    assert unknown == ["NoSuchKey"]
    found, unknown = get_all(svc, ["NoSuchKey"])
    assert found == {} and unknown == ["NoSuchKey"]


def test_more_keys_than_get_configuration_max_keys_is_a_call_error(db_path):
    store, svc = make_service(db_path, max_keys=2)
    with store:
        assert len(get_all(svc, ["HeartbeatInterval", "ResetRetries"])[0]) == 2
        with pytest.raises(OccurenceConstraintViolationError) as err:
            svc.on_get_configuration(key=["HeartbeatInterval", "ResetRetries", "BlinkRepeat"])
        assert "GetConfigurationMaxKeys is 2" in err.value.description
        # an empty request still returns every key
        assert len(get_all(svc)[0]) == len(svc.keys())


# -- ChangeConfiguration, key by key -------------------------------------------------------

# (key, [(accepted wire value, typed value)], [rejected wire values])
CHANGES = [
    ("AllowOfflineTxForUnknownId", [("true", True), ("FALSE", False)], ["yes", "1", ""]),
    ("AuthorizationCacheEnabled", [("false", False)], ["no"]),
    ("AuthorizeRemoteTxRequests", [("true", True)], ["on"]),
    ("BlinkRepeat", [("0", 0), ("5", 5)], ["-1", "x"]),
    ("ClockAlignedDataInterval", [("0", 0), ("900", 900)], ["-900", "15m"]),
    ("ConnectionTimeOut", [("30", 30), ("0", 0)], ["-1", "30.5"]),
    (
        "ConnectorPhaseRotation",
        [
            ("0.RST,1.RST,2.RTS", CSL(["0.RST", "1.RST", "2.RTS"])),
            ("1.NotApplicable", CSL(["1.NotApplicable"])),
        ],
        ["RST", "1.XYZ", "3.RST", "1.RST,1.TSR", "1.RST,,2.RST"],
    ),
    ("HeartbeatInterval", [("300", 300), ("0", 0)], ["-5", "abc"]),
    ("LightIntensity", [("0", 0), ("100", 100)], ["101", "-1"]),
    ("LocalAuthorizeOffline", [("false", False)], ["nope"]),
    ("LocalPreAuthorize", [("true", True)], ["2"]),
    ("MaxEnergyOnInvalidId", [("5000", 5000)], ["-1"]),
    (
        "MeterValuesAlignedData",
        [("Voltage,Frequency", CSL(["Voltage", "Frequency"])), ("", CSL())],
        ["SoC", "Voltage,Voltage"],
    ),
    (
        "MeterValuesSampledData",
        [
            (
                "Energy.Active.Import.Register, Power.Active.Import",
                CSL(["Energy.Active.Import.Register", "Power.Active.Import"]),
            )
        ],
        ["Energy.Active.Import.Register,Temperature", "power.active.import"],
    ),
    ("MeterValueSampleInterval", [("10", 10), ("0", 0)], ["-10"]),
    ("MinimumStatusDuration", [("5", 5)], ["-1"]),
    ("ResetRetries", [("3", 3)], ["-1"]),
    ("StopTransactionOnEVSideDisconnect", [("false", False)], ["0"]),
    ("StopTransactionOnInvalidId", [("false", False)], ["0"]),
    (
        "StopTxnAlignedData",
        [("Energy.Active.Import.Register", CSL(["Energy.Active.Import.Register"]))],
        ["RPM"],
    ),
    (
        "StopTxnSampledData",
        [("Current.Import,Current.Offered", CSL(["Current.Import", "Current.Offered"]))],
        ["Current.Export"],
    ),
    ("TransactionMessageAttempts", [("5", 5)], ["-1"]),
    ("TransactionMessageRetryInterval", [("30", 30)], ["-30"]),
    ("UnlockConnectorOnEVSideDisconnect", [("false", False)], ["off"]),
    ("WebSocketPingInterval", [("0", 0), ("30", 30)], ["-1"]),
]


def test_every_writable_core_key_has_a_row():
    writable = {k for k, (_, readonly) in CORE_KEYS.items() if not readonly}
    assert {row[0] for row in CHANGES} == writable


@pytest.mark.parametrize(("key", "good", "bad"), CHANGES, ids=[row[0] for row in CHANGES])
def test_change_configuration_per_key(svc, key, good, bad):
    for wire_value, typed in good:
        result = svc.on_change_configuration(key=key, value=wire_value)
        assert result.status == CS.accepted, (key, wire_value)
        assert svc.get(key) == typed
        assert svc.origin(key) == "csms"
    before = svc.get(key)
    for wire_value in bad:
        assert svc.set(key, wire_value) == CS.rejected, (key, wire_value)
        assert svc.get(key) == before


@pytest.mark.parametrize("key", [k for k, (_, ro) in CORE_KEYS.items() if ro])
def test_read_only_keys_are_refused(svc, key):
    before = svc.get(key)
    assert svc.on_change_configuration(key=key, value=str(before)).status == CS.rejected
    assert svc.get(key) == before


def test_unknown_key_is_not_supported(svc):
    assert svc.on_change_configuration(key="FooBar", value="1").status == CS.not_supported


def test_keys_are_case_insensitive(svc):
    assert svc.set("heartbeatINTERVAL", "120") == CS.accepted
    assert svc.get("HeartbeatInterval") == 120
    found, _ = get_all(svc, ["HEARTBEATINTERVAL"])
    assert found["HeartbeatInterval"].value == "120"


def test_a_value_longer_than_500_characters_is_refused(svc):
    svc.declare("Greeting", "hello", type=str)
    assert svc.set("Greeting", "x" * 500) == CS.accepted
    assert svc.set("Greeting", "x" * 501) == CS.rejected


def test_measurand_lists_respect_their_max_length(db_path):
    store = Store.open(db_path)
    with store:
        svc = ConfigurationService(store)
        svc.declare("ShortListMaxLength", 2, type=int, readonly=True)
        svc.declare(
            "ShortList",
            "",
            type=CSL,
            validator=csl_of(MEASURANDS, max_length=lambda: svc.get("ShortListMaxLength")),
        )
        assert svc.set("ShortList", "Voltage,Frequency") == CS.accepted
        assert svc.set("ShortList", "Voltage,Frequency,Current.Import") == CS.rejected


def test_unsupported_default_measurand_is_left_out(db_path):
    store = Store.open(db_path)
    with store:
        svc = ConfigurationService(store)
        declare_core_keys(svc, connectors=1, supported_measurands={"Voltage"})
        assert svc.get("MeterValuesSampledData") == CSL()
        assert svc.get("SupportedFeatureProfiles") == CSL(["Core"])


# -- persistence ---------------------------------------------------------------------------


def test_changes_survive_a_reopened_store(db_path):
    store, svc = make_service(db_path)
    assert svc.set("HeartbeatInterval", "120") == CS.accepted
    assert svc.set("MeterValuesSampledData", "Voltage,Current.Import") == CS.accepted
    assert svc.set("LocalPreAuthorize", "true") == CS.accepted
    store.close()

    store, svc = make_service(db_path)
    with store:
        assert svc.get("HeartbeatInterval") == 120
        assert svc.get("MeterValuesSampledData") == CSL(["Voltage", "Current.Import"])
        assert svc.get("LocalPreAuthorize") is True
        assert svc.origin("HeartbeatInterval") == "csms"
        assert svc.origin("ResetRetries") == "default"


def test_refused_changes_are_not_persisted(db_path):
    store, svc = make_service(db_path)
    svc.set("HeartbeatInterval", "-1")
    svc.set("NumberOfConnectors", "5")
    store.close()
    store, svc = make_service(db_path)
    with store:
        assert svc.get("HeartbeatInterval") == 86400
        assert svc.get("NumberOfConnectors") == 2


def test_a_stored_value_that_no_longer_validates_is_ignored(db_path, caplog):
    store = Store.open(db_path)
    with store.transaction():
        store.execute("INSERT INTO ocpp_config(key, value) VALUES ('LightIntensity', '250')")
        store.execute("INSERT INTO ocpp_config(key, value) VALUES ('NumberOfConnectors', '9')")
    store.close()
    with caplog.at_level(logging.WARNING):
        store, svc = make_service(db_path)
    with store:
        assert svc.get("LightIntensity") == 100
        assert svc.get("NumberOfConnectors") == 2  # read-only: never from the store
        assert "LightIntensity" in caplog.text


def test_reboot_required_key_applies_after_restart(db_path):
    store = Store.open(db_path)
    svc = ConfigurationService(store)
    changed = []
    svc.declare("CpoName", "ACME", type=str, reboot_required=True, on_change=changed.append)
    assert svc.set("CpoName", "Volt") == CS.reboot_required
    assert svc.get("CpoName") == "ACME"  # still in effect until the restart
    assert get_all(svc, ["CpoName"])[0]["CpoName"].value == "Volt"  # but shown as set
    assert changed == []
    store.close()

    store = Store.open(db_path)
    with store:
        svc = ConfigurationService(store)
        svc.declare("CpoName", "ACME", type=str, reboot_required=True)
        assert svc.get("CpoName") == "Volt"


# -- on_change -----------------------------------------------------------------------------


def test_on_change_is_called_with_the_typed_value_when_it_changes(db_path):
    store = Store.open(db_path)
    with store:
        svc = ConfigurationService(store)
        seen = []
        svc.declare("PingInterval", 60, type=int, on_change=seen.append)
        watched = []
        svc.watch("pinginterval", watched.append)
        assert svc.set("PingInterval", "30") == CS.accepted
        assert svc.set("PingInterval", "30") == CS.accepted  # same value: no call
        assert svc.set("PingInterval", "-") == CS.rejected
        assert seen == [30] and watched == [30]


def test_a_failing_listener_does_not_undo_the_change(db_path, caplog):
    store = Store.open(db_path)
    with store:
        svc = ConfigurationService(store)

        def broken(value):
            raise RuntimeError("listener bug")

        svc.declare("Thing", 1, type=int, on_change=broken)
        with caplog.at_level(logging.ERROR):
            assert svc.set("Thing", "2") == CS.accepted
        assert svc.get("Thing") == 2
        assert "Thing" in caplog.text


def test_minimum_status_duration_listener_gets_core_changes(svc):
    seen = []
    svc.watch("MinimumStatusDuration", seen.append)
    svc.set("MinimumStatusDuration", "7")
    assert seen == [7]


# -- the [ocpp] table of the config file ---------------------------------------------------


def test_apply_initial_sets_typed_values(svc):
    svc.apply_initial(
        {
            "HeartbeatInterval": 600,
            "LocalPreAuthorize": True,
            "MeterValuesSampledData": ["Energy.Active.Import.Register", "Power.Active.Import"],
            "StopTxnSampledData": "Voltage,Current.Import",
        }
    )
    assert svc.get("HeartbeatInterval") == 600
    assert svc.get("LocalPreAuthorize") is True
    assert str(svc.get("MeterValuesSampledData")) == (
        "Energy.Active.Import.Register,Power.Active.Import"
    )
    assert svc.get("StopTxnSampledData") == CSL(["Voltage", "Current.Import"])
    assert svc.origin("HeartbeatInterval") == "file"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"HeartbeatIntervall": 60}, "ocpp.HeartbeatIntervall: unknown configuration key"),
        ({"HeartbeatInterval": "60"}, "ocpp.HeartbeatInterval: expected an integer"),
        ({"HeartbeatInterval": True}, "ocpp.HeartbeatInterval: expected an integer"),
        (
            {"HeartbeatInterval": -1},
            "ocpp.HeartbeatInterval: '-1' is invalid: must be between 0 and 86400",
        ),
        ({"LightIntensity": 150}, "ocpp.LightIntensity: '150' is invalid: must be between 0 and"),
        ({"LocalPreAuthorize": 1}, "ocpp.LocalPreAuthorize: expected a boolean"),
        ({"LocalPreAuthorize": "true"}, "ocpp.LocalPreAuthorize: expected a boolean"),
        (
            {"MeterValuesSampledData": ["Energy.Active.Import.Register", "SoC"]},
            "ocpp.MeterValuesSampledData: 'Energy.Active.Import.Register,SoC' is invalid: "
            "unsupported measurand SoC",
        ),
        ({"MeterValuesSampledData": [1, 2]}, "ocpp.MeterValuesSampledData: expected a comma"),
        (
            {"MeterValuesSampledData": "Voltage,,Frequency"},
            "ocpp.MeterValuesSampledData: empty item",
        ),
        ({"NumberOfConnectors": 4}, "ocpp.NumberOfConnectors: read-only"),
        (
            {"ConnectorPhaseRotation": "1.RST,5.RST"},
            "ocpp.ConnectorPhaseRotation: '1.RST,5.RST' is invalid: connector 5 does not exist",
        ),
    ],
)
def test_apply_initial_errors_name_the_key(svc, values, message):
    with pytest.raises(ValueError) as err:
        svc.apply_initial(values)
    assert str(err.value).startswith(message)


def test_a_bad_file_changes_nothing(svc):
    with pytest.raises(ValueError, match=r"ocpp\.LightIntensity"):
        svc.apply_initial({"HeartbeatInterval": 600, "LightIntensity": 500})
    assert svc.get("HeartbeatInterval") == 86400
    assert svc.origin("HeartbeatInterval") == "default"


def test_values_the_csms_set_win_over_the_file(db_path):
    store, svc = make_service(db_path)
    assert svc.set("HeartbeatInterval", "120") == CS.accepted
    store.close()

    store, svc = make_service(db_path)
    with store:
        svc.apply_initial({"HeartbeatInterval": 600, "ResetRetries": 4})
        assert svc.get("HeartbeatInterval") == 120
        assert svc.origin("HeartbeatInterval") == "csms"
        assert svc.get("ResetRetries") == 4
        assert svc.origin("ResetRetries") == "file"


def test_file_values_are_not_persisted(db_path):
    store, svc = make_service(db_path)
    svc.apply_initial({"ResetRetries": 4})
    store.close()
    store, svc = make_service(db_path)
    with store:
        assert svc.get("ResetRetries") == 1
        assert svc.origin("ResetRetries") == "default"


def test_apply_initial_calls_on_change(svc):
    seen = []
    svc.watch("MeterValueSampleInterval", seen.append)
    svc.apply_initial({"MeterValueSampleInterval": 15})
    assert seen == [15]


# -- values the station learns itself ------------------------------------------------------


def test_set_internal_is_not_persisted_and_validates(db_path):
    store, svc = make_service(db_path)
    seen = []
    svc.watch("HeartbeatInterval", seen.append)
    svc.set_internal("HeartbeatInterval", 900)  # BootNotification.conf interval
    assert svc.get("HeartbeatInterval") == 900
    assert svc.origin("HeartbeatInterval") == "station"
    assert seen == [900]
    with pytest.raises(ValueError, match="HeartbeatInterval"):
        svc.set_internal("HeartbeatInterval", -1)
    with pytest.raises(ValueError, match="HeartbeatInterval"):
        svc.set_internal("HeartbeatInterval", "900")
    store.close()
    store, svc = make_service(db_path)
    with store:
        assert svc.get("HeartbeatInterval") == 86400


def test_get_of_an_undeclared_key_raises(svc):
    with pytest.raises(KeyError, match="NoSuchKey"):
        svc.get("NoSuchKey")


def test_declaring_twice_or_with_a_bad_default_raises(svc):
    with pytest.raises(ValueError, match="declared twice"):
        svc.declare("heartbeatinterval", 1, type=int)
    with pytest.raises(ValueError, match="default"):
        svc.declare("Percent", 120, type=int, validator=lambda v: None if v <= 100 else "> 100")
    with pytest.raises(TypeError):
        svc.declare("Ratio", 0.5, type=float)


def test_csl_wire_form():
    assert str(CSL.parse(" a , b ")) == "a,b"
    assert CSL.parse("") == CSL()
    assert str(CSL()) == ""
    with pytest.raises(ValueError):
        CSL.parse("a,,b")
