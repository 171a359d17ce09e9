"""Inbound frame classification, OCPP-J 1.6 section 4 (no network)."""

import pytest
from ocpp.exceptions import OCPPError

from chargerd.link.frames import (
    Ignore,
    InboundCall,
    InboundError,
    InboundResult,
    ReplyError,
    check_call,
    check_outgoing_call,
    check_result,
    parse_frame,
    recover_head,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[2,"a1","Reset",{"type":"Soft"}]', InboundCall("a1", "Reset", {"type": "Soft"})),
        ('[3,"a1",{"status":"Accepted"}]', InboundResult("a1", {"status": "Accepted"})),
        ('[4,"a1","GenericError","oops",{}]', InboundError("a1", "GenericError", "oops", {})),
    ],
)
def test_well_formed_frames(text, expected):
    assert parse_frame(text) == expected


@pytest.mark.parametrize(
    ("text", "unique_id", "code"),
    [
        ("not json", "-1", "FormationViolation"),
        ('[2,"abc","Reset",{"type":', "abc", "FormationViolation"),  # truncated: id recovered
        ('[2, "a\\"b", "Reset", {', 'a"b', "FormationViolation"),  # escaped id recovered
        ('{"a":1}', "-1", "FormationViolation"),
        ('"just a string"', "-1", "FormationViolation"),
        ("[]", "-1", "FormationViolation"),
        ('[2,"abc","Reset"]', "abc", "ProtocolError"),  # incomplete
        ("[2]", "-1", "ProtocolError"),
        ('[2,"abc","Reset",{},{}]', "abc", "FormationViolation"),  # too many elements
        ('[2,17,"Reset",{}]', "-1", "FormationViolation"),  # id not a string
        ('[2,"abc",17,{}]', "abc", "FormationViolation"),  # action not a string
        ('[2,"abc","Reset",[]]', "abc", "FormationViolation"),  # payload not an object
        ('[2,"abc","Reset","x"]', "abc", "FormationViolation"),
    ],
)
def test_malformed_calls_get_a_callerror(text, unique_id, code):
    msg = parse_frame(text)
    assert isinstance(msg, ReplyError)
    assert (msg.unique_id, msg.code) == (unique_id, code)
    assert msg.to_json().startswith(
        f'[4,"{unique_id.replace(chr(34), chr(92) + chr(34))}","{code}"'
    )


@pytest.mark.parametrize(
    "text",
    [
        '[5,"x","Reset",{}]',  # unknown message type id: ignored, says the spec
        '[0,"x"]',
        '["2","x","Reset",{}]',
        '[true,"x","Reset",{}]',
        '[2.5,"x","Reset",{}]',
        '[3,"x"]',  # malformed CALLRESULT
        '[3,"x",{},1]',
        "[3,7,{}]",
        '[3,"x",[]]',
        '[4,"x","GenericError","d"]',  # malformed CALLERROR
        '[4,"x","GenericError","d",[]]',
        '[4,"x",1,"d",{}]',
        '[3,"x",{"status":',  # unreadable response: no CALLERROR for a response
        '[4,"x","Generic',
    ],
)
def test_ignored_frames(text):
    assert isinstance(parse_frame(text), Ignore)


def test_recover_head_reads_only_the_start():
    assert recover_head('[2,"id-1","DataTransfer",{"data":"' + "x" * 10_000) == (2, "id-1")
    assert recover_head('  [ 3 , "r"') == (3, "r")
    assert recover_head("garbage") == (None, None)


async def test_unknown_action_is_not_implemented():
    with pytest.raises(OCPPError) as err:
        await check_call(InboundCall("1", "MakeCoffee", {}), handled={"Reset"})
    assert err.value.code == "NotImplemented"


async def test_known_action_without_handler_is_not_supported():
    with pytest.raises(OCPPError) as err:
        await check_call(InboundCall("1", "ReserveNow", {}), handled={"Reset"})
    assert err.value.code == "NotSupported"


@pytest.mark.parametrize(
    ("action", "payload", "code"),
    [
        ("ChangeConfiguration", {"key": 5, "value": "x"}, "TypeConstraintViolation"),
        ("ChangeConfiguration", {"key": "k"}, "ProtocolError"),  # missing required (ocpp's map)
        ("ChangeConfiguration", {"key": "k", "value": "v", "x": 1}, "FormationViolation"),
        ("ChangeConfiguration", {"key": "k" * 51, "value": "v"}, "TypeConstraintViolation"),
        ("Reset", {"type": "Medium"}, "FormationViolation"),  # enum: ocpp's catch-all, 1.6 name
        ("UnlockConnector", {"connectorId": "1"}, "TypeConstraintViolation"),
    ],
)
async def test_schema_violations_keep_ocpps_mapping_in_16_spelling(action, payload, code):
    with pytest.raises(OCPPError) as err:
        await check_call(InboundCall("1", action, payload), handled={action})
    assert err.value.code == code
    assert set(err.value.details) <= {"cause"}  # JSON-safe: no message object inside


async def test_valid_call_payload_is_returned():
    payload = {"key": "HeartbeatInterval", "value": "30"}
    got = await check_call(
        InboundCall("1", "ChangeConfiguration", payload), handled={"Reset", "ChangeConfiguration"}
    )
    assert got == payload


async def test_result_and_outgoing_checks():
    await check_result("Heartbeat", "1", {"currentTime": "2026-01-01T00:00:00Z"})
    with pytest.raises(OCPPError):
        await check_result("BootNotification", "1", {"status": "Maybe"})
    await check_outgoing_call("Heartbeat", {})
    with pytest.raises(OCPPError):
        await check_outgoing_call("Heartbeat", {"extra": 1})
    with pytest.raises(OCPPError):
        await check_outgoing_call("NoSuchAction", {})
