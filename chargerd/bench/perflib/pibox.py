"""Bench figures of the pibox: contactor reaction and pilot sampling on the Pi driver stack.

The daemon runs with ``driver = "pi"`` on emulated chips (``hal.emulated.pibox``);
each figure is read off the world's timestamped GPIO record, from the stimulus
(the CP line falling to -12 V, the residual-current monitor's fault output, a
card entering the RC522's field, the CSMS sending RemoteStopTransaction) to
the contactor GPIO going low.  The same runs are repeated with the RS485 line
cut (a silent meter), which must change nothing.  The pilot sampling rate
counts the bursts of MCP3008 conversions.

What it does not show: the real kernel's scheduling and SPI timing on a Pi,
the relay's mechanics, anything electrical.
"""

from __future__ import annotations

import time
from typing import Any

from chargerd.bench.perflib.figures import Figure, Target
from chargerd.bench.perflib.reaction import pilot_rate_hz, reaction_ms
from chargerd.bench.pibox import (
    CARD,
    PiboxRig,
    card_taken_away,
    contactor_open_after,
    end_after_fault,
    last_event_time,
    start_session,
)

REACTION_TARGET = Target("<", 100.0, "p99")
SAMPLING_TARGET = Target(">=", 20.0, "min")

KINDS = (
    ("f", "EV state F"),
    ("rcd", "RCD trip"),
    ("card", "card stop"),
    ("remote_stop", "RemoteStop"),
)
KEYS: tuple[str, ...] = (
    *(f"pibox_{k}_to_open" for k, _ in KINDS),
    *(f"pibox_silent_{k}_to_open" for k, _ in KINDS),
    "pibox_pilot_rate",
    "pibox_silent_pilot_rate",
)


class PiboxProbe:
    """The bench's StationProbe (chargerd.bench.perflib.reaction) read off the pibox world.

    The coil as the world's pin watcher saw it, and the CP readings counted on
    the SPI bus, so that the mock's reaction probes run unchanged on a pibox.
    """

    def __init__(self, rig: PiboxRig) -> None:
        self.rig = rig

    async def contactor(self, connector: int) -> tuple[bool, float | None]:
        c = (await self.rig.world(since=time.monotonic()))["connectors"][connector - 1]
        return bool(c["coil_energised"]), c["coil_changed_at"]

    async def pilot_reads(self, connector: int) -> int:
        return int((await self.rig.world(since=time.monotonic()))["pilot_readings"])


def make_figures() -> dict[str, Figure]:
    figs: list[Figure] = []
    for silent in (False, True):
        prefix = "pibox_silent_" if silent else "pibox_"
        tail = ", silent meter" if silent else ""
        for key, label in KINDS:
            figs.append(
                Figure(
                    f"{prefix}{key}_to_open",
                    f"pibox: {label} -> contactor GPIO low{tail}",
                    "ms",
                    REACTION_TARGET,
                )
            )
        figs.append(
            Figure(f"{prefix}pilot_rate", f"pibox: pilot readings{tail}", "Hz", SAMPLING_TARGET)
        )
    return {f.key: f for f in figs}


async def _stopped(rig: PiboxRig, csms: Any, stops_before: int) -> None:
    cp = rig.charge_point_id
    await csms.wait_for(
        "StopTransaction", predicate=lambda r: r.cp_id == cp, count=stops_before + 1, timeout=20
    )
    await rig.unplug(1)
    await rig.wait_connector(1, "Available", timeout=15)


async def one_reaction(rig: PiboxRig, csms: Any, kind: str) -> float:
    """One session ended by ``kind``; seconds from the stimulus to the contactor GPIO low."""
    cp = rig.charge_point_id
    await start_session(rig, csms, say=lambda _s: None)
    stops = len(csms.calls("StopTransaction", cp))
    t0 = time.monotonic()
    if kind == "f":
        await rig.fault("ev_state_f", True, 1)
        seconds = await contactor_open_after(rig, await last_event_time(rig, "ev_state_f_on", t0))
        await rig.wait_status(
            lambda s: s["connectors"][0]["status"] != "Charging",
            timeout=10,
            what="the station to leave Charging after state F",
        )
        await rig.fault("ev_state_f", False, 1)
        await end_after_fault(rig)
    elif kind == "rcd":
        await rig.fault("rcd_trip", True, 1)
        seconds = await contactor_open_after(rig, await last_event_time(rig, "rcd_trip_on", t0))
        await rig.wait_status(
            lambda s: s["connectors"][0]["status"] != "Charging",
            timeout=10,
            what="the station to leave Charging after the RCD trip",
        )
        await rig.fault("rcd_trip", False, 1)
        await end_after_fault(rig)
    elif kind == "card":
        await card_taken_away(rig)
        t0 = time.monotonic()
        await rig.card(CARD)
        seconds = await contactor_open_after(rig, await last_event_time(rig, "card", t0))
    else:
        tx = (await rig.connector(1))["transaction_id"]

        async def remote_stop() -> object:
            return await csms.call(cp, "RemoteStopTransaction", {"transactionId": tx})

        seconds = await reaction_ms(PiboxProbe(rig), 1, remote_stop) / 1000
    await _stopped(rig, csms, stops)
    return seconds


async def pilot_rate(rig: PiboxRig, csms: Any, window_s: float) -> float:
    """CP readings per second (bursts of MCP3008 transfers on the SPI bus) while charging."""
    await start_session(rig, csms, say=lambda _s: None)
    stops = len(csms.calls("StopTransaction", rig.charge_point_id))
    rate = await pilot_rate_hz(PiboxProbe(rig), 1, window_s)
    await card_taken_away(rig)
    await rig.card(CARD)
    await _stopped(rig, csms, stops)
    return rate


async def measure(bench: Any) -> None:
    """The pibox phase of ``./dev bench`` (a chargerd.bench.perflib.phases.Bench)."""
    figs = bench.figs
    csms = bench.csms
    csms.cards[CARD] = {"status": "Accepted"}
    rig = PiboxRig(
        bench.workdir / "pibox",
        csms_url=csms.url,
        charge_point_id="CP-PIBOX",
        ocpp={"MeterValueSampleInterval": 1},
    )
    bench.rigs.append(rig)
    await rig.start(timeout=30)
    await bench.registered(rig)
    cycles = max(1, bench.plan.card_cycles // 5)  # 10 of each (quick: 1)
    window_s = 1.0 if cycles < 3 else 5.0
    for silent in (False, True):
        prefix = "pibox_silent_" if silent else "pibox_"
        if silent:
            await rig.fault("meter_silent", True)
        for _ in range(cycles):
            for kind, _label in KINDS:
                figs[f"{prefix}{kind}_to_open"].add(await one_reaction(rig, csms, kind) * 1000)
        figs[f"{prefix}pilot_rate"].add(await pilot_rate(rig, csms, window_s))
    await rig.fault("meter_silent", False)
    for silent in ("", "silent_"):
        figs[f"pibox_{silent}card_to_open"].note = "includes the reader's 50 ms poll interval"
        figs[f"pibox_{silent}pilot_rate"].note = "bursts of MCP3008 transfers, while charging"
    await rig.stop()
