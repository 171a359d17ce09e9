"""One randomized chaos session: a fresh station, random driving, random injections, checks.

The session is one sequence of steps drawn from a seeded random generator.
Most steps are what drivers do (plug, card, charge, suspend, card or remote
stop, unplug, wait); every few steps comes an injection drawn from a shuffled
deck, so that each kind shows up in every few sessions:

- kill -9 of the daemon (during a start, while charging, during a stop, while
  it replays its outbox, or idle), then a restart; or a SIGTERM restart;
- the CSMS killed, hanging, answering slowly, cutting the TCP connection,
  answering with CALLERRORs; the station's network cut;
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
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from chargerd.benchcsms.csms import BenchCsms, CsmsCallError
from chargerd.chaoslib import tinydisk
from chargerd.chaoslib.invariants import (
    DiskFull,
    Event,
    FaultWindow,
    Knowledge,
    Verdict,
    check_session,
)
from chargerd.chaoslib.journal import Journal
from chargerd.chaoslib.station import Station
from chargerd.rig import StationRig

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
    "csms_callerror",
    "network",
    "hw_fault",
    "hw_fault",
)
HW_FAULTS = ("meter_silent", "contactor_welded", "lock_jammed", "reader_dead", "ev_error")
CALLERROR_ACTIONS = (
    "StartTransaction",
    "StopTransaction",
    "MeterValues",
    "StatusNotification",
    "Authorize",
    "Heartbeat",
    "BootNotification",
)


@dataclass
class SessionSpec:
    index: int
    seed: int
    seconds: float  # how long the random driving lasts
    workdir: Path
    tiny_disk: bool  # state directory on a small tmpfs, with disk-full episodes
    long_hangs: bool  # sometimes let a hung CALL run into the station's 30 s call timeout


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


@dataclass
class _Condition:
    kind: str
    until: float
    heal: object  # async callable


class ChaosSession:
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
        self.conditions: dict[str, _Condition] = {}
        self.faults: list[FaultWindow] = []
        self.disk_full: list[DiskFull] = []
        self.disturbed = False  # a CSMS/network injection happened during the current fault
        self.deck: list[str] = []
        self.events: list[Event] = []
        self.steps = 0
        self.next_injection = 0.0
        self.st: Station

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
        journal = Journal(self.cp_id)
        csms = BenchCsms(on_frame=journal.on_frame, max_frames=1000)
        for card in CARDS:
            csms.cards[card] = "Accepted"
        csms.cards[BLOCKED_CARD] = "Blocked"
        port = await csms.start("127.0.0.1", 0)
        rig = StationRig(
            spec.workdir,
            csms_url=f"ws://127.0.0.1:{port}/ocpp",
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
        knowledge = Knowledge(attempts=TX_ATTEMPTS)
        try:
            await self.st.start()
            await self.st.wait_for(_registered, timeout=15, what="registration")
            deadline = time.monotonic() + spec.seconds
            self.next_injection = time.monotonic() + self.rng.uniform(0.2, 1.0)
            while time.monotonic() < deadline:
                await self._heal_due()
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
        st = await self.st.wait_for(_online, timeout=5, what="link up")
        if st is None:
            await self.st.sim("sim.network", up=True)  # skip the reconnect backoff
        for _ in range(3):
            st = await self.st.status()
            for c in st["connectors"]:
                if c["transaction_local_id"] is not None and c["id_tag"]:
                    await self._card(c["id_tag"])
            await self.st.wait_for(_no_tx, timeout=5, what="transactions stopped")
            for c in st["connectors"]:
                self._event("unplug", c["id"])
                await self.st.sim("sim.unplug", connector=c["id"])
            if await self.st.wait_for(_no_tx, timeout=3, what="transactions stopped"):
                break
        done = await self.st.wait_for(
            lambda s: _no_tx(s) and _online(s) and s["ocpp"]["outbox_pending"] == 0,
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
            k.integrity = _integrity(state_dir)
        except Exception as exc:  # a store the checker cannot read is itself a finding
            k.integrity = f"unreadable: {exc}"

    # -- choosing steps -------------------------------------------------------------------------

    def _schedule_injection(self) -> None:
        self.next_injection = time.monotonic() + self.rng.uniform(0.5, 2.5)

    def _event(self, kind: str, connector: int | None, start: float | None = None) -> None:
        now = time.time()
        self.events.append(Event(kind, connector, now if start is None else start, now))

    async def _card(self, uid: str) -> None:
        self._event("card", None)
        await self.st.sim("sim.card", uid=uid)

    async def _step(self) -> None:
        if time.monotonic() >= self.next_injection:
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
        (name,) = self.rng.choices([n for _, n in options], [w for w, _ in options])
        await getattr(self, f"_do_{name}")(c)

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

    # -- conditions ------------------------------------------------------------------------------

    def _hold(self, kind: str, seconds: float, heal) -> None:
        self.conditions[kind] = _Condition(kind, time.monotonic() + seconds, heal)
        if kind != "hw_fault" and "hw_fault" in self.conditions:
            self.disturbed = True

    async def _heal_due(self) -> None:
        now = time.monotonic()
        for kind, cond in list(self.conditions.items()):
            if cond.until <= now:
                await self._heal(kind)

    async def _heal(self, kind: str) -> None:
        cond = self.conditions.pop(kind, None)
        if cond is not None:
            await cond.heal()

    # -- injections: the daemon -------------------------------------------------------------------

    async def _inject_kill(self) -> None:
        st = await self.st.status()
        conns = st["connectors"]
        idle_plugged = [
            c for c in conns if c["ev_state"] != "A" and c["transaction_local_id"] is None
        ]
        in_tx = [c for c in conns if c["transaction_local_id"] is not None]
        charging = [c for c in conns if c["status"] == "Charging"]
        variants = ["idle", "replay"]
        if idle_plugged:
            variants.append("start")
        if in_tx:
            variants.append("stop")
        if charging:
            variants += ["charging", "charging"]
        when = self.rng.choice(variants)
        if when == "start":
            await self._card(self._free_card())
            await asyncio.sleep(self.rng.uniform(0.0, 0.4))
        elif when == "stop":
            c = self.rng.choice(in_tx)
            await self._card(c["id_tag"])
            await asyncio.sleep(self.rng.uniform(0.0, 0.3))
        elif when == "replay":
            await self._make_backlog()
            await asyncio.sleep(self.rng.uniform(0.0, 0.5))
        await self._kill_and_restart(when)

    async def _make_backlog(self) -> None:
        """Cut the CSMS off while messages queue up, then let the station start replaying."""
        if "csms_kill" not in self.conditions:
            await self.st.csms_down()
            self.disturbed = True
            await asyncio.sleep(self.rng.uniform(1.0, 2.5))
        else:
            self.conditions.pop("csms_kill")
        await self.st.csms_restart()
        await self.st.sim("sim.network", up=True)  # reconnect now rather than after the backoff
        await self.st.wait_for(_online, timeout=5, what="reconnect")

    async def _kill_and_restart(self, when: str) -> None:
        kill = await self.st.kill(when)
        if "hw_fault" in self.conditions:
            # The mock hardware lives in the daemon: its injected faults die with it.
            cond = self.conditions.pop("hw_fault")
            await cond.heal(ended_at=kill.before, reinject=False)
        await asyncio.sleep(self.rng.uniform(0.0, 1.5))
        await self.st.restart()
        await self._maybe_wait_registered()

    async def _maybe_wait_registered(self) -> None:
        """Mostly let the station register again before driving on (drivers wait too)."""
        if self.rng.random() < 0.7:
            await self.st.wait_for(_online, timeout=5, what="registered again")

    async def _inject_term(self) -> None:
        self._event("term", None)
        code = await self.st.terminate()
        if code != 0:
            self.st.unexpected_exits.append(f"SIGTERM restart gave exit code {code}")
        if "hw_fault" in self.conditions:
            cond = self.conditions.pop("hw_fault")
            await cond.heal(ended_at=time.time(), reinject=False)
        await self.st.restart()
        await self._maybe_wait_registered()

    # -- injections: the CSMS and the network ---------------------------------------------------

    async def _inject_csms_kill(self) -> None:
        if "csms_kill" in self.conditions:
            return
        await self.st.csms_down()
        self._hold("csms_kill", self._outage(), self._csms_back)

    def _outage(self) -> float:
        return self.rng.uniform(0.3, 6.0 if self.spec.long_hangs else 2.5)

    async def _csms_back(self) -> None:
        await self.st.csms_restart()

    async def _inject_csms_hang(self) -> None:
        if "csms_hang" in self.conditions:
            return
        self.st.csms.hang = True
        self._hold("csms_hang", self.rng.uniform(1.0, 4.0), self._unhang)

    async def _unhang(self) -> None:
        self.st.csms.hang = False
        if not self.spec.long_hangs or self.rng.random() < 0.6:
            # A hung CSMS is usually found out by a ping timeout: the link goes down.
            with contextlib.suppress(Exception):
                await self.st.csms.drop(self.cp_id)
        else:
            # The CALL the CSMS swallowed holds the station's one outstanding CALL
            # until its 30 s timeout: everything else waits behind it meanwhile.
            self._hold("hung_call", 31.0, _nothing)

    async def _inject_csms_slow(self) -> None:
        self.st.csms.delay_s = self.rng.uniform(0.2, 3.0)
        self._hold("csms_slow", self.rng.uniform(2.0, 6.0), self._fast)

    async def _fast(self) -> None:
        self.st.csms.delay_s = 0.0

    async def _inject_csms_drop(self) -> None:
        self.disturbed = "hw_fault" in self.conditions or self.disturbed
        with contextlib.suppress(Exception):
            await self.st.csms.drop(self.cp_id)

    async def _inject_csms_callerror(self) -> None:
        k = self.rng.randint(1, 3)
        self.st.csms.callerror_actions = set(self.rng.sample(CALLERROR_ACTIONS, k))
        self._hold("csms_callerror", self.rng.uniform(1.0, 3.0), self._no_callerror)

    async def _no_callerror(self) -> None:
        self.st.csms.callerror_actions = set()

    async def _inject_network(self) -> None:
        if "network" in self.conditions:
            return
        await self.st.sim("sim.network", up=False)
        self._hold("network", self.rng.uniform(0.5, 3.0), self._network_up)

    async def _network_up(self) -> None:
        await self.st.sim("sim.network", up=True)

    # -- injections: hardware ----------------------------------------------------------------------

    async def _inject_hw_fault(self) -> None:
        if "hw_fault" in self.conditions:
            return
        st = await self.st.status()
        kind = self.rng.choice(HW_FAULTS)
        connector = None
        if kind != "reader_dead":
            busy = [c["id"] for c in st["connectors"] if c["transaction_local_id"] is not None]
            connector = self.rng.choice(busy or [c["id"] for c in st["connectors"]])
        healthy_at_start = _online(st) and self._calm()
        if not await self.st.sim("sim.fault", name=kind, on=True, connector=connector):
            return
        on = time.time()
        self.disturbed = False

        async def heal(ended_at: float | None = None, reinject: bool = True) -> None:
            if reinject:
                await self.st.sim("sim.fault", name=kind, on=False, connector=connector)
            off = ended_at if ended_at is not None else time.time()
            healthy = healthy_at_start and not self.disturbed and self._calm()
            self.faults.append(FaultWindow(kind, connector, on, off, healthy))
            self.events.append(Event("fault", connector, on, off))

        self._hold("hw_fault", self.rng.uniform(1.5, 5.0), heal)
        if kind == "contactor_welded" and connector is not None and self.rng.random() < 0.7:
            # A weld shows only when the contactor is told to open: end the session.
            await asyncio.sleep(self.rng.uniform(0.3, 1.0))
            for c in st["connectors"]:
                if c["id"] == connector and c["id_tag"]:
                    await self._card(c["id_tag"])

    def _calm(self) -> bool:
        """The CSMS answers normally (a hardware fault then owes a StatusNotification)."""
        csms = self.st.csms
        return (
            self.st.csms_up
            and not csms.hang
            and csms.delay_s == 0
            and not csms.callerror_actions
            and "network" not in self.conditions
            and "hung_call" not in self.conditions
        )

    # -- injections: the disk -------------------------------------------------------------------

    async def _inject_disk_full(self) -> None:
        """Fill the state disk, present a card on a plugged idle connector, then free it."""
        for kind in list(self.conditions):
            await self._heal(kind)
        st = await self.st.wait_for(
            lambda s: _online(s) and s["ocpp"]["outbox_pending"] == 0,
            timeout=20,
            what="a quiet station",
        )
        if st is None:
            self.notes.append("a disk-full episode was skipped: the station did not quieten")
            return
        for c in st["connectors"]:
            if c["transaction_local_id"] is not None and c["id_tag"]:
                await self._card(c["id_tag"])
        st = await self.st.wait_for(_no_tx, timeout=5, what="no transaction")
        if st is None or st["ocpp"]["outbox_pending"]:
            st = await self.st.wait_for(
                lambda s: _no_tx(s) and s["ocpp"]["outbox_pending"] == 0, timeout=20, what="quiet"
            )
        if st is None:
            self.notes.append("a disk-full episode was skipped: transactions did not end")
            return
        target = st["connectors"][0]
        if target["ev_state"] == "A":
            await self.st.sim("sim.plug", connector=target["id"])
        await self.st.sim("sim.charge", connector=target["id"])
        await self.st.wait_for(lambda s: s["connectors"][0]["ev_state"] != "A", timeout=3, what="")
        state_dir = Path(self.st.rig.state_dir)
        log_start = self.st.rig.log_path.stat().st_size
        armed = tinydisk.truncate_wal(state_dir / "chargerd.db")
        tinydisk.fill(state_dir)
        t = time.time()
        try:
            await self._card(self._free_card())
            st = await self.st.wait_for(
                lambda s: s["connectors"][0]["transaction_local_id"] is not None,
                timeout=2.5,
                what="a transaction on a full disk",
            )
            started = st is not None
            alive = self.st.rig.running
            text = _log_since(self.st.rig.log_path, log_start)
            refused = "transaction refused" in text
        finally:
            tinydisk.free(state_dir)
        self.disk_full.append(DiskFull(t, armed, refused, started, alive))


async def _nothing() -> None:
    return None


# -- status predicates --------------------------------------------------------------------------


def _registered(st: dict) -> bool:
    return st["ocpp"]["registration"] == "Accepted"


def _online(st: dict) -> bool:
    return bool(st["ocpp"]["connected"]) and st["ocpp"]["registration"] == "Accepted"


def _no_tx(st: dict) -> bool:
    return all(c["transaction_local_id"] is None for c in st["connectors"])


def _log_since(path: Path, offset: int) -> str:
    with open(path, errors="replace") as f:
        f.seek(offset)
        return f.read()


def _integrity(state_dir: Path) -> str:
    try:
        return tinydisk.integrity(state_dir / "chargerd.db")
    except Exception as exc:
        return f"unreadable: {exc}"


async def run_session(spec: SessionSpec) -> SessionResult:
    return await ChaosSession(spec).run()
