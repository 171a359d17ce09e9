"""The authorization decision: one table over the link state, entries and the four keys."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from ocpp.v16.enums import AuthorizationStatus as A

from chargerd.features.authz import Decision, IdTagInfo, Verdict, decide, may_stop

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)
EARLIER = NOW - timedelta(seconds=1)

VALID = IdTagInfo(A.accepted, LATER, "FLEET")
FOREVER = IdTagInfo(A.accepted)
PAST_EXPIRY = IdTagInfo(A.accepted, EARLIER)
EXPIRES_NOW = IdTagInfo(A.accepted, NOW)
BLOCKED = IdTagInfo(A.blocked)
INVALID = IdTagInfo(A.invalid)
EXPIRED = IdTagInfo(A.expired)
CONCURRENT = IdTagInfo(A.concurrent_tx)

ACCEPT, ASK, REJECT = Verdict.ACCEPT_LOCALLY, Verdict.ASK_CSMS, Verdict.REJECT

# (case, online, cache, list, LocalPreAuthorize, LocalAuthorizeOffline,
#  AllowOfflineTxForUnknownId, verdict, status)
TABLE = [
    ("online unknown", True, None, None, False, True, False, ASK, None),
    (
        "online unknown, allowance is for offline only",
        True,
        None,
        None,
        True,
        True,
        True,
        ASK,
        None,
    ),
    ("online valid cache without pre-authorize", True, VALID, None, False, True, False, ASK, None),
    (
        "online valid cache, pre-authorize",
        True,
        VALID,
        None,
        True,
        False,
        False,
        ACCEPT,
        A.accepted,
    ),
    (
        "online no-expiry cache, pre-authorize",
        True,
        FOREVER,
        None,
        True,
        False,
        False,
        ACCEPT,
        A.accepted,
    ),
    ("online valid list, pre-authorize", True, None, VALID, True, False, False, ACCEPT, A.accepted),
    ("online blocked cache is asked again", True, BLOCKED, None, True, True, True, ASK, None),
    ("online expired entry is asked again", True, PAST_EXPIRY, None, True, True, True, ASK, None),
    ("online list blocked outranks valid cache", True, VALID, BLOCKED, True, True, True, ASK, None),
    ("offline valid cache", False, VALID, None, False, True, False, ACCEPT, A.accepted),
    ("offline valid list", False, None, VALID, False, True, False, ACCEPT, A.accepted),
    ("offline blocked", False, BLOCKED, None, False, True, False, REJECT, A.blocked),
    ("offline invalid", False, INVALID, None, False, True, False, REJECT, A.invalid),
    ("offline expired status", False, EXPIRED, None, False, True, False, REJECT, A.expired),
    (
        "offline accepted past its expiryDate",
        False,
        PAST_EXPIRY,
        None,
        False,
        True,
        False,
        REJECT,
        A.expired,
    ),
    (
        "offline expiryDate exactly now",
        False,
        EXPIRES_NOW,
        None,
        False,
        True,
        False,
        REJECT,
        A.expired,
    ),
    ("offline concurrent tx", False, CONCURRENT, None, False, True, False, REJECT, A.concurrent_tx),
    (
        "offline list blocked outranks valid cache",
        False,
        VALID,
        BLOCKED,
        False,
        True,
        True,
        REJECT,
        A.blocked,
    ),
    (
        "offline list valid outranks blocked cache",
        False,
        BLOCKED,
        VALID,
        False,
        True,
        False,
        ACCEPT,
        A.accepted,
    ),
    ("offline unknown, allowed", False, None, None, False, True, True, ACCEPT, A.accepted),
    ("offline unknown, not allowed", False, None, None, True, True, False, REJECT, A.invalid),
    (
        "offline blocked never passes as unknown",
        False,
        BLOCKED,
        None,
        False,
        True,
        True,
        REJECT,
        A.blocked,
    ),
    (
        "offline blocked, LocalAuthorizeOffline off",
        False,
        BLOCKED,
        None,
        False,
        False,
        True,
        REJECT,
        A.blocked,
    ),
    (
        "offline valid, LocalAuthorizeOffline off, no allowance",
        False,
        VALID,
        None,
        True,
        False,
        False,
        REJECT,
        A.invalid,
    ),
    (
        "offline valid, LocalAuthorizeOffline off, allowance",
        False,
        VALID,
        None,
        False,
        False,
        True,
        ACCEPT,
        A.accepted,
    ),
]


@pytest.mark.parametrize(
    ("online", "cache", "local", "pre", "lao", "unknown", "verdict", "status"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_decision_table(online, cache, local, pre, lao, unknown, verdict, status):
    d = decide(
        id_tag="04A1B2C3",
        online=online,
        now=NOW,
        cache_entry=cache,
        local_list_entry=local,
        local_pre_authorize=pre,
        local_authorize_offline=lao,
        allow_offline_tx_for_unknown_id=unknown,
    )
    assert (d.verdict, d.status) == (verdict, status)
    assert d.reason


ENTRIES = [None, VALID, FOREVER, PAST_EXPIRY, BLOCKED, INVALID, EXPIRED, CONCURRENT]


def test_invariants_over_every_combination():
    for online, cache, local, pre, lao, unknown in itertools.product(
        (True, False), ENTRIES, ENTRIES, (True, False), (True, False), (True, False)
    ):
        d = decide(
            id_tag="X",
            online=online,
            now=NOW,
            cache_entry=cache,
            local_list_entry=local,
            local_pre_authorize=pre,
            local_authorize_offline=lao,
            allow_offline_tx_for_unknown_id=unknown,
        )
        entry = local if local is not None else cache
        known_bad = entry is not None and not entry.is_valid(NOW)
        case = (online, cache, local, pre, lao, unknown, d)
        # The CSMS is asked exactly when online and not pre-authorized by a valid entry.
        assert (d.verdict is ASK) == (online and not (pre and entry is not None and not known_bad))
        # A card the station knows to be refused is never started locally.
        if known_bad:
            assert d.verdict is not ACCEPT, case
        if not online and known_bad:
            assert d.status == entry.effective_status(NOW), case
        if d.verdict is REJECT:
            assert d.status not in (None, A.accepted), case
        if d.verdict is ACCEPT:
            assert d.status == A.accepted, case


def test_local_decision_keeps_the_entrys_parent_and_expiry():
    d = decide(
        id_tag="04A1B2C3",
        online=False,
        now=NOW,
        cache_entry=VALID,
        local_list_entry=None,
        local_pre_authorize=False,
        local_authorize_offline=True,
        allow_offline_tx_for_unknown_id=False,
    )
    assert d.id_tag_info() == IdTagInfo(A.accepted, LATER, "FLEET")


def test_unknown_offline_acceptance_has_no_parent():
    d = decide(
        id_tag="NEW",
        online=False,
        now=NOW,
        cache_entry=None,
        local_list_entry=None,
        local_pre_authorize=False,
        local_authorize_offline=True,
        allow_offline_tx_for_unknown_id=True,
    )
    assert d.id_tag_info() == IdTagInfo(A.accepted)


def test_ask_csms_has_no_local_answer():
    with pytest.raises(ValueError):
        Decision(ASK, None, "online").id_tag_info()


# -- IdTagInfo -----------------------------------------------------------------------


def test_from_ocpp_full():
    info = IdTagInfo.from_ocpp(
        {"status": "Accepted", "expiryDate": "2026-03-31T12:00:00.000Z", "parentIdTag": "FLEET"}
    )
    assert info == IdTagInfo(A.accepted, LATER, "FLEET")
    assert info.to_ocpp() == {
        "status": "Accepted",
        "expiryDate": "2026-03-31T12:00:00.000Z",
        "parentIdTag": "FLEET",
    }


def test_from_ocpp_minimal_and_offset_dates():
    assert IdTagInfo.from_ocpp({"status": "Blocked"}) == BLOCKED
    assert IdTagInfo.from_ocpp({"status": "Blocked"}).to_ocpp() == {"status": "Blocked"}
    info = IdTagInfo.from_ocpp({"status": "Accepted", "expiryDate": "2026-03-01T14:00:00+02:00"})
    assert info.expiry_date == NOW


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, KeyError),
        ({"status": "Maybe"}, ValueError),
        ({"status": "Accepted", "expiryDate": "tomorrow"}, ValueError),
    ],
)
def test_from_ocpp_malformed_raises(data, error):
    with pytest.raises(error):
        IdTagInfo.from_ocpp(data)


def test_validity_and_effective_status():
    assert VALID.is_valid(NOW)
    assert FOREVER.is_valid(NOW)
    assert not PAST_EXPIRY.is_valid(NOW)
    assert PAST_EXPIRY.effective_status(NOW) == A.expired
    assert PAST_EXPIRY.effective_status(EARLIER - timedelta(seconds=1)) == A.accepted
    assert BLOCKED.effective_status(NOW) == A.blocked
    assert not IdTagInfo(A.blocked, LATER).is_valid(NOW)


# -- who may stop a transaction -----------------------------------------------------------


@pytest.mark.parametrize(
    ("started_by", "started_parent", "presenter", "presenter_parent", "allowed"),
    [
        ("AAA", None, "AAA", None, True),
        ("AAA", "P", "aaa", None, True),  # CiString20: case-insensitive
        ("AAA", "P", "BBB", "P", True),
        ("AAA", "fleet", "BBB", "FLEET", True),
        ("AAA", "P", "BBB", "Q", False),
        ("AAA", None, "BBB", None, False),  # no parent on either side is not "the same parent"
        ("AAA", None, "BBB", "P", False),
        ("AAA", "P", "BBB", None, False),
    ],
)
def test_may_stop(started_by, started_parent, presenter, presenter_parent, allowed):
    assert (
        may_stop(
            started_by=started_by,
            started_parent=started_parent,
            presenter=presenter,
            presenter_parent=presenter_parent,
        )
        is allowed
    )
