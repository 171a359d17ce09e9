"""The control pilot's configuration keys: PWM source, chip, channel, root, debounce."""

from __future__ import annotations

from pathlib import Path

import pytest

from chargerd.config import ConfigError, load_config

PI = """
[station]
charge_point_id = "CP-PI-1"
vendor = "v"
model = "m"
connectors = 1

[csms]
url = "ws://127.0.0.1:9000/ocpp"

[hardware]
driver = "pi"
pin_factory = "lgpio"

[[hardware.connector]]
contactor_pin = 17
led = "none"
pilot_pwm_pin = 18
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "chargerd.toml"
    path.write_text(text)
    return load_config(path)


def error_of(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value


def test_defaults_are_the_kernels_pwm0_channel_0(tmp_path: Path) -> None:
    (conn,) = load(tmp_path, PI).hardware.connectors
    p = conn.pilot
    assert (p.pwm, p.pwm_chip, p.pwm_channel, p.pwm_sysfs_root, p.debounce) == (
        "sysfs",
        0,
        0,
        "/sys/class/pwm",
        3,
    )


def test_every_key_is_read(tmp_path: Path) -> None:
    text = PI + (
        'pilot_pwm = "sysfs"\npilot_pwm_chip = 2\npilot_pwm_channel = 2\n'
        'pilot_pwm_sysfs_root = "/run/fake-pwm"\npilot_debounce = 4\n'
    )
    (conn,) = load(tmp_path, text).hardware.connectors
    p = conn.pilot
    assert (p.pwm_chip, p.pwm_channel, p.pwm_sysfs_root, p.debounce) == (
        2,
        2,
        "/run/fake-pwm",
        4,
    )


def test_the_lgpio_fallback_takes_any_free_pin(tmp_path: Path) -> None:
    text = PI.replace("pilot_pwm_pin = 18", 'pilot_pwm_pin = 20\npilot_pwm = "lgpio"')
    (conn,) = load(tmp_path, text).hardware.connectors
    assert conn.pilot.pwm == "lgpio" and conn.pilot.pwm_pin == 20


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ('pilot_pwm = "pigpio"', "pilot_pwm", '"sysfs", "lgpio"'),
        ("pilot_pwm_chip = -1", "pilot_pwm_chip", "from 0 to 63"),
        ("pilot_pwm_channel = 16", "pilot_pwm_channel", "from 0 to 15"),
        ('pilot_pwm_sysfs_root = "sys/class/pwm"', "pilot_pwm_sysfs_root", "an absolute path"),
        ("pilot_debounce = 0", "pilot_debounce", "from 1 to 10"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, extra: str, key: str, expected: str) -> None:
    err = error_of(tmp_path, PI + extra + "\n")
    assert err.key == f"hardware.connector[1].{key}"
    assert expected in str(err)


def test_a_sysfs_pilot_needs_a_hardware_pwm_pin(tmp_path: Path) -> None:
    err = error_of(tmp_path, PI.replace("pilot_pwm_pin = 18", "pilot_pwm_pin = 20"))
    assert err.key == "hardware.connector[1].pilot_pwm_pin"
    assert "hardware PWM (12, 13, 18 or 19)" in str(err)


def test_two_connectors_cannot_share_a_pwm_channel(tmp_path: Path) -> None:
    second = (
        '\n[[hardware.connector]]\ncontactor_pin = 16\nled = "none"\npilot_pwm_pin = 19\n'
        "pilot_cp_channel = 2\npilot_pp_channel = 3\nmeter_unit_id = 2\n"
    )
    text = PI.replace("connectors = 1", "connectors = 2") + second
    err = error_of(tmp_path, text)
    assert err.key == "hardware.connector[2].pilot_pwm_channel"
    assert "pwmchip0 channel 0 is already hardware.connector[1].pilot_pwm_channel" in str(err)
    (one, two) = load(tmp_path, text + "pilot_pwm_channel = 1\n").hardware.connectors
    assert (one.pilot.pwm_channel, two.pilot.pwm_channel) == (0, 1)
