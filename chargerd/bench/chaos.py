"""Chaos runs: many randomized sessions against the real daemon, judged by invariants.

``./dev chaos`` (``python -m chargerd.bench.chaos``) starts, for each session, a
fresh real daemon (chargerd.bench.rig.StationRig, mock hardware) and a real CSMS
(BenchCsms, in this process), drives random charging sessions while killing
the daemon, the CSMS, the network and the hardware at random instants, and
then checks what the CSMS received against what the rig did
(chargerd.bench.chaoslib.invariants).  The summary names every violation with the
session, its seed and the daemon log to read.

    ./dev chaos                          # 10 minutes, random seed
    ./dev chaos --seed 7 --minutes 5
    ./dev chaos --seed 7 --only-session 3 --keep   # replay one session's plan
    ./dev chaos --tls 3                  # the same link faults under wss:// (profile 2 or 3)

A seed fixes each session's plan; the interleaving with the real daemon's
timing still varies from run to run.  Exit status 1 when anything was violated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from chargerd.bench.chaoslib.records import Verdict
from chargerd.bench.chaoslib.session import SessionResult, SessionSpec, run_session

log = logging.getLogger("chargerd.bench.chaos")

#: Counters worth a line of their own in the summary, in this order.
HEADLINE = (
    "messages checked",
    "transactions",
    "energy readings checked",
    "status snapshots checked",
    "fault notifications checked",
    "redelivered after a crash or cut",
    "CSMS transactions orphaned by a redelivered StartTransaction",
    "re-sent after no answer",
    "retried after a CALLERROR",
    "re-sent after a late CALLRESULT",
    "dropped after TransactionMessageAttempts CALLERRORs",
    "transactions refused on a full disk",
    "charges stopped on a full disk",
    "meter register behind after a kill (mock persists 1/s)",
    "reservations checked",
    "starts checked against reservations",
    "list versions checked on disk",
    "SendLocalList with a kill -9 behind it",
    "charging profiles sent",
    "offered currents checked against the profiles",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="chargerd-chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=None, help="plan seed (default: random, printed)")
    p.add_argument("--sessions", type=int, default=0, help="stop after N sessions (0: no limit)")
    p.add_argument("--minutes", type=float, default=10.0, help="time budget (default 10)")
    p.add_argument(
        "--session-seconds",
        type=float,
        default=40.0,
        help="random driving per session, before the final settle (default 40)",
    )
    p.add_argument(
        "--tiny-disk-every",
        type=int,
        default=3,
        help="every Nth session keeps its state on a small tmpfs and fills it (0: never)",
    )
    p.add_argument(
        "--tls",
        type=int,
        choices=(0, 2, 3),
        default=0,
        help="run the link under security profile 2 (TLS + Basic) or 3 (TLS + client "
        "certificate), with a test CA; the CSMS kills, cuts and hangs then hit TLS links",
    )
    p.add_argument("--only-session", type=int, default=None, help="run just this session index")
    p.add_argument("--workdir", type=Path, default=None, help="where sessions keep their files")
    p.add_argument("--keep", action="store_true", help="keep the session files even when clean")
    p.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> list[SessionResult]:
    seed = args.seed
    base = args.workdir
    results: list[SessionResult] = []
    deadline = time.monotonic() + args.minutes * 60
    index = args.only_session or 0
    while True:
        if args.only_session is not None and results:
            break
        if args.sessions and len(results) >= args.sessions:
            break
        if results and time.monotonic() >= deadline:
            break
        every = args.tiny_disk_every
        spec = SessionSpec(
            index=index,
            seed=seed,
            seconds=args.session_seconds * random.Random(f"{seed}-{index}").uniform(0.7, 1.3),
            workdir=base / f"session-{index}",
            tiny_disk=bool(every) and index % every == every - 1,
            long_hangs=args.session_seconds >= 30,
            tls=args.tls,
        )
        print(
            f"session {index}: {spec.seconds:.0f} s"
            f"{', state on a tiny disk' if spec.tiny_disk else ''} ...",
            flush=True,
        )
        try:
            result = await run_session(spec)
        except Exception:  # a broken session is reported, the run goes on
            result = aborted(spec, traceback.format_exc())
        results.append(result)
        n = len(result.verdict.violations)
        injected = ", ".join(f"{k} {v}" for k, v in sorted(result.injected.items()))
        print(
            f"session {index}: {result.connectors} connector(s), {result.steps} steps, "
            f"{result.seconds:.0f} s, injected: {injected or 'nothing'}; "
            f"{n} violation(s)",
            flush=True,
        )
        for v in result.verdict.violations:
            print(f"  VIOLATION {v}", flush=True)
        index += 1
    return results


def aborted(spec: SessionSpec, trace: str) -> SessionResult:
    """The result of a session that crashed the runner itself: one violation, the traceback."""
    verdict = Verdict()
    verdict.add("session aborted", trace.strip().splitlines()[-1] + "\n" + trace)
    return SessionResult(
        index=spec.index,
        cp_id=f"CHAOS-{spec.seed}-{spec.index}",
        verdict=verdict,
        injected=Counter(),
        steps=0,
        seconds=0.0,
        log_path=spec.workdir / "daemon.log",
        connectors=0,
    )


def summarize(results: list[SessionResult], seed: int, elapsed: float) -> dict:
    injected: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for r in results:
        injected.update(r.injected)
        counts.update(r.verdict.counts)
    kills = {k.removeprefix("kill during "): v for k, v in counts.items() if k.startswith("kill ")}
    faults = {
        k.removeprefix("hw fault "): v for k, v in counts.items() if k.startswith("hw fault ")
    }
    return {
        "seed": seed,
        "sessions": len(results),
        "seconds": round(elapsed, 1),
        "injected": dict(sorted(injected.items())),
        "kills": dict(sorted(kills.items())),
        "hardware_faults": dict(sorted(faults.items())),
        "counts": dict(sorted(counts.items())),
        "violations": [
            {
                "session": r.index,
                "charge_point": r.cp_id,
                "rule": v.rule,
                "detail": v.detail,
                "log": str(r.log_path),
            }
            for r in results
            for v in r.verdict.violations
        ],
        "notes": sorted({n for r in results for n in r.notes}),
    }


def print_summary(s: dict) -> None:
    print()
    print(f"chaos summary: seed {s['seed']}, {s['sessions']} session(s) in {s['seconds']:.0f} s")
    print("  injected:        " + (", ".join(f"{k} {v}" for k, v in s["injected"].items()) or "-"))
    print("  kills during:    " + (", ".join(f"{k} {v}" for k, v in s["kills"].items()) or "-"))
    print(
        "  hardware faults: "
        + (", ".join(f"{k} {v}" for k, v in s["hardware_faults"].items()) or "-")
    )
    counts = s["counts"]
    for name in HEADLINE:
        print(f"  {name + ':':<64}{counts.get(name, 0)}")
    reasons = {k.removeprefix("stop reason "): v for k, v in counts.items() if "stop reason" in k}
    print("  stop reasons:    " + (", ".join(f"{k} {v}" for k, v in reasons.items()) or "-"))
    for note in s["notes"]:
        print(f"  note: {note}")
    print(f"  violations:      {len(s['violations'])}")
    for v in s["violations"]:
        print(f"    session {v['session']} ({v['charge_point']}): {v['rule']}: {v['detail']}")
        print(f"      daemon log: {v['log']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("chargerd.bench.csms").setLevel(logging.ERROR)
        logging.getLogger("websockets").setLevel(logging.ERROR)
        # The bench CSMS's answer tasks fail loudly when a chaos cut closes their link.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    own_dir = args.workdir is None
    if own_dir:
        args.workdir = Path(tempfile.mkdtemp(prefix="chargerd-chaos-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"chargerd chaos: seed {args.seed}, files in {args.workdir}", flush=True)
    started = time.monotonic()
    try:
        results = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    summary = summarize(results, args.seed, time.monotonic() - started)
    print_summary(summary)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2))
    clean = not summary["violations"]
    if clean and own_dir and not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    elif not clean:
        print(f"session files kept in {args.workdir}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
