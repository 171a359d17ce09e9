"""idTags are personal data: private file modes, and masked logs when the operator asks.

The real daemon on the mock station, a card session against the bench CSMS,
then what a technician (or anyone with a shell on the box) can read: the
state directory and its SQLite files, the log file, the daemon's output and
``chargerctl log``.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

CARD = "0A1B2C3D"  # the csms fixture accepts it
MASKED = "****2C3D"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def configure(rig, *, redact: bool) -> None:
    """Add [paths] log_file and [logging] redact_id_tags to the rig's file."""
    text = rig.config_path.read_text()
    text = text.replace(
        f'control_socket = "{rig.socket}"',
        f'control_socket = "{rig.socket}"\nlog_file = "{rig.workdir / "logs" / "chargerd.log"}"',
    )
    text = text.replace(
        f'level = "{rig.log_level}"',
        f'level = "{rig.log_level}"\nredact_id_tags = {"true" if redact else "false"}',
    )
    rig.config_path.write_text(text)


async def cli_log(rig) -> str:
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chargerd.cli", "--socket", str(rig.socket), "log", "-n", "200"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


async def session(rig, csms, start_charging) -> None:
    await rig.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15)
    await start_charging(rig, card=CARD)
    await rig.unplug(1)
    await csms.wait_for("StopTransaction")


async def test_state_files_are_private_and_old_open_ones_are_closed(make_rig, csms, start_charging):
    rig = await make_rig(start=False)
    configure(rig, redact=False)
    # As an older version or a hand-made set-up left them: readable by everyone.
    rig.state_dir.mkdir(mode=0o755)
    os.chmod(rig.state_dir, 0o755)
    (rig.state_dir / "chargerd.db").touch(mode=0o644)  # an empty file is an empty database
    (rig.workdir / "logs").mkdir(mode=0o755)
    (rig.workdir / "logs" / "chargerd.log").touch(mode=0o644)
    for old in (rig.state_dir / "chargerd.db", rig.workdir / "logs" / "chargerd.log"):
        os.chmod(old, 0o644)
    await rig.start()
    await session(rig, csms, start_charging)
    db = rig.state_dir / "chargerd.db"
    assert mode(rig.state_dir) == 0o700
    for path in (db, db.with_name("chargerd.db-wal"), db.with_name("chargerd.db-shm")):
        assert path.exists(), path
        assert mode(path) == 0o600, f"{path.name} is {mode(path):o}"
    log_file = rig.workdir / "logs" / "chargerd.log"
    assert mode(log_file) == 0o600
    # Without the option, the technician sees the card as it is.
    assert CARD in await cli_log(rig)
    assert CARD in log_file.read_text()


async def test_redact_id_tags_masks_them_in_logs_and_the_frame_log(make_rig, csms, start_charging):
    rig = await make_rig(start=False, log_level="DEBUG")
    configure(rig, redact=True)
    await rig.start()
    await session(rig, csms, start_charging)
    frames = await cli_log(rig)
    assert "StartTransaction" in frames and "Authorize" in frames
    assert MASKED in frames
    assert CARD not in frames
    log_file = (rig.workdir / "logs" / "chargerd.log").read_text()
    output = rig.log_path.read_text()  # the daemon's stderr, as the journal gets it
    for text in (log_file, output):
        assert "card ****2C3D presented" in text
        assert "id_tag=****2C3D" in text
        assert CARD not in text
    # The CSMS got the real idTag: masking is for people, not for the wire.
    (start,) = csms.calls("StartTransaction")
    assert start.payload["idTag"] == CARD
