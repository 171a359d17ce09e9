"""The chaos session's hold on the daemon and the CSMS: start, kill, restart, sample.

Everything the session does to the daemon goes through :class:`Station`, so
that a kill -9 at any instant is safe for the session itself: commands wait
while the daemon is down and are retried once it is back, the status sampler
pauses, and a daemon that exits on its own (a crash, or a task that died and
stopped it) is noticed, recorded and restarted, as systemd would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from chargerd.bench.chaoslib.journal import Journal
from chargerd.bench.chaoslib.records import Kill, Sample, StationTx
from chargerd.bench.csms.csms import BenchCsms
from chargerd.bench.rig import RigCommandError, StationRig

log = logging.getLogger(__name__)

SAMPLE_EVERY_S = 0.2


def trim_status(st: dict[str, Any]) -> dict[str, Any]:
    """What the invariants look at, to keep thousands of samples small."""
    keep = (
        "id",
        "status",
        "error_code",
        "ev_state",
        "contactor_closed",
        "faults",
        "transaction_local_id",
        "transaction_id",
        "id_tag",
        "offered_current_a",
    )
    ocpp = st.get("ocpp", {})
    return {
        "ocpp": {
            "connected": ocpp.get("connected"),
            "registration": ocpp.get("registration"),
            "outbox_pending": ocpp.get("outbox_pending"),
        },
        "connectors": [{k: c.get(k) for k in keep} for c in st.get("connectors", [])],
        "faults": st.get("faults", []),
    }


class Station:
    """The daemon (through a StationRig) and the CSMS of one chaos session."""

    def __init__(self, rig: StationRig, csms: BenchCsms, journal: Journal, port: int) -> None:
        self.rig = rig
        self.csms = csms
        self.journal = journal
        self.port = port
        self.csms_up = True
        self.kills: list[Kill] = []
        self.samples: list[Sample] = []
        self.unexpected_exits: list[str] = []
        self.last: dict[str, Any] = {}
        self.restarts = 0
        self._up = asyncio.Event()
        self.ssl_context = None  # a TLS session (--tls): the CSMS comes back with it
        self._expected_down = False
        self._sampler: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one start/kill at a time

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            await self.rig.start(timeout=30)
            self._expected_down = False
            self._up.set()
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample_loop(), name="chaos-sampler")

    async def kill(self, when: str) -> Kill:
        async with self._lock:
            self._expected_down = True
            self._up.clear()
            before = time.time()
            self.rig.kill9()
            kill = Kill(before, time.time(), when)
        self.kills.append(kill)
        log.info("killed the daemon (%s)", when)
        return kill

    async def restart(self) -> None:
        await self.start()
        self.restarts += 1

    async def terminate(self) -> int | None:
        """SIGTERM, as systemd stops the service; returns the exit code."""
        async with self._lock:
            self._expected_down = True
            self._up.clear()
            return await self.rig.stop(timeout=20)

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None

    @property
    def up(self) -> bool:
        return self._up.is_set() and self.rig.running

    async def _noticed_exit(self) -> None:
        """The daemon is gone and nobody killed it: record why, restart it (systemd's job)."""
        async with self._lock:
            if self._expected_down or self.rig.running or not self._up.is_set():
                return
            self._up.clear()
            code = self.rig.proc.returncode if self.rig.proc else None
            what = f"exited by itself with code {code}; log tail:\n{self.rig.tail_log(25)}"
            self.unexpected_exits.append(what)
            log.error("daemon %s", what)
        await asyncio.sleep(0.5)
        await self.restart()

    # -- control socket -------------------------------------------------------------------

    async def ctl(self, cmd: str, *, wait: float = 60.0, **args: Any) -> dict:
        """A control command, waiting out a kill; RigCommandError when the daemon refuses."""
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"daemon unavailable for {cmd}")
            try:
                await asyncio.wait_for(self._up.wait(), timeout=remaining)
            except TimeoutError:
                raise TimeoutError(f"daemon unavailable for {cmd}") from None
            try:
                return await self.rig.ctl(cmd, **args)
            except RigCommandError:
                raise
            except (OSError, EOFError, TimeoutError, ValueError) as exc:
                if self.rig.running:
                    if isinstance(exc, TimeoutError):
                        raise
                    await asyncio.sleep(0.05)
                    continue
                if not self._expected_down:
                    await self._noticed_exit()
                await asyncio.sleep(0.05)

    async def sim(self, cmd: str, **args: Any) -> bool:
        """A bench control; False when the daemon refused it (already plugged, ...)."""
        try:
            await self.ctl(cmd, **args)
            return True
        except RigCommandError as exc:
            log.debug("%s refused: %s", cmd, exc)
            return False

    async def status(self) -> dict[str, Any]:
        st = trim_status(await self.ctl("status"))
        self.samples.append(Sample(time.time(), st))
        self.last = st
        return st

    async def _sample_loop(self) -> None:
        while True:
            if self._up.is_set():
                try:
                    st = trim_status(await self.rig.ctl("status"))
                    self.samples.append(Sample(time.time(), st))
                    self.last = st
                except (OSError, EOFError, TimeoutError, ValueError, RigCommandError):
                    if not self.rig.running and not self._expected_down:
                        await self._noticed_exit()
            await asyncio.sleep(SAMPLE_EVERY_S)

    async def wait_for(self, predicate, *, timeout: float, what: str) -> dict[str, Any] | None:
        """Poll the status until ``predicate(status)``; None on timeout (the caller decides)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                st = await self.status()
            except TimeoutError:
                return None
            if predicate(st):
                return st
            await asyncio.sleep(0.1)
        log.debug("timed out waiting for %s", what)
        return None

    # -- the CSMS ---------------------------------------------------------------------------

    async def csms_down(self) -> None:
        """The CSMS process dies: connections cut without a close, port closed."""
        cp = self.rig.charge_point_id
        with contextlib.suppress(Exception):
            await self.csms.drop(cp)
        await self.csms.stop()
        self.csms_up = False

    async def csms_restart(self) -> None:
        for _ in range(50):
            try:
                await self.csms.start("127.0.0.1", self.port, ssl_context=self.ssl_context)
                self.csms_up = True
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"cannot listen on port {self.port} again")

    def csms_normal(self) -> None:
        self.csms.hang = False
        self.csms.delay_s = 0.0
        self.csms.callerror_actions = set()

    # -- after the session ------------------------------------------------------------------

    def read_station(self) -> tuple[list[StationTx], int]:
        """The station's transactions table and outbox size (daemon stopped)."""
        db = Path(self.rig.state_dir) / "chargerd.db"
        conn = sqlite3.connect(db, timeout=5.0)
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute("SELECT * FROM transactions ORDER BY local_id").fetchall()
            outbox = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        finally:
            conn.close()
        txs = [
            StationTx(
                local_id=r["local_id"],
                connector_id=r["connector_id"],
                id_tag=r["id_tag"],
                meter_start_wh=r["meter_start_wh"],
                start_time=r["start_time"],
                state=r["state"],
                transaction_id=r["transaction_id"],
                stop_reason=r["stop_reason"],
                meter_stop_wh=r["meter_stop_wh"],
            )
            for r in rows
        ]
        return txs, outbox
