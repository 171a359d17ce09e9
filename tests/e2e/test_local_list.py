"""Local Auth List Management end to end: SendLocalList over a real websocket, the list
authorizing while the link is down, and a crash in the middle of a Full update."""

from __future__ import annotations

import pytest

from chargerd.bench.csms.csms import BenchCsms

pytestmark = pytest.mark.e2e

CP = "CP-TEST"


def listed(tags: list[str], status: str = "Accepted") -> list[dict]:
    return [{"idTag": t, "idTagInfo": {"status": status}} for t in tags]


async def send_list(csms: BenchCsms, version: int, kind: str, items: list[dict]) -> str:
    payload = {"listVersion": version, "updateType": kind, "localAuthorizationList": items}
    return (await csms.call(CP, "SendLocalList", payload))["status"]


async def list_version(csms: BenchCsms) -> int:
    return (await csms.call(CP, "GetLocalListVersion", {}))["listVersion"]


async def test_a_local_list_authorizes_while_offline(csms, make_registered_rig):
    rig = await make_registered_rig(
        ocpp={"LocalAuthorizeOffline": True, "AllowOfflineTxForUnknownId": False}
    )
    assert await list_version(csms) == 0
    # The CSMS would refuse these cards if asked: only the list can let them in.
    blocked = listed(["B10C0001"], "Blocked")
    assert await send_list(csms, 1, "Full", listed(["11110001"]) + blocked) == "Accepted"
    assert await list_version(csms) == 1
    assert (await rig.status())["local_list"] == {"enabled": True, "version": 1, "entries": 2}
    await rig.network(False)
    await rig.wait_status(lambda s: not s["ocpp"]["connected"], what="link down")
    await rig.plug(1)
    await rig.card("B10C0001")  # on the list, Blocked: refused offline
    await rig.card("FFFF0001")  # unknown, AllowOfflineTxForUnknownId false: refused
    await rig.card("11110001")
    await rig.charge(1)
    conn = await rig.wait_connector(1, "Charging")
    assert conn["id_tag"] == "11110001"
    await rig.network(True)
    start = await csms.wait_for("StartTransaction", timeout=15)
    assert [r.payload["idTag"] for r in start] == ["11110001"]
    assert csms.calls("Authorize", CP) == []


async def test_a_differential_update_after_a_crash_in_the_middle_of_a_full_one(
    csms, make_registered_rig
):
    rig = await make_registered_rig()
    old = [f"0LD{i:05d}" for i in range(10)]
    assert await send_list(csms, 1, "Full", listed(old)) == "Accepted"
    # The daemon now dies (SIGKILL) half-way through writing the next update.
    await rig.stop()
    rig.env["CHARGERD_CRASH_POINT"] = "local_list.mid_update"
    await rig.start()
    await csms.wait_connected(CP, count=2)
    new = [f"NEW{i:05d}" for i in range(600)]
    with pytest.raises((TimeoutError, ConnectionError)):
        await csms.call(CP, "SendLocalList", {
            "listVersion": 2, "updateType": "Full", "localAuthorizationList": listed(new)
        }, timeout=5)  # fmt: skip
    assert await rig.wait_exit() == -9
    del rig.env["CHARGERD_CRASH_POINT"]
    await rig.start()
    await rig.wait_status(lambda s: s["ocpp"]["registration"] == "Accepted", what="registered")
    # The old list, whole, with its own version: the CSMS goes on from there.
    assert (await rig.status())["local_list"] == {"enabled": True, "version": 1, "entries": 10}
    assert await list_version(csms) == 1
    assert await send_list(csms, 1, "Differential", listed(["LATE0001"])) == "VersionMismatch"
    diff = [{"idTag": "0LD00000"}, *listed(["NEW00001"])]
    assert await send_list(csms, 2, "Differential", diff) == "Accepted"
    assert await list_version(csms) == 2
    assert (await rig.status())["local_list"]["entries"] == 10


async def test_online_the_list_preauthorizes_and_the_csms_is_not_asked(csms, make_registered_rig):
    rig = await make_registered_rig(ocpp={"LocalPreAuthorize": True})
    assert await send_list(csms, 4, "Full", listed(["22220001"])) == "Accepted"
    await rig.plug(1)
    await rig.wait_connector(1, "Preparing")
    await rig.card("22220001")
    await rig.charge(1)
    start = await csms.wait_for("StartTransaction")
    assert start[0].payload["idTag"] == "22220001"
    assert csms.calls("Authorize", CP) == []
    # LocalAuthListEnabled false: the list is ignored (and reported as -1).
    assert (await csms.call(CP, "ChangeConfiguration", {
        "key": "LocalAuthListEnabled", "value": "false"}))["status"] == "Accepted"  # fmt: skip
    assert await list_version(csms) == -1
