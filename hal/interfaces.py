"""The six device interfaces the daemon drives, and the values they exchange.

hal/ knows nothing of OCPP: a fault here is a hardware fact ("the contactor is
welded"); mapping it to an OCPP error code is the daemon's business.  Every
method that may wait on hardware is async, so that a slow bus never blocks the
event loop; drivers that must block (SPI polling, a serial read) do it in a
worker thread behind these methods.

Failures are raised (see hal.errors), never returned as None or a flag.
Every device also reports its standing faults through ``faults()`` so that the
daemon's status machine can be a pure function of a snapshot.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class Fault(enum.StrEnum):
    """A standing hardware fault, as a technician would name it."""

    CONTACTOR_WELDED = "contactor_welded"
    CONTACTOR_FAILED_TO_CLOSE = "contactor_failed_to_close"
    LOCK_FAILURE = "lock_failure"
    READER_FAILURE = "reader_failure"
    METER_FAILURE = "meter_failure"
    EV_ERROR = "ev_error"  # pilot state E or F, or a diode failure
    PILOT_FAILURE = "pilot_failure"  # the CP voltage cannot be read
    RCD_TRIPPED = "rcd_tripped"  # the residual-current monitor saw a fault current
    RCD_FAILURE = "rcd_failure"  # the residual-current monitor failed its self-test
    VENTILATION_REQUIRED = "ventilation_required"  # EV in state D at a site without ventilation


class EvState(enum.StrEnum):
    """IEC 61851-1 control pilot state, as read from the CP voltage."""

    A = "A"  # no EV connected (+12 V)
    B = "B"  # EV connected, not ready (+9 V)
    C = "C"  # EV connected, ready, ventilation not required (+6 V)
    D = "D"  # EV ready, ventilation required (+3 V)
    E = "E"  # short / no power (0 V)
    F = "F"  # EVSE not available / error (-12 V)

    @property
    def plugged(self) -> bool:
        return self in (EvState.B, EvState.C, EvState.D)

    @property
    def requesting(self) -> bool:
        return self in (EvState.C, EvState.D)


class IndicatorState(enum.StrEnum):
    """What the status LED shows; one colour or pattern each (see README)."""

    OFF = "off"
    AVAILABLE = "available"
    PREPARING = "preparing"  # also: authorizing
    CHARGING = "charging"
    SUSPENDED = "suspended"
    FINISHING = "finishing"
    RESERVED = "reserved"
    UNAVAILABLE = "unavailable"
    FAULTED = "faulted"


@dataclass(frozen=True, slots=True)
class MeterSample:
    """One consistent reading of an energy meter.

    Per-phase tuples hold one value per phase the meter has (1 or 3); a value
    the meter model does not deliver is None.  ``energy_wh`` is the meter's
    import register, which only ever grows.
    """

    energy_wh: float
    power_w: float | None = None
    voltage_v: Sequence[float | None] = field(default_factory=tuple)
    current_a: Sequence[float | None] = field(default_factory=tuple)
    power_per_phase_w: Sequence[float | None] = field(default_factory=tuple)
    frequency_hz: float | None = None

    @property
    def phases(self) -> int:
        return len(self.voltage_v) or len(self.current_a) or 1


@runtime_checkable
class Contactor(Protocol):
    """The main power relay of one connector.  Starts open; fails open."""

    @property
    def closed(self) -> bool:
        """What was last commanded (True after close())."""
        ...

    async def close(self) -> None:
        """Close; raises ContactorError if the feedback contact does not follow."""
        ...

    async def open(self) -> None:
        """Open; raises ContactorError if the feedback says it is still closed (welded)."""
        ...

    def faults(self) -> frozenset[Fault]: ...


@runtime_checkable
class CableLock(Protocol):
    """The actuator that holds the plug in a socket outlet."""

    @property
    def locked(self) -> bool: ...

    async def lock(self) -> None:
        """Lock; raises LockError when the sense input does not confirm."""
        ...

    async def unlock(self) -> None:
        """Unlock; raises LockError when the sense input does not confirm."""
        ...

    def faults(self) -> frozenset[Fault]: ...


@runtime_checkable
class Indicator(Protocol):
    """The status light of one connector."""

    @property
    def state(self) -> IndicatorState: ...

    def show(self, state: IndicatorState) -> None: ...

    def faults(self) -> frozenset[Fault]: ...


@runtime_checkable
class RfidReader(Protocol):
    """A card reader: each presentation of a card yields its UID once."""

    async def next_card(self) -> str:
        """Wait for the next card; the UID as upper-case hex (8, 14 or 20 digits)."""
        ...

    def faults(self) -> frozenset[Fault]: ...


@runtime_checkable
class EnergyMeter(Protocol):
    """An energy meter on one connector's supply."""

    @property
    def last_sample(self) -> MeterSample | None:
        """The last good reading (kept while the meter is silent)."""
        ...

    async def read(self) -> MeterSample:
        """One consistent reading; raises MeterError when the meter does not answer."""
        ...

    def faults(self) -> frozenset[Fault]: ...


@runtime_checkable
class Pilot(Protocol):
    """The IEC 61851 control pilot (and proximity pilot) of one connector."""

    @property
    def offered_current_a(self) -> float | None:
        """The current signalled to the EV by PWM; None when no charging is offered."""
        ...

    def set_offered_current(self, amps: float | None) -> None:
        """Signal ``amps`` to the EV (PWM); None or 0 puts the line at 100 % (no charging)."""
        ...

    async def ev_state(self) -> EvState:
        """The EV state read now from the CP voltage."""
        ...

    async def cable_capacity_a(self) -> int | None:
        """Cable capacity from the PP resistor (13/20/32/63 A); None when no cable."""
        ...

    def faults(self) -> frozenset[Fault]: ...


@runtime_checkable
class ResidualCurrentMonitor(Protocol):
    """A residual-current monitor (e.g. a 6 mA DC detection module) on one connector's supply.

    The station's assembly wires its trip straight to the contactor
    (``on_trip``, called synchronously from whatever thread saw the fault
    output), so that the coil drops before any await; the daemon learns of it
    through ``faults()``.
    """

    @property
    def tripped(self) -> bool:
        """The fault output is (or was, until it released) active."""
        ...

    @property
    def can_self_test(self) -> bool:
        """The module has a test input wired."""
        ...

    def on_trip(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` at every trip, synchronously, from any thread."""
        ...

    async def self_test(self) -> None:
        """Drive the test input, expect the fault output within the module's time, release.

        Raises RcdError (and RCD_FAILURE stands) when it does not trip or release.
        """
        ...

    def faults(self) -> frozenset[Fault]: ...


@runtime_checkable
class TamperSwitch(Protocol):
    """The enclosure's tamper switch: ``opened`` while the enclosure is open.

    ``on_change(cb)`` calls ``cb(opened)`` at every change, from any thread (a
    gpiozero callback thread on a Pi): the daemon hands it to its loop.
    """

    @property
    def opened(self) -> bool: ...

    def on_change(self, callback: Callable[[bool], None]) -> None: ...


@dataclass
class ConnectorHardware:
    """The devices of one connector."""

    contactor: Contactor
    lock: CableLock | None
    meter: EnergyMeter
    pilot: Pilot
    indicator: Indicator
    rcd: ResidualCurrentMonitor | None = None


@dataclass
class StationHardware:
    """Everything the daemon drives.  ``connectors[0]`` is connector 1."""

    connectors: list[ConnectorHardware]
    reader: RfidReader | None
    kind: str  # "mock" or "pi"
    sim: object | None = None  # the hal.mock.MockStation bench controls, on the mock driver only
    tamper: TamperSwitch | None = None  # the enclosure switch, where one is wired
    closers: list = field(default_factory=list)  # callables (sync or async) run on close

    async def aclose(self) -> None:
        """Open every contactor, stop the PWM and release the drivers."""
        import inspect

        for c in self.connectors:
            try:
                await c.contactor.open()
            except Exception:
                pass
            try:
                c.pilot.set_offered_current(None)
            except Exception:
                pass
        for closer in reversed(self.closers):
            result = closer()
            if inspect.isawaitable(result):
                await result
