"""The authorization cache (real SQLite file) and the Authorizer (a fake link, real config)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from ocpp.v16.enums import AuthorizationStatus as A
from ocpp.v16.enums import ClearCacheStatus

from chargerd.clock import ManualClock, iso
from chargerd.features.auth import AuthorizationCache, Authorizer
from chargerd.features.authz import IdTagInfo
from chargerd.features.configuration import ConfigurationService, declare_core_keys
from chargerd.store import Store


class NotConnected(ConnectionError):
    """Stands in for the link's own error: the authorizer must not need to know its class."""


class CallErrorReceived(Exception):
    pass


class FakeLink:
    """Answers Authorize from a table, or raises what it is told to."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.answers: dict[str, dict] = {}
        self.error: BaseException | None = None

    async def call(self, action: str, payload: dict) -> dict:
        self.calls.append((action, payload))
        if self.error is not None:
            raise self.error
        return self.answers[payload["idTag"]]


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "chargerd.db")
    yield s
    s.close()


@pytest.fixture
def config(store):
    svc = ConfigurationService(store)
    declare_core_keys(svc, connectors=1, supported_measurands={"Energy.Active.Import.Register"})
    return svc


@pytest.fixture
def cache(store, clock, config):
    return AuthorizationCache(store, clock, config, max_entries=1000)


@pytest.fixture
def link():
    return FakeLink()


@pytest.fixture
def authorizer(cache, link, config, clock):
    return Authorizer(cache, link, config, clock)


# -- the cache -------------------------------------------------------------------------


def test_update_then_get(cache, clock):
    expiry = clock.now() + timedelta(days=7)
    cache.update(
        "04A1B2C3", {"status": "Accepted", "expiryDate": iso(expiry), "parentIdTag": "FLEET"}
    )
    assert cache.get("04A1B2C3") == IdTagInfo(A.accepted, expiry, "FLEET")
    assert cache.get("04a1b2c3") == IdTagInfo(A.accepted, expiry, "FLEET")  # CiString20
    assert cache.get("FFFFFFFF") is None


def test_a_newer_answer_replaces_the_entry(cache):
    cache.update("TAG", {"status": "Accepted"})
    cache.update("tag", {"status": "Blocked"})
    assert cache.get("TAG") == IdTagInfo(A.blocked)
    assert len(cache) == 1


def test_concurrent_tx_is_not_cached(cache):
    cache.update("TAG", {"status": "Accepted", "parentIdTag": "P"})
    cache.update("TAG", {"status": "ConcurrentTx"})
    assert cache.get("TAG") == IdTagInfo(A.accepted, None, "P")


def test_malformed_info_is_skipped_with_a_warning(cache, caplog):
    with caplog.at_level(logging.WARNING):
        cache.update("TAG", {"status": "Perhaps"})
        cache.update("TAG", {})
    assert cache.get("TAG") is None
    assert "TAG" in caplog.text


def test_disabled_cache_neither_remembers_nor_answers(cache, config):
    cache.update("OLD", {"status": "Accepted"})
    config.set("AuthorizationCacheEnabled", "false")
    cache.update("NEW", {"status": "Accepted"})
    assert cache.get("OLD") is None
    config.set("AuthorizationCacheEnabled", "true")
    assert cache.get("OLD") == IdTagInfo(A.accepted)
    assert cache.get("NEW") is None


def test_entries_survive_a_restart(tmp_path, clock):
    path = tmp_path / "restart.db"
    store = Store.open(path)
    config = ConfigurationService(store)
    declare_core_keys(config, connectors=1, supported_measurands=set())
    AuthorizationCache(store, clock, config).update("TAG", {"status": "Accepted"})
    store.close()
    store = Store.open(path)
    with store:
        config = ConfigurationService(store)
        declare_core_keys(config, connectors=1, supported_measurands=set())
        assert AuthorizationCache(store, clock, config).get("TAG") == IdTagInfo(A.accepted)


def test_full_cache_evicts_the_oldest(store, clock, config):
    cache = AuthorizationCache(store, clock, config, max_entries=3)
    for tag in ("A", "B", "C"):
        cache.update(tag, {"status": "Accepted"})
        clock.advance(1)
    cache.update("A", {"status": "Accepted"})  # A is fresh again
    clock.advance(1)
    cache.update("D", {"status": "Accepted"})
    assert [t for t in "ABCD" if cache.get(t)] == ["A", "C", "D"]
    assert len(cache) == 3


def test_full_cache_evicts_entries_that_are_no_longer_valid_first(store, clock, config):
    cache = AuthorizationCache(store, clock, config, max_entries=3)
    cache.update("OLD_VALID", {"status": "Accepted"})
    clock.advance(1)
    cache.update("BLOCKED", {"status": "Blocked"})
    clock.advance(1)
    cache.update(
        "SOON_EXPIRED",
        {"status": "Accepted", "expiryDate": iso(clock.now() + timedelta(seconds=5))},
    )
    clock.advance(10)
    cache.update("NEW1", {"status": "Accepted"})
    cache.update("NEW2", {"status": "Accepted"})
    assert cache.get("OLD_VALID") is not None
    assert cache.get("BLOCKED") is None
    assert cache.get("SOON_EXPIRED") is None
    assert len(cache) == 3


def test_the_entry_just_written_is_never_evicted(store, clock, config):
    cache = AuthorizationCache(store, clock, config, max_entries=2)
    cache.update("A", {"status": "Accepted"})
    cache.update("B", {"status": "Accepted"})
    clock.advance(1)
    cache.update("BAD", {"status": "Invalid"})  # the newest answer is kept, even if refused
    assert cache.get("BAD") == IdTagInfo(A.invalid)
    assert len(cache) == 2


def test_clear_cache(cache):
    cache.update("A", {"status": "Accepted"})
    cache.update("B", {"status": "Blocked"})
    result = cache.on_clear_cache()
    assert result.status == ClearCacheStatus.accepted
    assert len(cache) == 0
    assert cache.get("A") is None


def test_clear_cache_while_disabled_still_empties_it(cache, config):
    cache.update("A", {"status": "Accepted"})
    config.set("AuthorizationCacheEnabled", "false")
    assert cache.on_clear_cache().status == ClearCacheStatus.accepted
    config.set("AuthorizationCacheEnabled", "true")
    assert cache.get("A") is None


def test_clear_cache_rejected_when_the_store_fails(cache, store, caplog):
    store.close()
    with caplog.at_level(logging.ERROR):
        assert cache.on_clear_cache().status == ClearCacheStatus.rejected
    assert "ClearCache failed" in caplog.text


# -- the authorizer ----------------------------------------------------------------------


async def test_online_asks_the_csms_and_caches_the_answer(authorizer, link, cache):
    link.answers["TAG"] = {"idTagInfo": {"status": "Accepted", "parentIdTag": "P"}}
    info = await authorizer.authorize("TAG", online=True)
    assert info == IdTagInfo(A.accepted, None, "P")
    assert link.calls == [("Authorize", {"idTag": "TAG"})]
    assert cache.get("TAG") == IdTagInfo(A.accepted, None, "P")


async def test_online_refusal_is_returned_and_cached(authorizer, link, cache):
    cache.update("TAG", {"status": "Accepted"})
    link.answers["TAG"] = {"idTagInfo": {"status": "Blocked"}}
    assert (await authorizer.authorize("TAG", online=True)).status == A.blocked
    assert cache.get("TAG").status == A.blocked


async def test_local_pre_authorize_skips_the_csms(authorizer, link, cache, config):
    config.set("LocalPreAuthorize", "true")
    cache.update("TAG", {"status": "Accepted", "parentIdTag": "P"})
    assert await authorizer.authorize("TAG", online=True) == IdTagInfo(A.accepted, None, "P")
    assert link.calls == []


async def test_offline_uses_the_cache_without_calling(authorizer, link, cache):
    cache.update("TAG", {"status": "Accepted"})
    cache.update("BAD", {"status": "Blocked"})
    assert (await authorizer.authorize("TAG", online=False)).status == A.accepted
    assert (await authorizer.authorize("BAD", online=False)).status == A.blocked
    assert (await authorizer.authorize("NEW", online=False)).status == A.invalid
    assert link.calls == []


async def test_offline_unknown_with_allowance(authorizer, config):
    config.set("AllowOfflineTxForUnknownId", "true")
    assert (await authorizer.authorize("NEW", online=False)).status == A.accepted


async def test_an_entry_expires_with_the_clock(authorizer, cache, clock):
    cache.update("TAG", {"status": "Accepted", "expiryDate": iso(clock.now() + timedelta(hours=1))})
    assert (await authorizer.authorize("TAG", online=False)).status == A.accepted
    clock.advance(3601)
    assert (await authorizer.authorize("TAG", online=False)).status == A.expired


@pytest.mark.parametrize(
    "error",
    [NotConnected("link down"), TimeoutError()],
    ids=["not connected", "timeout"],
)
async def test_failed_call_falls_back_to_the_offline_rules(authorizer, link, cache, error, caplog):
    link.error = error
    cache.update("KNOWN", {"status": "Accepted", "parentIdTag": "P"})
    with caplog.at_level(logging.WARNING):
        assert await authorizer.authorize("KNOWN", online=True) == IdTagInfo(A.accepted, None, "P")
        assert (await authorizer.authorize("UNKNOWN", online=True)).status == A.invalid
    assert len(link.calls) == 2
    assert "offline rules" in caplog.text
    assert cache.get("KNOWN") == IdTagInfo(A.accepted, None, "P")  # nothing overwritten


class CallResultInvalid(ValueError):
    """Stands in for the link's schema violation error (a ValueError)."""


@pytest.mark.parametrize(
    "answer, error",
    [
        ({"status": "Accepted"}, None),  # idTagInfo missing
        ({"idTagInfo": {}}, None),  # empty idTagInfo
        ({"idTagInfo": {"status": "Great"}}, None),  # no such status
        (None, CallResultInvalid("invalid Authorize CALLRESULT")),
        (None, CallErrorReceived("InternalError")),
    ],
    ids=["no idTagInfo", "empty idTagInfo", "unknown status", "schema violation", "CALLERROR"],
)
async def test_an_answer_that_is_not_valid_is_a_refusal_not_an_outage(
    authorizer, link, config, cache, answer, error, caplog
):
    # With the most permissive offline rules, an answer that is not valid must still
    # not turn into a free transaction: the CSMS is there, it did not say yes.
    config.set("AllowOfflineTxForUnknownId", "true")
    cache.update("TAG", {"status": "Accepted"})
    link.answers["TAG"] = answer
    link.error = error
    with caplog.at_level(logging.WARNING):
        assert (await authorizer.authorize("TAG", online=True)).status == A.invalid
    assert "refused" in caplog.text and "offline rules" not in caplog.text
    assert cache.get("TAG") == IdTagInfo(A.accepted)  # nothing learnt from nonsense


async def test_with_the_cache_disabled_answers_are_not_remembered(authorizer, link, cache, config):
    config.set("AuthorizationCacheEnabled", "false")
    link.answers["TAG"] = {"idTagInfo": {"status": "Accepted"}}
    assert (await authorizer.authorize("TAG", online=True)).status == A.accepted
    assert (await authorizer.authorize("TAG", online=False)).status == A.invalid
    config.set("AuthorizationCacheEnabled", "true")
    assert cache.get("TAG") is None


async def test_local_list_outranks_the_cache(cache, link, config, clock):
    entries = {"TAG": IdTagInfo(A.blocked)}
    authorizer = Authorizer(cache, link, config, clock, local_list=entries.get)
    cache.update("TAG", {"status": "Accepted"})
    cache.update("OTHER", {"status": "Accepted"})
    assert (await authorizer.authorize("TAG", online=False)).status == A.blocked
    assert (await authorizer.authorize("OTHER", online=False)).status == A.accepted


async def test_a_silent_csms_does_not_keep_the_driver_waiting(
    authorizer, link, cache, config, monkeypatch
):
    """No Authorize answer within AUTHORIZE_TIMEOUT_S: the offline rules decide."""
    import asyncio

    import chargerd.features.auth as auth_module

    monkeypatch.setattr(auth_module, "AUTHORIZE_TIMEOUT_S", 0.05)
    never = asyncio.Event()

    async def hang(action: str, payload: dict) -> dict:
        link.calls.append((action, payload))
        await never.wait()
        return {}

    link.call = hang
    cache.update("0A1B2C3D", {"status": "Accepted"})
    info = await asyncio.wait_for(authorizer.authorize("0A1B2C3D", online=True), timeout=2)
    assert info.status == "Accepted"  # LocalAuthorizeOffline + the cached entry
    assert link.calls == [("Authorize", {"idTag": "0A1B2C3D"})]
    unknown = await asyncio.wait_for(authorizer.authorize("99887766", online=True), timeout=2)
    assert unknown.status != "Accepted"
