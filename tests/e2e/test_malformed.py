"""Malformed frames from the CSMS, through the real daemon's websocket.

OCPP-J 1.6 §4: a CALL that cannot be understood gets a CALLERROR saying why
(with its unique id, or "-1" when that cannot be read); a message type id the
station does not know is ignored.  Whatever arrives, the daemon keeps running,
keeps its connection and answers the next valid CALL.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e

CP = "CP-TEST"

# (what, raw frame, unique id the CALLERROR must carry, error code)
REFUSED = [
    ("not JSON", "this is not json", "-1", "FormationViolation"),
    ("truncated JSON", '[2, "trunc-1", "Heartbeat", {', "trunc-1", "FormationViolation"),
    ("not an array", '{"not": "an array"}', "-1", "FormationViolation"),
    ("empty array", "[]", "-1", "FormationViolation"),
    ("unique id not a string", '[2, 42, "GetConfiguration", {}]', "-1", "FormationViolation"),
    ("CALL without payload", '[2, "short-1", "GetConfiguration"]', "short-1", "ProtocolError"),
    (
        "CALL with a fifth element",
        '[2, "long-1", "GetConfiguration", {}, {}]',
        "long-1",
        "FormationViolation",
    ),
    ("action not a string", '[2, "act-1", 17, {}]', "act-1", "FormationViolation"),
    ("payload not an object", '[2, "pl-1", "GetConfiguration", []]', "pl-1", "FormationViolation"),
    ("unknown action", '[2, "unk-1", "FlyToTheMoon", {}]', "unk-1", "NotImplemented"),
    (
        "wrong type in a field",
        '[2, "type-1", "ChangeConfiguration", {"key": 5, "value": "x"}]',
        "type-1",
        "TypeConstraintViolation",
    ),
    (
        "missing required field",  # ocpp maps a missing "required" property to ProtocolError
        '[2, "req-1", "ChangeConfiguration", {"key": "HeartbeatInterval"}]',
        "req-1",
        "ProtocolError",
    ),
    (
        "value outside its enumeration",
        '[2, "enum-1", "ChangeAvailability", {"connectorId": 1, "type": "Sideways"}]',
        "enum-1",
        "FormationViolation",
    ),
    (
        "unknown field",
        '[2, "extra-1", "GetConfiguration", {"key": [], "colour": "blue"}]',
        "extra-1",
        "FormationViolation",
    ),
    (
        "string too long",
        '[2, "len-1", "ChangeConfiguration", {"key": "' + "K" * 51 + '", "value": "1"}]',
        "len-1",
        "TypeConstraintViolation",
    ),
]

IGNORED = [
    ("unknown message type id", '[7, "mt-7", "Reset", {"type": "Hard"}]', "mt-7"),
    ("boolean message type id", '[true, "mt-b", "Reset", {"type": "Hard"}]', "mt-b"),
    ("CALLRESULT for nothing pending", '[3, "nobody-1", {}]', "nobody-1"),
    ("CALLERROR for nothing pending", '[4, "nobody-2", "InternalError", "", {}]', "nobody-2"),
]

# A Feature Profile the station may not support, and one of its actions.
PROFILE_ACTIONS = {
    "Reservation": "ReserveNow",
    "SmartCharging": "GetCompositeSchedule",
    "FirmwareManagement": "GetDiagnostics",
    "LocalAuthListManagement": "SendLocalList",
    "RemoteTrigger": "TriggerMessage",
}


async def expect_callerror(csms, raw: str, unique_id: str, code: str, what: str) -> None:
    await csms.send_raw(CP, raw)
    frame = await csms.recv_raw_response(CP, unique_id, timeout=3)
    assert frame[0] == 4, f"{what}: {frame}"
    assert (frame[1], frame[2]) == (unique_id, code), f"{what}: {frame}"
    assert isinstance(frame[3], str) and isinstance(frame[4], dict), f"{what}: {frame}"


async def still_answers(csms) -> None:
    reply = await csms.call(CP, "GetConfiguration", {"key": ["HeartbeatInterval"]}, timeout=3)
    assert [k["key"] for k in reply["configurationKey"]] == ["HeartbeatInterval"]


async def test_every_malformed_frame_is_answered_as_ocpp_j_says_and_the_daemon_carries_on(
    rig, csms
):
    for what, raw, unique_id, code in REFUSED:
        await expect_callerror(csms, raw, unique_id, code, what)
    for what, raw, unique_id in IGNORED:
        await csms.send_raw(CP, raw)
        with pytest.raises(TimeoutError):
            frame = await csms.recv_raw_response(CP, unique_id, timeout=0.3)
            pytest.fail(f"{what}: answered {frame}")
        await still_answers(csms)  # ignored, and the next valid CALL is answered

    # A known action of a Feature Profile the station does not declare: NotSupported.
    reply = await csms.call(CP, "GetConfiguration", {"key": ["SupportedFeatureProfiles"]})
    (entry,) = reply["configurationKey"]
    supported = set(entry["value"].split(","))
    missing = [a for p, a in PROFILE_ACTIONS.items() if p not in supported]
    for action in missing:
        await expect_callerror(
            csms,
            json.dumps([2, f"ns-{action}", action, {}]),
            f"ns-{action}",
            "NotSupported",
            action,
        )

    assert rig.running
    await still_answers(csms)
    assert csms.connections(CP) == 1  # none of it cost the connection
    assert (await rig.status())["ocpp"]["connected"] is True


#: [csms] max_frame_bytes of the size-limit tests (the default, 2 MiB, admits a whole
#: 10,000-entry SendLocalList; 64 KiB keeps these frames small).
LIMIT = 65536


async def test_a_frame_above_the_size_limit_is_refused_without_parsing(make_registered_rig, csms):
    rig = await make_registered_rig(csms={"max_frame_bytes": LIMIT})
    big = json.dumps([2, "big-1", "DataTransfer", {"vendorId": "x", "data": "A" * (LIMIT + 4464)}])
    await expect_callerror(csms, big, "big-1", "FormationViolation", "oversized frame")
    assert rig.running
    await still_answers(csms)
    assert csms.connections(CP) == 1


async def test_a_frame_far_above_the_limit_costs_the_connection_not_the_daemon(
    make_registered_rig, csms
):
    """Beyond what the websocket layer buffers, the frame closes the connection (1009)."""
    rig = await make_registered_rig(csms={"max_frame_bytes": LIMIT})
    huge = json.dumps([2, "huge-1", "DataTransfer", {"vendorId": "x", "data": "A" * 300_000}])
    await csms.send_raw(CP, huge)
    await csms.wait_connected(CP, count=2, timeout=10)
    assert rig.running
    await still_answers(csms)
