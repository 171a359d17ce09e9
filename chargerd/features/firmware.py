"""Firmware Management: UpdateFirmware (OCPP 1.6 §5.16, §6.16) and SignedUpdateFirmware
(Security Whitepaper Ed. 3, use cases L01/L02).

One update at a time, persisted in ``firmware_job`` (migration 0030) so that every step
survives a restart: a retrieveDate in the future, a download cut by a power loss (it
starts again), and the installation's outcome, which is only known after the restart the
installer asks for.

The steps, and the status notifications each sends (plain / signed):

1. wait for retrieveDate (signed: DownloadScheduled);
2. download from the location over http, https or ftp (``transfer.py``), up to
   1 + retries attempts, retryInterval seconds apart: Downloading, then Downloaded or
   DownloadFailed;
3. signed only: the signature is checked before anything else happens:
   SignatureVerified, or InvalidSignature (+ security event) and the end; the signing
   certificate was checked against the manufacturer roots when the request came
   (answer InvalidCertificate, + security event);
4. signed with installDateTime in the future: InstallScheduled and wait;
5. the station stops offering charging: every connector goes Unavailable (through the
   availability service; a running transaction is not interrupted), and the
   installation waits until no transaction runs;
6. Installing, and the configured installer runs with the file's path.  Exit 0 means
   "installed, restart me": the job is marked ``rebooting`` (signed: InstallRebooting)
   and the daemon restarts.  Another exit, or no installer: InstallationFailed (signed,
   exit 65: InstallVerificationFailed, see firmware_signing.py), the connectors come back;
7. after the restart: Installed (and security event FirmwareUpdated) when the running
   firmware version differs from the one before, InstallationFailed otherwise; the
   connectors come back as they were before step 5.

Every status notification goes through the durable outbox in the same SQLite
transaction as the step it reports, so each reaches the CSMS, in order, even if the
link is down at that moment or the station restarts.  TriggerMessage
(FirmwareStatusNotification) asks ``trigger_status()``: the last status of an update
under way, Idle otherwise.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import ssl
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from chargerd.clock import Clock, iso, parse_iso
from chargerd.features import firmware_signing, security_events, transfer
from chargerd.store import Store

log = logging.getLogger(__name__)

PLAIN_ACTION = "FirmwareStatusNotification"
SIGNED_ACTION = "SignedFirmwareStatusNotification"
DEFAULT_RETRIES = 2
DEFAULT_RETRY_INTERVAL_S = 30
IDLE = "Idle"
#: The phases of a job; "done" keeps the last status for chargerctl.
ACTIVE_PHASES = ("scheduled", "downloading", "installing", "rebooting")


class _Outbox(Protocol):
    def enqueue(self, action: str, payload: dict, *, tx_local_id: int | None = None) -> int: ...


class _Events(Protocol):
    def emit(self, kind: str, tech_info: str | None = None) -> None: ...


class _Availability(Protocol):
    def change_availability(self, connector_id: int, type: str) -> Any: ...


class _Connector(Protocol):
    id: int
    tx: Any
    operative: bool
    scheduled_operative: bool | None


class _Supervisor(Protocol):
    connectors: dict[int, Any]
    station_operative: bool


@dataclass(slots=True)
class Job:
    kind: str  # "plain" or "signed"
    location: str
    retrieve_date: datetime.datetime
    retries: int
    retry_interval: int
    phase: str = "scheduled"
    request_id: int | None = None
    install_date: datetime.datetime | None = None
    signing_certificate: str | None = None
    signature: str | None = None
    status: str | None = None
    previous_version: str | None = None
    availability: str | None = None  # JSON snapshot, restored after the installation

    @property
    def signed(self) -> bool:
        return self.kind == "signed"


def outcome_after_restart(previous_version: str | None, running_version: str) -> str:
    """Installed when the firmware that came up is not the one that ran before."""
    if previous_version is not None and running_version != previous_version:
        return "Installed"
    return "InstallationFailed"


def file_name_for(location: str) -> str:
    """Where in the firmware directory a download goes: the URL's last path segment."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(location).path)
    name = "" if path.endswith("/") else Path(path).name
    return name if name and name not in (".", "..") else "firmware.bin"


def running_version(station_version: str, version_file: Path | None) -> str:
    """The firmware version this process runs: ``version_file``'s when set (a bench whose
    mock installer "installs" by writing it), else the configured / package version."""
    if version_file is not None:
        try:
            text = version_file.read_text().strip()
        except OSError:
            text = ""
        if text:
            return text[:50]
    return station_version


class FirmwareService:
    """Owns the update under way: its persistence, its steps and its notifications."""

    def __init__(
        self,
        *,
        store: Store,
        outbox: _Outbox,
        clock: Clock,
        supervisor: _Supervisor,
        availability: _Availability,
        directory: Path,
        version: str,
        installer: Path | None,
        download_timeout_s: float = 300.0,
        install_timeout_s: float = 900.0,
        restart: Callable[[str], Awaitable[None]],
        manufacturer_roots: Callable[[], list] = list,
        ssl_context: Callable[[], ssl.SSLContext | None] = lambda: None,
        events: _Events | None = None,
        installer_env: dict[str, str] | None = None,
    ) -> None:
        self._store = store
        self._outbox = outbox
        self._clock = clock
        self._sup = supervisor
        self._availability = availability
        self.directory = Path(directory)
        self.version = version
        self.installer = installer
        self.download_timeout_s = download_timeout_s
        self.install_timeout_s = install_timeout_s
        self._restart = restart
        self._roots = manufacturer_roots
        self._ssl_context = ssl_context
        self._events = events
        self._installer_env = dict(installer_env or {})
        self._wake = asyncio.Event()
        self._generation = 0  # bumped by every new request: an older run stops
        self.job: Job | None = self._load()
        self.attempt = 0  # download attempts of the job under way (for chargerctl)
        self.last_error: str | None = None

    # -- persistence -------------------------------------------------------------------

    def _load(self) -> Job | None:
        row = self._store.query_one("SELECT * FROM firmware_job WHERE id = 1")
        if row is None:
            return None
        return Job(
            kind=row["kind"],
            location=row["location"],
            retrieve_date=parse_iso(row["retrieve_date"]),
            retries=int(row["retries"]),
            retry_interval=int(row["retry_interval"]),
            phase=row["phase"],
            request_id=row["request_id"],
            install_date=parse_iso(row["install_date"]) if row["install_date"] else None,
            signing_certificate=row["signing_certificate"],
            signature=row["signature"],
            status=row["status"],
            previous_version=row["previous_version"],
            availability=row["availability"],
        )

    def _save(self, job: Job) -> None:
        """Write the job (inside the caller's store transaction)."""
        self._store.execute(
            "INSERT OR REPLACE INTO firmware_job(id, kind, request_id, location, retrieve_date,"
            " install_date, retries, retry_interval, signing_certificate, signature, phase,"
            " status, previous_version, availability, updated_at)"
            " VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.kind,
                job.request_id,
                job.location,
                iso(job.retrieve_date),
                iso(job.install_date) if job.install_date else None,
                job.retries,
                job.retry_interval,
                job.signing_certificate,
                job.signature,
                job.phase,
                job.status,
                job.previous_version,
                job.availability,
                iso(self._clock.now()),
            ),
        )

    def _step(self, job: Job, *, phase: str | None = None, status: str | None = None) -> None:
        """Move the job on and queue its status notification, in one SQLite transaction."""
        if phase is not None:
            job.phase = phase
        with self._store.transaction():
            if status is not None:
                job.status = status
                if job.signed:
                    payload: dict[str, Any] = {"status": status, "requestId": job.request_id}
                    self._outbox.enqueue(SIGNED_ACTION, payload)
                else:
                    self._outbox.enqueue(PLAIN_ACTION, {"status": status})
            self._save(job)
        if status is not None:
            log.info("firmware update: %s", status)
        if job.phase == "done":
            self._remove_download(job)

    def _remove_download(self, job: Job) -> None:
        """A finished job's file goes: an SD card does not collect firmware images."""
        dest = self.directory / file_name_for(job.location)
        for path in (dest, dest.with_name(dest.name + ".part")):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot remove %s: %s", path, exc)

    # -- what others ask ----------------------------------------------------------------

    def trigger_status(self) -> str:
        """For TriggerMessage: the last status of an update under way, else Idle."""
        job = self.job
        if job is None or job.phase not in ACTIVE_PHASES or job.status is None:
            return IDLE
        return job.status

    def signed_trigger_payload(self) -> dict[str, Any]:
        """For ExtendedTriggerMessage (SignedFirmwareStatusNotification): the status of a signed
        update under way with its requestId, else Idle."""
        job = self.job
        status = self.trigger_status()
        if job is None or not job.signed or status == IDLE:
            return {"status": IDLE}
        return {"status": status, "requestId": job.request_id}

    def state(self) -> dict[str, Any]:
        """For chargerctl status (``firmware``)."""
        job = self.job
        out: dict[str, Any] = {"version": self.version, "status": self.trigger_status()}
        if job is not None:
            out.update(
                kind=job.kind,
                phase=job.phase,
                last_status=job.status,
                location=transfer.redact(job.location),
                retrieve_date=iso(job.retrieve_date),
                attempt=self.attempt,
                request_id=job.request_id,
                error=self.last_error,
            )
        return out

    # -- OCPP --------------------------------------------------------------------------

    @on(Action.update_firmware)
    def on_update_firmware(
        self,
        location: str,
        retrieve_date: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.UpdateFirmware:
        job = Job(
            kind="plain",
            location=location,
            retrieve_date=self._date(retrieve_date),
            retries=DEFAULT_RETRIES if retries is None else max(0, int(retries)),
            retry_interval=(
                DEFAULT_RETRY_INTERVAL_S if retry_interval is None else max(0, retry_interval)
            ),
        )
        self._accept(job)
        return call_result.UpdateFirmware()

    @on(Action.signed_update_firmware)
    def on_signed_update_firmware(
        self,
        request_id: int,
        firmware: dict,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.SignedUpdateFirmware:
        pem = str(firmware.get("signing_certificate") or "")
        try:
            firmware_signing.check_signing_certificate(pem, self._roots(), self._clock.now())
        except firmware_signing.SigningError as exc:
            log.warning("SignedUpdateFirmware %d refused: %s", request_id, exc)
            self._emit(security_events.INVALID_FIRMWARE_SIGNING_CERTIFICATE, str(exc))
            return call_result.SignedUpdateFirmware(status="InvalidCertificate")
        busy = self.job is not None and self.job.phase in ("installing", "rebooting")
        if busy:
            return call_result.SignedUpdateFirmware(status="Rejected")
        replaced = self.job is not None and self.job.phase in ACTIVE_PHASES
        install = firmware.get("install_date_time")
        job = Job(
            kind="signed",
            request_id=int(request_id),
            location=str(firmware.get("location") or ""),
            retrieve_date=self._date(str(firmware.get("retrieve_date_time") or "")),
            install_date=self._date(install) if install else None,
            signing_certificate=pem,
            signature=str(firmware.get("signature") or ""),
            retries=DEFAULT_RETRIES if retries is None else max(0, int(retries)),
            retry_interval=(
                DEFAULT_RETRY_INTERVAL_S if retry_interval is None else max(0, retry_interval)
            ),
        )
        self._accept(job)
        return call_result.SignedUpdateFirmware(
            status="AcceptedCanceled" if replaced else "Accepted"
        )

    def _date(self, text: str) -> datetime.datetime:
        try:
            return parse_iso(text)
        except (ValueError, TypeError):
            log.warning("firmware update: unreadable date %r, taken as now", text)
            return self._clock.now()

    def _accept(self, job: Job) -> None:
        if self.job is not None and self.job.phase in ("installing", "rebooting"):
            log.warning("firmware update requested while installing: ignored")
            return
        self._generation += 1
        self.attempt = 0
        self.last_error = None
        with self._store.transaction():
            self._save(job)
        self.job = job
        log.info(
            "firmware update (%s) accepted: %s from %s",
            job.kind,
            transfer.redact(job.location),
            iso(job.retrieve_date),
        )
        self._wake.set()

    def _emit(self, kind: str, info: str | None = None) -> None:
        if self._events is not None:
            self._events.emit(kind, info)

    # -- start-up ----------------------------------------------------------------------

    def restore(self) -> None:
        """At start: report the outcome of an installation that restarted the station."""
        job = self.job
        if job is None:
            return
        if job.phase in ("rebooting", "installing"):
            # "installing": the process ended while the installer ran - an installer that
            # restarts the service itself, or a crash.  The version that came up decides.
            outcome = outcome_after_restart(job.previous_version, self.version)
            log.info(
                "firmware before the restart %s, now %s: %s",
                job.previous_version,
                self.version,
                outcome,
            )
            self._step(job, phase="done", status=outcome)
            if outcome == "Installed":
                self._emit(
                    security_events.FIRMWARE_UPDATED,
                    f"{job.previous_version} -> {self.version}",
                )
            self._restore_availability(job)
        elif job.phase in ("scheduled", "downloading"):
            log.info("firmware update resumes: %s", transfer.redact(job.location))

    # -- the work ----------------------------------------------------------------------

    async def run(self) -> None:
        """The update task: works on the job under way, waits for the next."""
        while True:
            job = self.job
            if job is not None and job.phase in ("scheduled", "downloading"):
                generation = self._generation
                try:
                    await self._work(job, generation)
                except _Superseded:
                    log.info("firmware update replaced by a newer request")
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug must not kill the daemon: report and go on
                    log.exception("firmware update failed")
                    if self._generation == generation and job.phase != "done":
                        self._step(job, phase="done", status="InstallationFailed")
                        self._restore_availability(job)
                if self._generation != generation:
                    continue
            self._wake.clear()
            await self._wake.wait()

    def _check(self, generation: int) -> None:
        if generation != self._generation:
            raise _Superseded

    async def _sleep_until(self, when: datetime.datetime, generation: int) -> None:
        while True:
            self._check(generation)
            left = (when - self._clock.now()).total_seconds()
            if left <= 0:
                return
            await self._clock.sleep(min(left, 1.0))

    async def _work(self, job: Job, generation: int) -> None:
        if job.retrieve_date > self._clock.now():
            if job.signed and job.status != "DownloadScheduled":
                self._step(job, status="DownloadScheduled")
            await self._sleep_until(job.retrieve_date, generation)
        path = await self._download(job, generation)
        if path is None:
            return
        if job.signed:
            if not self._verified(job, path):
                return
            if job.install_date is not None and job.install_date > self._clock.now():
                self._step(job, status="InstallScheduled")
                await self._sleep_until(job.install_date, generation)
        await self._install(job, path, generation)

    async def _download(self, job: Job, generation: int) -> Path | None:
        dest = self.directory / file_name_for(job.location)
        tries = job.retries + 1
        self._step(job, phase="downloading", status="Downloading")
        for attempt in range(1, tries + 1):
            self._check(generation)
            self.attempt = attempt
            try:
                await transfer.download(
                    job.location,
                    dest,
                    timeout=self.download_timeout_s,
                    ssl_context=self._ssl_context()
                    if job.location.lower().startswith("https:")
                    else None,
                )
            except transfer.TransferError as exc:
                self.last_error = str(exc)
                log.warning("firmware download attempt %d of %d: %s", attempt, tries, exc)
                if attempt < tries:
                    await self._clock.sleep(job.retry_interval)
                continue
            self._check(generation)
            self.last_error = None
            self._step(job, status="Downloaded")
            return dest
        self._step(job, phase="done", status="DownloadFailed")
        return None

    def _verified(self, job: Job, path: Path) -> bool:
        """The signature checked before anything is installed; a bad file is deleted."""
        try:
            cert = firmware_signing.check_signing_certificate(
                job.signing_certificate or "", self._roots(), self._clock.now()
            )
            firmware_signing.check_signature(cert, path, job.signature or "")
        except firmware_signing.SigningError as exc:
            self.last_error = str(exc)
            log.error("firmware %s refused: %s", path.name, exc)
            path.unlink(missing_ok=True)
            self._step(job, phase="done", status="InvalidSignature")
            self._emit(security_events.INVALID_FIRMWARE_SIGNATURE, str(exc))
            return False
        self._step(job, status="SignatureVerified")
        return True

    async def _install(self, job: Job, path: Path, generation: int) -> None:
        self._check(generation)
        job.availability = self._take_out_of_service()
        job.previous_version = self.version
        self._step(job, phase="installing")
        while any(c.tx is not None for c in self._sup.connectors.values()):
            await self._clock.sleep(1.0)  # the installation waits for the sessions to end
        self._step(job, status="Installing")
        ok, why = await self._run_installer(path)
        if not ok:
            self.last_error = why
            status = firmware_signing.install_failure_status(job.signed, why)
            self._step(job, phase="done", status=status)
            self._restore_availability(job)
            return
        if job.signed:
            self._step(job, phase="rebooting", status="InstallRebooting")
        else:
            self._step(job, phase="rebooting")
        await self._restart("firmware installed")

    async def _run_installer(self, path: Path) -> tuple[bool, str]:
        installer = self.installer
        if installer is None:
            log.error("no [firmware] installer configured: firmware %s not installed", path)
            return False, "no installer configured"
        argv = [str(installer), str(path)]
        if installer.suffix == ".py":
            argv.insert(0, sys.executable)
        env = {**os.environ, **self._installer_env, "CHARGERD_FIRMWARE_VERSION": self.version}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        except OSError as exc:
            log.error("firmware installer %s cannot run: %s", installer, exc)
            return False, f"installer cannot run: {exc.strerror or exc}"
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.install_timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.error("firmware installer timed out after %.0f s", self.install_timeout_s)
            return False, "installer timed out"
        text = out.decode(errors="replace").strip()
        for line in text.splitlines()[-20:]:
            log.info("installer: %s", line)
        if proc.returncode != 0:
            log.error("firmware installer exited %s", proc.returncode)
            return False, firmware_signing.installer_failure(proc.returncode)
        return True, ""

    # -- the connectors during an installation --------------------------------------------

    def _take_out_of_service(self) -> str:
        """Every connector Unavailable (after its transaction); the state before, as JSON."""
        before = {"0": self._sup.station_operative}
        for conn in self._sup.connectors.values():
            target = conn.scheduled_operative
            before[str(conn.id)] = conn.operative if target is None else target
        self._availability.change_availability(0, "Inoperative")
        return json.dumps(before)

    def _restore_availability(self, job: Job) -> None:
        if not job.availability:
            return
        try:
            before = json.loads(job.availability)
        except ValueError:
            before = {}
        self._availability.change_availability(0, "Operative")
        for key, operative in before.items():
            cid = int(key)
            if cid != 0 and not operative and cid in self._sup.connectors:
                self._availability.change_availability(cid, "Inoperative")
        if before.get("0") is False:
            self._availability.change_availability(0, "Inoperative")
        job.availability = None
        with self._store.transaction():
            self._save(job)


class _Superseded(Exception):
    """A newer request replaced the job being worked on."""
