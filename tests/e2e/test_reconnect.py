"""The link to the CSMS comes back by itself: CSMS restart, dead link, abrupt close.

After every reconnect the CSMS hears the connectors' statuses again (it may
have missed changes), and transaction messages caught in the break are
delivered once the link is back, each accepted once.  A link that is dead
without saying so (no FIN, no RST: a NAT that forgot the connection) is found
by the WebSocketPingInterval pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from chargerd.bench.csms.csms import BenchCsms

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
CARD = "0A1B2C3D"
IN_FLIGHT = timedelta(milliseconds=100)


def now() -> datetime:
    return datetime.now(UTC)


def statuses_since(csms, t: datetime) -> dict[int, str]:
    """The last status the CSMS was told per connector since ``t``."""
    out: dict[int, str] = {}
    for r in csms.received:
        if r.cp_id == CP and r.action == "StatusNotification" and r.time >= t:
            out[r.payload["connectorId"]] = r.payload["status"]
    return out


async def statuses_resent(csms, t: datetime, expected: dict[int, str], timeout: float = 10):
    async with asyncio.timeout(timeout):
        while statuses_since(csms, t) != expected:
            await asyncio.sleep(0.05)


class FreezableProxy:
    """A TCP relay on 127.0.0.1 that can stop passing bytes, like a dead network path.

    Frozen, it passes nothing in either direction and tells neither side
    anything: bytes wait in the relay, closes are not passed on.  Thawed, the
    connections still open at both ends get their held bytes; the ones a side
    gave up on meanwhile are dropped, as a real network would have lost them.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self.frozen = True
        self._thawed.clear()

    def thaw(self) -> None:
        self.frozen = False
        self._thawed.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.frozen = True  # whatever was held is dropped, not delivered
        self._thawed.set()
        for w in self._writers:
            w.transport.abort()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(down_w)
        await self._thawed.wait()
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            down_w.transport.abort()
            return
        self._writers.add(up_w)
        task_a = asyncio.create_task(self._pipe(down_r, up_w, down_w))
        task_b = asyncio.create_task(self._pipe(up_r, down_w, up_w))
        self._tasks |= {task_a, task_b}
        await asyncio.gather(task_a, task_b, return_exceptions=True)

    async def _pipe(self, src, dst: asyncio.StreamWriter, src_w: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await src.read(65536)
                if self.frozen:
                    await self._thawed.wait()
                    if src_w.is_closing() or dst.is_closing() or not data:
                        break  # this connection died while the path was dead
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if self.frozen:
                await self._thawed.wait()
            with contextlib.suppress(Exception):
                dst.transport.abort()
                src_w.transport.abort()


async def test_csms_restart_on_the_same_port_with_backoff(make_registered_rig, csms):
    rig = await make_registered_rig()
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    port = csms.port
    await csms.stop()
    await rig.wait_status(lambda s: not s["ocpp"]["connected"], what="link down")

    # While the CSMS is away, count the station's attempts on its port: they back off.
    attempts: list[float] = []

    async def refuse(reader, writer) -> None:
        attempts.append(asyncio.get_running_loop().time())
        writer.transport.abort()

    t0 = asyncio.get_running_loop().time()
    stand_in = await asyncio.start_server(refuse, "127.0.0.1", port)
    await asyncio.sleep(2.5)
    stand_in.close()
    await stand_in.wait_closed()
    assert 1 <= len(attempts) <= 3, [round(a - t0, 2) for a in attempts]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(g >= 0.9 for g in gaps), gaps  # exponential: 1-2 s, then 2-4 s...

    reborn = BenchCsms()
    t = now()
    await reborn.start("127.0.0.1", port)
    try:
        await reborn.wait_connected(CP, timeout=10)
        await rig.wait_status(lambda s: s["ocpp"]["connected"], what="link up")
        await statuses_resent(reborn, t, {0: "Available", 1: "Preparing"})
        # The link is usable both ways.
        reply = await reborn.call(CP, "GetConfiguration", {"key": ["HeartbeatInterval"]})
        assert reply["configurationKey"][0]["key"] == "HeartbeatInterval"
    finally:
        await rig.stop()
        await reborn.stop()


async def test_a_dead_link_is_found_by_pings_and_replaced(make_rig, csms, tx_audit):
    proxy = FreezableProxy(csms.port)
    proxy_port = await proxy.start()
    try:
        rig = await make_rig(start=False, ocpp={"WebSocketPingInterval": 1})
        rig.csms_url = f"ws://127.0.0.1:{proxy_port}/ocpp"
        rig.write_config()
        await rig.start()
        await rig.wait_status(
            lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
        )
        await rig.ctl("config.set", key="MeterValueSampleInterval", value="1")
        await rig.plug(1)
        await rig.card(CARD)
        await rig.charge(1)
        await csms.wait_for("MeterValues")

        t_freeze = now()
        proxy.freeze()
        # No FIN, no RST: only the unanswered ping tells the station.
        await rig.wait_status(lambda s: not s["ocpp"]["connected"], timeout=6, what="dead link")
        assert csms.is_connected(CP)  # the CSMS side never noticed
        assert rig.running
        await asyncio.sleep(1.0)  # samples go on meanwhile
        t_thaw = now()
        proxy.thaw()
        await rig.wait_status(lambda s: s["ocpp"]["connected"], timeout=15, what="link back")
        await csms.wait_connected(CP, count=2)
        await statuses_resent(csms, t_thaw, {0: "Available", 1: "Charging"})
        await rig.card(CARD)
        await rig.wait_connector(1, "Finishing")
        await rig.wait_status(lambda s: s["ocpp"]["outbox_pending"] == 0, what="outbox drained")
        audit = tx_audit()

        def in_flight(r) -> bool:
            answered = audit.answered_at(r)
            return answered is not None and t_freeze - IN_FLIGHT <= answered <= t_thaw

        by_tx = audit.check(allow_duplicate_of=in_flight)
        ((_, msgs),) = by_tx.items()
        assert msgs[-1].payload["reason"] == "Local"
        assert [m for m in msgs if m.time > t_thaw and m.action == "MeterValues"]
    finally:
        await proxy.close()


async def test_an_abrupt_close_by_the_csms_is_followed_by_a_reconnect(
    make_registered_rig, csms, start_charging, tx_audit
):
    rig = await make_registered_rig(ocpp={"MeterValueSampleInterval": 1})
    await start_charging(rig)
    await csms.wait_for("MeterValues")
    t = now()
    await csms.drop(CP)
    await csms.wait_connected(CP, count=2, timeout=10)
    await statuses_resent(csms, t, {0: "Available", 1: "Charging"})
    await rig.card(CARD)
    await rig.wait_connector(1, "Finishing")
    await rig.wait_status(lambda s: s["ocpp"]["outbox_pending"] == 0, what="outbox drained")
    audit = tx_audit()

    def in_flight(r) -> bool:
        answered = audit.answered_at(r)
        return answered is not None and t - IN_FLIGHT <= answered <= t + IN_FLIGHT

    ((_, msgs),) = audit.check(allow_duplicate_of=in_flight).items()
    assert msgs[-1].action == "StopTransaction"
