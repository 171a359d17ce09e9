"""Local Auth List Management (OCPP 1.6 §5.15, §5.6, §9.3): the list the CSMS maintains.

The CSMS sends the list with SendLocalList (Full: replace everything;
Differential: add, change, or remove the entries that carry no idTagInfo) and
a listVersion; GetLocalListVersion reads the version back.  The list outranks
the authorization cache (:func:`chargerd.features.authz.decide`) and the cache
never writes into it: the operator's list is authoritative, the cache only
remembers answers.

Every update is one SQLite transaction: the entries and the version commit
together or not at all, so a crash or a power cut in the middle of a
10,000-entry update leaves the previous list whole with its own version, and
the CSMS's next Differential update is judged against a version it really
sent.  An update that would break a limit (LocalAuthListMaxLength,
SendLocalListMaxLength) or that is malformed changes nothing and is answered
Failed.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ocpp.exceptions import (
    FormationViolationError,
    ProtocolError,
    TypeConstraintViolationError,
)
from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, AuthorizationStatus, UpdateStatus, UpdateType

from chargerd.clock import iso, parse_iso
from chargerd.features.authz import IdTagInfo
from chargerd.features.configuration import ConfigurationService
from chargerd.store import Store, StoreError

log = logging.getLogger(__name__)

#: How many entries the list holds, and how many one SendLocalList may carry.  A
#: 10,000-entry message is about 600 kB: the [csms] max_frame_bytes must allow it.
DEFAULT_MAX_LENGTH = 10_000

#: A test hook: with CHARGERD_CRASH_POINT=local_list.mid_update in its environment the
#: daemon kills itself (SIGKILL, like a power cut) half-way through writing an update,
#: inside the SQLite transaction.  The end-to-end tests use it to prove atomicity.
CRASH_POINT_ENV = "CHARGERD_CRASH_POINT"
CRASH_MID_UPDATE = "local_list.mid_update"


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_POINT_ENV) == name:
        log.critical("crash point %s reached: killing the process", name)
        os.kill(os.getpid(), signal.SIGKILL)


def declare_keys(config: ConfigurationService, *, max_length: int = DEFAULT_MAX_LENGTH) -> None:
    """The profile's configuration keys (§9.3); declared before the [ocpp] table is applied."""
    config.declare("LocalAuthListEnabled", True, type=bool)
    config.declare("LocalAuthListMaxLength", max_length, type=int, readonly=True)
    config.declare("SendLocalListMaxLength", max_length, type=int, readonly=True)


class UpdateRefused(ValueError):
    """An update that cannot be applied; ``status`` is the answer to give."""

    def __init__(self, status: UpdateStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class Entry:
    """One list entry; ``info`` None means "remove" (Differential only)."""

    id_tag: str
    info: IdTagInfo | None


_STATUSES = frozenset(str(s) for s in AuthorizationStatus)
_ITEM_KEYS = frozenset({"id_tag", "id_tag_info"})
_INFO_KEYS = frozenset({"status", "expiry_date", "parent_id_tag"})


# The codes ocpp's schema validation gives (1.6 spelling): a missing required field is a
# ProtocolError, a wrong type or a too long string a TypeConstraintViolation, an unknown
# field or a value outside an enum a FormationViolation.


def _id_token(value: object, what: str) -> str:
    """A CiString20, or the CALLERROR the schema would have raised."""
    if not isinstance(value, str):
        raise TypeConstraintViolationError(details={"cause": f"{what} is not a string"})
    if len(value) > 20:
        raise TypeConstraintViolationError(
            details={"cause": f"{what} {value[:40]!r} is longer than 20 characters"}
        )
    return value


def _check_item(item: object) -> None:
    """The schema of one localAuthorizationList entry, checked by hand (see on_send_local_list)."""
    if not isinstance(item, dict):
        raise TypeConstraintViolationError(details={"cause": "an entry is not an object"})
    if "id_tag" not in item:
        raise ProtocolError(details={"cause": "an entry has no idTag"})
    if not _ITEM_KEYS.issuperset(item):
        raise FormationViolationError(details={"cause": f"unknown fields in {str(item)[:100]}"})
    _id_token(item["id_tag"], "idTag")
    info = item.get("id_tag_info")
    if info is None:
        return
    if not isinstance(info, dict):
        raise TypeConstraintViolationError(details={"cause": "idTagInfo is not an object"})
    if not _INFO_KEYS.issuperset(info):
        raise FormationViolationError(details={"cause": f"unknown fields in {str(info)[:100]}"})
    if "status" not in info:
        raise ProtocolError(details={"cause": "an idTagInfo has no status"})
    if info["status"] not in _STATUSES:
        raise FormationViolationError(
            details={"cause": f"idTagInfo.status {str(info.get('status'))[:40]!r} is not valid"}
        )
    if info.get("parent_id_tag") is not None:
        _id_token(info["parent_id_tag"], "parentIdTag")
    if info.get("expiry_date") is not None and not isinstance(info["expiry_date"], str):
        raise TypeConstraintViolationError(details={"cause": "expiryDate is not a string"})


def parse_entries(raw: list[dict[str, Any]] | None, *, full: bool) -> list[Entry]:
    """The snake_case ``local_authorization_list`` as entries.

    Raises the OCPPError of a schema violation (a CALLERROR), or UpdateRefused
    (Failed) for what the schema allows but the station cannot apply: a Full
    update needs an idTagInfo on every entry (there is nothing to remove), and
    an idTag listed twice is refused rather than guessed at.
    """
    entries: list[Entry] = []
    seen: set[str] = set()
    for item in raw or []:
        _check_item(item)
        id_tag = item["id_tag"]
        if not id_tag:
            raise UpdateRefused(UpdateStatus.failed, "an entry has an empty idTag")
        key = id_tag.casefold()
        if key in seen:
            raise UpdateRefused(UpdateStatus.failed, f"idTag {id_tag} is listed twice")
        seen.add(key)
        info_raw = item.get("id_tag_info")
        if info_raw is None:
            if full:
                raise UpdateRefused(
                    UpdateStatus.failed, f"idTag {id_tag} has no idTagInfo in a Full update"
                )
            entries.append(Entry(id_tag, None))
            continue
        try:
            expiry = info_raw.get("expiry_date")
            info = IdTagInfo(
                status=AuthorizationStatus(info_raw["status"]),
                expiry_date=parse_iso(expiry) if expiry else None,
                parent_id_tag=info_raw.get("parent_id_tag") or None,
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise UpdateRefused(
                UpdateStatus.failed, f"idTag {id_tag}: malformed idTagInfo ({exc})"
            ) from None
        entries.append(Entry(id_tag, info))
    return entries


def _row(entry: Entry) -> tuple[str, str, str | None, str | None]:
    info = entry.info
    assert info is not None
    return (
        entry.id_tag,
        str(info.status),
        iso(info.expiry_date) if info.expiry_date else None,
        info.parent_id_tag,
    )


class LocalAuthList:
    """The persisted list (tables ``local_list`` and ``local_list_version``, migration 0021)."""

    def __init__(self, store: Store, config: ConfigurationService) -> None:
        self._store = store
        self._config = config
        self.on_changed: list[Any] = []  # callables run after each applied update

    # -- reading -----------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return bool(self._config.get("LocalAuthListEnabled"))

    def get(self, id_tag: str) -> IdTagInfo | None:
        """The entry of ``id_tag`` (case-insensitive); None when absent or the list is off."""
        if not self.enabled:
            return None
        return self.lookup(id_tag)

    def lookup(self, id_tag: str) -> IdTagInfo | None:
        """The entry regardless of LocalAuthListEnabled (for the cache's "never overwrite")."""
        row = self._store.query_one(
            "SELECT status, expiry_date, parent_id_tag FROM local_list WHERE id_tag = ?",
            (id_tag,),
        )
        return None if row is None else IdTagInfo.from_row(row)

    def contains(self, id_tag: str) -> bool:
        return self.lookup(id_tag) is not None

    def stored_version(self) -> int:
        """The version of the list on disk (0 before any update)."""
        row = self._store.query_one("SELECT version FROM local_list_version WHERE id = 1")
        return int(row["version"]) if row else 0

    def __len__(self) -> int:
        return int(self._store.query_one("SELECT COUNT(*) AS n FROM local_list")["n"])

    def version(self) -> int:
        """GetLocalListVersion: -1 when the list is disabled, 0 when it is empty."""
        if not self.enabled:
            return -1
        if len(self) == 0:
            return 0
        return self.stored_version()

    # -- updating ----------------------------------------------------------------------

    def apply(self, *, list_version: int, update_type: str, entries: list[Entry]) -> None:
        """Apply one SendLocalList atomically; UpdateRefused when it must not be applied.

        Raises StoreError / sqlite3.Error when the disk refuses: nothing changed then.
        """
        full = UpdateType(update_type) == UpdateType.full
        if list_version < 1:
            # 0 means "empty" and -1 "disabled" in GetLocalListVersion: not a list's version.
            raise UpdateRefused(
                UpdateStatus.version_mismatch, f"listVersion {list_version} is reserved"
            )
        send_max = int(self._config.get("SendLocalListMaxLength"))
        if len(entries) > send_max:
            raise UpdateRefused(
                UpdateStatus.failed,
                f"{len(entries)} entries in one update, SendLocalListMaxLength is {send_max}",
            )
        current = self.stored_version()
        if not full and list_version <= current:
            raise UpdateRefused(
                UpdateStatus.version_mismatch,
                f"Differential update to version {list_version}, the list is at {current}",
            )
        max_len = int(self._config.get("LocalAuthListMaxLength"))
        with self._store.transaction():
            if full:
                self._store.execute("DELETE FROM local_list")
                self._store.executemany(
                    "INSERT INTO local_list(id_tag, status, expiry_date, parent_id_tag) "
                    "VALUES (?, ?, ?, ?)",
                    self._rows_with_crash_point(entries),
                )
            else:
                removed = [(e.id_tag,) for e in entries if e.info is None]
                kept = [e for e in entries if e.info is not None]
                self._store.executemany("DELETE FROM local_list WHERE id_tag = ?", removed)
                self._store.executemany(
                    "INSERT INTO local_list(id_tag, status, expiry_date, parent_id_tag) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT(id_tag) DO UPDATE SET "
                    "status = excluded.status, expiry_date = excluded.expiry_date, "
                    "parent_id_tag = excluded.parent_id_tag",
                    self._rows_with_crash_point(kept),
                )
            size = len(self)
            if size > max_len:
                # Raising inside the transaction rolls the whole update back.
                raise UpdateRefused(
                    UpdateStatus.failed,
                    f"the list would hold {size} entries, LocalAuthListMaxLength is {max_len}",
                )
            self._store.execute(
                "INSERT INTO local_list_version(id, version) VALUES (1, ?) "
                "ON CONFLICT(id) DO UPDATE SET version = excluded.version",
                (list_version,),
            )
        log.info(
            "local authorization list: %s update to version %d applied (%d entries sent, "
            "%d in the list)",
            "Full" if full else "Differential",
            list_version,
            len(entries),
            size,
        )
        for callback in self.on_changed:
            callback()

    @staticmethod
    def _rows_with_crash_point(entries: list[Entry]) -> Iterator[tuple]:
        half = len(entries) // 2
        for i, entry in enumerate(entries):
            if i == half and half > 0:
                _crash_point(CRASH_MID_UPDATE)
            yield _row(entry)

    # -- OCPP ----------------------------------------------------------------------------

    # The generic JSON-schema validation takes about 300 ms for a 10,000-entry list on a
    # small VM (several seconds on a Pi); the same rules are checked by hand in a tenth of
    # that, with the same CALLERRORs, so that a big Full update is applied well within 1 s.
    # One leniency: the handler sees snake_case keys, so a field spelt "list_version" on
    # the wire passes for "listVersion".
    @on(Action.send_local_list, skip_schema_validation=True)
    def on_send_local_list(
        self,
        list_version: int | None = None,
        update_type: str | None = None,
        local_authorization_list: list[dict[str, Any]] | None = None,
        **unknown: Any,
    ) -> call_result.SendLocalList:
        if unknown:
            raise FormationViolationError(details={"cause": f"unknown fields {sorted(unknown)}"})
        if list_version is None or update_type is None:
            raise ProtocolError(
                details={"cause": "listVersion and updateType are required"}
            )
        if not isinstance(list_version, int) or isinstance(list_version, bool):
            raise TypeConstraintViolationError(details={"cause": "listVersion is not an integer"})
        if update_type not in ("Full", "Differential"):
            raise FormationViolationError(
                details={"cause": f"updateType {str(update_type)[:40]!r} is not Full/Differential"}
            )
        if local_authorization_list is not None and not isinstance(local_authorization_list, list):
            raise TypeConstraintViolationError(
                details={"cause": "localAuthorizationList is not an array"}
            )
        if not self.enabled:
            log.info("SendLocalList refused: LocalAuthListEnabled is false")
            return call_result.SendLocalList(status=UpdateStatus.not_supported)
        try:
            entries = parse_entries(
                local_authorization_list, full=UpdateType(update_type) == UpdateType.full
            )
            self.apply(list_version=list_version, update_type=update_type, entries=entries)
        except UpdateRefused as exc:
            log.warning("SendLocalList (version %s) answered %s: %s", list_version, exc.status, exc)
            return call_result.SendLocalList(status=exc.status)
        except (StoreError, sqlite3.Error, OSError) as exc:
            log.error(
                "SendLocalList (version %s) not stored, list unchanged: %s", list_version, exc
            )
            return call_result.SendLocalList(status=UpdateStatus.failed)
        return call_result.SendLocalList(status=UpdateStatus.accepted)

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> call_result.GetLocalListVersion:
        return call_result.GetLocalListVersion(list_version=self.version())
