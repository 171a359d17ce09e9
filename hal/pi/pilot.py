"""The IEC 61851 control pilot on a Pi: a PWM output, and an MCP3008 that reads CP and PP back.

The CP line is driven by a +/-12 V driver from ``pwm_pin`` (1 kHz); a
front end maps the line's -12..+12 V onto one MCP3008 channel (linearly, see
PilotConfig).  The PP resistor of a socket outlet's cable sits against a
pull-up to the ADC reference on a second channel.

gpiozero's MockFactory cannot host an MCP3008 on its own: its SPI is bit-banged
by a bus object that looks up gpiozero's *global* default pin factory, which
this project never sets.  ``Mcp3008MockFactory`` therefore emulates the SPI
port itself (where the kernel's spidev sits on a Pi) and puts an emulated chip
behind it; gpiozero's own MCP3008 class still builds the command bytes and
decodes the answer, so tests and the bench run the same code as the Pi.
"""

from __future__ import annotations

import asyncio
import logging
import math

from gpiozero import MCP3008, PWMOutputDevice

from hal.config import PilotConfig
from hal.errors import PilotError
from hal.interfaces import EvState, Fault
from hal.pilot_math import cable_capacity_for_resistance, duty_for_current, state_for_voltage

__all__ = ["PWM_FREQUENCY_HZ", "GpioPilot"]

log = logging.getLogger(__name__)

PWM_FREQUENCY_HZ = 1000  # IEC 61851-1: 1 kHz
CP_SAMPLES = 64  # ~4 PWM periods at the ~60 us an MCP3008 read takes through spidev


class GpioPilot:
    """CP PWM on a GPIO pin; CP and PP voltages through an MCP3008 on SPI0."""

    def __init__(
        self, cfg: PilotConfig, *, pin_factory: object | None = None, samples: int = CP_SAMPLES
    ) -> None:
        if samples < 1:
            raise ValueError("samples must be at least 1")
        self._cfg = cfg
        self._samples = samples
        self._offered: float | None = None
        self._cp_failed = False
        self._pp_failed = False
        self._ev_error = False
        self._pwm: PWMOutputDevice | None = None
        self._cp: MCP3008 | None = None
        self._pp: MCP3008 | None = None
        try:
            # 1.0 = steady +12 V: the EV sees a station that offers nothing yet.
            self._pwm = PWMOutputDevice(
                cfg.pwm_pin,
                frequency=PWM_FREQUENCY_HZ,
                initial_value=duty_for_current(None),
                pin_factory=pin_factory,
            )
            self._cp = MCP3008(
                channel=cfg.cp_channel, device=cfg.adc_device, pin_factory=pin_factory
            )
            if cfg.pp_channel is not None:
                self._pp = MCP3008(
                    channel=cfg.pp_channel, device=cfg.adc_device, pin_factory=pin_factory
                )
        except BaseException:
            self.release()
            raise

    # --- the Pilot interface ---------------------------------------------------

    @property
    def offered_current_a(self) -> float | None:
        return self._offered

    def set_offered_current(self, amps: float | None) -> None:
        duty = duty_for_current(amps)  # ValueError before anything changes on the line
        self._pwm_device().value = duty
        self._offered = None if amps is None or amps == 0 else float(amps)

    async def ev_state(self) -> EvState:
        """Sample the CP line over a few PWM periods; the EV state it shows.

        The ADC is not synchronised with the PWM, so a single sample lands on
        the high or the low half at random.  ``samples`` readings spread over
        several periods: the highest is the high side (the level that codes
        the state), the lowest the low side (the EV's diode keeps it at
        -12 V).  The low side is judged only when the samples can have seen
        it: some sample was clearly negative, or the low half lasts at least
        10 % of the period (a miss over 64 samples is then about 0.1 %).
        """
        duty = self._pwm_device().value
        volts = await self._read(self._cp_adc(), "CP", self._samples, cp=True)
        volts = [self._cfg.cp_offset_v + v * self._cfg.cp_span_v for v in volts]
        high, low = max(volts), min(volts)
        pwm_on = 0.0 < duty < 1.0
        cp_low = low if pwm_on and (low < -1.5 or duty <= 0.9) else None
        state = state_for_voltage(high, cp_low)
        ev_error = state in (EvState.E, EvState.F)
        if ev_error and not self._ev_error:
            log.error(
                "pilot on GPIO%s: EV state %s (CP high %.1f V, low %s V)",
                self._cfg.pwm_pin,
                state,
                high,
                "-" if cp_low is None else f"{cp_low:.1f}",
            )
        elif self._ev_error and not ev_error:
            log.info("pilot on GPIO%s: EV state %s, error cleared", self._cfg.pwm_pin, state)
        self._ev_error = ev_error
        return state

    async def cable_capacity_a(self) -> int | None:
        """The PP coding of the plugged cable; None when no cable (or a tethered one).

        The cable's resistor R and the pull-up form a divider, so the ADC reads
        v = R / (R + pull-up) of its reference; R = pull-up * v / (1 - v).
        Full scale is an open line: no cable.
        """
        if self._pp is None:
            return None
        (v,) = await self._read(self._pp, "PP", 1, cp=False)
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
        """Stop the PWM and free the pins and the SPI port; the pilot is unusable afterwards."""
        for device in (self._pp, self._cp, self._pwm):
            if device is not None:
                device.close()
        self._pp = self._cp = self._pwm = None
        self._offered = None

    close = release  # gpiozero's name for it

    # --- internals ----------------------------------------------------------------

    def _pwm_device(self) -> PWMOutputDevice:
        if self._pwm is None:
            raise PilotError(f"pilot on GPIO{self._cfg.pwm_pin} is released")
        return self._pwm

    def _cp_adc(self) -> MCP3008:
        if self._cp is None:
            raise PilotError(f"pilot on GPIO{self._cfg.pwm_pin} is released")
        return self._cp

    async def _read(self, adc: MCP3008, line: str, count: int, *, cp: bool) -> list[float]:
        """``count`` readings (0..1 of the ADC reference), taken in a worker thread.

        spidev blocks; 64 reads are a few milliseconds the event loop should not wait.
        """
        try:
            values = await asyncio.to_thread(lambda: [adc.value for _ in range(count)])
        except Exception as exc:  # any SPI failure: spidev OSError, gpiozero SPIError...
            message = f"{line} read on MCP3008 {self._cfg.adc_device} failed: {exc!r}"
            if cp:
                self._set_cp_failed(True, message)
            else:
                self._set_pp_failed(True, message)
            raise PilotError(message) from exc
        if cp:
            self._set_cp_failed(False, "")
        return values

    def _set_cp_failed(self, failed: bool, message: str) -> None:
        if failed and not self._cp_failed:
            log.error("pilot on GPIO%s: %s", self._cfg.pwm_pin, message)
        elif self._cp_failed and not failed:
            log.info("pilot on GPIO%s: CP readable again", self._cfg.pwm_pin)
        self._cp_failed = failed

    def _set_pp_failed(self, failed: bool, message: str) -> None:
        if failed and not self._pp_failed:
            log.error("pilot on GPIO%s: %s", self._cfg.pwm_pin, message)
        elif self._pp_failed and not failed:
            log.info("pilot on GPIO%s: PP readable again", self._cfg.pwm_pin)
        self._pp_failed = failed


def __getattr__(name: str) -> object:
    """The MCP3008 emulation moved to hal.emulated.mcp3008; old imports keep working."""
    if name in ("Mcp3008MockFactory", "MockMcp3008"):
        from hal.emulated import mcp3008

        return getattr(mcp3008, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
