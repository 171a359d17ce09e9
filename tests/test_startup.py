"""What --check-config passes must start; what it refuses, the start refuses with the same line.

Walks every key of the configuration schema (the keys of a complete file, one
connector table included) with a wrong value and runs both commands on it:
``chargerd --check-config FILE`` and ``chargerd --config FILE``.  Both must
exit 2 with one and the same line on stderr, naming the key, and no
traceback.  Then the cases that only a start used to trip on (a state_dir that
is a file, a log_file that is a directory, ev_phases = 2, the Pi libraries
missing, rst_pin on a chip select, [ocpp] values out of bounds) run against the
real daemon process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from chargerd import daemon

SCHEMA: dict[str, Any] = {
    "station": {
        "charge_point_id": "CP-START-1",
        "vendor": "chargerd",
        "model": "startup",
        "serial_number": "S-1",
        "firmware_version": "0.1.0",
        "connectors": 1,
        "max_current_a": 32.0,
    },
    "csms": {
        "url": "ws://127.0.0.1:9",
        "security_profile": 0,
        "call_timeout_s": 30.0,
        "max_frame_bytes": 65536,
    },
    "paths": {"state_dir": "state", "control_socket": "ctl.sock", "log_file": "log/chargerd.log"},
    "logging": {"level": "INFO"},
    "hardware": {
        "driver": "mock",
        "pin_factory": "mock",
        "reader": {
            "kind": "rc522",
            "spi_bus": 0,
            "spi_device": 0,
            "rst_pin": 25,
            "poll_interval_s": 0.1,
        },
        "meter_bus": {
            "transport": "rtu",
            "port": "/dev/ttyUSB0",
            "baudrate": 9600,
            "parity": "N",
            "stopbits": 1,
            "host": "127.0.0.1",
            "tcp_port": 502,
            "timeout_s": 1.0,
        },
        "mock": {
            "voltage_v": 230.0,
            "ev_max_current_a": 32.0,
            "ev_phases": 3,
            "cable_capacity_a": 32,
            "frequency_hz": 50.0,
            "lock": True,
        },
        "connector": [
            {
                "contactor_pin": 17,
                "contactor_active_high": True,
                "contactor_feedback_pin": 27,
                "contactor_feedback_active_high": True,
                "contactor_settle_s": 0.1,
                "lock": "motor",
                "lock_pins": [22, 23],
                "lock_sense_pin": 24,
                "lock_sense_active_high": True,
                "lock_pulse_s": 0.3,
                "led": "rgb",
                "led_pins": [5, 6, 13],
                "led_active_high": True,
                "pilot_pwm_pin": 18,
                "pilot_adc_device": 1,
                "pilot_cp_channel": 0,
                "pilot_pp_channel": 1,
                "pilot_cp_offset_v": -12.0,
                "pilot_cp_span_v": 24.0,
                "pilot_pp_pullup_ohm": 1000.0,
                "meter_model": "sdm630",
                "meter_unit_id": 1,
            }
        ],
    },
    "ocpp": {
        "HeartbeatInterval": 300,
        "MeterValueSampleInterval": 60,
        "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import",
        "ClockAlignedDataInterval": 900,
        "LocalPreAuthorize": True,
    },
}


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Enough TOML for the schema: scalars first, then tables, then arrays of tables."""
    lines: list[str] = []
    subs: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value is not EMPTY_TABLE:
            subs.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            subs.append((key, value))
        else:
            lines.append(f"{key} = {_value({} if value is EMPTY_TABLE else value)}")
    text = "\n".join(lines) + "\n"
    for key, value in subs:
        name = f"{prefix}{key}"
        if isinstance(value, list):
            for table in value:
                text += f"\n[[{name}]]\n" + to_toml(table, f"{name}.")
        else:
            text += f"\n[{name}]\n" + to_toml(value, f"{name}.")
    return text


EMPTY_TABLE: dict = {}  # an inline table where a value belongs: wrong for every key


def leaf_paths(data: dict[str, Any], prefix: tuple = ()) -> list[tuple]:
    out: list[tuple] = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += leaf_paths(value, (*prefix, key))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out += leaf_paths(value[0], (*prefix, key, 0))
        else:
            out.append((*prefix, key))
    return out


def mutated(path: tuple, value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(SCHEMA))
    node = data
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    node[path[-1]] = value
    return data


def schema_keys() -> list[tuple]:
    """Every key the loader reads, SCHEMA's and any added since: each getter marks its key.

    Loads SCHEMA once with ``_Table.finish`` recording what each table asked
    for, so a key another module adds to chargerd/config.py is walked too
    without being listed here.
    """
    from chargerd import config

    seen: list[tuple[str, set[str]]] = []
    finish = config._Table.finish

    def recording(self) -> None:
        seen.append((self.prefix, set(self.used)))
        finish(self)

    config._Table.finish = recording  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config.load_config(write(Path(tmp), SCHEMA))
    finally:
        config._Table.finish = finish  # type: ignore[method-assign]
    tables = {prefix for prefix, _ in seen}
    found = set(leaf_paths(SCHEMA))
    for prefix, used in seen:
        path: tuple = ()
        for part in prefix.split(".") if prefix else []:
            name, _, index = part.partition("[")
            path += (name, int(index.rstrip("]")) - 1) if index else (name,)
        for key in used:
            full = f"{prefix}.{key}" if prefix else key
            if full in tables or any(t.startswith(f"{full}[") for t in tables) or full == "ocpp":
                continue  # a table, walked through its own keys
            found.add((*path, key))
    return sorted(found, key=keypath)


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    file = tmp_path / "chargerd.toml"
    file.write_text(to_toml(data))
    return file


def keypath(path: tuple) -> str:
    parts = [f"[{p + 1}]" if isinstance(p, int) else f".{p}" for p in path]
    return "".join(parts).lstrip(".")


def in_process(argv: list[str], capsys) -> tuple[int, str]:
    status = daemon.main(argv)
    err = capsys.readouterr().err
    return status, err


@pytest.fixture
def no_daemon(monkeypatch):
    """A start that gets past the checks would run the daemon: fail instead of hanging."""

    async def refuse(self):
        raise AssertionError("the daemon started although --check-config refused the file")

    monkeypatch.setattr(daemon.Daemon, "run", refuse)


def test_the_complete_file_is_accepted(tmp_path, capsys):
    status, err = in_process(["--check-config", str(write(tmp_path, SCHEMA))], capsys)
    assert (status, err) == (0, "")


@pytest.mark.parametrize("path", schema_keys(), ids=keypath)
def test_every_key_with_a_wrong_value_is_refused_alike_by_both_commands(
    tmp_path, capsys, no_daemon, path
):
    file = write(tmp_path, mutated(path, EMPTY_TABLE))
    checked = in_process(["--check-config", str(file)], capsys)
    started = in_process(["--config", str(file)], capsys)
    assert checked == started
    status, err = checked
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"chargerd: {file}: {keypath(path)}")
    assert not (tmp_path / "state").exists(), "a refused start must not create its state"


# -- what only a start used to trip on: the real daemon process -------------------------


def run_both(file: Path) -> tuple[tuple[int, str], tuple[int, str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results = []
    for flag in ("--check-config", "--config"):
        proc = subprocess.run(
            [sys.executable, "-m", "chargerd.daemon", flag, str(file)],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        results.append((proc.returncode, proc.stderr))
    return results[0], results[1]


def _missing_factory() -> str | None:
    """A pin factory whose library this machine lacks (lgpio is a dev dependency now)."""
    for factory, module in (("lgpio", "lgpio"), ("pigpio", "pigpio"), ("rpigpio", "RPi")):
        if importlib.util.find_spec(module) is None:
            return factory
    return None


def _case(tmp_path: Path, name: str) -> tuple[Path, str]:
    """A file with one start-up problem, and the beginning of its message after the file."""
    data = json.loads(json.dumps(SCHEMA))
    if name == "state_dir is a file":
        (tmp_path / "state").write_text("not a directory")
        return write(tmp_path, data), "paths.state_dir: "
    if name == "state_dir under a file":
        (tmp_path / "blocker").write_text("")
        data["paths"]["state_dir"] = "blocker/state"
        return write(tmp_path, data), "paths.state_dir: "
    if name == "log_file is a directory":
        (tmp_path / "log" / "chargerd.log").mkdir(parents=True)
        return write(tmp_path, data), "paths.log_file: "
    if name == "ev_phases 2":
        data["hardware"]["mock"]["ev_phases"] = 2
        return write(tmp_path, data), "hardware.mock.ev_phases: found 2, expected one of 1, 3"
    if name == "rst_pin on CE0":
        data["hardware"]["reader"]["rst_pin"] = 8
        return write(tmp_path, data), "hardware.reader.rst_pin: found 8"
    if name == "driver pi without the libraries":
        data["hardware"]["driver"] = "pi"
        data["hardware"]["pin_factory"] = _missing_factory()
        return write(tmp_path, data), "hardware.driver: "
    ocpp = {
        "HeartbeatInterval out of range": ("HeartbeatInterval", 9223372036854775807),
        "ClockAlignedDataInterval out of range": ("ClockAlignedDataInterval", 99999999999),
        "ocpp wrong type": ("LocalPreAuthorize", 1),
        "ocpp unknown key": ("NoSuchKey", 1),
        "ocpp read-only key": ("NumberOfConnectors", 2),
        "ocpp unsupported measurand": ("MeterValuesSampledData", "Temperature"),
    }
    key, value = ocpp[name]
    data["ocpp"][key] = value
    return write(tmp_path, data), f"ocpp.{key}: "


CASES = [
    "state_dir is a file",
    "state_dir under a file",
    "log_file is a directory",
    "ev_phases 2",
    "rst_pin on CE0",
    pytest.param(
        "driver pi without the libraries",
        marks=pytest.mark.skipif(_missing_factory() is None, reason="every Pi library is here"),
    ),
    "HeartbeatInterval out of range",
    "ClockAlignedDataInterval out of range",
    "ocpp wrong type",
    "ocpp unknown key",
    "ocpp read-only key",
    "ocpp unsupported measurand",
]


@pytest.mark.e2e
@pytest.mark.parametrize("name", CASES)
def test_the_real_start_refuses_what_check_config_refuses_with_the_same_line(tmp_path, name):
    file, expected = _case(tmp_path, name)
    checked, started = run_both(file)
    assert checked == started
    status, err = checked
    assert status == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"chargerd: {file}: {expected}"), err
    if name == "driver pi without the libraries":
        assert "install chargerd[pi]" in err


def test_an_unexpected_error_at_start_is_one_line_with_where(tmp_path, capsys, monkeypatch):
    async def broken(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(daemon.Daemon, "run", broken)
    status, err = in_process(["--config", str(write(tmp_path, SCHEMA))], capsys)
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("chargerd: cannot start: OSError: [Errno 28] No space left on device")
    assert "(at chargerd/daemon.py:" in err


@pytest.fixture(autouse=True)
def _process_state():
    """main() sets the umask and installs log handlers: a test must not leak them."""
    import logging

    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_chargerd_handler", False)]:
        root.removeHandler(handler)
        handler.close()


def test_an_error_after_the_start_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    from chargerd.features import metering

    async def dies(self) -> None:
        raise RuntimeError("the aligned-data task broke")

    shutdown = daemon.Daemon.shutdown

    async def failing_shutdown(self) -> None:
        await shutdown(self)
        raise RuntimeError("flush failed")

    monkeypatch.setattr(metering.MeterSampler, "aligned_loop", dies)
    monkeypatch.setattr(daemon.Daemon, "shutdown", failing_shutdown)
    data = json.loads(json.dumps(SCHEMA))
    data["hardware"]["driver"] = "mock"
    status, err = in_process(["--config", str(write(tmp_path, data))], capsys)
    assert status == 1
    # The log above it has the dying task's traceback (a bug to report); the end is one line.
    assert err.splitlines()[-1].startswith("chargerd: failed: RuntimeError: flush failed (at ")


@pytest.mark.parametrize(
    ("factory", "missing"),
    [("lgpio", "lgpio"), ("rpigpio", "RPi.GPIO"), ("pigpio", "pigpio"), (None, "lgpio")],
)
def test_the_pi_driver_says_which_library_to_install(tmp_path, monkeypatch, factory, missing):
    from chargerd import startup
    from chargerd.config import ConfigError, load_config

    monkeypatch.setattr(startup, "_importable", lambda module: False)  # not a Pi
    data = json.loads(json.dumps(SCHEMA))
    data["hardware"]["driver"] = "pi"
    if factory is None:
        del data["hardware"]["pin_factory"]
    else:
        data["hardware"]["pin_factory"] = factory
    cfg = load_config(write(tmp_path, data))
    with pytest.raises(ConfigError) as err:
        startup.check_environment(cfg)
    assert str(err.value).endswith(
        f'hardware.driver: "pi" needs the Raspberry Pi libraries, missing here: {missing}; '
        "install chargerd[pi] (pip install 'chargerd[pi]')"
    )
    for bench in ("mock", "native"):
        data["hardware"]["pin_factory"] = bench  # nothing to import
        startup.check_environment(load_config(write(tmp_path, data)))
