"""chargerd: wiring and lifecycle.  No behaviour lives here, only who talks to whom.

Start order matters for safety and for the power-loss guarantee:
hardware (outputs claimed and driven safe, contactors open: before anything
that can fail) -> store (migrations, integrity) -> OCPP configuration ->
power-loss recovery (queue the StopTransaction of whatever was running) ->
link, services, control socket -> READY=1 to systemd.  A start that fails after
the hardware was opened closes it again (contactors open) before it ends.
On SIGTERM: contactors open, store closed, exit 0.  After any other end (kill -9,
a watchdog abort) the unit's ExecStopPost runs ``chargerd --safe-outputs``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from chargerd import __version__
from chargerd.clock import SystemClock
from chargerd.config import Config, ConfigError, load_config
from chargerd.privacy import Redactor

log = logging.getLogger("chargerd")

#: The optional profiles whose modules are wired below (SupportedFeatureProfiles).
WIRED_PROFILES = (
    "Core",
    "FirmwareManagement",  # UpdateFirmware (firmware.py) + GetDiagnostics (diagnostics.py)
    "LocalAuthListManagement",
    "Reservation",
    "RemoteTrigger",
)


def declare_feature_keys(svc, *, connectors: int) -> None:
    """Every feature's configuration keys, before the [ocpp] table is applied."""
    from chargerd.features import local_list, metering, reservations
    from chargerd.features.configuration import declare_core_keys

    declare_core_keys(
        svc,
        connectors=connectors,
        supported_measurands=metering.SUPPORTED_MEASURANDS,
        feature_profiles=WIRED_PROFILES,
    )
    local_list.declare_keys(svc)
    reservations.declare_keys(svc)


class Daemon:
    """Owns the tasks and the order of start and stop; services own the behaviour."""

    def __init__(
        self, cfg: Config, *, config_path: Path | None = None, redactor: Redactor | None = None
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.redactor = redactor  # [logging] redact_id_tags: masks idTags in the frame log
        self.clock = SystemClock()
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()
        self._restart_reason: str | None = None
        self._died: str | None = None  # the task whose death stopped us: exit non-zero
        self.started_at = self.clock.monotonic()

    # -- build -------------------------------------------------------------------------

    async def build(self) -> None:
        from chargerd.control.commands import build_commands
        from chargerd.control.server import ControlServer
        from chargerd.features import metering
        from chargerd.features.auth import AuthorizationCache, Authorizer
        from chargerd.features.availability import AvailabilityService
        from chargerd.features.boot import BootService, Identity
        from chargerd.features.cards import CardService
        from chargerd.features.certificates import declare_certificate_keys
        from chargerd.features.configuration import ConfigurationService
        from chargerd.features.connectors import ConnectorRuntime, ConnectorSupervisor
        from chargerd.features.firmware import running_version as firmware_running_version
        from chargerd.features.firmware_setup import build_firmware
        from chargerd.features.local_list import LocalAuthList
        from chargerd.features.outbox import Outbox
        from chargerd.features.powerloss import max_power_w as metering_max_power_w
        from chargerd.features.remote import RemoteService
        from chargerd.features.reservations import ReservationService
        from chargerd.features.smart_charging import (
            Electrical,
            SmartChargingService,
            declare_smart_charging_keys,
        )
        from chargerd.features.status_report import StatusPublisher
        from chargerd.features.transactions import TransactionService
        from chargerd.features.trigger import TriggerService
        from chargerd.link import FrameLog, Link, LinkError
        from chargerd.store import Store

        cfg = self.cfg
        # Fail safe from power-on: the outputs are claimed and driven safe first, so that
        # a store, a link or a configuration that fails leaves the contactor open.
        self.hardware = await self._open_hardware()
        state_dir = Path(cfg.paths.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store.open(state_dir / "chargerd.db")
        if self.store.recovered_from is not None:
            log.error(
                "the state database was corrupt and was moved to %s", self.store.recovered_from
            )

        self._build_security_events(state_dir)
        self._build_certstore()

        n = cfg.station.connectors
        self.config = ConfigurationService(self.store)
        declare_feature_keys(self.config, connectors=n)
        declare_smart_charging_keys(self.config)
        declare_certificate_keys(self.config)
        try:
            self.config.apply_initial(dict(cfg.ocpp))
        except ValueError as exc:
            source = self.config_path or cfg.source
            raise ConfigError(f"{source}: {exc}", path=Path(source)) from None

        self._build_link_security()
        self.frame_log = FrameLog(clock=self.clock, redactor=self.redactor)
        self.link = Link(
            url=cfg.csms.url,
            charge_point_id=cfg.station.charge_point_id,
            clock=self.clock,
            frame_log=self.frame_log,
            ping_interval=lambda: float(self.config.get("WebSocketPingInterval") or 0),
            max_frame_bytes=cfg.csms.max_frame_bytes,
            call_timeout=cfg.csms.call_timeout_s,
        )
        self.link_security.attach(self.link)  # url, TLS and Basic auth of the profile in force
        self.cache = AuthorizationCache(self.store, self.clock, self.config)
        self.local_list = LocalAuthList(self.store, self.config)
        self.cache.in_local_list = self.local_list.contains
        self.authorizer = Authorizer(
            self.cache, self.link, self.config, self.clock, local_list=self.local_list.get
        )
        self.outbox = Outbox(
            self.store,
            self.clock,
            attempts=lambda: int(self.config.get("TransactionMessageAttempts") or 1),
            retry_interval=lambda: int(self.config.get("TransactionMessageRetryInterval") or 0),
        )
        self.transactions = TransactionService(
            store=self.store,
            clock=self.clock,
            outbox=self.outbox,
            config=self.config,
            cache=self.cache,
        )
        runtimes = [
            ConnectorRuntime(id=i + 1, hw=hw) for i, hw in enumerate(self.hardware.connectors)
        ]
        self.boot = BootService(
            link=self.link,
            clock=self.clock,
            config=self.config,
            link_errors=(LinkError,),
            identity=Identity(
                charge_point_vendor=cfg.station.vendor,
                charge_point_model=cfg.station.model,
                firmware_version=firmware_running_version(
                    cfg.station.firmware_version, cfg.firmware.version_file
                ),
                charge_point_serial_number=cfg.station.serial_number,
                meter_type=self._meter_type(),
            ),
            current_statuses=lambda: self.status.current(),
        )
        self.status = StatusPublisher(
            clock=self.clock,
            config=self.config,
            send=self.boot.send_status,
            station=lambda: self.supervisor.station_status(self._reader_faults()),
        )
        self.supervisor = ConnectorSupervisor(
            connectors=runtimes,
            transactions=self.transactions,
            config=self.config,
            clock=self.clock,
            report_status=self._report_status,
            max_current_a=cfg.station.max_current_a,
            ventilated=cfg.station.ventilation,
        )
        self.reservations = ReservationService(
            store=self.store,
            clock=self.clock,
            config=self.config,
            supervisor=self.supervisor,
            parent_of=lambda tag: self.local_list.get(tag) or self.cache.get(tag),
        )
        self.availability = AvailabilityService(store=self.store, supervisor=self.supervisor)
        self.availability.restore()
        self.sampler = metering.MeterSampler(
            supervisor=self.supervisor,
            transactions=self.transactions,
            config=self.config,
            clock=self.clock,
            send_live=self.boot.send_live,
        )
        self.cards = CardService(
            supervisor=self.supervisor,
            authorizer=self.authorizer,
            config=self.config,
            online=self.boot.online,
        )
        self.remote = RemoteService(
            supervisor=self.supervisor,
            authorizer=self.authorizer,
            config=self.config,
            online=self.boot.online,
            restart=self.request_restart,
        )
        self.trigger = TriggerService(
            supervisor=self.supervisor,
            config=self.config,
            clock=self.clock,
            call=self.link.call,
            send_boot=self.boot.send_boot_notification,
            send_heartbeat=self.boot.send_heartbeat,
            station_status=lambda: self.supervisor.station_status(self._reader_faults()),
            errors=(LinkError,),
        )
        self._build_diagnostics(state_dir)
        self.smart_charging = SmartChargingService(
            store=self.store,
            config=self.config,
            clock=self.clock,
            supervisor=self.supervisor,
            elec=Electrical(cfg.station.nominal_voltage_v, cfg.station.phases),
            station_max_a=cfg.station.max_current_a,
        )
        self.supervisor.limit_for = self.smart_charging.limit_for
        self.remote.check_charging_profile = self.smart_charging.accept_remote_profile
        self.link.register(self.smart_charging)
        self.firmware = build_firmware(self)  # after the availability service and the outbox
        self.firmware.restore()
        self.trigger.firmware_status = self.firmware.trigger_status
        if getattr(self, "certificates", None) is not None:  # ExtendedTriggerMessage
            self.certificates.firmware_status = self.firmware.signed_trigger_payload
        self.link.register(self.firmware)
        for feature in (self.config, self.cache, self.remote, self.availability):
            self.link.register(feature)
        for feature in (self.local_list, self.reservations, self.trigger):
            self.link.register(feature)
        self._bind_security_events()
        self._build_certificates()
        self.certificates.log_status = self.diagnostics.log_trigger_status  # GetLog's state
        self.link.add_connect_listener(self.boot.on_connect)
        self.link.add_disconnect_listener(self.boot.on_disconnect)
        self.config.watch("HeartbeatInterval", lambda _v: self.boot.heartbeat_changed())
        self.config.watch("MeterValueSampleInterval", lambda _v: self.sampler.periodic.poke())
        self.config.watch("ClockAlignedDataInterval", lambda _v: self.sampler.aligned_changed())

        # Whatever a previous process left running ends now, as PowerLoss.
        self.recovered = await self.transactions.recover_power_loss_reading(
            {i + 1: hw.meter for i, hw in enumerate(self.hardware.connectors)},
            max_power_w=metering_max_power_w(cfg.station.max_current_a),
        )

        self.control = ControlServer(
            Path(cfg.paths.control_socket),
            **build_commands(self),
        )

    def _build_security_events(self, state_dir: Path) -> None:
        """Security events and their log, early: the link and the TLS code emit through them."""
        from chargerd.features import security_events as sec
        from chargerd.features.security_log import SecurityLog

        self.security_log = SecurityLog(state_dir / "security.log")
        self.security_events = sec.SecurityEvents(clock=self.clock, security_log=self.security_log)
        self.store.full_listeners.append(
            lambda exc: self.security_events.emit_soon(sec.MEMORY_EXHAUSTION, f"disk full: {exc}")
        )

    def _build_certstore(self) -> None:
        """The certificate directory, before the link: TLS reads its roots and certificate."""
        from chargerd.features.certstore import CertStore

        self.certstore = CertStore(self.cfg.paths.certs_dir)

    def _build_certificates(self) -> None:
        """Certificate management (SignCertificate, CertificateSigned, Install/Delete, ...)."""
        from chargerd.features.certificates import CertificateService
        from chargerd.link import LinkError

        self.certificates = CertificateService(
            store=self.certstore,
            config=self.config,
            clock=self.clock,
            charge_point_id=self.cfg.station.charge_point_id,
            call=self.link.call,
            trigger=self.trigger,
            emit=self.security_events.emit,
            online=self.boot.online,
            errors=(LinkError,),
        )
        self.link.register(self.certificates)
        self.certstore.on_change(self._station_certificate_changed)

    def _station_certificate_changed(self, what: str) -> None:
        """Reconnect once to present a new station certificate (profile 3 only: below it the
        certificate is not presented).  The TLS context was rebuilt by the listener that
        link security registered before this one."""
        security = getattr(self, "link_security", None)
        reconnect = getattr(self.link, "reconnect", None)
        if what != "station" or security is None or reconnect is None:
            return
        if security.profile == 3:
            reconnect("new station certificate")

    def _bind_security_events(self) -> None:
        from chargerd.features import security_events as sec

        events = self.security_events
        events.bind(store=self.store, outbox=self.outbox, send_live=self.boot.send_live)
        self.link.invalid_frame_listeners.append(
            lambda why: events.emit(sec.INVALID_MESSAGES, why)
        )
        self.link.replay_listeners.append(  # emit_soon: at most once per QUIET_S
            lambda uid: events.emit_soon(sec.ATTEMPTED_REPLAY_ATTACKS, f"CALL id {uid} repeated")
        )
        self.clock.on_jump.append(
            lambda: events.emit(sec.SETTING_SYSTEM_TIME, "clock set from the CSMS's time")
        )
        events.emit(sec.STARTUP_OF_THE_DEVICE, f"chargerd {__version__} started")
        if getattr(self.hardware, "tamper", None) is not None:  # the enclosure's switch
            from chargerd.features.tamper import TamperWatch

            self.tamper = TamperWatch(self.hardware.tamper, emit=events.emit, clock=self.clock)
            self.tamper.start(asyncio.get_running_loop())

    def _build_diagnostics(self, state_dir: Path) -> None:
        """GetDiagnostics and GetLog: bundles of what the station knows, never a secret."""
        from chargerd.features.diagnostics import DiagnosticsService
        from chargerd.features.firmware_setup import https_context
        from chargerd.features.security_events import durable_sender
        from chargerd.features.upload_journal import UploadJournal

        cfg = self.cfg

        def log_files() -> list[Path]:
            f = cfg.paths.log_file
            return [p for p in (f.with_name(f.name + ".1"), f) if p.exists()] if f else []

        def configuration() -> list[dict]:
            kvs = (self.config.key_value(k) for k in self.config.keys())
            return [{"key": kv.key, "readonly": kv.readonly, "value": kv.value} for kv in kvs]

        self.diagnostics = DiagnosticsService(
            clock=self.clock,
            charge_point_id=cfg.station.charge_point_id,
            notify=durable_sender(self.store, self.outbox, self.boot.send_live),
            security_entries=self.security_log.entries,
            frames=lambda: self.frame_log.tail(1_000_000),
            configuration=configuration,
            log_files=log_files,
            info=lambda: {
                "chargerd": __version__,
                "firmware_version": cfg.station.firmware_version,
                "model": cfg.station.model,
                "vendor": cfg.station.vendor,
                "created": self.clock.now().isoformat(),
            },
            work_dir=state_dir,
            # Without a log file the daemon logs to journald: the bundle takes its journal.
            journal_unit=None if cfg.paths.log_file else "chargerd",
            # https:// locations: the system's CAs plus the CSMS's (as for firmware downloads)
            ssl_context=lambda: https_context(cfg.csms.ca_file, cfg.paths.certs_dir),
            journal=UploadJournal(self.store),  # uploads cut by a restart get a final status
        )
        self.trigger.diagnostics_status = self.diagnostics.trigger_status
        self.link.register(self.diagnostics)

    def _report_status(self, connector_id: int, status: str, error_code: str) -> None:
        self.status.report(connector_id, status, error_code)
        self.reservations.connector_status(connector_id, status)

    async def _open_hardware(self):
        cfg = self.cfg
        if cfg.hardware.driver == "mock":
            from hal.mock import open_mock_station

            return open_mock_station(
                cfg.hardware, Path(cfg.paths.state_dir), connectors=cfg.station.connectors
            )
        from hal.pi.station import open_pi_station

        return await open_pi_station(cfg.hardware, Path(cfg.paths.state_dir))

    def _build_link_security(self) -> None:
        """Security profiles 1-3: SecurityProfile, AuthorizationKey, TLS from the certstore."""
        from chargerd.features.certstore import RootKind
        from chargerd.features.link_security import LinkSecurity

        cfg = self.cfg
        store = self.certstore
        self.link_security = LinkSecurity(
            url=cfg.csms.url,
            tls_url=cfg.csms.tls_url,
            profile=cfg.csms.security_profile,
            charge_point_id=cfg.station.charge_point_id,
            password=cfg.csms.basic_auth_password,
            ca_file=cfg.csms.ca_file,
            state_dir=Path(cfg.paths.state_dir),
            certs_dir=cfg.paths.certs_dir,
            emit=self.security_events.emit,
            csms_roots=lambda: store.root_paths(RootKind.CSMS),
        )
        self.link_security.declare_keys(self.config)
        store.on_change(lambda what: self.link_security.refresh())

    def _meter_type(self) -> str:
        hw = self.cfg.hardware
        if hw.driver == "mock":
            return "chargerd mock meter"
        return ", ".join(sorted({c.meter_model.upper() for c in hw.connectors}))

    def _reader_faults(self):
        reader = self.hardware.reader
        return reader.faults() if reader is not None else frozenset()

    # -- run ---------------------------------------------------------------------------

    async def run(self) -> int:
        from chargerd import sdnotify
        from chargerd.features import retention
        from chargerd.link import (
            CallErrorReceived,
            CallResultInvalid,
            CallTimeout,
            NotConnected,
        )

        try:
            await self.build()
        except BaseException:
            hardware = getattr(self, "hardware", None)
            if hardware is not None:
                with contextlib.suppress(Exception):
                    await hardware.aclose()  # contactors open, outputs safe
            raise
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        await self.control.start()
        jobs = {
            "link": self.link.run(),
            "boot": self.boot.run(),
            "heartbeat": self.boot.heartbeat_loop(),
            "live": self.boot.live_loop(),
            "outbox": self.outbox.run(
                self.link.call,
                self.boot.ready,
                errors=(CallErrorReceived, CallResultInvalid),
                offline_errors=(NotConnected, CallTimeout),
            ),
            "supervisor": self.supervisor.run(),
            "status": self.status.run(),
            "sampler": self.sampler.periodic.run(),
            "aligned": self.sampler.aligned_loop(),
            "reservations": self.reservations.run(),
            "retention": retention.run(self.store, self.clock),  # idTags: 30 days
            "smart_charging": self.smart_charging.run(),
            "firmware": self.firmware.run(),
            "security_events": self.security_events.run(),
            "certificates": self.certificates.run(),  # station certificate expiry watch
        }
        if self.hardware.reader is not None:
            jobs["cards"] = self.cards.run(self.hardware.reader)
        watchdog = sdnotify.watchdog_interval()
        if watchdog:
            # Fed only while every connector completes its supervision passes (a pass may
            # wait up to 3 s for a stop's meter reading; WatchdogSec=5 gives 4 s).
            jobs["watchdog"] = sdnotify.watchdog_loop(
                watchdog, stale=lambda: self.supervisor.supervision_stale(watchdog * 0.8)
            )
        for name, coro in jobs.items():
            task = asyncio.create_task(coro, name=name)
            task.add_done_callback(self._task_died)
            self._tasks.append(task)
        sdnotify.notify("READY=1")
        log.info(
            "chargerd %s ready: %s, %d connector(s), %s hardware, CSMS %s",
            __version__,
            self.cfg.station.charge_point_id,
            self.cfg.station.connectors,
            self.hardware.kind,
            self.cfg.csms.url,
        )
        await self._stopping.wait()
        sdnotify.notify("STOPPING=1")
        await self.shutdown()
        if self._restart_reason:
            log.warning("restarting chargerd (%s)", self._restart_reason)
            os.execv(sys.executable, [sys.executable, "-m", "chargerd.daemon", *sys.argv[1:]])
        # A task that died is a failure: systemd must not record it as a clean stop.
        return 1 if self._died else 0

    def _task_died(self, task: asyncio.Task) -> None:
        if task.cancelled() or self._stopping.is_set():
            return
        exc = task.exception()
        log.critical(
            "task %s ended unexpectedly (%r); stopping so that systemd restarts us",
            task.get_name(),
            exc,
            exc_info=exc,
        )
        self._died = task.get_name()
        self._stopping.set()

    async def request_restart(self, reason: str) -> None:
        from chargerd.features.security_events import RESET_OR_REBOOT

        self.security_events.emit(RESET_OR_REBOOT, reason)
        self._restart_reason = reason
        self._stopping.set()

    async def shutdown(self) -> None:
        # A clean stop (systemctl stop, reboot, reset) ends running sessions as "Reboot"
        # rather than leaving them to look like a power loss at the next start.
        for conn in self.supervisor.connectors.values():
            if conn.tx is not None:
                with contextlib.suppress(Exception):
                    await self.supervisor.stop(conn, "Reboot")
        deadline = self.clock.monotonic() + 2.0
        while self.outbox.pending() and self.link.connected and self.clock.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hardware.aclose()  # every contactor opens first
        with contextlib.suppress(Exception):
            await self.diagnostics.aclose()
        with contextlib.suppress(Exception):
            await self.control.close()
        with contextlib.suppress(Exception):
            await self.link.close()
        self.store.close()
        log.info("chargerd stopped; contactors open, state saved")


def check_ocpp_keys(cfg: Config) -> None:
    """Validate the [ocpp] table against the declared keys, without touching the state dir."""
    import tempfile

    from chargerd.features.configuration import ConfigurationService
    from chargerd.store import Store

    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "check.db") as store:
        svc = ConfigurationService(store)
        declare_feature_keys(svc, connectors=cfg.station.connectors)
        from chargerd.features.smart_charging import declare_smart_charging_keys

        declare_smart_charging_keys(svc)
        from chargerd.features.certificates import declare_certificate_keys

        declare_certificate_keys(svc)
        svc.apply_initial(dict(cfg.ocpp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chargerd", description="OCPP 1.6-J charge point daemon")
    parser.add_argument("--config", type=Path, default=Path("/etc/chargerd/chargerd.toml"))
    parser.add_argument(
        "--check-config", type=Path, metavar="PATH", help="validate a configuration file and exit"
    )
    parser.add_argument(
        "--safe-outputs",
        action="store_true",
        help="claim the hardware outputs of --config, drive them safe (contactors open) and exit; "
        "the unit's ExecStopPost, after any end of the daemon",
    )
    parser.add_argument("--version", action="version", version=f"chargerd {__version__}")
    args = parser.parse_args(argv)
    path = args.check_config or args.config
    from chargerd import startup

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    if args.safe_outputs:  # the unit's ExecStopPost: no preflight, only the outputs
        from chargerd.failsafe import safe_outputs_main

        return startup.run_guarded(lambda: safe_outputs_main(load_config(path)), stderr_print=say)

    # --check-config and the start run the same checks and print the same line.
    status = startup.run_guarded(lambda: _preflight(path), stderr_print=say)
    if status or args.check_config:
        if not status:
            print(f"{path}: configuration OK")
        return status
    return startup.run_guarded(lambda: _start(load_config(path), path), stderr_print=say)


def _preflight(path: Path) -> int:
    from chargerd.startup import check_environment

    cfg = load_config(path)
    try:
        check_ocpp_keys(cfg)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}", path=path) from None
    check_environment(cfg)
    return 0


def _start(cfg: Config, path: Path) -> int:
    from chargerd.logs import setup_logging
    from chargerd.startup import FailedWhileRunning, make_private

    os.umask(0o077)  # idTags are personal data: state files 0600, directories 0700
    redactor = Redactor() if cfg.logging.redact_id_tags else None
    setup_logging(cfg.logging.level, log_file=cfg.paths.log_file, redactor=redactor)
    make_private(cfg)
    # Libraries' own chatter (every websocket frame, every Modbus timeout) drowns what a
    # technician needs; our frame log and fault logs already say it once, better.
    for noisy in ("websockets", "pymodbus"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    daemon = Daemon(cfg, config_path=path, redactor=redactor)
    try:
        return asyncio.run(daemon.run())
    except Exception as exc:
        if daemon._tasks:  # it had started: a failure, not a start-up error
            raise FailedWhileRunning(exc) from exc
        raise


if __name__ == "__main__":
    sys.exit(main())
