"""Reaction and liveness: a meter or a driver that hangs delays neither a stop nor the pilot.

The old supervisor read the meter inline in its pass and before opening the
contactor on a stop: a silent meter (2 s per Modbus read) made the pilot sampled
every ~2 s and an emergency stop wait for it.  These tests use a meter whose read
never returns, the worst case; nothing here waits in real time.
"""

from __future__ import annotations

import asyncio
import logging

from chargerd import sdnotify
from chargerd.features.liveness import stale_supervision
from hal.interfaces import EvState, Fault

TAG = "0A1B2C3D"


class HangingMeter:
    """A meter whose bus never answers and that has not (yet) been seen failing."""

    def __init__(self, real) -> None:
        self._real = real
        self.reads = 0

    @property
    def last_sample(self):
        return self._real.last_sample

    async def read(self):
        self.reads += 1
        await asyncio.Event().wait()  # never returns

    def faults(self):
        return frozenset()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def charging(b, n: int = 1) -> None:
    b.sim.plug(n)
    await b.tick()
    b.supervisor.grant(b.conn(n), id_tag=TAG, parent_id_tag=None)
    await b.tick()
    b.sim.charge(n)
    await b.tick()
    assert b.conn(n).status == "Charging"


def commanded(b, n: int = 1) -> bool:
    return b.sim.snapshot()["connectors"][n - 1]["contactor_commanded"]


async def test_a_stop_opens_the_contactor_before_it_waits_for_a_hanging_meter(make_bench):
    b = make_bench()
    await charging(b)
    b.conn(1).hw.meter = HangingMeter(b.conn(1).hw.meter)
    stop = asyncio.create_task(b.supervisor.stop(b.conn(1), "Local"))
    await settle()
    try:
        assert not stop.done()  # still waiting for the meter's meterStop reading ...
        assert not commanded(b)  # ... with the contactor already open
        assert b.conn(1).hw.pilot.offered_current_a is None  # and the PWM off
    finally:
        stop.cancel()
        await asyncio.gather(stop, return_exceptions=True)


async def test_ev_state_f_opens_the_contactor_in_one_pass_with_a_hanging_meter(make_bench):
    b = make_bench()
    await charging(b)
    meter = HangingMeter(b.conn(1).hw.meter)
    b.conn(1).hw.meter = meter
    b.conn(1).sample_at = -1e9  # a meter reading is due
    b.sim.fault("ev_error", True, 1)
    tick = asyncio.create_task(b.supervisor.tick(b.conn(1)))
    await settle()
    assert tick.done(), "the supervisor's pass waited for the meter"
    tick.result()
    assert not commanded(b)
    assert meter.reads == 0  # the pass never touches the meter


async def test_an_emergency_stop_on_a_fault_opens_at_once_with_a_hanging_meter(make_bench):
    b = make_bench()
    await charging(b)
    b.conn(1).hw.meter = HangingMeter(b.conn(1).hw.meter)
    b.sim.fault("lock_jammed", True, 1)  # LOCK_FAILURE: the transaction ends (EmergencyStop)
    tick = asyncio.create_task(b.supervisor.tick(b.conn(1)))
    await settle()
    try:
        assert Fault.LOCK_FAILURE in b.conn(1).faults
        assert not commanded(b)
    finally:
        tick.cancel()
        await asyncio.gather(tick, return_exceptions=True)


async def test_the_pilot_is_sampled_every_pass_while_the_meter_hangs(make_bench):
    b = make_bench()
    await charging(b)
    b.conn(1).hw.meter = HangingMeter(b.conn(1).hw.meter)
    meter_task = asyncio.create_task(b.supervisor.meter_loop(b.conn(1)))
    try:
        await settle()
        b.sim.suspend(1)  # the EV goes back to B
        tick = asyncio.create_task(b.supervisor.tick(b.conn(1)))
        await settle()
        assert tick.done() and b.conn(1).ev_state is EvState.B
        assert not commanded(b)
    finally:
        meter_task.cancel()
        await asyncio.gather(meter_task, return_exceptions=True)


async def test_a_stop_with_a_meter_known_silent_takes_the_last_reading_at_once(make_bench):
    b = make_bench()
    await charging(b)
    b.sim.fault("meter_silent", True, 1)
    await asyncio.wait_for(b.supervisor.stop(b.conn(1), "Local"), timeout=5)
    assert not commanded(b) and b.conn(1).tx is None


# -- the systemd watchdog follows the supervision ---------------------------------------------


def test_stale_supervision_names_the_first_connector_without_a_recent_pass():
    assert stale_supervision({1: 10.0, 2: 9.0}, now=11.0, max_age_s=2.5) is None
    assert stale_supervision({1: 10.0, 2: 8.5}, now=11.0, max_age_s=2.5) is None  # exactly 2.5
    why = stale_supervision({1: 10.0, 2: 8.0}, now=11.0, max_age_s=2.5)
    assert why == "connector 2 has completed no supervision pass for 3.0 s"
    assert stale_supervision({}, now=11.0, max_age_s=2.5) is None


async def _watchdog_run(b, pass_runner, steps: int = 40) -> list[str]:
    """Run the watchdog loop on the fake clock beside ``pass_runner``; the pings it sent."""
    sent: list[str] = []

    def send(state: str) -> bool:
        sent.append(state)
        return True

    watchdog = asyncio.create_task(
        sdnotify.watchdog_loop(
            5.0,
            clock=b.clock,
            stale=lambda: b.supervisor.supervision_stale(2.5),
            send=send,
        )
    )
    runner = asyncio.create_task(pass_runner())
    try:
        for _ in range(steps):
            await asyncio.sleep(0)
    finally:
        for task in (watchdog, runner):
            task.cancel()
        await asyncio.gather(watchdog, runner, return_exceptions=True)
    return sent


async def test_the_watchdog_is_fed_while_every_connector_completes_its_passes(make_bench):
    b = make_bench(connectors=2)

    async def passes() -> None:
        while True:
            await b.supervisor.run_pass()
            await asyncio.sleep(0)

    sent = await _watchdog_run(b, passes)
    assert len(sent) >= 10 and set(sent) == {"WATCHDOG=1"}


async def test_a_hung_pilot_read_stops_the_watchdog_feeding(make_bench, caplog):
    """A hung SPI read blocks the pass; the event loop turns on, the pings stop."""
    caplog.set_level(logging.CRITICAL, logger="chargerd.sdnotify")
    b = make_bench(connectors=2)
    await b.supervisor.run_pass()

    async def hung_ev_state():
        await asyncio.Event().wait()

    b.conn(2).hw.pilot.ev_state = hung_ev_state  # type: ignore[method-assign]
    sent = await _watchdog_run(b, b.supervisor.run_pass)
    # Pings every 1.25 s of fake time while the last pass is at most 2.5 s old: 0, 1.25, 2.5.
    assert sent == ["WATCHDOG=1"] * 3
    (critical,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "connector 2 has completed no supervision pass" in critical.getMessage()
    assert b.clock.monotonic() - b.supervisor.pass_at[2] > 40  # the fake clock ran on


async def test_a_meter_driver_bug_neither_ends_the_meter_task_nor_loses_the_last_reading(
    make_bench, caplog
):
    b = make_bench()
    await charging(b)
    good = b.conn(1).sample
    assert good is not None

    class BuggyMeter(HangingMeter):
        async def read(self):
            raise RuntimeError("driver bug")

    b.conn(1).hw.meter = BuggyMeter(b.conn(1).hw.meter)
    b.conn(1).sample_at = -1e9
    await b.supervisor.poll_meter(b.conn(1))
    assert b.conn(1).sample is not None
    assert "meter read failed unexpectedly" in caplog.text
