"""Claim a station's outputs and drive them safe: what ExecStopPost runs after any end.

A Raspberry Pi kernel keeps a GPIO line driven at its last level when the
process that held it dies: after kill -9, a segfault or a watchdog abort the
contactor coil stays energised until someone claims the line again.  The
shipped unit's ``ExecStopPost=chargerd --safe-outputs`` is that someone: it
runs after every end of the daemon (systemd runs it for clean stops, crashes
and kills alike), claims each contactor line and each lock motor line at its
inactive level and lets go (the kernel then keeps them there).

The pilot PWM and a solenoid lock are left alone: the pilot is the pilot
driver's (the EV sees no energy without the contactor), and releasing a
solenoid would unlock a cable from a socket that may still be live
(a welded contactor).
"""

from __future__ import annotations

import logging
from typing import Any

from gpiozero import OutputDevice

from hal.config import HardwareConfig

__all__ = ["drive_safe"]

log = logging.getLogger(__name__)


def drive_safe(cfg: HardwareConfig, *, pin_factory: Any = None) -> tuple[list[str], list[Any]]:
    """Drive every contactor and lock motor line inactive.

    Returns what was driven, said plainly, and the devices holding the lines
    (keep them until the process exits).  Every line is tried even when one
    fails; the first failure is raised after the others were driven.
    """
    done: list[str] = []
    devices: list[Any] = []
    first_error: Exception | None = None
    lines: list[tuple[int, bool, str]] = []
    for n, c in enumerate(cfg.connectors, start=1):
        lines.append((c.contactor.pin, c.contactor.active_high, f"connector {n} contactor"))
        if c.lock.kind == "motor":
            for pin, role in zip(c.lock.pins, ("lock", "unlock"), strict=False):
                lines.append((pin, True, f"connector {n} lock motor ({role})"))
    for pin, active_high, what in lines:
        try:
            devices.append(
                OutputDevice(
                    pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
                )
            )
        except Exception as exc:
            log.error("GPIO%d (%s) could not be driven safe: %s", pin, what, exc)
            first_error = first_error or exc
            continue
        done.append(f"GPIO{pin} {'low' if active_high else 'high'} ({what})")
    if first_error is not None:
        raise first_error
    return done, devices
