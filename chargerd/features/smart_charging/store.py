"""Charging profiles on disk: one row each, the profile in wire form, replaced atomically.

A SetChargingProfile that replaces a profile (same id, or same connector,
purpose and stack level) deletes and inserts in one SQLite transaction, so a
power cut in the middle leaves either the old profile or the new one, never
both and never neither.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from chargerd.clock import iso
from chargerd.features.smart_charging.model import Profile, ProfileRejected, parse_profile
from chargerd.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Installed:
    profile: Profile
    wire: dict  # csChargingProfiles as the CSMS sent it (camelCase)
    tx_local_id: int | None = None  # a TxProfile's transaction (chargerd's local id)


class ProfileStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    def load(self) -> dict[int, Installed]:
        """Every stored profile; one that no longer parses is logged and dropped."""
        out: dict[int, Installed] = {}
        bad: list[int] = []
        rows = self._store.query(
            "SELECT id, connector_id, tx_local_id, profile FROM charging_profiles"
        )
        for row in rows:
            try:
                wire = json.loads(row["profile"])
                profile = parse_profile(wire, int(row["connector_id"]))
            except (ValueError, ProfileRejected) as exc:
                log.error(
                    "stored charging profile %s is unreadable (%s); dropping it", row["id"], exc
                )
                bad.append(int(row["id"]))
                continue
            out[profile.id] = Installed(profile, wire, row["tx_local_id"])
        if bad:
            self.delete(bad)
        return out

    def install(self, item: Installed, *, now: datetime) -> None:
        """Store ``item``, replacing a profile with its id or its connector/purpose/stack level."""
        p = item.profile
        with self._store.transaction():
            self._store.execute(
                "DELETE FROM charging_profiles WHERE id = ? "
                "OR (connector_id = ? AND purpose = ? AND stack_level = ?)",
                (p.id, p.connector_id, p.purpose, p.stack_level),
            )
            self._store.execute(
                "INSERT INTO charging_profiles"
                "(id, connector_id, purpose, stack_level, tx_local_id, profile, installed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    p.id,
                    p.connector_id,
                    p.purpose,
                    p.stack_level,
                    item.tx_local_id,
                    json.dumps(item.wire, separators=(",", ":")),
                    iso(now),
                ),
            )

    def delete(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        with self._store.transaction():
            self._store.executemany(
                "DELETE FROM charging_profiles WHERE id = ?", [(i,) for i in ids]
            )
