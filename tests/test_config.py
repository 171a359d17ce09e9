"""load_config on real files: the shipped samples and every kind of mistake."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

import chargerd
from chargerd.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]

BENCH = """\
[station]
charge_point_id = "CP-T-1"
vendor = "chargerd"
model = "bench"
connectors = 2

[csms]
url = "ws://127.0.0.1:9000"

[paths]
state_dir = "state"
control_socket = "state/control.sock"

[hardware]
driver = "mock"

[ocpp]
HeartbeatInterval = 60
LocalPreAuthorize = true
MeterValuesSampledData = "Energy.Active.Import.Register"
"""

PI = """\
[station]
charge_point_id = "CP-PI-1"
vendor = "v"
model = "m"
connectors = 1

[csms]
url = "wss://csms.example.com/ocpp"
security_profile = 3

[hardware]
driver = "pi"
pin_factory = "lgpio"

[[hardware.connector]]
contactor_pin = 17
contactor_feedback_pin = 27
lock = "motor"
lock_pins = [22, 23]
lock_sense_pin = 24
led = "rgb"
led_pins = [5, 6, 13]
pilot_pwm_pin = 18
pilot_pp_channel = "none"
meter_unit_id = 3
"""


def write(tmp_path: Path, text: str, name: str = "chargerd.toml") -> Path:
    path = tmp_path / "etc" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)  # every message names the file
    return info.value


# ------------------------------------------------------------------- valid


def test_shipped_samples_load() -> None:
    prod = load_config(REPO / "etc" / "chargerd.toml")
    assert prod.hardware.driver == "pi"
    assert prod.hardware.pin_factory == "lgpio"
    [conn] = prod.hardware.connectors
    assert conn.contactor.pin == 17 and conn.contactor.feedback_pin == 27
    assert conn.lock.kind == "motor" and conn.lock.pins == (22, 23) and conn.lock.sense_pin == 24
    assert conn.led.kind == "rgb" and conn.led.pins == (5, 6, 13)
    assert conn.pilot.pwm_pin == 18 and conn.pilot.adc_device == 1
    assert conn.meter_model == "sdm630" and conn.meter_unit_id == 1
    assert prod.hardware.meter_bus.port == "/dev/ttyUSB0"
    assert prod.hardware.reader.kind == "rc522" and prod.hardware.reader.rst_pin == 25
    assert prod.paths.database == Path("/var/lib/chargerd/chargerd.db")

    bench = load_config(REPO / "etc" / "bench.toml")
    assert bench.station.charge_point_id == "CP-BENCH-1"
    assert bench.csms.url == "ws://127.0.0.1:9000"
    assert bench.station.connectors == 2 and len(bench.hardware.connectors) == 2
    # Relative to etc/, so the demo writes into the checkout's var/.
    assert bench.paths.state_dir == REPO / "var" / "bench"
    assert bench.paths.control_socket == REPO / "var" / "bench" / "control.sock"
    assert bench.ocpp["HeartbeatInterval"] == 60
    assert bench.ocpp["MeterValueSampleInterval"] == 10


def test_bench_file(tmp_path: Path) -> None:
    path = write(tmp_path, BENCH)
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.source == path
    assert cfg.station.firmware_version == chargerd.__version__
    assert cfg.station.serial_number is None
    assert cfg.csms.security_profile == 0 and cfg.csms.basic_auth_password is None
    assert cfg.hardware.driver == "mock"
    assert len(cfg.hardware.connectors) == 2  # mock: tables optional, one per connector
    assert cfg.paths.state_dir == tmp_path / "etc" / "state"
    assert cfg.paths.control_socket == tmp_path / "etc" / "state" / "control.sock"
    assert cfg.paths.log_file is None
    assert cfg.logging.level == "INFO"
    assert dict(cfg.ocpp) == {
        "HeartbeatInterval": 60,
        "LocalPreAuthorize": True,
        "MeterValuesSampledData": "Energy.Active.Import.Register",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.station.connectors = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.ocpp["HeartbeatInterval"] = 1  # type: ignore[index]


def test_pi_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, PI))
    [conn] = cfg.hardware.connectors
    assert conn.pilot.pp_channel is None  # "none": tethered cable
    assert conn.meter_unit_id == 3
    assert conn.contactor.active_high is True  # default
    assert cfg.csms.security_profile == 3
    assert cfg.paths.state_dir == Path("/var/lib/chargerd")


def test_logging_level_is_case_insensitive(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BENCH + '\n[logging]\nlevel = "debug"\n'))
    assert cfg.logging.level == "DEBUG"


# ------------------------------------------------------------------ errors


def test_missing_file(tmp_path: Path) -> None:
    err = error_of(tmp_path / "nope.toml")
    assert "not found" in str(err)


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    text = BENCH.replace('vendor = "chargerd"', "vendor = chargerd")
    path = write(tmp_path, text)
    err = error_of(path)
    assert err.line == 3
    assert "line 3, column 10" in str(err)
    assert "TOML syntax error" in str(err)


def test_unterminated_table_at_end_of_file(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BENCH + "[oops\n"))
    assert "TOML syntax error" in str(err)
    assert err.line == BENCH.count("\n") + 1


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[station]\nvendor = "Gr\xfcn"\n')
    err = error_of(path)
    assert "line 2" in str(err) and "UTF-8" in str(err)


def test_unknown_key_names_key_path_and_suggests(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, PI.replace("contactor_pin = 17", "contactor_pn = 17")))
    assert err.key == "hardware.connector[1].contactor_pn"
    assert "unknown key hardware.connector[1].contactor_pn" in str(err)
    assert "did you mean 'contactor_pin'" in str(err)


def test_unknown_top_level_table(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BENCH + "\n[stations]\nx = 1\n"))
    assert "unknown key stations" in str(err)


@pytest.mark.parametrize(
    ("old", "new", "key", "found", "expected"),
    [
        # wrong types
        ("connectors = 2", 'connectors = "2"', "station.connectors", '"2"', "an integer"),
        ("connectors = 2", "connectors = true", "station.connectors", "true", "an integer"),
        ('driver = "mock"', 'driver = "sim"', "hardware.driver", '"sim"', '"mock", "pi"'),
        ('model = "bench"', "model = 5", "station.model", "5", "string"),
        # out of range
        ("connectors = 2", "connectors = 9", "station.connectors", "9", "from 1 to 8"),
        ("connectors = 2", "connectors = 0", "station.connectors", "0", "from 1 to 8"),
        (
            'model = "bench"',
            'model = "a model name longer than twenty"',
            "station.model",
            '"a model name longer than twenty"',
            "at most 20 characters",
        ),
        (
            'charge_point_id = "CP-T-1"',
            'charge_point_id = "CP 1/x"',
            "station.charge_point_id",
            '"CP 1/x"',
            "1 to 48 characters",
        ),
        # bad url scheme
        (
            'url = "ws://127.0.0.1:9000"',
            'url = "http://127.0.0.1:9000"',
            "csms.url",
            '"http://127.0.0.1:9000"',
            "ws:// or wss://",
        ),
        (
            'url = "ws://127.0.0.1:9000"',
            'url = "ws://user:pw@127.0.0.1:9000"',
            "csms.url",
            "user:pw",
            "without credentials",
        ),
        (
            'url = "ws://127.0.0.1:9000"',
            'url = "ws://127.0.0.1:99999"',
            "csms.url",
            '"ws://127.0.0.1:99999"',
            "with a host",
        ),
        # profile and scheme disagree
        (
            'url = "ws://127.0.0.1:9000"',
            'url = "ws://127.0.0.1:9000"\nsecurity_profile = 2\nbasic_auth_password = "p"',
            "csms.url",
            '"ws://127.0.0.1:9000"',
            "wss:// URL: security_profile 2",
        ),
        (
            'url = "ws://127.0.0.1:9000"',
            'url = "ws://127.0.0.1:9000"\nsecurity_profile = 4',
            "csms.security_profile",
            "4",
            "from 0 to 3",
        ),
        # ocpp values must be scalars
        (
            "HeartbeatInterval = 60",
            "HeartbeatInterval = [60]",
            "ocpp.HeartbeatInterval",
            "[60]",
            "a string, integer, float or boolean",
        ),
    ],
)
def test_wrong_value_names_key_value_and_expectation(
    tmp_path: Path, old: str, new: str, key: str, found: str, expected: str
) -> None:
    assert old in BENCH
    err = error_of(write(tmp_path, BENCH.replace(old, new, 1)))
    assert err.key == key
    text = str(err)
    assert f"{key}: found " in text and found in text and expected in text


def test_missing_required_key(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BENCH.replace('vendor = "chargerd"\n', "")))
    assert "station.vendor: missing, expected a non-empty string" in str(err)


def test_basic_auth_profile_needs_a_password(tmp_path: Path) -> None:
    text = BENCH.replace('url = "ws://127.0.0.1:9000"', 'url = "ws://h:9000"\nsecurity_profile = 1')
    err = error_of(write(tmp_path, text))
    assert err.key == "csms.basic_auth_password"
    assert "security_profile 1 uses HTTP basic auth" in str(err)


def test_connector_tables_must_match_station_connectors(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, PI.replace("connectors = 1", "connectors = 2")))
    assert err.key == "hardware.connector"
    assert "found 1 [[hardware.connector]] table(s), expected 2 (station.connectors)" in str(err)


def test_pi_driver_requires_connector_tables(tmp_path: Path) -> None:
    text = PI.split("[[hardware.connector]]")[0]
    err = error_of(write(tmp_path, text))
    assert "found 0 [[hardware.connector]] table(s), expected 1" in str(err)


def test_mock_connector_tables_when_given_must_match(tmp_path: Path) -> None:
    text = BENCH + "\n[[hardware.connector]]\nmeter_unit_id = 1\n"
    err = error_of(write(tmp_path, text))
    assert "found 1 [[hardware.connector]] table(s), expected 2" in str(err)


def test_second_connector_error_is_numbered_like_the_connector(tmp_path: Path) -> None:
    second = PI.split("[[hardware.connector]]")[1].replace("17", "99")
    text = PI.replace("connectors = 1", "connectors = 2") + "\n[[hardware.connector]]" + second
    err = error_of(write(tmp_path, text))
    assert err.key == "hardware.connector[2].contactor_pin"
    assert "found 99, expected an integer from 0 to 27" in str(err)


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("lock_pins = [22, 23]", "lock_pins = [22]", "lock_pins", "an array of 2 GPIO numbers"),
        ('led = "rgb"', 'led = "single"', "led_pins", "an array of 1 GPIO numbers"),
        ("led_pins = [5, 6, 13]", "led_pins = [5, 6, 17]", "led_pins", "GPIO 17 is already"),
        ("pilot_pwm_pin = 18", "pilot_pwm_pin = 8", "pilot_pwm_pin", "GPIO 8 is SPI0 CE0"),
        ("lock_sense_pin = 24", "lock_sense_pin = 25", "lock_sense_pin", "hardware.reader"),
        ("meter_unit_id = 3", "meter_unit_id = 300", "meter_unit_id", "from 1 to 247"),
        ('lock = "motor"', 'lock = "magnet"', "lock", '"none", "motor", "solenoid"'),
    ],
)
def test_connector_mistakes(tmp_path: Path, old: str, new: str, key: str, expected: str) -> None:
    assert old in PI
    err = error_of(write(tmp_path, PI.replace(old, new, 1)))
    assert err.key == f"hardware.connector[1].{key}"
    assert expected in str(err)


def test_adc_chip_select_clash_with_reader(tmp_path: Path) -> None:
    text = PI + "pilot_adc_device = 0\n"
    err = error_of(write(tmp_path, text))
    assert err.key == "hardware.connector[1].pilot_adc_device"
    assert "RC522 reader uses SPI0 CE0" in str(err)


def test_control_socket_path_too_long_for_af_unix(tmp_path: Path) -> None:
    text = BENCH.replace('"state/control.sock"', '"' + "d" * 120 + '/control.sock"')
    err = error_of(write(tmp_path, text))
    assert err.key == "paths.control_socket"
    assert "unix socket limit" in str(err)


def test_non_finite_number_refused(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, BENCH + "\n[hardware.mock]\nvoltage_v = nan\n"))
    assert err.key == "hardware.mock.voltage_v"
    assert "found nan" in str(err)


def test_link_and_current_limits_have_defaults_and_can_be_set(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BENCH))
    assert cfg.station.max_current_a == 32.0
    assert (cfg.csms.call_timeout_s, cfg.csms.max_frame_bytes, cfg.csms.ca_file) == (
        30.0,
        2 * 1024 * 1024,
        None,
    )
    text = BENCH.replace("connectors = 2", "connectors = 2\nmax_current_a = 16").replace(
        'url = "ws://127.0.0.1:9000"',
        'url = "ws://127.0.0.1:9000"\ncall_timeout_s = 5\nmax_frame_bytes = 4096\n'
        'ca_file = "ca.pem"',
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.station.max_current_a == 16.0
    assert (cfg.csms.call_timeout_s, cfg.csms.max_frame_bytes) == (5.0, 4096)
    assert cfg.csms.ca_file == tmp_path / "etc" / "ca.pem"


@pytest.mark.parametrize(
    ("old", "new", "keypath"),
    [
        ("connectors = 2", "connectors = 2\nmax_current_a = 100", "station.max_current_a"),
        ("connectors = 2", "connectors = 2\nmax_current_a = 5", "station.max_current_a"),
        (
            'url = "ws://127.0.0.1:9000"',
            'url = "ws://127.0.0.1:9000"\nmax_frame_bytes = 10',
            "csms.max_frame_bytes",
        ),
        (
            'url = "ws://127.0.0.1:9000"',
            'url = "ws://127.0.0.1:9000"\ncall_timeout_s = 0',
            "csms.call_timeout_s",
        ),
    ],
)
def test_limits_out_of_range_are_refused(tmp_path: Path, old: str, new: str, keypath: str):
    err = error_of(write(tmp_path, BENCH.replace(old, new)))
    assert keypath in str(err)


def test_reader_id_tag_format(tmp_path: Path) -> None:
    assert load_config(REPO / "etc" / "chargerd.toml").hardware.reader.id_tag_format == "hex"
    text = PI + '\n[hardware.reader]\nid_tag_format = "hex_reversed"\n'
    assert load_config(write(tmp_path, text)).hardware.reader.id_tag_format == "hex_reversed"
    err = error_of(write(tmp_path, PI + '\n[hardware.reader]\nid_tag_format = "octal"\n'))
    assert err.key == "hardware.reader.id_tag_format"
    assert '"hex", "hex_reversed", "decimal"' in str(err)


def test_smart_charging_electrical_keys(tmp_path: Path) -> None:
    """nominal_voltage_v and phases convert W limits to A; defaults 230 V, 3 phases."""
    cfg = load_config(write(tmp_path, BENCH))
    assert (cfg.station.nominal_voltage_v, cfg.station.phases) == (230.0, 3)
    text = BENCH.replace("connectors = 2", "connectors = 2\nnominal_voltage_v = 120\nphases = 1")
    cfg = load_config(write(tmp_path, text))
    assert (cfg.station.nominal_voltage_v, cfg.station.phases) == (120.0, 1)
    err = error_of(write(tmp_path, BENCH.replace("connectors = 2", "connectors = 2\nphases = 4")))
    assert err.key == "station.phases"


def test_residual_current_monitor_and_ventilation_keys(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, PI))
    assert cfg.hardware.connectors[0].rcd.fault_pin is None  # optional: none by default
    assert cfg.station.ventilation is False
    text = PI.replace('model = "m"', 'model = "m"\nventilation = true') + (
        "rcd_fault_pin = 4\nrcd_test_pin = 26\nrcd_fault_active_high = false\n"
        "rcd_trip_time_s = 0.05\n"
    )
    cfg = load_config(write(tmp_path, text))
    rcd = cfg.hardware.connectors[0].rcd
    assert (rcd.fault_pin, rcd.test_pin, rcd.fault_active_high, rcd.trip_time_s) == (
        4,
        26,
        False,
        0.05,
    )
    assert cfg.station.ventilation is True


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ("rcd_fault_pin = 17\n", "rcd_fault_pin", "GPIO 17 is already"),
        ("rcd_fault_pin = 4\nrcd_test_pin = 4\n", "rcd_test_pin", "GPIO 4 is already"),
        ("rcd_test_pin = 26\n", "rcd_test_pin", "without an rcd_fault_pin"),
        ("rcd_fault_pin = 4\nrcd_trip_time_s = 0\n", "rcd_trip_time_s", "from 0.001 to 2"),
    ],
)
def test_residual_current_monitor_mistakes(tmp_path: Path, extra: str, key: str, expected: str):
    err = error_of(write(tmp_path, PI + extra))
    assert err.key == f"hardware.connector[1].{key}"
    assert expected in str(err)
