"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chargerd import sdnotify


@pytest.fixture
def systemd_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_not_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False


def test_notify_sends_one_datagram(systemd_socket: socket.socket) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=connected to CSMS") is True
    assert systemd_socket.recv(4096) == b"READY=1\nSTATUS=connected to CSMS"


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"chargerd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STOPPING=1") is True
        assert sock.recv(4096) == b"STOPPING=1"


def test_missing_socket_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    with pytest.raises(OSError):
        sdnotify.notify("READY=1")


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("30000000", "own", 30.0),
        ("30000000", "other", None),
        ("500000", None, 0.5),
        ("0", None, None),
        ("thirty", None, None),
        ("30000000", "x", None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    if usec is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        value = {"own": str(os.getpid()), "other": str(os.getpid() + 1)}.get(pid, pid)
        monkeypatch.setenv("WATCHDOG_PID", value)
    assert sdnotify.watchdog_interval() == expected


class SteppedClock:
    """A clock whose sleeps end only when the test says so."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self._steps: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await self._steps.get()

    def step(self) -> None:
        self._steps.put_nowait(None)


async def _recv(sock: socket.socket) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), 5)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def test_watchdog_pings_every_quarter_interval(systemd_socket: socket.socket) -> None:
    systemd_socket.setblocking(False)
    clock = SteppedClock()
    task = asyncio.create_task(sdnotify.watchdog_loop(30.0, clock=clock))  # type: ignore[arg-type]
    try:
        assert await _recv(systemd_socket) == b"WATCHDOG=1"
        await asyncio.sleep(0)
        assert clock.sleeps == [7.5]
        with pytest.raises(BlockingIOError):  # nothing more until the sleep ends
            systemd_socket.recv(4096)
        clock.step()
        assert await _recv(systemd_socket) == b"WATCHDOG=1"
        clock.step()
        assert await _recv(systemd_socket) == b"WATCHDOG=1"
        assert clock.sleeps == [7.5, 7.5, 7.5]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_failure_logged_once_then_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "later.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    clock = SteppedClock()
    caplog.set_level(logging.INFO, logger="chargerd.sdnotify")
    task = asyncio.create_task(sdnotify.watchdog_loop(2.0, clock=clock))  # type: ignore[arg-type]
    try:
        for pings in (1, 2, 3):  # three failed pings, each followed by a sleep
            await _until(lambda n=pings: len(clock.sleeps) == n)
            if pings < 3:
                clock.step()
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "Watchdog ping" in errors[0].getMessage()

        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))  # systemd's socket is back
            sock.setblocking(False)
            clock.step()
            assert await _recv(sock) == b"WATCHDOG=1"
        assert any("works again" in r.getMessage() for r in caplog.records)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_rejects_nonpositive_interval() -> None:
    with pytest.raises(ValueError, match="> 0"):
        await sdnotify.watchdog_loop(0)
