"""The meterStop of a transaction a power cut ended: the meter's register when plausible."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chargerd.features.powerloss import max_power_w, power_loss_meter_stop, read_registers
from hal.errors import MeterError
from hal.interfaces import Fault, MeterSample

T0 = datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
P22 = max_power_w(32.0)  # 32 A x 3 phases x 253 V = 24.3 kW


@pytest.mark.parametrize(
    "register, after_s, expected, why",
    [
        (301.0, 10, 301.0, "register"),  # the case: 25 Wh more than persisted
        (276.0, 10, 276.0, "register"),  # nothing flowed since
        (276.4, 0, 276.4, "register"),  # within the tolerance of a bound
        (None, 10, 276.0, "did not answer"),
        (250.0, 10, 276.0, "below"),  # a meter reset or replaced
        (400.0, 10, 276.0, "more than"),  # 124 Wh in 10 s would be 44 kW
        (340.0, 10, 340.0, "register"),  # 64 Wh in 10 s: 23 kW, within 24.3 kW
        (350.0, -60, 276.0, "more than"),  # a clock set back: no time, no energy
    ],
)
def test_meter_stop_after_a_power_cut(register, after_s, expected, why):
    meter_stop, reason = power_loss_meter_stop(
        persisted_wh=276.0,
        persisted_at=T0,
        register_wh=register,
        now=T0 + timedelta(seconds=after_s),
        max_power_w=P22,
    )
    assert meter_stop == pytest.approx(expected)
    assert why in reason


def test_the_power_bound_is_the_current_limit_on_three_phases_at_high_voltage():
    assert max_power_w(32.0) == pytest.approx(32 * 3 * 253)
    assert max_power_w(16.0, phases=1) == pytest.approx(16 * 253)


class _Meter:
    def __init__(self, wh: float | None) -> None:
        self.wh = wh
        self.last_sample = None

    async def read(self) -> MeterSample:
        if self.wh is None:
            raise MeterError("no answer", Fault.METER_FAILURE)
        return MeterSample(energy_wh=self.wh)

    def faults(self) -> frozenset[Fault]:
        return frozenset()


async def test_registers_are_read_and_a_silent_meter_is_none():
    assert await read_registers({1: _Meter(12.5), 2: _Meter(None)}) == {1: 12.5, 2: None}
