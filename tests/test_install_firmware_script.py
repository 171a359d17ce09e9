"""etc/chargerd-install-firmware in a real venv with real pip: a wheel installed, and a wheel
whose chargerd does not come up rolled back to the version that ran before.

The wheels are tiny stand-ins named chargerd (a ``--version`` and ``--check-config`` that
answer like the real ones), built here as zip files; no network (pip --no-index)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "etc" / "chargerd-install-firmware"

DAEMON = """import sys
from chargerd import __version__
def main():
    if "--version" in sys.argv:
        print("chargerd", __version__)
        return 0
    if "--check-config" in sys.argv:
        return {check}
    return 0
"""


def make_wheel(directory: Path, version: str, *, comes_up: bool = True) -> Path:
    files = {
        "chargerd/__init__.py": f'__version__ = "{version}"\n',
        "chargerd/daemon.py": DAEMON.format(check=0 if comes_up else 2),
        "hal/__init__.py": "",
        f"chargerd-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: chargerd\nVersion: {version}\n"
        ),
        f"chargerd-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"chargerd-{version}.dist-info/entry_points.txt": (
            "[console_scripts]\nchargerd = chargerd.daemon:main\n"
        ),
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"chargerd-{version}.dist-info/RECORD,,")
    files[f"chargerd-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    path = directory / f"chargerd-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    if shutil.which("sh") is None:
        pytest.skip("no /bin/sh")
    v = tmp_path_factory.mktemp("venv") / "chargerd"
    subprocess.run([sys.executable, "-m", "venv", str(v)], check=True, timeout=120)
    return v


def run(venv: Path, wheel: Path | str, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHARGERD_VENV": str(venv), "CHARGERD_CONFIG": str(config)}
    env.pop("PIP_INDEX_URL", None)
    return subprocess.run(
        [str(SCRIPT), str(wheel)], env=env, capture_output=True, text=True, timeout=120
    )


def version(venv: Path) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "chargerd"), "--version"], capture_output=True, text=True, timeout=30
    )
    return out.stdout.split()[1]


def test_install_then_a_broken_version_is_rolled_back(venv: Path, tmp_path: Path) -> None:
    config = tmp_path / "chargerd.toml"
    config.write_text("")
    first = run(venv, make_wheel(tmp_path, "1.0.0"), config)
    assert first.returncode == 0, first.stdout + first.stderr
    assert version(venv) == "1.0.0"

    second = run(venv, make_wheel(tmp_path, "2.0.0"), config)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "chargerd 2.0.0 installed (was 1.0.0)" in second.stdout
    assert version(venv) == "2.0.0"

    broken = run(venv, make_wheel(tmp_path, "3.0.0", comes_up=False), config)
    assert broken.returncode == 65  # verification failed: InstallVerificationFailed
    assert "does not come up" in broken.stdout
    assert "rolled back: chargerd 2.0.0" in broken.stdout
    assert version(venv) == "2.0.0"


def test_refuses_what_is_not_a_wheel(venv: Path, tmp_path: Path) -> None:
    other = tmp_path / "firmware.bin"
    other.write_bytes(b"x")
    result = run(venv, other, tmp_path / "c.toml")
    assert result.returncode == 1 and "not a wheel" in result.stdout
    result = run(venv, tmp_path / "missing.whl", tmp_path / "c.toml")
    assert result.returncode == 1 and "no such file" in result.stdout
