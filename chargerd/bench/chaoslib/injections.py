"""What the chaos runner does to the daemon, the CSMS, the network, the hardware, the disk.

A mixin of :class:`chargerd.bench.chaoslib.session.ChaosSession`, kept apart so that
the session's own file reads as the plan (drive, inject, settle, judge) and
this one as the catalogue of injections.  Each ``_inject_<kind>`` is one card
of the session's deck.  Lasting injections are *conditions*: held until a
deadline, then healed by the session's loop, while driving goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chargerd.bench.chaoslib import tinydisk
from chargerd.bench.chaoslib.invariants import TX_ACTIONS
from chargerd.bench.chaoslib.journal import Journal
from chargerd.bench.chaoslib.records import DiskFull, Event, FaultWindow
from chargerd.bench.chaoslib.station import Station
from chargerd.bench.csms.csms import BenchCsms, FrameRecord

if TYPE_CHECKING:
    from chargerd.bench.chaoslib.session import SessionSpec

log = logging.getLogger(__name__)

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
class Condition:
    kind: str
    until: float
    heal: object  # async callable


class Injections:
    """The injections; the session provides the state they act on."""

    spec: SessionSpec
    rng: random.Random
    cp_id: str
    st: Station
    journal: Journal
    conditions: dict[str, Condition]
    faults: list[FaultWindow]
    disk_full: list[DiskFull]
    events: list[Event]
    disturbed: bool
    cut_armed: bool
    injected: Counter[str]
    notes: list[str]

    # the session's own helpers
    def _event(self, kind: str, connector: int | None, start: float | None = None) -> None: ...
    async def _card(self, uid: str) -> None: ...
    def _free_card(self) -> str: ...

    # -- conditions ------------------------------------------------------------------------------

    def _hold(self, kind: str, seconds: float, heal) -> None:
        self.conditions[kind] = Condition(kind, time.monotonic() + seconds, heal)
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
        """kill -9 at a chosen moment: a start, a charge, a stop, an outbox replay, idle."""
        when = self.rng.choice(("start", "charging", "stop", "replay", "idle"))
        if when == "start":
            c = await self._plugged_idle()
            if c is None:
                when = "idle"
            else:
                await self._card(self._free_card())
                await asyncio.sleep(self.rng.uniform(0.0, 0.4))
        elif when in ("charging", "stop"):
            c = await self._charging()
            if c is None:
                when = "idle"
            elif when == "charging":
                await asyncio.sleep(self.rng.uniform(0.0, 1.5))
            else:
                await self._card(c["id_tag"])
                await asyncio.sleep(self.rng.uniform(0.0, 0.3))
        elif when == "replay":
            await self._make_backlog()
            await asyncio.sleep(self.rng.uniform(0.0, 0.5))
        await self._kill_and_restart(when)

    async def _plugged_idle(self) -> dict | None:
        """A connector with an EV and no transaction (plugging one in if need be)."""
        st = await self.st.status()
        for c in st["connectors"]:
            if c["ev_state"] != "A" and c["transaction_local_id"] is None:
                return c
        for c in st["connectors"]:
            if c["ev_state"] == "A" and c["transaction_local_id"] is None:
                await self.st.sim("sim.plug", connector=c["id"])
                await self.st.sim("sim.charge", connector=c["id"])
                return c
        return None

    async def _charging(self) -> dict | None:
        """A connector in a transaction, preferably Charging; starts one if none runs."""
        st = await self.st.status()
        running = [c for c in st["connectors"] if c["transaction_local_id"] is not None]
        if not running:
            c = await self._plugged_idle()
            if c is None:
                return None
            await self.st.sim("sim.charge", connector=c["id"])
            await self._card(self._free_card())
            n = c["id"]
            st = await self.st.wait_for(
                lambda s: s["connectors"][n - 1]["status"] == "Charging", timeout=4, what=""
            )
            if st is None:
                st = await self.st.status()
            running = [c for c in st["connectors"] if c["transaction_local_id"] is not None]
        charging = [c for c in running if c["status"] == "Charging"]
        return self.rng.choice(charging or running) if running else None

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
        await self.st.wait_for(is_online, timeout=5, what="reconnect")

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
            await self.st.wait_for(is_online, timeout=5, what="registered again")

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

    async def _inject_csms_cut_answer(self) -> None:
        """Cut the link just as the CSMS answers the next transaction message.

        The CSMS has then given its CALLRESULT (and counts the message as received),
        but the station never reads it and must send the message again after the
        reconnect: the one case where exactly-once per *accepted CALLRESULT* and
        exactly-once on the wire differ, which the invariants must tell apart.
        """
        self.cut_armed = True

    def _on_frame(self, rec: FrameRecord) -> None:
        self.journal.on_frame(rec)
        if not self.cut_armed or rec.direction != "out":
            return
        ex = self.journal.answered(rec.frame)
        if ex is not None and ex.action in TX_ACTIONS and ex.answer == "result":
            self.cut_armed = False
            self.injected["cut under a CALLRESULT"] += 1
            log.info("cutting the link under the CALLRESULT of %s", ex.action)
            _drop_now(self.st.csms, self.cp_id)

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
        healthy_at_start = is_online(st) and self._calm()
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
        """Fill the state disk, present a card, then free it.

        Either a card on a plugged idle connector (the start must be refused, with a
        log line) or the owner's card on a charging one (the energy must stop even
        though the stop cannot be written yet; it is written once there is room).
        """
        for kind in list(self.conditions):
            await self._heal(kind)
        if self.rng.random() < 0.5:
            await self._disk_full_stop()
            return
        st = await self.st.wait_for(
            lambda s: is_online(s) and s["ocpp"]["outbox_pending"] == 0,
            timeout=20,
            what="a quiet station",
        )
        if st is None:
            self.notes.append("a disk-full episode was skipped: the station did not quieten")
            return
        for c in st["connectors"]:
            if c["transaction_local_id"] is not None and c["id_tag"]:
                await self._card(c["id_tag"])
        st = await self.st.wait_for(
            lambda s: no_transaction(s) and s["ocpp"]["outbox_pending"] == 0,
            timeout=20,
            what="quiet",
        )
        if st is None:
            self.notes.append("a disk-full episode was skipped: transactions did not end")
            return
        target = st["connectors"][0]
        if target["ev_state"] == "A":
            await self.st.sim("sim.plug", connector=target["id"])
        await self.st.sim("sim.charge", connector=target["id"])
        await self.st.wait_for(lambda s: s["connectors"][0]["ev_state"] != "A", timeout=3, what="")
        log_start = self.st.rig.log_path.stat().st_size
        armed, t = self._fill()
        try:
            await self._card(self._free_card())
            st = await self.st.wait_for(
                lambda s: s["connectors"][0]["transaction_local_id"] is not None,
                timeout=2.5,
                what="a transaction on a full disk",
            )
            started = st is not None
            alive = self.st.rig.running
            refused = "transaction refused" in log_since(self.st.rig.log_path, log_start)
        finally:
            tinydisk.free(Path(self.st.rig.state_dir))
        self.disk_full.append(DiskFull(t, armed, refused, started, alive))

    def _fill(self) -> tuple[bool, float]:
        state_dir = Path(self.st.rig.state_dir)
        armed = tinydisk.truncate_wal(state_dir / "chargerd.db")
        tinydisk.fill(state_dir)
        return armed, time.time()

    async def _disk_full_stop(self) -> None:
        c = await self._charging()
        if c is None or c["status"] != "Charging":
            self.notes.append("a disk-full stop episode was skipped: nothing was charging")
            return
        n = c["id"]
        armed, t = self._fill()
        try:
            await self._card(c["id_tag"])
            st = await self.st.wait_for(
                lambda s: not s["connectors"][n - 1]["contactor_closed"],
                timeout=2.5,
                what="the energy cut on a full disk",
            )
            cut = st is not None
            alive = self.st.rig.running
            await asyncio.sleep(self.rng.uniform(0.0, 1.5))
        finally:
            tinydisk.free(Path(self.st.rig.state_dir))
        self.disk_full.append(DiskFull(t, armed, False, False, alive, "stop", cut))


async def _nothing() -> None:
    return None


def _drop_now(csms: BenchCsms, cp_id: str) -> None:
    """BenchCsms.drop, run to completion right here, before the frame hook returns.

    The hook runs just before the CSMS writes its answer; aborting the transport
    now (drop() never suspends) means the answer is never written at all.
    """
    coro = csms.drop(cp_id)
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()


# -- status predicates --------------------------------------------------------------------------


def is_registered(st: dict) -> bool:
    return st["ocpp"]["registration"] == "Accepted"


def is_online(st: dict) -> bool:
    return bool(st["ocpp"]["connected"]) and st["ocpp"]["registration"] == "Accepted"


def no_transaction(st: dict) -> bool:
    return all(c["transaction_local_id"] is None for c in st["connectors"])


def log_since(path: Path, offset: int) -> str:
    with open(path, errors="replace") as f:
        f.seek(offset)
        return f.read()


def store_integrity(state_dir: Path) -> str:
    try:
        return tinydisk.integrity(state_dir / "chargerd.db")
    except Exception as exc:
        return f"unreadable: {exc}"
