"""A test rig: the real daemon process on the mock station, driven through its control socket.

Shared by the end-to-end tests, the benchmark and the chaos runner, so that
all three exercise exactly what a technician or a CSMS team would run: the
``chargerd`` process with a TOML file, talking to a CSMS over a real websocket
on 127.0.0.1.  Nothing here reaches into the daemon's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class RigCommandError(Exception):
    def __init__(self, kind: str, error: str) -> None:
        super().__init__(f"{kind}: {error}")
        self.kind = kind
        self.error = error


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))


class StationRig:
    """One charger: a config file, a state directory, and the daemon process."""

    def __init__(
        self,
        workdir: Path,
        *,
        csms_url: str,
        charge_point_id: str = "CP-TEST",
        connectors: int = 1,
        ocpp: dict[str, Any] | None = None,
        log_level: str = "INFO",
        mock: dict[str, Any] | None = None,
        extra_toml: str = "",
        env: dict[str, str] | None = None,
        csms: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.csms_url = csms_url
        self.charge_point_id = charge_point_id
        self.connectors = connectors
        self.ocpp = {
            "HeartbeatInterval": 300,
            "MeterValueSampleInterval": 0,
            "ConnectionTimeOut": 60,
            "TransactionMessageAttempts": 3,
            "TransactionMessageRetryInterval": 1,
            "WebSocketPingInterval": 0,
            **(ocpp or {}),
        }
        self.log_level = log_level
        self.mock = mock or {}
        self.extra_toml = extra_toml
        # Extra environment for the daemon, e.g. NOTIFY_SOCKET so a bench can see READY=1.
        self.env = dict(env or {})
        # More [csms] keys: security_profile, basic_auth_password, ca_file, max_frame_bytes
        # (a 10,000-entry SendLocalList)...
        self.csms_options = {"security_profile": 0, **(csms or {})}
        self.state_dir = self.workdir / "state"
        # unix socket paths are short-lived and limited to ~107 bytes
        self.socket = Path(f"/tmp/chargerd-rig-{os.getpid()}-{id(self):x}.sock")
        self.config_path = self.workdir / "chargerd.toml"
        self.log_path = self.workdir / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.write_config()

    def write_config(self) -> None:
        lines = [
            "[station]",
            f'charge_point_id = "{self.charge_point_id}"',
            'vendor = "chargerd"',
            'model = "rig"',
            f"connectors = {self.connectors}",
            "",
            "[csms]",
            f'url = "{self.csms_url}"',
            *(f"{k} = {_toml_value(v)}" for k, v in self.csms_options.items()),
            "",
            "[paths]",
            f'state_dir = "{self.state_dir}"',
            f'control_socket = "{self.socket}"',
            "",
            "[logging]",
            f'level = "{self.log_level}"',
            "",
            "[hardware]",
            'driver = "mock"',
            "",
            "[hardware.mock]",
            *(f"{k} = {_toml_value(v)}" for k, v in self.mock.items()),
            "",
            "[ocpp]",
            *(f"{k} = {_toml_value(v)}" for k, v in self.ocpp.items()),
            "",
            self.extra_toml,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    # -- process ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, *, timeout: float = 20.0) -> None:
        """Start the daemon and wait until its control socket answers."""
        if self.running:
            raise RuntimeError("daemon already running")
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        log = open(self.log_path, "a")
        log.write(f"\n===== start {self.starts + 1} =====\n")
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chargerd.daemon", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.tail_log()}")
            if self.socket.exists():
                try:
                    await self.ctl("status")
                    return
                except (OSError, RigCommandError):
                    pass
            await asyncio.sleep(0.05)
        raise TimeoutError(f"daemon did not open its control socket:\n{self.tail_log()}")

    def kill9(self) -> None:
        """A power cut: SIGKILL, no clean-up of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    async def stop(self, *, timeout: float = 15.0) -> int | None:
        """SIGTERM, as systemd stops the service; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    async def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("daemon did not exit")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def tail_log(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # -- control socket -----------------------------------------------------------------------

    async def ctl(self, cmd: str, **args: Any) -> dict:
        """One control-socket request; raises RigCommandError on a refusal."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(self.socket)), timeout=5
        )
        try:
            writer.write(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout=15)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if not line:
            raise ConnectionResetError("the daemon closed the control connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RigCommandError(reply.get("kind", "?"), reply.get("error", ""))
        return reply.get("result", {})

    async def status(self) -> dict:
        return await self.ctl("status")

    async def connector(self, n: int = 1) -> dict:
        return (await self.status())["connectors"][n - 1]

    async def wait_status(
        self, predicate: Callable[[dict], bool], *, timeout: float = 10.0, what: str = "condition"
    ) -> dict:
        deadline = time.monotonic() + timeout
        st: dict = {}
        while time.monotonic() < deadline:
            st = await self.status()
            if predicate(st):
                return st
            await asyncio.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {what}; last status: {json.dumps(st)[:2000]}")

    async def wait_connector(self, n: int, status: str, *, timeout: float = 10.0) -> dict:
        st = await self.wait_status(
            lambda s: s["connectors"][n - 1]["status"] == status,
            timeout=timeout,
            what=f"connector {n} {status}",
        )
        return st["connectors"][n - 1]

    # -- bench controls -------------------------------------------------------------------------

    async def plug(self, n: int = 1, **kw: Any) -> None:
        await self.ctl("sim.plug", connector=n, **kw)

    async def charge(self, n: int = 1) -> None:
        await self.ctl("sim.charge", connector=n)

    async def suspend(self, n: int = 1) -> None:
        await self.ctl("sim.suspend", connector=n)

    async def unplug(self, n: int = 1) -> None:
        await self.ctl("sim.unplug", connector=n)

    async def card(self, uid: str) -> None:
        """Present a card and return at once (not waiting for what the station does)."""
        await self.ctl("sim.card", uid=uid, await_outcome=False)

    async def fault(self, name: str, on: bool, connector: int | None = None) -> None:
        await self.ctl("sim.fault", name=name, on=on, connector=connector)

    async def network(self, up: bool) -> None:
        await self.ctl("sim.network", up=up)
