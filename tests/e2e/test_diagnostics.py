"""GetDiagnostics and GetLog from the real daemon to real HTTP and FTP servers on 127.0.0.1,
with chargerctl showing the upload state."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tarfile

import pytest

from chargerd.bench.csms.files import FtpFileServer, HttpFileServer

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
SECRET = "0123456789abcdef0123"


def statuses(csms, action: str) -> list[dict]:
    return [r.payload for r in csms.calls(action, cp_id=CP)]


async def chargerctl(rig, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chargerd.cli", "--socket", str(rig.socket), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def http(tmp_path):
    with HttpFileServer(tmp_path / "http") as server:
        yield server


@pytest.fixture
def ftp(tmp_path):
    with FtpFileServer(tmp_path / "ftp") as server:
        yield server


async def test_get_diagnostics_over_http_with_status_and_chargerctl(
    make_registered_rig, csms, http
):
    rig = await make_registered_rig(csms={"security_profile": 1, "basic_auth_password": SECRET})
    answer = await csms.call(CP, "GetDiagnostics", {"location": http.url(""), "retries": 1})
    name = answer["fileName"]
    await csms.wait_for(
        "DiagnosticsStatusNotification",
        predicate=lambda r: r.payload["status"] != "Uploading",
        timeout=15,
    )
    assert [p["status"] for p in statuses(csms, "DiagnosticsStatusNotification")] == [
        "Uploading",
        "Uploaded",
    ]
    assert http.uploads == [name]
    with tarfile.open(http.root / "uploads" / name, "r:gz") as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar if m.isfile()}
    assert {"frames.jsonl", "configuration.json", "security.log", "info.json"} <= set(files)
    assert b"GetDiagnostics" in files["frames.jsonl"]  # the request itself is in the window
    keys = {e["key"] for e in json.loads(files["configuration.json"])}
    assert "HeartbeatInterval" in keys
    assert b"StartupOfTheDevice" in files["security.log"]
    for content in files.values():
        assert SECRET.encode() not in content  # never a secret

    # Once done, a triggered DiagnosticsStatusNotification says Idle (§4.4).
    assert await csms.call(
        CP, "TriggerMessage", {"requestedMessage": "DiagnosticsStatusNotification"}
    ) == {"status": "Accepted"}
    await csms.wait_for("DiagnosticsStatusNotification", count=3, timeout=5)
    assert statuses(csms, "DiagnosticsStatusNotification")[-1] == {"status": "Idle"}

    out = await chargerctl(rig, "status", "--json")
    job = json.loads(out.stdout)["uploads"]["diagnostics"]
    assert (job["state"], job["file"], job["attempts"]) == ("Uploaded", name, 1)
    human = await chargerctl(rig, "status")
    assert f"diagnostics upload: Uploaded {name} (attempt 1 of 2)" in human.stdout


async def test_an_upload_to_a_refusing_server_fails_after_the_retries(rig, csms, http):
    http.refuse_uploads = True
    await csms.call(
        CP, "GetDiagnostics", {"location": http.url("in"), "retries": 1, "retryInterval": 1}
    )
    await csms.wait_for(
        "DiagnosticsStatusNotification",
        predicate=lambda r: r.payload["status"] == "UploadFailed",
        timeout=15,
    )
    assert [p["status"] for p in statuses(csms, "DiagnosticsStatusNotification")] == [
        "Uploading",
        "UploadFailed",
    ]
    job = (await rig.status())["uploads"]["diagnostics"]
    assert job["attempts"] == 2 and "403" in job["error"]
    human = await chargerctl(rig, "status")
    assert "diagnostics upload: UploadFailed" in human.stdout and "403" in human.stdout


async def test_get_log_security_log_over_ftp(rig, csms, ftp):
    await csms.wait_for("SecurityEventNotification", timeout=10)
    answer = await csms.call(
        CP,
        "GetLog",
        {"logType": "SecurityLog", "requestId": 9, "log": {"remoteLocation": ftp.url("uploads/")}},
    )
    assert answer["status"] == "Accepted"
    await csms.wait_for(
        "LogStatusNotification", predicate=lambda r: r.payload["status"] == "Uploaded", timeout=15
    )
    assert statuses(csms, "LogStatusNotification") == [
        {"status": "Uploading", "requestId": 9},
        {"status": "Uploaded", "requestId": 9},
    ]
    path = ftp.root / "uploads" / answer["filename"]
    with tarfile.open(path, "r:gz") as tar:
        names = sorted(m.name.split("/", 1)[1] for m in tar if m.isfile())
        sec = next(m for m in tar if m.name.endswith("security.log"))
        lines = tar.extractfile(sec).read().decode().splitlines()
    assert names == ["info.json", "security.log"]
    assert json.loads(lines[0])["type"] == "StartupOfTheDevice"
    log = (await rig.status())["uploads"]["log"]
    assert (log["kind"], log["state"], log["request_id"]) == ("SecurityLog", "Uploaded", 9)
    assert "password" not in log["location"]


async def test_the_outcome_of_an_upload_that_ends_offline_arrives_after_reconnect(rig, csms, http):
    http.refuse_uploads = True
    await csms.call(
        CP, "GetDiagnostics", {"location": http.url(""), "retries": 2, "retryInterval": 1}
    )
    await csms.wait_for("DiagnosticsStatusNotification", timeout=5)  # Uploading
    # (its answer back too: a cut before it would have it sent again, at least once)
    await rig.wait_status(lambda s: s["ocpp"]["outbox_pending"] == 0, what="Uploading answered")
    await rig.network(False)
    await rig.wait_status(
        lambda s: s["uploads"]["diagnostics"]["state"] == "UploadFailed",
        timeout=15,
        what="upload failed while offline",
    )
    assert len(statuses(csms, "DiagnosticsStatusNotification")) == 1
    await rig.network(True)
    await csms.wait_for("DiagnosticsStatusNotification", count=2, timeout=15)
    assert [p["status"] for p in statuses(csms, "DiagnosticsStatusNotification")] == [
        "Uploading",
        "UploadFailed",
    ]


async def test_triggers_report_an_upload_under_way(rig, csms, http):
    http.refuse_uploads = True  # retried every 5 s: the uploads stay under way meanwhile
    slow = {"retries": 1, "retryInterval": 5}
    await csms.call(CP, "GetDiagnostics", {"location": http.url(""), **slow})
    await csms.call(
        CP,
        "GetLog",
        {"logType": "DiagnosticsLog", "requestId": 77, "log": {"remoteLocation": http.url("")}}
        | slow,
    )
    await csms.wait_for("LogStatusNotification", timeout=5)
    assert await csms.call(
        CP, "TriggerMessage", {"requestedMessage": "DiagnosticsStatusNotification"}
    ) == {"status": "Accepted"}
    assert await csms.call(
        CP, "ExtendedTriggerMessage", {"requestedMessage": "LogStatusNotification"}
    ) == {"status": "Accepted"}
    await csms.wait_for("DiagnosticsStatusNotification", count=2, timeout=5)
    await csms.wait_for("LogStatusNotification", count=2, timeout=5)
    assert statuses(csms, "DiagnosticsStatusNotification")[1] == {"status": "Uploading"}
    assert statuses(csms, "LogStatusNotification")[1] == {"status": "Uploading", "requestId": 77}
    await csms.wait_for(
        "LogStatusNotification", predicate=lambda r: r.payload["status"] != "Uploading", timeout=15
    )
    assert statuses(csms, "LogStatusNotification")[-1] == {
        "status": "PermissionDenied",
        "requestId": 77,
    }
