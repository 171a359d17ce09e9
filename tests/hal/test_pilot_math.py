"""IEC 61851-1 pilot arithmetic at every boundary of the standard's tables."""

from __future__ import annotations

import math

import pytest

from hal.errors import PilotError
from hal.interfaces import EvState
from hal.pilot_math import (
    adc_stuck,
    cable_capacity_for_resistance,
    cp_state,
    current_for_duty,
    debounce,
    debounce_step,
    dense_run_needed_s,
    duty_for_current,
    state_for_voltage,
)

# --- duty_for_current -----------------------------------------------------------


@pytest.mark.parametrize(
    ("amps", "duty"),
    [
        (None, 1.0),
        (0, 1.0),
        (6, 0.10),
        (10, 10 / 60),
        (16, 0.26667),
        (32, 0.53333),
        (51, 0.85),
        (51.5, 0.846),  # the second formula starts just below 85 %: the standard's own seam
        (63, 0.892),
        (80, 0.96),
    ],
)
def test_duty_for_current(amps: float | None, duty: float) -> None:
    assert duty_for_current(amps) == pytest.approx(duty, abs=1e-5)


@pytest.mark.parametrize("amps", [5.99, 1, -6, 80.01, 100, math.nan])
def test_duty_for_current_refuses_what_the_pilot_cannot_signal(amps: float) -> None:
    with pytest.raises(ValueError, match="cannot be signalled"):
        duty_for_current(amps)


@pytest.mark.parametrize("amps", [6, 13, 16, 20, 32, 40, 51, 53, 63, 70, 80])
def test_current_round_trips_through_the_duty(amps: float) -> None:
    assert current_for_duty(duty_for_current(amps)) == pytest.approx(amps)


@pytest.mark.parametrize("amps", [51.1, 52, 52.5])
def test_at_the_seam_of_the_two_formulas_the_ev_reads_less_than_offered(amps: float) -> None:
    # 51 < A <= 52.5 gives a duty of at most 85 %, which the EV reads with the first
    # formula: it draws less than offered, never more.
    assert 50.0 < current_for_duty(duty_for_current(amps)) <= amps


# --- current_for_duty -------------------------------------------------------------


@pytest.mark.parametrize(
    ("duty", "amps"),
    [
        (0.0, None),
        (0.02, None),  # below 3 %: no charging
        (0.05, None),  # 3..7 %: digital communication, no current by PWM
        (0.0799, None),
        (0.08, 6.0),  # 8..10 % reads as 6 A
        (0.0999, 6.0),
        (0.10, 6.0),
        (0.50, 30.0),
        (0.85, 51.0),  # last duty of the first formula
        (0.8501, (85.01 - 64) * 2.5),
        (0.90, 65.0),
        (0.96, 80.0),
        (0.9650, 80.0),  # 96..97 % reads as 80 A
        (0.97, 80.0),
        (0.9701, None),  # above 97 %: no charging
        (1.0, None),  # steady line
    ],
)
def test_current_for_duty(duty: float, amps: float | None) -> None:
    result = current_for_duty(duty)
    if amps is None:
        assert result is None
    else:
        assert result == pytest.approx(amps)


@pytest.mark.parametrize("duty", [-0.01, 1.01, math.nan])
def test_current_for_duty_refuses_a_duty_outside_0_to_1(duty: float) -> None:
    with pytest.raises(ValueError):
        current_for_duty(duty)


# --- state_for_voltage ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("volts", "state"),
    [
        (12.0, EvState.A),
        (10.5, EvState.A),
        (10.49, EvState.B),
        (9.0, EvState.B),
        (7.5, EvState.B),
        (7.49, EvState.C),
        (6.0, EvState.C),
        (4.5, EvState.C),
        (4.49, EvState.D),
        (3.0, EvState.D),
        (1.5, EvState.D),
        (1.49, EvState.E),
        (0.0, EvState.E),
        (-1.5, EvState.E),
        (-1.51, EvState.F),
        (-5.0, EvState.F),  # between nominal levels: no healthy EV does that
        (-10.5, EvState.F),
        (-12.0, EvState.F),
        (math.nan, EvState.F),
    ],
)
def test_state_for_the_high_side(volts: float, state: EvState) -> None:
    assert state_for_voltage(volts) is state


@pytest.mark.parametrize("high", [12.0, 9.0, 6.0, 3.0])
@pytest.mark.parametrize(
    ("low", "diode_ok"),
    [(-12.0, True), (-10.5, True), (-10.49, False), (-6.0, False), (0.0, False), (math.nan, False)],
)
def test_a_low_side_above_minus_10_5_v_is_a_diode_failure(
    high: float, low: float, diode_ok: bool
) -> None:
    expected = state_for_voltage(high) if diode_ok else EvState.F
    assert state_for_voltage(high, low) is expected


def test_a_shorted_line_stays_e_whatever_the_low_side() -> None:
    assert state_for_voltage(0.0, 0.0) is EvState.E


# --- cable_capacity_for_resistance ------------------------------------------------------


@pytest.mark.parametrize(
    ("ohm", "amps"),
    [
        (None, None),
        (math.inf, None),
        (1e6, None),
        (2200.01, None),
        (2200, 13),
        (1500, 13),
        (1000, 13),  # on the seam between 13 A and 20 A: the smaller current
        (999.9, 20),
        (680, 20),
        (330, 20),
        (329.9, 32),
        (220, 32),
        (150, 32),
        (149.9, 63),
        (100, 63),
        (75, 63),
    ],
)
def test_cable_capacity(ohm: float | None, amps: int | None) -> None:
    assert cable_capacity_for_resistance(ohm) == amps


@pytest.mark.parametrize("ohm", [74.9, 10, 0, -5, math.nan])
def test_a_shorted_pp_line_raises(ohm: float) -> None:
    with pytest.raises(PilotError, match="shorted"):
        cable_capacity_for_resistance(ohm)


# --- cp_state: a burst's high and low levels, judged for plausibility -------------------


@pytest.mark.parametrize(
    ("high", "low", "state"),
    [
        # steady line (no low side judged)
        (12.0, None, EvState.A),
        (13.25, None, EvState.A),
        (10.75, None, EvState.A),
        (9.0, None, EvState.B),
        (10.25, None, EvState.B),
        (7.75, None, EvState.B),
        (6.0, None, EvState.C),
        (7.25, None, EvState.C),
        (4.75, None, EvState.C),
        (3.0, None, EvState.D),
        (1.75, None, EvState.D),
        (4.25, None, EvState.D),
        (1.5, None, EvState.E),
        (0.0, None, EvState.E),
        (-1.5, None, EvState.E),
        (-1.51, None, EvState.F),
        (-12.0, None, EvState.F),
        # positive levels outside every band: implausible
        (13.3, None, None),
        (10.5, None, None),
        (7.5, None, None),
        (4.5, None, None),
        (1.6, None, None),
        (math.nan, None, None),
        # under PWM: the EV's diode holds the low side at -12 V
        (9.0, -12.0, EvState.B),
        (6.0, -10.5, EvState.C),
        (6.0, -10.4, EvState.F),  # diode shorted: the low side follows the EV's resistor
        (6.0, -6.0, EvState.F),
        (9.0, -1.51, EvState.F),
        (9.0, -1.5, None),  # never went negative: the generator's -12 V is gone
        (9.0, 0.0, None),
        (0.0, 0.0, EvState.E),  # a shorted line says nothing about the low side
        (-12.0, -12.0, EvState.F),
        (9.0, math.nan, None),
    ],
)
def test_cp_state(high: float, low: float | None, state: EvState | None) -> None:
    assert cp_state(high, low) is state


@pytest.mark.parametrize(
    ("raws", "running", "stuck"),
    [
        ((0, 0, 0), False, True),
        ((0, 0, 0), True, True),
        ((1023, 1023), True, True),
        ((1023, 1023), False, False),  # a steady +12 V at full scale is healthy
        ((1023, 0, 1023), True, False),
        ((512, 512), True, False),  # one level, not a rail: judged by cp_state
        ((0, 1), False, False),
        ((), True, False),
    ],
)
def test_adc_stuck(raws: tuple[int, ...], running: bool, stuck: bool) -> None:
    assert adc_stuck(raws, pwm_running=running, full_scale=1023) is stuck


@pytest.mark.parametrize(
    ("duty", "run_ms", "gap_us"),
    [(0.1, 1.1, 85.0), (0.5, 1.5, 425.0), (0.96, 1.96, 816.0)],
)
def test_dense_run_needed(duty: float, run_ms: float, gap_us: float) -> None:
    run_s, gap_s = dense_run_needed_s(duty, 1e-3)
    assert run_s * 1e3 == pytest.approx(run_ms) and gap_s * 1e6 == pytest.approx(gap_us)


@pytest.mark.parametrize("duty", [0.0, 1.0])
def test_a_steady_line_needs_no_run(duty: float) -> None:
    assert dense_run_needed_s(duty, 1e-3) == (0.0, math.inf)


@pytest.mark.parametrize(
    ("accepted", "readings", "n", "result"),
    [
        ("C", ["F", "F", "F"], 3, "F"),
        ("C", ["F", "F"], 3, "C"),
        ("C", ["F", "C", "F", "F"], 3, "C"),  # an agreeing reading resets the count
        ("C", ["F", "E", "F", "F"], 3, "C"),  # so does a third value
        ("C", ["F", "E", "E", "E"], 3, "E"),
        ("C", ["F"], 1, "F"),
        (None, ["A", "A"], 2, "A"),
        (None, ["A"], 2, None),
    ],
)
def test_debounce(accepted, readings, n: int, result) -> None:
    assert debounce(accepted, readings, n) == result


def test_debounce_step_reports_the_pending_candidate() -> None:
    assert debounce_step("C", None, 0, "F", 3) == ("C", "F", 1)
    assert debounce_step("C", "F", 1, "F", 3) == ("C", "F", 2)
    assert debounce_step("C", "F", 2, "F", 3) == ("F", None, 0)
    assert debounce_step("C", "F", 2, "C", 3) == ("C", None, 0)
    with pytest.raises(ValueError):
        debounce_step("C", None, 0, "F", 0)
