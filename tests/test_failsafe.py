"""Fail safe from power-on to death: hardware first at start, safe outputs after any end,
no active-low contactor without the pull that makes it safe."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from chargerd.config import ConfigError, load_config
from chargerd.daemon import Daemon, main
from chargerd.failsafe import safe_outputs_main
from hal.config import ContactorConfig, ReaderConfig
from hal.emulated.mcp3008 import Mcp3008MockFactory
from hal.errors import HardwareConfigError
from hal.pi.contactor import GpioContactor
from hal.pi.safe_outputs import drive_safe

PI = """\
[station]
charge_point_id = "CP-PI-1"
vendor = "v"
model = "m"
connectors = 1

[csms]
url = "ws://127.0.0.1:9/ocpp"
security_profile = 0

[paths]
state_dir = "{state}"
control_socket = "{state}/control.sock"

[hardware]
driver = "pi"
pin_factory = "mock"

[hardware.reader]
kind = "none"

[hardware.meter_bus]
transport = "tcp"
host = "127.0.0.1"
tcp_port = 9

[[hardware.connector]]
contactor_pin = 17
{contactor}
lock = "motor"
lock_pins = [22, 23]
lock_sense_pin = 24
led = "single"
led_pins = [5]
pilot_pwm_pin = 18
"""


def pi_config(tmp_path: Path, contactor: str = "") -> Path:
    path = tmp_path / "chargerd.toml"
    path.write_text(PI.format(state=tmp_path / "state", contactor=contactor))
    return path


# -- an active-low contactor needs the pull-up that keeps it open ----------------------------


def test_an_active_low_contactor_is_refused_without_a_declared_pull_up(tmp_path):
    path = pi_config(tmp_path, "contactor_active_high = false")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "hardware.connector[1].contactor_active_high"
    assert 'contactor_hardware_pull = "up"' in str(info.value)


def test_check_config_refuses_it_in_one_line(tmp_path, capsys):
    path = pi_config(tmp_path, "contactor_active_high = false")
    assert main(["--check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "active-low contactor driver closes" in err


def test_an_active_low_contactor_with_its_pull_up_is_accepted(tmp_path):
    path = pi_config(tmp_path, 'contactor_active_high = false\ncontactor_hardware_pull = "up"')
    cfg = load_config(path)
    assert cfg.hardware.connectors[0].contactor.hardware_pull == "up"


def test_a_pull_up_on_an_active_high_driver_is_refused(tmp_path):
    path = pi_config(tmp_path, 'contactor_hardware_pull = "up"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "hardware.connector[1].contactor_hardware_pull"
    assert "wire a pull-down" in str(info.value)


def test_the_driver_refuses_an_unsafe_pull_too():
    factory = MockFactory()
    try:
        with pytest.raises(HardwareConfigError, match="active-low"):
            GpioContactor(ContactorConfig(pin=17, active_high=False), pin_factory=factory)
        assert 17 not in [p.info.name for p in factory.pins.values() if p.function == "output"]
    finally:
        factory.close()


def test_the_shipped_sample_declares_the_pull():
    text = Path(__file__).resolve().parents[1].joinpath("etc/chargerd.toml").read_text()
    assert 'contactor_hardware_pull = "down"' in text


# -- hardware first at start -----------------------------------------------------------------


async def test_a_failing_store_leaves_the_contactor_open(tmp_path, monkeypatch):
    """The outputs are claimed and driven safe before the store opens; when it fails the
    contactor that a previous process left energised is open and stays so."""
    cfg = load_config(pi_config(tmp_path))
    factory = Mcp3008MockFactory()
    coil = factory.pin(17)
    coil.function = "output"
    coil.state = True  # what a process killed mid-charge left on the line
    monkeypatch.setattr("hal.pi.station.make_pin_factory", lambda name: factory)
    seen: dict[str, object] = {}

    def failing_open(path, **kw):
        seen["coil_at_store_open"] = coil.state
        raise OSError(f"disk I/O error opening {path}")

    monkeypatch.setattr("chargerd.store.Store.open", failing_open)
    daemon = Daemon(cfg)
    with pytest.raises(OSError, match="disk I/O error"):
        await daemon.run()
    assert seen == {"coil_at_store_open": 0}  # driven open before the store was touched
    assert not coil.state


def test_a_store_failure_at_start_is_one_line_without_traceback(tmp_path, capsys, monkeypatch):
    def failing_open(path, **kw):
        raise OSError(f"disk I/O error opening {path}")

    monkeypatch.setattr("chargerd.store.Store.open", failing_open)
    rc = main(["--config", str(pi_config(tmp_path))])
    err = capsys.readouterr().err
    assert rc == 2  # a start-up error, like a configuration error (chargerd.startup)
    assert err.splitlines()[-1].startswith("chargerd: cannot start: OSError: disk I/O error")
    assert "Traceback" not in err


# -- after any end: ExecStopPost=chargerd --safe-outputs -------------------------------------


def test_safe_outputs_drives_a_line_left_energised_back_to_open():
    cfg = load_config_for_drive()
    factory = MockFactory()
    try:
        for pin in (17, 22):
            line = factory.pin(pin)
            line.function = "output"
            line.state = True  # coil energised, lock motor running: the process died so
        done, held = drive_safe(cfg, pin_factory=factory)
        assert factory.pin(17).state is False and factory.pin(17).function == "output"
        assert factory.pin(22).state is False and factory.pin(23).state is False
        assert done[0] == "GPIO17 low (connector 1 contactor)"
        assert len(held) == 3
    finally:
        factory.close()


def test_safe_outputs_drives_an_active_low_contactor_high():
    cfg = load_config_for_drive(active_high=False)
    factory = MockFactory()
    try:
        done, _held = drive_safe(cfg, pin_factory=factory)
        assert factory.pin(17).state is True
        assert done[0] == "GPIO17 high (connector 1 contactor)"
    finally:
        factory.close()


def load_config_for_drive(*, active_high: bool = True):
    from hal.config import ConnectorConfig, HardwareConfig, LockConfig

    contactor = ContactorConfig(
        pin=17, active_high=active_high, hardware_pull="down" if active_high else "up"
    )
    lock = LockConfig(kind="motor", pins=(22, 23), sense_pin=24)
    return HardwareConfig(
        driver="pi",
        connectors=(ConnectorConfig(contactor=contactor, lock=lock),),
        reader=ReaderConfig(kind="none"),
    )


def test_safe_outputs_command_on_the_mock_factory(tmp_path, capsys):
    cfg = load_config(pi_config(tmp_path))
    assert safe_outputs_main(cfg, exit_holding=False) == 0
    out = capsys.readouterr().out
    assert out.startswith("chargerd: outputs driven safe: GPIO17 low (connector 1 contactor)")


def test_safe_outputs_as_a_process_exits_0_and_says_what_it_did(tmp_path):
    """What the unit runs: the process ends holding the lines (no clean-up to floating)."""
    path = pi_config(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "chargerd.daemon", "--safe-outputs", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "outputs driven safe: GPIO17 low" in proc.stdout


def test_safe_outputs_without_a_writable_directory_for_lgpio_refuses_in_one_line(tmp_path):
    """Under the unit's conditions gone wrong (LG_WD not writable): one line, exit 1."""
    path = tmp_path / "chargerd.toml"
    path.write_text(
        PI.format(state="/proc/chargerd-state", contactor="").replace(
            'pin_factory = "mock"', 'pin_factory = "lgpio"'
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "chargerd.daemon", "--safe-outputs", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/proc",
        env={"PATH": "/usr/bin:/bin", "LG_WD": "/proc", "PYTHONPATH": _repo()},
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "LG_WD=/proc is not a writable directory" in proc.stderr


def _repo() -> str:
    return str(Path(__file__).resolve().parents[1])


def test_the_mock_driver_has_nothing_to_drive(tmp_path, capsys):
    path = tmp_path / "bench.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [station]
            charge_point_id = "CP-B"
            vendor = "v"
            model = "m"
            [csms]
            url = "ws://127.0.0.1:9/ocpp"
            security_profile = 0
            [paths]
            state_dir = "{tmp_path}"
            [hardware]
            driver = "mock"
            """
        )
    )
    assert main(["--safe-outputs", "--config", str(path)]) == 0
    assert "no outputs to drive" in capsys.readouterr().out
