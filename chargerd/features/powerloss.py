"""The meterStop of a transaction that a power cut (or a kill -9) ended.

The disk knows the energy register as last persisted (every sample interval, at
worst every 30 s); the energy kept flowing until the power went.  A meter keeps
its register through the cut, so when it answers at the restart its register is
the better meterStop: otherwise the Wh between the last persisted reading and
the cut are billed to no one (the next transaction starts above them).

A register is believed only when it is plausible: not below the last persisted
reading (a replaced or reset meter), and not beyond what the connector's
maximum power could have delivered since that reading (a wrong meter on the
bus, a clock set back).  Otherwise the last persisted reading stands, as it
always did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime

from hal.interfaces import EnergyMeter

log = logging.getLogger(__name__)

#: The highest line voltage the power bound assumes: 230 V + 10 % (EN 50160).
MAX_VOLTAGE_V = 253.0
#: Rounding and the meter's own resolution: a register this close to a bound is within it.
TOLERANCE_WH = 1.0
READ_TIMEOUT_S = 3.0


def max_power_w(max_current_a: float, phases: int = 3) -> float:
    """The most a connector can deliver: its current limit on every phase at high voltage."""
    return max_current_a * phases * MAX_VOLTAGE_V


def power_loss_meter_stop(
    *,
    persisted_wh: float,
    persisted_at: datetime,
    register_wh: float | None,
    now: datetime,
    max_power_w: float,
) -> tuple[float, str]:
    """(meterStop in Wh, why) for a transaction a power cut ended."""
    if register_wh is None:
        return persisted_wh, "the meter did not answer at the restart: last persisted reading"
    if register_wh < persisted_wh - TOLERANCE_WH:
        return persisted_wh, (
            f"the meter reads {register_wh:.0f} Wh, below the last persisted "
            f"{persisted_wh:.0f} Wh (a replaced meter?): last persisted reading"
        )
    elapsed_h = max(0.0, (now - persisted_at).total_seconds()) / 3600.0
    limit = persisted_wh + max_power_w * elapsed_h
    if register_wh > limit + TOLERANCE_WH:
        return persisted_wh, (
            f"the meter reads {register_wh:.0f} Wh, more than the {limit:.0f} Wh the connector "
            "could have reached since the last persisted reading: last persisted reading"
        )
    return max(register_wh, persisted_wh), "the meter's register at the restart"


async def read_registers(
    meters: Mapping[int, EnergyMeter], timeout: float = READ_TIMEOUT_S
) -> dict[int, float | None]:
    """Each connector's energy register now; None where the meter does not answer."""
    out: dict[int, float | None] = {}
    for connector_id, meter in meters.items():
        try:
            sample = await asyncio.wait_for(meter.read(), timeout)
            out[connector_id] = float(sample.energy_wh)
        except Exception as exc:  # a silent meter must not stop the start-up
            log.warning("connector %d: meter not read at start (%s)", connector_id, exc)
            out[connector_id] = None
    return out
