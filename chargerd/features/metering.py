"""Meter values: what a sample looks like on the wire, and when samples are due.

The builders are pure functions of a hal MeterSample so that the exact OCPP
shape (measurand names, phases, units, contexts) is tested without a meter.
The sampler (MeterSampler) owns the timing: periodic samples during a
transaction every MeterValueSampleInterval, clock-aligned samples every
ClockAlignedDataInterval counted from midnight UTC.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta

from chargerd.clock import Clock, iso
from hal.interfaces import MeterSample

log = logging.getLogger(__name__)

ENERGY = "Energy.Active.Import.Register"
ENERGY_INTERVAL = "Energy.Active.Import.Interval"
POWER = "Power.Active.Import"
CURRENT = "Current.Import"
VOLTAGE = "Voltage"
OFFERED = "Current.Offered"
POWER_OFFERED = "Power.Offered"
FREQUENCY = "Frequency"

#: What our meters can deliver; a measurand list naming anything else is Rejected.
SUPPORTED_MEASURANDS = frozenset(
    {ENERGY, ENERGY_INTERVAL, POWER, CURRENT, VOLTAGE, OFFERED, POWER_OFFERED, FREQUENCY}
)

#: Below this current on every phase, no energy flows (the status shows 0 W).
NO_CURRENT_A = 0.1

_PHASES = ("L1", "L2", "L3")


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def displayed_power_w(sample: MeterSample | None, *, contactor_closed: bool) -> float | None:
    """The power a technician sees: 0 whenever the contactor is open or no current flows.

    A silent meter keeps its last reading, taken while the EV still charged; shown
    as is, it would claim 22 kW on a connector whose contactor is open.
    """
    if sample is None:
        return None
    if not contactor_closed:
        return 0.0
    currents = [a for a in sample.current_a if a is not None]
    if currents and all(abs(a) < NO_CURRENT_A for a in currents):
        return 0.0
    return sample.power_w


def interval_wh(sample: MeterSample, since_wh: float | None) -> float | None:
    """Energy.Active.Import.Interval: the register's growth since ``since_wh`` (None: unknown)."""
    if since_wh is None:
        return None
    return max(0.0, sample.energy_wh - since_wh)


def sampled_values(
    sample: MeterSample,
    measurands: Iterable[str],
    *,
    context: str,
    offered_current_a: float | None = None,
    interval_energy_wh: float | None = None,
) -> list[dict]:
    """The sampledValue list for one reading, in OCPP 1.6 wire form (camelCase).

    Per-phase quantities are reported per phase (phase L1..L3), as the
    specification's examples and most CSMSs expect; the energy register and
    the total power are reported without a phase.  The interval energy
    (Energy.Active.Import.Interval) follows the register's rules: no phase, Wh,
    the reading's context; it is left out when the start of the interval is
    not known (the first clock-aligned reading after a start of chargerd).
    """
    out: list[dict] = []

    def add(measurand: str, value: str, unit: str, phase: str | None = None) -> None:
        item = {
            "value": value,
            "context": context,
            "format": "Raw",
            "measurand": measurand,
            "location": "Outlet",
            "unit": unit,
        }
        if phase:
            item["phase"] = phase
        out.append(item)

    for m in measurands:
        if m == ENERGY:
            add(ENERGY, _fmt(sample.energy_wh), "Wh")
        elif m == ENERGY_INTERVAL and interval_energy_wh is not None:
            add(ENERGY_INTERVAL, _fmt(interval_energy_wh), "Wh")
        elif m == POWER and sample.power_w is not None:
            add(POWER, _fmt(sample.power_w), "W")
        elif m == CURRENT:
            for phase, amps in zip(_PHASES, sample.current_a, strict=False):
                if amps is not None:
                    add(CURRENT, _fmt(amps, 2), "A", phase)
        elif m == VOLTAGE:
            for phase, volts in zip(_PHASES, sample.voltage_v, strict=False):
                if volts is not None:
                    add(VOLTAGE, _fmt(volts), "V", f"{phase}-N")
        elif m == OFFERED:
            add(OFFERED, _fmt(offered_current_a or 0.0), "A")
        elif m == POWER_OFFERED:
            # The offered current on each phase the meter sees a voltage on (the limit in force).
            volts = sum(v for v in sample.voltage_v if v is not None)
            add(POWER_OFFERED, _fmt((offered_current_a or 0.0) * volts), "W")
        elif m == FREQUENCY and sample.frequency_hz is not None:
            # The 1.6 schema has no unit for frequency; Hz is implied.
            item = {
                "value": _fmt(sample.frequency_hz, 2),
                "context": context,
                "format": "Raw",
                "measurand": FREQUENCY,
                "location": "Outlet",
            }
            out.append(item)
    return out


def meter_value(
    sample: MeterSample,
    measurands: Iterable[str],
    *,
    context: str,
    timestamp: datetime,
    offered_current_a: float | None = None,
    interval_energy_wh: float | None = None,
) -> dict:
    """One MeterValue element (timestamp + sampledValue list)."""
    return {
        "timestamp": iso(timestamp),
        "sampledValue": sampled_values(
            sample,
            measurands,
            context=context,
            offered_current_a=offered_current_a,
            interval_energy_wh=interval_energy_wh,
        ),
    }


def parse_measurands(csl: str) -> list[str]:
    return [m.strip() for m in csl.split(",") if m.strip()]


def next_aligned(now: datetime, interval_s: int) -> datetime:
    """The next clock-aligned instant after ``now``: multiples of the interval since midnight.

    OCPP counts the intervals per day, starting at 00:00:00: an interval that does not
    divide a day (7 h: 00, 07, 14, 21) starts again at the next midnight, not at 04:00.
    """
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = (now - midnight).total_seconds()
    steps = int(elapsed // interval_s) + 1
    return min(midnight + timedelta(seconds=steps * interval_s), midnight + timedelta(days=1))


class PeriodicTask:
    """Runs ``tick`` every ``interval()`` seconds; a changed interval applies at the next tick.

    Used for the sample interval and the heartbeat, whose configuration keys take
    effect at once when a CSMS changes them: ``poke()`` wakes the waiting task so
    that a shorter interval does not wait out the old one.
    """

    def __init__(
        self,
        name: str,
        interval: Callable[[], float],
        tick: Callable[[], Awaitable[None]],
        clock: Clock,
    ) -> None:
        self.name = name
        self._interval = interval
        self._tick = tick
        self._clock = clock
        self._wake = asyncio.Event()
        self._failing = False  # a failure was logged at ERROR; quiet until a tick succeeds

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            period = self._interval()
            self._wake.clear()
            if period <= 0:
                await self._wake.wait()
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=period)
                continue  # interval changed: start a new period
            except TimeoutError:
                pass
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Once at ERROR with the traceback, then quietly: a full disk would
                # otherwise log a traceback every MeterValueSampleInterval.
                if not self._failing:
                    log.exception(
                        "periodic task %s failed; it will run again each period", self.name
                    )
                    self._failing = True
                else:
                    log.debug("periodic task %s failed again", self.name, exc_info=True)
            else:
                if self._failing:
                    log.info("periodic task %s runs again", self.name)
                    self._failing = False


class MeterSampler:
    """Periodic and clock-aligned meter values.

    Periodic values of a transaction go through the outbox, in the same commit
    that persists the energy register for a possible power-loss stop.
    Clock-aligned values belong to the transaction when one runs, and are sent
    live otherwise.
    """

    #: How often the register is persisted when sampling is off (MeterValueSampleInterval=0).
    FALLBACK_PERSIST_S = 30.0

    def __init__(self, *, supervisor, transactions, config, clock: Clock, send_live) -> None:
        self._sup = supervisor
        self._tx = transactions
        self._config = config
        self._clock = clock
        self._send_live = send_live
        self.periodic = PeriodicTask(
            "sampled meter values", self._sample_interval, self.sample, clock
        )
        self._aligned_wake = asyncio.Event()
        # Where each connector's current interval began, for Energy.Active.Import.Interval:
        # connector -> (transaction local id, register) of the last periodic sample, and
        # connector -> (instant, register) of the last clock-aligned reading.
        self._periodic_from: dict[int, tuple[int, float]] = {}
        self._aligned_from: dict[int, tuple[datetime, float]] = {}

    def _sample_interval(self) -> float:
        interval = int(self._config.get("MeterValueSampleInterval") or 0)
        return float(interval) if interval > 0 else self.FALLBACK_PERSIST_S

    def _measurands(self, key: str) -> list[str]:
        return parse_measurands(str(self._config.get(key) or ""))

    async def sample(self) -> None:
        interval = int(self._config.get("MeterValueSampleInterval") or 0)
        measurands = self._measurands("MeterValuesSampledData")
        for conn in list(self._sup.connectors.values()):
            if conn.tx is None:
                continue
            reading = await self._sup.read_meter_now(conn)
            if reading is None:
                continue
            if interval > 0 and measurands:
                # The first interval of a transaction starts at its meterStart.
                local_id, since = self._periodic_from.get(conn.id, (None, None))
                if local_id != conn.tx.local_id:
                    since = conn.tx.meter_start_wh
                mv = meter_value(
                    reading,
                    measurands,
                    context="Sample.Periodic",
                    timestamp=self._clock.now(),
                    offered_current_a=conn.hw.pilot.offered_current_a,
                    interval_energy_wh=interval_wh(reading, since),
                )
                self._tx.queue_meter_values(conn, [mv], sample=reading)
                self._periodic_from[conn.id] = (conn.tx.local_id, reading.energy_wh)
            else:
                with self._tx.store_transaction():
                    self._tx.persist_energy(conn, reading)

    def aligned_changed(self) -> None:
        self._aligned_wake.set()

    async def aligned_loop(self) -> None:
        # The wait runs on the monotonic clock; when it ends the wall clock may still be
        # before the instant waited for (set back by a Heartbeat's currentTime, NTP
        # slewing), and that instant must not be sampled a second time.
        last: datetime | None = None
        while True:
            interval = int(self._config.get("ClockAlignedDataInterval") or 0)
            self._aligned_wake.clear()
            if interval <= 0:
                await self._aligned_wake.wait()
                continue
            now = self._clock.now()
            recent = last is not None and now < last < now + timedelta(seconds=interval)
            target = next_aligned(last if recent else now, interval)
            wait = (target - now).total_seconds()
            try:
                await asyncio.wait_for(self._aligned_wake.wait(), timeout=wait)
                continue
            except TimeoutError:
                pass
            last = target
            try:
                await self.aligned(at=target)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("clock-aligned meter values failed")

    async def aligned(self, *, at: datetime | None = None) -> None:
        """One clock-aligned reading per connector, stamped ``at`` (the grid instant).

        MeterValuesAlignedData goes out as MeterValues; StopTxnAlignedData is kept
        for the running transaction's StopTransaction.transactionData.

        Stamped with the instant it stands for, not the time read after the wait:
        that can be a few ms before the instant (the wall clock lags the monotonic
        wait) and a CSMS that buckets by interval would then file 10:15:00 under the
        quarter hour before.
        """
        measurands = self._measurands("MeterValuesAlignedData")
        for_stop = self._measurands("StopTxnAlignedData")
        if not measurands and not for_stop:
            return
        stamp = at or self._clock.now()
        for conn in list(self._sup.connectors.values()):
            if not measurands and conn.tx is None:
                continue
            reading = await self._sup.read_meter_now(conn)
            if reading is None:
                continue
            offered = conn.hw.pilot.offered_current_a
            # The interval is known only when the previous grid instant was read too.
            prev = self._aligned_from.get(conn.id)
            interval = int(self._config.get("ClockAlignedDataInterval") or 0)
            since = None
            if prev is not None and abs((stamp - prev[0]).total_seconds() - interval) < 1.0:
                since = prev[1]
            self._aligned_from[conn.id] = (stamp, reading.energy_wh)
            energy = interval_wh(reading, since)
            if for_stop and conn.tx is not None:
                self._tx.note_stop_aligned(
                    conn,
                    meter_value(
                        reading,
                        for_stop,
                        context="Sample.Clock",
                        timestamp=stamp,
                        offered_current_a=offered,
                        interval_energy_wh=energy,
                    ),
                )
            if not measurands:
                continue
            mv = meter_value(
                reading,
                measurands,
                context="Sample.Clock",
                timestamp=stamp,
                offered_current_a=offered,
                interval_energy_wh=energy,
            )
            if conn.tx is not None:
                self._tx.queue_meter_values(conn, [mv], sample=reading)
            else:
                self._send_live("MeterValues", {"connectorId": conn.id, "meterValue": [mv]})
