"""The meter of a connector, read in a task of its own with its own timeout.

An RS485 meter that stops answering costs a bus timeout per read (1 s x 2
tries with the defaults).  Read inline in the supervisor's pass, that made the
pilot sampled every ~2 s and a stop wait for the meter before the contactor
opened.  Here the meter has its own loop; the supervisor only takes the latest
reading.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from hal.errors import HardwareError
from hal.interfaces import EnergyMeter, MeterSample

log = logging.getLogger(__name__)


async def read(
    meter: EnergyMeter, previous: MeterSample | None, *, timeout_s: float, name: object
) -> MeterSample | None:
    """A reading now; the last good one when the meter fails or does not end in ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):  # inline: no task of its own per reading
            return await meter.read()
    except TimeoutError:
        log.error("connector %s: meter read did not end within %.1f s", name, timeout_s)
    except HardwareError:
        pass  # the driver logs a failing meter once and reports METER_FAILURE
    except Exception:  # a driver bug must not end the meter task (nor the supervisor)
        log.exception("connector %s: meter read failed unexpectedly", name)
    return meter.last_sample or previous


async def run(
    poll: Callable[[], Awaitable[None]], wake: asyncio.Event, *, due: Callable[[], float]
) -> None:
    """Call ``poll`` forever: when ``due()`` seconds have passed or ``wake`` is set."""
    while True:
        wake.clear()
        await poll()
        try:
            await asyncio.wait_for(wake.wait(), timeout=max(0.01, due()))
        except TimeoutError:
            pass
