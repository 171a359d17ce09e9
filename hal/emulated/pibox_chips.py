"""The chips of a pibox as its world sees them: watched pins, the ADC's bursts, the meters.

Part of hal.emulated.pibox (the world that uses them); kept apart so that each
file stays readable.  ``PiboxFactory`` is a gpiozero MockFactory whose pins
report every change and whose MCP3008s time-stamp every SPI transfer;
``PinPwm`` is a CP generator driven by a gpiozero PWM pin (the lgpio fallback);
``WorldMeter`` is an Eastron meter answering from a function of the world.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gpiozero.pins.mock import MockPWMPin

from hal.emulated import modbus_meter as modbus
from hal.emulated import rcd
from hal.emulated.mcp3008 import Mcp3008MockFactory
from hal.emulated.rcd import FaultOutputPin, RcdModule, TestInputPin
from hal.interfaces import MeterSample
from hal.meters import TYPES, Register, load_register_map

__all__ = ["PiboxFactory", "PinPwm", "WorldMeter", "WorldPin", "attach_rcd", "bursts"]

CONVERSIONS_KEPT = 20000
REPORTED = 200  # records per snapshot: a control-socket answer stays one short line
BURST_GAP_S = 0.005  # ADC transfers closer than this belong to one reading of the pilot
BURST_MIN = 4  # fewer transfers are a PP reading, not a CP one


class PinPwm:
    """The CP generator driven by a gpiozero PWM pin: the level at time ``t``.

    gpiozero's pin knows frequency and duty, not phase: the period starts at
    t = 0 of the monotonic clock, which the ADC's free-running conversions do not
    know either.  A released pin (no frequency) or duty 0 holds the line at -12 V.
    """

    def __init__(self, pin: Any) -> None:
        self.pin = pin

    def level_at(self, t: float) -> bool:
        duty = float(self.pin.state or 0.0)
        freq = self.pin.frequency
        if duty >= 1.0:
            return freq is not None or self.pin.function == "output"
        if duty <= 0.0 or not freq:
            return False
        return (t * freq) % 1.0 < duty


class WorldPin(MockPWMPin):
    """A MockPWMPin that tells its factory's world of every change, with the instant."""

    def _change_state(self, value: Any) -> bool:
        changed = super()._change_state(value)
        if changed:
            listener = getattr(self.factory, "on_pin_change", None)
            if listener is not None:
                listener(self)
        return changed


class PiboxFactory(Mcp3008MockFactory):
    """The pin factory of a pibox: WorldPins, emulated MCP3008s; changes go to ``on_pin_change``.

    ``transfer_times`` keeps the instant of every ADC transfer (the pilot's
    sampling, as a logic analyser on the SPI bus would show it).
    """

    def __init__(self) -> None:
        self.transfer_times: deque[float] = deque(maxlen=CONVERSIONS_KEPT)
        self.readings = 0  # bursts of at least BURST_MIN transfers: CP readings
        self._burst = 0
        super().__init__(on_transfer=self._transferred)
        self.pin_class = WorldPin
        self.on_pin_change: Callable[[WorldPin], None] | None = None

    def _transferred(self) -> None:
        now = time.monotonic()
        if self.transfer_times and now - self.transfer_times[-1] > BURST_GAP_S:
            self._burst = 0
        self._burst += 1
        if self._burst == BURST_MIN:  # counted as soon as it is a CP reading
            self.readings += 1
        self.transfer_times.append(now)


class WorldMeter(modbus.FakeMeter):
    """The connector's Eastron meter: registers computed from the world at each request."""

    def __init__(self, *, unit_id: int, model: str, sample: Callable[[], MeterSample]) -> None:
        super().__init__(unit_id=unit_id)
        self._sample = sample
        self._map = load_register_map(model)

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> Any:
        self.requests.append((function_code, address, count))
        del self.requests[:-100]
        s = self._sample()
        m = self._map
        pairs: list[tuple[Register | None, float | None]] = [
            (m.energy_wh, s.energy_wh),
            (m.power_w, s.power_w),
            (m.frequency_hz, s.frequency_hz),
        ]
        for regs, values in (
            (m.voltage_v, s.voltage_v),
            (m.current_a, s.current_a),
            (m.power_per_phase_w, s.power_per_phase_w),
        ):
            pairs += list(zip(regs, values or (), strict=False))
        for reg, value in pairs:
            if reg is None or value is None:
                continue
            offset = reg.address - start_address
            if not 0 <= offset <= len(registers) - reg.width:
                continue
            registers[offset : offset + reg.width] = _encode(reg, value)
        return None


def bursts(times: list[float]) -> list[float]:
    """Start instants of the ADC's bursts (one pilot reading each), the latest REPORTED."""
    bursts: list[list[float]] = []
    for i, t in enumerate(times):
        if i == 0 or t - times[i - 1] > BURST_GAP_S:
            bursts.append([])
        bursts[-1].append(t)
    return [b[0] for b in bursts if len(b) >= BURST_MIN][-REPORTED:]


def _encode(reg: Register, value: float) -> list[int]:
    """The register words that ``reg.decode`` turns back into ``value``."""
    fmt, width = TYPES[reg.type]
    raw = value / reg.scale
    packed = struct.pack(fmt, raw if fmt == ">f" else round(raw))
    words = list(struct.unpack(f">{width}H", packed))
    if reg.word_order == "little":
        words.reverse()
    return words


class _RcdFaultOutput(FaultOutputPin, WorldPin):
    pass


class _RcdTestInput(TestInputPin, WorldPin):
    pass


def attach_rcd(
    factory: PiboxFactory,
    *,
    fault_pin: int,
    test_pin: int | None,
    fault_active_high: bool,
    test_active_high: bool,
    trip_after_s: float,
) -> RcdModule:
    """hal.emulated.rcd's module on a pibox's (PWM-capable) pins, before the station opens."""
    return rcd.attach(
        factory,
        fault_pin=fault_pin,
        test_pin=test_pin,
        fault_active_high=fault_active_high,
        test_active_high=test_active_high,
        trip_after_s=trip_after_s,
        fault_class=_RcdFaultOutput,
        test_class=_RcdTestInput,
    )
