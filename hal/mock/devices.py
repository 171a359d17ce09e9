"""The six mock devices, each implementing its hal.interfaces protocol.

They behave like the real drivers seen from the daemon: commands take effect
(instantly), failures are raised as hal.errors, and standing faults show in
``faults()``.  The faults themselves are injected by the bench through
hal.mock.station.MockStation, never by the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from hal.errors import ContactorError, LockError, MeterError
from hal.idtag import normalize_presented
from hal.interfaces import EvState, Fault, IndicatorState, MeterSample
from hal.mock.ev import SimConnector

log = logging.getLogger(__name__)

_NO_FAULTS: frozenset[Fault] = frozenset()


def normalize_uid(uid: str) -> str:
    """The idTag the mock reader reports: a hex UID upper-cased, or any printable idTag.

    CSMS teams test with tokens such as ``TOKEN-0001``; see hal.idtag.
    """
    return normalize_presented(uid)


class MockContactor:
    """Contactor whose contacts are the simulated ones (welding included)."""

    def __init__(self, sim: SimConnector) -> None:
        self._sim = sim
        # When the coil command last changed, on the system-wide monotonic clock
        # (time.monotonic), so that a bench in another process can time a reaction.
        self.changed_at: float | None = None
        self._interlocks: list[Callable[[], str | None]] = []

    @property
    def closed(self) -> bool:
        return self._sim.contactor_commanded

    def _command(self, closed: bool) -> None:
        if closed != self._sim.contactor_commanded:
            self.changed_at = time.monotonic()
        self._sim.command_contacts(closed)

    def add_interlock(self, blocked: Callable[[], str | None]) -> None:
        """``close()`` refuses while ``blocked()`` returns a reason (an RCD tripped)."""
        self._interlocks.append(blocked)

    def open_now(self) -> None:
        """Open at once, synchronously (an interlock's trip)."""
        self._command(False)

    async def close(self) -> None:
        for blocked in self._interlocks:
            reason = blocked()
            if reason:
                raise ContactorError(
                    f"connector {self._sim.number}: contactor may not close: {reason}",
                    Fault.CONTACTOR_FAILED_TO_CLOSE,
                )
        self._command(True)

    async def open(self) -> None:
        self._command(False)
        if self._sim.contacts_closed:
            raise ContactorError(
                f"connector {self._sim.number}: contacts still closed after open (welded)",
                Fault.CONTACTOR_WELDED,
            )

    def faults(self) -> frozenset[Fault]:
        if self._sim.contacts_closed and not self._sim.contactor_commanded:
            return frozenset({Fault.CONTACTOR_WELDED})
        return _NO_FAULTS


class MockCableLock:
    """Cable lock of a socket outlet; a jammed lock stays where it is and says so.

    ``lost`` is a lock that let go under the plug (its sense reads unlocked
    while locked): LOCK_FAILURE for as long as it lasts, as the Pi driver's
    watched sense input reports it.
    """

    def __init__(self, number: int) -> None:
        self._number = number
        self._locked = False
        self.jammed = False
        self.lost = False

    @property
    def locked(self) -> bool:
        return self._locked and not self.lost

    async def lock(self) -> None:
        self._move(True)

    async def unlock(self) -> None:
        self._move(False)

    def _move(self, locked: bool) -> None:
        if self.jammed:
            where = "locked" if self._locked else "unlocked"
            raise LockError(f"connector {self._number}: cable lock jammed, still {where}")
        self._locked = locked

    def faults(self) -> frozenset[Fault]:
        lost = self.lost and self._locked
        return frozenset({Fault.LOCK_FAILURE}) if self.jammed or lost else _NO_FAULTS


class MockIndicator:
    """Status light that remembers what it showed and when, for the bench and tests."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._state = IndicatorState.OFF
        self.history: list[tuple[float, IndicatorState]] = []

    @property
    def state(self) -> IndicatorState:
        return self._state

    def show(self, state: IndicatorState) -> None:
        state = IndicatorState(state)  # ValueError for a state the light cannot show
        self._state = state
        self.history.append((self._monotonic(), state))

    def faults(self) -> frozenset[Fault]:
        return _NO_FAULTS


class MockRfidReader:
    """Card reader fed by the bench; a dead reader sees nothing that is presented."""

    def __init__(self) -> None:
        self._cards: asyncio.Queue[str] = asyncio.Queue()
        self.dead = False

    def present(self, uid: str) -> bool:
        """Hold a card to the reader; True when the reader saw it."""
        card = normalize_uid(uid)
        if self.dead:
            log.warning("mock reader is dead: card %s is not seen", card)
            return False
        self._cards.put_nowait(card)
        return True

    @property
    def pending(self) -> int:
        """Cards read but not yet taken by next_card()."""
        return self._cards.qsize()

    async def next_card(self) -> str:
        return await self._cards.get()

    def faults(self) -> frozenset[Fault]:
        return frozenset({Fault.READER_FAILURE}) if self.dead else _NO_FAULTS


class MockEnergyMeter:
    """Three-phase meter on the simulated supply; a silent meter still counts."""

    def __init__(self, sim: SimConnector, *, silent_delay_s: float = 0.0) -> None:
        self._sim = sim
        self._last: MeterSample | None = None
        self.silent = False
        self.silent_delay_s = silent_delay_s  # a silent read fails after this (a bus timeout)
        self._logged_silent = False

    @property
    def last_sample(self) -> MeterSample | None:
        return self._last

    async def read(self) -> MeterSample:
        # The register keeps counting while the bus is silent (as a real meter
        # would), so the first reading after recovery jumps by what was missed.
        self._sim.advance()
        if self.silent and self.silent_delay_s > 0:
            await asyncio.sleep(self.silent_delay_s)
        if self.silent:
            if not self._logged_silent:
                log.error("connector %s: mock meter does not answer", self._sim.number)
                self._logged_silent = True
            raise MeterError(f"connector {self._sim.number}: meter does not answer")
        if self._logged_silent:
            log.info("connector %s: mock meter answers again", self._sim.number)
            self._logged_silent = False
        self._last = self._sim.sample()
        return self._last

    def faults(self) -> frozenset[Fault]:
        return frozenset({Fault.METER_FAILURE}) if self.silent else _NO_FAULTS


class MockPilot:
    """Control pilot whose EV follows IEC 61851 (state C only while PWM is offered)."""

    def __init__(self, sim: SimConnector) -> None:
        self._sim = sim
        self.reads = 0  # CP samples taken: the bench's pilot sampling rate

    @property
    def offered_current_a(self) -> float | None:
        return self._sim.offered_current_a

    def set_offered_current(self, amps: float | None) -> None:
        self._sim.set_offer(amps)

    async def ev_state(self) -> EvState:
        self.reads += 1
        return self._sim.ev_state()

    async def cable_capacity_a(self) -> int | None:
        return self._sim.cable_capacity_a if self._sim.plugged else None

    def faults(self) -> frozenset[Fault]:
        if self._sim.plugged and self._sim.ev_error:
            return frozenset({Fault.EV_ERROR})
        return _NO_FAULTS
