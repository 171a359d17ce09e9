"""GpioCableLock on gpiozero MockFactory pins: motor and solenoid, with and without sense."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockConnectedPin, MockFactory, MockPin

from hal.config import LockConfig
from hal.errors import HardwareConfigError, LockError
from hal.interfaces import CableLock, Fault
from hal.pi.lock import GpioCableLock

LOCK_PIN, UNLOCK_PIN, SENSE = 23, 24, 22


@pytest.fixture
def factory():
    factory = MockFactory()
    yield factory
    factory.close()


def motor(factory: MockFactory, **kw) -> GpioCableLock:
    cfg = LockConfig(kind="motor", pins=(LOCK_PIN, UNLOCK_PIN), pulse_s=0.01, **kw)
    return GpioCableLock(cfg, pin_factory=factory)


def solenoid(factory: MockFactory, **kw) -> GpioCableLock:
    cfg = LockConfig(kind="solenoid", pins=(LOCK_PIN,), pulse_s=0.01, **kw)
    return GpioCableLock(cfg, pin_factory=factory)


class Mechanics:
    """The lock motor behind the H-bridge: it moves the sense switch while one side is on.

    ``jammed`` stops it moving; ``shorts`` counts the times both sides were on at once.
    """

    def __init__(self, factory: MockFactory) -> None:
        self.sense = factory.pin(SENSE)
        self.jammed = False
        self.shorts = 0
        self.lock_side = factory.pin(LOCK_PIN, pin_class=BridgeInput, mechanics=self, locks=True)
        self.unlock_side = factory.pin(
            UNLOCK_PIN, pin_class=BridgeInput, mechanics=self, locks=False
        )

    def powered(self, locks: bool) -> None:
        if self.lock_side.state and self.unlock_side.state:
            self.shorts += 1
        if not self.jammed:
            (self.sense.drive_high if locks else self.sense.drive_low)()


class BridgeInput(MockPin):
    def __init__(self, factory, info, *, mechanics: Mechanics, locks: bool) -> None:
        super().__init__(factory, info)
        self.mechanics, self.locks = mechanics, locks

    def _change_state(self, value):
        changed = super()._change_state(value)
        if changed and value:
            self.mechanics.powered(self.locks)
        return changed


async def test_motor_pulses_one_side_at_a_time(factory: MockFactory) -> None:
    lock = motor(factory)
    assert isinstance(lock, CableLock)
    a, b = factory.pin(LOCK_PIN), factory.pin(UNLOCK_PIN)
    await lock.lock()
    assert lock.locked
    assert [s.state for s in a.states] == [False, True, False]
    assert [s.state for s in b.states] == [False]
    await lock.unlock()
    assert not lock.locked
    assert [s.state for s in b.states] == [False, True, False]
    assert a.state is False and b.state is False  # nothing left powered after a pulse
    assert lock.faults() == frozenset()


async def test_motor_with_sense_confirms_each_move(factory: MockFactory) -> None:
    mechanics = Mechanics(factory)
    lock = motor(factory, sense_pin=SENSE)
    await lock.lock()
    assert lock.locked and factory.pin(SENSE).state is True
    await lock.unlock()
    assert not lock.locked and factory.pin(SENSE).state is False
    await lock.lock()
    assert mechanics.shorts == 0
    assert lock.faults() == frozenset()


async def test_jammed_motor_raises_and_the_fault_stands_until_a_move_succeeds(
    factory: MockFactory,
) -> None:
    mechanics = Mechanics(factory)
    mechanics.jammed = True
    lock = motor(factory, sense_pin=SENSE)
    with pytest.raises(LockError) as err:
        await lock.lock()
    assert err.value.fault is Fault.LOCK_FAILURE
    assert not lock.locked  # the sense says so: the plug is free
    assert factory.pin(LOCK_PIN).state is False  # the motor is not left stalled
    assert lock.faults() == {Fault.LOCK_FAILURE}
    assert lock.faults() == {Fault.LOCK_FAILURE}
    mechanics.jammed = False
    await lock.lock()
    assert lock.locked and lock.faults() == frozenset()


async def test_lock_stuck_locked_fails_to_unlock(factory: MockFactory) -> None:
    mechanics = Mechanics(factory)
    lock = motor(factory, sense_pin=SENSE)
    await lock.lock()
    mechanics.jammed = True
    with pytest.raises(LockError, match="did not unlock"):
        await lock.unlock()
    assert lock.locked  # the plug is still held, and the driver says so
    assert lock.faults() == {Fault.LOCK_FAILURE}


async def test_solenoid_is_held_while_locked(factory: MockFactory) -> None:
    lock = solenoid(factory)
    coil = factory.pin(LOCK_PIN)
    await lock.lock()
    assert coil.state is True and lock.locked
    await lock.unlock()
    assert coil.state is False and not lock.locked


async def test_solenoid_with_sense_confirms_each_move(factory: MockFactory) -> None:
    # The pin follows the coil: the sense switch reads what the coil is driven to.
    factory.pin(LOCK_PIN, pin_class=MockConnectedPin, input_pin=factory.pin(SENSE))
    lock = solenoid(factory, sense_pin=SENSE)
    await lock.lock()
    assert lock.locked and factory.pin(LOCK_PIN).state is True
    await lock.unlock()
    assert not lock.locked and lock.faults() == frozenset()


async def test_solenoid_with_active_low_sense(factory: MockFactory) -> None:
    lock = solenoid(factory, sense_pin=SENSE, sense_active_high=False)
    sense = factory.pin(SENSE)
    assert not lock.locked  # the internal pull-up reads "unlocked"
    sense.drive_low()  # the pin moved in
    await lock.lock()
    assert lock.locked and lock.faults() == frozenset()
    with pytest.raises(LockError):
        await lock.unlock()  # the sense still reads locked
    assert lock.faults() == {Fault.LOCK_FAILURE}


async def test_release_lets_the_solenoid_go_and_frees_the_pins(factory: MockFactory) -> None:
    lock = solenoid(factory, sense_pin=SENSE)
    factory.pin(SENSE).drive_high()
    await lock.lock()
    lock.release()
    coil = factory.pin(LOCK_PIN)
    assert coil.state is False and coil.function == "input"
    solenoid(factory, sense_pin=SENSE).release()  # the pins can be taken again
    with pytest.raises(LockError):
        await lock.lock()


@pytest.mark.parametrize(
    "cfg",
    [
        LockConfig(kind="none"),
        LockConfig(kind="motor", pins=(LOCK_PIN,)),
        LockConfig(kind="motor", pins=(LOCK_PIN, LOCK_PIN)),
        LockConfig(kind="solenoid", pins=()),
    ],
)
def test_impossible_configurations_are_refused(factory: MockFactory, cfg: LockConfig) -> None:
    with pytest.raises(HardwareConfigError):
        GpioCableLock(cfg, pin_factory=factory)


# --- the sense watched while locked, debounced ------------------------------------------


def watched(lock: GpioCableLock, passes: int = 3) -> frozenset[Fault]:
    """The faults after ``passes`` supervisor passes (each one reads the sense once)."""
    for _ in range(passes - 1):
        lock.faults()
    return lock.faults()


async def test_a_lock_lost_while_locked_is_a_fault_until_it_holds_again(
    factory: MockFactory,
) -> None:
    mech = Mechanics(factory)
    lock = GpioCableLock(
        LockConfig(kind="motor", pins=(LOCK_PIN, UNLOCK_PIN), sense_pin=SENSE, pulse_s=0.01),
        pin_factory=factory,
        debounce_s=0.0,
    )
    await lock.lock()
    assert watched(lock) == frozenset() and lock.locked
    mech.sense.drive_low()  # the pin let go under the plug
    assert watched(lock) == {Fault.LOCK_FAILURE}
    assert not lock.locked
    mech.sense.drive_high()
    assert watched(lock) == frozenset()


async def test_a_glitch_on_the_sense_is_not_a_lost_lock(factory: MockFactory) -> None:
    mech = Mechanics(factory)
    lock = GpioCableLock(
        LockConfig(kind="motor", pins=(LOCK_PIN, UNLOCK_PIN), sense_pin=SENSE, pulse_s=0.01),
        pin_factory=factory,
        debounce_s=0.0,
    )
    await lock.lock()
    mech.sense.drive_low()
    assert watched(lock, passes=2) == frozenset()  # two reads: not yet believed
    mech.sense.drive_high()
    assert watched(lock, passes=5) == frozenset()
    await lock.unlock()
    assert watched(lock) == frozenset(), "an unlocked lock is not watched for loss"
