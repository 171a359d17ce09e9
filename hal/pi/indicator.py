"""The status light of a connector: an RGB LED, a single LED, or none.

What each state looks like is the table ``INDICATOR_PATTERNS`` (the README
prints it for installers); this module only plays it with gpiozero's
background blink and pulse threads, so the event loop never times an LED.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gpiozero import PWMLED, RGBLED

from hal.config import LedConfig
from hal.errors import HardwareConfigError
from hal.interfaces import Fault, IndicatorState

__all__ = ["INDICATOR_PATTERNS", "MODE_TIMINGS_S", "GpioIndicator", "Mode", "Pattern"]


class Mode(enum.StrEnum):
    OFF = "off"
    STEADY = "steady"
    BLINK = "blink"  # 1 Hz
    SLOW = "slow blink"  # 0.5 s on every 2 s
    FAST = "fast blink"  # 4 Hz
    PULSE = "pulse"  # fades in and out over 2 s


# Seconds: (on, off) of a blink, (fade in, fade out) of a pulse.
MODE_TIMINGS_S: dict[Mode, tuple[float, float]] = {
    Mode.BLINK: (0.5, 0.5),
    Mode.SLOW: (0.5, 1.5),
    Mode.FAST: (0.125, 0.125),
    Mode.PULSE: (1.0, 1.0),
}

Colour = tuple[float, float, float]
BLACK: Colour = (0.0, 0.0, 0.0)
GREEN: Colour = (0.0, 1.0, 0.0)
BLUE: Colour = (0.0, 0.0, 1.0)
CYAN: Colour = (0.0, 1.0, 1.0)
YELLOW: Colour = (1.0, 1.0, 0.0)
DIM_WHITE: Colour = (0.2, 0.2, 0.2)
RED: Colour = (1.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Pattern:
    colour: Colour  # of the RGB LED
    rgb: Mode  # how the RGB LED shows the state
    single: Mode  # how a single LED shows it: it cannot tell all nine apart, only groups


INDICATOR_PATTERNS: dict[IndicatorState, Pattern] = {
    IndicatorState.OFF: Pattern(BLACK, Mode.OFF, Mode.OFF),
    IndicatorState.AVAILABLE: Pattern(GREEN, Mode.STEADY, Mode.STEADY),
    IndicatorState.PREPARING: Pattern(BLUE, Mode.BLINK, Mode.BLINK),
    IndicatorState.CHARGING: Pattern(BLUE, Mode.PULSE, Mode.PULSE),
    IndicatorState.SUSPENDED: Pattern(BLUE, Mode.SLOW, Mode.SLOW),
    IndicatorState.FINISHING: Pattern(CYAN, Mode.STEADY, Mode.BLINK),
    IndicatorState.RESERVED: Pattern(YELLOW, Mode.STEADY, Mode.BLINK),
    IndicatorState.UNAVAILABLE: Pattern(DIM_WHITE, Mode.STEADY, Mode.OFF),
    IndicatorState.FAULTED: Pattern(RED, Mode.FAST, Mode.FAST),
}


class GpioIndicator:
    """Plays INDICATOR_PATTERNS on an RGB LED (``kind="rgb"``) or one LED (``"single"``).

    ``kind="none"`` drives nothing and only remembers the state, so that a
    station without a light still has an Indicator to talk to.
    """

    def __init__(self, cfg: LedConfig, *, pin_factory: object | None = None) -> None:
        self._cfg = cfg
        self._state = IndicatorState.OFF
        self._led: RGBLED | PWMLED | None = None
        wanted = {"rgb": 3, "single": 1, "none": 0}.get(cfg.kind)
        if wanted is None:
            raise HardwareConfigError(f"LED kind {cfg.kind!r} is not rgb, single or none")
        if wanted and len(cfg.pins) != wanted:
            raise HardwareConfigError(f"a {cfg.kind} LED needs {wanted} pin(s), got {cfg.pins!r}")
        if cfg.kind == "rgb":
            red, green, blue = cfg.pins
            self._led = RGBLED(
                red, green, blue, active_high=cfg.active_high, pwm=True, pin_factory=pin_factory
            )
        elif cfg.kind == "single":
            self._led = PWMLED(cfg.pins[0], active_high=cfg.active_high, pin_factory=pin_factory)

    @property
    def state(self) -> IndicatorState:
        return self._state

    def show(self, state: IndicatorState) -> None:
        pattern = INDICATOR_PATTERNS[state]
        led = self._led
        self._state = state
        if led is None:
            return
        rgb = isinstance(led, RGBLED)
        mode = pattern.rgb if rgb else pattern.single
        colour: Colour | float = pattern.colour if rgb else 1.0
        led.off()  # also stops a running blink or pulse thread
        if mode is Mode.STEADY:
            led.value = colour
        elif mode is Mode.PULSE:
            fade_in, fade_out = MODE_TIMINGS_S[mode]
            if rgb:
                led.pulse(fade_in, fade_out, on_color=colour, background=True)
            else:
                led.pulse(fade_in, fade_out, background=True)
        elif mode is not Mode.OFF:
            on_s, off_s = MODE_TIMINGS_S[mode]
            if rgb:
                led.blink(on_s, off_s, on_color=colour, background=True)
            else:
                led.blink(on_s, off_s, background=True)

    def faults(self) -> frozenset[Fault]:
        return frozenset()  # an LED gives no feedback to judge it by

    def release(self) -> None:
        """Turn the light off and free its pins."""
        if self._led is not None:
            self._led.off()
            self._led.close()
            self._led = None

    close = release  # gpiozero's name for it
