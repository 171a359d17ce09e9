"""./dev demo --port: the bench CSMS and the daemon both on that port."""

from __future__ import annotations

import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from chargerd.bench.demo import ROOT, config_for_port


def _bench_copy(tmp_path: Path) -> Path:
    """etc/bench.toml with its state in tmp_path (relative paths, as in the original)."""
    text = (ROOT / "etc" / "bench.toml").read_text()
    text = text.replace('"../var/bench', '"var')
    conf = tmp_path / "etc" / "bench.toml"
    conf.parent.mkdir()
    conf.write_text(text)
    return conf


def test_the_copy_points_at_the_port_and_keeps_every_path(tmp_path):
    conf = _bench_copy(tmp_path)
    out = config_for_port(conf, 9123, tmp_path / "demo.toml")
    cfg = tomllib.loads(out.read_text())
    assert cfg["csms"]["url"] == "ws://127.0.0.1:9123"
    assert cfg["paths"]["state_dir"] == str(tmp_path / "etc" / "var")
    assert cfg["paths"]["control_socket"] == str(tmp_path / "etc" / "var" / "control.sock")
    assert cfg["station"] == tomllib.loads(conf.read_text())["station"]
    assert config_for_port(conf, 9000, tmp_path / "unused.toml") == conf  # already 9000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
def test_demo_scenario_on_another_port_reaches_the_bench_csms(tmp_path):
    conf = _bench_copy(tmp_path)
    port = _free_port()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "chargerd.bench.demo",
            "--scenario",
            "--port",
            str(port),
            "--config",
            str(conf),
        ],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "scenario completed" in out.stdout
    assert "does not reach the CSMS" not in out.stdout
    frames = (tmp_path / "etc" / "var" / "benchcsms.log").read_text()
    assert "CP-BENCH-1 in" in frames and "StartTransaction" in frames


def test_demo_help_describes_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "chargerd.bench.demo", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    options = out.stdout.split("options:", 1)[1]
    for option in ("--config PATH", "--port N", "--scenario"):
        line = next(line for line in options.splitlines() if line.strip().startswith(option))
        assert len(line.split(option, 1)[1].strip()) > 10, line  # a description follows
