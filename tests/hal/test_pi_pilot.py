"""GpioPilot on emulated chips: the kernel's PWM sysfs tree it writes, the MCP3008 it reads.

The PWM is a directory of real files judged by hal.emulated.sysfs_pwm after every
write (its ``sync`` is the driver's ``settle`` hook); the CP line is
hal.emulated.mcp3008.CpLine, a square wave in time read at the instant of each
conversion.  Nothing here sleeps: the ADC's clock moves on with every transfer.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from hal.config import PilotConfig
from hal.emulated.mcp3008 import CpLine, Mcp3008, Mcp3008MockFactory, SimClock
from hal.emulated.sysfs_pwm import SysfsPwmTree
from hal.errors import PilotError
from hal.interfaces import EvState, Fault, Pilot
from hal.pi.pilot import GpioPilot
from hal.pilot_math import current_for_duty

CP, PP = 0, 1


def pp(ohm: float, pullup: float = 1000.0) -> float:
    return ohm / (ohm + pullup)


class Rig:
    """A pilot on an emulated kernel PWM and MCP3008, sharing one simulated clock."""

    def __init__(self, tmp_path: Path, **pilot_kw) -> None:
        self.clock = SimClock(rng=random.Random(7))
        self.tree = SysfsPwmTree(tmp_path / "pwm", clock=self.clock)
        self.factory = Mcp3008MockFactory(clock=self.clock, on_transfer=self.clock.transfer)
        self.adc: Mcp3008 = self.factory.adc(1)
        self.pwm = self.tree.channel(0, 0)
        self.line = CpLine(self.pwm)
        self.adc.set_source(CP, self.line)
        self.adc.set_channel(PP, 1.0)
        self.cfg = PilotConfig(pwm_sysfs_root=str(self.tree.root), **pilot_kw)
        self.pilot = GpioPilot(
            self.cfg, pin_factory=self.factory, clock=self.clock, settle=self.tree.sync
        )

    def close(self) -> None:
        self.pilot.release()
        self.factory.close()


@pytest.fixture
def rig(tmp_path: Path):
    rig = Rig(tmp_path)
    yield rig
    rig.close()


# --- PWM through the kernel's sysfs --------------------------------------------------


def test_starts_at_a_steady_12_v_offering_nothing_in_the_kernels_order(rig: Rig) -> None:
    assert isinstance(rig.pilot, Pilot)
    assert rig.tree.violations == []
    assert rig.tree.writes == [
        ("pwmchip0/export", "0"),
        ("pwmchip0/pwm0/period", "1000000"),
        ("pwmchip0/pwm0/duty_cycle", "1000000"),
        ("pwmchip0/pwm0/enable", "1"),
    ]
    assert (rig.pwm.period_ns, rig.pwm.duty_ns, rig.pwm.enabled) == (1_000_000, 1_000_000, True)
    assert rig.pilot.offered_current_a is None


def test_offered_current_is_exact_to_0_1_a_over_6_to_80_a_at_1_khz(rig: Rig) -> None:
    """Every 0.1 A from 6 to 80 A: the duty the hardware realises, against the formula.

    The error is the current the realised duty codes by the formula's own branch
    (the EVSE's duty = I / 0.6 up to 51 A, I / 2.5 + 64 above).  An EV decoding with
    its table reads 51..52.5 A as less (the standard's two formulas overlap
    there), never as more.
    """
    worst = 0.0
    for tenth in range(60, 801):
        amps = tenth / 10
        rig.pilot.set_offered_current(amps)
        low_range = amps <= 51
        formula = amps / 0.6 if low_range else amps / 2.5 + 64  # IEC 61851-1, percent
        percent = rig.pwm.duty * 100
        assert percent == pytest.approx(formula, abs=0.002)
        coded = percent * 0.6 if low_range else (percent - 64) * 2.5
        worst = max(worst, abs(amps - coded))
        read_back = current_for_duty(rig.pwm.duty)
        assert read_back is not None and read_back <= amps + 1e-9  # never more than offered
        assert abs(1e9 / rig.pwm.realised_period_ns - 1000.0) <= 5.0  # 1 kHz +/- 0.5 %
    assert worst <= 0.1
    assert rig.tree.violations == []


@pytest.mark.parametrize("amps", [None, 0])
def test_none_or_zero_returns_to_100_percent(rig: Rig, amps: float | None) -> None:
    rig.pilot.set_offered_current(32)
    rig.pilot.set_offered_current(amps)
    assert rig.pwm.duty_ns == rig.pwm.period_ns and rig.pilot.offered_current_a is None


@pytest.mark.parametrize("amps", [5, 81, float("nan")])
def test_an_impossible_current_leaves_the_line_alone(rig: Rig, amps: float) -> None:
    rig.pilot.set_offered_current(16)
    with pytest.raises(ValueError):
        rig.pilot.set_offered_current(amps)
    assert rig.pilot.offered_current_a == 16 and rig.pwm.duty_ns == 266_666


def test_release_leaves_the_line_steady_high_and_the_channel_exported(rig: Rig) -> None:
    rig.pilot.set_offered_current(32)
    rig.pilot.release()
    assert rig.pwm.exported and rig.pwm.enabled and rig.pwm.duty_ns == rig.pwm.period_ns
    with pytest.raises(PilotError, match="released"):
        rig.pilot.set_offered_current(16)
    # The SPI port is free again: the same wiring opens again.
    again = GpioPilot(rig.cfg, pin_factory=rig.factory, clock=rig.clock, settle=rig.tree.sync)
    again.release()
    assert rig.tree.violations == []


def test_a_channel_left_running_by_a_crash_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tree = SysfsPwmTree(tmp_path / "pwm")
    chip = tree.root / "pwmchip0"
    for rel, value in (
        ("export", "0"),
        ("pwm0/period", "2000000"),
        ("pwm0/duty_cycle", "1500000"),
        ("pwm0/enable", "1"),
        ("pwm0/enable", "0"),
        ("pwm0/polarity", "inversed"),
        ("pwm0/enable", "1"),
    ):
        (chip / rel).write_text(value)
        tree.sync()
    factory = Mcp3008MockFactory()
    with caplog.at_level(logging.WARNING):
        pilot = GpioPilot(
            PilotConfig(pwm_sysfs_root=str(tree.root)), pin_factory=factory, settle=tree.sync
        )
    assert "taking it over" in caplog.text
    state = tree.channel(0, 0)
    assert (state.period_ns, state.duty_ns, state.polarity, state.enabled) == (
        1_000_000,
        1_000_000,
        "normal",
        True,
    )
    # No export (EBUSY), the polarity changed while disabled, duty lowered before the period.
    assert tree.violations == []
    pilot.release()
    factory.close()


def test_the_channel_appears_a_moment_after_export(tmp_path: Path, clock) -> None:
    tree = SysfsPwmTree(tmp_path / "pwm", clock=clock, export_delay_s=0.05)
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock.t += s

    from hal.pi.sysfs_pwm import SysfsPwmOutput

    out = SysfsPwmOutput(tree.root, settle=tree.sync, clock=clock, sleep=sleep)
    assert 0.04 <= sum(slept) <= 0.07 and tree.violations == []
    out.duty = 0.5
    assert tree.channel(0, 0).duty_ns == 500_000
    out.close()


def test_a_channel_that_never_becomes_writable_is_a_clear_error(tmp_path: Path, clock) -> None:
    from hal.pi.sysfs_pwm import SysfsPwmOutput

    tree = SysfsPwmTree(tmp_path / "pwm", clock=clock, export_delay_s=99.0)

    def sleep(s: float) -> None:
        clock.t += s

    with pytest.raises(PilotError, match="gpio group"):
        SysfsPwmOutput(tree.root, settle=tree.sync, clock=clock, sleep=sleep, export_timeout_s=1)


def test_no_pwm_chip_names_the_overlay_and_what_is_there(tmp_path: Path) -> None:
    tree = SysfsPwmTree(tmp_path / "pwm", chips={2: 4})
    factory = Mcp3008MockFactory()
    with pytest.raises(PilotError, match=r"pwmchip2 \(4 channels\).*dtoverlay=pwm,pin=18,func=2"):
        GpioPilot(PilotConfig(pwm_sysfs_root=str(tree.root)), pin_factory=factory)
    with pytest.raises(PilotError, match="has 4 channel"):
        GpioPilot(
            PilotConfig(pwm_sysfs_root=str(tmp_path / "pwm"), pwm_chip=2, pwm_channel=5),
            pin_factory=factory,
        )
    assert factory.pins == {}  # nothing claimed
    factory.close()


def test_the_lgpio_fallback_warns_and_drives_the_pin(caplog: pytest.LogCaptureFixture) -> None:
    factory = Mcp3008MockFactory()
    factory.adc(1).set_channel(CP, 1.0)
    with caplog.at_level(logging.WARNING):
        pilot = GpioPilot(PilotConfig(pwm="lgpio"), pin_factory=factory)
    assert "whole percent" in caplog.text
    line = factory.pin(18)
    assert line.frequency == 1000 and line.state == 1.0
    pilot.set_offered_current(16)
    assert line.state == pytest.approx(16 / 60)
    pilot.release()
    assert line.function == "input"
    factory.close()


# --- EV states from the CP line ---------------------------------------------------------


@pytest.mark.parametrize("state", ["A", "B", "C", "D", "E"])
async def test_steady_line_states(rig: Rig, state: str) -> None:
    rig.line.plug(state)
    assert await rig.pilot.ev_state() is EvState(state)


@pytest.mark.parametrize("amps", [6, 10, 16, 32, 51, 63, 80])
@pytest.mark.parametrize("state", ["A", "B", "C", "D"])
async def test_under_pwm_the_high_side_codes_the_state(rig: Rig, amps: float, state: str) -> None:
    rig.line.plug(state)
    rig.pilot.set_offered_current(amps)
    for _ in range(20):  # at random phases
        assert await rig.pilot.ev_state() is EvState(state)
    assert rig.pilot.faults() == frozenset()


async def test_a_state_change_is_accepted_within_one_call_after_n_agreeing_bursts(
    rig: Rig,
) -> None:
    rig.line.plug("B")
    rig.pilot.set_offered_current(6)
    assert await rig.pilot.ev_state() is EvState.B
    rig.line.plug("C")
    bursts = rig.pilot.bursts
    assert await rig.pilot.ev_state() is EvState.C
    assert rig.pilot.bursts - bursts == rig.cfg.debounce


async def test_one_odd_burst_changes_nothing(rig: Rig) -> None:
    rig.line.plug("C")
    rig.pilot.set_offered_current(6)
    assert await rig.pilot.ev_state() is EvState.C
    healthy = rig.line

    def glitch(t: float, start=rig.clock.now) -> float:
        # 2 ms of a shorted line: one burst sees it, the next ones do not.
        return 0.5 if t - start < 0.002 else healthy(t)

    rig.adc.set_source(CP, glitch)
    assert await rig.pilot.ev_state() is EvState.C
    assert rig.pilot.faults() == frozenset()


async def test_a_shorted_diode_is_f(rig: Rig) -> None:
    rig.line.plug("C")
    rig.pilot.set_offered_current(32)
    rig.line.short_diode()
    assert await rig.pilot.ev_state() is EvState.F
    assert rig.pilot.faults() == {Fault.EV_ERROR}
    rig.line.plug("C")
    assert await rig.pilot.ev_state() is EvState.C
    assert rig.pilot.faults() == frozenset()


async def test_ev_error_logs_once(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.line.plug("E")
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert await rig.pilot.ev_state() is EvState.E
        rig.line.plug("B")
        assert await rig.pilot.ev_state() is EvState.B
    assert caplog.text.count("EV state E") == 1 and "error cleared" in caplog.text


# --- PILOT_FAILURE from plausibility ------------------------------------------------------


async def expect_failure(rig: Rig, match: str) -> None:
    with pytest.raises(PilotError, match=match):
        await rig.pilot.ev_state()
    assert Fault.PILOT_FAILURE in rig.pilot.faults()


async def test_no_minus_12_v_while_the_pwm_runs_is_a_pilot_failure(rig: Rig) -> None:
    rig.line.plug("B")
    rig.pilot.set_offered_current(16)
    assert await rig.pilot.ev_state() is EvState.B
    rig.line.lose_negative_supply()
    await expect_failure(rig, "implausible CP")
    rig.line = CpLine(rig.pwm)
    rig.line.plug("B")
    rig.adc.set_source(CP, rig.line)
    assert await rig.pilot.ev_state() is EvState.B
    assert rig.pilot.faults() == frozenset()


@pytest.mark.parametrize("raw", [0, 1023])
async def test_an_adc_stuck_at_a_rail_is_a_pilot_failure(rig: Rig, raw: int) -> None:
    rig.line.plug("C")
    rig.pilot.set_offered_current(16)
    assert await rig.pilot.ev_state() is EvState.C
    rig.adc.stick(raw)
    await expect_failure(rig, "MCP3008 does not answer|every conversion")


@pytest.mark.parametrize("raw", [0, 1023])
async def test_a_dead_adc_is_caught_on_a_steady_line_too(rig: Rig, raw: int) -> None:
    """No EV, no PWM: +12 V is full scale, so a healthy line reads 1023 too (null bit low)."""
    assert await rig.pilot.ev_state() is EvState.A
    rig.adc.stick(raw)
    await expect_failure(rig, "MCP3008 does not answer|every conversion")


@pytest.mark.parametrize("high_v", [10.5, 7.5, 4.5, 1.6])
async def test_a_positive_level_between_the_bands_is_a_pilot_failure(
    rig: Rig, high_v: float
) -> None:
    rig.line.set_levels(high_v, -12.0)
    await expect_failure(rig, "implausible CP")


async def test_a_dead_spi_bus_raises_and_stands_as_pilot_failure(rig: Rig) -> None:
    rig.adc.disconnect()
    await expect_failure(rig, "CP read on MCP3008 CE1 failed")
    rig.adc.reconnect()
    rig.line.plug("B")
    assert await rig.pilot.ev_state() is EvState.B
    assert rig.pilot.faults() == frozenset()


async def test_custom_front_end_scaling(tmp_path: Path) -> None:
    rig = Rig(tmp_path, cp_offset_v=-13.0, cp_span_v=26.0)
    rig.line.offset_v, rig.line.span_v = -13.0, 26.0
    rig.line.plug("B")
    rig.pilot.set_offered_current(10)
    assert await rig.pilot.ev_state() is EvState.B
    rig.close()


# --- proximity pilot ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ohm", "amps"), [(1500, 13), (680, 20), (220, 32), (100, 63), (1e7, None)]
)
async def test_cable_capacity_from_the_pp_divider(rig: Rig, ohm: float, amps: int | None) -> None:
    rig.adc.set_channel(PP, pp(ohm))
    assert await rig.pilot.cable_capacity_a() == amps


async def test_a_shorted_pp_line_raises_until_it_reads_again(rig: Rig) -> None:
    rig.adc.set_channel(PP, 0.0)
    with pytest.raises(PilotError, match="shorted"):
        await rig.pilot.cable_capacity_a()
    assert Fault.PILOT_FAILURE in rig.pilot.faults()
    rig.adc.set_channel(PP, pp(220))
    assert await rig.pilot.cable_capacity_a() == 32
    assert rig.pilot.faults() == frozenset()


async def test_a_tethered_cable_has_no_pp_channel(tmp_path: Path) -> None:
    rig = Rig(tmp_path, pp_channel=None)
    transfers = rig.adc.transfers
    assert await rig.pilot.cable_capacity_a() is None
    assert rig.adc.transfers == transfers
    rig.close()


async def test_two_connectors_share_one_adc(tmp_path: Path) -> None:
    clock = SimClock()
    tree = SysfsPwmTree(tmp_path / "pwm", clock=clock)
    factory = Mcp3008MockFactory(clock=clock, on_transfer=clock.transfer)
    adc = factory.adc(1)
    one = GpioPilot(
        PilotConfig(pwm_sysfs_root=str(tree.root), cp_channel=0, pp_channel=1),
        pin_factory=factory,
        clock=clock,
        settle=tree.sync,
    )
    two = GpioPilot(
        PilotConfig(pwm_sysfs_root=str(tree.root), pwm_channel=1, cp_channel=2, pp_channel=3),
        pin_factory=factory,
        clock=clock,
        settle=tree.sync,
    )
    line_one, line_two = CpLine(tree.channel(0, 0)), CpLine(tree.channel(0, 1))
    line_two.plug("C")
    adc.set_source(0, line_one)
    adc.set_source(2, line_two)
    adc.set_channel(1, 1.0)
    adc.set_channel(3, pp(680))
    two.set_offered_current(20)
    assert await one.ev_state() is EvState.A and await one.cable_capacity_a() is None
    assert await two.ev_state() is EvState.C and await two.cable_capacity_a() == 20
    assert tree.channel(0, 0).duty == 1.0
    assert tree.channel(0, 1).duty == pytest.approx(1 / 3, abs=1e-5)
    one.release()
    two.release()
    factory.close()


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (PermissionError(13, "Permission denied"), "gpio group"),
        (OSError(30, "Read-only file system"), "ReadWritePaths"),
    ],
)
def test_a_chip_we_may_not_write_says_what_to_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, hint: str
) -> None:
    """As a Pi without the gpio group, or under a unit that left /sys read-only, shows it."""
    tree = SysfsPwmTree(tmp_path / "pwm")
    real_write = Path.write_text

    def write_text(self: Path, data: str, *args, **kwargs) -> int:
        if self.name == "export":
            raise error
        return real_write(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    factory = Mcp3008MockFactory()
    with pytest.raises(PilotError, match=hint):
        GpioPilot(PilotConfig(pwm_sysfs_root=str(tree.root)), pin_factory=factory)
    factory.close()
