"""The chaos run's smart-charging invariant, judged on made-up records (no daemon)."""

from __future__ import annotations

from datetime import UTC, datetime

from chargerd.bench.chaoslib.profiles import GRACE_S, ProfileRequest, check_profiles
from chargerd.bench.chaoslib.records import Sample, Verdict
from chargerd.clock import iso

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()


def set_request(at: float, limit: float, status: str | None = "Accepted", *, pid: int = 1,
                purpose: str = "ChargePointMaxProfile", connector: int = 0,
                periods: list | None = None) -> ProfileRequest:  # fmt: skip
    start = datetime.fromtimestamp(at, UTC)
    raw = {
        "chargingProfileId": pid,
        "stackLevel": 0,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "startSchedule": iso(start),
            "chargingSchedulePeriod": periods or [{"startPeriod": 0, "limit": limit}],
        },
    }
    return ProfileRequest(
        at, at + 0.01, "SetChargingProfile", {"connectorId": connector, "csChargingProfiles": raw},
        status,
    )  # fmt: skip


def sample(at: float, *offers: float | None) -> Sample:
    return Sample(
        at,
        {
            "connectors": [
                {"id": i + 1, "transaction_local_id": 1, "offered_current_a": a}
                for i, a in enumerate(offers)
            ]
        },
    )


def judge(samples, requests) -> Verdict:
    v = Verdict()
    check_profiles(samples, requests, v)
    return v


def test_an_offer_within_the_limit_passes_and_one_above_it_is_a_violation():
    reqs = [set_request(T0, 16.0)]
    assert judge([sample(T0 + 10, 16.0)], reqs).violations == []
    rules = {x.rule for x in judge([sample(T0 + 10, 20.0)], reqs).violations}
    assert "more current offered than the composite schedule allows" in rules


def test_the_old_limit_holds_until_a_grace_after_the_answer():
    reqs = [set_request(T0, 32.0), set_request(T0 + 10, 10.0)]
    assert judge([sample(T0 + 10 + GRACE_S / 2, 32.0)], reqs).violations == []
    assert judge([sample(T0 + 11 + GRACE_S, 32.0)], reqs).violations != []


def test_an_unanswered_request_may_or_may_not_have_been_applied():
    reqs = [set_request(T0, 10.0), set_request(T0 + 5, 20.0, status=None)]
    assert judge([sample(T0 + 20, 20.0)], reqs).violations == []
    assert judge([sample(T0 + 20, 10.0)], reqs).violations == []
    assert judge([sample(T0 + 20, 25.0)], reqs).violations != []


def test_a_rejected_request_changes_nothing():
    reqs = [set_request(T0, 10.0), set_request(T0 + 5, 20.0, status="Rejected")]
    assert judge([sample(T0 + 20, 20.0)], reqs).violations != []


def test_two_connectors_together_stay_within_the_station_limit():
    reqs = [set_request(T0, 32.0)]
    assert judge([sample(T0 + 10, 16.0, 16.0)], reqs).violations == []
    (bad,) = judge([sample(T0 + 10, 32.0, 16.0)], reqs).violations
    assert bad.rule == "the charging connectors together exceed the ChargePointMaxProfile"


def test_a_period_boundary_is_judged_with_the_grace():
    periods = [{"startPeriod": 0, "limit": 20.0}, {"startPeriod": 30, "limit": 8.0}]
    reqs = [set_request(T0, 0, periods=periods, purpose="TxDefaultProfile", connector=1)]
    assert judge([sample(T0 + 30 + GRACE_S / 2, 20.0)], reqs).violations == []
    assert judge([sample(T0 + 31 + GRACE_S, 20.0)], reqs).violations != []
    assert judge([sample(T0 + 31 + GRACE_S, 8.0)], reqs).violations == []
