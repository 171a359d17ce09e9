"""``python -m chargerd.bench``: speed and footprint of the real daemon, in one command.

Runs ``chargerd`` on the mock station against a websocket CSMS on 127.0.0.1
(both real processes talking real OCPP-J), prints a table of p50 / p99 / max
per figure with its target, and writes the same figures as JSON.  About two
and a half minutes on a small machine; ``--quick`` runs every phase shrunk
to about 30 s (the smoke test uses it; its numbers are too few to judge by).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from chargerd.bench.perflib import firmware as firmware_phase
from chargerd.bench.perflib import pibox as pibox_phase
from chargerd.bench.perflib.figures import (
    Figure,
    load_average,
    machine,
    now_text,
    report_json,
    table,
)
from chargerd.bench.perflib.phases import QUICK, Bench, Plan, make_figures
from chargerd.bench.perflib.reaction import make_figures as reaction_figures

log = logging.getLogger(__name__)

#: Phase name -> the figures it fills (marked ERROR if the phase fails).
PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("start_up", ("start_to_boot", "start_to_ready")),
    ("idle", ("rss_idle", "cpu_idle_per_hour", "cpu_idle_percent")),
    (
        "responses",
        (
            "resp_get_configuration",
            "resp_change_configuration",
            "resp_data_transfer",
            "resp_trigger_message",
            "resp_remote_start",
            "resp_set_charging_profile",
            "resp_get_composite_schedule",
        ),
    ),
    ("remote_sessions", ("remote_start_to_start_tx", "remote_stop_to_stop_tx")),
    ("card_sessions", ("card_to_authorize", "card_to_contactor")),
    ("charging", ("rss_charging", "cpu_charging_percent")),
    ("remote_trigger", ("trigger_to_message",)),
    ("reaction", tuple(f.key for f in reaction_figures())),
    ("stop_main", ()),
    ("local_list", ("local_list_full", "local_list_differential")),
    ("replay_live", ("replay_live_rate", "replay_live_time")),
    (
        "replay_backlog",
        ("replay_backlog_rate", "replay_backlog_time", "replay_backlog_gap", "replay_backlog_cpu"),
    ),
]

#: Phases that are not Bench methods: name -> coroutine function taking the Bench.
EXTRA_PHASES = {"pibox": pibox_phase.measure}
PHASES.append(("pibox", pibox_phase.KEYS))
EXTRA_PHASES["firmware"] = firmware_phase.measure
PHASES.append(("firmware", firmware_phase.KEYS))

#: Phases that need the main station the earlier phases set up.
_NEEDS_MAIN = {
    "idle",
    "responses",
    "remote_sessions",
    "card_sessions",
    "charging",
    "remote_trigger",
}


async def run(plan: Plan, workdir: Path, *, progress: bool = True) -> list[Figure]:
    figs = make_figures()
    figs.update(pibox_phase.make_figures())
    figs.update(firmware_phase.make_figures())
    async with Bench(workdir, plan, figs) as bench:
        main_ok = True
        for name, keys in PHASES:
            if name in _NEEDS_MAIN and not main_ok:
                for key in keys:
                    figs[key].error = "not measured: the station did not start"
                continue
            if progress:
                print(f"  {name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                if name in EXTRA_PHASES:
                    await EXTRA_PHASES[name](bench)
                else:
                    await getattr(bench, name)()
            except Exception as exc:
                if name == "start_up":
                    main_ok = False
                text = f"{name} failed: {type(exc).__name__}: {exc}"
                print(f"  {text}", file=sys.stderr)
                traceback.print_exc(file=sys.stderr)
                for rig in bench.rigs:
                    print(
                        f"--- {rig.charge_point_id} log tail ---\n{rig.tail_log(30)}",
                        file=sys.stderr,
                    )
                for key in keys:
                    figs[key].error = text[:300]
            else:
                if progress:
                    print(f"  {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return list(figs.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chargerd.bench",
        description="Measure the real chargerd daemon on the mock station against a local CSMS.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every phase, shrunk to about 30 s (numbers too few to judge by)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        metavar="PATH",
        help="where to write the figures as JSON (default: ./bench-results.json)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the stations' state dirs and logs afterwards"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started, t0, load_before = now_text(), time.perf_counter(), load_average()
    tmp = tempfile.mkdtemp(prefix="chargerd-bench-")
    print(f"chargerd bench: stations in {tmp}", file=sys.stderr)
    figures = asyncio.run(run(plan, Path(tmp)))
    header = {
        "started": started,
        "mode": "quick" if args.quick else "full",
        "duration_s": round(time.perf_counter() - t0, 1),
        "machine": machine(),
        "load_before": round(load_before, 2),
        "load_after": round(load_average(), 2),
        "plan": asdict(plan),
    }
    print(table(figures, header))
    args.json.write_text(json.dumps(report_json(figures, header), indent=2) + "\n")
    print(f"\nfigures written to {args.json}")
    if args.keep or any(f.error for f in figures):
        print(f"stations' state and logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if any(f.error for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
