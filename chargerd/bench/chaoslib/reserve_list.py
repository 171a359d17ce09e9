"""Chaos for the Reservation and Local Auth List profiles: random requests, two invariants.

Every second or few, a session also sends, at random, a ReserveNow (a
connector or connector 0, a driver's card, a short expiry), a CancelReservation,
or a SendLocalList (Full or Differential, sometimes a large one with a kill -9
right behind it).  Its own random generator keeps the driving and injection
plans of a seed unchanged.  Judged afterwards:

- **A reservation never lets a foreign idTag start**: no StartTransaction on a
  connector while a reservation the station accepted holds it for another
  idTag (between the answer and its expiry, its cancellation, its use, or a
  hardware fault that ends it); a StartTransaction naming a reservationId is
  for that reservation's idTag.
- **The list version on disk is always one the CSMS sent whole**: the
  version and the entries read from the station's SQLite file (and every
  GetLocalListVersion answer) are exactly one of the lists the CSMS sent.

Sessions on a tiny disk send no reservations: their disk-full check presents a
card on a plugged idle connector and expects the "transaction refused" of a
full disk, not a reservation's refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from chargerd.bench.csms.csms import CsmsCallError
from chargerd.bench.rig import RigCommandError
from chargerd.clock import iso, parse_iso

if TYPE_CHECKING:
    from chargerd.bench.chaoslib.journal import Exchange
    from chargerd.bench.chaoslib.records import Knowledge, Verdict

log = logging.getLogger(__name__)

CALL_ERRORS = (CsmsCallError, TimeoutError, ConnectionError, OSError, ConnectionClosed)
LIST_TAGS = 400  # list entries use their own idTags: the driving's cards stay cache-judged

Content = frozenset[tuple[str, str]]


@dataclass
class Reserved:
    rid: int
    connector: int
    id_tag: str
    accepted_at: float  # epoch: the Accepted answer arrived
    expiry: float  # epoch
    ended_at: float = float("inf")  # epoch: a CancelReservation was sent


@dataclass
class ReserveListLedger:
    """What the session asked of the two profiles, and what the station answered."""

    reservations: list[Reserved] = field(default_factory=list)
    lists: dict[int, Content] = field(default_factory=lambda: {0: frozenset()})
    known_version: int | None = 0  # the version the station is known to hold; None: unsure
    next_version: int = 1
    next_rid: int = 1
    reported_versions: list[int] = field(default_factory=list)  # GetLocalListVersion answers
    disk: tuple[int, Content] | None = None  # read from the station's file at the end
    disk_error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


class ReserveListActions:
    """Mixed into ChaosSession: the random profile requests (needs .st, .spec, .cp_id)."""

    def init_reserve_list(self) -> None:
        spec = self.spec  # type: ignore[attr-defined]
        self.rl_rng = random.Random(f"chargerd-chaos-reserve-list-{spec.seed}-{spec.index}")
        self.ledger = ReserveListLedger()
        self.next_rl_step = time.monotonic() + self.rl_rng.uniform(1.0, 3.0)

    async def reserve_list_step_due(self) -> None:
        if time.monotonic() < self.next_rl_step:
            return
        self.next_rl_step = time.monotonic() + self.rl_rng.uniform(1.0, 4.0)
        st = self.st  # type: ignore[attr-defined]
        reachable = st.csms_up and st.csms.is_connected(self.cp_id)  # type: ignore[attr-defined]
        if not (st.up and reachable and not st.csms.hang):
            return
        kinds = ["send_list", "send_list"]
        if not self.spec.tiny_disk:  # type: ignore[attr-defined]
            kinds += ["reserve", "reserve", "cancel"]
            # An Available connector is rare while EVs come and go: reserve it when seen.
            conns = st.last.get("connectors", [])
            if any(c.get("status") == "Available" for c in conns):
                kinds += ["reserve"] * 4
        kind = self.rl_rng.choice(kinds)
        try:
            await getattr(self, f"_rl_{kind}")()
        except (RigCommandError, *CALL_ERRORS) as exc:
            log.info("reservation/list step %s: %s", kind, exc)

    async def _call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.st.csms.call(self.cp_id, action, payload, timeout=5)  # type: ignore[attr-defined]

    # -- reservations ------------------------------------------------------------------------

    async def _rl_reserve(self) -> None:
        from chargerd.bench.chaoslib.session import CARDS

        rng, ledger = self.rl_rng, self.ledger
        # Mostly a connector that is Available (the others answer Occupied, less to judge).
        conns = self.st.last.get("connectors", [])  # type: ignore[attr-defined]
        free = [c["id"] for c in conns if c.get("status") == "Available"]
        connector = 0 if rng.random() < 0.25 else rng.choice(free or [c["id"] for c in conns])
        card = rng.choice(CARDS)
        seconds = rng.uniform(2.0, 12.0)
        rid = ledger.next_rid
        ledger.next_rid += 1
        payload = {
            "connectorId": connector,
            "expiryDate": iso(datetime.now(UTC) + timedelta(seconds=seconds)),
            "idTag": card,
            "reservationId": rid,
        }
        expiry = parse_iso(payload["expiryDate"]).timestamp()
        answer = await self._call("ReserveNow", payload)
        ledger.count(f"ReserveNow {answer.get('status')}")
        if answer.get("status") == "Accepted":
            ledger.reservations.append(Reserved(rid, connector, card, time.time(), expiry))

    async def _rl_cancel(self) -> None:
        ledger = self.ledger
        now = time.time()
        live = [r for r in ledger.reservations if r.ended_at == float("inf") and r.expiry > now]
        if not live:
            return
        r = self.rl_rng.choice(live)
        r.ended_at = time.time()  # protection ends when the request leaves
        answer = await self._call("CancelReservation", {"reservationId": r.rid})
        ledger.count(f"CancelReservation {answer.get('status')}")

    # -- the local list ----------------------------------------------------------------------

    async def _rl_send_list(self) -> None:
        rng, ledger = self.rl_rng, self.ledger
        if ledger.known_version is None:
            answer = await self._call("GetLocalListVersion", {})
            reported = int(answer["listVersion"])
            ledger.reported_versions.append(reported)
            if reported not in ledger.lists and reported != 0:
                return  # a violation, judged at the end; nothing to build on
            ledger.known_version = reported if reported in ledger.lists else 0
        base = ledger.lists[ledger.known_version]
        version = ledger.next_version
        ledger.next_version += 1
        big = rng.random() < 0.25
        if not base or rng.random() < 0.4:
            kind = "Full"
            size = rng.randint(300, 500) if big else rng.randint(0, 30)
            tags = rng.sample(range(LIST_TAGS * 2), min(size, LIST_TAGS * 2))
            content = frozenset((f"LIST{t:05d}", rng.choice(("Accepted", "Blocked"))) for t in tags)
            items = [{"idTag": t, "idTagInfo": {"status": s}} for t, s in sorted(content)]
        else:
            kind = "Differential"
            current = dict(base)
            items = []
            for tag in rng.sample(sorted(current), min(len(current), rng.randint(0, 5))):
                del current[tag]
                items.append({"idTag": tag})
            for t in rng.sample(range(LIST_TAGS * 2), rng.randint(1, 10)):
                tag, status = f"LIST{t:05d}", rng.choice(("Accepted", "Blocked"))
                if tag in {i["idTag"] for i in items}:
                    continue
                current[tag] = status
                items.append({"idTag": tag, "idTagInfo": {"status": status}})
            content = frozenset(current.items())
        ledger.lists[version] = content
        payload = {"listVersion": version, "updateType": kind, "localAuthorizationList": items}
        kill = big and rng.random() < 0.5
        ledger.known_version = None  # until the answer says otherwise
        if kill:
            call = asyncio.ensure_future(self._call("SendLocalList", payload))
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            await self._kill_and_restart("list update")  # type: ignore[attr-defined]
            with contextlib.suppress(*CALL_ERRORS):
                answer = await call
                self._list_answer(version, answer)
            ledger.count("SendLocalList with a kill -9 behind it")
            return
        answer = await self._call("SendLocalList", payload)
        self._list_answer(version, answer)

    def _list_answer(self, version: int, answer: dict[str, Any]) -> None:
        ledger = self.ledger
        status = answer.get("status")
        ledger.count(f"SendLocalList {status}")
        if status == "Accepted":
            ledger.known_version = version
        elif status in ("Failed", "VersionMismatch", "NotSupported"):
            ledger.known_version = None  # unchanged, but ask rather than assume

    def read_list_from_disk(self, state_dir: Path) -> None:
        """The version and entries on disk, read after the daemon stopped."""
        db = state_dir / "chargerd.db"
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT version FROM local_list_version WHERE id = 1").fetchone()
                rows = conn.execute("SELECT id_tag, status FROM local_list").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            self.ledger.disk_error = str(exc)
            return
        self.ledger.disk = (int(row[0]) if row else 0, frozenset((t, s) for t, s in rows))


# -- the invariants --------------------------------------------------------------------------


def _epoch(text: Any) -> float | None:
    try:
        return parse_iso(str(text)).timestamp()
    except ValueError:
        return None


def check_reservations_and_list(
    ledger: ReserveListLedger, exchanges: list[Exchange], k: Knowledge, v: Verdict
) -> None:
    by_rid = {r.rid: r for r in ledger.reservations}
    starts = [ex for ex in exchanges if ex.action == "StartTransaction"]
    used: dict[int, float] = {}
    for ex in starts:
        rid = ex.payload.get("reservationId")
        ts = _epoch(ex.payload.get("timestamp"))
        if rid is None or ts is None:
            continue
        r = by_rid.get(rid)
        if r is None or r.id_tag.casefold() != str(ex.payload.get("idTag", "")).casefold():
            v.add(
                "reservation",
                f"StartTransaction {ex.payload} names reservation {rid}, which was "
                f"{'never accepted' if r is None else 'for ' + r.id_tag}",
            )
        used.setdefault(rid, ts)
    for r in ledger.reservations:
        if r.connector == 0:
            continue
        end = min(r.expiry, r.ended_at, used.get(r.rid, float("inf")))
        for f in k.faults:  # a Faulted connector ends its reservation (§5.13)
            if f.on >= r.accepted_at and f.connector in (None, r.connector):
                end = min(end, f.on)
        for ex in starts:
            ts = _epoch(ex.payload.get("timestamp"))
            if ts is None or ex.payload.get("connectorId") != r.connector:
                continue
            tag = str(ex.payload.get("idTag", ""))
            if r.accepted_at < ts < end and tag.casefold() != r.id_tag.casefold():
                v.add(
                    "reservation",
                    f"{tag} started on connector {r.connector} at {ts:.3f} while reservation "
                    f"{r.rid} held it for {r.id_tag} ({r.accepted_at:.3f} .. {end:.3f})",
                )
        v.counts["reservations checked"] += 1
    v.counts["starts checked against reservations"] += len(starts)
    for version in ledger.reported_versions:
        if version != 0 and version not in ledger.lists:
            v.add("local list", f"GetLocalListVersion answered {version}, never sent")
    if ledger.disk_error is not None:
        v.add("local list", f"the list on disk is unreadable: {ledger.disk_error}")
    elif ledger.disk is not None:
        version, content = ledger.disk
        if ledger.lists.get(version) != content:
            v.add(
                "local list",
                f"version {version} on disk with {len(content)} entries is not the list the CSMS "
                f"sent as version {version} ({len(ledger.lists.get(version, ()))} entries)",
            )
        v.counts["list versions checked on disk"] += 1
    for what, n in ledger.counts.items():
        v.counts[what] += n
