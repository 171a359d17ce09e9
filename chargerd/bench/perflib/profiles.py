"""Bench figures of the optional profiles: Remote Trigger and Local Auth List Management.

Measured as a CSMS team sees them: from the CSMS's CALL leaving to the
triggered message arriving at the CSMS, and from a SendLocalList leaving to
its answer, which the station sends only once the list is committed (fsync).
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING

from chargerd.bench.perflib.figures import Figure, Target

if TYPE_CHECKING:
    from chargerd.bench.perflib.phases import Bench

perf = time.perf_counter

#: Every message TriggerMessage can ask for, with the connector where one applies.
TRIGGERS: tuple[tuple[str, int | None], ...] = (
    ("StatusNotification", 1),
    ("MeterValues", 1),
    ("Heartbeat", None),
    ("FirmwareStatusNotification", None),
    ("DiagnosticsStatusNotification", None),
    ("BootNotification", None),
)

PROFILE_TARGETS = {
    "trigger_to_message": Target("<", 100.0, "p99"),
    "local_list_full": Target("<", 1000.0, "max"),
}


def profile_figures() -> list[Figure]:
    return [
        Figure("trigger_to_message", "TriggerMessage -> the triggered message at the CSMS", "ms"),
        Figure("local_list_full", "SendLocalList Full, 10,000 entries: answer", "ms"),
        Figure("local_list_differential", "SendLocalList Differential, 100 entries: answer", "ms"),
    ]


async def remote_trigger(bench: Bench) -> None:
    rig = bench.main
    assert rig is not None
    cp = rig.charge_point_id
    fig = bench.figs["trigger_to_message"]
    for (message, connector), _ in zip(
        itertools.cycle(TRIGGERS), range(bench.plan.triggers), strict=False
    ):
        payload: dict = {"requestedMessage": message}
        if connector is not None:
            payload["connectorId"] = connector
        t0 = perf()
        answer = await bench.csms.call(cp, "TriggerMessage", payload)
        if answer.get("status") != "Accepted":
            raise RuntimeError(f"TriggerMessage {message} answered {answer}")
        got = await bench.arrivals.wait(message, t0, cp_id=cp)
        fig.add((got.t - t0) * 1000)
    fig.note = f"each of the {len(TRIGGERS)} messages in turn; the answer is sent first"


def _entries(version: int, n: int) -> list[dict]:
    return [
        {
            "idTag": f"V{version:03d}{i:07d}",
            "idTagInfo": {
                "status": "Accepted",
                "expiryDate": "2030-01-01T00:00:00.000Z",
                "parentIdTag": "FLEET-0001",
            },
        }
        for i in range(n)
    ]


async def local_list(bench: Bench) -> None:
    """Full updates of list_size entries, each followed by a 100-entry Differential."""
    size = bench.plan.list_size
    rig = bench.rig("list", "CP-LIST", csms={"max_frame_bytes": 4 * 1024 * 1024})
    await rig.start()
    await bench.registered(rig)
    full, diff = bench.figs["local_list_full"], bench.figs["local_list_differential"]
    version = 0
    for i in range(bench.plan.list_updates):
        version += 1
        ms, res = await bench.call(
            rig,
            "SendLocalList",
            {
                "listVersion": version,
                "updateType": "Full",
                "localAuthorizationList": _entries(i, size),
            },
        )
        if res.get("status") != "Accepted":
            raise RuntimeError(f"SendLocalList Full answered {res}")
        full.add(ms)
        version += 1
        # 50 entries removed (no idTagInfo) and 50 added: the list stays at its maximum.
        changes = [{"idTag": e["idTag"]} for e in _entries(i, 50)] + _entries(900 + i, 50)
        ms, res = await bench.call(
            rig,
            "SendLocalList",
            {
                "listVersion": version,
                "updateType": "Differential",
                "localAuthorizationList": changes,
            },
        )
        if res.get("status") != "Accepted":
            raise RuntimeError(f"SendLocalList Differential answered {res}")
        diff.add(ms)
    _, res = await bench.call(rig, "GetLocalListVersion", {})
    if res.get("listVersion") != version:
        raise RuntimeError(f"GetLocalListVersion answered {res}, expected {version}")
    status = await rig.status()
    full.note = (
        f"{size:,} entries with expiryDate and parentIdTag (a ~1.3 MB frame, [csms] "
        f"max_frame_bytes raised), replacing the previous {size:,}; CALL out -> CALLRESULT "
        f"in, the commit fsynced before the answer; {status['local_list']['entries']:,} entries "
        "at the end"
    )
    diff.note = f"50 entries removed and 50 added on a {size:,}-entry list"
    await rig.stop()
