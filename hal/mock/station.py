"""The simulated station: its devices for the daemon, its controls for the bench.

``open_mock_station`` returns the same StationHardware the Pi driver does, so
the daemon cannot tell the difference; ``StationHardware.sim`` is the
MockStation through which a bench, a CSMS team or a test plays the car, the
cable, the card and the faults.  Every control is synchronous and safe to call
from the event loop, and rejects what cannot happen with a ValueError that
says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hal.config import HardwareConfig, MockConfig
from hal.errors import HardwareConfigError
from hal.interfaces import ConnectorHardware, StationHardware
from hal.mock.devices import (
    MockCableLock,
    MockContactor,
    MockEnergyMeter,
    MockIndicator,
    MockPilot,
    MockRfidReader,
)
from hal.mock.ev import (
    SimConnector,
    connector_index,
    restore_world,
    save_world,
    validate_ev,
)
from hal.mock.rcd import MockRcd
from hal.mock.register import EnergyRegister
from hal.tamper import MockTamperSwitch

log = logging.getLogger(__name__)

FAULT_NAMES: tuple[str, ...] = (
    "meter_silent",  # the meter stops answering; its register keeps counting
    "contactor_welded",  # contacts stick closed from their next closing on
    "lock_jammed",  # the cable lock no longer moves
    "reader_dead",  # the card reader sees nothing (station-wide: the reader is shared)
    "ev_error",  # the EV shows a CP fault: state E (see SimConnector.ev_state)
    "rcd_trip",  # the residual-current monitor trips (a fault current); off: it releases
    "lock_lost",  # the cable lock lets go under the plug (its sense reads unlocked)
    "rcd_test_fail",  # the residual-current monitor fails its self-test
    "tamper",  # the enclosure is opened (station-wide: its tamper switch); off: closed again
)
_STATION_FAULTS = frozenset({"reader_dead", "tamper"})


@dataclass
class MockConnector:
    """One simulated connector: its physics and the devices that look at it."""

    sim: SimConnector
    contactor: MockContactor
    lock: MockCableLock | None
    meter: MockEnergyMeter
    pilot: MockPilot
    indicator: MockIndicator
    rcd: MockRcd | None = None

    def hardware(self) -> ConnectorHardware:
        return ConnectorHardware(
            contactor=self.contactor,
            lock=self.lock,
            meter=self.meter,
            pilot=self.pilot,
            indicator=self.indicator,
            rcd=self.rcd,
        )


class MockStation:
    """Bench controls of the simulated station.  Connectors are numbered from 1."""

    FAULT_NAMES = FAULT_NAMES

    def __init__(
        self,
        connectors: list[MockConnector],
        reader: MockRfidReader,
        mock: MockConfig,
        world_file: Path | None = None,
    ) -> None:
        self._connectors = connectors
        self.reader = reader
        self._mock = mock
        self._world_file = world_file
        self.tamper = MockTamperSwitch()  # the enclosure (sim fault tamper on|off)

    # -- the world outside the daemon ----------------------------------------

    def _save_world(self) -> None:
        if self._world_file is not None:
            save_world(self._world_file, [c.sim for c in self._connectors])

    def _restore_world(self) -> None:
        if self._world_file is not None:
            restore_world(self._world_file, [c.sim for c in self._connectors], who="mock")

    @property
    def connector_count(self) -> int:
        return len(self._connectors)

    def connector(self, connector: int) -> MockConnector:
        """The simulated parts of one connector (for tests that look inside)."""
        return self._connectors[connector_index(connector, len(self._connectors))]

    # -- the car and its cable -----------------------------------------------

    def plug(
        self,
        connector: int,
        *,
        ev_max_current_a: float | None = None,
        phases: int | None = None,
        cable_capacity_a: int | None = None,
    ) -> None:
        """Plug a car in (state B); unset values come from the MockConfig."""
        c = self.connector(connector)
        ev_a = self._mock.ev_max_current_a if ev_max_current_a is None else ev_max_current_a
        ph = self._mock.ev_phases if phases is None else phases
        cable = self._mock.cable_capacity_a if cable_capacity_a is None else cable_capacity_a
        c.sim.plug(ev_max_current_a=ev_a, phases=ph, cable_capacity_a=cable)
        self._save_world()
        log.info(
            "mock: connector %s plugged (EV %s A on %s phase(s), cable %s A)",
            connector,
            ev_a,
            ph,
            cable,
        )

    def charge(self, connector: int) -> None:
        """The car wants to charge: state C as soon as (and while) PWM is offered."""
        self.connector(connector).sim.set_wants_charge(True)
        self._save_world()
        log.info("mock: EV on connector %s wants to charge", connector)

    def suspend(self, connector: int) -> None:
        """The car stops wanting to charge: state B, draws nothing."""
        self.connector(connector).sim.set_wants_charge(False)
        self._save_world()
        log.info("mock: EV on connector %s suspends", connector)

    def unplug(self, connector: int) -> None:
        """Pull the cable, at any time, under load included (it happens)."""
        c = self.connector(connector)
        under_load = c.sim.current_a() > 0
        c.sim.unplug()
        self._save_world()
        log.info("mock: connector %s unplugged%s", connector, " under load" if under_load else "")

    def present_card(self, uid: str) -> bool:
        """Hold a card to the reader; False when the reader is dead and missed it."""
        return self.reader.present(uid)

    def set_energy_wh(self, connector: int, wh: float) -> None:
        """Jump a meter's register forward, e.g. to test large readings."""
        self.connector(connector).sim.set_energy_wh(wh)

    # -- faults --------------------------------------------------------------

    def fault(self, name: str, on: bool, connector: int | None = None) -> None:
        """Inject (on=True) or clear a fault, on one connector or (None) on all."""
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r}; known faults: {', '.join(FAULT_NAMES)}")
        if not isinstance(on, bool):
            raise ValueError(f"fault {name!r}: on must be True or False, got {on!r}")
        if name in _STATION_FAULTS:
            if connector is not None:
                raise ValueError(
                    f"{name} is a station fault (one reader, one enclosure); leave connector unset"
                )
            if name == "tamper":
                self.tamper.set(on)
                return
            self.reader.dead = on
            log.warning("mock: fault %s %s", name, "injected" if on else "cleared")
            return
        targets = self._connectors if connector is None else [self.connector(connector)]
        if name in ("lock_jammed", "lock_lost"):
            targets = [c for c in targets if c.lock is not None]
            if not targets:
                where = "this station" if connector is None else f"connector {connector}"
                raise ValueError(f"{name}: {where} has no cable lock (tethered cable)")
        if name in ("rcd_trip", "rcd_test_fail"):
            targets = [c for c in targets if c.rcd is not None]
            if not targets:
                where = "this station" if connector is None else f"connector {connector}"
                raise ValueError(f"{name}: {where} has no residual-current monitor")
        for c in targets:
            if name == "meter_silent":
                c.meter.silent = on
            elif name == "contactor_welded":
                c.sim.set_welded(on)
            elif name == "lock_jammed":
                assert c.lock is not None
                c.lock.jammed = on
            elif name == "ev_error":
                c.sim.set_ev_error(on)
            elif name == "lock_lost":
                assert c.lock is not None
                c.lock.lost = on
            elif name == "rcd_trip":
                assert c.rcd is not None
                if on:
                    c.rcd.trip()
                else:
                    c.rcd.reset()
            elif name == "rcd_test_fail":
                assert c.rcd is not None
                c.rcd.fail_test = on
        log.warning(
            "mock: fault %s %s on connector(s) %s",
            name,
            "injected" if on else "cleared",
            ", ".join(str(c.sim.number) for c in targets),
        )

    def active_faults(self) -> dict[str, Any]:
        """Injected faults only: connector faults -> [connector numbers], reader_dead -> True."""
        active: dict[str, Any] = {}
        flags = {
            "meter_silent": lambda c: c.meter.silent,
            "contactor_welded": lambda c: c.sim.welded,
            "lock_jammed": lambda c: c.lock is not None and c.lock.jammed,
            "ev_error": lambda c: c.sim.ev_error,
            "rcd_trip": lambda c: c.rcd is not None and c.rcd.tripped,
            "lock_lost": lambda c: c.lock is not None and c.lock.lost,
            "rcd_test_fail": lambda c: c.rcd is not None and c.rcd.fail_test,
        }
        for name in FAULT_NAMES:
            if name in _STATION_FAULTS:
                if self.reader.dead if name == "reader_dead" else self.tamper.opened:
                    active[name] = True
                continue
            numbers = [c.sim.number for c in self._connectors if flags[name](c)]
            if numbers:
                active[name] = numbers
        return active

    def snapshot(self) -> dict[str, Any]:
        """Everything the bench shows, JSON-ready (for chargerctl and status)."""
        return {
            "connectors": [self._connector_snapshot(c) for c in self._connectors],
            "reader": {"dead": self.reader.dead, "pending_cards": self.reader.pending},
            "faults": self.active_faults(),
        }

    @staticmethod
    def _connector_snapshot(c: MockConnector) -> dict[str, Any]:
        s = c.sim
        return {
            "connector": s.number,
            "plugged": s.plugged,
            "ev_state": s.ev_state().value,
            "wants_charge": s.wants_charge,
            "ev_max_current_a": s.ev_max_current_a if s.plugged else None,
            "phases": s.phases if s.plugged else None,
            "cable_capacity_a": s.cable_capacity_a if s.plugged else None,
            "offered_current_a": s.offered_current_a,
            # physical contacts (a welded contactor is closed while commanded open)
            "contactor_closed": s.contacts_closed,
            "contactor_commanded": s.contactor_commanded,
            "locked": c.lock.locked if c.lock is not None else None,
            "rcd_tripped": c.rcd.tripped if c.rcd is not None else None,
            "indicator": c.indicator.state.value,
            "power_w": s.power_w(),
            "energy_wh": s.energy_wh,
            "current_a": s.current_a(),
            # for reaction-time probes (chargerd.bench.perflib.reaction)
            "contactor_changed_at": c.contactor.changed_at,
            "pilot_reads": c.pilot.reads,
        }

    def close(self) -> None:
        """Persist every meter register; the station's files are released."""
        for c in self._connectors:
            c.sim.close()


def _check_mock_config(mock: MockConfig) -> None:
    try:
        validate_ev(mock.ev_max_current_a, mock.ev_phases, mock.cable_capacity_a)
    except ValueError as exc:
        raise HardwareConfigError(f"[hardware.mock]: {exc}") from exc
    if not mock.voltage_v > 0:
        raise HardwareConfigError(f"[hardware.mock]: voltage_v must be > 0, got {mock.voltage_v}")
    if not mock.frequency_hz > 0:
        raise HardwareConfigError(
            f"[hardware.mock]: frequency_hz must be > 0, got {mock.frequency_hz}"
        )


def _interlock(rcd: MockRcd, contactor: MockContactor) -> None:
    """A trip opens the contactor inside the trip; a tripped monitor keeps it open."""
    rcd.on_trip(contactor.open_now)
    contactor.add_interlock(lambda: "residual-current monitor tripped" if rcd.tripped else None)


def open_mock_station(
    cfg: HardwareConfig,
    state_dir: Path,
    *,
    connectors: int,
    monotonic: Callable[[], float] = time.monotonic,
) -> StationHardware:
    """Build the simulated station; its meter registers live in ``state_dir``.

    Physics come from ``cfg.mock`` for every connector (``cfg.connectors`` is
    wiring, which a simulation has none of).  Close it with
    ``StationHardware.aclose()`` so that the registers are written.
    """
    if isinstance(connectors, bool) or not isinstance(connectors, int) or connectors < 1:
        raise HardwareConfigError(f"a station has at least 1 connector, got {connectors!r}")
    mock = cfg.mock
    _check_mock_config(mock)
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    parts: list[MockConnector] = []
    for n in range(1, connectors + 1):
        register = EnergyRegister(state_dir / f"mock-meter-{n}.json", monotonic=monotonic)
        sim = SimConnector(
            n,
            voltage_v=mock.voltage_v,
            frequency_hz=mock.frequency_hz,
            register=register,
            monotonic=monotonic,
        )
        contactor = MockContactor(sim)
        rcd = MockRcd(n) if mock.rcd else None
        if rcd is not None:
            _interlock(rcd, contactor)
        parts.append(
            MockConnector(
                sim=sim,
                contactor=contactor,
                lock=MockCableLock(n) if mock.lock else None,
                meter=MockEnergyMeter(sim, silent_delay_s=mock.meter_silent_delay_s),
                pilot=MockPilot(sim),
                indicator=MockIndicator(monotonic),
                rcd=rcd,
            )
        )
    reader = MockRfidReader()
    station = MockStation(parts, reader, mock, world_file=state_dir / "mock-world.json")
    station._restore_world()
    log.info("mock station opened: %s connector(s), registers in %s", connectors, state_dir)
    return StationHardware(
        connectors=[p.hardware() for p in parts],
        reader=reader,
        kind="mock",
        sim=station,
        closers=[station.close],
        tamper=station.tamper,
    )
