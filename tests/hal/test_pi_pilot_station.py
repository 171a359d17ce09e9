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
from hal.emulated.mcp3008 import Mcp3008MockFactory
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
    factory = Mcp3008MockFactory()
    station = await open_pi_station(cfg, tmp_path, pin_factory=factory)
    one, two = station.connectors
    pwm = tmp_path / "sysfs-pwm" / "pwmchip0"
    assert (pwm / "pwm0" / "enable").read_text() == "1\n"
    assert (pwm / "pwm1" / "duty_cycle").read_text() == "1000000\n"
    assert await one.pilot.ev_state() is EvState.A  # a square wave with no EV on it
    one.pilot.set_offered_current(16)
    assert (pwm / "pwm0" / "duty_cycle").read_text() == "266666\n"
    assert await one.pilot.ev_state() is EvState.A
    assert await two.pilot.ev_state() is EvState.A
    # The bench plugs an EV through the emulation the station set up.
    assert factory.pwm_tree.channel(0, 0).duty == pytest.approx(0.26666)
    factory.adc(1).source(0).plug("C")
    # Real time here, as on a Pi: a preempted burst can delay the change by a poll or two.
    states = [await one.pilot.ev_state() for _ in range(5)]
    assert EvState.C in states and states[-1] is EvState.C
    await station.aclose()
    assert not pwm.exists()
    factory.close()
