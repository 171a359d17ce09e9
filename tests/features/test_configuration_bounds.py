"""Every configuration key has bounds: out of range is Rejected with a reason, never stored.

One value once put the station in a crash loop (ClockAlignedDataInterval
99999999999999999999 was Accepted, persisted, and overflowed a timer at every
start).  These tests hold the whole class: every writable key refuses what the
station cannot use, the reason is given, and a bad value already on disk is
replaced by the default at start instead of stopping the boot.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocpp.v16.enums import ConfigurationStatus as CS

from chargerd.features import metering
from chargerd.features.configuration import (
    CORE_INT_BOUNDS,
    CSL,
    INT_MAX,
    ConfigurationService,
    declare_core_keys,
    wire,
)
from chargerd.store import Store

HUGE = ["9223372036854775807", "99999999999999999999", "-9223372036854775808", "1" * 400]


def make(path) -> tuple[Store, ConfigurationService]:
    store = Store.open(path)
    svc = ConfigurationService(store)
    declare_core_keys(svc, connectors=2, supported_measurands=metering.SUPPORTED_MEASURANDS)
    return store, svc


@pytest.fixture
def svc(tmp_path):
    store, service = make(tmp_path / "chargerd.db")
    with store:
        yield service


def writable(svc: ConfigurationService) -> list[str]:
    return [k for k in svc.keys() if not svc.key_value(k).readonly]


def test_every_writable_integer_key_of_the_core_profile_has_its_own_range(svc):
    ints = [k for k in writable(svc) if isinstance(svc.get(k), int) and svc.bounds(k)]
    ints = [k for k in ints if not isinstance(svc.get(k), bool)]
    assert sorted(ints) == sorted(CORE_INT_BOUNDS)
    for key in ints:
        lo, hi = svc.bounds(key)
        assert hi < INT_MAX, f"{key} has no range of its own"
        assert svc.change(key, str(hi)).status == CS.accepted
        refused = svc.change(key, str(hi + 1))
        assert refused.status == CS.rejected
        assert refused.reason == f"must be between {lo} and {hi}"
        assert svc.change(key, str(lo - 1)).status == CS.rejected
        assert svc.get(key) == hi  # the refused values changed nothing


@pytest.mark.parametrize("value", HUGE)
def test_huge_numbers_are_rejected_by_every_integer_key(svc, value):
    for key in writable(svc):
        if svc.bounds(key) is None:
            continue
        before = svc.get(key)
        change = svc.change(key, value)
        assert change.status == CS.rejected, key
        assert change.reason
        assert svc.get(key) == before


def test_the_reason_of_a_refusal_is_given(svc):
    assert svc.change("HeartbeatInterval", "abc").reason == "'abc' is not an integer"
    assert svc.change("LocalPreAuthorize", "yes").reason == "'yes' is not true or false"
    assert svc.change("NumberOfConnectors", "3").reason == "read-only, the station sets it itself"
    nope = svc.change("NoSuchKey", "1")
    assert nope.status == CS.not_supported and "NoSuchKey" in nope.reason
    bad = svc.change("MeterValuesSampledData", "Temperature")
    assert bad.status == CS.rejected and "unsupported measurand Temperature" in bad.reason
    too_many = ",".join(sorted(metering.SUPPORTED_MEASURANDS)) + ",Voltage"
    assert svc.change("MeterValuesSampledData", too_many).status == CS.rejected
    assert svc.change("HeartbeatInterval", "900") == (CS.accepted, None)


def test_who_changed_a_key_is_logged(svc, caplog):
    with caplog.at_level(logging.INFO, logger="chargerd.features.configuration"):
        svc.change("HeartbeatInterval", "900", by="the technician (chargerctl)")
        svc.set("HeartbeatInterval", "901")
    messages = [r.getMessage() for r in caplog.records]
    assert "configuration HeartbeatInterval set to '900' by the technician (chargerctl)" in messages
    assert "configuration HeartbeatInterval set to '901' by the CSMS" in messages


def test_an_integer_declared_without_bounds_is_held_to_32_bits(svc):
    svc.declare("SomeFeatureInterval", 10, type=int)
    assert svc.bounds("SomeFeatureInterval") == (0, INT_MAX)
    assert svc.set("SomeFeatureInterval", str(INT_MAX)) == CS.accepted
    assert svc.set("SomeFeatureInterval", str(INT_MAX + 1)) == CS.rejected
    assert svc.set("SomeFeatureInterval", "-1") == CS.rejected


def test_the_declaration_helpers_carry_their_bounds(svc):
    svc.declare_int("ReserveMinutes", 15, 1, 120)
    svc.declare_bool("ReserveConnectorZeroSupported", False)
    svc.declare_str("OperatorName", "ACME", max_length=20)
    svc.declare_csl("AllowedThings", "A", allowed=("A", "B", "C"), max_items=2)
    assert svc.set("ReserveMinutes", "0") == CS.rejected
    assert svc.set("ReserveMinutes", "120") == CS.accepted
    assert svc.set("ReserveConnectorZeroSupported", "true") == CS.accepted
    assert svc.change("OperatorName", "x" * 21).reason == "longer than 20 characters"
    assert svc.set("AllowedThings", "A,B,C") == CS.rejected
    assert svc.get("AllowedThings") == CSL(["A"])
    with pytest.raises(ValueError, match="empty range"):
        svc.declare_int("Backwards", 5, 10, 1)
    with pytest.raises(ValueError, match="default '200' is invalid"):
        svc.declare_int("OutOfItsOwnRange", 200, 0, 100)


def test_a_stored_value_the_station_refuses_is_replaced_by_its_default(tmp_path, caplog):
    path = tmp_path / "chargerd.db"
    store, _ = make(path)
    with store, store.transaction():  # what an older version or a bad disk left behind
        for key, value in (
            ("ClockAlignedDataInterval", "99999999999999999999"),
            ("HeartbeatInterval", "abc"),
            ("MeterValuesSampledData", "Temperature"),
            ("MeterValueSampleInterval", "30"),  # a good one stays
        ):
            store.execute("INSERT INTO ocpp_config(key, value) VALUES (?, ?)", (key, value))
    with caplog.at_level(logging.WARNING):
        store, svc = make(path)
    with store:
        assert svc.get("ClockAlignedDataInterval") == 0
        assert svc.get("HeartbeatInterval") == 86400
        assert svc.get("MeterValuesSampledData") == CSL(["Energy.Active.Import.Register"])
        assert svc.get("MeterValueSampleInterval") == 30
        assert svc.origin("ClockAlignedDataInterval") == "default"
        rows = {r["key"] for r in store.query("SELECT key FROM ocpp_config")}
        assert rows == {"MeterValueSampleInterval"}  # the refused rows are gone
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "ClockAlignedDataInterval is refused (must be between 0 and 86400)" in warnings
    assert "replaced by its default '0'" in warnings


def test_set_internal_refuses_what_the_key_refuses(svc):
    with pytest.raises(ValueError, match="HeartbeatInterval"):
        svc.set_internal("HeartbeatInterval", 10**12)  # a BootNotification.conf interval
    assert svc.get("HeartbeatInterval") == 86400


# -- property: no string can break the service or leave a value it would refuse ----------

NUMBERISH = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", " ", "0", "-0", "+5", " 7 ", "1e3", "0x10", "١٢", "true", "NaN"]),
)
TEXT = st.one_of(NUMBERISH, st.text(max_size=600))
MEASURAND_LISTS = st.lists(
    st.sampled_from([*sorted(metering.SUPPORTED_MEASURANDS), "Temperature", "", " x "]),
    max_size=12,
).map(",".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_value_for_any_key_is_either_applied_in_bounds_or_changes_nothing(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chargerd.db"
        store, svc = make(path)
        with store:
            keys = svc.keys()
            for _ in range(data.draw(st.integers(1, 6))):
                key = data.draw(st.sampled_from(keys))
                value = data.draw(st.one_of(TEXT, MEASURAND_LISTS))
                before = svc.key_value(key).value
                change = svc.change(key, value)
                assert change.status in (CS.accepted, CS.rejected, CS.reboot_required)
                if change.status == CS.rejected:
                    assert change.reason
                    assert svc.key_value(key).value == before
                    continue
                got = svc.get(key)
                bounds = svc.bounds(key)
                if bounds is not None:
                    assert bounds[0] <= got <= bounds[1]
                assert len(wire(got)) <= 500
            stored = {k: svc.key_value(k).value for k in keys}
        # What was accepted comes back as it was at the next start: nothing is dropped.
        store, again = make(path)
        with store:
            assert {k: again.key_value(k).value for k in keys} == stored
