"""Assembles the Pi's drivers into a StationHardware, after checking the wiring is possible.

Every configured use of a GPIO line (and of an ADC channel) is listed first,
so that a pin typed twice in the TOML file is reported with both of its uses
before any line moves, instead of as gpiozero's "pin already in use" halfway
through opening.
"""

from __future__ import annotations

import inspect
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hal.config import HardwareConfig
from hal.errors import HardwareConfigError
from hal.interfaces import ConnectorHardware, StationHardware
from hal.pi.contactor import GpioContactor
from hal.pi.indicator import GpioIndicator
from hal.pi.lock import GpioCableLock
from hal.pi.pilot import GpioPilot
from hal.pi.rcd import GpioRcd, interlock_rcd
from hal.pi.workdir import prepare_lgpio_workdir

__all__ = ["PinUse", "check_pins", "make_pin_factory", "open_pi_station", "pin_uses"]

log = logging.getLogger(__name__)

# BCM pins of the Pi's SPI buses: clock, mosi, miso, then the chip selects.
SPI_PINS: dict[int, tuple[int, int, int, tuple[int, ...]]] = {
    0: (11, 10, 9, (8, 7)),
    1: (21, 20, 19, (18, 17, 16)),
}
ADC_CHANNELS = 8  # MCP3008

_FACTORIES = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
}


@dataclass(frozen=True, slots=True)
class PinUse:
    """One use of a line: ``resource`` is "GPIO17" or an ADC channel; ``use`` says by whom.

    Uses with the same ``shared`` tag may share the resource (SPI users share
    the bus lines, the two channels of one MCP3008 its chip select).
    """

    resource: str
    use: str
    shared: str | None = None


def pin_uses(cfg: HardwareConfig) -> list[PinUse]:
    """Every line and ADC channel ``cfg`` asks for, in configuration order."""
    uses: list[PinUse] = []

    def gpio(pin: int | None, use: str, shared: str | None = None) -> None:
        if pin is not None:
            uses.append(PinUse(f"GPIO{pin}", use, shared))

    def spi(bus: int, device: int, use: str, select_shared: str | None) -> None:
        if bus not in SPI_PINS or not 0 <= device < len(SPI_PINS[bus][3]):
            raise HardwareConfigError(f"{use}: there is no SPI{bus} CE{device} on a Pi")
        clock, mosi, miso, selects = SPI_PINS[bus]
        for pin, line in ((clock, "SCLK"), (mosi, "MOSI"), (miso, "MISO")):
            gpio(pin, f"{use} (SPI{bus} {line})", f"SPI{bus}")
        gpio(selects[device], f"{use} (SPI{bus} CE{device})", select_shared)

    for n, c in enumerate(cfg.connectors, start=1):
        name = f"connector {n}"
        gpio(c.contactor.pin, f"{name} contactor")
        gpio(c.contactor.feedback_pin, f"{name} contactor feedback")
        if c.lock.kind == "motor":
            for pin, role in zip(c.lock.pins, ("lock", "unlock"), strict=False):
                gpio(pin, f"{name} lock motor ({role})")
        elif c.lock.kind == "solenoid":
            for pin in c.lock.pins:
                gpio(pin, f"{name} lock solenoid")
        if c.lock.kind != "none":
            gpio(c.lock.sense_pin, f"{name} lock sense")
        if c.led.kind == "rgb":
            for pin, colour in zip(c.led.pins, ("red", "green", "blue"), strict=False):
                gpio(pin, f"{name} LED {colour}")
        elif c.led.kind == "single":
            for pin in c.led.pins:
                gpio(pin, f"{name} LED")
        gpio(c.rcd.fault_pin, f"{name} residual-current monitor fault output")
        if c.rcd.fault_pin is not None:
            gpio(c.rcd.test_pin, f"{name} residual-current monitor test input")
        p = c.pilot
        gpio(p.pwm_pin, f"{name} pilot PWM")
        adc = f"MCP3008 on SPI0 CE{p.adc_device}"
        spi(0, p.adc_device, f"{name} pilot ADC", adc)
        for channel, line in ((p.cp_channel, "CP"), (p.pp_channel, "PP")):
            if channel is None:
                continue
            if not 0 <= channel < ADC_CHANNELS:
                raise HardwareConfigError(f"{name} {line}: the MCP3008 has no channel {channel}")
            uses.append(PinUse(f"{adc} channel {channel}", f"{name} {line}"))
    if cfg.reader.kind == "rc522":
        r = cfg.reader
        spi(r.spi_bus, r.spi_device, "RC522 reader", None)
        gpio(r.rst_pin, "RC522 reader RST")
    gpio(cfg.tamper.pin, "enclosure tamper switch")
    return uses


def check_pins(cfg: HardwareConfig) -> None:
    """Raise HardwareConfigError naming both uses of the first line used twice."""
    seen: dict[str, PinUse] = {}
    for use in pin_uses(cfg):
        first = seen.get(use.resource)
        if first is None:
            seen[use.resource] = use
        elif first.shared is None or first.shared != use.shared:
            raise HardwareConfigError(
                f"{use.resource} is used twice: by {first.use} and by {use.use}"
            )


def make_pin_factory(name: str) -> Any:
    """The gpiozero pin factory called ``name``; "mock" is a bench factory with emulated ADCs."""
    if name == "mock":
        from hal.emulated.mcp3008 import Mcp3008MockFactory  # the bench's; never on a charger

        return Mcp3008MockFactory()
    try:
        module_name, class_name = _FACTORIES[name]
    except KeyError:
        known = ", ".join([*_FACTORIES, "mock"])
        raise HardwareConfigError(f"unknown pin factory {name!r} (known: {known})") from None
    try:
        module = __import__(module_name, fromlist=[class_name])
        return getattr(module, class_name)()
    except Exception as exc:  # ImportError off a Pi, gpiozero's BadPinFactory, OSError...
        raise HardwareConfigError(f"pin factory {name!r} cannot start: {exc}") from exc


async def open_pi_station(
    cfg: HardwareConfig,
    state_dir: Path,
    *,
    pin_factory: Any = None,
    pwm_settle: Callable[[], None] | None = None,
) -> StationHardware:
    """Open every device of the Pi station; on any failure release what was opened.

    ``pin_factory`` (a gpiozero Factory) wins over ``cfg.pin_factory``; a
    factory built here from its name is closed with the station, one passed
    in belongs to the caller.  ``pwm_settle`` is handed to the sysfs PWM
    drivers (an emulated kernel's ``sync``).  ``state_dir`` is where lgpio makes
    its notification pipe when neither the working directory nor the unit's
    RuntimeDirectory is writable (hal.pi.workdir); with ``pin_factory = "mock"``
    it holds the emulated PWM sysfs tree (hal.emulated.sysfs_pwm) that the
    pilots then use, and the emulated Pi (``pin_factory = "emulated"``) also
    keeps its world there (plugged EVs, meter registers).
    """
    check_pins(cfg)
    if not cfg.connectors:
        raise HardwareConfigError("a station needs at least one connector")
    closers: list[Callable[[], Any]] = []
    world = None
    if pin_factory is None and cfg.pin_factory in (None, "lgpio"):
        prepare_lgpio_workdir([state_dir])  # before anything imports lgpio
    try:
        factory = pin_factory
        if factory is None and cfg.pin_factory == "emulated":
            # Pi in a box (bench only): the chips and the world around them, in-process.
            from hal.emulated.pibox import PiboxWorld

            cfg, tree = _emulated_pwm(cfg, state_dir, closers)
            world = PiboxWorld(cfg, state_dir, pwm_tree=tree)
            closers.append(world.close)
            await world.start()
            factory = world.factory
            pwm_settle = world.pwm_settle  # the kernel plays each write, the EV answers it
            cfg = replace(
                cfg, meter_bus=replace(cfg.meter_bus, transport="rtu", port=world.meter_port)
            )
        elif factory is None and cfg.pin_factory is not None:
            factory = make_pin_factory(cfg.pin_factory)
            closers.append(factory.close)
        if cfg.pin_factory == "mock":  # the bench's emulated Pi (on a given factory too)
            cfg, tree = _emulated_pwm(cfg, state_dir, closers)
            factory.pwm_tree, pwm_settle = tree, tree.sync
            _idle_inputs(factory, cfg, tree)

        from hal.pi.meter import ModbusBus, ModbusMeter  # pymodbus: only a Pi station needs it

        bus = ModbusBus(cfg.meter_bus)
        closers.append(bus.close)

        connectors: list[ConnectorHardware] = []
        for c in cfg.connectors:
            contactor = GpioContactor(c.contactor, pin_factory=factory)
            closers.append(contactor.release)
            lock = None
            if c.lock.kind != "none":
                lock = GpioCableLock(c.lock, pin_factory=factory)
                closers.append(lock.release)
            indicator = GpioIndicator(c.led, pin_factory=factory)
            closers.append(indicator.release)
            pilot = GpioPilot(c.pilot, pin_factory=factory, settle=pwm_settle)
            closers.append(pilot.release)
            meter = ModbusMeter(bus, model=c.meter_model, unit_id=c.meter_unit_id)
            rcd = None
            if c.rcd.fault_pin is not None:
                rcd = GpioRcd(c.rcd, pin_factory=factory)
                closers.append(rcd.release)
                interlock_rcd(rcd, contactor)
            connectors.append(
                ConnectorHardware(
                    contactor=contactor,
                    lock=lock,
                    meter=meter,
                    pilot=pilot,
                    indicator=indicator,
                    rcd=rcd,
                )
            )

        reader = None
        if cfg.reader.kind == "rc522":
            from hal.pi.rfid import Rc522Reader

            # SPI and RST through the station's own pin factory (no RPi.GPIO, no spidev).
            reader = Rc522Reader(cfg.reader, pin_factory=factory)
            closers.append(reader.close)
            await reader.start()
        tamper = None
        if cfg.tamper.pin is not None:
            from hal.tamper import GpioTamperSwitch

            tamper = GpioTamperSwitch(cfg.tamper, pin_factory=factory)
            closers.append(tamper.release)
        if world is not None:
            world.settle()
    except BaseException:
        await _run(reversed(closers))
        raise
    log.info(
        "Pi station opened: %d connector(s), reader %s, meters on %s",
        len(connectors),
        cfg.reader.kind,
        bus.name,
    )
    return StationHardware(
        connectors=connectors, reader=reader, kind="pi", sim=world, closers=closers, tamper=tamper
    )


def _emulated_pwm(
    cfg: HardwareConfig, state_dir: Path, closers: list[Callable[[], Any]]
) -> tuple[HardwareConfig, Any]:
    """The bench's kernel: a PWM sysfs tree in ``state_dir`` that the sysfs pilots use."""
    from hal.emulated.sysfs_pwm import SysfsPwmTree  # the bench's; never on a charger

    chips: dict[int, int] = {}
    for c in cfg.connectors:
        if c.pilot.pwm == "sysfs":
            chips[c.pilot.pwm_chip] = max(chips.get(c.pilot.pwm_chip, 2), c.pilot.pwm_channel + 1)
    root = Path(state_dir) / "sysfs-pwm"
    # The emulated kernel lives and dies with this process: after a kill -9 the next start
    # is its reboot, and a tree left behind would show channels no kernel has exported.
    shutil.rmtree(root, ignore_errors=True)
    tree = SysfsPwmTree(root, chips=chips)
    closers.append(lambda: shutil.rmtree(root, ignore_errors=True))
    conns = tuple(
        replace(c, pilot=replace(c.pilot, pwm_sysfs_root=str(root)))
        if c.pilot.pwm == "sysfs"
        else c
        for c in cfg.connectors
    )
    return replace(cfg, connectors=conns), tree


def _idle_inputs(factory: Any, cfg: HardwareConfig, tree: Any) -> None:
    """A bench without a car: CP follows the PWM with no EV (state A), PP open (no cable)."""
    from hal.emulated.mcp3008 import CpLine

    for c in cfg.connectors:
        p = c.pilot
        adc = factory.adc(p.adc_device)
        pwm = tree.channel(p.pwm_chip, p.pwm_channel) if p.pwm == "sysfs" else None
        adc.set_source(p.cp_channel, CpLine(pwm, offset_v=p.cp_offset_v, span_v=p.cp_span_v))
        if p.pp_channel is not None:
            adc.set_channel(p.pp_channel, 1.0)


async def _run(closers: Any) -> None:
    for closer in closers:
        try:
            result = closer()
            if inspect.isawaitable(result):
                await result
        except Exception:  # every device must get its chance to let go
            log.exception("closing a device of the Pi station failed")
