"""GpioPilot on MockFactory pins: the PWM it drives and the CP/PP it reads through an MCP3008.

gpiozero's MCP3008 class runs unchanged; only the chip behind the SPI port is emulated
(hal.emulated.mcp3008).
"""

from __future__ import annotations

import logging

import pytest
from gpiozero import MCP3008

from hal.config import PilotConfig
from hal.emulated.mcp3008 import Mcp3008MockFactory, MockMcp3008
from hal.errors import PilotError
from hal.interfaces import EvState, Fault, Pilot
from hal.pi.pilot import GpioPilot

PWM, CP, PP = 18, 0, 1


def cp(volts: float) -> float:
    """The ADC level (fraction of Vref) the default front end gives for a CP voltage."""
    return (volts + 12.0) / 24.0


def pp(ohm: float, pullup: float = 1000.0) -> float:
    return ohm / (ohm + pullup)


@pytest.fixture
def factory():
    factory = Mcp3008MockFactory()
    yield factory
    factory.close()


@pytest.fixture
def adc(factory: Mcp3008MockFactory) -> MockMcp3008:
    adc = factory.adc(1)
    adc.set_channel(CP, cp(12.0))
    adc.set_channel(PP, 1.0)
    return adc


@pytest.fixture
def pilot(factory: Mcp3008MockFactory, adc: MockMcp3008):
    pilot = GpioPilot(PilotConfig(pwm_pin=PWM), pin_factory=factory, samples=16)
    yield pilot
    pilot.release()


def test_the_emulated_chip_answers_gpiozero_mcp3008(
    factory: Mcp3008MockFactory, adc: MockMcp3008
) -> None:
    adc.set_channel(5, 0.5)
    with MCP3008(channel=5, device=1, pin_factory=factory) as ch5:
        assert ch5.raw_value == 512 and ch5.value == pytest.approx(0.5, abs=1e-3)
    with MCP3008(channel=0, device=1, pin_factory=factory) as ch0:
        assert ch0.raw_value == 1023


# --- PWM ---------------------------------------------------------------------------


def test_starts_at_a_steady_12_v_offering_nothing(
    factory: Mcp3008MockFactory, pilot: GpioPilot
) -> None:
    assert isinstance(pilot, Pilot)
    line = factory.pin(PWM)
    assert line.frequency == 1000
    assert line.state == 1.0
    assert pilot.offered_current_a is None


@pytest.mark.parametrize(
    ("amps", "duty"), [(6, 0.1), (16, 0.2667), (32, 0.5333), (63, 0.892), (80, 0.96)]
)
def test_offered_current_sets_the_duty(
    factory: Mcp3008MockFactory, pilot: GpioPilot, amps: float, duty: float
) -> None:
    pilot.set_offered_current(amps)
    assert factory.pin(PWM).state == pytest.approx(duty, abs=1e-4)
    assert factory.pin(PWM).frequency == 1000
    assert pilot.offered_current_a == amps


@pytest.mark.parametrize("amps", [None, 0])
def test_none_or_zero_returns_to_100_percent(
    factory: Mcp3008MockFactory, pilot: GpioPilot, amps: float | None
) -> None:
    pilot.set_offered_current(16)
    pilot.set_offered_current(amps)
    assert factory.pin(PWM).state == 1.0
    assert pilot.offered_current_a is None
    assert [s.state for s in factory.pin(PWM).states][-3:] == [
        1.0,
        pytest.approx(0.2667, abs=1e-4),
        1.0,
    ]


@pytest.mark.parametrize("amps", [5, 81])
def test_an_impossible_current_leaves_the_line_alone(
    factory: Mcp3008MockFactory, pilot: GpioPilot, amps: float
) -> None:
    pilot.set_offered_current(16)
    with pytest.raises(ValueError):
        pilot.set_offered_current(amps)
    assert factory.pin(PWM).state == pytest.approx(0.2667, abs=1e-4)
    assert pilot.offered_current_a == 16


# --- CP ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("volts", "state"),
    [(12.0, EvState.A), (9.0, EvState.B), (6.0, EvState.C), (3.0, EvState.D), (0.0, EvState.E)],
)
async def test_steady_line_states(
    adc: MockMcp3008, pilot: GpioPilot, volts: float, state: EvState
) -> None:
    adc.set_channel(CP, cp(volts))
    assert await pilot.ev_state() is state


@pytest.mark.parametrize(
    ("high", "state"), [(12.0, EvState.A), (9.0, EvState.B), (6.0, EvState.C), (3.0, EvState.D)]
)
async def test_under_pwm_the_high_side_codes_the_state(
    adc: MockMcp3008, pilot: GpioPilot, high: float, state: EvState
) -> None:
    pilot.set_offered_current(16)  # 27 %: roughly one sample in four on the high side
    adc.set_channel(CP, cp(high), cp(-12.0), cp(-12.0), cp(-12.0))
    assert await pilot.ev_state() is state
    assert pilot.faults() == frozenset()


async def test_a_short_duty_is_still_caught_on_the_high_side(
    adc: MockMcp3008, pilot: GpioPilot
) -> None:
    pilot.set_offered_current(6)  # 10 %
    adc.set_channel(CP, cp(6.0), *[cp(-12.0)] * 9)
    assert await pilot.ev_state() is EvState.C


async def test_a_low_side_that_does_not_reach_minus_12_v_is_a_diode_failure(
    adc: MockMcp3008, pilot: GpioPilot
) -> None:
    pilot.set_offered_current(32)
    adc.set_channel(CP, cp(6.0), cp(-6.0))  # shorted diode: the EV loads the low side too
    assert await pilot.ev_state() is EvState.F
    assert pilot.faults() == {Fault.EV_ERROR}


async def test_no_low_side_at_all_under_pwm_is_a_failure(
    adc: MockMcp3008, pilot: GpioPilot
) -> None:
    pilot.set_offered_current(32)
    adc.set_channel(CP, cp(9.0))  # the line never swings down: the -12 V supply is gone
    assert await pilot.ev_state() is EvState.F


async def test_ev_error_stands_while_the_state_is_e_or_f_and_clears_after(
    adc: MockMcp3008, pilot: GpioPilot, caplog: pytest.LogCaptureFixture
) -> None:
    adc.set_channel(CP, cp(-12.0))
    with caplog.at_level(logging.ERROR, logger="hal.pi.pilot"):
        assert await pilot.ev_state() is EvState.F
        assert await pilot.ev_state() is EvState.F
        adc.set_channel(CP, cp(0.0))
        assert await pilot.ev_state() is EvState.E
    assert pilot.faults() == {Fault.EV_ERROR}
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # logged once
    adc.set_channel(CP, cp(9.0))
    assert await pilot.ev_state() is EvState.B
    assert pilot.faults() == frozenset()


async def test_a_dead_adc_raises_and_stands_as_pilot_failure(
    adc: MockMcp3008, pilot: GpioPilot
) -> None:
    adc.disconnect()
    with pytest.raises(PilotError) as err:
        await pilot.ev_state()
    assert err.value.fault is Fault.PILOT_FAILURE
    assert isinstance(err.value, OSError)
    assert pilot.faults() == {Fault.PILOT_FAILURE}
    with pytest.raises(PilotError):
        await pilot.cable_capacity_a()
    adc.reconnect()
    assert await pilot.ev_state() is EvState.A
    assert pilot.faults() == {Fault.PILOT_FAILURE}  # the PP line has not been read back yet
    assert await pilot.cable_capacity_a() is None
    assert pilot.faults() == frozenset()


async def test_custom_front_end_scaling(factory: Mcp3008MockFactory, adc: MockMcp3008) -> None:
    cfg = PilotConfig(pwm_pin=PWM, cp_offset_v=-13.0, cp_span_v=26.0)
    pilot = GpioPilot(cfg, pin_factory=factory, samples=4)
    adc.set_channel(CP, (9.0 + 13.0) / 26.0)
    assert await pilot.ev_state() is EvState.B
    pilot.release()


# --- PP ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ohm", "amps"), [(1500, 13), (680, 20), (220, 32), (100, 63), (1e7, None)]
)
async def test_cable_capacity_from_the_pp_divider(
    adc: MockMcp3008, pilot: GpioPilot, ohm: float, amps: int | None
) -> None:
    adc.set_channel(PP, pp(ohm))
    assert await pilot.cable_capacity_a() == amps


async def test_no_cable_reads_full_scale(adc: MockMcp3008, pilot: GpioPilot) -> None:
    adc.set_channel(PP, 1.0)
    assert await pilot.cable_capacity_a() is None


async def test_a_shorted_pp_line_raises(adc: MockMcp3008, pilot: GpioPilot) -> None:
    adc.set_channel(PP, 0.0)
    with pytest.raises(PilotError, match="shorted"):
        await pilot.cable_capacity_a()
    assert pilot.faults() == {Fault.PILOT_FAILURE}
    adc.set_channel(PP, pp(220))
    assert await pilot.cable_capacity_a() == 32
    assert pilot.faults() == frozenset()


async def test_a_tethered_cable_has_no_pp_channel(factory: Mcp3008MockFactory) -> None:
    pilot = GpioPilot(PilotConfig(pwm_pin=PWM, pp_channel=None), pin_factory=factory)
    assert await pilot.cable_capacity_a() is None
    pilot.release()


# --- lifecycle ------------------------------------------------------------------------


async def test_release_frees_the_pwm_pin_and_the_spi_port(
    factory: Mcp3008MockFactory, adc: MockMcp3008, pilot: GpioPilot
) -> None:
    pilot.set_offered_current(16)
    pilot.release()
    line = factory.pin(PWM)
    assert line.function == "input" and line.frequency is None
    with pytest.raises(PilotError):
        await pilot.ev_state()
    # Pins and the ADC can be opened again by a new driver.
    again = GpioPilot(PilotConfig(pwm_pin=PWM), pin_factory=factory, samples=2)
    assert await again.ev_state() is EvState.A
    again.release()


async def test_two_connectors_share_one_mcp3008(
    factory: Mcp3008MockFactory, adc: MockMcp3008
) -> None:
    one = GpioPilot(PilotConfig(pwm_pin=18, cp_channel=0, pp_channel=1), pin_factory=factory)
    two = GpioPilot(PilotConfig(pwm_pin=19, cp_channel=2, pp_channel=3), pin_factory=factory)
    adc.set_channel(2, cp(6.0))
    adc.set_channel(3, pp(680))
    assert (await one.ev_state(), await one.cable_capacity_a()) == (EvState.A, None)
    assert (await two.ev_state(), await two.cable_capacity_a()) == (EvState.C, 20)
    one.release()
    assert await two.ev_state() is EvState.C  # the shared port stays open for the other
    two.release()


def test_the_pwm_pin_cannot_be_taken_twice(factory: Mcp3008MockFactory, pilot: GpioPilot) -> None:
    from gpiozero import GPIOPinInUse

    with pytest.raises(GPIOPinInUse):
        GpioPilot(PilotConfig(pwm_pin=PWM, cp_channel=2, pp_channel=3), pin_factory=factory)
