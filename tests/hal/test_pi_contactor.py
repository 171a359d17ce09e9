"""GpioContactor on gpiozero MockFactory pins: the coil output and the aux contact."""

from __future__ import annotations

import asyncio

import pytest
from gpiozero.pins.mock import MockConnectedPin, MockFactory

from hal.config import ContactorConfig
from hal.errors import ContactorError
from hal.interfaces import Contactor, Fault
from hal.pi.contactor import GpioContactor

COIL, AUX = 17, 27


@pytest.fixture
def factory():
    factory = MockFactory()
    yield factory
    factory.close()


def make(factory: MockFactory, **kw) -> GpioContactor:
    kw.setdefault("settle_s", 0.01)
    # Three agreeing reads make a reading; no time window, so that a test need not wait.
    return GpioContactor(ContactorConfig(pin=COIL, **kw), pin_factory=factory, debounce_s=0.0)


def held(contactor: GpioContactor) -> frozenset[Fault]:
    """The faults once the aux contact's level has held for the debounce (three reads)."""
    for _ in range(2):
        contactor.faults()
    return contactor.faults()


class AuxContact:
    """The auxiliary contact, following the coil like healthy mechanics would."""

    def __init__(self, factory: MockFactory, *, active_high: bool = True) -> None:
        self.pin = factory.pin(AUX)
        self.active_high = active_high

    def reads(self, closed: bool) -> None:
        if closed == self.active_high:
            self.pin.drive_high()
        else:
            self.pin.drive_low()


async def test_starts_open_closes_and_opens_the_coil(factory: MockFactory) -> None:
    contactor = make(factory)
    coil = factory.pin(COIL)
    assert isinstance(contactor, Contactor)
    assert coil.state is False and not contactor.closed
    await contactor.close()
    assert coil.state is True and contactor.closed
    await contactor.open()
    assert coil.state is False and not contactor.closed
    assert [s.state for s in coil.states] == [False, True, False]
    assert contactor.faults() == frozenset()


async def test_active_low_coil(factory: MockFactory) -> None:
    contactor = make(factory, active_high=False, hardware_pull="up")
    coil = factory.pin(COIL)
    assert coil.state is True  # open = inactive = high on an active-low driver
    await contactor.close()
    assert coil.state is False
    contactor.release()
    assert coil.state is True and coil.function == "input"


def healthy_mechanics(factory: MockFactory) -> None:
    """The aux contact follows the coil, as a working contactor's does."""
    factory.pin(COIL, pin_class=MockConnectedPin, input_pin=factory.pin(AUX))


async def test_release_opens_the_coil_and_frees_the_pins(factory: MockFactory) -> None:
    healthy_mechanics(factory)
    contactor = make(factory, feedback_pin=AUX)
    await contactor.close()
    contactor.release()  # as when the daemon stops while charging
    coil = factory.pin(COIL)
    assert coil.state is False and coil.function == "input"
    assert factory.pin(AUX).function == "input"
    # The pins are free again: a new driver can take them.
    make(factory, feedback_pin=AUX).release()


async def test_close_confirmed_by_the_feedback(factory: MockFactory) -> None:
    healthy_mechanics(factory)
    contactor = make(factory, feedback_pin=AUX)
    await contactor.close()
    assert contactor.closed and contactor.feedback_closed is True
    assert contactor.faults() == frozenset()
    await contactor.open()
    assert not contactor.closed and contactor.feedback_closed is False
    assert contactor.faults() == frozenset()
    assert [s.state for s in factory.pin(AUX).states] == [False, True, False]


async def test_failed_to_close_opens_the_output_again_and_stands(factory: MockFactory) -> None:
    contactor = make(factory, feedback_pin=AUX)
    AuxContact(factory).reads(False)  # the coil is dead: the aux contact never moves
    with pytest.raises(ContactorError) as err:
        await contactor.close()
    assert err.value.fault is Fault.CONTACTOR_FAILED_TO_CLOSE
    coil = factory.pin(COIL)
    assert coil.state is False and not contactor.closed  # fail safe
    assert [s.state for s in coil.states] == [False, True, False]
    assert contactor.faults() == {Fault.CONTACTOR_FAILED_TO_CLOSE}
    assert contactor.faults() == {Fault.CONTACTOR_FAILED_TO_CLOSE}  # standing, not one-shot


async def test_failed_to_close_clears_when_a_close_is_confirmed(factory: MockFactory) -> None:
    contactor = make(factory, feedback_pin=AUX)
    aux = AuxContact(factory)
    aux.reads(False)
    with pytest.raises(ContactorError):
        await contactor.close()
    aux.reads(False)
    assert contactor.faults() == {Fault.CONTACTOR_FAILED_TO_CLOSE}  # open and agreeing: still
    aux.reads(True)  # repaired; the aux contact now reads closed
    await contactor.close()
    assert contactor.faults() == frozenset()


async def test_welded_contactor_raises_on_open_and_stands_until_it_reads_open(
    factory: MockFactory,
) -> None:
    contactor = make(factory, feedback_pin=AUX)
    aux = AuxContact(factory)
    aux.reads(True)
    await contactor.close()
    with pytest.raises(ContactorError) as err:
        await contactor.open()  # the aux contact stays closed: welded
    assert err.value.fault is Fault.CONTACTOR_WELDED
    assert factory.pin(COIL).state is False  # commanded open all the same
    assert contactor.faults() == {Fault.CONTACTOR_WELDED}
    aux.reads(False)
    assert held(contactor) == frozenset()


async def test_welding_seen_while_idle(factory: MockFactory) -> None:
    contactor = make(factory, feedback_pin=AUX)
    aux = AuxContact(factory)
    assert contactor.faults() == frozenset()
    aux.reads(True)  # commanded open, reads closed
    assert held(contactor) == {Fault.CONTACTOR_WELDED}
    aux.reads(False)
    assert held(contactor) == frozenset()


async def test_dropping_out_while_closed_shows_failed_to_close(factory: MockFactory) -> None:
    contactor = make(factory, feedback_pin=AUX)
    aux = AuxContact(factory)
    aux.reads(True)
    await contactor.close()
    aux.reads(False)
    assert held(contactor) == {Fault.CONTACTOR_FAILED_TO_CLOSE}
    aux.reads(True)
    assert held(contactor) == frozenset()


async def test_active_low_feedback(factory: MockFactory) -> None:
    contactor = make(factory, feedback_pin=AUX, feedback_active_high=False)
    aux = AuxContact(factory, active_high=False)
    assert contactor.feedback_closed is False  # the internal pull-up reads "open"
    aux.reads(True)
    assert factory.pin(AUX).state is False
    await contactor.close()
    assert contactor.faults() == frozenset()
    with pytest.raises(ContactorError):
        await contactor.open()


async def test_without_feedback_the_command_is_trusted(factory: MockFactory) -> None:
    contactor = make(factory)
    await contactor.close()
    await contactor.open()
    assert contactor.feedback_closed is None
    assert contactor.faults() == frozenset()


async def test_a_released_contactor_is_open_and_cannot_close(factory: MockFactory) -> None:
    contactor = make(factory)
    contactor.release()
    await contactor.open()  # nothing to do: the line is let go
    with pytest.raises(ContactorError):
        await contactor.close()


async def test_no_fault_is_judged_while_the_mechanics_settle(factory: MockFactory) -> None:
    contactor = make(factory, feedback_pin=AUX, settle_s=0.05)
    closing = asyncio.create_task(contactor.close())
    await asyncio.sleep(0)  # the coil is on, the aux contact has not moved yet
    assert factory.pin(COIL).state is True
    assert contactor.faults() == frozenset()
    with pytest.raises(ContactorError):
        await closing  # it never moved


async def test_a_cancelled_close_leaves_the_coil_off(factory: MockFactory) -> None:
    contactor = make(factory, settle_s=60)
    closing = asyncio.create_task(contactor.close())
    await asyncio.sleep(0)
    assert factory.pin(COIL).state is True
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert factory.pin(COIL).state is False and not contactor.closed


async def test_one_bad_read_of_the_aux_contact_is_no_fault(factory: MockFactory) -> None:
    contactor = make(factory, feedback_pin=AUX)
    aux = AuxContact(factory)
    aux.reads(True)  # a spike on the line while commanded open
    assert contactor.faults() == frozenset()
    aux.reads(False)
    assert held(contactor) == frozenset()
    aux.reads(True)
    contactor.faults()
    aux.reads(False)  # two reads, then it went away: still no weld
    assert held(contactor) == frozenset()


async def test_a_bouncing_aux_contact_still_confirms_a_close(factory: MockFactory) -> None:
    contactor = make(factory, feedback_pin=AUX)
    aux = AuxContact(factory)
    aux.reads(False)

    async def bounce() -> None:
        await asyncio.sleep(0.005)  # inside the settle time
        for level in (True, False, True, False, True):
            aux.reads(level)
            await asyncio.sleep(0.001)

    await asyncio.gather(contactor.close(), bounce())
    assert contactor.closed and contactor.faults() == frozenset()


async def test_open_now_drops_the_coil_synchronously_and_an_interlock_refuses_close(
    factory: MockFactory,
) -> None:
    contactor = make(factory)
    tripped = {"rcd": False}
    contactor.add_interlock(lambda: "RCD tripped" if tripped["rcd"] else None)
    await contactor.close()
    tripped["rcd"] = True
    contactor.open_now()  # no await: the coil is off when the call returns
    assert factory.pin(COIL).state is False and not contactor.closed
    with pytest.raises(ContactorError, match="RCD tripped"):
        await contactor.close()
    assert factory.pin(COIL).state is False
    tripped["rcd"] = False
    await contactor.close()
    assert factory.pin(COIL).state is True
