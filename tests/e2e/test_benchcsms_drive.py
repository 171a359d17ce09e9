"""A CSMS team drives the real daemon through the bench CSMS: its command line and scripts.

The bench CSMS runs as its own process (``python -m chargerd.bench.csms``) exactly
as a CSMS team starts it; ``call`` and ``script`` reach it through its control
socket and the station answers over the real websocket.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CP = "CP-TEST"


class CsmsProcess:
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.control = Path(f"/tmp/pt-benchcsms-{os.getpid()}-{id(self):x}.sock")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chargerd.benchcsms",
                "--port",
                "0",
                "--control",
                str(self.control),
                "--accept-all-cards",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.port = 0

    async def started(self) -> None:
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout=20)
        m = re.search(r"listening on wss?://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        self.port = int(m.group(1))
        # Keep draining stdout (one line per frame) so that the server never blocks on it.
        asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.read)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "chargerd.bench.csms", *args, "--control", str(self.control)]
        return await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=60
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
async def bench_process(tmp_path):
    csms = CsmsProcess(tmp_path)
    try:
        await csms.started()
        yield csms
    finally:
        csms.stop()


@pytest.fixture
async def driven(bench_process, tmp_path):
    from chargerd.bench.rig import StationRig

    rig = StationRig(tmp_path / "station", csms_url=bench_process.url, charge_point_id=CP)
    await rig.start()
    try:
        await rig.wait_status(
            lambda s: s["ocpp"]["registration"] == "Accepted", timeout=20, what="registration"
        )
        yield rig
    finally:
        await rig.stop()


async def test_call_sends_any_request_and_prints_the_answer(bench_process, driven):
    out = await bench_process.run("stations")
    assert out.returncode == 0 and out.stdout.split() == [CP]

    await driven.plug(1)
    out = await bench_process.run(
        "call", CP, "RemoteStartTransaction", '{"idTag": "TOKEN-0001", "connectorId": 1}'
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"status": "Accepted"}
    st = await driven.wait_status(
        lambda s: s["connectors"][0]["transaction_id"] is not None, timeout=15, what="tx"
    )
    assert st["connectors"][0]["id_tag"] == "TOKEN-0001"

    # An action the bench knows nothing about goes out as it is: the station's answer
    # (here a CALLERROR, the daemon has no such handler) is what the user sees.
    out = await bench_process.run("call", CP, "FancyVendorAction", "{}")
    assert out.returncode == 1
    assert json.loads(out.stdout)["code"] in ("NotImplemented", "NotSupported")

    out = await bench_process.run("call", CP, "GetConfiguration", '{"key": ["HeartbeatInterval"]}')
    assert out.returncode == 0
    assert json.loads(out.stdout)["configurationKey"][0]["key"] == "HeartbeatInterval"

    out = await bench_process.run("set", "data_transfer_status", "Rejected")
    assert out.returncode == 0
    out = await bench_process.run("set", "heartbeat_interval", "soon")
    assert out.returncode == 2 and "wrong type" in out.stderr

    out = await bench_process.run("call", "CP-NOBODY", "Reset", '{"type": "Soft"}')
    assert out.returncode == 1 and "CP-NOBODY is not connected" in out.stderr
    out = await bench_process.run("call", CP, "Reset", "{not json")
    assert out.returncode == 2 and "not JSON" in out.stderr


SCRIPT = """
station = "CP-TEST"
timeout = 15

[[step]]
call = "RemoteStartTransaction"
payload = { idTag = "USER_42", connectorId = 1 }
expect = { status = "Accepted" }

[[step]]
expect_message = "StartTransaction"
match = { idTag = "USER_42", connectorId = 1 }
save = { tx = "answer.transactionId" }

[[step]]
call = "RemoteStopTransaction"
payload = { transactionId = "${tx}" }
expect = { status = "Accepted" }

[[step]]
expect_message = "StopTransaction"
match = { transactionId = "${tx}", reason = "Remote" }

[[step]]
call = "FancyVendorAction"
expect_error = "NotImplemented"
"""


async def test_script_passes_and_a_failed_expectation_fails_the_run(
    bench_process, driven, tmp_path
):
    await driven.plug(1)
    await driven.charge(1)
    good = tmp_path / "session.toml"
    good.write_text(SCRIPT)
    out = await bench_process.run("script", str(good))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5/5 steps passed" in out.stdout

    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "station": CP,
                "steps": [
                    {
                        "call": "ChangeConfiguration",
                        "payload": {"key": "HeartbeatInterval", "value": "120"},
                        "expect": {"status": "Accepted"},
                    },
                    {
                        "call": "ChangeConfiguration",
                        "payload": {"key": "HeartbeatInterval", "value": "abc"},
                        "expect": {"status": "Accepted"},
                    },
                    {"call": "Reset", "payload": {"type": "Soft"}},
                ],
            }
        )
    )
    out = await bench_process.run("script", str(bad))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ok") and any(line.startswith("FAIL   2") for line in lines)
    assert "Rejected" in out.stdout
    assert "1/3 steps passed" in out.stdout  # the Reset after the failure never ran

    broken = tmp_path / "broken.toml"
    broken.write_text("[[step]]\nsleep = 1\ncall = 'Reset'\n")
    out = await bench_process.run("script", str(broken))
    assert out.returncode == 2 and "exactly one of" in out.stderr
