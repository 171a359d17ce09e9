"""``python -m chargerd.bench.csms``: a CSMS on the bench that prints every frame.

One line per frame on stdout, flushed, so that ``| grep`` and ``tee`` follow
a session live: ``<time> <charge point id> in|out <frame>`` ("in" = from the
station to the CSMS).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import TextIO

from chargerd.bench.csms.csms import BenchCsms, FrameRecord
from chargerd.clock import iso


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chargerd.bench.csms", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000, help="0 picks a free port (printed)")
    p.add_argument("--cards", default="", help="comma-separated idTags answered Accepted")
    p.add_argument("--accept-all-cards", action="store_true", help="unknown idTags Accepted")
    p.add_argument("--boot", choices=["Accepted", "Pending", "Rejected"], default="Accepted")
    p.add_argument("--heartbeat", type=int, default=60, help="HeartbeatInterval in s")
    p.add_argument("--log-file", help="also append frames and log lines to this file")
    return p.parse_args(argv)


def frame_printer(outputs: list[TextIO]):
    def show(rec: FrameRecord) -> None:
        line = f"{iso(rec.time)} {rec.cp_id} {rec.direction} {rec.frame}\n"
        for out in outputs:
            out.write(line)
            out.flush()

    return show


async def serve(args: argparse.Namespace, outputs: list[TextIO]) -> None:
    csms = BenchCsms(on_frame=frame_printer(outputs))
    csms.boot_status = args.boot
    csms.heartbeat_interval = args.heartbeat
    csms.accept_all_cards = args.accept_all_cards
    csms.cards = {card: "Accepted" for card in args.cards.split(",") if card}
    port = await csms.start(args.host, args.port)
    print(f"benchcsms listening on ws://{args.host}:{port}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await csms.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outputs: list[TextIO] = [sys.stdout]
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    log_file = None
    if args.log_file:
        log_file = open(args.log_file, "a", encoding="utf-8")
        outputs.append(log_file)
        handlers.append(logging.StreamHandler(log_file))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
    )
    try:
        asyncio.run(serve(args, outputs))
    finally:
        if log_file is not None:
            log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
