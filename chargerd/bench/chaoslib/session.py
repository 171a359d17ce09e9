"""One randomized chaos session: a fresh station, random driving, random injections, checks.

The session is one sequence of steps drawn from a seeded random generator.
Most steps are what drivers do (plug, card, charge, suspend, card or remote
stop, unplug, wait); every few steps comes an injection drawn from a shuffled
deck, so that each kind shows up in every few sessions:

- kill -9 of the daemon (during a start, while charging, during a stop, while
  it replays its outbox, or idle), then a restart; or a SIGTERM restart;
- the CSMS killed, hanging, answering slowly, cutting the TCP connection
  (at random, or right under a CALLRESULT), answering with CALLERRORs; the
  station's network cut;
- hardware faults from the mock station;
- a full state disk (sessions whose state directory is on a tiny tmpfs).

Injections that last (a CSMS down, a fault) are *conditions* with a deadline:
driving goes on meanwhile, since the station must keep charging by its
offline rules, and each condition is healed when its time is up.  At the end
everything is healed, every transaction stopped, the outbox drained, the
daemon stopped with SIGTERM, and :func:`invariants.check_session` judges.

Timing is real (this is the real daemon), so a seed fixes the plan, not the
exact interleaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from chargerd.bench.chaoslib import tinydisk
from chargerd.bench.chaoslib.injections import (
    Condition,
    Injections,
    is_online,
    is_registered,
    no_transaction,
    store_integrity,
)
from chargerd.bench.chaoslib.invariants import check_session
from chargerd.bench.chaoslib.journal import Journal
from chargerd.bench.chaoslib.profiles import ProfileDriver, check_profiles
from chargerd.bench.chaoslib.records import DiskFull, Event, FaultWindow, Knowledge, Verdict
from chargerd.bench.chaoslib.reserve_list import ReserveListActions, check_reservations_and_list
from chargerd.bench.chaoslib.station import Station
from chargerd.bench.csms.certs import TestCa, server_context
from chargerd.bench.csms.csms import BenchCsms, CsmsCallError
from chargerd.bench.rig import StationRig

log = logging.getLogger(__name__)

CARDS = ("0A1B2C3D", "0A1B2C3E", "11223344", "55667788", "99AABBCC")
BLOCKED_CARD = "DEADBEEF"
TX_ATTEMPTS = 5  # retries at 1, 2, 3, 4 s: a CALLERROR window under 10 s is survived
DECK = (
    "kill",
    "kill",
    "kill",
    "term",
    "csms_kill",
    "csms_hang",
    "csms_slow",
    "csms_drop",
    "csms_cut_answer",
    "csms_callerror",
    "network",
    "hw_fault",
    "hw_fault",
)

#: Injections that trouble the link (a hardware fault's notification is not owed during them).
DISTURBING = frozenset(
    {
        "csms_kill",
        "csms_hang",
        "csms_slow",
        "csms_drop",
        "csms_cut_answer",
        "csms_callerror",
        "network",
    }
)


@dataclass
class SessionSpec:
    index: int
    seed: int
    seconds: float  # how long the random driving lasts
    workdir: Path
    tiny_disk: bool  # state directory on a small tmpfs, with disk-full episodes
    long_hangs: bool  # sometimes let a hung CALL run into the station's 30 s call timeout
    tls: int = 0  # 2 or 3: the link runs under that security profile (wss://, test CA)


@dataclass
class SessionResult:
    index: int
    cp_id: str
    verdict: Verdict
    injected: Counter[str]
    steps: int
    seconds: float
    log_path: Path
    connectors: int
    notes: list[str] = field(default_factory=list)


TLS_PASSWORD = "chaos-tls-password"


def tls_setup(spec: SessionSpec, cp_id: str) -> tuple[ssl.SSLContext | None, dict]:
    """A test CA, the CSMS's TLS context and the station's [csms] options for --tls.

    Profile 2: TLS with HTTP Basic; profile 3: TLS with the station's client certificate
    (which the CSMS requires), no Basic credentials."""
    if not spec.tls:
        return None, {}
    certs = spec.workdir / "tls"
    certs.mkdir(parents=True, exist_ok=True)
    ca = TestCa(certs)
    cert, key = ca.issue("127.0.0.1", certs / "server.pem", certs / "server.key", server=True)
    options: dict = {"security_profile": spec.tls, "ca_file": str(ca.pem)}
    if spec.tls == 3:
        station_certs = spec.workdir / "state" / "certs"
        ca.issue(
            cp_id, station_certs / "charge_point.pem", station_certs / "charge_point.key",
            server=False,
        )  # fmt: skip
        return server_context(cert, key, client_ca=ca.pem), options
    options["basic_auth_password"] = TLS_PASSWORD
    return server_context(cert, key), options


class ChaosSession(Injections, ReserveListActions):
    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        self.rng = random.Random(f"chargerd-chaos-{spec.seed}-{spec.index}")
        # The injections' order has its own generator: how many driving steps run
        # between two injections depends on the daemon's timing, their order does not.
        self.deck_rng = random.Random(f"chargerd-chaos-deck-{spec.seed}-{spec.index}")
        self.cp_id = f"CHAOS-{spec.seed}-{spec.index}"
        self.connectors = self.rng.choice((1, 1, 2))
        self.injected: Counter[str] = Counter()
        self.notes: list[str] = []
        self.conditions: dict[str, Condition] = {}
        self.faults: list[FaultWindow] = []
        self.disk_full: list[DiskFull] = []
        self.disturbed = False  # a CSMS/network injection happened during the current fault
        self.deck: list[str] = []
        self.events: list[Event] = []
        self.steps = 0
        self.next_injection = 0.0
        self.cut_armed = False
        self.st: Station
        self.init_reserve_list()  # reservations and local list updates, own generator
        # Smart charging: random profiles, from a generator of their own.
        self.profiles = ProfileDriver(
            random.Random(f"chargerd-chaos-profiles-{spec.seed}-{spec.index}"), self.connectors
        )

    # -- the run ------------------------------------------------------------------------------

    async def run(self) -> SessionResult:
        started = time.monotonic()
        spec = self.spec
        spec.workdir.mkdir(parents=True, exist_ok=True)
        state_dir = spec.workdir / "state"
        mounted = False
        if spec.tiny_disk:
            try:
                tinydisk.mount_tiny(state_dir)
                mounted = True
            except tinydisk.TinyDiskUnavailable as exc:
                self.notes.append(f"disk-full episodes skipped: {exc}")
        journal = self.journal = Journal(self.cp_id)
        csms = BenchCsms(on_frame=self._on_frame, max_frames=1000)
        for card in CARDS:
            csms.cards[card] = "Accepted"
        csms.cards[BLOCKED_CARD] = "Blocked"
        tls, csms_options = tls_setup(spec, self.cp_id)
        basic = {self.cp_id: TLS_PASSWORD} if "basic_auth_password" in csms_options else None
        port = await csms.start("127.0.0.1", 0, ssl_context=tls, basic_auth=basic)
        rig = StationRig(
            spec.workdir,
            csms_url=f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/ocpp",
            csms=csms_options,
            charge_point_id=self.cp_id,
            connectors=self.connectors,
            ocpp={
                "MeterValueSampleInterval": self.rng.choice((1, 1, 2)),
                "TransactionMessageAttempts": TX_ATTEMPTS,
                "TransactionMessageRetryInterval": 1,
                "StopTransactionOnEVSideDisconnect": self.rng.random() < 0.75,
                "AllowOfflineTxForUnknownId": self.rng.random() < 0.5,
                "ConnectionTimeOut": 30,
            },
        )
        self.st = Station(rig, csms, journal, port)
        self.st.ssl_context = tls
        knowledge = Knowledge(attempts=TX_ATTEMPTS)
        try:
            await self.st.start()
            await self.st.wait_for(is_registered, timeout=15, what="registration")
            deadline = time.monotonic() + spec.seconds
            self.next_injection = time.monotonic() + self.rng.uniform(0.2, 1.0)
            while time.monotonic() < deadline:
                await self._heal_due()
                await self.reserve_list_step_due()
                await self._step()
                self.steps += 1
            await self._settle(knowledge)
        finally:
            await self.st.close()
            if rig.running:
                rig.kill9()
            await csms.stop()
            if mounted:
                tinydisk.unmount(state_dir)
        knowledge.kills = list(self.st.kills)
        knowledge.events = list(self.events)
        knowledge.samples = list(self.st.samples)
        knowledge.faults = list(self.faults)
        knowledge.disk_full = list(self.disk_full)
        knowledge.unexpected_exits = list(self.st.unexpected_exits)
        verdict = check_session(journal.exchanges, knowledge)
        check_reservations_and_list(self.ledger, journal.exchanges, knowledge, verdict)
        check_profiles(knowledge.samples, self.profiles.requests, verdict)
        return SessionResult(
            index=spec.index,
            cp_id=self.cp_id,
            verdict=verdict,
            injected=self.injected,
            steps=self.steps,
            seconds=time.monotonic() - started,
            log_path=rig.log_path,
            connectors=self.connectors,
            notes=self.notes,
        )

    async def _settle(self, k: Knowledge) -> None:
        """Heal everything, end every transaction, drain the outbox, stop with SIGTERM."""
        for kind in list(self.conditions):
            await self._heal(kind)
        if not self.st.up:
            await self.st.restart()
        st = await self.st.wait_for(is_online, timeout=5, what="link up")
        if st is None:
            await self.st.sim("sim.network", up=True)  # skip the reconnect backoff
        for _ in range(3):
            st = await self.st.status()
            for c in st["connectors"]:
                if c["transaction_local_id"] is not None and c["id_tag"]:
                    await self._card(c["id_tag"])
            await self.st.wait_for(no_transaction, timeout=5, what="transactions stopped")
            for c in st["connectors"]:
                self._event("unplug", c["id"])
                await self.st.sim("sim.unplug", connector=c["id"])
            if await self.st.wait_for(no_transaction, timeout=3, what="transactions stopped"):
                break
        done = await self.st.wait_for(
            lambda s: no_transaction(s) and is_online(s) and s["ocpp"]["outbox_pending"] == 0,
            timeout=120,
            what="outbox drained",
        )
        if done is None:
            k.settled = False
            k.settle_detail = f"not drained within 120 s; last status {self.st.last}"
        await self.st.close()
        k.final_exit_code = await self.st.terminate()
        state_dir = Path(self.st.rig.state_dir)
        try:
            k.station_txs, k.outbox_left = self.st.read_station()
            k.integrity = store_integrity(state_dir)
        except Exception as exc:  # a store the checker cannot read is itself a finding
            k.integrity = f"unreadable: {exc}"
        self.read_list_from_disk(state_dir)

    # -- choosing steps -------------------------------------------------------------------------

    def _schedule_injection(self) -> None:
        self.next_injection = time.monotonic() + self.rng.uniform(0.5, 2.5)

    def _event(self, kind: str, connector: int | None, start: float | None = None) -> None:
        now = time.time()
        self.events.append(Event(kind, connector, now if start is None else start, now))

    async def _card(self, uid: str) -> None:
        self._event("card", None)
        await self.st.sim("sim.card", uid=uid, await_outcome=False)  # as a driver would

    async def _step(self) -> None:
        if time.monotonic() >= self.next_injection:
            if "hw_fault" in self.conditions and self._peek() in DISTURBING:
                # A hardware fault is judged on a calm link (its StatusNotification is
                # owed then): the CSMS's troubles wait until the fault is healed.
                self._schedule_injection()
            else:
                kind = self._draw()
                self.injected[kind] += 1
                await getattr(self, f"_inject_{kind}")()
                self._schedule_injection()
                return
        st = self.st.last or await self.st.status()
        conns = st.get("connectors", [])
        if not conns:
            await asyncio.sleep(0.2)
            return
        c = self.rng.choice(conns)
        unplugged = c["ev_state"] == "A"
        in_tx = c["transaction_local_id"] is not None
        options: list[tuple[float, str]] = [(1.5, "wait")]
        if unplugged:
            options.append((4, "plug"))
        else:
            options += [(1.5, "charge"), (0.4, "suspend"), (0.8, "unplug")]
            if not in_tx:
                options += [(4, "card_start"), (0.6, "remote_start"), (0.2, "blocked_card")]
        if in_tx:
            options += [(1.0, "card_stop"), (0.6, "remote_stop")]
        options.append((0.8, "profile"))
        (name,) = self.rng.choices([n for _, n in options], [w for w, _ in options])
        await getattr(self, f"_do_{name}")(c)

    def _peek(self) -> str:
        kind = self._draw()
        self.deck.append(kind)
        return kind

    def _draw(self) -> str:
        if not self.deck:
            self.deck = list(DECK)
            self.deck_rng.shuffle(self.deck)
            if self.spec.tiny_disk:
                self.deck.append("disk_full")  # first: it is what the tiny disk is for
        return self.deck.pop()

    # -- driving --------------------------------------------------------------------------------

    async def _do_wait(self, c: dict) -> None:
        await asyncio.sleep(self.rng.uniform(0.3, 2.0))

    async def _do_plug(self, c: dict) -> None:
        await self.st.sim("sim.plug", connector=c["id"])
        if self.rng.random() < 0.7:
            await self.st.sim("sim.charge", connector=c["id"])

    async def _do_charge(self, c: dict) -> None:
        await self.st.sim("sim.charge", connector=c["id"])

    async def _do_suspend(self, c: dict) -> None:
        await self.st.sim("sim.suspend", connector=c["id"])

    async def _do_unplug(self, c: dict) -> None:
        self._event("unplug", c["id"])
        await self.st.sim("sim.unplug", connector=c["id"])

    def _free_card(self) -> str:
        busy = {c.get("id_tag") for c in self.st.last.get("connectors", [])}
        free = [card for card in CARDS if card not in busy]
        return self.rng.choice(free or list(CARDS))

    async def _do_card_start(self, c: dict) -> None:
        await self._card(self._free_card())
        await asyncio.sleep(0.1)

    async def _do_blocked_card(self, c: dict) -> None:
        await self._card(BLOCKED_CARD)

    async def _do_card_stop(self, c: dict) -> None:
        if c.get("id_tag"):
            await self._card(c["id_tag"])
        await asyncio.sleep(0.1)

    def _csms_reachable(self) -> bool:
        return (
            self.st.csms_up
            and self.st.csms.is_connected(self.cp_id)
            and self.st.up
            and not self.st.csms.hang
        )

    async def _do_remote_start(self, c: dict) -> None:
        if not self._csms_reachable():
            return
        payload = {"idTag": self._free_card(), "connectorId": c["id"]}
        with contextlib.suppress(CsmsCallError, TimeoutError, ConnectionError, OSError):
            await self.st.csms.call(self.cp_id, "RemoteStartTransaction", payload, timeout=5)

    async def _do_profile(self, c: dict) -> None:
        if self._csms_reachable():
            await self.profiles.step(
                self.st.csms,
                self.cp_id,
                (CsmsCallError, TimeoutError, ConnectionError, OSError),
            )

    async def _do_remote_stop(self, c: dict) -> None:
        tid = c.get("transaction_id")
        if tid is None or not self._csms_reachable():
            await self._do_card_stop(c)
            return
        self._event("remote_stop", c["id"])
        with contextlib.suppress(CsmsCallError, TimeoutError, ConnectionError, OSError):
            await self.st.csms.call(
                self.cp_id, "RemoteStopTransaction", {"transactionId": tid}, timeout=5
            )


async def run_session(spec: SessionSpec) -> SessionResult:
    return await ChaosSession(spec).run()
