"""The authorization decision (OCPP 1.6 §3.5), as one pure function.

Where an idTag may start a transaction is decided here from what is known at
that instant: the link state, the local list and cache entries, and the four
configuration keys that govern local and offline authorization.  Asking the
CSMS, updating the cache and timing out live in :mod:`chargerd.features.auth`;
keeping the rules free of I/O lets one table test cover every combination.

Rules, in order:

- The Local Authorization List outranks the cache (the operator maintains the
  list; the cache only remembers past answers).
- Online: a valid entry is accepted at once with LocalPreAuthorize, anything
  else is asked of the CSMS (a cached Blocked is not final while the CSMS can
  be asked: the operator may have unblocked the card).
- Offline: a known entry decides with LocalAuthorizeOffline (valid: accept;
  Invalid/Blocked/Expired/ConcurrentTx: reject with that status).  A known
  but refused entry is rejected even when LocalAuthorizeOffline is false, so
  that AllowOfflineTxForUnknownId can never let a card the station knows to be
  blocked through as "unknown".  A valid entry with LocalAuthorizeOffline false,
  or no entry, is unknown: AllowOfflineTxForUnknownId decides.
- idTags are CiString20, compared case-insensitively.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ocpp.v16.enums import AuthorizationStatus

from chargerd.clock import iso, parse_iso


@dataclass(frozen=True, slots=True)
class IdTagInfo:
    """What the CSMS (or the local list) says about an idTag."""

    status: AuthorizationStatus
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None

    @classmethod
    def from_ocpp(cls, data: dict[str, Any]) -> IdTagInfo:
        """From a camelCase idTagInfo; raises ValueError/KeyError on a malformed one."""
        expiry = data.get("expiryDate")
        return cls(
            status=AuthorizationStatus(data["status"]),
            expiry_date=parse_iso(expiry) if expiry else None,
            parent_id_tag=data.get("parentIdTag") or None,
        )

    @classmethod
    def from_row(cls, row: Any) -> IdTagInfo:
        """From a stored row (status, expiry_date, parent_id_tag): the cache and the list."""
        return cls(
            status=AuthorizationStatus(row["status"]),
            expiry_date=parse_iso(row["expiry_date"]) if row["expiry_date"] else None,
            parent_id_tag=row["parent_id_tag"],
        )

    def to_ocpp(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": str(self.status)}
        if self.expiry_date is not None:
            out["expiryDate"] = iso(self.expiry_date)
        if self.parent_id_tag is not None:
            out["parentIdTag"] = self.parent_id_tag
        return out

    def effective_status(self, now: datetime) -> AuthorizationStatus:
        """The status at ``now``: an Accepted entry past its expiryDate counts as Expired."""
        if (
            self.status == AuthorizationStatus.accepted
            and self.expiry_date is not None
            and self.expiry_date <= now
        ):
            return AuthorizationStatus.expired
        return self.status

    def is_valid(self, now: datetime) -> bool:
        return self.effective_status(now) == AuthorizationStatus.accepted


class Verdict(enum.Enum):
    ACCEPT_LOCALLY = "accept_locally"  # start now, without asking the CSMS
    ASK_CSMS = "ask_csms"  # send Authorize.req and follow its answer
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict, the status to act on, and why (for the log line a technician reads)."""

    verdict: Verdict
    status: AuthorizationStatus | None  # None for ASK_CSMS
    reason: str
    entry: IdTagInfo | None = None  # the list or cache entry the verdict rests on

    def id_tag_info(self) -> IdTagInfo:
        """The IdTagInfo to act on for a local verdict (keeps the entry's parent and expiry)."""
        if self.status is None:
            raise ValueError("an ASK_CSMS decision has no local IdTagInfo")
        if self.entry is None:
            return IdTagInfo(status=self.status)
        return IdTagInfo(self.status, self.entry.expiry_date, self.entry.parent_id_tag)


def decide(
    *,
    id_tag: str,
    online: bool,
    now: datetime,
    cache_entry: IdTagInfo | None,
    local_list_entry: IdTagInfo | None,
    local_pre_authorize: bool,
    local_authorize_offline: bool,
    allow_offline_tx_for_unknown_id: bool,
) -> Decision:
    """Decide what to do with ``id_tag``; see the module docstring for the rules.

    ``cache_entry`` is None when AuthorizationCacheEnabled is false,
    ``local_list_entry`` None when LocalAuthListEnabled is false.  ``id_tag``
    is not consulted (the caller looked the entries up); it keeps call sites
    self-explanatory.
    """
    entry, source = (
        (local_list_entry, "local list") if local_list_entry is not None else (cache_entry, "cache")
    )
    if online:
        if local_pre_authorize and entry is not None and entry.is_valid(now):
            return Decision(
                Verdict.ACCEPT_LOCALLY,
                AuthorizationStatus.accepted,
                f"online, LocalPreAuthorize, valid in the {source}",
                entry,
            )
        return Decision(Verdict.ASK_CSMS, None, "online")

    if entry is not None:
        status = entry.effective_status(now)
        if status != AuthorizationStatus.accepted:
            return Decision(Verdict.REJECT, status, f"offline, {status} in the {source}", entry)
        if local_authorize_offline:
            return Decision(
                Verdict.ACCEPT_LOCALLY,
                AuthorizationStatus.accepted,
                f"offline, LocalAuthorizeOffline, valid in the {source}",
                entry,
            )
    unknown = "unknown" if entry is None else "LocalAuthorizeOffline off"
    if allow_offline_tx_for_unknown_id:
        return Decision(
            Verdict.ACCEPT_LOCALLY,
            AuthorizationStatus.accepted,
            f"offline, {unknown}, AllowOfflineTxForUnknownId",
            entry,
        )
    return Decision(
        Verdict.REJECT,
        AuthorizationStatus.invalid,
        f"offline, {unknown}, AllowOfflineTxForUnknownId off",
        entry,
    )


def same_id_tag(a: str | None, b: str | None) -> bool:
    """CiString20 equality: case-insensitive, and None never equals anything."""
    return a is not None and b is not None and a.casefold() == b.casefold()


def may_stop(
    *,
    started_by: str,
    started_parent: str | None,
    presenter: str,
    presenter_parent: str | None,
) -> bool:
    """Whether ``presenter`` may end a transaction started by ``started_by`` (§3.5.4).

    The same idTag, or another one under the same (non-empty) parentIdTag: a
    fleet's cards stop each other's sessions.
    """
    return same_id_tag(started_by, presenter) or same_id_tag(started_parent, presenter_parent)
