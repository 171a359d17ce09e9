"""[hardware] tamper_pin / tamper_active_high: the enclosure's switch, checked like any pin."""

from __future__ import annotations

from pathlib import Path

import pytest

from chargerd.config import load_config
from tests.test_config import BENCH, PI, error_of, write


def _with_tamper(base: str, lines: str) -> str:
    return base.replace("[hardware]\n", f"[hardware]\n{lines}", 1)


def test_no_switch_by_default_and_the_keys_read(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, PI)).hardware.tamper.pin is None
    cfg = load_config(
        write(tmp_path, _with_tamper(PI, "tamper_pin = 16\ntamper_active_high = false\n"))
    )
    assert (cfg.hardware.tamper.pin, cfg.hardware.tamper.active_high) == (16, False)
    assert (
        load_config(write(tmp_path, _with_tamper(BENCH, "tamper_pin = 16\n"))).hardware.tamper.pin
        == 16
    )


@pytest.mark.parametrize(
    ("lines", "key", "expected"),
    [
        ("tamper_pin = 10\n", "hardware.tamper_pin", "SPI0"),
        ("tamper_pin = 99\n", "hardware.tamper_pin", "expected"),
        (
            "tamper_pin = 16\ntamper_active_high = 1\n",
            "hardware.tamper_active_high",
            "true or false",
        ),
        # the connector's contactor is on 17: the clash is named on the connector's key
        ("tamper_pin = 17\n", "hardware.connector[1].contactor_pin", "hardware.tamper_pin"),
    ],
)
def test_mistakes(tmp_path: Path, lines: str, key: str, expected: str) -> None:
    err = error_of(write(tmp_path, _with_tamper(PI, lines)))
    assert err.key == key
    assert expected in str(err)
