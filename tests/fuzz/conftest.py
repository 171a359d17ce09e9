"""One real daemon for a whole fuzz module, reused across hypothesis examples.

Hypothesis runs its examples synchronously, and starting a daemon per
example would cost half a second each; so the CSMS and the rig live in an
event loop on a background thread for the whole module, and each example
hands that loop a coroutine (``FuzzStation.run``).  The CSMS's frame hook
counts every answer the station sends per unique id, so that a test can
say "exactly one answer" and "no answer at all", not just "an answer came".
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import pytest

from chargerd.bench.csms.csms import BenchCsms, FrameRecord
from chargerd.bench.rig import StationRig

CP_ID = "CP-FUZZ"


class FuzzStation:
    """The CSMS, the daemon, and the loop they run on."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.answers: Counter[str] = Counter()  # unique id -> CALLRESULT/CALLERROR frames seen
        self.csms = BenchCsms(on_frame=self._on_frame, max_frames=1000)
        self.csms.accept_all_cards = True
        self.rig: StationRig | None = None

    def _on_frame(self, rec: FrameRecord) -> None:
        if rec.direction != "in":
            return
        try:
            msg = json.loads(rec.frame)
        except ValueError:
            return
        if isinstance(msg, list) and len(msg) >= 2 and msg[0] in (3, 4):
            self.answers[str(msg[1])] += 1

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def rss_kib(self) -> int:
        """The daemon's resident set size (VmRSS), in KiB."""
        assert self.rig is not None and self.rig.proc is not None
        with open(f"/proc/{self.rig.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS line")

    def close(self) -> None:
        async def shutdown() -> None:
            if self.rig is not None:
                await self.rig.stop()
            await self.csms.stop()

        try:
            self.run(shutdown(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


@pytest.fixture(scope="module")
def fuzz_station(tmp_path_factory):
    station = FuzzStation()

    async def start() -> None:
        await station.csms.start("127.0.0.1", 0)
        station.rig = StationRig(
            tmp_path_factory.mktemp("fuzz"),
            csms_url=station.csms.url,
            charge_point_id=CP_ID,
            log_level="WARNING",
            # The size-limit tests probe this limit; smaller than the default 2 MiB, so
            # that they stay fast.
            csms={"max_frame_bytes": 65536},
        )
        await station.rig.start()
        await station.rig.wait_status(
            lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
        )

    try:
        station.run(start())
        yield station
    finally:
        rig = station.rig
        station.close()
        if rig is not None and rig.proc is not None and rig.proc.returncode not in (0, None):
            print(rig.tail_log())
