"""What the bench measures with: arrival times at the CSMS, systemd notifications, /proc.

Every time is ``time.perf_counter()`` in the bench process, so that an
interval between "the CSMS sent" and "the CSMS received" is measured on one
clock, where a user of the station would see it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chargerd.bench.csms.csms import FrameRecord

_CLK_TCK = os.sysconf("SC_CLK_TCK")


TX_MESSAGES = "transaction messages"
"""Pseudo-action: StartTransaction, StopTransaction and MeterValues of a transaction
(the outbox's messages), as opposed to live messages such as clock-aligned values."""


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float
    cp_id: str
    action: str
    payload: dict[str, Any]


class Arrivals:
    """Every CALL the CSMS receives, time-stamped as the CSMS's receive loop sees it.

    Plugged into BenchCsms(on_frame=...).  Indexed per action with sorted
    times so that "how many X since t" stays cheap while 10,000 replayed
    messages arrive (a linear scan per frame would be quadratic).
    """

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = {}
        self._items: dict[str, list[Arrival]] = {}
        self._changed = asyncio.Event()

    def on_frame(self, rec: FrameRecord) -> None:
        if rec.direction != "in":
            return
        t = time.perf_counter()
        try:
            msg = json.loads(rec.frame)
        except ValueError:
            return
        if not (isinstance(msg, list) and len(msg) == 4 and msg[0] == 2):
            return
        action = str(msg[2])
        payload = msg[3] if isinstance(msg[3], dict) else {}
        arrival = Arrival(t, rec.cp_id, action, payload)
        self._index(action, arrival)
        if action in ("StartTransaction", "StopTransaction") or (
            action == "MeterValues" and "transactionId" in payload
        ):
            self._index(TX_MESSAGES, arrival)
        self._changed.set()

    def _index(self, key: str, arrival: Arrival) -> None:
        self._times.setdefault(key, []).append(arrival.t)
        self._items.setdefault(key, []).append(arrival)

    def since(self, action: str, t0: float, cp_id: str | None = None) -> list[Arrival]:
        times = self._times.get(action, [])
        items = self._items.get(action, [])[bisect.bisect_left(times, t0) :]
        return [a for a in items if cp_id is None or a.cp_id == cp_id]

    def count_since(self, action: str, t0: float) -> int:
        times = self._times.get(action, [])
        return len(times) - bisect.bisect_left(times, t0)

    async def wait(
        self,
        action: str,
        t0: float,
        *,
        cp_id: str | None = None,
        predicate: Callable[[Arrival], bool] | None = None,
        timeout: float = 10.0,
    ) -> Arrival:
        """The first ``action`` received at or after ``t0`` (matching ``predicate``)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for a in self.since(action, t0, cp_id):
                        if predicate is None or predicate(a):
                            return a
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"no {action} at the CSMS within {timeout} s") from None

    async def wait_count(self, action: str, t0: float, count: int, *, timeout: float) -> None:
        """Until ``count`` CALLs of ``action`` (or TX_MESSAGES) arrived since ``t0``."""
        try:
            async with asyncio.timeout(timeout):
                while self.count_since(action, t0) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            got = self.count_since(action, t0)
            raise TimeoutError(
                f"only {got} of {count} {action} at the CSMS within {timeout} s"
            ) from None

    def clear(self) -> None:
        self._times.clear()
        self._items.clear()


class NotifyListener:
    """The systemd side of sd_notify: a datagram socket a daemon is given as NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                return
            t = time.perf_counter()
            for line in data.decode("utf-8", "replace").splitlines():
                self.messages.append((t, line))
            self._changed.set()

    async def wait(self, line: str, t0: float, timeout: float = 10.0) -> float:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for t, got in self.messages:
                        if t >= t0 and got == line:
                            return t
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"no {line} on NOTIFY_SOCKET within {timeout} s") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) in MB of 10^6 bytes: the stricter reading of a "60 MB" budget."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (clock-tick resolution, usually 10 ms)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK
