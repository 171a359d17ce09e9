"""An MCP3008 ADC behind an emulated SPI port, and a CP line that changes in time.

gpiozero's MockFactory cannot host an MCP3008 on its own: its SPI is bit-banged
by a bus object that looks up gpiozero's *global* default pin factory, which
this project never sets.  ``Mcp3008MockFactory`` therefore emulates the SPI
port itself (where the kernel's spidev sits on a Pi) and puts an emulated chip
behind it; the Pi driver's own command bytes and decoding run unchanged.

The pilot's ADC must be honest about time: the CP line is a 1 kHz square wave,
and what one conversion returns depends on where in the PWM period it falls.
``CpLine`` is that line: the generator's output level (from the sysfs PWM
emulation's period, duty and phase) loaded by an emulated EV, with slew and
noise; put on a channel with ``chip.set_source(channel, line)`` it is sampled
at the chip's clock time of each conversion.  ``SimClock`` is a clock that each
SPI transfer moves on by a random transfer time, so that a test can run
100,000 conversions in a second of CPU and still see every phase.

Public API (stable; ``./dev pibox`` relies on it):

``Mcp3008(*, clock=time.monotonic, on_transfer=None)`` (alias ``MockMcp3008``)
    ``set_channel(ch, *levels)``: steady level(s), fractions of Vref; several are
    taken in turn by successive conversions.  ``set_source(ch, fn)``: ``fn(t)``
    gives the level at clock time ``t``; ``source(ch)`` returns it (None for levels).
    ``disconnect()`` / ``reconnect()``: every transfer fails (OSError) as a dead bus does.
    ``stick(raw)`` / ``unstick()``: a dead chip that answers without an SPI error: 0 (MISO held
    low) or 1023 (MISO floating high: every bit 1, the null bit too).
    ``conversions``: how many were made.  ``on_transfer()`` is called at the
    start of each transfer (a SimClock's ``transfer``).
``CpLine(pwm=None, *, offset_v=-12.0, span_v=24.0, noise_v=0.0, slew_s=0.0, rng=None)``
    ``pwm``: a ``PwmChannelState`` (hal.emulated.sysfs_pwm) or any object with
    ``level_at(t)``; None is a generator held high (+12 V).  ``plug(state)``
    with "A".."E" puts the standard levels on the line; ``set_levels(high_v,
    low_v)`` any others; ``short_diode()`` (the low side follows the EV's
    resistor); ``lose_negative_supply()`` (the generator's low side is 0 V).
    ``volts_at(t)`` and ``__call__(t)`` (the ADC level, 0..1) read it.
``SimClock(start=0.0, *, transfer_s=(25e-6, 75e-6), stall_p=0.0, stall_s=(0.2e-3, 3e-3),
rng=None)``
    ``now`` / ``__call__()``; ``advance(dt)``; ``transfer()`` moves on by one
    random transfer time (and, with probability ``stall_p``, a preemption first).
``Mcp3008MockFactory(revision=None, *, clock=time.monotonic, on_transfer=None)``
    a gpiozero MockFactory with PWM-capable pins; ``adc(device, port=0)`` is the
    chip behind SPI<port> CE<device>, created on first use.  ``pwm_tree``: the
    emulated PWM sysfs tree that ``open_pi_station`` set up on this factory (else None);
    each connector's CP channel then carries a ``CpLine`` following its PWM channel
    (``factory.adc(dev).source(cp_channel).plug("B")`` plugs an EV).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from gpiozero.pins import SPI
from gpiozero.pins.mock import MockFactory, MockPWMPin
from gpiozero.pins.pi import spi_port_device

__all__ = ["CpLine", "Mcp3008", "Mcp3008MockFactory", "MockMcp3008", "SimClock"]

RESOLUTION = 1023

# The CP levels an EV puts on the line (high side, low side), IEC 61851-1 table A.2 nominal.
EV_LEVELS: dict[str, tuple[float, float]] = {
    "A": (12.0, -12.0),  # no EV: the line follows the generator
    "B": (9.0, -12.0),  # 2.74 kOhm behind a diode
    "C": (6.0, -12.0),  # + 1.3 kOhm: ready
    "D": (3.0, -12.0),  # + 270 Ohm: ready, ventilation
    "E": (0.0, 0.0),  # CP shorted to PE
}


class _Level(Protocol):
    def level_at(self, t: float) -> bool: ...


class SimClock:
    """Simulated time that SPI transfers move on: no sleeping, every phase reachable."""

    def __init__(
        self,
        start: float = 0.0,
        *,
        transfer_s: tuple[float, float] = (25e-6, 75e-6),
        stall_p: float = 0.0,
        stall_s: tuple[float, float] = (0.2e-3, 3e-3),
        rng: random.Random | None = None,
    ) -> None:
        self.now = start
        self.transfer_s = transfer_s
        self.stall_p = stall_p
        self.stall_s = stall_s
        self._rng = rng or random.Random(0)

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt

    def transfer(self) -> None:
        """One SPI transfer's time: a uniform draw from ``transfer_s``.

        With probability ``stall_p`` the reading thread was preempted first, for a
        uniform draw from ``stall_s`` (a busy Pi's scheduler, a garbage collection).
        """
        if self.stall_p and self._rng.random() < self.stall_p:
            self.now += self._rng.uniform(*self.stall_s)
        self.now += self._rng.uniform(*self.transfer_s)


class CpLine:
    """The CP voltage at the ADC's front end, in time; see the module docstring."""

    def __init__(
        self,
        pwm: _Level | None = None,
        *,
        offset_v: float = -12.0,
        span_v: float = 24.0,
        noise_v: float = 0.0,
        slew_s: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.pwm = pwm
        self.offset_v = offset_v
        self.span_v = span_v
        self.noise_v = noise_v
        self.slew_s = slew_s
        self._rng = rng or random.Random(0)
        self.high_v, self.low_v = EV_LEVELS["A"]
        self._negative_supply = True

    def plug(self, state: str) -> None:
        """Put an EV in ``state`` ("A".."E") on the line, with a healthy diode."""
        self.high_v, self.low_v = EV_LEVELS[state]
        if not self._negative_supply and state != "E":
            self.low_v = 0.0

    def set_levels(self, high_v: float, low_v: float) -> None:
        self.high_v, self.low_v = high_v, low_v

    def short_diode(self) -> None:
        """The EV's diode conducts both ways: its resistor loads the low side as the high."""
        self.low_v = -self.high_v

    def lose_negative_supply(self) -> None:
        """The generator's -12 V rail is gone: its low side sits at 0 V."""
        self._negative_supply = False
        self.low_v = 0.0

    def volts_at(self, t: float) -> float:
        volts = self._clean_volts_at(t)
        if self.noise_v:
            volts += self._rng.gauss(0.0, self.noise_v)
        return volts

    def __call__(self, t: float) -> float:
        level = (self.volts_at(t) - self.offset_v) / self.span_v
        return min(1.0, max(0.0, level))

    def _clean_volts_at(self, t: float) -> float:
        pwm = self.pwm
        if pwm is None:
            return self.high_v
        high = pwm.level_at(t)
        if self.slew_s > 0:
            # Within slew_s after an edge the line is still on its way from the other level.
            before = pwm.level_at(t - self.slew_s)
            if before != high:
                for k in range(1, 33):
                    back = t - self.slew_s * k / 32
                    if pwm.level_at(back) != high:
                        frac = (k - 0.5) / 32  # how far along the ramp t is
                        a, b = (self.low_v, self.high_v) if high else (self.high_v, self.low_v)
                        return a + (b - a) * frac
        return self.high_v if high else self.low_v


class Mcp3008:
    """An emulated MCP3008: eight single-ended inputs, each a level or a function of time."""

    RESOLUTION = RESOLUTION

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transfer: Callable[[], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._levels: dict[int, Iterator[float] | Callable[[float], float]] = {
            ch: itertools.repeat(0.0) for ch in range(8)
        }
        self._connected = True
        self._stuck: int | None = None
        self.clock = clock
        self.on_transfer = on_transfer
        self.conversions = 0
        self.transfers = 0

    def set_channel(self, channel: int, *levels: float) -> None:
        _check_channel(channel)
        if not levels or any(not 0.0 <= x <= 1.0 for x in levels):
            raise ValueError("levels are fractions of Vref, 0..1, at least one")
        with self._lock:
            self._levels[channel] = itertools.cycle(levels)

    def set_source(self, channel: int, source: Callable[[float], float]) -> None:
        """``source(t)`` is the channel's level (0..1) at clock time ``t``."""
        _check_channel(channel)
        with self._lock:
            self._levels[channel] = source

    def source(self, channel: int) -> Callable[[float], float] | None:
        """The function of time on ``channel`` (a CpLine, say); None for steady levels."""
        _check_channel(channel)
        source = self._levels[channel]
        return source if callable(source) else None

    def disconnect(self) -> None:
        self._connected = False

    def reconnect(self) -> None:
        self._connected = True

    def stick(self, raw: int) -> None:
        """A dead chip that still answers: 0 (MISO low) or 1023 (MISO floating high)."""
        if raw not in (0, RESOLUTION):
            raise ValueError("a dead MCP3008 reads 0 or 1023")
        self._stuck = raw

    def unstick(self) -> None:
        self._stuck = None

    def transfer(self, words: list[int]) -> list[int]:
        """Answer one chip-select period, bit by bit as the datasheet's figure 6-1 shows.

        After the start bit the chip reads SGL/DIFF and three channel bits,
        samples for one clock, sends a null bit, then the 10-bit result, MSB
        first.  Only single-ended conversions are emulated.
        """
        if self.on_transfer is not None:
            self.on_transfer()
        self.transfers += 1
        if not self._connected:
            raise OSError(5, "MCP3008 emulation: SPI transfer failed (disconnected)")
        if self._stuck == RESOLUTION:
            return [0xFF] * len(words)
        mosi = [(w >> (7 - i)) & 1 for w in words for i in range(8)]
        miso = [0] * len(mosi)
        try:
            start = mosi.index(1)
        except ValueError:
            return [0] * len(words)
        if start + 16 < len(mosi):
            single, d2, d1, d0 = mosi[start + 1 : start + 5]
            if not single:
                raise OSError(22, "MCP3008 emulation: differential mode is not emulated")
            source = self._levels[d2 << 2 | d1 << 1 | d0]
            with self._lock:
                self.conversions += 1
                level = source(self.clock()) if callable(source) else next(source)
            raw = 0 if self._stuck == 0 else round(level * RESOLUTION)
            for bit in range(10):  # null bit at start + 6 stays 0
                miso[start + 7 + bit] = (raw >> (9 - bit)) & 1
        return [
            sum(bit << (7 - i) for i, bit in enumerate(miso[n * 8 : n * 8 + 8]))
            for n in range(len(words))
        ]


MockMcp3008 = Mcp3008  # the name the tests and the bench used before the move


def _check_channel(channel: int) -> None:
    if not 0 <= channel < 8:
        raise ValueError(f"MCP3008 has no channel {channel}")


class _EmulatedSPI(SPI):
    """The SPI port of a Mcp3008MockFactory: the place spidev takes on a Pi."""

    def __init__(self, clock_pin, mosi_pin, miso_pin, select_pin, *, pin_factory) -> None:
        self._chip: Mcp3008 | None = None
        port, device = spi_port_device(clock_pin, mosi_pin, miso_pin, select_pin)
        super().__init__(pin_factory=pin_factory)
        self._port, self._device = port, device
        self.pin_factory.reserve_pins(self, clock_pin, mosi_pin, miso_pin, select_pin)
        self._chip = pin_factory.adc(device, port=port)

    def _conflicts_with(self, other: object) -> bool:
        # SPI users share the bus (and one chip's select line) with each other,
        # as on a Pi; any other device on these pins is a clash.
        return not isinstance(other, _EmulatedSPI)

    def close(self) -> None:
        if self._chip is not None:
            self.pin_factory.release_all(self)
        self._chip = None
        super().close()

    @property
    def closed(self) -> bool:
        return self._chip is None

    def transfer(self, data: list[int]) -> list[int]:
        self._check_open()
        return self._chip.transfer(list(data))

    def _get_clock_mode(self) -> int:
        return 0


class Mcp3008MockFactory(MockFactory):
    """A MockFactory with PWM-capable pins and emulated MCP3008s on its hardware SPI pins.

    ``adc(device)`` is the chip behind SPI0 CE<device>, created on first use,
    so a test can set its inputs before or after the driver opens it.
    """

    def __init__(
        self,
        revision: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transfer: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(revision, pin_class=MockPWMPin)
        self._adcs: dict[tuple[int, int], Mcp3008] = {}
        self.pwm_tree: Any = None  # the SysfsPwmTree a Pi station on this factory set up
        self._adc_clock = clock
        self._on_transfer = on_transfer

    def adc(self, device: int = 1, *, port: int = 0) -> Mcp3008:
        chip = self._adcs.get((port, device))
        if chip is None:
            chip = Mcp3008(clock=self._adc_clock, on_transfer=self._on_transfer)
            self._adcs[(port, device)] = chip
        return chip

    def _get_spi_class(self, shared: bool, hardware: bool) -> Any:
        if hardware:
            return _EmulatedSPI
        return super()._get_spi_class(shared, hardware)
