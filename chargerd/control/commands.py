"""The daemon's control-socket commands (the contract behind ``chargerctl``).

Each command reads the services' state or asks them to act; none keeps state
of its own.  The JSON shapes are a stable contract for technicians' scripts:
extend them, never rename.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from chargerd.control.card_outcome import card_outcome
from chargerd.control.security_log_cmds import security_log_handlers
from chargerd.control.server import CommandRefused, CommandUsageError, NotFound
from chargerd.features import protection
from chargerd.features.metering import displayed_power_w
from hal.errors import HardwareError
from hal.idtag import normalize_presented
from hal.interfaces import IndicatorState

if TYPE_CHECKING:
    from chargerd.control.view import DaemonView as Daemon  # not daemon.py: no import circle
    from chargerd.features.connectors import ConnectorRuntime


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


class Commands:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    # -- helpers ---------------------------------------------------------------------------

    def _connector(self, args: dict, key: str = "connector") -> ConnectorRuntime:
        raw = args.get(key)
        try:
            cid = int(raw)
        except (TypeError, ValueError):
            raise CommandUsageError(f"{key} must be a connector number, got {raw!r}") from None
        conn = self.d.supervisor.connectors.get(cid)
        if conn is None:
            n = len(self.d.supervisor.connectors)
            raise NotFound(f"unknown connector {cid}: this station has connectors 1..{n}")
        return conn

    def _sim(self):
        sim = self.d.hardware.sim
        if sim is None:
            raise CommandRefused(
                "sim commands work on the mock station only; this is real hardware"
            )
        return sim

    def _sim_call(self, fn, *args, **kwargs) -> dict:
        try:
            fn(*args, **kwargs)
        except ValueError as exc:
            raise CommandRefused(str(exc)) from None
        self.d.supervisor.poke()
        return {"done": True}

    # -- status and meter ---------------------------------------------------------------

    def connector_status(self, conn: ConnectorRuntime) -> dict[str, Any]:
        hw = conn.hw
        s = conn.sample
        return {
            "id": conn.id,
            "status": conn.status,
            "error_code": conn.error_code,
            "ev_state": conn.ev_state.value,
            "contactor_closed": hw.contactor.closed,
            "locked": hw.lock.locked if hw.lock is not None else None,
            "offered_current_a": hw.pilot.offered_current_a,
            "power_w": _round(displayed_power_w(s, contactor_closed=hw.contactor.closed)),
            "energy_wh": _round(s.energy_wh) if s else None,
            "transaction_id": conn.tx.transaction_id if conn.tx else None,
            "transaction_local_id": conn.tx.local_id if conn.tx else None,
            "id_tag": conn.tx.id_tag
            if conn.tx
            else (conn.authorization.id_tag if conn.authorization else None),
            "operative": conn.operative,
            "faults": sorted(conn.faults),
            "reservation": self._reservation_of(conn.id),
            **self._smart_charging_of(conn),
            "rcd_tripped": hw.rcd.tripped if hw.rcd is not None else None,
        }

    def _reservation_of(self, connector_id: int) -> dict[str, Any] | None:
        reservations = getattr(self.d, "reservations", None)
        r = reservations.of_connector(connector_id) if reservations is not None else None
        return r.to_json() if r is not None else None

    def _smart_charging_of(self, conn: ConnectorRuntime) -> dict[str, Any]:
        """limit_a / limit_source: the smart-charging limit in force and where it comes from."""
        service = getattr(self.d, "smart_charging", None)
        if service is None:
            return {}
        return service.status_fields(conn.id)

    async def status(self, args: dict) -> dict:
        d = self.d
        faults = [
            {"connector": c.id, "fault": f}
            for c in d.supervisor.connectors.values()
            for f in sorted(c.faults)
        ]
        reader_faults = sorted(d.hardware.reader.faults()) if d.hardware.reader else []
        faults += [{"connector": 0, "fault": f} for f in reader_faults]
        return {
            "station": {
                "charge_point_id": d.cfg.station.charge_point_id,
                "vendor": d.cfg.station.vendor,
                "model": d.cfg.station.model,
                "firmware_version": d.cfg.station.firmware_version,
                "hardware": d.hardware.kind,
                "uptime_s": round(d.clock.monotonic() - d.started_at, 1),
                "operative": d.supervisor.station_operative,
            },
            "ocpp": {
                "csms_url": d.cfg.csms.url,
                "connected": d.link.connected,
                "registration": d.boot.registration,
                "outbox_pending": d.outbox.pending(),
                "last_heartbeat": d.boot.last_heartbeat,
                # the profile in force (the CSMS may have raised [csms] security_profile)
                "security_profile": getattr(getattr(d, "link_security", None), "profile", None),
            },
            "connectors": [self.connector_status(c) for c in d.supervisor.connectors.values()],
            "reader": {"faults": reader_faults, "last_card": d.cards.last_card},
            "faults": faults,
            **self._reservations_and_list(),
            **self._uploads(),
            **self._certificates(),
            **self._firmware(),
        }

    def _certificates(self) -> dict[str, Any]:
        """The station certificate's expiry and the number of installed roots."""
        service = getattr(self.d, "certificates", None)
        return {"certificates": service.status_fields()} if service is not None else {}

    def _uploads(self) -> dict[str, Any]:
        """uploads: the last GetDiagnostics and GetLog uploads (features/diagnostics.py)."""
        service = getattr(self.d, "diagnostics", None)
        return {"uploads": service.status()} if service is not None else {}

    def _firmware(self) -> dict[str, Any]:
        """firmware: the running version and the update under way (features/firmware.py)."""
        service = getattr(self.d, "firmware", None)
        return {"firmware": service.state()} if service is not None else {}

    def _reservations_and_list(self) -> dict[str, Any]:
        """Every reservation (connector 0 ones too) and the Local Auth List's version."""
        d = self.d
        out: dict[str, Any] = {}
        if getattr(d, "reservations", None) is not None:
            out["reservations"] = [r.to_json() for r in d.reservations.all()]
        if getattr(d, "local_list", None) is not None:
            out["local_list"] = {
                "enabled": d.local_list.enabled,
                "version": d.local_list.version(),
                "entries": len(d.local_list),
            }
        return out

    def _meter_of(self, conn: ConnectorRuntime) -> dict:
        s = conn.sample
        return {
            "id": conn.id,
            "energy_wh": _round(s.energy_wh) if s else None,
            "power_w": _round(s.power_w) if s else None,
            "voltage_v": [_round(v) for v in s.voltage_v] if s else [],
            "current_a": [_round(a, 2) for a in s.current_a] if s else [],
            "frequency_hz": _round(s.frequency_hz, 2) if s else None,
            "faults": sorted(conn.hw.meter.faults()),
        }

    async def meter(self, args: dict) -> dict:
        for conn in self.d.supervisor.connectors.values():
            await self.d.supervisor.read_meter(conn)
        return {"connectors": [self._meter_of(c) for c in self.d.supervisor.connectors.values()]}

    async def meter_follow(self, args: dict) -> AsyncIterator[dict]:
        while True:
            yield await self.meter(args)
            await asyncio.sleep(1.0)

    # -- log ---------------------------------------------------------------------------------

    async def log(self, args: dict) -> dict:
        lines = int(args.get("lines") or 50)
        return {"frames": self.d.frame_log.tail(lines)}

    async def log_follow(self, args: dict) -> AsyncIterator[dict]:
        async for entry in self.d.frame_log.subscribe():
            yield entry

    # -- configuration ----------------------------------------------------------------------

    async def config_get(self, args: dict) -> dict:
        cfg = self.d.config
        keys = args.get("keys") or cfg.keys()
        known = [cfg.key_value(k) for k in keys if cfg.is_declared(k)]
        return {
            "configuration_key": [
                {"key": kv.key, "readonly": kv.readonly, "value": kv.value} for kv in known
            ],
            "unknown_key": [k for k in keys if not cfg.is_declared(k)],
        }

    async def config_set(self, args: dict) -> dict:
        key, value = args.get("key"), args.get("value")
        if not isinstance(key, str) or value is None:
            raise CommandUsageError("config.set needs a key and a value")
        change = self.d.config.change(key, str(value), by="the technician (chargerctl)")
        answer = {"status": str(change.status)}
        if change.reason:
            answer["reason"] = change.reason
        return answer

    # -- self tests ---------------------------------------------------------------------------

    async def selftest(self, args: dict) -> dict:
        device = args.get("device")
        if device not in ("contactor", "lock", "led", "reader", "meter", "rcd"):
            raise CommandUsageError(
                "device must be one of contactor, lock, led, reader, meter, rcd"
            )
        if device == "reader":
            return await self._selftest_reader()
        conns = (
            [self._connector(args)]
            if args.get("connector") is not None
            else list(self.d.supervisor.connectors.values())
        )
        for conn in conns:
            if conn.in_use or (device in ("contactor", "lock") and conn.ev_state.plugged):
                raise CommandRefused(
                    f"connector {conn.id} is in use (EV {conn.ev_state.value}, "
                    f"status {conn.status}); self-tests run on an idle connector only"
                )
        steps: list[dict] = []
        for conn in conns:
            async with conn.busy:
                await getattr(self, f"_selftest_{device}")(conn, steps)
        return {"device": device, "passed": all(s["ok"] for s in steps), "steps": steps}

    @staticmethod
    async def _step(steps: list[dict], name: str, coro) -> None:
        try:
            detail = await coro
            steps.append({"step": name, "ok": True, "detail": detail or "ok"})
        except HardwareError as exc:
            steps.append({"step": name, "ok": False, "detail": str(exc)})

    async def _selftest_contactor(self, conn, steps) -> None:
        c = conn.hw.contactor

        async def close():
            await c.close()
            return "closed, feedback agrees" if not c.faults() else f"faults: {sorted(c.faults())}"

        async def open_():
            await c.open()
            return "opened, feedback agrees" if not c.faults() else f"faults: {sorted(c.faults())}"

        await self._step(steps, f"connector {conn.id}: close contactor", close())
        await self._step(steps, f"connector {conn.id}: open contactor", open_())

    async def _selftest_lock(self, conn, steps) -> None:
        lock = conn.hw.lock
        if lock is None:
            steps.append(
                {
                    "step": f"connector {conn.id}: lock",
                    "ok": True,
                    "detail": "no cable lock fitted (tethered cable)",
                }
            )
            return
        await self._step(steps, f"connector {conn.id}: lock", lock.lock())
        await self._step(steps, f"connector {conn.id}: unlock", lock.unlock())

    async def _selftest_led(self, conn, steps) -> None:
        led = conn.hw.indicator
        before = led.state
        for state in IndicatorState:
            led.show(state)
            await asyncio.sleep(0.3 if self.d.hardware.kind == "pi" else 0)
        led.show(before)
        steps.append(
            {
                "step": f"connector {conn.id}: cycle every indicator state",
                "ok": True,
                "detail": "watch the light: " + ", ".join(s.value for s in IndicatorState),
            }
        )

    async def _selftest_meter(self, conn, steps) -> None:
        async def read():
            s = await conn.hw.meter.read()
            return f"{s.energy_wh:.0f} Wh, {s.power_w or 0:.0f} W, {s.phases} phase(s)"

        await self._step(steps, f"connector {conn.id}: read meter", read())

    async def _selftest_rcd(self, conn, steps) -> None:
        # Its test trips it, and a trip drops the contactor: only ever on an idle connector.
        steps.append(await protection.rcd_selftest_step(conn))

    async def _selftest_reader(self) -> dict:
        reader = self.d.hardware.reader
        if reader is None:
            steps = [{"step": "reader", "ok": False, "detail": "no reader configured"}]
        else:
            faults = sorted(reader.faults())
            steps = [
                {
                    "step": "reader answers",
                    "ok": not faults,
                    "detail": "ok" if not faults else f"faults: {faults}",
                }
            ]
        return {"device": "reader", "passed": all(s["ok"] for s in steps), "steps": steps}

    # -- bench (mock station only) -----------------------------------------------------------

    async def sim_plug(self, args: dict) -> dict:
        conn = self._connector(args)
        return self._sim_call(
            self._sim().plug,
            conn.id,
            ev_max_current_a=args.get("ev_max_current_a"),
            phases=args.get("phases"),
            cable_capacity_a=args.get("cable_capacity_a"),
        )

    async def sim_charge(self, args: dict) -> dict:
        return self._sim_call(self._sim().charge, self._connector(args).id)

    async def sim_suspend(self, args: dict) -> dict:
        return self._sim_call(self._sim().suspend, self._connector(args).id)

    async def sim_unplug(self, args: dict) -> dict:
        return self._sim_call(self._sim().unplug, self._connector(args).id)

    async def sim_card(self, args: dict) -> dict:
        uid = args.get("uid")
        if not isinstance(uid, str):
            raise CommandUsageError("sim.card needs a uid")
        sim = self._sim()
        try:
            id_tag = normalize_presented(uid)
        except ValueError as exc:
            raise CommandRefused(str(exc)) from None
        try:
            if args.get("await_outcome") is False:  # rigs that time what follows the card
                return {"done": True, "read": bool(sim.present_card(id_tag)), "id_tag": id_tag}
            return await card_outcome(self.d.cards, self.d.supervisor, sim, id_tag)
        except ValueError as exc:  # a card this reader cannot hold (an emulated RC522: hex UIDs)
            raise CommandRefused(str(exc)) from None

    async def sim_fault(self, args: dict) -> dict:
        sim = self._sim()
        name = args.get("name")
        if name not in sim.FAULT_NAMES:
            raise CommandUsageError(f"unknown fault {name!r}; known: {', '.join(sim.FAULT_NAMES)}")
        connector = args.get("connector")
        if connector is not None:
            connector = self._connector(args).id
        return self._sim_call(sim.fault, name, bool(args.get("on")), connector=connector)

    async def sim_faults(self, args: dict) -> dict:
        sim = self._sim()
        return {"faults": list(sim.FAULT_NAMES), "active": sim.active_faults()}

    async def sim_world(self, args: dict) -> dict:
        """The simulated world as a bench sees it; on a pibox with its timestamped records."""
        sim = self._sim()
        if self.d.hardware.kind == "pi":  # hal.emulated.pibox.PiboxWorld
            try:
                since = float(args.get("since") or 0.0)
            except (TypeError, ValueError):
                raise CommandUsageError("since must be a monotonic time in seconds") from None
            return sim.snapshot(since=since)
        return sim.snapshot()

    async def sim_state(self, args: dict) -> dict:
        """The simulated world as the bench sees it (physical contacts, CP samples taken...)."""
        return self._sim().snapshot()

    async def sim_network(self, args: dict) -> dict:
        self._sim()
        up = bool(args.get("up"))
        self.d.link.set_blocked(not up)
        return {"network": "up" if up else "down"}

    async def sim_power_cut(self, args: dict) -> dict:
        self._sim()
        # As abrupt as a power cut: no shutdown, no flush, no answer.
        os.kill(os.getpid(), signal.SIGKILL)
        return {}  # pragma: no cover


def build_commands(daemon: Daemon) -> dict:
    c = Commands(daemon)
    handlers = {
        "status": c.status,
        "meter": c.meter,
        "log": c.log,
        "config.get": c.config_get,
        "config.set": c.config_set,
        "selftest": c.selftest,
        "sim.plug": c.sim_plug,
        "sim.charge": c.sim_charge,
        "sim.suspend": c.sim_suspend,
        "sim.unplug": c.sim_unplug,
        "sim.card": c.sim_card,
        "sim.fault": c.sim_fault,
        "sim.faults": c.sim_faults,
        "sim.world": c.sim_world,
        "sim.state": c.sim_state,
        "sim.network": c.sim_network,
        "sim.power_cut": c.sim_power_cut,
    }
    handlers.update(security_log_handlers(daemon))
    streams = {"meter.follow": c.meter_follow, "log.follow": c.log_follow}
    return {"handlers": handlers, "streams": streams}
