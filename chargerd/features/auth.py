"""Authorization: the authorization cache, ClearCache, and asking the CSMS.

The decision itself is the pure :func:`chargerd.features.authz.decide`; this
module feeds it (cache and local list lookups, the configuration keys) and
carries out an ASK_CSMS verdict with Authorize.req.

The cache remembers every IdTagInfo the CSMS returns (Authorize,
StartTransaction, StopTransaction) while AuthorizationCacheEnabled is true,
so that a card the CSMS accepted yesterday still works when the link is down
(LocalAuthorizeOffline) or starts at once (LocalPreAuthorize).  It is bounded:
when full, entries that are no longer valid go first, then the least recently
updated, as OCPP 2.0.1 (C10) spells out and 1.6 leaves to the implementation.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import Any, Protocol

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, AuthorizationStatus, ClearCacheStatus

from chargerd.clock import Clock, iso
from chargerd.features.authz import Decision, IdTagInfo, Verdict, decide
from chargerd.store import Store, StoreError

log = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 1000
AUTHORIZE_TIMEOUT_S = 8.0


class _Config(Protocol):
    def get(self, key: str) -> Any: ...


class _Link(Protocol):
    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]: ...


class AuthorizationCache:
    """The persisted authorization cache (table ``auth_cache``, migration 0002)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        config: _Config,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if max_entries < 1:
            raise ValueError("the authorization cache needs room for at least one entry")
        self._store = store
        self._clock = clock
        self._config = config
        self.max_entries = max_entries
        # The Local Auth List plugs in here: an idTag on the operator's list is never
        # cached (OCPP 1.6 §3.5.1), so that the list stays the only word on it.
        self.in_local_list: Callable[[str], bool] = lambda _id_tag: False

    @property
    def enabled(self) -> bool:
        return bool(self._config.get("AuthorizationCacheEnabled"))

    def get(self, id_tag: str) -> IdTagInfo | None:
        """The cached entry (case-insensitive), None when absent or the cache is disabled."""
        if not self.enabled:
            return None
        row = self._store.query_one(
            "SELECT status, expiry_date, parent_id_tag FROM auth_cache WHERE id_tag = ?",
            (id_tag,),
        )
        return None if row is None else IdTagInfo.from_row(row)

    def update(self, id_tag: str, id_tag_info: dict[str, Any] | IdTagInfo) -> None:
        """Remember what the CSMS said about ``id_tag`` (camelCase idTagInfo).

        Ignored while the cache is disabled.  ConcurrentTx is not stored: it
        says the tag is busy in another transaction right now, not what the tag
        is worth, and caching it would refuse the card offline later.  A
        malformed idTagInfo is logged and skipped: this runs inside the
        outbox's delivery of StartTransaction/StopTransaction results, and a
        cache is not worth failing a delivery over.
        """
        if not self.enabled:
            return
        if isinstance(id_tag_info, IdTagInfo):
            info = id_tag_info
        else:
            try:
                info = IdTagInfo.from_ocpp(id_tag_info)
            except (KeyError, ValueError, TypeError):
                log.warning("idTagInfo %r for %s not cached: malformed", id_tag_info, id_tag)
                return
        if info.status == AuthorizationStatus.concurrent_tx:
            return
        if self.in_local_list(id_tag):
            return
        now = iso(self._clock.now())
        with self._store.transaction():
            # REPLACE (delete + insert) gives the row a new rowid: the tie-breaker
            # for entries updated within the same millisecond.
            self._store.execute(
                "INSERT OR REPLACE INTO auth_cache"
                "(id_tag, status, expiry_date, parent_id_tag, updated_at) VALUES (?, ?, ?, ?, ?)",
                (
                    id_tag,
                    str(info.status),
                    iso(info.expiry_date) if info.expiry_date else None,
                    info.parent_id_tag,
                    now,
                ),
            )
            self._evict(keep=id_tag, now=now)

    def _evict(self, *, keep: str, now: str) -> None:
        count = int(self._store.query_one("SELECT COUNT(*) AS n FROM auth_cache")["n"])
        excess = count - self.max_entries
        if excess <= 0:
            return
        self._store.execute(
            "DELETE FROM auth_cache WHERE rowid IN ("
            " SELECT rowid FROM auth_cache WHERE id_tag != ?"
            " ORDER BY (status = 'Accepted' AND (expiry_date IS NULL OR expiry_date > ?)),"
            " updated_at, rowid LIMIT ?)",
            (keep, now, excess),
        )

    def __len__(self) -> int:
        return int(self._store.query_one("SELECT COUNT(*) AS n FROM auth_cache")["n"])

    def clear(self) -> None:
        with self._store.transaction():
            self._store.execute("DELETE FROM auth_cache")

    @on(Action.clear_cache)
    def on_clear_cache(self, **_: Any) -> call_result.ClearCache:
        """Accepted once the cache is empty (also while disabled: stale entries go too)."""
        try:
            self.clear()
        except (StoreError, sqlite3.Error):
            log.exception("ClearCache failed")
            return call_result.ClearCache(status=ClearCacheStatus.rejected)
        log.info("authorization cache cleared by the CSMS")
        return call_result.ClearCache(status=ClearCacheStatus.accepted)


class Authorizer:
    """Authorizes an idTag: locally when the rules allow, otherwise by asking the CSMS."""

    def __init__(
        self,
        cache: AuthorizationCache,
        link: _Link,
        config: _Config,
        clock: Clock,
        *,
        local_list: Callable[[str], IdTagInfo | None] | None = None,
    ) -> None:
        self._cache = cache
        self._link = link
        self._config = config
        self._clock = clock
        # The Local Auth List feature plugs its lookup in here; it returns None
        # when LocalAuthListEnabled is false.
        self._local_list = local_list

    async def authorize(self, id_tag: str, *, online: bool) -> IdTagInfo:
        """The IdTagInfo to act on.  Never raises for a link problem.

        When the CSMS cannot be asked (not connected) or stays silent (no answer
        in time), the offline rules apply: the driver at the station gets the
        operator's offline policy (LocalAuthorizeOffline, AllowOfflineTxForUnknownId)
        instead of an error.  A CSMS that does answer, but with a CALLERROR or a
        result that is not a valid idTagInfo, has not said yes: that is a refusal
        (Invalid), never a free offline transaction.
        """
        decision = self._decide(id_tag, online=online)
        if decision.verdict is not Verdict.ASK_CSMS:
            log.info("idTag %s: %s (%s)", id_tag, decision.status, decision.reason)
            return decision.id_tag_info()
        try:
            # A driver waits at the reader: after AUTHORIZE_TIMEOUT_S the offline rules
            # decide, rather than the link's generic 30 s call timeout.
            result = await asyncio.wait_for(
                self._link.call("Authorize", {"idTag": id_tag}), timeout=AUTHORIZE_TIMEOUT_S
            )
        except (ConnectionError, TimeoutError) as exc:  # unreachable or silent
            fallback = self._decide(id_tag, online=False)
            log.warning(
                "Authorize for %s not answered (%s: %s); offline rules: %s (%s)",
                id_tag,
                type(exc).__name__,
                exc,
                fallback.status,
                fallback.reason,
            )
            return fallback.id_tag_info()
        except Exception as exc:  # the CSMS answered, but with a CALLERROR or nonsense
            return self._refused(id_tag, f"{type(exc).__name__}: {exc}")
        try:
            raw = result["idTagInfo"]
            info = IdTagInfo.from_ocpp(raw)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            return self._refused(id_tag, f"invalid idTagInfo in {result!r} ({exc!r})")
        try:
            self._cache.update(id_tag, raw)
        except (StoreError, sqlite3.Error):
            log.exception("caching the answer for %s failed", id_tag)
        log.info("idTag %s: %s (CSMS)", id_tag, info.status)
        return info

    @staticmethod
    def _refused(id_tag: str, why: str) -> IdTagInfo:
        log.warning("Authorize for %s: the CSMS gave no valid answer (%s); refused", id_tag, why)
        return IdTagInfo(status=AuthorizationStatus.invalid)

    def _decide(self, id_tag: str, *, online: bool) -> Decision:
        get = self._config.get
        return decide(
            id_tag=id_tag,
            online=online,
            now=self._clock.now(),
            cache_entry=self._cache.get(id_tag),
            local_list_entry=self._local_list(id_tag) if self._local_list else None,
            local_pre_authorize=bool(get("LocalPreAuthorize")),
            local_authorize_offline=bool(get("LocalAuthorizeOffline")),
            allow_offline_tx_for_unknown_id=bool(get("AllowOfflineTxForUnknownId")),
        )
