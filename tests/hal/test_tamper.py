"""The enclosure tamper switch on gpiozero MockFactory pins, and its pin in the clash check."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from hal.config import HardwareConfig, TamperConfig
from hal.errors import HardwareConfigError
from hal.pi.station import check_pins
from hal.tamper import GpioTamperSwitch

PIN = 27


@pytest.fixture
def factory():
    factory = MockFactory()
    yield factory
    factory.close()


@pytest.mark.parametrize("active_high", [True, False])
def test_opening_and_closing_are_reported(factory, active_high):
    switch = GpioTamperSwitch(TamperConfig(pin=PIN, active_high=active_high), pin_factory=factory)
    seen: list[bool] = []
    switch.on_change(seen.append)
    pin = factory.pin(PIN)
    assert not switch.opened  # the internal pull holds "closed" with nothing wired
    (pin.drive_high if active_high else pin.drive_low)()
    assert switch.opened
    (pin.drive_low if active_high else pin.drive_high)()
    assert not switch.opened
    assert seen == [True, False]
    switch.release()


def test_a_failing_listener_does_not_stop_the_others(factory):
    switch = GpioTamperSwitch(TamperConfig(pin=PIN), pin_factory=factory)
    seen: list[bool] = []

    def broken(opened: bool) -> None:
        raise RuntimeError("bug")

    switch.on_change(broken)
    switch.on_change(seen.append)
    factory.pin(PIN).drive_high()
    assert seen == [True]
    switch.release()


def test_the_tamper_pin_takes_part_in_the_clash_check():
    check_pins(HardwareConfig(tamper=TamperConfig(pin=PIN)))
    with pytest.raises(HardwareConfigError, match=r"GPIO17 is used twice.*tamper"):
        check_pins(HardwareConfig(tamper=TamperConfig(pin=17)))  # the contactor's
