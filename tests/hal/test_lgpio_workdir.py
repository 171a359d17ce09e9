"""``import lgpio`` under the unit's conditions: a working directory nobody may write to.

lgpio makes its notification pipe (.lgd-nfy<N>) in the working directory when it is
imported.  Under the shipped unit that would be ``/`` (read-only under
ProtectSystem=strict), so the pin factory failed and systemd restarted forever.
``/proc`` stands in for it here: not even root can make a file there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hal.errors import HardwareConfigError
from hal.pi.workdir import prepare_lgpio_workdir, writable

REPO = str(Path(__file__).resolve().parents[2])

pytest.importorskip("lgpio", reason="lgpio is not installed (pip install lgpio)")


def run_python(code: str, *, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd="/proc",
        env={"PATH": os.environ.get("PATH", "/usr/bin"), "PYTHONPATH": REPO, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_condition_is_real_import_lgpio_fails_in_an_unwritable_directory():
    proc = run_python("import lgpio", env={})
    assert proc.returncode != 0 and ".lgd-nfy" in proc.stderr


def test_the_daemon_points_lgpio_at_the_units_runtime_directory(tmp_path):
    code = (
        "import os\n"
        "from hal.pi.workdir import prepare_lgpio_workdir\n"
        "chosen = prepare_lgpio_workdir([])\n"
        "import lgpio\n"
        "print(chosen, os.environ['LG_WD'])\n"
    )
    proc = run_python(code, env={"RUNTIME_DIRECTORY": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path), str(tmp_path)]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".lgd-nfy")]


def test_the_state_directory_is_the_fallback(tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from hal.pi.workdir import prepare_lgpio_workdir\n"
        "print(prepare_lgpio_workdir([Path('/proc/nope'), Path(sys.argv[-1])]))\n"
        "import lgpio\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd="/proc",
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path)


def test_no_writable_directory_is_one_clear_refusal(monkeypatch):
    monkeypatch.delenv("LG_WD", raising=False)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.chdir("/proc")
    monkeypatch.setitem(sys.modules, "lgpio", None)  # "not imported yet" for the check ...
    monkeypatch.delitem(sys.modules, "lgpio")
    with pytest.raises(HardwareConfigError) as info:
        prepare_lgpio_workdir([Path("/proc/sys")])
    message = str(info.value)
    assert "\n" not in message and "set LG_WD or WorkingDirectory" in message
    assert "LG_WD" not in os.environ


def test_a_given_lg_wd_must_be_writable(monkeypatch, tmp_path):
    monkeypatch.setenv("LG_WD", "/proc")
    monkeypatch.delitem(sys.modules, "lgpio", raising=False)
    with pytest.raises(HardwareConfigError, match="LG_WD=/proc is not a writable directory"):
        prepare_lgpio_workdir([tmp_path])


def test_writable_probes_for_real():
    assert not writable(Path("/proc"))  # os.access says yes to root here
    assert not writable(Path("/nonexistent-dir"))
