"""Reaction figures: from the event that makes charging unsafe or ends it to the contactor open.

The probes take a *station handle* (``StationProbe``), not a rig: the mock station
answers through the control socket (``RigProbe``, ``sim.state``), and an emulated
Pi answers from its MockPins; both report when the contactor's coil command last
changed on the system-wide monotonic clock (``time.monotonic``), so the interval is
exact whatever the polling resolution.

Measured with a healthy meter and with a silent one (``sim fault meter_silent``,
each read failing after a 2 s bus timeout as on RS485): the meter must never sit
between a fault and the contactor, nor slow the pilot sampling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from chargerd.bench.perflib.figures import Figure, Target

if TYPE_CHECKING:
    from chargerd.bench.csms.csms import BenchCsms
    from chargerd.bench.rig import StationRig

REACTION_TARGET = Target("<=", 100.0, "p99")  # issue 9: <= 100 ms
PILOT_RATE_TARGET = Target(">=", 20.0, "min")
CARD = "0A1B2C3D"

#: (figure key suffix, what triggers the stop)
TRIGGERS = (
    ("ev_error", "EV state E/F (sim ev_error)"),
    ("fault", "station fault (sim lock_jammed: EmergencyStop)"),
    ("card", "card stop (the owner's card again)"),
    ("remote", "RemoteStopTransaction"),
)


class StationProbe(Protocol):
    """What the reaction probes read from a station, wherever it runs."""

    async def contactor(self, connector: int) -> tuple[bool, float | None]:
        """(coil commanded closed, time.monotonic() of the last change of that command)."""
        ...

    async def pilot_reads(self, connector: int) -> int:
        """How many CP samples the station has taken so far."""
        ...


class RigProbe:
    """StationProbe of the real daemon on the mock station (the ``sim.state`` command)."""

    def __init__(self, rig: StationRig) -> None:
        self.rig = rig

    async def _connector(self, connector: int) -> dict[str, Any]:
        return (await self.rig.ctl("sim.state"))["connectors"][connector - 1]

    async def contactor(self, connector: int) -> tuple[bool, float | None]:
        c = await self._connector(connector)
        return bool(c["contactor_commanded"]), c["contactor_changed_at"]

    async def pilot_reads(self, connector: int) -> int:
        return int((await self._connector(connector))["pilot_reads"])


async def reaction_ms(
    probe: StationProbe,
    connector: int,
    trigger: Callable[[], Awaitable[object]],
    *,
    timeout: float = 10.0,
    interval: float = 0.005,
) -> float:
    """Milliseconds from just before ``trigger()`` to the contactor commanded open."""
    closed, _ = await probe.contactor(connector)
    if not closed:
        raise RuntimeError(f"connector {connector}: the contactor is not closed before the trigger")
    t0 = time.monotonic()
    await trigger()
    deadline = t0 + timeout
    while True:
        closed, changed_at = await probe.contactor(connector)
        if not closed and changed_at is not None and changed_at >= t0:
            return (changed_at - t0) * 1000
        if time.monotonic() > deadline:
            raise TimeoutError(f"connector {connector}: contactor still closed after {timeout} s")
        await asyncio.sleep(interval)


async def pilot_rate_hz(probe: StationProbe, connector: int, seconds: float) -> float:
    """CP samples per second taken by the station over ``seconds``."""
    n0, t0 = await probe.pilot_reads(connector), time.monotonic()
    await asyncio.sleep(seconds)
    n1, t1 = await probe.pilot_reads(connector), time.monotonic()
    return (n1 - n0) / (t1 - t0)


def make_figures() -> list[Figure]:
    figs = []
    for silent in (False, True):
        tail = ", silent meter" if silent else ""
        for key, what in TRIGGERS:
            fig = Figure(
                f"react_{key}{'_silent' if silent else ''}", f"{what} -> contactor open{tail}", "ms"
            )
            fig.target = REACTION_TARGET
            figs.append(fig)
    for silent in (False, True):
        fig = Figure(
            f"pilot_rate{'_silent' if silent else ''}",
            f"pilot sampling rate{', silent meter' if silent else ''}",
            "Hz",
        )
        fig.target = PILOT_RATE_TARGET
        figs.append(fig)
    return figs


async def measure(
    rig: StationRig,
    csms: BenchCsms,
    figs: dict[str, Figure],
    *,
    cycles: int,
    rate_s: float,
) -> None:
    """Every trigger ``cycles`` times on connector 1, healthy meter then silent meter."""
    probe = RigProbe(rig)
    for silent in (False, True):
        await rig.fault("meter_silent", silent, 1)
        suffix = "_silent" if silent else ""
        await _charging(rig)
        figs[f"pilot_rate{suffix}"].add(await pilot_rate_hz(probe, 1, rate_s))
        await _session_over(rig)
        for key, _what in TRIGGERS:
            fig = figs[f"react_{key}{suffix}"]
            for _ in range(cycles):
                await _charging(rig)
                fig.add(await reaction_ms(probe, 1, _trigger(key, rig, csms)))
                await _clear(key, rig)
                await _session_over(rig)
            fig.note = "trigger sent over the control socket / websocket at t0; time.monotonic"
    await rig.fault("meter_silent", False, 1)


def _trigger(key: str, rig: StationRig, csms: BenchCsms) -> Callable[[], Awaitable[object]]:
    if key == "ev_error":
        return lambda: rig.fault("ev_error", True, 1)
    if key == "fault":
        return lambda: rig.fault("lock_jammed", True, 1)
    if key == "card":
        return lambda: rig.card(CARD)

    async def remote_stop() -> object:
        tx = (await rig.connector(1))["transaction_id"]
        return await csms.call(
            rig.charge_point_id, "RemoteStopTransaction", {"transactionId": tx}
        )

    return remote_stop


async def _clear(key: str, rig: StationRig) -> None:
    if key == "ev_error":
        await rig.fault("ev_error", False, 1)
    elif key == "fault":
        await rig.fault("lock_jammed", False, 1)


async def _charging(rig: StationRig) -> None:
    """Plugged, the card presented, the EV charging: contactor closed, CSMS id known."""
    await rig.plug(1)
    await rig.card(CARD)
    await rig.charge(1)
    await rig.wait_status(
        lambda s: s["connectors"][0]["contactor_closed"]
        and s["connectors"][0]["transaction_id"] is not None,
        what="charging with a transaction id",
    )


async def _session_over(rig: StationRig) -> None:
    """Whatever ended the energy: end the transaction too, unplug, wait for Available."""
    if (await rig.connector(1))["transaction_local_id"] is not None:
        await rig.card(CARD)
    await rig.unplug(1)
    await rig.wait_connector(1, "Available", timeout=15)
