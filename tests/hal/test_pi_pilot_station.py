"""A Pi station on the bench's "mock" pin factory gets an emulated kernel PWM for its pilots."""

from __future__ import annotations

from pathlib import Path

import pytest

from hal.config import (
    ConnectorConfig,
    ContactorConfig,
    HardwareConfig,
    LedConfig,
    PilotConfig,
    ReaderConfig,
)
from hal.interfaces import EvState
from hal.pi.station import open_pi_station


async def test_the_mock_factory_runs_the_pilots_on_an_emulated_sysfs_tree(tmp_path: Path) -> None:
    pytest.importorskip("hal.pi.meter")
    cfg = HardwareConfig(
        driver="pi",
        pin_factory="mock",
        reader=ReaderConfig(kind="none"),
        connectors=(
            ConnectorConfig(),
            ConnectorConfig(
                contactor=ContactorConfig(pin=16),
                led=LedConfig(kind="none", pins=()),
                pilot=PilotConfig(pwm_pin=19, pwm_channel=1, cp_channel=2, pp_channel=3),
                meter_unit_id=2,
            ),
        ),
    )
    station = await open_pi_station(cfg, tmp_path)
    one, two = station.connectors
    pwm = tmp_path / "sysfs-pwm" / "pwmchip0"
    assert (pwm / "pwm0" / "enable").read_text() == "1\n"
    assert (pwm / "pwm1" / "duty_cycle").read_text() == "1000000\n"
    assert await one.pilot.ev_state() is EvState.A  # a square wave with no EV on it
    one.pilot.set_offered_current(16)
    assert (pwm / "pwm0" / "duty_cycle").read_text() == "266666\n"
    assert await one.pilot.ev_state() is EvState.A
    assert await two.pilot.ev_state() is EvState.A
    await station.aclose()
    assert not pwm.exists()
