"""Shared parts of the core-service unit tests: a real SQLite file, real configuration,
the real mock station on a manual clock, and a fake link that records and scripts CALLs.

No daemon process, no network: each service is built the way chargerd.daemon wires it,
and time only moves when a test advances the ManualClock (which also drives the mock
station's physics, so energy grows exactly with the advanced seconds).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from chargerd.clock import ManualClock
from chargerd.features import metering
from chargerd.features.auth import AuthorizationCache, Authorizer
from chargerd.features.configuration import ConfigurationService, declare_core_keys
from chargerd.features.connectors import ConnectorRuntime, ConnectorSupervisor
from chargerd.features.outbox import Outbox
from chargerd.features.transactions import TransactionService
from chargerd.link import CallErrorReceived, CallResultInvalid, CallTimeout, NotConnected
from chargerd.store import Store
from hal.config import HardwareConfig, MockConfig
from hal.mock import MockStation, open_mock_station


class FakeLink:
    """Stands in for chargerd.link.Link: records every CALL and answers from a script.

    ``script[action]`` is a list consumed in order (a dict is returned, an exception
    instance raised); when it runs dry ``default[action]`` (a dict, an exception or a
    callable taking the payload) answers.  ``connected`` is what BootService reads.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.script: dict[str, list[Any]] = {}
        self.default: dict[str, Any] = {}
        self.connected = True
        self._changed = asyncio.Event()

    def answer(self, action: str, *answers: Any) -> None:
        self.script.setdefault(action, []).extend(answers)

    async def call(self, action: str, payload: dict) -> dict:
        self.calls.append((action, dict(payload)))
        self._changed.set()
        queued = self.script.get(action)
        if queued:
            answer = queued.pop(0)
        elif action in self.default:
            answer = self.default[action]
        else:
            raise AssertionError(f"FakeLink: no answer scripted for {action}")
        if callable(answer) and not isinstance(answer, BaseException):
            answer = answer(payload)
        if isinstance(answer, BaseException):
            raise answer
        await asyncio.sleep(0)
        return answer

    def sent(self, action: str | None = None) -> list[tuple[str, dict]]:
        return [c for c in self.calls if action is None or c[0] == action]

    def actions(self) -> list[str]:
        return [a for a, _ in self.calls]

    async def wait_calls(self, n: int, action: str | None = None, timeout: float = 2.0) -> None:
        """Until at least ``n`` CALLs (of ``action``) went out."""
        async with asyncio.timeout(timeout):
            while len(self.sent(action)) < n:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "chargerd.db")
    yield s
    s.close()


def make_config(store: Store, connectors: int = 2) -> ConfigurationService:
    svc = ConfigurationService(store)
    declare_core_keys(
        svc, connectors=connectors, supported_measurands=set(metering.SUPPORTED_MEASURANDS)
    )
    return svc


@pytest.fixture
def config(store) -> ConfigurationService:
    return make_config(store)


def make_outbox(store: Store, clock, config: ConfigurationService) -> Outbox:
    """As the daemon builds it: attempts and interval read live from the configuration."""
    return Outbox(
        store,
        clock,
        attempts=lambda: int(config.get("TransactionMessageAttempts") or 1),
        retry_interval=lambda: int(config.get("TransactionMessageRetryInterval") or 0),
    )


@pytest.fixture
def outbox(store, clock, config) -> Outbox:
    return make_outbox(store, clock, config)


@pytest.fixture
def link() -> FakeLink:
    return FakeLink()


@dataclass
class Bench:
    """Every core service around one mock station, wired as chargerd.daemon does."""

    clock: ManualClock
    store: Store
    config: ConfigurationService
    outbox: Outbox
    cache: AuthorizationCache
    transactions: TransactionService
    supervisor: ConnectorSupervisor
    sim: MockStation
    hardware: Any
    link: FakeLink
    authorizer: Authorizer
    statuses: list[tuple[int, str, str]] = field(default_factory=list)

    def conn(self, n: int = 1) -> ConnectorRuntime:
        return self.supervisor.connectors[n]

    async def tick(self, times: int = 1) -> None:
        for _ in range(times):
            for conn in self.supervisor.connectors.values():
                await self.supervisor.poll_meter(conn)  # the meter task's step
                await self.supervisor.tick(conn)

    async def run_for(self, seconds: float, step: float = 1.0) -> None:
        """Advance the manual clock in steps, one supervisor pass after each."""
        done = 0.0
        while done < seconds:
            self.clock.advance(step)
            done += step
            await self.tick()

    def status_changes(self, connector_id: int = 1) -> list[str]:
        """The statuses reported for a connector, consecutive repeats removed."""
        out: list[str] = []
        for cid, status, _ in self.statuses:
            if cid == connector_id and (not out or out[-1] != status):
                out.append(status)
        return out

    async def deliver(self, timeout: float = 2.0) -> None:
        """Run the outbox against the fake link until it is empty (a dying sender raises)."""
        ready = asyncio.Event()
        ready.set()
        task = asyncio.create_task(
            self.outbox.run(
                self.link.call,
                ready.wait,
                errors=(CallErrorReceived, CallResultInvalid),
                offline_errors=(NotConnected, CallTimeout),
            )
        )
        try:
            async with asyncio.timeout(timeout):
                while self.outbox.pending():
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.005)
            for _ in range(3):
                await asyncio.sleep(0)  # call_soon / create_task follow-ups
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def outbox_rows(self) -> list[dict]:
        return [
            dict(r)
            for r in self.store.query(
                "SELECT seq, action, payload, tx_local_id, attempts FROM outbox ORDER BY seq"
            )
        ]

    def tx_rows(self) -> list[dict]:
        return [dict(r) for r in self.store.query("SELECT * FROM transactions ORDER BY local_id")]


@pytest.fixture
def make_bench(tmp_path, clock, link):
    """Build a Bench: ``make_bench(connectors=1, lock=True, ocpp={...}, max_current_a=32)``."""
    opened: list[Bench] = []

    def build(
        *,
        connectors: int = 1,
        lock: bool = True,
        ocpp: dict[str, object] | None = None,
        max_current_a: float = 32.0,
        mock: MockConfig | None = None,
        db_name: str = "chargerd.db",
    ) -> Bench:
        store = Store.open(tmp_path / db_name)
        config = make_config(store, connectors)
        if ocpp:
            config.apply_initial(dict(ocpp))
        outbox = make_outbox(store, clock, config)
        cache = AuthorizationCache(store, clock, config)
        transactions = TransactionService(
            store=store, clock=clock, outbox=outbox, config=config, cache=cache
        )
        hw_cfg = HardwareConfig(mock=mock or MockConfig(lock=lock))
        hardware = open_mock_station(
            hw_cfg, tmp_path / "hw", connectors=connectors, monotonic=clock.monotonic
        )
        statuses: list[tuple[int, str, str]] = []
        supervisor = ConnectorSupervisor(
            connectors=[
                ConnectorRuntime(id=i + 1, hw=hw) for i, hw in enumerate(hardware.connectors)
            ],
            transactions=transactions,
            config=config,
            clock=clock,
            report_status=lambda c, s, e: statuses.append((c, s, e)),
            max_current_a=max_current_a,
        )
        bench = Bench(
            clock=clock,
            store=store,
            config=config,
            outbox=outbox,
            cache=cache,
            transactions=transactions,
            supervisor=supervisor,
            sim=hardware.sim,
            hardware=hardware,
            link=link,
            authorizer=Authorizer(cache, link, config, clock),
            statuses=statuses,
        )
        opened.append(bench)
        return bench

    yield build
    for bench in opened:
        bench.hardware.sim.close()
        bench.store.close()
