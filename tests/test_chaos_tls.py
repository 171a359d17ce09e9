"""The chaos runner's link faults under TLS: one short session over wss:// (profile 2).

CSMS kills and restarts, cuts under a CALLRESULT and kill -9 of the daemon then hit a
TLS link with HTTP Basic; the same invariants must hold as over ws://.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(180)
def test_a_short_chaos_run_over_tls_has_no_violations(tmp_path):
    summary_path = tmp_path / "summary.json"
    workdir = tmp_path / "chaos"
    out = subprocess.run(
        [sys.executable, "-m", "chargerd.bench.chaos", "--seed", "18", "--sessions", "1",
         "--session-seconds", "10", "--tiny-disk-every", "0", "--tls", "2",
         "--workdir", str(workdir), "--keep", "--json", str(summary_path)],
        capture_output=True,
        text=True,
        timeout=170,
    )  # fmt: skip
    assert summary_path.exists(), out.stdout + out.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["violations"] == [], out.stdout
    assert out.returncode == 0, out.stdout + out.stderr
    config = (workdir / "session-0" / "chargerd.toml").read_text()
    assert 'url = "wss://127.0.0.1:' in config and "security_profile = 2" in config
    assert summary["injected"].get("csms_kill", 0) >= 1, summary["injected"]
    assert summary["counts"].get("messages checked", 0) > 0
