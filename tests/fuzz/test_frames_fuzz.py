"""Property-based fuzzing of the OCPP-J frame parser (chargerd.link.frames), no network.

The rules being checked are OCPP-J 1.6 section 4 as a table: what a frame's
shape says it is, and which frames earn a CALLERROR (a broken CALL, with the
CALL's id when it can be read, "-1" otherwise) versus silence (an unknown
message type, a malformed or orphaned response).  Whatever the input, the
parser answers with one of its five outcomes and never raises.
"""

from __future__ import annotations

import asyncio
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocpp.exceptions import OCPPError
from ocpp.v16.enums import Action

from chargerd.link import frames
from chargerd.link.frames import Ignore, InboundCall, InboundError, InboundResult, ReplyError

MANY = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OUTCOMES = (InboundCall, InboundResult, InboundError, ReplyError, Ignore)
REPLY_CODES = {"FormationViolation", "ProtocolError"}
VALIDATION_CODES = {
    "FormationViolation",
    "ProtocolError",
    "TypeConstraintViolation",
    "OccurenceConstraintViolation",
    "PropertyConstraintViolation",
    "NotImplemented",
    "NotSupported",
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=10), inner, max_size=6)
    ),
    max_leaves=12,
)
small_json = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)
ids = st.text(min_size=1, max_size=40)
simple_ids = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=36)


def expected_shape(msg: object) -> type:
    """The outcome OCPP-J 1.6 gives a parsed JSON value, written as the spec's table."""
    if not isinstance(msg, list) or not msg:
        return ReplyError
    t = msg[0]
    if type(t) is not int or t not in (2, 3, 4):
        return Ignore
    if t == 2:
        ok = (
            len(msg) == 4
            and isinstance(msg[1], str)
            and isinstance(msg[2], str)
            and isinstance(msg[3], dict)
        )
        return InboundCall if ok else ReplyError
    if t == 3:
        ok = len(msg) == 3 and isinstance(msg[1], str) and isinstance(msg[2], dict)
        return InboundResult if ok else Ignore
    ok = len(msg) == 5 and all(isinstance(x, str) for x in msg[1:4]) and isinstance(msg[4], dict)
    return InboundError if ok else Ignore


@MANY
@given(text=st.text(max_size=400))
def test_any_text_gets_an_outcome_and_never_raises(text):
    out = frames.parse_frame(text)
    assert isinstance(out, OUTCOMES)
    if isinstance(out, ReplyError):
        assert out.code in REPLY_CODES
        json.loads(out.to_json())


@MANY
@given(msg=json_values, ascii_only=st.booleans())
def test_json_values_are_classified_by_the_spec_table(msg, ascii_only):
    out = frames.parse_frame(json.dumps(msg, ensure_ascii=ascii_only))
    assert type(out) is expected_shape(msg), (msg, out)
    if isinstance(out, ReplyError):
        readable_id = isinstance(msg, list) and len(msg) > 1 and isinstance(msg[1], str)
        assert out.unique_id == (msg[1] if readable_id else "-1")
        assert out.code in REPLY_CODES


@MANY
@given(
    type_id=st.sampled_from([2, 3, 4]),
    rest=st.lists(small_json, max_size=5),
)
def test_frames_that_look_like_messages(type_id, rest):
    """Arrays starting with a real message type: the interesting half of the table."""
    msg = [type_id, *rest]
    out = frames.parse_frame(json.dumps(msg))
    assert type(out) is expected_shape(msg), (msg, out)


@MANY
@given(
    uid=ids,
    action=st.text(max_size=40),
    payload=st.dictionaries(st.text(max_size=12), small_json, max_size=4),
)
def test_a_well_formed_call_round_trips(uid, action, payload):
    out = frames.parse_frame(json.dumps([2, uid, action, payload], ensure_ascii=False))
    assert out == InboundCall(uid, action, payload)


@MANY
@given(uid=ids, code=st.text(max_size=30), description=st.text(max_size=200))
def test_our_callerrors_parse_back(uid, code, description):
    text = frames.callerror_json(uid, code, description, {"cause": description})
    assert frames.parse_frame(text) == InboundError(uid, code, description, {"cause": description})


@MANY
@given(
    uid=simple_ids,
    type_id=st.sampled_from([2, 3, 4]),
    payload=st.dictionaries(st.text(max_size=8), small_json, max_size=4),
    data=st.data(),
)
def test_a_truncated_frame_keeps_its_id_when_the_head_survives(uid, type_id, payload, data):
    text = json.dumps([type_id, uid, "DataTransfer", payload])
    cut = data.draw(st.integers(1, len(text) - 1))
    out = frames.parse_frame(text[:cut])
    head_read = cut >= len(json.dumps([type_id, uid])) - 1
    if type_id in (3, 4) and head_read:
        assert isinstance(out, Ignore)  # no CALLERROR answers a broken response
    else:
        assert isinstance(out, ReplyError) and out.code == "FormationViolation"
        assert out.unique_id == (uid if head_read else "-1")


@SOME
@given(depth=st.integers(1, 200_000), uid=simple_ids, wrap=st.booleans())
def test_any_nesting_depth_is_answered(depth, uid, wrap):
    nested = "[" * depth + "]" * depth
    text = f'[2,"{uid}","DataTransfer",{{"data":{nested}}}]' if wrap else nested
    out = frames.parse_frame(text)
    assert isinstance(out, OUTCOMES)
    if wrap and not isinstance(out, InboundCall):
        assert isinstance(out, ReplyError) and out.unique_id == uid


@MANY
@given(text=st.text(max_size=2000))
def test_recover_head_reads_only_the_first_512_characters(text):
    assert frames.recover_head(text) == frames.recover_head(text[:512])


@SOME
@given(
    action=st.one_of(st.sampled_from(sorted(a.value for a in Action)), st.text(max_size=20)),
    payload=st.dictionaries(st.text(max_size=12), json_values, max_size=4),
)
def test_check_call_raises_only_ocpp_errors_with_16_codes(action, payload):
    call = InboundCall("u1", action, payload)
    handled = {a.value for a in Action}

    async def check() -> None:
        await frames.check_call(call, handled=handled)

    try:
        asyncio.run(check())
    except OCPPError as exc:
        assert exc.code in VALIDATION_CODES
        json.dumps(exc.details)  # details go on the wire: they must be JSON
    except Exception as exc:  # anything else is a bug: the CSMS would get InternalError
        pytest.fail(f"check_call({action!r}, {payload!r}) raised {exc!r}")
