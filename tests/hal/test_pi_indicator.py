"""GpioIndicator on gpiozero MockFactory PWM pins: what the light shows for each state."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from hal.config import LedConfig
from hal.errors import HardwareConfigError
from hal.interfaces import Indicator, IndicatorState
from hal.pi.indicator import INDICATOR_PATTERNS, GpioIndicator, Mode

RED, GREEN, BLUE = 5, 6, 13


@pytest.fixture
def factory():
    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.close()


@pytest.fixture
def rgb(factory: MockFactory):
    led = GpioIndicator(LedConfig(kind="rgb", pins=(RED, GREEN, BLUE)), pin_factory=factory)
    yield led
    led.release()


def colour(factory: MockFactory) -> tuple[float, float, float]:
    return tuple(round(factory.pin(p).state, 3) for p in (RED, GREEN, BLUE))


def wait_for(predicate, timeout_s: float = 3.0) -> bool:
    """Poll until ``predicate()`` holds (a blink thread runs in real time); False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_the_table_gives_every_state_its_own_look_on_an_rgb_led() -> None:
    assert set(INDICATOR_PATTERNS) == set(IndicatorState)
    looks = {(p.colour, p.rgb) for p in INDICATOR_PATTERNS.values()}
    assert len(looks) == len(IndicatorState)


def test_a_single_led_keeps_faulted_and_charging_apart() -> None:
    single = {s: p.single for s, p in INDICATOR_PATTERNS.items()}
    assert single[IndicatorState.FAULTED] not in {
        m for s, m in single.items() if s is not IndicatorState.FAULTED
    }
    assert single[IndicatorState.AVAILABLE] != single[IndicatorState.CHARGING]


def test_starts_dark_and_off(factory: MockFactory, rgb: GpioIndicator) -> None:
    assert isinstance(rgb, Indicator)
    assert rgb.state is IndicatorState.OFF
    assert colour(factory) == (0, 0, 0)
    assert rgb.faults() == frozenset()


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (IndicatorState.AVAILABLE, (0, 1, 0)),
        (IndicatorState.FINISHING, (0, 1, 1)),
        (IndicatorState.RESERVED, (1, 1, 0)),
        (IndicatorState.UNAVAILABLE, (0.2, 0.2, 0.2)),
        (IndicatorState.OFF, (0, 0, 0)),
    ],
)
def test_steady_colours(
    factory: MockFactory, rgb: GpioIndicator, state: IndicatorState, expected: tuple
) -> None:
    rgb.show(IndicatorState.PREPARING)
    rgb.show(state)
    assert rgb.state is state
    assert colour(factory) == expected


def test_a_steady_state_stops_the_blinking(factory: MockFactory, rgb: GpioIndicator) -> None:
    rgb.show(IndicatorState.FAULTED)
    assert wait_for(lambda: colour(factory) == (1, 0, 0))
    rgb.show(IndicatorState.AVAILABLE)
    time.sleep(0.3)  # more than two half periods of the fast blink
    assert colour(factory) == (0, 1, 0)


def test_faulted_blinks_red(factory: MockFactory, rgb: GpioIndicator) -> None:
    rgb.show(IndicatorState.FAULTED)
    assert wait_for(lambda: colour(factory) == (1, 0, 0))
    assert wait_for(lambda: colour(factory) == (0, 0, 0))
    assert wait_for(lambda: colour(factory) == (1, 0, 0))
    green, blue = factory.pin(GREEN), factory.pin(BLUE)
    assert {s.state for s in green.states} == {0} and {s.state for s in blue.states} == {0}


def test_preparing_blinks_blue(factory: MockFactory, rgb: GpioIndicator) -> None:
    rgb.show(IndicatorState.PREPARING)
    assert wait_for(lambda: colour(factory) == (0, 0, 1))
    assert wait_for(lambda: colour(factory) == (0, 0, 0))


def test_charging_pulses_blue(factory: MockFactory, rgb: GpioIndicator) -> None:
    rgb.show(IndicatorState.CHARGING)
    blue = factory.pin(BLUE)
    # A pulse goes through intermediate brightness, not just on and off.
    assert wait_for(lambda: 0.2 < blue.state < 0.8)
    assert factory.pin(RED).state == 0 and factory.pin(GREEN).state == 0


def test_single_led(factory: MockFactory) -> None:
    led = GpioIndicator(LedConfig(kind="single", pins=(RED,)), pin_factory=factory)
    pin = factory.pin(RED)
    led.show(IndicatorState.AVAILABLE)
    assert pin.state == 1
    led.show(IndicatorState.UNAVAILABLE)
    assert pin.state == 0
    led.show(IndicatorState.FAULTED)
    assert wait_for(lambda: pin.state == 1)
    assert wait_for(lambda: pin.state == 0)
    assert INDICATOR_PATTERNS[IndicatorState.FAULTED].single is Mode.FAST
    led.release()
    assert pin.function == "input"


def test_active_low_rgb(factory: MockFactory) -> None:
    led = GpioIndicator(
        LedConfig(kind="rgb", pins=(RED, GREEN, BLUE), active_high=False), pin_factory=factory
    )
    led.show(IndicatorState.AVAILABLE)
    assert colour(factory) == (1, 0, 1)  # green on = its line low
    led.release()


def test_release_turns_off_and_frees_the_pins(factory: MockFactory) -> None:
    led = GpioIndicator(LedConfig(kind="rgb", pins=(RED, GREEN, BLUE)), pin_factory=factory)
    led.show(IndicatorState.FAULTED)
    led.release()
    assert all(factory.pin(p).function == "input" for p in (RED, GREEN, BLUE))
    GpioIndicator(LedConfig(kind="rgb", pins=(RED, GREEN, BLUE)), pin_factory=factory).release()


def test_no_led_still_tracks_the_state(factory: MockFactory) -> None:
    led = GpioIndicator(LedConfig(kind="none", pins=()), pin_factory=factory)
    led.show(IndicatorState.CHARGING)
    assert led.state is IndicatorState.CHARGING


@pytest.mark.parametrize(
    "cfg",
    [LedConfig(kind="rgb", pins=(RED, GREEN)), LedConfig(kind="single", pins=(RED, GREEN))],
)
def test_wrong_pin_count_is_refused(factory: MockFactory, cfg: LedConfig) -> None:
    with pytest.raises(HardwareConfigError):
        GpioIndicator(cfg, pin_factory=factory)
