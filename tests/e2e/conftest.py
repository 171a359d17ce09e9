"""End-to-end fixtures: a real BenchCsms on 127.0.0.1 and the real daemon process."""

from __future__ import annotations

import pytest

from chargerd.benchcsms.csms import BenchCsms
from chargerd.rig import StationRig

pytestmark = pytest.mark.e2e


@pytest.fixture
async def csms():
    server = BenchCsms()
    await server.start("127.0.0.1", 0)
    server.cards["0A1B2C3D"] = {"status": "Accepted"}
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def make_rig(tmp_path, csms):
    """make_rig(**kw) -> a started StationRig against the ``csms`` fixture."""
    rigs: list[StationRig] = []

    async def make(start: bool = True, **kw) -> StationRig:
        rig = StationRig(tmp_path / f"station{len(rigs)}", csms_url=csms.url, **kw)
        rigs.append(rig)
        if start:
            await rig.start()
        return rig

    try:
        yield make
    finally:
        for rig in rigs:
            await rig.stop()
            if rig.proc is not None and rig.proc.returncode not in (0, -9, None):
                print(rig.tail_log())


@pytest.fixture
async def rig(make_rig):
    """A started station, registered with the CSMS (a card before that would be offline)."""
    station = await make_rig()
    await station.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
    )
    return station


# -- OCA-style helpers: a registered station, a running charging session ------------------


@pytest.fixture
def make_registered_rig(make_rig):
    """make_registered_rig(**kw) -> a started StationRig whose boot the CSMS has accepted.

    A card presented before the registration is judged by the offline rules, so
    tests that start sessions wait for it first.
    """

    async def make(**kw) -> StationRig:
        station = await make_rig(**kw)
        await station.wait_status(
            lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
        )
        return station

    return make


@pytest.fixture
def start_charging(csms):
    """start_charging(rig, card=..., connector=1) -> the StartTransaction record.

    The driver's way in: plug, card, the EV asks for energy; returns once the
    station charges and knows the CSMS's transactionId.
    """

    async def start(rig: StationRig, card: str = "0A1B2C3D", connector: int = 1):
        def mine(r) -> bool:
            return r.cp_id == rig.charge_point_id and r.payload.get("connectorId") == connector

        before = len([r for r in csms.received if r.action == "StartTransaction" and mine(r)])
        await rig.plug(connector)
        await rig.wait_connector(connector, "Preparing")
        await rig.card(card)
        await rig.charge(connector)
        starts = await csms.wait_for("StartTransaction", predicate=mine, count=before + 1)
        await rig.wait_status(
            lambda s: (
                s["connectors"][connector - 1]["status"] == "Charging"
                and s["connectors"][connector - 1]["transaction_id"] is not None
            ),
            what=f"connector {connector} charging with a transactionId",
        )
        return starts[before]

    return start
