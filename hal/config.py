"""Hardware configuration as plain data.

chargerd's config loader builds these from the ``[hardware]`` table of the TOML
file; hal/ never reads a file itself.  Pin numbers are BCM GPIO numbers.
Defaults are those of ``etc/chargerd.toml`` and the README wiring table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class ContactorConfig:
    pin: int = 17
    active_high: bool = True
    feedback_pin: int | None = None  # auxiliary contact, reads active when closed
    feedback_active_high: bool = True
    settle_s: float = 0.1  # time the mechanics take before the feedback is trusted
    # The resistor on the coil driver's input that holds it when the Pi does not drive
    # the line (boot, exit, a released pin): it must hold the *open* level, so "down"
    # for an active-high driver and "up" for an active-low one (see unsafe_contactor_pull).
    hardware_pull: Literal["down", "up"] = "down"


def unsafe_contactor_pull(cfg: ContactorConfig) -> str | None:
    """Why an undriven contactor line would close the contactor, or None when it opens it.

    An active-low driver closes whenever the line floats low (at boot before
    chargerd starts, after it exits, after a kernel releases the pin) unless a
    pull-up holds it high; an active-high one needs a pull-down.
    """
    if cfg.active_high and cfg.hardware_pull == "up":
        return (
            "an active-high contactor driver with a pull-up closes the contactor whenever "
            "the line is not driven (boot, exit): wire a pull-down"
        )
    if not cfg.active_high and cfg.hardware_pull != "up":
        return (
            "an active-low contactor driver closes the contactor whenever the line is not "
            "driven (boot, exit) unless a pull-up holds it high: wire one and declare it "
            'with contactor_hardware_pull = "up"'
        )
    return None


@dataclass(frozen=True, slots=True)
class LockConfig:
    kind: Literal["none", "motor", "solenoid"] = "none"
    # motor: pins[0] drives towards "locked", pins[1] towards "unlocked" (H-bridge);
    # solenoid: pins[0] held active while locked.
    pins: tuple[int, ...] = ()
    sense_pin: int | None = None  # reads active when the pin is locked
    sense_active_high: bool = True
    pulse_s: float = 0.3  # motor pulse length / time before the sense is checked


@dataclass(frozen=True, slots=True)
class RcdConfig:
    """A residual-current monitor: fault output (and test input) on GPIOs; none by default."""

    fault_pin: int | None = None  # the module's fault output; None: no monitor wired
    fault_active_high: bool = True  # the level that means "tripped"
    test_pin: int | None = None  # the module's test input, if it has one
    test_active_high: bool = True
    trip_time_s: float = 0.1  # the module's spec: test input to fault output at the latest
    release_s: float = 0.5  # time the fault output may take to release after a test


@dataclass(frozen=True, slots=True)
class LedConfig:
    kind: Literal["none", "rgb", "single"] = "rgb"
    pins: tuple[int, ...] = (5, 6, 13)  # rgb: red, green, blue; single: one pin
    active_high: bool = True


@dataclass(frozen=True, slots=True)
class PilotConfig:
    pwm_pin: int = 18  # hardware PWM0 on a Pi
    adc_device: int = 1  # MCP3008 on SPI0 CE1 (the RC522 has CE0)
    cp_channel: int = 0
    pp_channel: int | None = 1
    # The CP front end maps -12..+12 V onto the ADC's 0..1 range linearly:
    # volts = cp_offset_v + value * cp_span_v
    cp_offset_v: float = -12.0
    cp_span_v: float = 24.0
    # PP: the cable's resistor against a pull-up to the ADC reference
    pp_pullup_ohm: float = 1000.0
    # Where the 1 kHz PWM comes from: "sysfs" = the kernel's hardware PWM
    # (/sys/class/pwm/pwmchip<pwm_chip>/pwm<pwm_channel>, needs a dtoverlay=pwm line in
    # config.txt); "lgpio" = gpiozero's software PWM on pwm_pin, an explicit fallback
    # (whole-percent duty, timing shared with every other thread).
    pwm: Literal["sysfs", "lgpio"] = "sysfs"
    pwm_chip: int = 0
    pwm_channel: int = 0  # GPIO18: channel 0 of PWM0 on a Pi 3/4, channel 2 of RP1 PWM0 on a Pi 5
    pwm_sysfs_root: str = "/sys/class/pwm"
    debounce: int = 3  # agreeing CP readings (bursts) before a new EV state is accepted


@dataclass(frozen=True, slots=True)
class MeterBusConfig:
    """One RS485 bus (or Modbus TCP gateway) shared by the connectors' meters."""

    transport: Literal["rtu", "tcp"] = "rtu"
    port: str = "/dev/ttyUSB0"
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    host: str = "127.0.0.1"
    tcp_port: int = 502
    timeout_s: float = 1.0


@dataclass(frozen=True, slots=True)
class ReaderConfig:
    kind: Literal["none", "rc522"] = "rc522"
    spi_bus: int = 0
    spi_device: int = 0
    rst_pin: int = 25  # BCM
    poll_interval_s: float = 0.1
    id_tag_format: str = "hex"  # how a UID becomes an idTag: hal.idtag.ID_TAG_FORMATS


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    contactor: ContactorConfig = field(default_factory=ContactorConfig)
    lock: LockConfig = field(default_factory=LockConfig)
    led: LedConfig = field(default_factory=LedConfig)
    pilot: PilotConfig = field(default_factory=PilotConfig)
    meter_model: str = "sdm630"
    meter_unit_id: int = 1
    rcd: RcdConfig = field(default_factory=RcdConfig)


@dataclass(frozen=True, slots=True)
class MockConfig:
    """The simulated station of the bench."""

    voltage_v: float = 230.0
    ev_max_current_a: float = 32.0
    ev_phases: int = 3
    cable_capacity_a: int = 32
    frequency_hz: float = 50.0
    lock: bool = True  # socket outlet with a lock (False: tethered cable)
    # How long a read of a silent meter takes to fail, as a Modbus timeout would
    # (1 s x 2 tries on a real RS485 bus); 0 fails at once (unit tests on a fake clock).
    meter_silent_delay_s: float = 0.0
    rcd: bool = True  # a residual-current monitor with a test input on every connector


@dataclass(frozen=True, slots=True)
class EmulatedConfig:
    """Pi in a box (``pin_factory = "emulated"``): the Pi drivers on emulated chips.

    ``bench`` must be set for the emulated factory to load at all (see
    hal.emulated.pibox.check_bench_only); the EV's defaults come from MockConfig.
    """

    bench: bool = False
    card_hold_s: float = 1.0  # how long a presented card stays in the RC522's field


@dataclass(frozen=True, slots=True)
class TamperConfig:
    """The enclosure's tamper switch on a GPIO; none by default."""

    pin: int | None = None  # None: no switch wired
    active_high: bool = True  # the level that means "enclosure open"


@dataclass(frozen=True, slots=True)
class HardwareConfig:
    driver: Literal["mock", "pi"] = "mock"
    pin_factory: str | None = None  # gpiozero pin factory ("lgpio", "rpigpio", "mock", "emulated")
    connectors: tuple[ConnectorConfig, ...] = (ConnectorConfig(),)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    meter_bus: MeterBusConfig = field(default_factory=MeterBusConfig)
    mock: MockConfig = field(default_factory=MockConfig)
    emulated: EmulatedConfig = field(default_factory=EmulatedConfig)
    tamper: TamperConfig = field(default_factory=TamperConfig)
