"""GetDiagnostics (Firmware Management, OCPP 1.6 §5.8) and GetLog (Security Whitepaper).

The CSMS names a location (http://, https:// or ftp://); the station answers at
once with the file name, builds a bundle (``diagnostics_bundle``) and uploads it
from a background task, ``1 + retries`` attempts ``retryInterval`` seconds apart:

- GetDiagnostics: DiagnosticsStatusNotification Uploading, then Uploaded or
  UploadFailed;
- GetLog (DiagnosticsLog or SecurityLog): LogStatusNotification Uploading, then
  Uploaded or UploadFailure, each with the request's requestId.  A GetLog while
  another runs cancels the older one and is answered AcceptedCanceled.

The notifications go through ``notify`` (the daemon hands the durable outbox):
an upload that ends while the link is down is still reported after reconnect,
in order.  A TriggerMessage(DiagnosticsStatusNotification) reports Uploading
while an upload runs and Idle otherwise (``trigger_status``), as §4.4 defines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ocpp.routing import after, on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from chargerd.clock import Clock, iso, parse_iso
from chargerd.features import diagnostics_bundle as bundle

log = logging.getLogger(__name__)

Upload = Callable[..., Awaitable[Any]]

#: Attempts after the first when the CSMS gives no ``retries`` (the station decides).
DEFAULT_RETRIES = 2
#: Seconds between attempts when the CSMS gives no ``retryInterval``.
DEFAULT_RETRY_INTERVAL_S = 30
#: Bounds on what a CSMS may ask, so that a typo cannot keep a task alive for days.
MAX_RETRIES = 10
MAX_RETRY_INTERVAL_S = 3600
#: One upload attempt at most this long.
UPLOAD_TIMEOUT_S = 120.0


@dataclass
class UploadJob:
    """One requested upload: what, where, and where it stands (for chargerctl)."""

    kind: str  # "Diagnostics", "DiagnosticsLog" or "SecurityLog"
    location: str
    filename: str
    retries: int
    retry_interval: int
    start: datetime | None = None
    stop: datetime | None = None
    request_id: int | None = None
    state: str = "Uploading"
    attempts: int = 0
    error: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    task: asyncio.Task | None = field(default=None, repr=False)

    def view(self) -> dict:
        from chargerd.features.transfer import redact

        return {
            "kind": self.kind,
            "state": self.state,
            "file": self.filename,
            "location": redact(self.location),
            "request_id": self.request_id,
            "attempts": self.attempts,
            "max_attempts": 1 + self.retries,
            "error": self.error,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


def plan_retries(retries: int | None, retry_interval: int | None) -> tuple[int, int]:
    """The (retries, interval) to use: the CSMS's values, bounded; ours when absent."""
    r = DEFAULT_RETRIES if retries is None else max(0, min(int(retries), MAX_RETRIES))
    i = (
        DEFAULT_RETRY_INTERVAL_S
        if retry_interval is None
        else max(0, min(int(retry_interval), MAX_RETRY_INTERVAL_S))
    )
    return r, i


_PERMISSION = re.compile(r"HTTP (401|403)\b|FTP (530|550|553)\b")
_UNSUPPORTED = re.compile(r"HTTP (405|501)\b|FTP (502|504)\b")


def log_failure_status(error: str | None) -> str:
    """LogStatusNotification's final status for a failed GetLog upload: PermissionDenied
    when the server refused for lack of rights, NotSupportedOperation when it does not
    take uploads that way, UploadFailure otherwise (the whitepaper's UploadLogStatus)."""
    if error and _PERMISSION.search(error):
        return "PermissionDenied"
    if error and _UNSUPPORTED.search(error):
        return "NotSupportedOperation"
    return "UploadFailure"


def _when(text: str | None) -> datetime | None:
    return parse_iso(text) if text else None


class DiagnosticsService:
    """Answers GetDiagnostics and GetLog, runs their uploads, reports their state."""

    def __init__(
        self,
        *,
        clock: Clock,
        charge_point_id: str,
        notify: Callable[[str, dict], None],
        security_entries: Callable[[datetime | None, datetime | None], list[dict]],
        frames: Callable[[], list[dict]],
        configuration: Callable[[], list[dict]],
        log_files: Callable[[], list[Path]] = list,
        info: Callable[[], dict] = dict,
        upload: Upload | None = None,
        work_dir: Path | None = None,
        ssl_context: Callable[[], Any] = lambda: None,
        journal_unit: str | None = None,
        journalctl: str = "journalctl",
        journal: Any = None,  # an upload_journal.UploadJournal: final statuses across restarts
    ) -> None:
        self._clock = clock
        self._cp = charge_point_id
        self._notify = notify
        self._security_entries = security_entries
        self._frames = frames
        self._configuration = configuration
        self._log_files = log_files
        self._info = info
        self._upload = upload
        self._work_dir = work_dir
        self._ssl_context = ssl_context
        self._journal_unit = journal_unit  # the daemon logs to journald: bundle its journal
        self._journalctl = journalctl
        self._remove_stale_bundles()
        self.diagnostics: UploadJob | None = None
        self.log: UploadJob | None = None
        self._to_start: list[UploadJob] = []
        self._journal = journal
        if journal is not None:
            self._close_interrupted()

    def _close_interrupted(self) -> None:
        """Uploads a restart cut get their final failure now (upload_journal.py)."""
        from chargerd.features.upload_journal import INTERRUPTED

        for cut in self._journal.close_interrupted(self._notify):
            job = UploadJob(cut.kind, cut.location, cut.filename, 0, 0, request_id=cut.request_id)
            job.state = "UploadFailed" if cut.kind == "Diagnostics" else "UploadFailure"
            job.error, job.started_at = INTERRUPTED, cut.accepted_at
            job.ended_at = iso(self._clock.now())
            if cut.kind == "Diagnostics":
                self.diagnostics = job
            else:
                self.log = job

    def _journal_begin(self, job: UploadJob) -> None:
        if self._journal is None:
            return
        try:
            at = iso(self._clock.now())
            self._journal.begin(job.kind, job.request_id, job.filename, job.location, at)
        except Exception as exc:  # a full disk: the upload still runs, unjournaled
            log.error("%s upload %s not journaled: %s", job.kind, job.filename, exc)

    def _ending(self, job: UploadJob) -> contextlib.AbstractContextManager:
        if self._journal is None:
            return contextlib.nullcontext()
        return self._journal.ending(job.kind, job.filename)

    def _remove_stale_bundles(self) -> None:
        """Bundles a crash or a power cut left behind (each lives in ``upload-*`` only
        while its upload runs): a small SD card must not fill up with them."""
        if self._work_dir is None:
            return
        import shutil

        for stale in Path(self._work_dir).glob("upload-*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
                log.info("removed %s, left by an interrupted upload", stale)

    # -- state -----------------------------------------------------------------------------

    def trigger_status(self) -> str:
        """DiagnosticsStatusNotification for a TriggerMessage: Uploading or Idle (§4.4)."""
        job = self.diagnostics
        return "Uploading" if job is not None and job.state == "Uploading" else "Idle"

    def log_trigger_status(self) -> dict:
        """LogStatusNotification for an ExtendedTriggerMessage: Uploading (+requestId) or Idle."""
        job = self.log
        if job is not None and job.state == "Uploading":
            return {"status": "Uploading", "requestId": job.request_id}
        return {"status": "Idle"}

    def status(self) -> dict:
        """For chargerctl status: the last diagnostics and log uploads, or None."""
        return {
            "diagnostics": self.diagnostics.view() if self.diagnostics else None,
            "log": self.log.view() if self.log else None,
        }

    # -- OCPP ------------------------------------------------------------------------------

    def _filename(self, what: str) -> str:
        stamp = self._clock.now().strftime("%Y%m%dT%H%M%SZ")
        safe_cp = "".join(c if c.isalnum() or c in "-_" else "_" for c in self._cp)
        return f"{safe_cp}-{what}-{stamp}.tar.gz"

    def _check_location(self, location: str) -> str | None:
        from chargerd.features.transfer import TransferError, check_url

        try:
            check_url(location)
        except TransferError as exc:
            return str(exc)
        return None

    @on(Action.get_diagnostics)
    def on_get_diagnostics(
        self,
        location: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        start_time: str | None = None,
        stop_time: str | None = None,
        **_: Any,
    ) -> call_result.GetDiagnostics:
        why = self._check_location(location)
        if why is not None:
            # No file will be uploaded: the answer carries no fileName (§6.23).
            log.warning("GetDiagnostics refused: %s", why)
            return call_result.GetDiagnostics()
        r, i = plan_retries(retries, retry_interval)
        job = UploadJob(
            kind="Diagnostics",
            location=location,
            filename=self._filename("diagnostics"),
            retries=r,
            retry_interval=i,
            start=_when(start_time),
            stop=_when(stop_time),
        )
        self._cancel(self.diagnostics)
        self.diagnostics = job
        self._journal_begin(job)
        self._to_start.append(job)
        log.info("GetDiagnostics: %s to %s", job.filename, location.split("@")[-1])
        return call_result.GetDiagnostics(file_name=job.filename)

    @after(Action.get_diagnostics)
    async def _get_diagnostics_after(self, **_: Any) -> None:
        self._start_queued()

    @on(Action.get_log)
    def on_get_log(
        self,
        log: dict,  # the OCPP field name (shadows the logger here)
        log_type: str,
        request_id: int,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.GetLog:
        location = str(log.get("remote_location", ""))
        why = self._check_location(location)
        if why is not None:
            _log_warning("GetLog refused: %s", why)
            return call_result.GetLog(status="Rejected")
        r, i = plan_retries(retries, retry_interval)
        what = "securitylog" if log_type == "SecurityLog" else "diagnosticslog"
        job = UploadJob(
            kind=log_type,
            location=location,
            filename=self._filename(what),
            retries=r,
            retry_interval=i,
            start=_when(log.get("oldest_timestamp")),
            stop=_when(log.get("latest_timestamp")),
            request_id=request_id,
        )
        canceled = self._cancel(self.log)
        self.log = job
        self._journal_begin(job)
        self._to_start.append(job)
        _log_info("GetLog %s #%s: %s", log_type, request_id, job.filename)
        status = "AcceptedCanceled" if canceled else "Accepted"
        return call_result.GetLog(status=status, filename=job.filename)

    @after(Action.get_log)
    async def _get_log_after(self, **_: Any) -> None:
        self._start_queued()

    # -- the uploads -----------------------------------------------------------------------

    def _start_queued(self) -> None:
        jobs, self._to_start = self._to_start, []
        for job in jobs:
            if job.state == "Uploading" and job.task is None:
                job.task = asyncio.create_task(self.run_job(job), name=f"upload {job.kind}")

    def _cancel(self, job: UploadJob | None) -> bool:
        """Cancel a running job; True if one was running."""
        if job is None or job.state != "Uploading":
            return False
        job.state = "Canceled"
        job.ended_at = iso(self._clock.now())
        if job.task is not None:
            job.task.cancel()
        if job in self._to_start:
            self._to_start.remove(job)
        return True

    def _send(self, job: UploadJob, status: str) -> None:
        if job.kind == "Diagnostics":
            self._notify("DiagnosticsStatusNotification", {"status": status})
        else:
            self._notify("LogStatusNotification", {"status": status, "requestId": job.request_id})

    async def run_job(self, job: UploadJob) -> None:
        """Build the bundle and upload it with retries; report each step.  Never raises
        (but a cancellation, by a newer request, ends it silently)."""
        job.started_at = iso(self._clock.now())
        self._send(job, "Uploading")
        final = "UploadFailed" if job.kind == "Diagnostics" else "UploadFailure"
        try:
            with tempfile.TemporaryDirectory(dir=self._work_dir, prefix="upload-") as tmp:
                path = Path(tmp) / job.filename
                try:
                    args = self._bundle_args(job)
                    await asyncio.to_thread(bundle.write_bundle, path, **args)
                except Exception as exc:  # a bundle that cannot be built is a failed upload
                    log.exception("the %s bundle could not be built", job.kind)
                    job.error = f"bundle: {exc}"
                else:
                    if await self._upload_with_retries(job, path):
                        final = "Uploaded"
        except asyncio.CancelledError:
            log.info("%s upload %s canceled", job.kind, job.filename)
            raise
        except Exception as exc:  # never let an upload task die loudly
            log.exception("%s upload failed unexpectedly", job.kind)
            job.error = str(exc)
        if final != "Uploaded" and job.kind != "Diagnostics":
            final = log_failure_status(job.error)
        job.state = final
        job.ended_at = iso(self._clock.now())
        try:
            with self._ending(job):  # the final status and the journal row's removal: atomic
                self._send(job, final)
        except Exception as exc:  # the store refused: the status goes live at least
            log.error("%s upload %s: final status not journaled: %s", job.kind, job.filename, exc)
            self._send(job, final)

    async def _upload_with_retries(self, job: UploadJob, path: Path) -> bool:
        from chargerd.features.transfer import TransferError
        from chargerd.features.transfer import upload as default_upload

        upload = self._upload or default_upload
        for attempt in range(1, job.retries + 2):
            job.attempts = attempt
            try:
                await upload(
                    job.location, path, timeout=UPLOAD_TIMEOUT_S, ssl_context=self._ssl_context()
                )
            except (TransferError, OSError) as exc:
                job.error = str(exc)
                last = attempt > job.retries
                log.warning(
                    "%s upload attempt %d of %d failed: %s%s",
                    job.kind,
                    attempt,
                    job.retries + 1,
                    exc,
                    "" if last else f"; next in {job.retry_interval} s",
                )
                if not last:
                    await self._clock.sleep(job.retry_interval)
                continue
            job.error = None
            log.info("%s uploaded: %s (attempt %d)", job.kind, job.filename, attempt)
            return True
        return False

    def _bundle_args(self, job: UploadJob) -> dict:
        """What goes into a job's bundle, gathered on the loop's thread (the frame log and
        the configuration are not thread-safe); only the writing runs in a thread."""
        args: dict[str, Any] = {
            "prefix": job.filename.removesuffix(".tar.gz"),
            "created": self._clock.now(),
            "start": job.start,
            "stop": job.stop,
            "security_entries": self._security_entries(job.start, job.stop),
            "info": {**self._info(), "charge_point_id": self._cp, "kind": job.kind},
        }
        if job.kind != "SecurityLog":
            args["log_files"] = list(self._log_files())
            args["frames"] = list(self._frames())
            args["configuration"] = list(self._configuration())
            if self._journal_unit:
                unit, exe, start, stop = self._journal_unit, self._journalctl, job.start, job.stop
                args["journal"] = lambda: bundle.journal_text(
                    start, stop, unit=unit, journalctl=exe
                )
        return args

    async def aclose(self) -> None:
        """Cancel running uploads (shutdown)."""
        for job in (self.diagnostics, self.log):
            if job is not None and job.task is not None and not job.task.done():
                job.task.cancel()
                with contextlib.suppress(BaseException):
                    await job.task


def _log_info(msg: str, *args: Any) -> None:
    log.info(msg, *args)


def _log_warning(msg: str, *args: Any) -> None:
    log.warning(msg, *args)
