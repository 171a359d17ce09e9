"""IEC 61851-1 control-pilot and proximity-pilot arithmetic, as pure functions.

Kept apart from the GPIO driver so that every boundary of the standard is
tested without a pin, and so that the mock pilot and the real one agree on the
numbers.  Duty cycles are fractions (0..1), not percent, because that is what a
gpiozero PWM output takes.

Boundaries are exact and hysteresis-free: the caller samples again rather than
smoothing here, so a reading right on a threshold always gives the same answer.
"""

from __future__ import annotations

import math
from typing import TypeVar

from hal.errors import PilotError
from hal.interfaces import EvState

T = TypeVar("T")

MIN_CURRENT_A = 6.0
MAX_CURRENT_A = 80.0
_LOW_RANGE_MAX_A = 51.0  # up to here duty = A / 0.6 %; above, duty = A / 2.5 + 64 %

NO_CHARGING_DUTY = 1.0  # steady +12 V: the EVSE is present but offers nothing


def duty_for_current(amps: float | None) -> float:
    """The PWM duty (0..1) that signals ``amps`` to the EV.

    None or 0 means "no charging offered": a steady line (100 %).  A current
    the standard cannot signal (below 6 A, above 80 A, negative, NaN) raises
    ValueError instead of being clamped: offering 6 A when the smart-charging
    limit says 4 A would exceed the limit, so the caller must decide.
    """
    if amps is None or amps == 0:
        return NO_CHARGING_DUTY
    if math.isnan(amps) or amps < MIN_CURRENT_A or amps > MAX_CURRENT_A:
        raise ValueError(
            f"{amps} A cannot be signalled on the pilot "
            f"(0 or {MIN_CURRENT_A:g}..{MAX_CURRENT_A:g} A)"
        )
    if amps <= _LOW_RANGE_MAX_A:
        percent = amps / 0.6
    else:
        percent = amps / 2.5 + 64.0
    return percent / 100.0


def current_for_duty(duty: float) -> float | None:
    """The current an EV reads from a PWM duty (0..1), per the EV's table of the standard.

    None where the standard says "no charging allowed" (below 8 %, above
    97 %, and the steady 100 % line); 3..7 % (digital communication) is also
    None because it carries no current.  8..10 % reads as 6 A and 96..97 % as
    80 A, as the standard rounds them.  The two formulas meet at 85 % = 51 A.
    """
    if math.isnan(duty) or not 0.0 <= duty <= 1.0:
        raise ValueError(f"duty {duty} is not within 0..1")
    # Rounded so that 0.85 (which is 85.00000000000001 % in binary) sits on its boundary.
    percent = round(duty * 100.0, 9)
    if percent < 8.0 or percent > 97.0:
        return None
    if percent < 10.0:
        return MIN_CURRENT_A
    if percent <= 85.0:
        return percent * 0.6
    if percent <= 96.0:
        return (percent - 64.0) * 2.5
    return MAX_CURRENT_A


# Lower edge of each band of the CP high level, from +12 V down (volts).
_STATE_BANDS: tuple[tuple[float, EvState], ...] = (
    (10.5, EvState.A),  # +12 V: no EV
    (7.5, EvState.B),  # +9 V: EV connected
    (4.5, EvState.C),  # +6 V: EV ready
    (1.5, EvState.D),  # +3 V: EV ready, ventilation
    (-1.5, EvState.E),  # 0 V: CP shorted to PE, or no supply
)
DIODE_LOW_MAX_V = -10.5  # the PWM's low side must reach at least this far down


def state_for_voltage(cp_high_v: float, cp_low_v: float | None = None) -> EvState:
    """The EV state for the CP voltage (the high side of the PWM, or the steady level).

    Each band includes its lower edge: 10.5 V is A, 7.5 V is B, 4.5 V is C,
    1.5 V is D, -1.5 V is E.  Anything below -1.5 V is F, including readings
    between the nominal levels (e.g. -5 V), which no healthy EV produces.

    ``cp_low_v`` is the low side of the PWM, given only while the PWM runs.  The
    EV's diode keeps it at -12 V; a low side above -10.5 V while the high side
    shows A..D means the diode is missing or shorted, which the standard treats
    as an error (F).  A high side already at E stays E: the line is shorted and
    the low side says nothing more.
    """
    state = EvState.F
    for lower_edge, band_state in _STATE_BANDS:
        if cp_high_v >= lower_edge:
            state = band_state
            break
    if (
        cp_low_v is not None
        and state not in (EvState.E, EvState.F)
        and not cp_low_v <= DIODE_LOW_MAX_V  # written so that NaN counts as a failure
    ):
        return EvState.F
    return state


# Proximity-pilot resistor bands: (lowest ohms of the band, inclusive, cable capacity).
# A resistance right on a boundary is read as the smaller current, the safe side.
_PP_BANDS: tuple[tuple[float, int], ...] = (
    (1000.0, 13),  # 1.5 kOhm nominal: 1000..2200 Ohm
    (330.0, 20),  # 680 Ohm nominal: 330..<1000 Ohm
    (150.0, 32),  # 220 Ohm nominal: 150..<330 Ohm
    (75.0, 63),  # 100 Ohm nominal: 75..<150 Ohm
)
PP_OPEN_MIN_OHM = 2200.0  # above this: no cable plugged in


def cable_capacity_for_resistance(ohm: float | None) -> int | None:
    """The cable's current capacity (A) coded by its PP resistor; None when no cable.

    None (open circuit, infinite) or more than 2200 Ohm means no cable.  Below
    75 Ohm no cable is coded: the PP line is shorted, which raises PilotError
    because charging on a cable of unknown capacity could overheat it.
    """
    if ohm is None or ohm > PP_OPEN_MIN_OHM:
        return None
    for lower_edge, amps in _PP_BANDS:
        if ohm >= lower_edge:
            return amps
    raise PilotError(f"proximity pilot reads {ohm} Ohm: shorted or not a cable coding")


# --- judging a burst of CP readings -------------------------------------------------------

# Where a healthy line's high level can be: the standard's ranges (nominal +/- 1 V) widened
# by 0.25 V for the front end's tolerance and the noise a burst's maximum picks up.  A
# positive level outside all of them (above 13.25 V, or between two of them) is no EV
# state: the front end, its supply or the ADC reference is broken.
HIGH_BANDS: tuple[tuple[float, float, EvState], ...] = (
    (10.75, 13.25, EvState.A),
    (7.75, 10.25, EvState.B),
    (4.75, 7.25, EvState.C),
    (1.75, 4.25, EvState.D),
)
E_BAND_V = 1.5  # |high| up to this: CP shorted to PE (0 V)
NO_NEGATIVE_V = -1.5  # a low side above this never swung negative


def cp_state(cp_high_v: float, cp_low_v: float | None = None) -> EvState | None:
    """The EV state a burst shows, or None when the line is implausible (a pilot failure).

    ``cp_high_v`` is the highest reading of the burst, ``cp_low_v`` the lowest, given
    only while the PWM runs and the burst can have seen the low side.  Unlike
    ``state_for_voltage`` (contiguous bands), this judges plausibility:

    - a positive high level outside every band of ``HIGH_BANDS`` is None;
    - a high level within +/-1.5 V is E (CP shorted to PE), below -1.5 V is F;
    - with the PWM running and the high level in A..D, a low side that never went
      below -1.5 V is None (the generator's -12 V is gone: no EV can cause that),
      a low side between -10.5 V and -1.5 V is F (the EV's diode is shorted).
    NaN is None.
    """
    if math.isnan(cp_high_v) or (cp_low_v is not None and math.isnan(cp_low_v)):
        return None
    if cp_high_v < -E_BAND_V:
        return EvState.F
    if cp_high_v <= E_BAND_V:
        return EvState.E
    state = next((s for lo, hi, s in HIGH_BANDS if lo <= cp_high_v <= hi), None)
    if state is None:
        return None
    if cp_low_v is None or cp_low_v <= DIODE_LOW_MAX_V:
        return state
    if cp_low_v >= NO_NEGATIVE_V:
        return None
    return EvState.F


def adc_stuck(raws: list[int] | tuple[int, ...], *, pwm_running: bool, full_scale: int) -> bool:
    """Every reading at one rail: an ADC that answers without converting.

    All zeros is never a healthy line (the generator drives +12 V or a square
    wave, and no EV pulls the line to -12 V).  All full-scale readings are a
    healthy steady +12 V when the front end maps 12 V onto full scale, so they
    count as stuck only while the PWM runs (a running PWM must show its low
    side).
    """
    if not raws:
        return False
    first = raws[0]
    if first not in (0, full_scale) or any(r != first for r in raws):
        return False
    return first == 0 or pwm_running


def dense_run_needed_s(duty: float, period_s: float) -> tuple[float, float]:
    """How to sample a PWM so that its high plateau is surely seen.

    Returns (run_s, max_gap_s): a run of readings at most ``max_gap_s`` apart
    lasting ``run_s`` contains a reading inside a complete high pulse.  A
    window one period long can cut the pulse in two halves that both slip
    between readings; a period plus the pulse cannot.  The gap is 85 % of the
    pulse, leaving the rest for the edges' slew.  A steady line (duty 0 or 1)
    needs no run.
    """
    if duty <= 0.0 or duty >= 1.0:
        return 0.0, math.inf
    high_s = duty * period_s
    return period_s + high_s, 0.85 * high_s


def debounce_step(
    accepted: T, candidate: T | None, count: int, reading: T, n: int
) -> tuple[T, T | None, int]:
    """One reading through the debounce: (accepted, candidate, agreeing count) after it.

    A reading equal to the accepted state forgets any candidate; a new value
    becomes the candidate; the candidate is accepted at its ``n``-th agreeing
    reading in a row.  With ``n`` = 1 every reading is accepted at once.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    if reading == accepted:
        return accepted, None, 0
    count = count + 1 if reading == candidate else 1
    if count >= n:
        return reading, None, 0
    return accepted, reading, count


def debounce(accepted: T, readings: list[T], n: int) -> T:
    """The accepted state after ``readings`` (oldest first); see ``debounce_step``."""
    candidate: T | None = None
    count = 0
    for reading in readings:
        accepted, candidate, count = debounce_step(accepted, candidate, count, reading, n)
    return accepted
