"""Remote Trigger end to end: every TriggerMessage over a real websocket, the answer on
the wire before the message it asks for."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e

CP = "CP-TEST"


def station_frames(csms) -> list[list]:
    """What the station sent, in order (CALLs and CALLRESULTs alike)."""
    return [json.loads(f.frame) for f in csms.frames if f.cp_id == CP and f.direction == "in"]


async def trigger(csms, message: str, connector: int | None = None) -> tuple[str, int]:
    """The answer, and how many frames the station had sent before it answered."""
    payload = {"requestedMessage": message}
    if connector is not None:
        payload["connectorId"] = connector
    answer = await csms.call(CP, "TriggerMessage", payload)
    frames = station_frames(csms)
    answered_at = max(i for i, f in enumerate(frames) if f[0] == 3 and f[2] == answer)
    return answer["status"], answered_at


@pytest.mark.parametrize(
    "message, connector, action, match",
    [
        ("BootNotification", None, "BootNotification", {}),
        (
            "DiagnosticsStatusNotification",
            None,
            "DiagnosticsStatusNotification",
            {"status": "Idle"},
        ),
        ("FirmwareStatusNotification", None, "FirmwareStatusNotification", {"status": "Idle"}),
        ("Heartbeat", None, "Heartbeat", {}),
        ("MeterValues", 2, "MeterValues", {"connectorId": 2}),
        ("MeterValues", None, "MeterValues", {"connectorId": 1}),
        ("StatusNotification", 1, "StatusNotification", {"connectorId": 1}),
        ("StatusNotification", None, "StatusNotification", {"connectorId": 0}),
    ],
)
async def test_every_trigger(csms, make_registered_rig, message, connector, action, match):
    await make_registered_rig(connectors=2)
    if message == "StatusNotification":
        # The boot's own statuses first, so that one is not taken for the triggered one
        # (the outbox's SecurityEventNotification may delay them past registration).
        for cid in (0, 1, 2):
            await csms.wait_for(
                "StatusNotification", lambda r, c=cid: r.payload["connectorId"] == c
            )
    before = len(csms.calls(action, CP, **match))
    status, answered_at = await trigger(csms, message, connector)
    assert status == "Accepted"
    got = await csms.wait_for(
        action,
        lambda r: r.cp_id == CP and all(r.payload.get(k) == v for k, v in match.items()),
        count=before + 1,
    )
    frames = station_frames(csms)
    sent_at = max(i for i, f in enumerate(frames) if f[0] == 2 and f[1] == got[-1].unique_id)
    assert sent_at > answered_at  # the answer first, then the message
    if message == "StatusNotification" and connector is None:
        await csms.wait_for("StatusNotification", lambda r: r.payload["connectorId"] == 2)


async def test_unknown_connector_is_rejected(csms, make_registered_rig):
    await make_registered_rig(connectors=2)
    assert (await trigger(csms, "StatusNotification", 3))[0] == "Rejected"
    assert (await trigger(csms, "MeterValues", 7))[0] == "Rejected"
    assert (
        "RemoteTrigger"
        in (await csms.call(CP, "GetConfiguration", {"key": ["SupportedFeatureProfiles"]}))[
            "configurationKey"
        ][0]["value"]
    )
