"""DebouncedInput on a MockFactory pin with a fake clock: N agreeing reads over a window."""

from __future__ import annotations

import pytest
from gpiozero import DigitalInputDevice
from gpiozero.pins.mock import MockFactory

from hal.pi.debounce import DebouncedInput


@pytest.fixture
def pin_and_input(clock):
    factory = MockFactory()
    pin = factory.pin(4)
    device = DigitalInputDevice(4, pull_up=False, pin_factory=factory)

    async def sleep(s: float) -> None:
        clock.t += s

    yield pin, DebouncedInput(device, reads=3, window_s=0.01, clock=clock, sleep=sleep)
    factory.close()


def test_a_new_level_needs_three_agreeing_reads_over_the_window(pin_and_input, clock):
    pin, inp = pin_and_input
    assert inp.value is False
    pin.drive_high()
    assert inp.sample() is False
    clock.t += 0.004
    assert inp.sample() is False
    clock.t += 0.004
    assert inp.sample() is False, "three reads, but only 8 ms"
    clock.t += 0.004
    assert inp.sample() is True


def test_a_read_of_the_old_level_restarts_the_count(pin_and_input, clock):
    pin, inp = pin_and_input
    pin.drive_high()
    inp.sample()
    clock.t += 0.02
    inp.sample()
    pin.drive_low()
    clock.t += 0.02
    assert inp.sample() is False
    pin.drive_high()
    clock.t += 0.02
    assert inp.sample() is False  # a fresh first read of the new level
    clock.t += 0.02
    assert inp.sample() is False
    clock.t += 0.02
    assert inp.sample() is True


async def test_settle_reads_until_certain_and_gives_up_on_chatter(pin_and_input, clock):
    pin, inp = pin_and_input
    pin.drive_high()
    assert await inp.settle() is True and inp.value is True

    class Chatter:
        n = 0

        @property
        def is_active(self) -> bool:
            self.n += 1
            return self.n % 2 == 0

    chatter = DebouncedInput(Chatter(), reads=3, window_s=0.01, clock=clock, sleep=inp._sleep)
    assert await chatter.settle(max_reads=40) is None
