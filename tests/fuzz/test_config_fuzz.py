"""Any value for any writable key through ChangeConfiguration: the daemon never dies.

One real daemon (tests/fuzz/conftest.py) and the bench CSMS over a websocket
on 127.0.0.1.  Hypothesis throws arbitrary strings and numbers at every key
GetConfiguration lists as writable; each answer must be Accepted, Rejected or
RebootRequired, an accepted integer must lie within the key's bounds, and the
daemon must still be there.  Then, with whatever values were left in effect,
a charging session runs from card to RemoteStop, and the daemon restarts with
the persisted values and registers again: no value stops a session or a boot.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chargerd.bench.csms.csms import CsmsCallError
from chargerd.features.configuration import CORE_INT_BOUNDS
from chargerd.features.metering import SUPPORTED_MEASURANDS

pytestmark = pytest.mark.e2e

CP_ID = "CP-FUZZ"
SCALE = float(os.environ.get("CHARGERD_FUZZ_SCALE", "1"))
CARD = "F0220C4D"

NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=-5, max_value=100_000).map(str),
    st.sampled_from(
        ["9223372036854775807", "99999999999999999999", "-1", "0", "86400", "86401", "2147483648"]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)
LISTS = st.lists(
    st.sampled_from([*sorted(SUPPORTED_MEASURANDS), "Temperature", "1.RST", "2.Unknown", ""]),
    max_size=10,
).map(",".join)
VALUES = st.one_of(NUMBERS, LISTS, st.sampled_from(["true", "false", "TRUE", " "]), st.text())
#: Not strings at all: the schema refuses them (a CALLERROR), the daemon must not mind.
RAW = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
)


@pytest.fixture(scope="module")
def writable(fuzz_station) -> dict[str, str]:
    """Every writable key and its value before the fuzz."""
    result = fuzz_station.run(fuzz_station.csms.call(CP_ID, "GetConfiguration", {}))
    keys = {k["key"]: k.get("value") for k in result["configurationKey"] if not k["readonly"]}
    assert "ClockAlignedDataInterval" in keys and "HeartbeatInterval" in keys
    return keys


def test_any_value_for_any_writable_key_then_a_session_and_a_restart(fuzz_station, writable):
    csms = fuzz_station.csms
    keys = sorted(writable)

    @settings(
        max_examples=max(1, int(200 * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=SCALE == 1,
    )
    # The values of issue 10's crash loop, at every integer key, always tried first.
    @example(changes=[(k, "99999999999999999999") for k in sorted(CORE_INT_BOUNDS)])
    @example(changes=[(k, "9223372036854775807") for k in sorted(CORE_INT_BOUNDS)])
    @example(changes=[(k, "-1") for k in sorted(CORE_INT_BOUNDS)])
    @given(
        changes=st.lists(
            st.tuples(st.sampled_from(keys), st.one_of(VALUES, RAW)), min_size=1, max_size=5
        )
    )
    def fuzz(changes: list[tuple[str, Any]]) -> None:
        async def go() -> dict[str, str]:
            for key, value in changes:
                payload = {"key": key, "value": value[:500] if isinstance(value, str) else value}
                try:
                    answer = await csms.call(CP_ID, "ChangeConfiguration", payload)
                except CsmsCallError as exc:
                    assert not isinstance(value, str), exc
                    assert exc.code in ("TypeConstraintViolation", "FormationViolation"), exc
                    continue
                assert answer["status"] in ("Accepted", "Rejected", "RebootRequired"), answer
            got = await csms.call(CP_ID, "GetConfiguration", {"key": [k for k, _ in changes]})
            return {k["key"]: k["value"] for k in got["configurationKey"]}

        values = fuzz_station.run(go())
        assert fuzz_station.rig.running, fuzz_station.rig.tail_log()
        for key, value in values.items():
            if key in CORE_INT_BOUNDS:
                lo, hi = CORE_INT_BOUNDS[key]
                assert lo <= int(value) <= hi, (key, value)

    fuzz()

    rig = fuzz_station.rig

    async def session() -> None:
        await rig.plug(1)
        await rig.wait_connector(1, "Preparing", timeout=15)
        await rig.card(CARD)
        await rig.charge(1)
        st_ = await rig.wait_status(
            lambda s: (
                s["connectors"][0]["status"] == "Charging"
                and s["connectors"][0]["transaction_id"] is not None
            ),
            timeout=15,
            what="charging with a transactionId",
        )
        tx = st_["connectors"][0]["transaction_id"]
        answer = await csms.call(CP_ID, "RemoteStopTransaction", {"transactionId": tx})
        assert answer["status"] == "Accepted"
        await csms.wait_for("StopTransaction", predicate=lambda r: r.cp_id == CP_ID, timeout=15)
        await rig.unplug(1)

    fuzz_station.run(session(), timeout=60)

    async def restart() -> None:
        boots = len(csms.calls("BootNotification", CP_ID))
        assert await rig.stop() == 0
        await rig.start()
        await csms.wait_for(
            "BootNotification", predicate=lambda r: r.cp_id == CP_ID, count=boots + 1, timeout=15
        )
        await rig.wait_status(
            lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
        )

    fuzz_station.run(restart(), timeout=60)
