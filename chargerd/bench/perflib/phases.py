"""The bench's measurements, one method per phase, all against the real daemon process.

The station is a StationRig (``chargerd`` on the mock hardware, driven over
its control socket); the CSMS is a BenchCsms on 127.0.0.1 in this process.
Times are taken where a CSMS operator or a driver would see them: around
the CSMS's own call, at the frame's arrival in the CSMS, at the datagram on
NOTIFY_SOCKET, at the control-socket reply showing the contactor closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from chargerd.bench.csms.csms import BenchCsms, CsmsCallError
from chargerd.bench.perflib import profiles, reaction
from chargerd.bench.perflib.figures import Figure, Target
from chargerd.bench.perflib.probes import TX_MESSAGES, Arrivals, NotifyListener, cpu_seconds, rss_mb
from chargerd.bench.perflib.profiles import PROFILE_TARGETS, profile_figures
from chargerd.bench.rig import StationRig

log = logging.getLogger(__name__)

CARD = "0A1B2C3D"
perf = time.perf_counter


@dataclass(frozen=True, slots=True)
class Plan:
    """How many repetitions; the quick plan keeps every phase but shrinks it (~30 s)."""

    boot_starts: int = 12
    idle_s: float = 20.0
    idle_window_s: float = 5.0
    responses: int = 500
    remote_cycles: int = 50
    card_cycles: int = 50
    charging_s: float = 15.0
    replay_connectors: int = 8
    replay_offline_s: float = 30.0
    backlog: int = 10_000
    reaction_cycles: int = 20  # per trigger, healthy and silent meter
    pilot_rate_s: float = 3.0
    triggers: int = 200
    list_updates: int = 10
    list_size: int = 10_000


QUICK = Plan(
    boot_starts=3,
    idle_s=4.0,
    idle_window_s=1.0,
    responses=30,
    remote_cycles=3,
    card_cycles=3,
    charging_s=3.0,
    replay_connectors=2,
    replay_offline_s=3.0,
    backlog=500,
    reaction_cycles=1,
    pilot_rate_s=1.0,
    triggers=12,
    list_updates=2,
)

RESPONSE_TARGET = Target("<", 50.0, "p99")
REMOTE_TARGET = Target("<", 100.0, "p99")
RSS_TARGET = Target("<", 60.0, "max")
BOOT_TARGET = Target("<", 2.0, "max")
REPLAY_TARGET = Target(">=", 500.0, "min")


def make_figures() -> dict[str, Figure]:
    figs = [
        Figure("resp_get_configuration", "GetConfiguration (all keys) response", "ms"),
        Figure("resp_change_configuration", "ChangeConfiguration response", "ms"),
        Figure("resp_data_transfer", "DataTransfer response", "ms"),
        Figure("resp_remote_start", "RemoteStartTransaction response", "ms"),
        Figure("resp_trigger_message", "TriggerMessage(Heartbeat) response", "ms"),
        Figure("resp_set_charging_profile", "SetChargingProfile response", "ms"),
        Figure("resp_get_composite_schedule", "GetCompositeSchedule (24 h) response", "ms"),
        Figure("remote_start_to_start_tx", "RemoteStart -> StartTransaction.req", "ms"),
        Figure("remote_stop_to_stop_tx", "RemoteStop -> StopTransaction.req", "ms"),
        Figure("card_to_authorize", "card -> Authorize.req", "ms"),
        Figure("card_to_contactor", "card -> contactor closed", "ms"),
        Figure("start_to_boot", "process start -> BootNotification.req", "s"),
        Figure("start_to_ready", "process start -> READY=1", "s"),
        Figure("rss_idle", "RSS idle", "MB"),
        Figure("rss_charging", "RSS charging, 1 s sampling", "MB"),
        Figure("cpu_idle_per_hour", "CPU idle (connected)", "CPU-s/h"),
        Figure("cpu_idle_percent", "CPU idle (connected)", "% core"),
        Figure("cpu_charging_percent", "CPU charging, 1 s sampling", "% core"),
        Figure("replay_live_rate", "replay after outage (produced live)", "msg/s"),
        Figure("replay_live_time", "replay after outage: link up -> all in", "s"),
        Figure("replay_backlog_rate", "replay of a large backlog", "msg/s"),
        Figure("replay_backlog_time", "replay of a large backlog: boot -> all in", "s"),
        Figure("replay_backlog_gap", "replay: gap between messages", "ms"),
        Figure("replay_backlog_cpu", "replay: daemon CPU per message", "ms"),
        *profile_figures(),
    ]
    targets = {
        "resp_get_configuration": RESPONSE_TARGET,
        "resp_change_configuration": RESPONSE_TARGET,
        "resp_data_transfer": RESPONSE_TARGET,
        "resp_remote_start": RESPONSE_TARGET,
        "resp_trigger_message": RESPONSE_TARGET,
        "resp_set_charging_profile": RESPONSE_TARGET,
        "resp_get_composite_schedule": RESPONSE_TARGET,
        "remote_start_to_start_tx": REMOTE_TARGET,
        "remote_stop_to_stop_tx": REMOTE_TARGET,
        "start_to_boot": BOOT_TARGET,
        "rss_idle": RSS_TARGET,
        "rss_charging": RSS_TARGET,
        "replay_live_rate": REPLAY_TARGET,
        "replay_backlog_rate": REPLAY_TARGET,
        **PROFILE_TARGETS,
    }
    for fig in figs:
        fig.target = targets.get(fig.key)
    return {f.key: f for f in figs + reaction.make_figures()}


def _conn(status: dict, n: int = 1) -> dict:
    return status["connectors"][n - 1]


async def poll(
    rig: StationRig,
    predicate: Callable[[dict], bool],
    *,
    timeout: float = 10.0,
    interval: float = 0.005,
    what: str = "condition",
) -> tuple[dict, float, int]:
    """Ask the daemon's status until ``predicate``; returns (status, reply time, polls)."""
    deadline = perf() + timeout
    polls = 0
    while True:
        st = await rig.status()
        polls += 1
        t = perf()
        if predicate(st):
            return st, t, polls
        if t > deadline:
            raise TimeoutError(f"timed out waiting for {what}; last: {json.dumps(st)[:1500]}")
        await asyncio.sleep(interval)


class Bench:
    def __init__(self, workdir: Path, plan: Plan, figures: dict[str, Figure]) -> None:
        self.workdir = workdir
        self.plan = plan
        self.figs = figures
        self.arrivals = Arrivals()
        self.csms = BenchCsms(on_frame=self.arrivals.on_frame)
        self.csms.accept_all_cards = True
        self.csms.heartbeat_interval = 60
        self.notify: NotifyListener | None = None
        self.rigs: list[StationRig] = []
        self.main: StationRig | None = None

    async def __aenter__(self) -> Bench:
        await self.csms.start("127.0.0.1", 0)
        self.notify = NotifyListener(Path(f"/tmp/chargerd-bench-{id(self):x}.notify"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for rig in self.rigs:
            with contextlib.suppress(Exception):
                await rig.stop()
        if self.notify is not None:
            self.notify.close()
        await self.csms.stop()

    def rig(self, name: str, cp_id: str, **kw: Any) -> StationRig:
        assert self.notify is not None
        rig = StationRig(
            self.workdir / name,
            csms_url=self.csms.url,
            charge_point_id=cp_id,
            env={"NOTIFY_SOCKET": str(self.notify.path)},
            **kw,
        )
        self.rigs.append(rig)
        return rig

    async def call(self, rig: StationRig, action: str, payload: dict) -> tuple[float, dict]:
        """One CSMS request; returns (ms from the CALL leaving to the CALLRESULT, result)."""
        t0 = perf()
        result = await self.csms.call(rig.charge_point_id, action, payload)
        return (perf() - t0) * 1000, result

    async def registered(self, rig: StationRig) -> None:
        await poll(
            rig,
            lambda s: s["ocpp"]["registration"] == "Accepted" and s["ocpp"]["connected"],
            timeout=20,
            interval=0.02,
            what="registration",
        )

    # -- start-up -----------------------------------------------------------------------

    async def start_up(self) -> None:
        """Process spawn to BootNotification at the CSMS and to READY=1 on NOTIFY_SOCKET."""
        assert self.notify is not None
        rig = self.main = self.rig("station", "CP-BENCH", ocpp={"MeterValueSampleInterval": 1})
        boot, ready = self.figs["start_to_boot"], self.figs["start_to_ready"]
        for i in range(self.plan.boot_starts):
            if rig.running:
                await rig.stop()
            t0 = perf()
            await rig.start()
            got = await self.arrivals.wait("BootNotification", t0, cp_id=rig.charge_point_id)
            boot.add(got.t - t0)
            ready.add(await self.notify.wait("READY=1", t0) - t0)
            if i == 0:
                await self.registered(rig)  # the first start creates the database
        note = "first start with an empty state dir, then restarts (SIGTERM, start)"
        boot.note = ready.note = note
        await self.registered(rig)

    # -- idle footprint ---------------------------------------------------------------------

    async def idle(self) -> None:
        rig = self.main
        assert rig is not None and rig.proc is not None
        await poll(rig, lambda s: _conn(s)["status"] == "Available", what="idle")
        await asyncio.sleep(1.0)  # let start-up work settle; no status polling from here on
        pid = rig.proc.pid
        per_hour, pct, rss = (
            self.figs["cpu_idle_per_hour"],
            self.figs["cpu_idle_percent"],
            self.figs["rss_idle"],
        )
        windows = max(1, round(self.plan.idle_s / self.plan.idle_window_s))
        c0, t0 = cpu_seconds(pid), perf()
        start = t0
        for _ in range(windows):
            end = perf() + self.plan.idle_window_s
            while perf() < end:
                rss.add(rss_mb(pid))
                await asyncio.sleep(min(0.5, max(0.0, end - perf())))
            c1, t1 = cpu_seconds(pid), perf()
            share = (c1 - c0) / (t1 - t0)
            per_hour.add(share * 3600)
            pct.add(share * 100)
            c0, t0 = c1, t1
        heartbeats = len(self.arrivals.since("Heartbeat", start, rig.charge_point_id))
        per_hour.note = (
            f"{windows} windows of {self.plan.idle_window_s:g} s, extrapolated to an hour; "
            f"1 connector, no EV; HeartbeatInterval {self.csms.heartbeat_interval} s "
            f"({heartbeats} in the run), MeterValueSampleInterval 1 s; /proc counts in 10 ms ticks"
        )

    # -- answers to CSMS requests ---------------------------------------------------------

    async def responses(self) -> None:
        rig = self.main
        assert rig is not None
        n = self.plan.responses
        fig = self.figs["resp_get_configuration"]
        for _ in range(n):
            ms, res = await self.call(rig, "GetConfiguration", {})
            fig.add(ms)
        fig.note = f"{len(res.get('configurationKey', []))} keys per answer"

        fig = self.figs["resp_change_configuration"]
        for i in range(n):
            ms, res = await self.call(
                rig, "ChangeConfiguration", {"key": "ConnectionTimeOut", "value": str(60 + i % 2)}
            )
            if res.get("status") != "Accepted":
                raise RuntimeError(f"ChangeConfiguration answered {res}")
            fig.add(ms)
        fig.note = "ConnectionTimeOut, persisted to SQLite (fsync) before the answer"

        fig = self.figs["resp_data_transfer"]
        payload = {"vendorId": "org.chargerd.bench", "messageId": "ping", "data": "x" * 64}
        for _ in range(n):
            ms, res = await self.call(rig, "DataTransfer", payload)
            fig.add(ms)
        fig.note = f"answered {res.get('status')}"

        await self._trigger_message(rig, n)
        await self._remote_start_answers(rig, n)
        await self._smart_charging_answers(rig, n)

    async def _smart_charging_answers(self, rig: StationRig, n: int) -> None:
        """SetChargingProfile (persisted before the answer) and GetCompositeSchedule over a day
        with a 48-period daily profile; the profiles allow 80 A and are cleared afterwards."""
        now = self.csms.now()
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        periods = [{"startPeriod": i * 1800, "limit": 6.0 + (i * 7) % 24} for i in range(48)]
        fig = self.figs["resp_set_charging_profile"]
        for i in range(n):
            profile = {
                "chargingProfileId": 1 + i % 2,
                "stackLevel": i % 2,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Recurring",
                "recurrencyKind": "Daily",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "startSchedule": start.isoformat().replace("+00:00", "Z"),
                    "chargingSchedulePeriod": periods,
                },
            }
            ms, res = await self.call(
                rig, "SetChargingProfile", {"connectorId": 0, "csChargingProfiles": profile}
            )
            if res.get("status") != "Accepted":
                raise RuntimeError(f"SetChargingProfile answered {res}")
            fig.add(ms)
        fig.note = "48-period daily TxDefaultProfile, persisted (fsync) before the answer"
        fig = self.figs["resp_get_composite_schedule"]
        for _ in range(n):
            ms, res = await self.call(
                rig, "GetCompositeSchedule", {"connectorId": 1, "duration": 86400}
            )
            if res.get("status") != "Accepted":
                raise RuntimeError(f"GetCompositeSchedule answered {res}")
            fig.add(ms)
        periods_out = len(res["chargingSchedule"]["chargingSchedulePeriod"])
        fig.note = f"two 48-period daily profiles stacked: {periods_out} periods answered"
        await self.call(rig, "ClearChargingProfile", {})

    async def _trigger_message(self, rig: StationRig, n: int) -> None:
        fig = self.figs["resp_trigger_message"]
        statuses: set[str] = set()
        for _ in range(n):
            try:
                ms, res = await self.call(rig, "TriggerMessage", {"requestedMessage": "Heartbeat"})
            except CsmsCallError as exc:
                if exc.code in ("NotImplemented", "NotSupported"):
                    fig.skipped = f"the daemon answers TriggerMessage with CALLERROR {exc.code}"
                    fig.samples.clear()
                    return
                raise
            statuses.add(str(res.get("status")))
            fig.add(ms)
        fig.note = f"answered {', '.join(sorted(statuses))}"

    async def _remote_start_answers(self, rig: StationRig, n: int) -> None:
        """Accepted remote starts on an empty connector, each withdrawn by the same card."""
        fig = self.figs["resp_remote_start"]
        for _ in range(n):
            ms, res = await self.call(
                rig, "RemoteStartTransaction", {"idTag": CARD, "connectorId": 1}
            )
            if res.get("status") != "Accepted":
                raise RuntimeError(f"RemoteStartTransaction answered {res}")
            fig.add(ms)
            await rig.card(CARD)  # the same card again withdraws the authorization
            await poll(
                rig,
                lambda s: _conn(s)["id_tag"] is None and _conn(s)["status"] == "Available",
                what="authorization withdrawn",
            )
        fig.note = "Accepted each time (no EV plugged; the same card then withdraws it)"

    # -- sessions ----------------------------------------------------------------------------

    async def _session_over(self, rig: StationRig) -> None:
        await poll(
            rig,
            lambda s: (
                _conn(s)["transaction_id"] is None
                and not _conn(s)["contactor_closed"]
                and s["ocpp"]["outbox_pending"] == 0
                and _conn(s)["status"] == "Finishing"
            ),
            what="session over",
        )
        # Finishing is not yet available for a new user (OCPP 1.6 4.9): the driver leaves,
        # the next EV plugs in and asks for energy.
        await rig.unplug(1)
        await rig.plug(1)
        await rig.charge(1)
        await poll(rig, lambda s: _conn(s)["status"] == "Preparing", what="next EV")

    async def remote_sessions(self) -> None:
        rig = self.main
        assert rig is not None
        cp = rig.charge_point_id
        await rig.plug(1)
        await rig.charge(1)
        await poll(rig, lambda s: _conn(s)["status"] == "Preparing", what="Preparing")
        start_fig = self.figs["remote_start_to_start_tx"]
        stop_fig = self.figs["remote_stop_to_stop_tx"]
        for _ in range(self.plan.remote_cycles):
            t0 = perf()
            await self.csms.call(cp, "RemoteStartTransaction", {"idTag": CARD, "connectorId": 1})
            start = await self.arrivals.wait("StartTransaction", t0, cp_id=cp)
            start_fig.add((start.t - t0) * 1000)
            st, _, _ = await poll(
                rig,
                lambda s: _conn(s)["transaction_id"] is not None and _conn(s)["contactor_closed"],
                what="charging with a transactionId",
            )
            t1 = perf()
            await self.csms.call(
                cp, "RemoteStopTransaction", {"transactionId": _conn(st)["transaction_id"]}
            )
            stop = await self.arrivals.wait("StopTransaction", t1, cp_id=cp)
            stop_fig.add((stop.t - t1) * 1000)
            await self._session_over(rig)
        start_fig.note = "EV plugged and asking for energy; AuthorizeRemoteTxRequests=false"
        stop_fig.note = "the stop is committed to SQLite (fsync) before it is sent"

    async def card_sessions(self) -> None:
        rig = self.main
        assert rig is not None
        cp = rig.charge_point_id
        auth_fig, closed_fig = self.figs["card_to_authorize"], self.figs["card_to_contactor"]
        poll_ms: list[float] = []
        for _ in range(self.plan.card_cycles):
            t0 = perf()
            await rig.card(CARD)
            _, closed_at, polls = await poll(
                rig, lambda s: _conn(s)["contactor_closed"], interval=0, what="contactor closed"
            )
            auth = await self.arrivals.wait("Authorize", t0, cp_id=cp)
            auth_fig.add((auth.t - t0) * 1000)
            closed_fig.add((closed_at - t0) * 1000)
            poll_ms.append((closed_at - t0) * 1000 / polls)
            t1 = perf()
            await rig.card(CARD)
            await self.arrivals.wait("StopTransaction", t1, cp_id=cp)
            await self._session_over(rig)
        auth_fig.note = "card time = the sim.card request leaving the bench"
        closed_fig.note = (
            "the first status reply showing it closed; status asked back to back, "
            f"{sum(poll_ms) / len(poll_ms):.1f} ms per poll (the resolution). Includes "
            "Authorize + StartTransaction commit + PWM on + EV state C seen"
        )

    async def charging(self) -> None:
        """Footprint during a transaction sampled every second."""
        rig = self.main
        assert rig is not None and rig.proc is not None
        cp = rig.charge_point_id
        await rig.card(CARD)
        await poll(rig, lambda s: _conn(s)["contactor_closed"], what="charging")
        pid = rig.proc.pid
        rss = self.figs["rss_charging"]
        c0, t0 = cpu_seconds(pid), perf()
        end = t0 + self.plan.charging_s
        while perf() < end:
            rss.add(rss_mb(pid))
            await asyncio.sleep(0.5)
        c1, t1 = cpu_seconds(pid), perf()
        self.figs["cpu_charging_percent"].add((c1 - c0) / (t1 - t0) * 100)
        mv = len(self.arrivals.since("MeterValues", t0, cp))
        self.figs[
            "cpu_charging_percent"
        ].note = f"one {t1 - t0:.0f} s window, {mv} MeterValues received in it"
        t2 = perf()
        await rig.card(CARD)
        await self.arrivals.wait("StopTransaction", t2, cp_id=cp)
        await self._session_over(rig)
        await rig.unplug(1)

    async def remote_trigger(self) -> None:
        await profiles.remote_trigger(self)

    async def local_list(self) -> None:
        await profiles.local_list(self)

    async def reaction(self) -> None:
        """Stop triggers -> contactor open and the pilot sampling rate, healthy and silent meter."""
        # A silent meter fails each read after 2 s, as a Modbus RTU meter does (1 s x 2 tries).
        rig = self.rig("reaction", "CP-REACT", mock={"meter_silent_delay_s": 2.0})
        await rig.start()
        await self.registered(rig)
        await reaction.measure(
            rig,
            self.csms,
            self.figs,
            cycles=self.plan.reaction_cycles,
            rate_s=self.plan.pilot_rate_s,
        )
        await rig.stop()

    async def stop_main(self) -> None:
        if self.main is not None:
            await self.main.stop()

    # -- replay after an outage -------------------------------------------------------------

    async def replay_live(self) -> None:
        """Transactions running offline on every connector; the link comes back."""
        k = self.plan.replay_connectors
        rig = self.rig(
            "replay",
            "CP-BENCH-REPLAY",
            connectors=k,
            ocpp={"MeterValueSampleInterval": 1, "ClockAlignedDataInterval": 1},
        )
        cp = rig.charge_point_id
        await rig.start()
        await self.registered(rig)
        cards = [f"0A1B2C{c:02X}" for c in range(1, k + 1)]
        for c in range(1, k + 1):
            await rig.plug(c)
            await rig.charge(c)
            await self.csms.call(
                cp, "RemoteStartTransaction", {"idTag": cards[c - 1], "connectorId": c}
            )
        await poll(
            rig,
            lambda s: (
                all(x["transaction_id"] is not None for x in s["connectors"])
                and s["ocpp"]["outbox_pending"] == 0
            ),
            interval=0.05,
            what="every connector charging",
        )
        await rig.network(False)
        await asyncio.sleep(self.plan.replay_offline_s)
        for card in cards:  # the drivers end their sessions while the station is offline
            await rig.card(card)
        await poll(
            rig,
            lambda s: all(x["transaction_id"] is None for x in s["connectors"]),
            interval=0.05,
            what="every session stopped offline",
        )
        # Clock-aligned values without a transaction are live messages, not replayed ones.
        await rig.ctl("config.set", key="ClockAlignedDataInterval", value="0")
        pending = (await rig.status())["ocpp"]["outbox_pending"]
        t_up = perf()
        await rig.network(True)
        await self.arrivals.wait_count(TX_MESSAGES, t_up, pending, timeout=max(30.0, pending / 50))
        got = self.arrivals.since(TX_MESSAGES, t_up, cp)
        first, last = got[0].t, got[pending - 1].t
        self.figs["replay_live_rate"].add((pending - 1) / (last - first) if last > first else 0.0)
        self.figs["replay_live_time"].add(last - t_up)
        self.figs["replay_live_rate"].note = (
            f"{pending} messages queued by the daemon itself: {k} connectors charging offline "
            f"for {self.plan.replay_offline_s:g} s at MeterValueSampleInterval=1 and "
            "ClockAlignedDataInterval=1, then stopped by card (1 s is the fastest the keys "
            "allow, so 10,000 would take hours); rate = intervals / (last - first arrival)"
        )
        await poll(rig, lambda s: s["ocpp"]["outbox_pending"] == 0, what="outbox empty")
        await rig.stop()

    async def replay_backlog(self) -> None:
        """A backlog of ``plan.backlog`` messages replayed after a long outage and a power cut."""
        rig = self.rig("backlog", "CP-BENCH-BACKLOG", ocpp={"MeterValueSampleInterval": 1})
        cp = rig.charge_point_id
        await rig.start()
        await self.registered(rig)
        await rig.plug(1)
        await rig.charge(1)
        await self.csms.call(cp, "RemoteStartTransaction", {"idTag": CARD, "connectorId": 1})
        await poll(
            rig,
            lambda s: _conn(s)["transaction_id"] is not None and s["ocpp"]["outbox_pending"] == 0,
            interval=0.05,
            what="charging",
        )
        await rig.network(False)
        await poll(
            rig, lambda s: s["ocpp"]["outbox_pending"] >= 2, interval=0.1, what="MeterValues queued"
        )
        rig.kill9()
        real, cloned = extend_backlog(rig.state_dir / "chargerd.db", self.plan.backlog - 1)
        total = real + cloned + 1  # + StopTransaction(PowerLoss) queued by the restart
        t0 = perf()
        await rig.start()
        assert rig.proc is not None
        boot = await self.arrivals.wait("BootNotification", t0, cp_id=cp)
        cpu0 = cpu_seconds(rig.proc.pid)
        await self.arrivals.wait_count(TX_MESSAGES, t0, total, timeout=max(60.0, total / 50))
        cpu_ms = (cpu_seconds(rig.proc.pid) - cpu0) * 1000 / total
        self.figs["replay_backlog_cpu"].add(cpu_ms)
        got = self.arrivals.since(TX_MESSAGES, t0, cp)[:total]
        first, last = got[0].t, got[-1].t
        self.figs["replay_backlog_rate"].add((total - 1) / (last - first))
        self.figs["replay_backlog_time"].add(last - boot.t)
        gaps = self.figs["replay_backlog_gap"]
        for a, b in itertools.pairwise(got):
            gaps.add((b.t - a.t) * 1000)
        self.figs["replay_backlog_rate"].note = (
            f"{total} messages: a transaction charging offline ({real} MeterValues sampled by "
            f"the daemon), a power cut (kill -9), {cloned} more MeterValues cloned into its "
            "outbox with chargerd's Outbox.enqueue while it was down, the StopTransaction"
            "(PowerLoss) queued at restart; replayed by the real daemon"
        )
        self.figs[
            "replay_backlog_cpu"
        ].note = "utime+stime of the daemon from BootNotification to the last message, per message"
        await poll(rig, lambda s: s["ocpp"]["outbox_pending"] == 0, what="outbox empty")
        await rig.stop()


def extend_backlog(db_path: Path, target: int) -> tuple[int, int]:
    """Grow a stopped station's outbox to ``target`` messages by cloning its last MeterValues.

    Uses chargerd's own Store and Outbox, so the rows are exactly what the
    daemon would have written; one commit for all (the bench is not the
    station, and 10,000 fsyncs would only slow the bench).  Returns
    (messages already queued, messages added).
    """
    from chargerd.clock import SystemClock, iso, parse_iso
    from chargerd.features.outbox import Outbox
    from chargerd.store import Store

    with Store.open(db_path) as store:
        outbox = Outbox(store, SystemClock(), attempts=lambda: 3, retry_interval=lambda: 1)
        real = outbox.pending()
        row = store.query_one(
            "SELECT payload, tx_local_id FROM outbox WHERE action = 'MeterValues' "
            "ORDER BY seq DESC LIMIT 1"
        )
        if row is None:
            raise RuntimeError("the daemon queued no MeterValues to clone")
        template = json.loads(row["payload"])
        base = parse_iso(template["meterValue"][0]["timestamp"])
        added = max(0, target - real)
        with store.transaction():
            for i in range(1, added + 1):
                payload = json.loads(row["payload"])
                payload["meterValue"][0]["timestamp"] = iso(base + timedelta(milliseconds=i))
                outbox.enqueue("MeterValues", payload, tx_local_id=row["tx_local_id"])
    return real, added
