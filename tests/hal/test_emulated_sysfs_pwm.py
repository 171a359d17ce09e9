"""The sysfs PWM emulation plays the kernel's rules on a directory of real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hal.emulated.sysfs_pwm import SysfsPwmTree


def write(path: Path, value: str) -> None:
    path.write_text(value)


@pytest.fixture
def tree(tmp_path: Path, clock) -> SysfsPwmTree:
    return SysfsPwmTree(tmp_path / "pwm", chips={0: 2}, clock=clock)


def test_the_tree_looks_like_the_kernels(tree: SysfsPwmTree) -> None:
    chip = tree.root / "pwmchip0"
    assert (chip / "npwm").read_text() == "2\n"
    assert (chip / "export").exists() and (chip / "unexport").exists()
    assert not (chip / "pwm0").exists()


def test_export_period_duty_enable_in_order_runs_the_waveform(tree: SysfsPwmTree) -> None:
    chip = tree.root / "pwmchip0"
    for rel, value in (
        ("export", "0"),
        ("pwm0/period", "1000000"),
        ("pwm0/duty_cycle", "250000"),
        ("pwm0/polarity", "normal"),
        ("pwm0/enable", "1"),
    ):
        write(chip / rel, value)
        tree.sync()
    assert tree.violations == []
    state = tree.channel(0, 0)
    assert (state.period_ns, state.duty_ns, state.enabled) == (1_000_000, 250_000, True)
    assert (chip / "pwm0" / "duty_cycle").read_text() == "250000\n"
    assert [state.level_at(t / 1e6) for t in (0, 100, 249, 250, 900, 1000)] == [
        True, True, True, False, False, True,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("writes", "errno_name"),
    [
        ([("pwm0/duty_cycle", "500000")], "EINVAL"),  # duty before any period
        ([("pwm0/enable", "1")], "EINVAL"),  # enable before a period
        ([("pwm0/period", "1000"), ("pwm0/duty_cycle", "5000")], "EINVAL"),  # duty > period
        (
            [("pwm0/period", "1000"), ("pwm0/duty_cycle", "500"), ("pwm0/period", "400")],
            "EINVAL",
        ),  # period below duty
        ([("pwm0/period", "1000"), ("pwm0/enable", "2")], "EINVAL"),
        ([("pwm0/period", "abc")], "EINVAL"),
        ([("pwm0/period", "1000"), ("pwm0/enable", "1"), ("pwm0/polarity", "inversed")], "EBUSY"),
        ([("export", "0")], "EBUSY"),  # exported twice
        ([("export", "7")], "EINVAL"),  # no such channel
    ],
)
def test_the_kernel_refuses_what_it_refuses(
    tree: SysfsPwmTree, writes: list[tuple[str, str]], errno_name: str
) -> None:
    chip = tree.root / "pwmchip0"
    write(chip / "export", "0")
    tree.sync()
    for rel, value in writes:
        write(chip / rel, value)
        tree.sync()
    assert [v.errno_name for v in tree.violations] == [errno_name]
    # The refused value does not stay in the file: a read-back shows the kernel's.
    rel, value = writes[-1]
    if rel.startswith("pwm0/"):
        assert (chip / rel).read_text().strip() != value


def test_export_appears_after_a_moment_and_unexport_removes_it(
    tree: SysfsPwmTree, tmp_path: Path, clock
) -> None:
    slow = SysfsPwmTree(tmp_path / "slow", clock=clock, export_delay_s=0.05)
    chip = slow.root / "pwmchip0"
    write(chip / "export", "1")
    slow.sync()
    assert not (chip / "pwm1").exists()
    clock.t += 0.05
    slow.sync()
    assert (chip / "pwm1" / "period").read_text() == "0\n"
    write(chip / "unexport", "1")
    slow.sync()
    assert not (chip / "pwm1").exists() and not slow.channel(0, 1).exported
    assert slow.violations == []


def test_the_waveform_is_realised_in_clock_ticks(tree: SysfsPwmTree) -> None:
    state = tree.channel(0, 0)
    state.exported, state.period_ns, state.duty_ns, state.enabled = True, 1_000_000, 166_667, True
    assert state.realised_duty_ns == 166_660 and state.duty == pytest.approx(0.16666)
    state.enabled = False
    assert state.level_at(0.0) is False  # a disabled channel idles low


def test_the_thread_mode_judges_every_write_by_the_time_it_stops(tree: SysfsPwmTree) -> None:
    chip = tree.root / "pwmchip0"
    with tree:
        write(chip / "export", "0")
    assert tree.channel(0, 0).exported and tree.violations == []
    assert (chip / "pwm0" / "enable").read_text() == "0\n"
