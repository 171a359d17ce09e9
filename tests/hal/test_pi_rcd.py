"""GpioRcd on gpiozero MockFactory pins: a trip drops the contactor coil with no await,
the self-test drives the test input and times the fault output, release is debounced."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockConnectedPin, MockFactory, MockPin

from hal.config import ContactorConfig, RcdConfig
from hal.errors import ContactorError, RcdError
from hal.interfaces import Fault, ResidualCurrentMonitor
from hal.pi.contactor import GpioContactor
from hal.pi.rcd import GpioRcd, interlock_rcd

COIL, FAULT_OUT, TEST_IN = 17, 4, 26


@pytest.fixture
def factory():
    factory = MockFactory()
    yield factory
    factory.close()


class FakeTime:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.t += s


def wired(factory: MockFactory, *, module_tests: bool = True, **kw):
    """A contactor and a monitor wired as hal.pi.station does; the module's test input
    drives its fault output (a healthy module) when ``module_tests``."""
    if module_tests:
        factory.pin(TEST_IN, pin_class=MockConnectedPin, input_pin=factory.pin(FAULT_OUT))
    contactor = GpioContactor(ContactorConfig(pin=COIL, settle_s=0.0), pin_factory=factory)
    cfg = RcdConfig(fault_pin=FAULT_OUT, test_pin=TEST_IN, trip_time_s=0.05, release_s=0.2, **kw)
    clock = FakeTime()  # the self-test's waits move this clock, not the wall clock
    rcd = GpioRcd(cfg, pin_factory=factory, release_window_s=0.0, clock=clock, sleep=clock.sleep)
    interlock_rcd(rcd, contactor)
    return contactor, rcd


def passes(rcd: GpioRcd, n: int = 3) -> frozenset[Fault]:
    for _ in range(n - 1):
        rcd.faults()
    return rcd.faults()


async def test_a_trip_opens_the_contactor_before_the_call_that_drove_it_returns(factory):
    contactor, rcd = wired(factory, module_tests=False)
    assert isinstance(rcd, ResidualCurrentMonitor)
    await contactor.close()
    coil = factory.pin(COIL)
    assert coil.state is True
    factory.pin(FAULT_OUT).drive_high()  # the module trips; gpiozero calls back in this thread
    assert coil.state is False and not contactor.closed  # no await happened in between
    assert rcd.tripped and rcd.faults() == {Fault.RCD_TRIPPED}
    with pytest.raises(ContactorError, match="residual-current monitor tripped"):
        await contactor.close()
    assert coil.state is False


async def test_a_trip_stands_until_the_fault_output_has_released_for_several_reads(factory):
    contactor, rcd = wired(factory, module_tests=False)
    pin = factory.pin(FAULT_OUT)
    pin.drive_high()
    pin.drive_low()  # a short pulse: still a trip, seen by the next pass
    assert rcd.faults() == {Fault.RCD_TRIPPED}
    assert rcd.faults() == {Fault.RCD_TRIPPED}
    assert rcd.faults() == frozenset()  # three inactive reads: released
    await contactor.close()
    assert factory.pin(COIL).state is True


class DrivenOutput(MockPin):
    """A module's push-pull output: the Pi's weak pull does not move it."""

    def _set_pull(self, value):
        self._pull = value


async def test_a_module_tripped_at_start_is_a_fault_at_once(factory):
    factory.pin(FAULT_OUT, pin_class=DrivenOutput).drive_high()
    contactor, rcd = wired(factory, module_tests=False)
    assert rcd.faults() == {Fault.RCD_TRIPPED}
    with pytest.raises(ContactorError):
        await contactor.close()


async def test_self_test_drives_the_test_input_and_sees_the_trip(factory):
    contactor, rcd = wired(factory)
    assert rcd.can_self_test
    await rcd.self_test()
    test_in = factory.pin(TEST_IN)
    assert [s.state for s in test_in.states] == [False, True, False]
    assert rcd.last_trip_time_s is not None and rcd.last_trip_time_s < 0.05
    assert passes(rcd) == frozenset(), "its own test is not a trip"
    await contactor.close()
    assert factory.pin(COIL).state is True


async def test_a_module_that_does_not_trip_on_its_test_fails_and_stands(factory):
    contactor, rcd = wired(factory, module_tests=False)  # test input not connected: dead module
    with pytest.raises(RcdError, match="did not trip within 50 ms"):
        await rcd.self_test()
    assert factory.pin(TEST_IN).state is False, "the test input is released after a failed test"
    assert rcd.faults() == {Fault.RCD_FAILURE}
    # Repaired: a later passing test clears it.
    rcd.release()
    contactor.release()
    factory.reset()
    contactor, rcd = wired(factory)
    await rcd.self_test()
    assert rcd.faults() == frozenset()


async def test_a_fault_output_that_stays_active_after_the_test_fails_it(factory):
    _contactor, rcd = wired(factory, module_tests=False)
    test_in = factory.pin(TEST_IN)
    fault = factory.pin(FAULT_OUT)
    original = test_in._change_state

    def latch(value):  # the module trips on its test and never lets go
        changed = original(value)
        if value:
            fault.drive_high()
        return changed

    test_in._change_state = latch
    with pytest.raises(RcdError, match="still active"):
        await rcd.self_test()
    assert Fault.RCD_FAILURE in rcd.faults()


async def test_without_a_test_input_no_self_test(factory):
    rcd = GpioRcd(RcdConfig(fault_pin=FAULT_OUT), pin_factory=factory)
    assert not rcd.can_self_test
    with pytest.raises(RcdError, match="no test input"):
        await rcd.self_test()
    rcd.release()
    assert factory.pin(FAULT_OUT).function == "input"


async def test_trip_to_coil_off_inside_the_edge(factory):
    """A figure, not a timed assert: the coil is off when the edge's handling returns."""
    import time

    contactor, _rcd = wired(factory, module_tests=False)
    await contactor.close()
    t0 = time.perf_counter()
    factory.pin(FAULT_OUT).drive_high()
    took = time.perf_counter() - t0
    assert factory.pin(COIL).state is False
    print(f"RCD trip handled, coil off, within {took * 1e6:.0f} us (gpiozero callback)")


# --- on the emulated module (hal/emulated/rcd.py), as pibox wires it -------------------


async def test_the_driver_on_the_emulated_module_with_its_own_trip_time(factory):
    from hal.emulated import rcd as emu

    module = emu.attach(factory, fault_pin=FAULT_OUT, test_pin=TEST_IN, trip_after_s=0.01)
    contactor = GpioContactor(ContactorConfig(pin=COIL, settle_s=0.0), pin_factory=factory)
    rcd = GpioRcd(
        RcdConfig(fault_pin=FAULT_OUT, test_pin=TEST_IN, trip_time_s=0.1, release_s=0.1),
        pin_factory=factory,
        release_window_s=0.0,
    )
    interlock_rcd(rcd, contactor)
    await rcd.self_test()  # the module answers its test input after 10 ms (a timer thread)
    assert rcd.last_trip_time_s >= 0.01 and rcd.faults() == frozenset()
    await contactor.close()
    module.trip()
    assert factory.pin(COIL).state is False and Fault.RCD_TRIPPED in rcd.faults()
    module.reset()
    assert passes(rcd) == frozenset()
    module.dead = True
    with pytest.raises(RcdError, match="did not trip"):
        await rcd.self_test()
    rcd.release()
    contactor.release()
