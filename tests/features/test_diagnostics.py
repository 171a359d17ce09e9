"""GetDiagnostics and GetLog against real HTTP and FTP servers on 127.0.0.1.

The servers are the bench's (chargerd/bench/csms/files.py); the clock is manual, so
retry intervals pass without waiting.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
from datetime import timedelta
from pathlib import Path

import pytest

from chargerd.bench.csms.files import FtpFileServer, HttpFileServer
from chargerd.clock import iso
from chargerd.features.diagnostics import DiagnosticsService, plan_retries
from chargerd.features.security_log import SecurityLog

CONFIG = [
    {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
    {"key": "AuthorizationKey", "readonly": False, "value": "0011223344556677889900aabbccddee"},
    {"key": "SecurityProfile", "readonly": True, "value": "1"},
]


class Harness:
    def __init__(self, tmp_path: Path, clock) -> None:
        self.sent: list[tuple[str, dict]] = []
        self.seclog = SecurityLog(tmp_path / "security.log")
        self.frames: list[dict] = []
        self.logfile = tmp_path / "chargerd.log"
        self.clock = clock
        self.svc = DiagnosticsService(
            clock=clock,
            charge_point_id="CP-1",
            notify=lambda a, p: self.sent.append((a, p)),
            security_entries=self.seclog.entries,
            frames=lambda: list(self.frames),
            configuration=lambda: list(CONFIG),
            log_files=lambda: [self.logfile] if self.logfile.exists() else [],
            info=lambda: {"chargerd": "test"},
            work_dir=tmp_path,
        )

    def statuses(self) -> list[str]:
        return [p["status"] for _, p in self.sent]

    async def finish(self, job) -> None:
        self.svc._start_queued()
        await asyncio.wait_for(job.task, timeout=30)


@pytest.fixture
def h(tmp_path, clock) -> Harness:
    return Harness(tmp_path, clock)


@pytest.fixture
def http(tmp_path):
    with HttpFileServer(tmp_path / "http") as server:
        yield server


@pytest.fixture
def ftp(tmp_path):
    with FtpFileServer(tmp_path / "ftp") as server:
        yield server


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {
            m.name.split("/", 1)[1]: tar.extractfile(m).read()
            for m in tar.getmembers()
            if m.isfile()
        }


async def test_get_diagnostics_uploads_a_bundle_over_http(h, http, clock):
    start = clock.now()
    h.frames += [
        {"time": iso(start - timedelta(hours=2)), "direction": "out", "frame": "OLD"},
        {"time": iso(start + timedelta(minutes=1)), "direction": "in", "frame": "IN WINDOW"},
    ]
    h.logfile.write_text(
        f"{(start - timedelta(hours=2)).isoformat()} INFO old line\n"
        f"{(start + timedelta(minutes=2)).isoformat()} ERROR new line\n  traceback line\n"
    )
    h.seclog.append(start + timedelta(minutes=3), "StartupOfTheDevice", "boot")
    answer = h.svc.on_get_diagnostics(
        location=http.url(""),
        start_time=iso(start - timedelta(minutes=5)),
        stop_time=iso(start + timedelta(hours=1)),
    )
    assert answer.file_name.startswith("CP-1-diagnostics-") and answer.file_name.endswith(".tar.gz")
    assert h.svc.trigger_status() == "Uploading"
    await h.finish(h.svc.diagnostics)
    assert h.sent == [
        ("DiagnosticsStatusNotification", {"status": "Uploading"}),
        ("DiagnosticsStatusNotification", {"status": "Uploaded"}),
    ]
    assert h.svc.trigger_status() == "Idle"
    assert http.uploads == [answer.file_name]
    files = members(http.root / "uploads" / answer.file_name)
    assert set(files) == {
        "logs/chargerd.log",
        "security.log",
        "frames.jsonl",
        "configuration.json",
        "info.json",
    }
    assert b"IN WINDOW" in files["frames.jsonl"] and b"OLD" not in files["frames.jsonl"]
    assert files["logs/chargerd.log"].decode().splitlines()[1:] == ["  traceback line"]
    assert (
        b"new line" in files["logs/chargerd.log"] and b"old line" not in files["logs/chargerd.log"]
    )
    config = {e["key"]: e["value"] for e in json.loads(files["configuration.json"])}
    assert config["HeartbeatInterval"] == "300"
    assert config["AuthorizationKey"] == "(secret)"
    for content in files.values():
        assert b"0011223344556677889900aabbccddee" not in content
    state = h.svc.status()["diagnostics"]
    assert state["state"] == "Uploaded" and state["attempts"] == 1


async def test_an_upload_to_a_server_that_refuses_is_retried_then_fails(h, http, clock):
    http.refuse_uploads = True
    before = clock.monotonic()
    h.svc.on_get_diagnostics(location=http.url("upload"), retries=2, retry_interval=30)
    job = h.svc.diagnostics
    await h.finish(job)
    assert h.statuses() == ["Uploading", "UploadFailed"]
    assert job.attempts == 3
    assert "403" in (job.error or "")
    assert clock.monotonic() - before == pytest.approx(60)  # two waits of retryInterval
    assert h.svc.status()["diagnostics"]["state"] == "UploadFailed"
    assert http.uploads == []


async def test_a_retry_succeeds_once_the_server_accepts(h, http, clock):
    http.refuse_uploads = True
    real_sleep = clock.sleep

    async def sleep_then_accept(seconds: float) -> None:
        http.refuse_uploads = False
        await real_sleep(seconds)

    clock.sleep = sleep_then_accept
    h.svc.on_get_diagnostics(location=http.url(""), retries=3, retry_interval=10)
    await h.finish(h.svc.diagnostics)
    assert h.statuses() == ["Uploading", "Uploaded"]
    assert h.svc.diagnostics.attempts == 2
    assert len(http.uploads) == 1


async def test_get_log_security_log_over_ftp(h, ftp, clock):
    h.seclog.append(clock.now() - timedelta(days=2), "ResetOrReboot", "old")
    h.seclog.append(clock.now(), "InvalidMessages", "new")
    answer = h.svc.on_get_log(
        log={
            "remote_location": ftp.url("uploads/"),
            "oldest_timestamp": iso(clock.now() - timedelta(days=1)),
        },
        log_type="SecurityLog",
        request_id=42,
    )
    assert answer.status == "Accepted"
    assert "securitylog" in answer.filename
    assert h.svc.log_trigger_status() == {"status": "Uploading", "requestId": 42}
    await h.finish(h.svc.log)
    assert h.sent == [
        ("LogStatusNotification", {"status": "Uploading", "requestId": 42}),
        ("LogStatusNotification", {"status": "Uploaded", "requestId": 42}),
    ]
    files = members(ftp.root / "uploads" / answer.filename)
    assert set(files) == {"security.log", "info.json"}  # no configuration, no frames
    lines = [json.loads(x) for x in files["security.log"].decode().splitlines()]
    assert [e["techInfo"] for e in lines] == ["new"]
    assert h.svc.log_trigger_status() == {"status": "Idle"}


async def test_get_log_diagnostics_log_failure_is_upload_failure(h, clock, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    h.svc.on_get_log(
        log={"remote_location": f"ftp://user:password@127.0.0.1:{port}/"},
        log_type="DiagnosticsLog",
        request_id=7,
        retries=1,
        retry_interval=5,
    )
    await h.finish(h.svc.log)
    assert h.sent[-1] == ("LogStatusNotification", {"status": "UploadFailure", "requestId": 7})
    view = h.svc.status()["log"]
    assert view["attempts"] == 2 and view["max_attempts"] == 2
    assert "password" not in json.dumps(view)  # the location is shown without it


async def test_a_new_get_log_cancels_the_running_one(h, http):
    first = h.svc.on_get_log(
        log={"remote_location": http.url("")}, log_type="SecurityLog", request_id=1
    )
    assert first.status == "Accepted"
    second = h.svc.on_get_log(
        log={"remote_location": http.url("")}, log_type="DiagnosticsLog", request_id=2
    )
    assert second.status == "AcceptedCanceled"
    await h.finish(h.svc.log)
    assert h.sent == [
        ("LogStatusNotification", {"status": "Uploading", "requestId": 2}),
        ("LogStatusNotification", {"status": "Uploaded", "requestId": 2}),
    ]


def test_a_location_the_station_cannot_use_is_refused(h):
    assert (
        h.svc.on_get_log(
            log={"remote_location": "sftp://host/x"}, log_type="SecurityLog", request_id=3
        ).status
        == "Rejected"
    )
    assert h.svc.on_get_diagnostics(location="mailto:ops@example.com").file_name is None
    assert h.sent == [] and h.svc.trigger_status() == "Idle"


def test_retry_plan_is_bounded():
    assert plan_retries(None, None) == (2, 30)
    assert plan_retries(0, 0) == (0, 0)
    assert plan_retries(10_000, 10**9) == (10, 3600)
    assert plan_retries(-3, -1) == (0, 0)


def test_the_journal_goes_in_the_bundle_for_the_window(tmp_path, clock):
    from chargerd.features.diagnostics_bundle import journal_text

    fake = tmp_path / "journalctl"
    fake.write_text('#!/bin/sh\necho "2026-01-01T00:00:01+0000 pi chargerd[1]: args: $*"\n')
    fake.chmod(0o755)
    start = clock.now()
    text = journal_text(start, start + timedelta(hours=1), journalctl=str(fake))
    assert "-u chargerd" in text
    assert f"--since @{int(start.timestamp())}" in text
    assert f"--until @{int(start.timestamp()) + 3601}" in text

    failing = tmp_path / "broken"
    failing.write_text('#!/bin/sh\necho "No journal files were found." >&2\nexit 1\n')
    failing.chmod(0o755)
    with pytest.raises(OSError, match="No journal files"):
        journal_text(None, None, journalctl=str(failing))
    with pytest.raises(OSError, match="not found"):
        journal_text(None, None, journalctl=str(tmp_path / "missing"))


async def test_a_journal_that_cannot_be_read_is_noted_not_fatal(tmp_path, clock, http):
    svc = DiagnosticsService(
        clock=clock,
        charge_point_id="CP-1",
        notify=lambda a, p: None,
        security_entries=lambda a, b: [],
        frames=list,
        configuration=list,
        journal_unit="chargerd",
        journalctl=str(tmp_path / "no-journalctl"),
        work_dir=tmp_path,
    )
    answer = svc.on_get_diagnostics(location=http.url(""))
    svc._start_queued()
    await asyncio.wait_for(svc.diagnostics.task, timeout=30)
    assert svc.diagnostics.state == "Uploaded"
    files = members(http.root / "uploads" / answer.file_name)
    assert "logs/journal.txt" not in files
    assert "no-journalctl not found" in json.loads(files["info.json"])["skipped"][0]


async def test_get_log_over_https_trusts_an_installed_csms_root(tmp_path, clock):
    import ssl

    from chargerd.bench.csms.certs import make_ca_and_server_cert
    from chargerd.features.firmware_setup import https_context

    (tmp_path / "pki").mkdir()
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    certs_dir = tmp_path / "certs"
    (certs_dir / "csms_roots").mkdir(parents=True)
    (certs_dir / "csms_roots" / "root.pem").write_bytes(Path(ca).read_bytes())
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    sent: list[tuple[str, dict]] = []

    def service(certs: Path) -> DiagnosticsService:
        return DiagnosticsService(
            clock=clock,
            charge_point_id="CP-1",
            notify=lambda a, p: sent.append((a, p)),
            security_entries=lambda a, b: [],
            frames=list,
            configuration=list,
            work_dir=tmp_path,
            ssl_context=lambda: https_context(None, certs),
        )

    with HttpFileServer(tmp_path / "https", ssl_context=server_ctx) as srv:
        svc = service(certs_dir)
        svc.on_get_log(log={"remote_location": srv.url("")}, log_type="SecurityLog", request_id=5)
        svc._start_queued()
        await asyncio.wait_for(svc.log.task, timeout=30)
        assert sent[-1] == ("LogStatusNotification", {"status": "Uploaded", "requestId": 5})
        assert len(srv.uploads) == 1
        # Without the root the server is not trusted: UploadFailure, a clear reason.
        other = service(tmp_path / "no-certs")
        other.on_get_log(
            log={"remote_location": srv.url("")}, log_type="SecurityLog", request_id=6, retries=0
        )
        other._start_queued()
        await asyncio.wait_for(other.log.task, timeout=30)
        assert sent[-1] == ("LogStatusNotification", {"status": "UploadFailure", "requestId": 6})
        assert "certificate" in other.log.error
        assert len(srv.uploads) == 1


def test_bundles_left_by_a_crash_are_removed_at_start(tmp_path, clock):
    stale = tmp_path / "upload-abc123"
    stale.mkdir()
    (stale / "CP-1-diagnostics.tar.gz").write_bytes(b"x" * 1000)
    keep = tmp_path / "chargerd.db"
    keep.write_bytes(b"db")
    Harness(tmp_path, clock)
    assert not stale.exists()
    assert keep.exists()


async def test_get_log_refused_for_rights_is_permission_denied(h, http, ftp):
    http.refuse_uploads = True  # HTTP 403
    h.svc.on_get_log(
        log={"remote_location": http.url("")}, log_type="SecurityLog", request_id=11, retries=0
    )
    await h.finish(h.svc.log)
    assert h.sent[-1] == ("LogStatusNotification", {"status": "PermissionDenied", "requestId": 11})
    # An FTP directory the user may not write to: 550.
    h.svc.on_get_log(
        log={"remote_location": ftp.url("")}, log_type="SecurityLog", request_id=12, retries=0
    )
    await h.finish(h.svc.log)
    assert h.sent[-1] == ("LogStatusNotification", {"status": "PermissionDenied", "requestId": 12})
    assert h.svc.status()["log"]["state"] == "PermissionDenied"


def test_log_failure_status():
    from chargerd.features.diagnostics import log_failure_status

    assert (
        log_failure_status("upload to http://h/ failed: HTTP 403 Forbidden") == "PermissionDenied"
    )
    assert log_failure_status("upload failed: FTP 530 Login incorrect.") == "PermissionDenied"
    assert log_failure_status("failed: HTTP 405 Method Not Allowed") == "NotSupportedOperation"
    assert log_failure_status("failed: connection refused") == "UploadFailure"
    assert log_failure_status(None) == "UploadFailure"
