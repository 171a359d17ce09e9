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
