"""Pi in a box: the physical world around the emulated chips, for the real Pi drivers.

With ``[hardware] driver = "pi"`` and ``pin_factory = "emulated"`` the daemon
opens its real Pi drivers (gpiozero devices, the register-level RC522 reader, gpiozero's
MCP3008, the pymodbus RTU client) on a ``PiboxFactory``: gpiozero MockFactory
pins whose every change this world sees.  The world closes the loops a real
station closes through copper:

* the EV reacts to the pilot PWM (duty and line level) by setting the CP
  voltage the emulated MCP3008 converts, and its cable's PP resistor;
* the contactor's GPIO energises the coil: current flows while the EV asks
  for it (state C), the auxiliary contact and the lock sense follow;
* an Eastron meter, served by a real pymodbus RTU server on a pseudo-terminal,
  answers from the energy the world integrates (``hal.mock.ev.SimConnector``
  holds the physics and its register persists in the state directory);
* cards are placed in the field of an RC522 emulated at register level.

``PiboxWorld`` also offers the bench controls of the mock station (plug,
charge, card, faults...), so the control socket's ``sim`` commands drive a
pibox exactly like the mock, and it keeps a timestamped record of stimuli and
contactor movements from which a bench measures reaction times.  Timestamps
are ``time.monotonic()`` (CLOCK_MONOTONIC, shared by the processes of a
machine).

Nothing here is imported unless the configuration asks for the emulated
factory; see ``check_bench_only`` for what keeps it off a real charger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from hal.config import ConnectorConfig, HardwareConfig
from hal.emulated import modbus_meter as modbus
from hal.emulated import rc522
from hal.emulated.mcp3008 import CpLine
from hal.emulated.pibox_chips import (
    REPORTED,
    PiboxFactory,
    PinPwm,
    WorldMeter,
    WorldPin,
    attach_rcd,
    bursts,
)
from hal.errors import HardwareConfigError
from hal.mock.ev import SimConnector, connector_index, restore_world, save_world
from hal.mock.register import EnergyRegister
from hal.pilot_math import current_for_duty

__all__ = ["FAULT_NAMES", "PiboxFactory", "PiboxWorld", "check_bench_only"]

log = logging.getLogger(__name__)

FAULT_NAMES: tuple[str, ...] = (
    "meter_silent",  # the RS485 line is cut: every meter on it falls silent
    "contactor_welded",  # the contacts stick closed from their next closing on
    "lock_jammed",  # the lock motor turns but the pin does not move
    "reader_dead",  # the RC522 falls off the SPI bus (reads 0x00)
    "ev_error",  # the EV shows state E: CP shorted to PE (0 V)
    "ev_state_f",  # the CP line sits near -12 V (state F), e.g. a failed EV or front end
    "rcd_trip",  # a residual current: the monitor's fault output goes active (off: released)
    "lock_lost",  # the cable lock lets go under the plug (its sense reads unlocked)
    "rcd_test_fail",  # the residual-current monitor's output no longer moves: self-test fails
)
RCD_TRIP_AFTER_S = 0.02  # the emulated module's own reaction to its test input
F_LEVEL_V = -11.5  # the "ev_state_f" fault's CP level
PP_OHM = {13: 1500.0, 20: 680.0, 32: 220.0, 63: 100.0, 70: 100.0}
HISTORY = 2000  # contactor movements and stimuli kept for the bench


def check_bench_only(cfg: HardwareConfig) -> None:
    """Refuse the emulated factory unless the file says it is a bench.

    A daemon on emulated chips charges nothing but tells the CSMS it does:
    sessions and energy invented on a real charger would be billed.  So the
    factory needs ``[hardware.emulated] bench = true`` next to it, and a file
    meant for a charger (which never has that line) cannot select it by a typo.
    """
    if cfg.pin_factory != "emulated":
        return
    if cfg.driver != "pi":
        raise HardwareConfigError('pin_factory "emulated" runs the Pi drivers: set driver = "pi"')
    if not cfg.emulated.bench:
        raise HardwareConfigError(
            'pin_factory "emulated" runs on emulated chips and reports invented energy to '
            "the CSMS; it is for a bench only: add [hardware.emulated] bench = true"
        )


class _Connector:
    """One connector's copper: its wiring (config), its physics (SimConnector), its faults."""

    def __init__(self, number: int, cfg: ConnectorConfig, sim: SimConnector) -> None:
        self.number = number
        self.cfg = cfg
        self.sim = sim
        self.locked = False
        self.lock_jammed = False
        self.lock_lost = False
        self.cp_f = False
        self.rcd: Any = None  # hal.emulated.rcd.RcdModule, when the connector has a monitor
        self.energised = False
        self.energised_at: float | None = None  # time.monotonic() of the coil's last change
        self.line: CpLine | None = None  # the CP wire, once the world is started


class PiboxWorld:
    """The EVs, cables, cards and copper of an emulated Pi station, and their bench controls."""

    FAULT_NAMES = FAULT_NAMES

    def __init__(self, cfg: HardwareConfig, state_dir: Path, *, pwm_tree: Any = None) -> None:
        """``pwm_tree`` is the emulated kernel (hal.emulated.sysfs_pwm.SysfsPwmTree) of the
        connectors whose pilot is on the sysfs PWM; the others' PWM is a gpiozero pin."""
        check_bench_only(cfg)
        self._tree = pwm_tree
        self._cfg = cfg
        self._state_dir = Path(state_dir)
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.factory = PiboxFactory()
        self.factory.on_pin_change = self._on_pin_change
        mock = cfg.mock
        self._conns: list[_Connector] = []
        for n, c in enumerate(cfg.connectors, start=1):
            # Written at every change (not once a second as the mock's): a kill -9 kills this
            # meter with the daemon, and a real meter never reads less after a restart.
            register = EnergyRegister(
                self._state_dir / f"pibox-meter-{n}.json", monotonic=time.monotonic, interval_s=0.0
            )
            sim = SimConnector(
                n,
                voltage_v=mock.voltage_v,
                frequency_hz=mock.frequency_hz,
                register=register,
                monotonic=time.monotonic,
            )
            self._conns.append(_Connector(n, c, sim))
        self.chip = rc522.Rc522()
        self._cable: modbus.PtyCable | None = None
        self._server: Any = None
        self.events: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.contactor_moves: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._world_file = self._state_dir / "pibox-world.json"
        self._restore()

    # -- lifecycle ---------------------------------------------------------------

    @property
    def meter_port(self) -> str:
        """The serial device the daemon's meter bus opens (the far end of the pty cable)."""
        if self._cable is None:
            raise RuntimeError("the pibox world is not started")
        return self._cable.paths[1]

    async def start(self) -> None:
        """Lay the RS485 cable, start the meters' server, put the RC522 on SPI."""
        self._cable = modbus.PtyCable()
        meters = [
            WorldMeter(
                unit_id=c.cfg.meter_unit_id,
                model=c.cfg.meter_model,
                sample=lambda c=c: self._sample(c),
            )
            for c in self._conns
        ]  # one Modbus unit per connector's meter
        self._server = await modbus.start_rtu_server(meters, self._cable.paths[0])  # type: ignore[arg-type]
        if self._cfg.reader.kind == "rc522":
            r = self._cfg.reader
            # The chip behind SPI<bus> CE<device> of the factory, its NRSTPD on the RST pin.
            rc522.attach(
                self.factory, self.chip, port=r.spi_bus, device=r.spi_device, rst_pin=r.rst_pin
            )
        for c in self._conns:
            r = c.cfg.rcd
            if r.fault_pin is not None:
                c.rcd = attach_rcd(
                    self.factory,
                    fault_pin=r.fault_pin,
                    test_pin=r.test_pin,
                    fault_active_high=r.fault_active_high,
                    test_active_high=r.test_active_high,
                    trip_after_s=min(RCD_TRIP_AFTER_S, r.trip_time_s / 2),
                )
            p = c.cfg.pilot
            c.line = CpLine(self._pwm(c), offset_v=p.cp_offset_v, span_v=p.cp_span_v)
            self.factory.adc(p.adc_device).set_source(p.cp_channel, c.line)
            self._set_lines(c)
        log.warning(
            "pibox: the Pi drivers run on EMULATED chips (bench only); meters on %s",
            self.meter_port,
        )

    def _pwm(self, c: _Connector) -> Any:
        """The CP generator's output: a sysfs PWM channel of the kernel, or a gpiozero pin."""
        p = c.cfg.pilot
        if p.pwm == "sysfs":
            if self._tree is None:
                raise HardwareConfigError("the emulated Pi needs a PWM sysfs tree for pwm = sysfs")
            return self._tree.channel(p.pwm_chip, p.pwm_channel)
        return PinPwm(self._pin(p.pwm_pin))

    def _pwm_now(self, c: _Connector) -> tuple[float, float | None]:
        """(duty 0..1, frequency in Hz or None when the generator does not run)."""
        pwm = self._pwm(c)
        if isinstance(pwm, PinPwm):
            return float(pwm.pin.state or 0.0), pwm.pin.frequency
        period = pwm.realised_period_ns
        if not (pwm.exported and pwm.enabled) or period == 0:
            return 0.0, None
        duty = pwm.duty if pwm.polarity == "normal" else 1.0 - pwm.duty
        return duty, 1e9 / period

    def pwm_settle(self) -> None:
        """The pilot driver's hook after each sysfs write: the kernel applies it, the EV answers."""
        if self._tree is not None:
            self._tree.sync()
        with self._lock:
            for c in self._conns:
                self._update(c)

    def settle(self) -> None:
        """After the drivers opened their devices: put every input at its world level."""
        with self._lock:
            for c in self._conns:
                self._update(c)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        if self._cable is not None:
            self._cable.close()
            self._cable = None
        for c in self._conns:
            c.sim.close()
        self.factory.close()

    # -- the copper: pins in, levels out ------------------------------------------

    def _on_pin_change(self, pin: WorldPin) -> None:
        number = pin.info.name  # "GPIO17"
        with self._lock:
            for c in self._conns:
                if number in self._outputs(c):
                    self._update(c)

    @staticmethod
    def _outputs(c: _Connector) -> set[str]:
        pins = {c.cfg.contactor.pin, c.cfg.pilot.pwm_pin, *c.cfg.lock.pins}
        return {f"GPIO{p}" for p in pins}

    def _pin(self, number: int) -> WorldPin:
        return self.factory.pin(number)  # created on first use, shared with the driver

    def _update(self, c: _Connector) -> None:
        """Recompute what the world does from the station's outputs; drive its inputs."""
        cfg = c.cfg
        # Pilot PWM -> the offer the EV reads.
        duty, freq = self._pwm_now(c)
        offer = current_for_duty(duty) if freq is not None and 0.0 < duty < 1.0 else None
        c.sim.set_offer(offer)
        # Contactor coil: a pull-down holds an undriven line low.
        coil = bool(self._pin(cfg.contactor.pin).state) == cfg.contactor.active_high
        if coil != c.energised:
            c.energised, c.energised_at = coil, time.monotonic()
            self.contactor_moves.append(
                {"t": c.energised_at, "connector": c.number, "closed": coil}
            )
        c.sim.command_contacts(coil)
        k = cfg.contactor
        if k.feedback_pin is not None:
            self._drive(k.feedback_pin, c.sim.contacts_closed, k.feedback_active_high)
        # Cable lock.
        lk = cfg.lock
        if lk.kind != "none" and lk.pins and not c.lock_jammed:
            active = [bool(self._pin(p).state) for p in lk.pins]
            if lk.kind == "solenoid":
                c.locked = active[0]
            elif active[0] and not (len(active) > 1 and active[1]):
                c.locked = True
            elif len(active) > 1 and active[1] and not active[0]:
                c.locked = False
        if lk.kind != "none" and lk.sense_pin is not None:
            self._drive(lk.sense_pin, c.locked and not c.lock_lost, lk.sense_active_high)
        self._set_lines(c)

    def _drive(self, number: int, active: bool, active_high: bool) -> None:
        pin = self._pin(number)
        if pin.function != "input":
            return  # the station drives it: not ours to move
        if active == active_high:
            pin.drive_high()
        else:
            pin.drive_low()

    def _set_lines(self, c: _Connector) -> None:
        """What the EV and its cable put on the CP and PP lines the MCP3008 converts."""
        p = c.cfg.pilot
        if c.line is not None:
            if c.cp_f:
                # The line sits near -12 V whatever the PWM (the rail less its output drop:
                # an ADC exactly at its rail is a dead chip, which is another fault).
                c.line.set_levels(F_LEVEL_V, F_LEVEL_V)
            else:
                c.line.plug(c.sim.ev_state().value)
        if p.pp_channel is not None:
            adc = self.factory.adc(p.adc_device)
            if c.sim.plugged and c.sim.cable_capacity_a is not None:
                ohm = PP_OHM[c.sim.cable_capacity_a]
                adc.set_channel(p.pp_channel, ohm / (ohm + p.pp_pullup_ohm))
            else:
                adc.set_channel(p.pp_channel, 1.0)

    # -- bench controls (the mock station's contract) -------------------------------

    @property
    def connector_count(self) -> int:
        return len(self._conns)

    def _conn(self, connector: int) -> _Connector:
        return self._conns[connector_index(connector, len(self._conns))]

    def _event(self, name: str, connector: int | None = None, **extra: Any) -> None:
        self.events.append({"t": time.monotonic(), "event": name, "connector": connector, **extra})

    def plug(
        self,
        connector: int,
        *,
        ev_max_current_a: float | None = None,
        phases: int | None = None,
        cable_capacity_a: int | None = None,
    ) -> None:
        c = self._conn(connector)
        mock = self._cfg.mock
        with self._lock:
            c.sim.plug(
                ev_max_current_a=mock.ev_max_current_a
                if ev_max_current_a is None
                else ev_max_current_a,
                phases=mock.ev_phases if phases is None else phases,
                cable_capacity_a=mock.cable_capacity_a
                if cable_capacity_a is None
                else cable_capacity_a,
            )
            self._event("plug", connector)
            self._update(c)
        self._save()

    def charge(self, connector: int) -> None:
        self._wants(connector, True)

    def suspend(self, connector: int) -> None:
        self._wants(connector, False)

    def _wants(self, connector: int, wants: bool) -> None:
        c = self._conn(connector)
        with self._lock:
            c.sim.set_wants_charge(wants)
            self._event("charge" if wants else "suspend", connector)
            self._update(c)
        self._save()

    def unplug(self, connector: int) -> None:
        c = self._conn(connector)
        with self._lock:
            c.sim.unplug()
            self._event("unplug", connector)
            self._update(c)
        self._save()

    def present_card(self, uid: str) -> bool:
        """Hold a card in the RC522's field for ``card_hold_s``; False if the chip is dead."""
        card = rc522.Card(uid)  # ValueError for a UID of the wrong length or not hex
        self.chip.place(card)
        self._event("card", None, uid=card.uid.hex().upper())
        timer = threading.Timer(self._cfg.emulated.card_hold_s, self._take_away, (card,))
        timer.daemon = True
        timer.start()
        return self.chip.dead is None

    def _take_away(self, card: rc522.Card) -> None:
        try:
            self.chip.remove(card)
        except ValueError:
            pass  # already gone

    def set_energy_wh(self, connector: int, wh: float) -> None:
        with self._lock:
            self._conn(connector).sim.set_energy_wh(wh)

    def fault(self, name: str, on: bool, connector: int | None = None) -> None:
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r}; known faults: {', '.join(FAULT_NAMES)}")
        if not isinstance(on, bool):
            raise ValueError(f"fault {name!r}: on must be True or False, got {on!r}")
        if connector is not None:
            self._conn(connector)
        with self._lock:
            self._event(f"{name}_{'on' if on else 'off'}", connector)
            if name == "reader_dead":
                if on:
                    self.chip.kill("silent")
                else:
                    self.chip.revive()
            elif name == "meter_silent":
                assert self._cable is not None
                self._cable.cut() if on else self._cable.mend()
            else:
                targets = self._conns if connector is None else [self._conn(connector)]
                for c in targets:
                    if name == "contactor_welded":
                        c.sim.set_welded(on)
                    elif name == "lock_jammed":
                        c.lock_jammed = on
                    elif name == "ev_error":
                        c.sim.set_ev_error(on)
                    elif name == "ev_state_f":
                        c.cp_f = on
                    elif name == "lock_lost":
                        c.lock_lost = on
                    elif name in ("rcd_trip", "rcd_test_fail"):
                        self._rcd_fault(c, name, on)
                    self._update(c)
        log.warning(
            "pibox: fault %s %s%s",
            name,
            "injected" if on else "cleared",
            " (the RS485 line is shared: every meter)" if name == "meter_silent" else "",
        )

    @staticmethod
    def _rcd_fault(c: _Connector, name: str, on: bool) -> None:
        if c.rcd is None:
            raise ValueError(f"{name}: connector {c.number} has no residual-current monitor")
        if name == "rcd_trip":
            c.rcd.trip() if on else c.rcd.reset()
        else:
            c.rcd.dead = on

    def active_faults(self) -> dict[str, Any]:
        active: dict[str, Any] = {}
        if self.chip.dead is not None:
            active["reader_dead"] = True
        if self._cable is not None and not self._cable.connected:
            active["meter_silent"] = True
        flags = {
            "contactor_welded": lambda c: c.sim.welded,
            "lock_jammed": lambda c: c.lock_jammed,
            "ev_error": lambda c: c.sim.ev_error,
            "ev_state_f": lambda c: c.cp_f,
            "lock_lost": lambda c: c.lock_lost,
            "rcd_trip": lambda c: c.rcd is not None and c.rcd.tripped,
            "rcd_test_fail": lambda c: c.rcd is not None and c.rcd.dead,
        }
        for name, flag in flags.items():
            numbers = [c.number for c in self._conns if flag(c)]
            if numbers:
                active[name] = numbers
        return active

    def snapshot(self, *, since: float = 0.0) -> dict[str, Any]:
        """The world as a bench sees it, with the timestamped records after ``since``."""
        with self._lock:
            connectors = []
            for c in self._conns:
                s = c.sim
                duty, freq = self._pwm_now(c)
                connectors.append(
                    {
                        "connector": c.number,
                        "plugged": s.plugged,
                        "ev_state": "F" if c.cp_f else s.ev_state().value,
                        "wants_charge": s.wants_charge,
                        "pwm": c.cfg.pilot.pwm,
                        "pwm_duty": duty,
                        "pwm_frequency_hz": freq,
                        "offered_current_a": s.offered_current_a,
                        "coil_energised": c.energised,
                        "coil_changed_at": c.energised_at,
                        "contactor_closed": s.contacts_closed,
                        "locked": c.locked,
                        "power_w": s.power_w(),
                        "energy_wh": s.energy_wh,
                    }
                )
            return {
                "kind": "pibox",
                "connectors": connectors,
                "reader": {"dead": self.chip.dead is not None, "cards": len(self.chip.cards)},
                "faults": self.active_faults(),
                "events": [e for e in self.events if e["t"] > since][-REPORTED:],
                "contactor_moves": [m for m in self.contactor_moves if m["t"] > since][-REPORTED:],
                "pilot_readings": self.factory.readings,
                "adc_transfers": sum(1 for t in self.factory.transfer_times if t > since),
                "adc_bursts": bursts([t for t in self.factory.transfer_times if t > since]),
                "now": time.monotonic(),
            }

    def _sample(self, c: _Connector) -> Any:
        with self._lock:
            return c.sim.sample()

    # -- what survives the daemon ---------------------------------------------------

    def _save(self) -> None:
        """The cars stay plugged when the daemon dies (kill -9, power cut of the Pi)."""
        save_world(self._world_file, [c.sim for c in self._conns])

    def _restore(self) -> None:
        restore_world(self._world_file, [c.sim for c in self._conns], who="pibox")
