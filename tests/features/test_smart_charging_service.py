"""Smart charging on the real mock station and a real SQLite file, on a manual clock.

What a CSMS engineer checks: the pilot offers the limit in force, the EV draws
it, 0 A suspends and a higher limit resumes, the limit moves at the period
boundary by the timer (which sleeps exactly until then), profiles survive a
restart and a TxProfile ends with its transaction.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from chargerd.clock import ManualClock, iso
from chargerd.features.smart_charging import (
    Electrical,
    SmartChargingService,
    declare_smart_charging_keys,
)
from chargerd.link.frames import check_result

TAG = "0A1B2C3D"


def cs_profile(
    pid: int,
    purpose: str = "TxDefaultProfile",
    limit: float = 16.0,
    *,
    stack: int = 0,
    kind: str = "Absolute",
    start=None,
    unit: str = "A",
    periods: list[tuple[int, float]] | None = None,
    recurrency: str | None = None,
    duration: int | None = None,
    transaction_id: int | None = None,
) -> dict:
    schedule: dict = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [
            {"startPeriod": s, "limit": lim} for s, lim in (periods or [(0, limit)])
        ],
    }
    if start is not None:
        schedule["startSchedule"] = iso(start)
    if duration is not None:
        schedule["duration"] = duration
    raw = {
        "chargingProfileId": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": schedule,
    }
    if recurrency:
        raw["recurrencyKind"] = recurrency
    if transaction_id is not None:
        raw["transactionId"] = transaction_id
    return raw


def snap(b, n: int = 1) -> dict:
    return b.sim.snapshot()["connectors"][n - 1]


def make_service(b, *, station_max_a: float = 32.0) -> SmartChargingService:
    if not b.config.is_declared("ChargeProfileMaxStackLevel"):
        declare_smart_charging_keys(b.config)
    svc = SmartChargingService(
        store=b.store,
        config=b.config,
        clock=b.clock,
        supervisor=b.supervisor,
        elec=Electrical(230.0, 3),
        station_max_a=station_max_a,
    )
    b.supervisor.limit_for = svc.limit_for
    return svc


@pytest.fixture
def bench(make_bench):
    b = make_bench(connectors=2)
    b.svc = make_service(b)
    return b


async def charging(b, n: int = 1) -> None:
    b.sim.plug(n)
    await b.tick()
    b.supervisor.grant(b.conn(n), id_tag=TAG, parent_id_tag=None)
    await b.tick()
    b.sim.charge(n)
    await b.tick()


def ev_amps(b, n: int = 1) -> float:
    """What the mock EV draws per phase now."""
    return b.sim._connectors[n - 1].sim.current_a()


# -- the limit drives the pilot ----------------------------------------------------------------


async def test_a_txdefault_profile_limits_the_first_offer_of_a_transaction(bench):
    b = bench
    now = b.clock.now()
    assert b.svc.set_profile(0, cs_profile(1, limit=16.0, start=now)) == "Accepted"
    await charging(b)
    assert snap(b)["offered_current_a"] == 16.0
    assert b.conn(1).status == "Charging"
    assert ev_amps(b) == 16.0
    assert b.svc.status_fields(1) == {"limit_a": 16.0, "limit_source": "TxDefaultProfile #1"}


async def test_a_txprofile_mid_transaction_lowers_the_current_the_ev_draws(bench):
    b = bench
    await charging(b)
    assert ev_amps(b) == 32.0
    b.conn(1).tx.transaction_id = 42
    raw = cs_profile(5, "TxProfile", 10.0, kind="Relative", transaction_id=42)
    assert b.svc.set_profile(1, raw) == "Accepted"
    await b.svc.apply()
    await b.tick()
    assert snap(b)["offered_current_a"] == 10.0 and ev_amps(b) == 10.0
    assert b.svc.status_fields(1)["limit_source"] == "TxProfile #5"


async def test_a_limit_in_w_is_offered_in_a_rounded_down(bench):
    b = bench
    # 7000 W / (3 x 230 V) = 10.14 A: the pilot offers 10.1 A, never more.
    b.svc.set_profile(0, cs_profile(1, limit=7000.0, unit="W", start=b.clock.now()))
    await charging(b)
    assert snap(b)["offered_current_a"] == 10.1


async def test_zero_amps_suspends_the_ev_and_a_new_profile_resumes_it(bench):
    b = bench
    await charging(b)
    b.svc.set_profile(0, cs_profile(1, limit=0.0, start=b.clock.now()))
    await b.svc.apply()
    await b.tick()
    assert snap(b)["offered_current_a"] is None
    assert not snap(b)["contactor_commanded"]
    assert b.conn(1).status == "SuspendedEVSE" and b.conn(1).tx is not None
    assert b.svc.status_fields(1) == {
        "limit_a": 0.0,
        "limit_source": "TxDefaultProfile #1 (paused: below 6 A)",
    }
    # Below 6 A is a pause too: the pilot cannot signal 4 A.
    b.svc.set_profile(0, cs_profile(2, limit=4.0, stack=1, start=b.clock.now()))
    await b.svc.apply()
    await b.tick()
    assert b.conn(1).status == "SuspendedEVSE"
    assert b.svc.status_fields(1)["limit_a"] == 4.0
    b.svc.set_profile(0, cs_profile(3, limit=20.0, stack=2, start=b.clock.now()))
    await b.svc.apply()
    await b.tick(2)
    assert snap(b)["offered_current_a"] == 20.0 and snap(b)["contactor_commanded"]
    assert b.conn(1).status == "Charging" and ev_amps(b) == 20.0


async def test_a_charge_point_max_profile_is_split_between_charging_connectors(bench):
    b = bench
    b.svc.set_profile(0, cs_profile(1, "ChargePointMaxProfile", 32.0, start=b.clock.now()))
    await charging(b, 1)
    assert snap(b, 1)["offered_current_a"] == 32.0
    await charging(b, 2)
    # The second start lowered the first before its own offer went up.
    assert snap(b, 1)["offered_current_a"] == 16.0
    assert snap(b, 2)["offered_current_a"] == 16.0
    assert b.svc.status_fields(2)["limit_source"] == "ChargePointMaxProfile #1 shared by 2"
    await b.supervisor.stop(b.conn(1), "Local")
    await b.svc.apply()
    assert snap(b, 2)["offered_current_a"] == 32.0


# -- the timer -----------------------------------------------------------------------------------


class StepClock(ManualClock):
    """A manual clock whose sleep waits for the test, recording what was asked."""

    def __init__(self, start) -> None:
        super().__init__(start)
        self.asked: list[float] = []
        self._go = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        self._go.clear()
        await self._go.wait()
        self.advance(seconds)

    def release(self) -> None:
        self._go.set()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_timer_wakes_at_midnight_for_a_recurring_daily_profile(make_bench, tmp_path):
    """22:00-06:00 daily at 10 A, else 32 A: the timer sleeps exactly to each boundary."""
    b = make_bench(connectors=1)
    clock = StepClock(b.clock.now().replace(hour=21, minute=58))
    b.clock = clock
    b.supervisor._clock = clock
    b.transactions._clock = clock
    svc = make_service(b)
    svc._clock = clock
    day0 = clock.now().replace(hour=0, minute=0)
    raw = cs_profile(
        1,
        kind="Recurring",
        recurrency="Daily",
        start=day0 - timedelta(days=3) + timedelta(hours=22),
        periods=[(0, 10.0), (8 * 3600, 32.0)],
    )
    assert svc.set_profile(0, raw) == "Accepted"
    await charging(b)
    assert snap(b)["offered_current_a"] == 32.0
    task = asyncio.create_task(svc.run())
    try:
        await settle()
        assert clock.asked[-1] == pytest.approx(120)  # 21:58 -> 22:00, not a poll interval
        clock.release()
        await settle()
        await b.tick()
        assert clock.now().hour == 22 and snap(b)["offered_current_a"] == 10.0
        assert clock.asked[-1] == pytest.approx(300)  # the 300 s safety cap for clock jumps
        # Through midnight: nothing changes, and at 06:00 the offer rises again.
        while clock.now().hour != 6:
            clock.release()
            await settle()
        await b.tick()
        assert snap(b)["offered_current_a"] == 32.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_period_boundary_is_applied_by_the_timer_alone(bench):
    """Nothing but the clock moves the limit: no CSMS message, no link (offline too)."""
    b = bench
    now = b.clock.now()
    b.svc.set_profile(0, cs_profile(1, start=now, periods=[(0, 16.0), (200, 8.0)]))
    await charging(b)
    assert await b.svc.apply() == pytest.approx(200)
    b.clock.advance(200)
    await b.svc.apply()
    assert snap(b)["offered_current_a"] == 8.0


# -- persistence ----------------------------------------------------------------------------------


async def test_profiles_survive_a_restart_and_a_txprofile_ends_with_its_transaction(bench):
    b = bench
    now = b.clock.now()
    b.svc.set_profile(0, cs_profile(1, limit=16.0, start=now))
    await charging(b)
    assert b.svc.set_profile(1, cs_profile(2, "TxProfile", 8.0, kind="Relative")) == "Accepted"
    again = make_service(b)
    assert sorted(again.profiles) == [1]  # no transaction survives a restart, nor its TxProfile
    await b.supervisor.stop(b.conn(1), "Local")
    assert 2 not in b.svc.profiles
    rows = b.store.query("SELECT id FROM charging_profiles")
    assert [r["id"] for r in rows] == [1]


async def test_replacement_by_id_and_by_purpose_and_stack_level(bench):
    b = bench
    now = b.clock.now()
    b.svc.set_profile(1, cs_profile(1, limit=16.0, stack=1, start=now))
    b.svc.set_profile(1, cs_profile(1, limit=12.0, stack=2, start=now))  # same id
    assert {p: i.profile.stack_level for p, i in b.svc.profiles.items()} == {1: 2}
    b.svc.set_profile(1, cs_profile(9, limit=10.0, stack=2, start=now))  # same slot
    assert list(b.svc.profiles) == [9]
    b.svc.set_profile(2, cs_profile(10, limit=10.0, stack=2, start=now))  # other connector
    assert sorted(b.svc.profiles) == [9, 10]
    assert len(b.store.query("SELECT id FROM charging_profiles")) == 2


@pytest.mark.parametrize(
    ("criteria", "left"),
    [
        ({"profile_id": 2}, [1, 3, 4]),
        ({"connector_id": 0}, [2, 4]),
        ({"purpose": "TxDefaultProfile"}, [3]),
        ({"stack_level": 1}, [1]),
        ({"connector_id": 1, "purpose": "TxDefaultProfile", "stack_level": 1}, [1, 3, 4]),
        ({"connector_id": 2, "purpose": "TxDefaultProfile"}, [1, 2, 3]),
        ({}, []),
    ],
)
async def test_clear_by_any_combination_of_criteria(bench, criteria, left):
    b = bench
    now = b.clock.now()
    b.svc.set_profile(0, cs_profile(1, stack=0, start=now))
    b.svc.set_profile(1, cs_profile(2, stack=1, start=now))
    b.svc.set_profile(0, cs_profile(3, "ChargePointMaxProfile", stack=1, start=now))
    b.svc.set_profile(2, cs_profile(4, stack=1, start=now))
    b.svc.clear(**criteria)
    assert sorted(b.svc.profiles) == left
    assert sorted(r["id"] for r in b.store.query("SELECT id FROM charging_profiles")) == left


def test_clear_answers_unknown_when_nothing_matched(bench):
    assert bench.svc.on_clear_charging_profile(id=99).status == "Unknown"


# -- what is refused -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connector", "raw", "why"),
    [
        (3, cs_profile(1, start=None, kind="Relative"), "unknown connector"),
        (1, cs_profile(1, "ChargePointMaxProfile", kind="Relative"), "CP max on a connector"),
        (1, cs_profile(1, "TxProfile", kind="Relative"), "TxProfile without a transaction"),
        (0, cs_profile(1, "TxProfile", kind="Relative"), "TxProfile on connector 0"),
        (1, cs_profile(1, stack=11, kind="Relative"), "above ChargeProfileMaxStackLevel"),
        (1, cs_profile(1, kind="Relative", periods=[(i * 60, 16) for i in range(49)]), "periods"),
        (1, cs_profile(1, kind="Relative", periods=[(60, 16.0)]), "first period not at 0"),
        (1, cs_profile(1, kind="Relative", periods=[(0, 16), (0, 8)]), "periods not increasing"),
        (1, cs_profile(1, kind="Relative", limit=-1.0), "negative limit"),
        (1, cs_profile(1, kind="Recurring", start=None), "Recurring without a start"),
        (1, {"chargingProfileId": 1}, "no schedule"),
    ],
)
def test_a_profile_that_cannot_apply_is_rejected(bench, connector, raw, why):
    if raw.get("chargingProfileKind") == "Recurring":
        raw["recurrencyKind"] = "Daily"
    assert bench.svc.set_profile(connector, raw) == "Rejected", why
    assert bench.svc.profiles == {}


async def test_a_txprofile_for_another_transaction_is_rejected(bench):
    b = bench
    await charging(b)
    b.conn(1).tx.transaction_id = 42
    raw = cs_profile(1, "TxProfile", kind="Relative", transaction_id=41)
    assert b.svc.set_profile(1, raw) == "Rejected"


def test_the_allowed_rate_unit_and_the_number_of_profiles_are_enforced(bench):
    b = bench
    now = b.clock.now()
    b.config.set_internal("ChargingScheduleAllowedChargingRateUnit", "Current")
    assert b.svc.set_profile(1, cs_profile(1, unit="W", limit=7000, start=now)) == "Rejected"
    assert b.svc.set_profile(1, cs_profile(1, unit="A", start=now)) == "Accepted"
    b.config.set_internal("MaxChargingProfilesInstalled", 2)
    assert b.svc.set_profile(1, cs_profile(2, stack=1, start=now)) == "Accepted"
    assert b.svc.set_profile(1, cs_profile(3, stack=2, start=now)) == "Rejected"
    # Replacing one in place does not count as one more.
    assert b.svc.set_profile(1, cs_profile(4, stack=1, start=now)) == "Accepted"


def test_the_keys_are_declared_read_only_and_smart_charging_is_advertised(bench):
    c = bench.config
    for key in (
        "ChargeProfileMaxStackLevel",
        "ChargingScheduleAllowedChargingRateUnit",
        "ChargingScheduleMaxPeriods",
        "MaxChargingProfilesInstalled",
    ):
        assert c.key_value(key).readonly and c.set(key, "1") == "Rejected"
    assert "SmartCharging" in c.get("SupportedFeatureProfiles")


# -- RemoteStartTransaction's TxProfile ------------------------------------------------------------


async def test_a_remote_start_txprofile_applies_from_the_first_offer(bench):
    b = bench
    raw = cs_profile(7, "TxProfile", 12.0, kind="Relative")
    assert b.svc.accept_remote_profile(1, TAG, raw) is True
    await charging(b)
    assert snap(b)["offered_current_a"] == 12.0
    assert b.svc.profiles[7].tx_local_id == b.conn(1).tx.local_id


@pytest.mark.parametrize(
    "raw",
    [
        cs_profile(7, "TxDefaultProfile", kind="Relative"),
        cs_profile(7, "TxProfile", kind="Relative", transaction_id=3),
        cs_profile(7, "TxProfile", kind="Relative", stack=99),
        {"chargingProfileId": 7},
    ],
)
def test_a_remote_start_with_an_unusable_profile_is_refused(bench, raw):
    assert bench.svc.accept_remote_profile(1, TAG, raw) is False


# -- GetCompositeSchedule ------------------------------------------------------------------------


async def test_get_composite_schedule_answers_a_valid_result(bench):
    b = bench
    now = b.clock.now()
    b.svc.set_profile(0, cs_profile(1, "ChargePointMaxProfile", unit="W", limit=6900, start=now))
    b.svc.set_profile(1, cs_profile(2, start=now, periods=[(0, 8.0), (600, 16.0)]))
    result = await b.svc.on_get_composite_schedule(connector_id=1, duration=3600)
    payload = {
        "status": result.status,
        "connectorId": result.connector_id,
        "scheduleStart": result.schedule_start,
        "chargingSchedule": {
            "duration": 3600,
            "startSchedule": result.schedule_start,
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 8.0, "numberPhases": 3},
                {"startPeriod": 600, "limit": 10.0, "numberPhases": 3},
            ],
        },
    }
    from chargerd.link.router import _result_payload

    assert _result_payload(result) == payload
    await check_result("GetCompositeSchedule", "u1", payload)
    assert (await b.svc.on_get_composite_schedule(connector_id=3, duration=60)).status == "Rejected"
    watts = await b.svc.on_get_composite_schedule(
        connector_id=0, duration=60, charging_rate_unit="W"
    )
    assert watts.charging_schedule["charging_schedule_period"][0]["limit"] == 6900.0


async def test_a_remote_start_txprofile_is_not_given_to_another_idtag(bench):
    b = bench
    raw = cs_profile(7, "TxProfile", 12.0, kind="Relative")
    assert b.svc.accept_remote_profile(1, "A1B2C3D4", raw) is True
    await charging(b)  # a card, not the app user the CSMS started for
    assert snap(b)["offered_current_a"] == 32.0 and 7 not in b.svc.profiles


# -- Current.Offered and Power.Offered ----------------------------------------------------------


@pytest.mark.parametrize(
    ("volts", "offered", "watts"),
    [((230.0, 230.0, 230.0), 10.0, "6900.0"), ((230.0,), 16.0, "3680.0"), ((230.0,), None, "0.0")],
)
def test_power_offered_is_the_offered_current_on_the_phases_the_meter_sees(volts, offered, watts):
    from chargerd.features import metering
    from hal.interfaces import MeterSample

    values = metering.sampled_values(
        MeterSample(energy_wh=1.0, voltage_v=volts),
        ["Current.Offered", "Power.Offered"],
        context="Sample.Periodic",
        offered_current_a=offered,
    )
    got = {v["measurand"]: (v["value"], v["unit"]) for v in values}
    assert got == {"Current.Offered": (f"{offered or 0:.1f}", "A"), "Power.Offered": (watts, "W")}


async def test_a_wall_clock_correction_by_the_csms_wakes_the_timer(bench):
    """A Pi boots with a stale clock: when BootNotification sets it, limits are re-planned."""
    from datetime import UTC, datetime

    from chargerd.clock import SystemClock

    clock = SystemClock()
    svc = SmartChargingService(
        store=bench.store,
        config=bench.config,
        clock=clock,
        supervisor=bench.supervisor,
        elec=Electrical(),
        station_max_a=32.0,
    )
    svc._wake.clear()
    clock.adjust_to(datetime.now(UTC) + timedelta(seconds=0.2))  # drift: nobody woken
    assert not svc._wake.is_set()
    clock.adjust_to(datetime(2030, 1, 1, tzinfo=UTC))  # a jump
    assert svc._wake.is_set()
