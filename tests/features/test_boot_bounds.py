"""A heartbeat interval from BootNotification.conf beyond the key's bounds is not fatal."""

from __future__ import annotations

import asyncio
import logging

from chargerd.features.boot import BootService, Identity
from chargerd.link import LinkError

IDENTITY = Identity(
    charge_point_vendor="Acme",
    charge_point_model="AC22",
    firmware_version="1.2.3",
    charge_point_serial_number=None,
    meter_type="chargerd mock meter",
)


async def test_an_interval_out_of_bounds_is_logged_and_the_registration_stands(
    link, clock, config, caplog
):
    link.connected = False
    link.default = {"StatusNotification": {}, "Heartbeat": {"currentTime": clock.now()}}
    link.answer(
        "BootNotification",
        {"status": "Accepted", "interval": 10**12, "currentTime": "2026-05-05T10:00:00.000Z"},
    )
    boot = BootService(
        link=link,
        clock=clock,
        identity=IDENTITY,
        config=config,
        link_errors=(LinkError,),
        current_statuses=lambda: [(1, "Available", "NoError")],
    )
    task = asyncio.create_task(boot.run())
    try:
        with caplog.at_level(logging.WARNING, logger="chargerd.features.boot"):
            link.connected = True
            await boot.on_connect()
            await asyncio.wait_for(boot.registered.wait(), 5)
        assert not task.done()
        assert boot.registration == "Accepted"
        assert config.get("HeartbeatInterval") == 86400  # the default, not 10**12
        assert "heartbeat interval of the CSMS not used" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
