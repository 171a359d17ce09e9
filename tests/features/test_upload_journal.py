"""GetDiagnostics / GetLog across a restart: an upload a restart cut is closed with its final
failure status, once; a finished one is not reported again.  Real SQLite, real HTTP server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chargerd.bench.csms.files import HttpFileServer
from chargerd.features.diagnostics import DiagnosticsService
from chargerd.features.security_log import SecurityLog
from chargerd.features.upload_journal import UploadJournal, final_failure
from chargerd.store import Store


def service(tmp_path: Path, store: Store, clock, sent: list) -> DiagnosticsService:
    return DiagnosticsService(
        clock=clock,
        charge_point_id="CP-1",
        notify=lambda a, p: sent.append((a, p)),
        security_entries=SecurityLog(tmp_path / "security.log").entries,
        frames=list,
        configuration=list,
        work_dir=tmp_path,
        journal=UploadJournal(store),
    )


@pytest.fixture
def http(tmp_path):
    with HttpFileServer(tmp_path / "http") as server:
        yield server


def test_uploads_cut_by_a_restart_get_their_final_failure_once(tmp_path, store, clock, http):
    sent: list[tuple[str, dict]] = []
    before = service(tmp_path, store, clock, sent)
    before.on_get_diagnostics(location=http.url("upload"))
    before.on_get_log(
        log={"remote_location": "ftp://user:secret@127.0.0.1/up"},
        log_type="SecurityLog",
        request_id=42,
    )
    assert sent == []  # accepted, never run: the process "died" here

    after = service(tmp_path, store, clock, sent)  # the restart
    assert sent == [
        ("DiagnosticsStatusNotification", {"status": "UploadFailed"}),
        ("LogStatusNotification", {"status": "UploadFailure", "requestId": 42}),
    ]
    log_view = after.status()["log"]
    assert log_view["state"] == "UploadFailure"
    assert log_view["error"] == "interrupted by a restart"
    assert "secret" not in log_view["location"]
    assert "secret" not in str([tuple(r) for r in store.query("SELECT * FROM upload_job")])

    service(tmp_path, store, clock, sent)  # another restart: nothing more
    assert len(sent) == 2


async def test_a_finished_upload_is_not_reported_again(tmp_path, store, clock, http):
    sent: list[tuple[str, dict]] = []
    svc = service(tmp_path, store, clock, sent)
    svc.on_get_diagnostics(location=http.url("upload"))
    svc._start_queued()
    await asyncio.wait_for(svc.diagnostics.task, timeout=30)
    assert [p["status"] for _, p in sent] == ["Uploading", "Uploaded"]
    assert store.query("SELECT * FROM upload_job") == []
    service(tmp_path, store, clock, sent)
    assert len(sent) == 2


def test_final_failure_payloads():
    assert final_failure("Diagnostics", None) == (
        "DiagnosticsStatusNotification",
        {"status": "UploadFailed"},
    )
    assert final_failure("DiagnosticsLog", 7) == (
        "LogStatusNotification",
        {"status": "UploadFailure", "requestId": 7},
    )
