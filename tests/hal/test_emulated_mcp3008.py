"""The MCP3008 emulation: a CP line that is a square wave in time, read at the clock's instant."""

from __future__ import annotations

import random

import pytest
from gpiozero import MCP3008

from hal.emulated.mcp3008 import CpLine, Mcp3008MockFactory, SimClock
from hal.emulated.sysfs_pwm import PwmChannelState


def running(duty: float, phase_ns: int = 0) -> PwmChannelState:
    return PwmChannelState(
        exported=True,
        period_ns=1_000_000,
        duty_ns=round(duty * 1_000_000),
        enabled=True,
        phase_ns=phase_ns,
    )


def test_a_conversion_reads_the_line_at_the_clock_instant() -> None:
    clock = SimClock()
    line = CpLine(running(0.25))
    line.plug("C")
    factory = Mcp3008MockFactory(clock=clock)
    factory.adc(1).set_source(0, line)
    with MCP3008(channel=0, device=1, pin_factory=factory) as adc:
        clock.now = 0.0001  # in the high quarter
        assert adc.raw_value == round(18 / 24 * 1023)
        clock.now = 0.0005  # in the low three quarters: the EV's diode, -12 V
        assert adc.raw_value == 0
    factory.close()


def test_the_sim_clock_moves_on_with_every_transfer() -> None:
    clock = SimClock(transfer_s=(50e-6, 50e-6))
    factory = Mcp3008MockFactory(clock=clock, on_transfer=clock.transfer)
    factory.adc(1).set_channel(0, 0.5)
    with MCP3008(channel=0, device=1, pin_factory=factory) as adc:
        readings = [adc.raw_value for _ in range(20)]
    assert readings == [512] * 20
    assert clock.now == pytest.approx(20 * 50e-6)
    assert factory.adc(1).conversions == 20
    factory.close()


@pytest.mark.parametrize(
    ("change", "high", "low"),
    [
        (lambda line: line.plug("B"), 9.0, -12.0),
        (lambda line: line.plug("E"), 0.0, 0.0),
        (lambda line: (line.plug("C"), line.short_diode()), 6.0, -6.0),
        (lambda line: (line.plug("B"), line.lose_negative_supply()), 9.0, 0.0),
    ],
)
def test_ev_faults_change_the_levels(change, high: float, low: float) -> None:
    line = CpLine(running(0.5))
    change(line)
    assert line.volts_at(0.0001) == high and line.volts_at(0.0007) == low


def test_slew_puts_readings_between_the_levels_just_after_an_edge() -> None:
    line = CpLine(running(0.5), slew_s=10e-6)
    assert -12.0 < line.volts_at(5e-6) < 12.0  # 5 us after the rising edge
    assert line.volts_at(20e-6) == 12.0


def test_noise_is_gaussian_around_the_level() -> None:
    line = CpLine(None, noise_v=0.2, rng=random.Random(1))
    readings = [line.volts_at(0.0) for _ in range(2000)]
    assert 11.9 < sum(readings) / len(readings) < 12.1
    assert max(readings) > 12.3 and min(readings) < 11.7


def test_a_dead_chip_answers_at_its_rails_without_an_spi_error() -> None:
    factory = Mcp3008MockFactory()
    chip = factory.adc(1)
    chip.set_channel(0, 0.5)
    with MCP3008(channel=0, device=1, pin_factory=factory) as adc:
        chip.stick(0)
        assert adc.raw_value == 0
        chip.stick(1023)
        assert adc.raw_value == 1023
        chip.unstick()
        assert adc.raw_value == 512
    factory.close()
