"""The daemon's TOML configuration, checked completely at start-up.

A charger is configured once by a technician and then runs unattended, so
every mistake is reported before anything starts, with the file, the key path
(``hardware.connector[2].contactor_pin``; connector tables are numbered from 1,
like OCPP connector ids), the value found and what was expected.  Unknown keys
are errors: a typo must not silently fall back to a default pin.

The ``[ocpp]`` table only seeds OCPP configuration keys; their names and values
are validated by the OCPP configuration module, which owns them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit

import chargerd
from chargerd.config_table import _REQUIRED, GPIO_RANGE, ConfigError, _Table  # noqa: F401
from hal.config import (
    ConnectorConfig,
    ContactorConfig,
    EmulatedConfig,
    HardwareConfig,
    LedConfig,
    LockConfig,
    MeterBusConfig,
    MockConfig,
    PilotConfig,
    RcdConfig,
    ReaderConfig,
    TamperConfig,
    unsafe_contactor_pull,
)
from hal.idtag import ID_TAG_FORMATS

Scalar = str | int | bool | float
T = TypeVar("T")

MAX_CONNECTORS = 8
PIN_FACTORIES = ("lgpio", "rpigpio", "pigpio", "native", "mock", "emulated")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
HARDWARE_PWM_PINS = (12, 13, 18, 19)  # the header pins a dtoverlay=pwm can route PWM to
# SPI0 carries the RC522 (CE0) and the MCP3008 (CE1); these lines are not free GPIOs.
SPI0_PINS = {7: "SPI0 CE1", 8: "SPI0 CE0", 9: "SPI0 MISO", 10: "SPI0 MOSI", 11: "SPI0 SCLK"}
# OCPP-J appends the identity to the URL; the Security Whitepaper limits it to these.
_CP_ID = re.compile(r"^[A-Za-z0-9*\-_=:+|@.]{1,48}$")
_SUN_PATH_MAX = 107  # AF_UNIX sun_path is 108 bytes including the NUL


@dataclass(frozen=True, slots=True)
class StationConfig:
    charge_point_id: str
    vendor: str  # BootNotification chargePointVendor (CiString20)
    model: str  # chargePointModel (CiString20)
    serial_number: str | None = None  # chargePointSerialNumber (CiString25)
    firmware_version: str = chargerd.__version__
    connectors: int = 1
    max_current_a: float = 32.0  # what the supply and the wiring allow per connector
    # Smart charging converts limits in W to A with these: A = W / (V x phases).
    nominal_voltage_v: float = 230.0
    phases: int = 3
    ventilation: bool = False  # the site is ventilated: an EV in state D may be charged


@dataclass(frozen=True, slots=True)
class CsmsConfig:
    url: str  # the CSMS endpoint without the identity: chargerd appends "/<charge_point_id>"
    security_profile: int = 0  # 0 plain ws, 1 basic auth/ws, 2 basic auth/TLS, 3 client cert
    basic_auth_password: str | None = None
    ca_file: Path | None = None  # CA bundle for wss:// (default: the system's)
    max_frame_bytes: int = 2 * 1024 * 1024  # inbound frames above this are refused
    # How long a CALL waits for the CSMS's answer before it counts as unanswered (a
    # transaction message is then sent again; an Authorize falls back to the offline rules).
    call_timeout_s: float = 30.0
    # The wss:// endpoint once the CSMS has raised a ws:// station to profile 2 or 3
    # (default: url with wss://, same host and port).
    tls_url: str | None = None


@dataclass(frozen=True, slots=True)
class PathsConfig:
    state_dir: Path = Path("/var/lib/chargerd")
    control_socket: Path = Path("/run/chargerd/control.sock")
    log_file: Path | None = None

    @property
    def database(self) -> Path:
        return self.state_dir / "chargerd.db"

    @property
    def certs_dir(self) -> Path:
        return self.state_dir / "certs"


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"
    # idTags are personal data: mask them in logs and the frame log (****BEEF).
    redact_id_tags: bool = False


@dataclass(frozen=True, slots=True)
class FirmwareConfig:
    """[firmware]: how UpdateFirmware / SignedUpdateFirmware install (features/firmware.py)."""

    installer: Path | None = None  # run with the downloaded file's path; None: refuse installs
    version_file: Path | None = None  # the installed version, when not the package's (bench)
    download_timeout_s: float = 300.0
    install_timeout_s: float = 900.0


@dataclass(frozen=True, slots=True)
class Config:
    source: Path  # the file this was read from
    station: StationConfig
    csms: CsmsConfig
    hardware: HardwareConfig
    paths: PathsConfig = field(default_factory=PathsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    ocpp: Mapping[str, Scalar] = field(default_factory=lambda: MappingProxyType({}))
    firmware: FirmwareConfig = field(default_factory=FirmwareConfig)


def load_config(path: Path) -> Config:
    """Read and check the whole file; raise ConfigError on the first mistake."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found", path=path) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}", path=path) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text ({exc.reason})", path=path, line=line
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(path, exc) from None
    return _Loader(path).config(data)


def _syntax_error(path: Path, exc: tomllib.TOMLDecodeError) -> ConfigError:
    # Python 3.11's TOMLDecodeError has no lineno/colno (3.14 adds them): the
    # position is only in the message, "Invalid value (at line 3, column 9)".
    msg = str(exc)
    line = getattr(exc, "lineno", None)
    col = getattr(exc, "colno", None)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
    if match:
        line, col = line or int(match.group(1)), col or int(match.group(2))
        msg = msg[: match.start()]
    elif msg.endswith("(at end of document)"):
        msg = msg.removesuffix("(at end of document)").rstrip() + " at the end of the file"
    where = f"line {line}, column {col}: " if line is not None else ""
    return ConfigError(f"{path}: {where}TOML syntax error: {msg}", path=path, line=line)


def _port_ok(parts: SplitResult) -> bool:
    try:
        return parts.port is None or parts.port > 0
    except ValueError:
        return False


class _Loader:
    def __init__(self, file: Path) -> None:
        self.file = file
        self.base = Path(os.path.abspath(file)).parent

    def config(self, data: dict[str, Any]) -> Config:
        top = _Table(self.file, data, "")
        station = self.station(top.table("station"))
        csms = self.csms(top.table("csms"))
        hardware = self.hardware(top.table("hardware"), station.connectors)
        paths = self.paths(top.table("paths"))
        logging_t = top.table("logging")
        level = logging_t.string(
            "level",
            "INFO",
            expected="one of " + ", ".join(LOG_LEVELS),
            pattern=re.compile("^(?i:" + "|".join(LOG_LEVELS) + ")$"),
        )
        redact = logging_t.boolean("redact_id_tags", False)
        logging_t.finish()
        ocpp = self.ocpp(top.table("ocpp"))
        firmware = self.firmware(top.table("firmware"))
        top.finish()
        return Config(
            source=self.file,
            station=station,
            csms=csms,
            hardware=hardware,
            paths=paths,
            logging=LoggingConfig(level=level.upper(), redact_id_tags=redact),
            ocpp=ocpp,
            firmware=firmware,
        )

    def station(self, t: _Table) -> StationConfig:
        cfg = StationConfig(
            charge_point_id=t.string(
                "charge_point_id",
                pattern=_CP_ID,
                expected="1 to 48 characters from A-Z a-z 0-9 * - _ = : + | @ .",
            ),
            vendor=t.string("vendor", max_len=20),
            model=t.string("model", max_len=20),
            serial_number=t.string("serial_number", None, max_len=25),
            firmware_version=t.string("firmware_version", chargerd.__version__, max_len=50),
            connectors=t.integer("connectors", 1, 1, MAX_CONNECTORS),
            max_current_a=t.number("max_current_a", 32.0, lo=6.0, hi=80.0),
            nominal_voltage_v=t.number("nominal_voltage_v", 230.0, lo=100.0, hi=480.0),
            phases=t.integer("phases", 3, allowed=(1, 2, 3)),
            ventilation=t.boolean("ventilation", False),
        )
        t.finish()
        return cfg

    def csms(self, t: _Table) -> CsmsConfig:
        url = t.string("url", expected="a ws:// or wss:// URL")
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname or not _port_ok(parts):
            raise t.fail("url", url, "a ws:// or wss:// URL with a host (and a valid port)")
        if parts.username or parts.password:
            raise t.fail("url", url, "a URL without credentials (use basic_auth_password)")
        profile = t.integer("security_profile", 0, 0, 3)
        if profile >= 2 and parts.scheme != "wss":
            raise t.fail("url", url, f"a wss:// URL: security_profile {profile} uses TLS")
        if profile <= 1 and parts.scheme != "ws":
            raise t.fail(
                "url",
                url,
                f"a ws:// URL: security_profile {profile} is without TLS "
                "(use security_profile 2 or 3 for wss://)",
            )
        password = t.string("basic_auth_password", None)
        if profile in (1, 2) and password is None:
            raise t.fail(
                "basic_auth_password",
                _REQUIRED,
                f"a password: security_profile {profile} uses HTTP basic auth",
            )
        tls_url = t.string("tls_url", None, expected="a wss:// URL")
        if tls_url is not None:
            tls_parts = urlsplit(tls_url)
            if tls_parts.scheme != "wss" or not tls_parts.hostname or not _port_ok(tls_parts):
                raise t.fail("tls_url", tls_url, "a wss:// URL with a host (and a valid port)")
            if tls_parts.username or tls_parts.password:
                raise t.fail("tls_url", tls_url, "a URL without credentials")
        cfg = CsmsConfig(
            url=url,
            tls_url=tls_url,
            security_profile=profile,
            basic_auth_password=password,
            ca_file=t.path("ca_file", None, self.base),
            max_frame_bytes=t.integer("max_frame_bytes", 2 * 1024 * 1024, 1024, 16 * 1024 * 1024),
            call_timeout_s=t.number("call_timeout_s", 30.0, lo=1.0, hi=300.0),
        )
        t.finish()
        return cfg

    def paths(self, t: _Table) -> PathsConfig:
        default = PathsConfig()
        cfg = PathsConfig(
            state_dir=t.path("state_dir", default.state_dir, self.base),
            control_socket=t.path("control_socket", default.control_socket, self.base),
            log_file=t.path("log_file", None, self.base),
        )
        if len(os.fsencode(cfg.control_socket)) > _SUN_PATH_MAX:
            raise t.fail(
                "control_socket",
                str(cfg.control_socket),
                f"a path of at most {_SUN_PATH_MAX} bytes (a unix socket limit)",
            )
        t.finish()
        return cfg

    def firmware(self, t: _Table) -> FirmwareConfig:
        cfg = FirmwareConfig(
            installer=t.path("installer", None, self.base),
            version_file=t.path("version_file", None, self.base),
            download_timeout_s=t.number("download_timeout_s", 300.0, lo=1.0, hi=86400.0),
            install_timeout_s=t.number("install_timeout_s", 900.0, lo=1.0, hi=86400.0),
        )
        t.finish()
        return cfg

    def ocpp(self, t: _Table) -> Mapping[str, Scalar]:
        values: dict[str, Scalar] = {}
        for key, value in t.data.items():
            t.used.add(key)
            if not isinstance(value, str | int | float):  # bool is an int
                raise t.fail(key, value, "a string, integer, float or boolean")
            values[key] = value
        return MappingProxyType(values)

    # -------------------------------------------------------------- hardware

    def hardware(self, t: _Table, connectors: int) -> HardwareConfig:
        driver = t.string("driver", choices=("mock", "pi"))
        pin_factory = t.string("pin_factory", None, choices=PIN_FACTORIES)
        reader = self.reader(t.table("reader"))
        meter_bus = self.meter_bus(t.table("meter_bus"))
        mock = self.mock(t.table("mock"))
        emulated = self.emulated(t.table("emulated"))
        tamper = self.tamper(t, reader)
        if pin_factory == "emulated" and (driver != "pi" or not emulated.bench):
            raise ConfigError(
                f'{self.file}: hardware.pin_factory: "emulated" runs the Pi drivers on '
                "emulated chips and reports invented energy to the CSMS: bench only; it needs "
                'driver = "pi" and [hardware.emulated] bench = true',
                path=self.file,
                key="hardware.pin_factory",
            )
        tables = t.array_of_tables("connector")
        if tables is None and driver == "mock":
            conns = tuple(ConnectorConfig() for _ in range(connectors))
        else:
            count = len(tables or [])
            if count != connectors:
                raise ConfigError(
                    f"{self.file}: hardware.connector: found {count} [[hardware.connector]] "
                    f"table(s), expected {connectors} (station.connectors)",
                    path=self.file,
                    key="hardware.connector",
                )
            conns = tuple(self.connector(c) for c in tables or [])
            self.check_pins(conns, reader, tables or [], tamper_pin=tamper.pin)
        t.finish()
        return HardwareConfig(
            driver=driver,
            pin_factory=pin_factory,
            connectors=conns,
            reader=reader,
            meter_bus=meter_bus,
            mock=mock,
            emulated=emulated,
            tamper=tamper,
        )

    def tamper(self, t: _Table, reader: ReaderConfig) -> TamperConfig:
        """[hardware] tamper_pin / tamper_active_high: the enclosure's switch, if one is wired."""
        pin = t.gpio("tamper_pin", None, none_ok=True)
        if pin in SPI0_PINS:
            raise t.fail("tamper_pin", pin, f"a free GPIO (GPIO {pin} is {SPI0_PINS[pin]})")
        if pin is not None and reader.kind == "rc522" and pin == reader.rst_pin:
            raise t.fail("tamper_pin", pin, "a free GPIO (the RC522 reader's rst_pin)")
        return TamperConfig(pin=pin, active_high=t.boolean("tamper_active_high", True))

    def reader(self, t: _Table) -> ReaderConfig:
        d = ReaderConfig()
        cfg = ReaderConfig(
            kind=t.string("kind", d.kind, choices=("none", "rc522")),
            spi_bus=t.integer("spi_bus", d.spi_bus, 0, 6),
            spi_device=t.integer("spi_device", d.spi_device, 0, 2),
            rst_pin=t.gpio("rst_pin", d.rst_pin),
            poll_interval_s=t.number("poll_interval_s", d.poll_interval_s, positive=True),
            id_tag_format=t.string("id_tag_format", d.id_tag_format, choices=ID_TAG_FORMATS),
        )
        if cfg.kind == "rc522" and cfg.rst_pin in SPI0_PINS:
            raise t.fail(
                "rst_pin",
                cfg.rst_pin,
                f"a free GPIO (GPIO {cfg.rst_pin} is {SPI0_PINS[cfg.rst_pin]})",
            )
        t.finish()
        return cfg

    def meter_bus(self, t: _Table) -> MeterBusConfig:
        d = MeterBusConfig()
        cfg = MeterBusConfig(
            transport=t.string("transport", d.transport, choices=("rtu", "tcp")),
            port=t.string("port", d.port),
            baudrate=t.integer(
                "baudrate",
                d.baudrate,
                allowed=(1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200),
            ),
            parity=t.string("parity", d.parity, choices=("N", "E", "O")),
            stopbits=t.integer("stopbits", d.stopbits, allowed=(1, 2)),
            host=t.string("host", d.host),
            tcp_port=t.integer("tcp_port", d.tcp_port, 1, 65535),
            timeout_s=t.number("timeout_s", d.timeout_s, positive=True),
        )
        t.finish()
        return cfg

    def mock(self, t: _Table) -> MockConfig:
        d = MockConfig()
        cfg = MockConfig(
            voltage_v=t.number("voltage_v", d.voltage_v, lo=100.0, hi=480.0),
            ev_max_current_a=t.number("ev_max_current_a", d.ev_max_current_a, lo=6.0, hi=80.0),
            ev_phases=t.integer("ev_phases", d.ev_phases, allowed=(1, 3)),  # as IEC 61851 EVs
            cable_capacity_a=t.integer(
                "cable_capacity_a", d.cable_capacity_a, allowed=(13, 20, 32, 63, 70)
            ),
            frequency_hz=t.number("frequency_hz", d.frequency_hz, lo=45.0, hi=65.0),
            lock=t.boolean("lock", d.lock),
            meter_silent_delay_s=t.number(
                "meter_silent_delay_s", d.meter_silent_delay_s, lo=0.0, hi=10.0
            ),
            rcd=t.boolean("rcd", d.rcd),
        )
        t.finish()
        return cfg

    def emulated(self, t: _Table) -> EmulatedConfig:
        d = EmulatedConfig()
        cfg = EmulatedConfig(
            bench=t.boolean("bench", d.bench),
            card_hold_s=t.number("card_hold_s", d.card_hold_s, lo=0.1, hi=60.0),
        )
        t.finish()
        return cfg

    def connector(self, t: _Table) -> ConnectorConfig:
        dc, dl, dled, dp = ContactorConfig(), LockConfig(), LedConfig(), PilotConfig()
        contactor = ContactorConfig(
            pin=t.gpio("contactor_pin", dc.pin),
            active_high=t.boolean("contactor_active_high", dc.active_high),
            feedback_pin=t.gpio("contactor_feedback_pin", dc.feedback_pin, none_ok=True),
            feedback_active_high=t.boolean(
                "contactor_feedback_active_high", dc.feedback_active_high
            ),
            settle_s=t.number("contactor_settle_s", dc.settle_s, lo=0.0, hi=5.0),
            hardware_pull=t.string(
                "contactor_hardware_pull", dc.hardware_pull, choices=("down", "up")
            ),
        )
        unsafe = unsafe_contactor_pull(contactor)
        if unsafe is not None:
            key = "contactor_hardware_pull" if contactor.active_high else "contactor_active_high"
            value = contactor.hardware_pull if contactor.active_high else contactor.active_high
            raise t.fail(key, value, f"a safe wiring ({unsafe})")
        lock_kind = t.string("lock", dl.kind, choices=("none", "motor", "solenoid"))
        lock_count = {"none": 0, "motor": 2, "solenoid": 1}[lock_kind]
        lock = LockConfig(
            kind=lock_kind,
            pins=t.gpio_list("lock_pins", () if lock_count == 0 else _REQUIRED, lock_count),
            sense_pin=t.gpio("lock_sense_pin", dl.sense_pin, none_ok=True),
            sense_active_high=t.boolean("lock_sense_active_high", dl.sense_active_high),
            pulse_s=t.number("lock_pulse_s", dl.pulse_s, lo=0.01, hi=5.0),
        )
        led_kind = t.string("led", dled.kind, choices=("none", "rgb", "single"))
        led_count = {"none": 0, "rgb": 3, "single": 1}[led_kind]
        led_default = dled.pins if led_kind == "rgb" else () if led_count == 0 else _REQUIRED
        led = LedConfig(
            kind=led_kind,
            pins=t.gpio_list("led_pins", led_default, led_count),
            active_high=t.boolean("led_active_high", dled.active_high),
        )
        pilot = PilotConfig(
            pwm_pin=t.gpio("pilot_pwm_pin", dp.pwm_pin),
            adc_device=t.integer("pilot_adc_device", dp.adc_device, 0, 1),
            cp_channel=t.integer("pilot_cp_channel", dp.cp_channel, 0, 7),
            pp_channel=t.integer("pilot_pp_channel", dp.pp_channel, 0, 7, none_ok=True),
            cp_offset_v=t.number("pilot_cp_offset_v", dp.cp_offset_v, lo=-15.0, hi=15.0),
            cp_span_v=t.number("pilot_cp_span_v", dp.cp_span_v, positive=True),
            pp_pullup_ohm=t.number("pilot_pp_pullup_ohm", dp.pp_pullup_ohm, positive=True),
            pwm=t.string("pilot_pwm", dp.pwm, choices=("sysfs", "lgpio")),
            pwm_chip=t.integer("pilot_pwm_chip", dp.pwm_chip, 0, 63),
            pwm_channel=t.integer("pilot_pwm_channel", dp.pwm_channel, 0, 15),
            pwm_sysfs_root=t.string(
                "pilot_pwm_sysfs_root",
                dp.pwm_sysfs_root,
                pattern=re.compile(r"^/"),
                expected='an absolute path such as "/sys/class/pwm"',
            ),
            debounce=t.integer("pilot_debounce", dp.debounce, 1, 10),
        )
        cfg = ConnectorConfig(
            contactor=contactor,
            lock=lock,
            led=led,
            pilot=pilot,
            meter_model=t.string(
                "meter_model",
                "sdm630",
                pattern=re.compile(r"^[a-z0-9_]+$"),
                expected='a meter model name such as "sdm630"',
            ),
            meter_unit_id=t.integer("meter_unit_id", 1, 1, 247),
            rcd=self.rcd(t),
        )
        t.finish()
        return cfg

    def rcd(self, t: _Table) -> RcdConfig:
        """The residual-current monitor's keys of one [[hardware.connector]] (rcd_*)."""
        d = RcdConfig()
        fault_pin = t.gpio("rcd_fault_pin", d.fault_pin, none_ok=True)
        test_pin = t.gpio("rcd_test_pin", d.test_pin, none_ok=True)
        if fault_pin is None and test_pin is not None:
            raise t.fail("rcd_test_pin", test_pin, '"none" without an rcd_fault_pin')
        return RcdConfig(
            fault_pin=fault_pin,
            fault_active_high=t.boolean("rcd_fault_active_high", d.fault_active_high),
            test_pin=test_pin,
            test_active_high=t.boolean("rcd_test_active_high", d.test_active_high),
            trip_time_s=t.number("rcd_trip_time_s", d.trip_time_s, lo=0.001, hi=2.0),
            release_s=t.number("rcd_release_s", d.release_s, lo=0.01, hi=10.0),
        )

    def check_pins(
        self,
        conns: tuple[ConnectorConfig, ...],
        reader: ReaderConfig,
        tables: list[_Table],
        tamper_pin: int | None = None,
    ) -> None:
        """One GPIO, one job: a pin wired to two devices is a wiring mistake."""
        owner: dict[int, str] = {}
        if reader.kind == "rc522":
            owner[reader.rst_pin] = "hardware.reader.rst_pin"
        if tamper_pin is not None:
            owner[tamper_pin] = "hardware.tamper_pin"
        channels: dict[tuple[int, int], str] = {}
        pwms: dict[tuple[int, int], str] = {}
        units: dict[int, str] = {}
        for conn, t in zip(conns, tables, strict=True):
            uses: list[tuple[str, int | None]] = [
                ("contactor_pin", conn.contactor.pin),
                ("contactor_feedback_pin", conn.contactor.feedback_pin),
                *(("lock_pins", p) for p in conn.lock.pins),
                ("lock_sense_pin", conn.lock.sense_pin if conn.lock.kind != "none" else None),
                *(("led_pins", p) for p in conn.led.pins),
                ("pilot_pwm_pin", conn.pilot.pwm_pin),
                ("rcd_fault_pin", conn.rcd.fault_pin),
                ("rcd_test_pin", conn.rcd.test_pin),
            ]
            for key, pin in uses:
                if pin is None:
                    continue
                if pin in SPI0_PINS:
                    raise t.fail(key, pin, f"a free GPIO (GPIO {pin} is {SPI0_PINS[pin]})")
                if pin in owner and owner[pin] != t.keypath(key):
                    raise t.fail(key, pin, f"a free GPIO (GPIO {pin} is already {owner[pin]})")
                owner[pin] = t.keypath(key)
            if reader.kind == "rc522" and reader.spi_bus == 0:
                if conn.pilot.adc_device == reader.spi_device:
                    raise t.fail(
                        "pilot_adc_device",
                        conn.pilot.adc_device,
                        "a chip select of its own (the RC522 reader uses SPI0 "
                        f"CE{reader.spi_device})",
                    )
            for key, ch in (
                ("pilot_cp_channel", conn.pilot.cp_channel),
                ("pilot_pp_channel", conn.pilot.pp_channel),
            ):
                if ch is None:
                    continue
                slot = (conn.pilot.adc_device, ch)
                if slot in channels:
                    raise t.fail(key, ch, f"a free ADC channel (already {channels[slot]})")
                channels[slot] = t.keypath(key)
            if conn.pilot.pwm == "sysfs":
                if conn.pilot.pwm_pin not in HARDWARE_PWM_PINS:
                    raise t.fail(
                        "pilot_pwm_pin",
                        conn.pilot.pwm_pin,
                        'a pin with hardware PWM (12, 13, 18 or 19) with pilot_pwm = "sysfs"',
                    )
                pwm = (conn.pilot.pwm_chip, conn.pilot.pwm_channel)
                if pwm in pwms:
                    raise t.fail(
                        "pilot_pwm_channel",
                        pwm[1],
                        f"a PWM channel of its own (pwmchip{pwm[0]} channel {pwm[1]} is "
                        f"already {pwms[pwm]})",
                    )
                pwms[pwm] = t.keypath("pilot_pwm_channel")
            if conn.meter_unit_id in units:
                raise t.fail(
                    "meter_unit_id",
                    conn.meter_unit_id,
                    f"a unit id of its own on the bus (already {units[conn.meter_unit_id]})",
                )
            units[conn.meter_unit_id] = t.keypath("meter_unit_id")
