"""Reconnect delays.

A CSMS restart disconnects thousands of stations at the same instant; if they
all came back on the same schedule they would knock it over again.  Hence an
exponential delay with jitter, capped so that a station never waits longer
than ``cap`` once the CSMS is back.
"""

from __future__ import annotations

import random
from typing import Literal

_MAX_EXPONENT = 62  # 2**62 times any sane base is far past any cap; avoids float overflow


def reconnect_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    rng: random.Random,
    jitter: Literal["equal", "full"] = "equal",
) -> float:
    """Seconds to wait before reconnect attempt number ``attempt`` (0 = first retry).

    "equal" jitter keeps at least half of the exponential delay, so a station
    never hammers a CSMS that just refused it; "full" spreads a crowd widest.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, not {attempt}")
    if base <= 0 or cap < base:
        raise ValueError(f"need 0 < base <= cap, got base={base} cap={cap}")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    if jitter == "full":
        return rng.uniform(0.0, ceiling)
    if jitter == "equal":
        return ceiling / 2 + rng.uniform(0.0, ceiling / 2)
    raise ValueError(f"unknown jitter {jitter!r}")
