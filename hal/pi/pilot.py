"""The IEC 61851 control pilot on a Pi: a 1 kHz PWM out, an MCP3008 that reads CP and PP back.

The CP line is driven by a +/-12 V driver from the PWM pin; a front end maps
the line's -12..+12 V onto one MCP3008 channel (linearly, see PilotConfig).
The PP resistor of a socket outlet's cable sits against a pull-up to the ADC
reference on a second channel.

PWM: the kernel's hardware PWM through sysfs (``pwm = "sysfs"``, the default,
hal.pi.sysfs_pwm), or gpiozero's lgpio software PWM as an explicit fallback
(``pwm = "lgpio"``, LgpioPwmOutput), which logs a warning at start.

Reading the CP: the ADC is not synchronised with the PWM, and at 6 A (10 %
duty) the high plateau that codes the EV state lasts 100 us of each 1 ms.  One
reading (a *burst*) is a run of conversions, one SPI transfer each, dense
enough (gaps below 85 % of the plateau) and long enough (a period plus the
plateau) to contain a conversion inside a complete high pulse; its highest
reading is the high level, its lowest the low level.  A burst is judged by
hal.pilot_math (``cp_state``, ``adc_stuck``) and a change of state is accepted
only after ``debounce`` agreeing bursts in a row; while a change is pending
the bursts follow each other at once, so a real change is accepted within the
same call, a few milliseconds later.  An implausible line (no -12 V while the
PWM runs, an ADC at a rail, a positive level outside every band, an MCP3008
whose null bit is high, i.e. not answering) is PILOT_FAILURE: ``ev_state``
raises PilotError, as for a failing SPI transfer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpiozero import Device, PWMOutputDevice

from hal.config import PilotConfig
from hal.errors import PilotError
from hal.interfaces import EvState, Fault
from hal.pi.sysfs_pwm import PERIOD_NS, SysfsPwmOutput
from hal.pilot_math import (
    NO_NEGATIVE_V,
    adc_stuck,
    cable_capacity_for_resistance,
    cp_state,
    debounce_step,
    dense_run_needed_s,
    duty_for_current,
)

__all__ = ["PWM_FREQUENCY_HZ", "GpioPilot", "LgpioPwmOutput", "Mcp3008Port"]

log = logging.getLogger(__name__)

PWM_FREQUENCY_HZ = 1000  # IEC 61851-1: 1 kHz
PERIOD_S = PERIOD_NS / 1e9
CP_MIN_READS = 8  # per burst, also on a steady line
CP_MAX_BURST_S = 4 * PERIOD_S  # a burst that found no dense run by then is judged as it is
CP_MAX_READS = 2048  # per burst, whatever the clock says (a clock that stands still)
FULL_SCALE = 1023
_FAILURE = "failure"  # a burst that shows no plausible line


class LgpioPwmOutput:
    """The fallback: gpiozero's PWMOutputDevice, i.e. lgpio's software PWM on a Pi.

    lgpio times the edges from one thread under normal scheduling (shared with
    the LED's PWM), and gpiozero's LGPIO pin sends the duty as a whole percent,
    truncated: 10 A (16.67 %) is offered as 16 % = 9.6 A, 52 A as 50.4 A.  One
    percent is 10 us, above the standard's pulse-width tolerance.  Only for a
    board whose pin has no hardware PWM.
    """

    def __init__(self, pin: int, *, pin_factory: Any, initial_duty: float) -> None:
        log.warning(
            'pilot PWM on GPIO%s: lgpio software PWM (pwm = "lgpio"): edges timed by a '
            "thread and the duty truncated to whole percent (10 A is offered as 9.6 A); "
            'use pwm = "sysfs" with the kernel\'s PWM overlay',
            pin,
        )
        self._device = PWMOutputDevice(
            pin, frequency=PWM_FREQUENCY_HZ, initial_value=initial_duty, pin_factory=pin_factory
        )
        self.name = f"GPIO{pin}"

    @property
    def duty(self) -> float:
        return float(self._device.value)

    @duty.setter
    def duty(self, value: float) -> None:
        self._device.value = value

    def close(self) -> None:
        self._device.close()


class Mcp3008Port:
    """MCP3008 conversions over a gpiozero SPI interface: one 3-byte transfer each.

    Done here rather than with gpiozero's MCP3008 class for the null bit: a
    real chip drives MISO low for one clock before the result, so a result
    with that bit high is a chip that is not answering (MISO floating high),
    however plausible the value.
    """

    def __init__(self, spi: Any) -> None:
        self._spi = spi
        self._lock = threading.Lock()
        self.transfers = 0

    def read(self, channel: int) -> tuple[int, bool]:
        """(raw 0..1023, whether the chip answered) for one single-ended conversion."""
        with self._lock:
            rx = self._spi.transfer([0x01, 0x80 | channel << 4, 0x00])
            self.transfers += 1
        return (rx[1] & 0x03) << 8 | rx[2], not rx[1] & 0x04

    def close(self) -> None:
        self._spi.close()


@dataclass(frozen=True, slots=True)
class Burst:
    """One CP reading: the conversions of a burst, and whether they were dense enough."""

    raws: tuple[int, ...]
    answered: bool  # every conversion had its null bit low
    dense: bool  # the run the duty needs was reached (see pilot_math.dense_run_needed_s)


class GpioPilot:
    """CP PWM (kernel sysfs or lgpio); CP and PP voltages through an MCP3008 on SPI0."""

    def __init__(
        self,
        cfg: PilotConfig,
        *,
        pin_factory: Any = None,
        samples: int = CP_MIN_READS,
        max_reads: int = CP_MAX_READS,
        max_burst_s: float = CP_MAX_BURST_S,
        clock: Callable[[], float] = time.monotonic,
        settle: Callable[[], None] | None = None,
    ) -> None:
        if samples < 1 or max_reads < samples:
            raise ValueError("need 1 <= samples <= max_reads")
        if cfg.debounce < 1:
            raise ValueError("debounce must be at least 1")
        self._cfg = cfg
        self.name = f"pilot on GPIO{cfg.pwm_pin}"
        self._min_reads = samples
        self._max_reads = max_reads
        self._max_burst_s = max_burst_s
        self._clock = clock
        self._offered: float | None = None
        self._cp_failed = False
        self._pp_failed = False
        self._ev_error = False
        self._accepted: EvState | str | None = None
        self._candidate: EvState | str | None = None
        self._count = 0
        self._failure_reason = ""
        self._sparse_logged = False
        self.bursts = 0
        self._pwm: SysfsPwmOutput | LgpioPwmOutput | None = None
        self._adc: Mcp3008Port | None = None
        try:
            # 1.0 = steady +12 V: the EV sees a station that offers nothing yet.
            initial = duty_for_current(None)
            if cfg.pwm == "sysfs":
                self._pwm = SysfsPwmOutput(
                    cfg.pwm_sysfs_root,
                    cfg.pwm_chip,
                    cfg.pwm_channel,
                    initial_duty=initial,
                    settle=settle,
                )
            else:
                self._pwm = LgpioPwmOutput(
                    cfg.pwm_pin, pin_factory=pin_factory, initial_duty=initial
                )
            if pin_factory is None:
                Device.ensure_pin_factory()
                pin_factory = Device.pin_factory
            self._adc = Mcp3008Port(pin_factory.spi(port=0, device=cfg.adc_device, shared=True))
        except BaseException:
            self.release()
            raise
        self.name = f"pilot on {self._pwm.name}"

    # --- the Pilot interface ---------------------------------------------------

    @property
    def offered_current_a(self) -> float | None:
        return self._offered

    def set_offered_current(self, amps: float | None) -> None:
        duty = duty_for_current(amps)  # ValueError before anything changes on the line
        self._pwm_output().duty = duty
        self._offered = None if amps is None or amps == 0 else float(amps)

    @property
    def spi_transfers(self) -> int:
        """SPI transfers made so far (one per conversion): what the sampling costs the bus."""
        return self._adc.transfers if self._adc is not None else 0

    @property
    def pwm_duty(self) -> float:
        """The duty on the line now (fraction of the period)."""
        return self._pwm_output().duty

    async def ev_state(self) -> EvState:
        """The EV state the CP line shows, debounced; PilotError when it cannot be trusted."""
        duty = self._pwm_output().duty
        adc = self._cp_adc()
        try:
            state = await asyncio.to_thread(self._sample, adc, duty)
        except OSError as exc:  # any SPI failure: spidev/lgpio OSError, gpiozero SPIError...
            message = f"CP read on MCP3008 CE{self._cfg.adc_device} failed: {exc!r}"
            self._set_cp_failed(True, message)
            raise PilotError(message) from exc
        if state is None or state == _FAILURE:
            message = self._failure_reason if state else "CP readings do not settle"
            self._set_cp_failed(True, message)
            raise PilotError(f"{self.name}: {message}")
        assert isinstance(state, EvState)
        self._set_cp_failed(False, "")
        ev_error = state in (EvState.E, EvState.F)
        if ev_error and not self._ev_error:
            log.error("%s: EV state %s", self.name, state)
        elif self._ev_error and not ev_error:
            log.info("%s: EV state %s, error cleared", self.name, state)
        self._ev_error = ev_error
        return state

    async def cable_capacity_a(self) -> int | None:
        """The PP coding of the plugged cable; None when no cable (or a tethered one).

        The cable's resistor R and the pull-up form a divider, so the ADC reads
        v = R / (R + pull-up) of its reference; R = pull-up * v / (1 - v).
        Full scale is an open line: no cable.
        """
        if self._cfg.pp_channel is None:
            return None
        adc, channel = self._cp_adc(), self._cfg.pp_channel
        try:
            raw, answered = await asyncio.to_thread(adc.read, channel)
        except OSError as exc:
            message = f"PP read on MCP3008 CE{self._cfg.adc_device} failed: {exc!r}"
            self._set_pp_failed(True, message)
            raise PilotError(message) from exc
        if not answered:
            self._set_pp_failed(True, "PP: the MCP3008 does not answer (null bit high)")
            raise PilotError(f"{self.name}: the MCP3008 does not answer")
        v = raw / FULL_SCALE
        ohm = math.inf if v >= 1.0 else self._cfg.pp_pullup_ohm * v / (1.0 - v)
        try:
            capacity = cable_capacity_for_resistance(ohm)
        except PilotError:
            self._set_pp_failed(True, f"PP reads {ohm:.0f} Ohm, shorted")
            raise
        self._set_pp_failed(False, "")
        return capacity

    def faults(self) -> frozenset[Fault]:
        faults: set[Fault] = set()
        if self._cp_failed or self._pp_failed:
            faults.add(Fault.PILOT_FAILURE)
        if self._ev_error:
            faults.add(Fault.EV_ERROR)
        return frozenset(faults)

    # --- lifecycle ----------------------------------------------------------------

    def release(self) -> None:
        """Leave the line offering nothing and free the PWM and the SPI port."""
        for device in (self._adc, self._pwm):
            if device is not None:
                try:
                    device.close()
                except Exception:  # the other device must get its chance to let go
                    log.exception("pilot: closing %r failed", device)
        self._adc = self._pwm = None
        self._offered = None

    close = release  # gpiozero's name for it

    # --- sampling (in a worker thread: the SPI calls block) ---------------------------

    def _sample(self, adc: Mcp3008Port, duty: float) -> EvState | str | None:
        """Bursts until no change is pending (or ``debounce`` of them); the accepted state.

        Before any state is accepted (the first call) up to four times as many
        bursts are taken, so that a start on a noisy line still settles.
        """
        n = self._cfg.debounce
        limit = n if self._accepted is not None else 4 * n
        for _ in range(limit):
            reading = self._judge(self._burst(adc, duty), duty)
            self._accepted, self._candidate, self._count = debounce_step(
                self._accepted, self._candidate, self._count, reading, n
            )
            if self._candidate is None and self._accepted is not None:
                break
        return self._accepted

    def _burst(self, adc: Mcp3008Port, duty: float) -> Burst:
        """Conversions until a dense run of the length the duty needs, or ``max_burst_s``.

        Fast reads (an emulated chip, a fast SPI clock) simply make the run hold
        more conversions; slow or preempted ones restart the run, up to the
        time bound.
        """
        run_s, max_gap_s = dense_run_needed_s(duty, PERIOD_S)
        channel = self._cfg.cp_channel
        raws: list[int] = []
        answered = True
        start = run_start = prev = None
        dense = False
        while len(raws) < self._max_reads:
            raw, ok = adc.read(channel)
            t = self._clock()
            raws.append(raw)
            answered = answered and ok
            if start is None:
                start = t
            if prev is None or t - prev > max_gap_s:
                run_start = t  # a gap (the thread was preempted): the run starts again
            prev = t
            if t - run_start >= run_s and len(raws) >= self._min_reads:
                dense = True
                break
            if t - start >= self._max_burst_s and len(raws) >= self._min_reads:
                break
        self.bursts += 1
        if not dense and not self._sparse_logged:
            self._sparse_logged = True
            log.warning(
                "%s: %d conversions in %.2f ms held no run of %.2f ms with gaps below %.0f us: "
                "the SPI is too slow or too busy to find the PWM's high level surely",
                self.name,
                len(raws),
                ((prev or 0.0) - (start or 0.0)) * 1e3,
                run_s * 1e3,
                max_gap_s * 1e6,
            )
        return Burst(tuple(raws), answered, dense)

    def _judge(self, burst: Burst, duty: float) -> EvState | str:
        pwm_running = 0.0 < duty < 1.0
        if not burst.answered:
            self._failure_reason = "the MCP3008 does not answer (null bit high)"
            return _FAILURE
        if adc_stuck(burst.raws, pwm_running=pwm_running, full_scale=FULL_SCALE):
            self._failure_reason = f"the ADC reads {burst.raws[0]} on every conversion"
            return _FAILURE
        offset, span = self._cfg.cp_offset_v, self._cfg.cp_span_v
        high = offset + max(burst.raws) / FULL_SCALE * span
        low = offset + min(burst.raws) / FULL_SCALE * span
        # The low side is judged only when the burst can have seen it: some reading
        # was clearly negative, or the low half lasts at least 10 % of the period.
        judge_low = pwm_running and (low < NO_NEGATIVE_V or duty <= 0.9)
        state = cp_state(high, low if judge_low else None)
        if state is None:
            self._failure_reason = (
                f"implausible CP: high {high:.1f} V, low {low:.1f} V at {duty:.1%} duty"
            )
            return _FAILURE
        return state

    # --- internals ----------------------------------------------------------------

    def _pwm_output(self) -> SysfsPwmOutput | LgpioPwmOutput:
        if self._pwm is None:
            raise PilotError(f"pilot on GPIO{self._cfg.pwm_pin} is released")
        return self._pwm

    def _cp_adc(self) -> Mcp3008Port:
        if self._adc is None:
            raise PilotError(f"pilot on GPIO{self._cfg.pwm_pin} is released")
        return self._adc

    def _set_cp_failed(self, failed: bool, message: str) -> None:
        if failed and not self._cp_failed:
            log.error("%s: %s", self.name, message)
        elif self._cp_failed and not failed:
            log.info("%s: CP plausible again", self.name)
        self._cp_failed = failed

    def _set_pp_failed(self, failed: bool, message: str) -> None:
        if failed and not self._pp_failed:
            log.error("%s: %s", self.name, message)
        elif self._pp_failed and not failed:
            log.info("%s: PP readable again", self.name)
        self._pp_failed = failed


def __getattr__(name: str) -> object:
    """The MCP3008 emulation moved to hal.emulated.mcp3008; old imports keep working."""
    if name in ("Mcp3008MockFactory", "MockMcp3008"):
        from hal.emulated import mcp3008

        return getattr(mcp3008, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
