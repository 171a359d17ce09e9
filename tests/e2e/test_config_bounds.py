"""The crash loop of issue 10, end to end: one configuration value can no longer stop a station.

``chargerctl config ClockAlignedDataInterval 99999999999999999999`` (or a CSMS
ChangeConfiguration with 9223372036854775807) used to be Accepted, kill the
aligned-data task, be persisted, and kill every restart.  Now it is Rejected
with the reason; and a value already in the SQLite file (an older version, a
bad disk) is logged and replaced by the default at start.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


async def chargerctl(rig, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chargerd.cli", "--socket", str(rig.socket), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_out_of_range_values_are_rejected_with_the_reason(rig, csms):
    out = await chargerctl(rig, "config", "ClockAlignedDataInterval", "99999999999999999999")
    assert out.returncode == 1
    assert "ClockAlignedDataInterval: Rejected: must be between 0 and 86400" in out.stderr
    answer = await rig.ctl("config.set", key="HeartbeatInterval", value="abc")
    assert answer == {"status": "Rejected", "reason": "'abc' is not an integer"}
    result = await csms.call(
        rig.charge_point_id,
        "ChangeConfiguration",
        {"key": "ClockAlignedDataInterval", "value": "9223372036854775807"},
    )
    assert result == {"status": "Rejected"}
    ok = await chargerctl(rig, "config", "ClockAlignedDataInterval", "900")
    assert ok.returncode == 0, ok.stderr
    await asyncio.sleep(0.3)  # the aligned task picks the new interval up
    assert rig.running
    assert "set to '900' by the technician (chargerctl)" in rig.log_path.read_text()


async def test_a_refused_value_in_the_database_is_replaced_by_its_default_at_start(rig, csms):
    assert await rig.stop() == 0
    db = sqlite3.connect(rig.state_dir / "chargerd.db")
    with db:
        db.execute(
            "INSERT INTO ocpp_config(key, value) VALUES ('ClockAlignedDataInterval', "
            "'99999999999999999999') ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        )
    db.close()
    await rig.start()
    await rig.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15)
    got = await rig.ctl("config.get", keys=["ClockAlignedDataInterval"])
    assert got["configuration_key"][0]["value"] == "0"
    assert "the stored value '99999999999999999999' of ClockAlignedDataInterval is refused" in (
        rig.log_path.read_text()
    )
    await asyncio.sleep(0.3)
    assert rig.running
