"""The physics of one simulated connector: the EV, its cable, the contacts and the energy.

The mock devices of a connector (contactor, pilot, meter) are thin views onto
one SimConnector, so they can never disagree about what is happening: the
pilot's EV state, the meter's current and the contacts all derive from the same
few facts (is a car plugged, does it want to charge, is PWM offered, are the
contacts physically closed, is a fault injected).

Energy is integrated lazily and exactly: before every change of state and on
every read, the power that held since the last integration is multiplied by
the elapsed (injected) monotonic time.  Power is piecewise constant between
changes, so the result is exact, and tests drive a fake monotonic clock
instead of sleeping.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from hal.interfaces import EvState, MeterSample
from hal.mock.register import EnergyRegister

log = logging.getLogger(__name__)

CABLE_CAPACITIES_A = (13, 20, 32, 63)  # the PP resistor values IEC 61851 defines
MIN_OFFER_A = 6.0  # IEC 61851-1: below 6 A (10 % duty) there is no valid offer
MAX_OFFER_A = 80.0  # 96 % duty, the top of the AC range
METER_PHASES = 3  # the mock meter is a three-phase meter whatever the EV draws


def validate_offer(amps: float | None) -> float | None:
    """Apply the pilot's rules to a requested offer: 6..80 A, or None/0 for no PWM."""
    if amps is None:
        return None
    if isinstance(amps, bool) or not isinstance(amps, int | float) or math.isnan(amps):
        raise ValueError(f"offered current must be a number of amperes or None, got {amps!r}")
    if amps == 0:
        return None
    if not MIN_OFFER_A <= amps <= MAX_OFFER_A:
        raise ValueError(
            f"offered current must be {MIN_OFFER_A:g}..{MAX_OFFER_A:g} A "
            f"(or 0/None for no charging), got {amps:g} A"
        )
    return float(amps)


def validate_ev(ev_max_current_a: float, phases: int, cable_capacity_a: int) -> None:
    """Reject an EV or cable that IEC 61851 would not let exist."""
    if (
        isinstance(ev_max_current_a, bool)
        or not isinstance(ev_max_current_a, int | float)
        or not math.isfinite(ev_max_current_a)
        or ev_max_current_a <= 0
    ):
        raise ValueError(
            f"EV max current must be a positive number of amperes, got {ev_max_current_a!r}"
        )
    if phases not in (1, 3) or isinstance(phases, bool):
        raise ValueError(f"an EV charges on 1 or 3 phases, got {phases!r}")
    if cable_capacity_a not in CABLE_CAPACITIES_A or isinstance(cable_capacity_a, bool):
        raise ValueError(
            f"cable capacity must be one of {CABLE_CAPACITIES_A} A (the PP resistor values), "
            f"got {cable_capacity_a!r}"
        )


def connector_index(connector: object, count: int) -> int:
    """The list index of a bench's ``connector`` number (1..count), or a ValueError.

    The bench controls (the mock station's and pibox's ``sim``) take the number from a
    socket command, so anything may arrive: a bool, a string, 0.
    """
    if isinstance(connector, bool) or not isinstance(connector, int) or not 1 <= connector <= count:
        raise ValueError(f"unknown connector {connector!r}: this station has connectors 1..{count}")
    return connector - 1


class SimConnector:
    """What physically happens at one connector; every mutator integrates energy first."""

    def __init__(
        self,
        number: int,
        *,
        voltage_v: float,
        frequency_hz: float,
        register: EnergyRegister,
        monotonic: Callable[[], float],
    ) -> None:
        self.number = number
        self.voltage_v = voltage_v
        self.frequency_hz = frequency_hz
        self._register = register
        self._monotonic = monotonic
        self._last_t = monotonic()
        # the EV and its cable
        self.plugged = False
        self.wants_charge = False
        self.ev_max_current_a = 0.0
        self.phases = 3
        self.cable_capacity_a: int | None = None
        self.ev_error = False
        self.needs_ventilation = False  # asks with state D instead of C
        # the station side
        self.offered_current_a: float | None = None
        self.contactor_commanded = False
        self.contacts_closed = False
        self.welded = False

    # -- derived facts -------------------------------------------------------

    def ev_state(self) -> EvState:
        """IEC 61851: the EV only closes S2 (state C) while PWM is offered.

        An EV fault reads as E (CP at 0 V: shorted CP or missing diode), not F:
        F (-12 V) is what the station itself drives when it is unavailable, so
        no car can produce it.
        """
        if not self.plugged:
            return EvState.A
        if self.ev_error:
            return EvState.E
        if self.wants_charge and self.offered_current_a is not None:
            return EvState.D if self.needs_ventilation else EvState.C
        return EvState.B

    def current_a(self) -> float:
        """Per-phase current the EV draws now (0 unless contacts closed and state C)."""
        if not self.contacts_closed or not self.ev_state().requesting:
            return 0.0
        assert self.offered_current_a is not None and self.cable_capacity_a is not None
        return min(self.offered_current_a, self.ev_max_current_a, float(self.cable_capacity_a))

    def power_w(self) -> float:
        return self.voltage_v * self.current_a() * self.phases

    @property
    def energy_wh(self) -> float:
        self.advance()
        return self._register.wh

    def sample(self) -> MeterSample:
        """What a three-phase meter on this supply reads now (EV phases from L1)."""
        self.advance()
        amps = self.current_a()
        per_phase_a = tuple(amps if i < self.phases else 0.0 for i in range(METER_PHASES))
        per_phase_w = tuple(self.voltage_v * a for a in per_phase_a)
        return MeterSample(
            energy_wh=self._register.wh,
            power_w=sum(per_phase_w),
            voltage_v=(self.voltage_v,) * METER_PHASES,
            current_a=per_phase_a,
            power_per_phase_w=per_phase_w,
            frequency_hz=self.frequency_hz,
        )

    # -- integration ---------------------------------------------------------

    def advance(self) -> None:
        """Count the energy of the power that held since the last call."""
        now = self._monotonic()
        dt = now - self._last_t
        if dt > 0:
            self._register.add(self.power_w() * dt / 3600.0, now)
            self._last_t = now

    def set_energy_wh(self, wh: float) -> None:
        self.advance()
        self._register.set(wh, self._monotonic())

    def close(self) -> None:
        self.advance()
        self._register.close(self._monotonic())

    # -- changes -------------------------------------------------------------

    def plug(self, *, ev_max_current_a: float, phases: int, cable_capacity_a: int) -> None:
        validate_ev(ev_max_current_a, phases, cable_capacity_a)
        if self.plugged:
            raise ValueError(f"connector {self.number}: an EV is already plugged; unplug first")
        self.advance()
        self.plugged = True
        self.wants_charge = False
        self.ev_max_current_a = float(ev_max_current_a)
        self.phases = phases
        self.cable_capacity_a = cable_capacity_a

    def unplug(self) -> None:
        if not self.plugged:
            raise ValueError(f"connector {self.number}: nothing is plugged")
        self.advance()
        self.plugged = False
        self.wants_charge = False
        self.cable_capacity_a = None

    def set_wants_charge(self, wants: bool) -> None:
        if not self.plugged:
            verb = "charge" if wants else "suspend"
            raise ValueError(f"connector {self.number}: cannot {verb}, no EV is plugged")
        self.advance()
        self.wants_charge = wants

    def set_offer(self, amps: float | None) -> None:
        offer = validate_offer(amps)
        self.advance()
        self.offered_current_a = offer

    def command_contacts(self, closed: bool) -> None:
        """Drive the coil; welded contacts close but never open again."""
        self.advance()
        self.contactor_commanded = closed
        if closed:
            self.contacts_closed = True
        elif not self.welded:
            self.contacts_closed = False

    def set_welded(self, on: bool) -> None:
        """Weld (the contacts stick from their next closing on) or repair them.

        Contacts that are open when the weld is injected stay open: a weld
        happens on closing, so the fault shows after the next close/open.
        """
        self.advance()
        self.welded = on
        if not on:
            self.contacts_closed = self.contactor_commanded

    def set_ev_error(self, on: bool) -> None:
        self.advance()
        self.ev_error = on


# -- the world outside the daemon -----------------------------------------------------


def save_world(path: Path, sims: Sequence[SimConnector]) -> None:
    """Persist the cars and cables: they stay where they are when the daemon dies.

    A power cut or a kill -9 of chargerd does not unplug the EV; after the restart
    the station (mock or pibox) must find it still there, as on real hardware.
    """
    world = [
        {
            "plugged": sim.plugged,
            "wants_charge": sim.wants_charge,
            "ev_max_current_a": sim.ev_max_current_a,
            "phases": sim.phases,
            "cable_capacity_a": sim.cable_capacity_a,
        }
        for sim in sims
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(world))
    os.replace(tmp, path)


def restore_world(path: Path, sims: Sequence[SimConnector], *, who: str) -> None:
    """Plug back the EVs that ``save_world`` found plugged; a broken entry is skipped."""
    try:
        world = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        log.warning("%s: ignoring unreadable %s: %s", who, path, exc)
        return
    for sim, saved in zip(sims, world, strict=False):
        if not saved.get("plugged"):
            continue
        try:
            validate_ev(saved["ev_max_current_a"], saved["phases"], saved["cable_capacity_a"])
            sim.plug(
                ev_max_current_a=saved["ev_max_current_a"],
                phases=saved["phases"],
                cable_capacity_a=saved["cable_capacity_a"],
            )
            sim.set_wants_charge(bool(saved.get("wants_charge")))
        except (KeyError, ValueError) as exc:
            log.warning("%s: connector %s: ignoring saved EV: %s", who, sim.number, exc)
            continue
        log.info("%s: connector %s: the EV is still plugged in", who, sim.number)
