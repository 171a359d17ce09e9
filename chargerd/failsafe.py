"""``chargerd --safe-outputs``: the unit's ExecStopPost, after any end of the daemon.

See hal.pi.safe_outputs for why: a released GPIO line stays driven on a Pi,
so after kill -9 or a watchdog abort the contactor would stay as it was.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from chargerd.config import Config


def safe_outputs_main(cfg: Config, *, exit_holding: bool = True) -> int:
    """Drive the configured outputs safe; 0 when done, 1 (one line on stderr) when not.

    With ``exit_holding`` the process ends right here with the lines still held
    (no gpiozero clean-up, which would make them floating inputs), so that the
    kernel keeps them driven at their safe level.
    """
    hw = cfg.hardware
    if hw.driver != "pi":
        print("chargerd: mock hardware: no outputs to drive")
        return 0
    if hw.pin_factory == "emulated":  # Pi in a box: the emulated pins died with the daemon
        print("chargerd: emulated Pi (bench): no outputs to drive")
        return 0
    try:
        from hal.pi.safe_outputs import drive_safe
        from hal.pi.station import make_pin_factory
        from hal.pi.workdir import prepare_lgpio_workdir

        if hw.pin_factory in (None, "lgpio"):
            prepare_lgpio_workdir([Path(cfg.paths.state_dir)])
        factory = make_pin_factory(hw.pin_factory) if hw.pin_factory is not None else None
        done, _held = drive_safe(hw, pin_factory=factory)
    except Exception as exc:
        print(f"chargerd: outputs NOT driven safe: {exc}", file=sys.stderr)
        return 1
    print("chargerd: outputs driven safe: " + ", ".join(done), flush=True)
    if exit_holding:
        sys.stderr.flush()
        os._exit(0)
    return 0
