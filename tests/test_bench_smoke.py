"""`python -m chargerd.bench --quick` runs end to end and reports every figure with numbers.

The quick run is the real command (real daemon processes, real websocket CSMS) with
every phase shrunk; about 20-30 s.  No timing is asserted: a busy test machine makes
figures worse, not wrong.  What is checked is what a reader of bench-results.json
relies on: every figure is there, measured, and judged against its target.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

FIGURES = {
    "resp_get_configuration",
    "resp_change_configuration",
    "resp_data_transfer",
    "resp_remote_start",
    "resp_trigger_message",
    "resp_set_charging_profile",
    "resp_get_composite_schedule",
    "remote_start_to_start_tx",
    "remote_stop_to_stop_tx",
    "card_to_authorize",
    "card_to_contactor",
    "start_to_boot",
    "start_to_ready",
    "rss_idle",
    "rss_charging",
    "cpu_idle_per_hour",
    "cpu_idle_percent",
    "cpu_charging_percent",
    "replay_live_rate",
    "replay_live_time",
    "replay_backlog_rate",
    "replay_backlog_time",
    "replay_backlog_gap",
    "replay_backlog_cpu",
    # the Pi driver stack on emulated chips (chargerd/bench/perflib/pibox.py)
    "pibox_f_to_open",
    "pibox_rcd_to_open",
    "pibox_card_to_open",
    "pibox_remote_stop_to_open",
    "pibox_silent_f_to_open",
    "pibox_silent_rcd_to_open",
    "pibox_silent_card_to_open",
    "pibox_silent_remote_stop_to_open",
    "pibox_pilot_rate",
    "pibox_silent_pilot_rate",
    "trigger_to_message",
    "local_list_full",
    "local_list_differential",
    *(f"react_{t}{s}" for t in ("ev_error", "fault", "card", "remote") for s in ("", "_silent")),
    "pilot_rate",
    "pilot_rate_silent",
    "fw_http_rate",
    "fw_ftp_rate",
    "fw_update_to_installed",
}
#: Figures a daemon may legitimately not offer (it answers NotSupported), reported as skipped.
OPTIONAL = {"resp_trigger_message"}
TARGETED = {
    "resp_get_configuration",
    "resp_change_configuration",
    "resp_data_transfer",
    "resp_remote_start",
    "resp_set_charging_profile",
    "resp_get_composite_schedule",
    "remote_start_to_start_tx",
    "remote_stop_to_stop_tx",
    "start_to_boot",
    "rss_idle",
    "rss_charging",
    "replay_live_rate",
    "replay_backlog_rate",
    "pibox_f_to_open",
    "pibox_remote_stop_to_open",
    "pibox_pilot_rate",
    "trigger_to_message",
    "local_list_full",
}


@pytest.mark.timeout(150)
def test_quick_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "chargerd.bench", "--quick", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads(out.read_text())

    assert report["mode"] == "quick"
    assert report["machine"]["cores"] >= 1 and report["machine"]["python"]
    assert set(report["figures"]) == FIGURES
    for key, fig in report["figures"].items():
        if key in OPTIONAL and fig["skipped"]:
            assert fig["result"] == "SKIP"
            continue
        assert fig["error"] is None, f"{key}: {fig['error']}"
        assert fig["n"] >= 1, key
        for stat in ("p50", "p99", "max", "mean"):
            value = fig[stat]
            assert isinstance(value, int | float) and math.isfinite(value), (key, stat, value)
            assert value >= 0, (key, stat, value)
        assert fig["p50"] <= fig["p99"] <= fig["max"], key
        if key in TARGETED:
            assert fig["result"] in ("PASS", "MISS"), key
    # The table printed for a human carries the same figures.
    for fig in report["figures"].values():
        assert fig["label"] in proc.stdout
    assert "p99" in proc.stdout and "target" in proc.stdout
