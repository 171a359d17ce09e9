"""Smart Charging end to end: the real daemon on the mock station against a real websocket CSMS.

What a CSMS engineer checks on a bench: a profile sent mid-transaction makes the
EV draw less and the meter values show it; 0 A suspends and a new profile
resumes; a station limit is split between two charging connectors; a period
boundary a few seconds ahead, and midnight, move the limit with nobody asking;
a RemoteStartTransaction's TxProfile holds from the first offer.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from chargerd.bench.csms.csms import BenchCsms
from chargerd.clock import SystemClock, iso

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
APP_USER = "A1B2C3D4"
SAMPLED = "Energy.Active.Import.Register,Current.Import,Current.Offered,Power.Offered"


def profile(
    pid: int,
    purpose: str,
    periods: list[tuple[int, float]],
    *,
    stack: int = 0,
    kind: str = "Absolute",
    start: datetime | None = None,
    transaction_id: int | None = None,
    recurrency: str | None = None,
    unit: str = "A",
) -> dict:
    schedule: dict = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods],
    }
    if start is not None:
        schedule["startSchedule"] = iso(start)
    raw = {
        "chargingProfileId": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": schedule,
    }
    if transaction_id is not None:
        raw["transactionId"] = transaction_id
    if recurrency:
        raw["recurrencyKind"] = recurrency
    return raw


async def set_profile(csms, connector: int, raw: dict) -> str:
    reply = await csms.call(
        CP, "SetChargingProfile", {"connectorId": connector, "csChargingProfiles": raw}
    )
    return reply["status"]


def offered(n: int, amps: float | None):
    return lambda s: s["connectors"][n - 1]["offered_current_a"] == amps


def sampled(record, measurand: str, phase: str | None = None) -> list[float]:
    return [
        float(v["value"])
        for mv in record.payload.get("meterValue", [])
        for v in mv["sampledValue"]
        if v.get("measurand") == measurand and (phase is None or v.get("phase") == phase)
    ]


async def test_a_txprofile_mid_transaction_lowers_what_the_ev_draws_and_meter_values_show_it(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig(
        ocpp={"MeterValueSampleInterval": 1, "MeterValuesSampledData": SAMPLED}
    )
    start = await start_charging(rig)
    tx_id = (await rig.connector(1))["transaction_id"]
    assert start.payload["connectorId"] == 1
    await csms.wait_for(
        "MeterValues", predicate=lambda r: sampled(r, "Current.Import", "L1") == [32.0]
    )
    raw = profile(11, "TxProfile", [(0, 10.0)], kind="Relative", transaction_id=tx_id)
    assert await set_profile(csms, 1, raw) == "Accepted"
    st = await rig.wait_status(offered(1, 10.0), what="10 A offered")
    c = st["connectors"][0]
    assert (c["limit_a"], c["limit_source"]) == (10.0, "TxProfile #11")
    (mv,) = await csms.wait_for(
        "MeterValues",
        predicate=lambda r: sampled(r, "Current.Import", "L1") == [10.0],
        timeout=10,
    )
    assert sampled(mv, "Current.Offered") == [10.0]
    assert sampled(mv, "Power.Offered") == [6900.0]  # 10 A x 3 phases x 230 V
    assert mv.payload["transactionId"] == tx_id

    # A TxProfile for a transaction that is not running there is refused.
    wrong = profile(12, "TxProfile", [(0, 6.0)], kind="Relative", transaction_id=tx_id + 100)
    assert await set_profile(csms, 1, wrong) == "Rejected"
    comp = await csms.call(CP, "GetCompositeSchedule", {"connectorId": 1, "duration": 600})
    assert comp["status"] == "Accepted"
    assert comp["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 10.0

    # The TxProfile ends with its transaction.
    await rig.card("0A1B2C3D")
    await csms.wait_for("StopTransaction")
    cleared = await csms.call(CP, "ClearChargingProfile", {"id": 11})
    assert cleared == {"status": "Unknown"}


async def test_zero_amps_suspends_and_a_new_profile_resumes(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig()
    await start_charging(rig)
    now = csms.now()
    assert await set_profile(csms, 1, profile(1, "TxDefaultProfile", [(0, 0.0)], start=now)) == (
        "Accepted"
    )
    await csms.wait_for(
        "StatusNotification", predicate=lambda r: r.payload["status"] == "SuspendedEVSE"
    )
    c = await rig.connector(1)
    assert c["offered_current_a"] is None and c["contactor_closed"] is False
    assert c["transaction_id"] is not None
    higher = profile(2, "TxDefaultProfile", [(0, 16.0)], stack=1, start=now)
    assert await set_profile(csms, 1, higher) == "Accepted"
    c = await rig.wait_connector(1, "Charging")
    assert c["offered_current_a"] == 16.0 and c["contactor_closed"] is True
    assert not csms.calls("StopTransaction", cp_id=CP)


async def test_a_charge_point_max_profile_is_split_across_two_charging_connectors(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig(connectors=2)
    cap = profile(1, "ChargePointMaxProfile", [(0, 32.0)], start=csms.now())
    assert await set_profile(csms, 0, cap) == "Accepted"
    assert await set_profile(csms, 1, cap) == "Rejected"  # connector 0 only
    await start_charging(rig, connector=1)
    assert (await rig.connector(1))["offered_current_a"] == 32.0
    csms.cards["11223344"] = {"status": "Accepted"}
    await start_charging(rig, card="11223344", connector=2)
    st = await rig.wait_status(
        lambda s: offered(1, 16.0)(s) and offered(2, 16.0)(s), what="16 A each"
    )
    assert st["connectors"][1]["limit_source"] == "ChargePointMaxProfile #1 shared by 2"
    # The meters (read once a second) show what the EVs draw: 2 x 16 A x 3 x 230 V.
    await rig.wait_status(
        lambda s: [c["power_w"] for c in s["connectors"]] == [11040.0, 11040.0],
        what="each EV drawing 16 A",
    )
    out = subprocess.run(
        [sys.executable, "-m", "chargerd.cli", "--socket", str(rig.socket), "status"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "limit connector 2: 16.0 A (ChargePointMaxProfile #1 shared by 2)" in out.stdout
    # One leaves: the other gets the whole station limit again.
    await rig.unplug(1)
    await rig.wait_status(offered(2, 32.0), what="32 A on connector 2")


async def test_a_period_boundary_a_few_seconds_ahead_moves_the_limit_with_the_link_down(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig()
    await start_charging(rig)
    start = csms.now()
    raw = profile(3, "TxDefaultProfile", [(0, 20.0), (10, 8.0)], start=start)
    assert await set_profile(csms, 1, raw) == "Accepted"
    await rig.wait_status(offered(1, 20.0), what="20 A first")
    await rig.network(False)
    st = await rig.wait_status(offered(1, 8.0), timeout=15, what="8 A after the boundary")
    assert st["ocpp"]["connected"] is False
    assert st["connectors"][0]["status"] == "Charging"
    assert datetime.now(UTC) >= start + timedelta(seconds=10) - timedelta(milliseconds=50)
    await rig.network(True)


class ShiftedClock(SystemClock):
    """The CSMS's clock, a few seconds before midnight: the daemon adopts it at boot."""

    def __init__(self, to: datetime) -> None:
        super().__init__()
        self._offset = to - datetime.now(UTC)


async def test_a_recurring_daily_profile_across_midnight(make_rig, tmp_path):
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
        days=1
    )
    # Midnight 15 s after the CSMS starts: enough for boot, profile and a start on a busy machine.
    csms = BenchCsms(clock=ShiftedClock(midnight - timedelta(seconds=15)))
    await csms.start("127.0.0.1", 0)
    csms.cards["0A1B2C3D"] = {"status": "Accepted"}
    try:
        from chargerd.bench.rig import StationRig

        rig = StationRig(tmp_path / "midnight", csms_url=csms.url)
        await rig.start()
        try:
            await rig.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15)
            # 22:00 to 00:00 at 10 A, then 32 A until 06:00 (the night tariff starts at midnight).
            raw = profile(
                5,
                "TxDefaultProfile",
                [(0, 10.0), (2 * 3600, 32.0), (8 * 3600, 10.0)],
                kind="Recurring",
                recurrency="Daily",
                start=midnight - timedelta(days=2, hours=2),
            )
            assert await set_profile(csms, 1, raw) == "Accepted"
            await rig.plug(1)
            await rig.card("0A1B2C3D")
            await rig.charge(1)
            await rig.wait_status(offered(1, 10.0), what="10 A before midnight")
            assert csms.now() < midnight
            await rig.wait_status(offered(1, 32.0), timeout=30, what="32 A after midnight")
            assert csms.now() >= midnight
        finally:
            await rig.stop()
    finally:
        await csms.stop()


async def test_a_remote_start_carries_its_txprofile(make_registered_rig, csms):
    csms.cards[APP_USER] = "Accepted"
    rig = await make_registered_rig()
    await rig.plug(1)
    await rig.charge(1)
    await rig.wait_connector(1, "Preparing")
    bad = profile(8, "TxDefaultProfile", [(0, 12.0)], kind="Relative")
    reply = await csms.call(
        CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1, "chargingProfile": bad}
    )
    assert reply == {"status": "Rejected"}
    good = profile(8, "TxProfile", [(0, 12.0)], kind="Relative")
    reply = await csms.call(
        CP, "RemoteStartTransaction", {"idTag": APP_USER, "connectorId": 1, "chargingProfile": good}
    )
    assert reply == {"status": "Accepted"}
    c = await rig.wait_connector(1, "Charging")
    assert c["offered_current_a"] == 12.0 and c["limit_source"] == "TxProfile #8"


async def test_profiles_persist_across_a_kill_and_restart(
    make_registered_rig, csms, start_charging
):
    rig = await make_registered_rig()
    raw = profile(4, "TxDefaultProfile", [(0, 13.0)], start=csms.now())
    assert await set_profile(csms, 1, raw) == "Accepted"
    rig.kill9()
    await rig.wait_exit()
    await rig.start()
    await rig.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15)
    await start_charging(rig)
    c = await rig.connector(1)
    assert (c["offered_current_a"], c["limit_source"]) == (13.0, "TxDefaultProfile #4")
