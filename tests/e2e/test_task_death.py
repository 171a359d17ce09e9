"""A task that dies unexpectedly ends the daemon with a failure status, not 0.

systemd records exit 0 as a clean stop; a daemon that lost its meter sampler
(or any other task) must say it failed.  The real daemon, wired as always,
runs in-process against the bench CSMS with one task replaced by one that
crashes.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from chargerd.bench.rig import StationRig
from chargerd.config import load_config
from chargerd.daemon import Daemon
from chargerd.features import metering

pytestmark = pytest.mark.e2e


async def test_a_task_that_dies_ends_the_daemon_with_status_1(tmp_path, csms, monkeypatch, caplog):
    rig = StationRig(tmp_path, csms_url=csms.url)  # writes the config file; not started
    cfg = load_config(rig.config_path)

    async def dies(self) -> None:
        await csms.wait_connected(rig.charge_point_id)
        raise RuntimeError("the aligned-data task broke")

    monkeypatch.setattr(metering.MeterSampler, "aligned_loop", dies)
    with caplog.at_level(logging.CRITICAL, logger="chargerd"):
        status = await asyncio.wait_for(Daemon(cfg, config_path=rig.config_path).run(), 30)
    assert status == 1
    assert "task aligned ended unexpectedly" in caplog.text
