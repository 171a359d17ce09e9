"""GetDiagnostics / GetLog cut by kill -9: after the restart the CSMS gets the final failure
(UploadFailed / UploadFailure with its requestId), once; chargerctl shows why."""

from __future__ import annotations

import json

import pytest

from chargerd.bench.csms.files import HttpFileServer
from tests.e2e.test_diagnostics import CP, chargerctl, statuses

pytestmark = pytest.mark.e2e


@pytest.fixture
def http(tmp_path):
    with HttpFileServer(tmp_path / "http") as server:
        server.refuse_uploads = True  # the first attempt fails, the retry waits 10 minutes
        yield server


async def test_uploads_cut_by_kill_9_are_closed_after_the_restart(make_registered_rig, csms, http):
    rig = await make_registered_rig()
    slow = {"retries": 3, "retryInterval": 600}
    await csms.call(CP, "GetDiagnostics", {"location": http.url(""), **slow})
    answer = await csms.call(
        CP,
        "GetLog",
        {
            "log": {"remoteLocation": http.url("")},
            "logType": "SecurityLog",
            "requestId": 77,
            **slow,
        },
    )
    assert answer["status"] == "Accepted"
    await csms.wait_for("DiagnosticsStatusNotification", timeout=10)
    await csms.wait_for("LogStatusNotification", timeout=10)
    out = await chargerctl(rig, "status", "--json")
    uploads = json.loads(out.stdout)["uploads"]
    assert uploads["diagnostics"]["state"] == uploads["log"]["state"] == "Uploading"

    rig.kill9()  # in the middle of both uploads' retry waits
    await rig.start()
    await csms.wait_for(
        "LogStatusNotification", predicate=lambda r: r.payload["status"] != "Uploading", timeout=15
    )
    await csms.wait_for(
        "DiagnosticsStatusNotification",
        predicate=lambda r: r.payload["status"] != "Uploading",
        timeout=15,
    )
    assert [p["status"] for p in statuses(csms, "DiagnosticsStatusNotification")] == [
        "Uploading",
        "UploadFailed",
    ]
    assert statuses(csms, "LogStatusNotification") == [
        {"status": "Uploading", "requestId": 77},
        {"status": "UploadFailure", "requestId": 77},
    ]
    out = await chargerctl(rig, "status", "--json")
    uploads = json.loads(out.stdout)["uploads"]
    assert uploads["log"]["state"] == "UploadFailure"
    assert uploads["log"]["error"] == "interrupted by a restart"

    await rig.stop()  # one more restart: nothing is reported twice
    await rig.start()
    await rig.wait_status(
        lambda s: s["ocpp"]["connected"] and s["ocpp"]["outbox_pending"] == 0,
        timeout=15,
        what="reconnected",
    )
    assert len(statuses(csms, "DiagnosticsStatusNotification")) == 2
    assert len(statuses(csms, "LogStatusNotification")) == 2
