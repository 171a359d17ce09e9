"""Property-based fuzzing of the running daemon's OCPP-J side, frame by frame.

One real daemon for the whole module (tests/fuzz/conftest.py); hypothesis
builds frames together with what OCPP-J 1.6 says the station must do with
them, the CSMS sends them raw, and each example checks:

- a CALL gets exactly one answer, with its unique id (or "-1" when the id
  cannot be read): a CALLRESULT that validates against the action's response
  schema, or a CALLERROR with the error code the request deserves -- for a
  payload that breaks the schema, the code of one of its schema violations,
  as found by jsonschema on ocpp's own 1.6 schema files;
- a response to nothing, a malformed response, an unknown message type get
  no answer at all;
- the daemon is still there and still answers a valid GetConfiguration
  (the probe after every example), on the same websocket.

Reset is never sent: it restarts the daemon, by design.
"""

from __future__ import annotations

import functools
import json
import os
import string
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import ocpp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from ocpp.v16.enums import Action

pytestmark = pytest.mark.e2e

CP_ID = "CP-FUZZ"  # the fuzz_station fixture's charge point (tests/fuzz/conftest.py)
SCHEMAS = Path(ocpp.__file__).parent / "v16" / "schemas"
KNOWN = frozenset(a.value for a in Action)
CODES = frozenset(
    {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }
)
#: jsonschema keyword -> the error code ocpp (and so the station) answers it with, 1.6 spelling.
SCHEMA_CODE = {
    "type": "TypeConstraintViolation",
    "maxLength": "TypeConstraintViolation",
    "required": "ProtocolError",
    "additionalProperties": "FormationViolation",
}
#: CHARGERD_FUZZ_SCALE=10 runs ten times the examples, with fresh random seeds each run.
SCALE = float(os.environ.get("CHARGERD_FUZZ_SCALE", "1"))


def examples(n: int) -> settings:
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=SCALE == 1,  # the suite is reproducible; long runs explore
    )


@functools.cache
def validator(name: str) -> Draft4Validator:
    return Draft4Validator(json.loads((SCHEMAS / f"{name}.json").read_text(), parse_float=Decimal))


def schema_codes(action: str, payload: dict) -> frozenset[str]:
    """The codes a payload's schema violations map to; empty when it is valid."""
    payload = json.loads(json.dumps(payload), parse_float=Decimal)
    return frozenset(
        SCHEMA_CODE.get(e.validator, "FormationViolation")
        for e in validator(action).iter_errors(payload)
    )


@dataclass(frozen=True)
class Expect:
    """What the station must send back for one frame."""

    kind: str  # "result", "error" or "none"
    unique_id: str = "-1"
    codes: frozenset[str] = frozenset()
    action: str | None = None
    answers: int = 1  # frames expected for unique_id (a duplicated CALL: 2)


NONE = Expect("none")


# -- the station's capabilities, learned once per module --------------------------------------


@pytest.fixture(scope="module")
def station(fuzz_station):
    """The fuzz station, plus which known actions it handles and its GetConfigurationMaxKeys."""

    async def learn() -> tuple[frozenset[str], int]:
        handled = set()
        for action in sorted(KNOWN - {"Reset"}):
            uid = f"learn-{action}"
            await fuzz_station.csms.send_raw(CP_ID, json.dumps([2, uid, action, {}]))
            frame = await fuzz_station.csms.recv_raw_response(CP_ID, uid)
            if not (frame[0] == 4 and frame[2] in ("NotSupported", "NotImplemented")):
                handled.add(action)
        handled.add("Reset")
        result = await fuzz_station.csms.call(
            CP_ID, "GetConfiguration", {"key": ["GetConfigurationMaxKeys"]}
        )
        return frozenset(handled), int(result["configurationKey"][0]["value"])

    fuzz_station.handled, fuzz_station.max_keys = fuzz_station.run(learn())
    fuzz_station.rss_start = fuzz_station.rss_kib()
    fuzz_station.connections_start = fuzz_station.csms.connections(CP_ID)
    fuzz_station.examples = 0
    return fuzz_station


def exchange(station, text: str, expect: Expect, *, copies: int = 1) -> None:
    """Send a frame (``copies`` times); check the answers or their absence; probe the station."""
    station.examples += 1
    uid = expect.unique_id
    before = station.answers[uid]

    async def go() -> list[list]:
        for _ in range(copies):
            await station.csms.send_raw(CP_ID, text)
        got = []
        if expect.kind != "none":
            for _ in range(expect.answers):
                got.append(await station.csms.recv_raw_response(CP_ID, uid, timeout=5))
        probe = f"probe-{station.examples}"
        await station.csms.send_raw(
            CP_ID, json.dumps([2, probe, "GetConfiguration", {"key": ["HeartbeatInterval"]}])
        )
        answer = await station.csms.recv_raw_response(CP_ID, probe, timeout=5)
        assert answer[0] == 3, f"probe after {text[:200]!r} answered {answer}"
        return got

    got = station.run(go())
    assert station.rig.running, f"daemon died on {text[:300]!r}:\n{station.rig.tail_log()}"
    assert station.csms.connections(CP_ID) == station.connections_start, "the link was re-opened"
    assert station.answers[uid] - before == (0 if expect.kind == "none" else expect.answers), (
        f"{text[:300]!r}: expected {expect}, got {station.answers[uid] - before} answer(s)"
    )
    for frame in got:
        check_answer(text, frame, expect, station)


def check_answer(text: str, frame: list, expect: Expect, station) -> None:
    where = f"frame {text[:300]!r} answered {json.dumps(frame)[:400]}"
    if frame[0] == 4:
        assert len(frame) == 5, where
        _, _, code, description, details = frame
        assert code in CODES and isinstance(description, str), where
        assert isinstance(details, dict), where
        assert code != "InternalError", f"the daemon failed internally: {where}"
    if expect.kind == "error":
        assert frame[0] == 4 and frame[2] in expect.codes, f"expected {set(expect.codes)}: {where}"
        return
    if expect.action == "GetConfiguration" and frame[0] == 4:
        # More keys than GetConfigurationMaxKeys is refused as a whole, never truncated.
        assert frame[2] == "OccurenceConstraintViolation", where
        assert len(json.loads(text)[3].get("key", [])) > station.max_keys, where
        return
    assert frame[0] == 3, f"expected a CALLRESULT: {where}"
    assert not list(validator(f"{expect.action}Response").iter_errors(frame[2])), where


# -- strategies ---------------------------------------------------------------------------------

ids = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=36)
unicode_text = st.text(max_size=60)
big_ints = st.one_of(st.integers(-3, 5), st.integers(-(2**70), 2**70))
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), big_ints, st.floats(allow_nan=False), unicode_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(unicode_text, inner, max_size=4)
    ),
    max_leaves=8,
)
CONFIG_KEYS = (
    "HeartbeatInterval",
    "ConnectionTimeOut",
    "MeterValuesSampledData",
    "LocalPreAuthorize",
    "NumberOfConnectors",
    "GetConfigurationMaxKeys",
    "AuthorizationCacheEnabled",
    "ClockAlignedDataInterval",
)


def _optional(d: dict, draw, key: str, strategy) -> None:
    if draw(st.booleans()):
        d[key] = draw(strategy)


@st.composite
def valid_payload(draw, action: str) -> dict:
    """A payload of ``action`` that its 1.6 schema accepts."""
    p: dict[str, Any] = {}
    if action == "ChangeAvailability":
        p = {
            "connectorId": draw(big_ints),
            "type": draw(st.sampled_from(["Inoperative", "Operative"])),
        }
    elif action == "ChangeConfiguration":
        key = draw(st.one_of(st.sampled_from(CONFIG_KEYS), st.text(max_size=50)))
        value = draw(st.one_of(st.integers(-10, 10**6).map(str), st.text(max_size=80)))
        p = {"key": key, "value": value}
    elif action == "DataTransfer":
        p = {"vendorId": draw(st.text(max_size=255))}
        _optional(p, draw, "messageId", st.text(max_size=50))
        _optional(p, draw, "data", st.text(max_size=300))
    elif action == "GetConfiguration":
        _optional(
            p,
            draw,
            "key",
            st.lists(st.one_of(st.sampled_from(CONFIG_KEYS), st.text(max_size=50)), max_size=120),
        )
    elif action == "RemoteStartTransaction":
        p = {"idTag": draw(st.text(string.hexdigits, min_size=1, max_size=20))}
        _optional(p, draw, "connectorId", big_ints)
    elif action == "RemoteStopTransaction":
        p = {"transactionId": draw(big_ints)}
    elif action == "UnlockConnector":
        p = {"connectorId": draw(big_ints)}
    return p


SAFE_ACTIONS = (
    "ChangeAvailability",
    "ChangeConfiguration",
    "ClearCache",
    "DataTransfer",
    "GetConfiguration",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "UnlockConnector",
)


@st.composite
def mutated(draw, payload: dict) -> dict:
    """A payload with one to three random changes: drop, retype, add, lengthen."""
    p = json.loads(json.dumps(payload))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["drop", "retype", "add", "long"]))
        keys = list(p)
        if how == "drop" and keys:
            del p[draw(st.sampled_from(keys))]
        elif how == "retype" and keys:
            p[draw(st.sampled_from(keys))] = draw(junk)
        elif how == "long" and keys:
            p[draw(st.sampled_from(keys))] = "x" * draw(st.sampled_from([21, 51, 256, 501, 5000]))
        else:
            p[draw(st.text(min_size=1, max_size=12))] = draw(junk)
    return p


def call_expect(station, uid: str, action: str, payload: dict) -> Expect:
    """OCPP-J 1.6's answer to a well-formed CALL."""
    if action not in KNOWN:
        return Expect("error", uid, frozenset({"NotImplemented"}))
    if action not in station.handled:
        return Expect("error", uid, frozenset({"NotSupported"}))
    codes = schema_codes(action, payload)
    if codes:
        return Expect("error", uid, codes)
    return Expect("result", uid, action=action)


# -- the properties ----------------------------------------------------------------------------


@examples(1200)
@given(data=st.data())
def test_valid_and_mutated_calls_get_one_right_answer(station, data):
    action = data.draw(st.sampled_from(SAFE_ACTIONS))
    payload = data.draw(valid_payload(action))
    if data.draw(st.booleans()):
        payload = data.draw(mutated(payload))
    uid = data.draw(ids)
    exchange(
        station, json.dumps([2, uid, action, payload]), call_expect(station, uid, action, payload)
    )


@examples(400)
@given(
    uid=ids,
    action=st.one_of(st.text(max_size=40), st.sampled_from(sorted(KNOWN - {"Reset"}))),
    payload=st.dictionaries(st.text(max_size=10), junk, max_size=3),
)
def test_unknown_and_unsupported_actions(station, uid, action, payload):
    exchange(
        station, json.dumps([2, uid, action, payload]), call_expect(station, uid, action, payload)
    )


# -- frames that are not CALLs, or not even JSON -------------------------------------------------


@st.composite
def broken_frames(draw) -> tuple[str, Expect]:
    """Frames that are no well-formed CALL, with the answer OCPP-J 1.6 (section 4) gives them."""
    uid = draw(ids)
    kind = draw(
        st.sampled_from(
            [
                "garbage",
                "not_array",
                "empty",
                "bad_type",
                "short_call",
                "long_call",
                "bad_id",
                "bad_action",
                "bad_payload",
                "truncated_call",
                "truncated_response",
                "bad_response",
            ]
        )
    )
    formation = frozenset({"FormationViolation"})
    if kind == "garbage":  # not JSON at all, nothing to read an id from
        text = draw(st.text(min_size=1).filter(lambda t: not t.lstrip().startswith("[")))
        return text, Expect("error", "-1", formation)
    if kind == "not_array":
        value = draw(junk.filter(lambda v: not isinstance(v, list)))
        return json.dumps(value), Expect("error", "-1", formation)
    if kind == "empty":
        return "[]", Expect("error", "-1", formation)
    if kind == "bad_type":  # an unknown message type id is ignored, not answered
        type_id = draw(
            st.one_of(
                st.integers().filter(lambda i: i not in (2, 3, 4)),
                st.booleans(),
                st.floats(allow_nan=False),
                st.text(max_size=3),
                st.none(),
            )
        )
        rest = draw(st.lists(junk, max_size=4))
        return json.dumps([type_id, *rest]), NONE
    payload = draw(valid_payload("GetConfiguration"))
    if kind == "short_call":  # "Payload for Action is incomplete"
        frame = [2, uid, "GetConfiguration", payload][: draw(st.integers(1, 3))]
        return json.dumps(frame), Expect(
            "error", uid if len(frame) > 1 else "-1", frozenset({"ProtocolError"})
        )
    if kind == "long_call":
        extra = draw(st.lists(junk, min_size=1, max_size=3))
        return json.dumps([2, uid, "GetConfiguration", payload, *extra]), Expect(
            "error", uid, formation
        )
    if kind == "bad_id":
        bad = draw(junk.filter(lambda v: not isinstance(v, str)))
        return json.dumps([2, bad, "GetConfiguration", payload]), Expect("error", "-1", formation)
    if kind == "bad_action":
        bad = draw(junk.filter(lambda v: not isinstance(v, str)))
        return json.dumps([2, uid, bad, payload]), Expect("error", uid, formation)
    if kind == "bad_payload":
        bad = draw(junk.filter(lambda v: not isinstance(v, dict)))
        return json.dumps([2, uid, "GetConfiguration", bad]), Expect("error", uid, formation)
    if kind == "truncated_call":
        text = json.dumps([2, uid, "GetConfiguration", payload])
        cut = draw(st.integers(1, len(text) - 1))
        head = len(json.dumps([2, uid])) - 1  # '[2, "uid"' read leniently gives the id back
        return text[:cut], Expect("error", uid if cut >= head else "-1", formation)
    if kind == "truncated_response":
        text = json.dumps([draw(st.sampled_from([3, 4])), uid, {"currentTime": "x"}])
        cut = draw(st.integers(len(json.dumps([3, uid])) - 1, len(text) - 1))
        return text[:cut], NONE  # a broken response is dropped: there is no CALLERROR for it
    # bad_response: malformed CALLRESULT/CALLERROR shapes are dropped too
    frame = draw(
        st.sampled_from(
            [
                [3, uid],
                [3, uid, []],
                [3, 7, {}],
                [4, uid, "GenericError"],
                [4, uid, 1, "d", {}],
                [3, uid, {}, "extra"],
            ]
        )
    )
    return json.dumps(frame), NONE


@examples(1200)
@given(case=broken_frames())
def test_broken_frames_get_the_spec_answer_or_none(station, case):
    text, expect = case
    exchange(station, text, expect)


@examples(400)
@given(
    uid=ids,
    type_id=st.sampled_from([3, 4]),
    payload=st.dictionaries(st.text(max_size=10), junk, max_size=3),
    reuse=st.booleans(),
)
def test_responses_to_nothing_are_ignored(station, uid, type_id, payload, reuse):
    """CALLRESULTs/CALLERRORs for ids never sent, or for CALLs answered long ago."""
    if reuse:
        old = [r.unique_id for r in station.csms.received if r.cp_id == CP_ID]
        uid = old[len(uid) % len(old)]
    frame = [3, uid, payload] if type_id == 3 else [4, uid, "GenericError", "late", payload]
    exchange(station, json.dumps(frame), NONE)


@examples(150)
@given(uid=ids, data=st.data())
def test_a_duplicated_call_is_answered_twice(station, uid, data):
    """Two CALLs with one id: each still gets its answer (the CSMS broke the rule, not us)."""
    action = data.draw(st.sampled_from(["GetConfiguration", "DataTransfer", "ClearCache"]))
    payload = data.draw(valid_payload(action))
    text = json.dumps([2, uid, action, payload])
    exchange(station, text, Expect("result", uid, action=action, answers=2), copies=2)


# -- size limits and memory ------------------------------------------------------------------


def test_frames_above_the_limit_are_refused_and_below_it_served(station):
    limit = 65536  # [csms] max_frame_bytes of the fuzz rig (tests/fuzz/conftest.py)
    just_below = json.dumps([2, "big-ok", "DataTransfer", {"vendorId": "v", "data": ""}])
    fill = limit - len(just_below) - 10
    ok = json.dumps([2, "big-ok", "DataTransfer", {"vendorId": "v", "data": "a" * fill}])
    exchange(station, ok, Expect("result", "big-ok", action="DataTransfer"))
    too_big = json.dumps([2, "big-no", "DataTransfer", {"vendorId": "v", "data": "a" * limit}])
    exchange(station, too_big, Expect("error", "big-no", frozenset({"FormationViolation"})))
    broken = '[2,"big-broken","DataTransfer",{"data":"' + "b" * (2 * limit)
    exchange(station, broken, Expect("error", "big-broken", frozenset({"FormationViolation"})))


@pytest.mark.parametrize("depth", [100, 900, 960, 990, 999, 1_000, 1_100, 5_000, 30_000])
@pytest.mark.parametrize(
    ("action", "field"),
    [
        ("DataTransfer", "data"),
        ("RemoteStartTransaction", "chargingProfile"),
        ("GetConfiguration", "key"),
    ],
)
def test_deeply_nested_json_is_answered(station, depth, action, field):
    """JSON nested past the parser's recursion limit still gets its CALLERROR, never silence."""
    nested = "[" * depth + "]" * depth
    uid = f"deep-{action}-{depth}"
    call = f'[2,"{uid}","{action}",{{"idTag":"AB","vendorId":"v","{field}":{nested}}}]'
    codes = frozenset({"FormationViolation", "TypeConstraintViolation"})
    exchange(station, call, Expect("error", uid, codes))


def test_a_bare_deep_array_is_refused_or_ignored(station):
    # Parseable, it is an array whose message type is a list: ignored.  Too deep to parse,
    # it is unreadable: FormationViolation with the id "-1".
    exchange(station, "[" * 500 + "]" * 500, NONE)
    exchange(
        station,
        "[" * 30_000 + "]" * 30_000,
        Expect("error", "-1", frozenset({"FormationViolation"})),
    )


def test_zy_a_frame_past_the_hard_ceiling_costs_only_the_connection(station):
    """Beyond 4x max_frame_bytes websockets itself refuses to read (close 1009): the
    station reconnects, and the CSMS gets its answers again on the new connection."""
    huge = json.dumps([2, "huge", "DataTransfer", {"vendorId": "v", "data": "h" * 300_000}])
    before = station.csms.connections(CP_ID)

    async def go() -> None:
        await station.csms.send_raw(CP_ID, huge)
        await station.csms.wait_connected(CP_ID, timeout=15, count=before + 1)

    station.run(go())
    assert station.rig.running
    station.connections_start = station.csms.connections(CP_ID)
    exchange(station, json.dumps([2, "after-huge", "ClearCache", {}]),
             Expect("result", "after-huge", action="ClearCache"))  # fmt: skip


def test_zz_memory_stays_bounded(station):
    """Runs last in the module when run alone; fills the frame log itself in any case.

    The daemon keeps the last 2000 frames in its frame log (bounded by design) and
    nothing else per frame.  By now the examples above have filled that log, so
    from here on RSS should stay flat: 3000 more frames of about 1 KiB each (valid
    CALLs, broken ones, orphaned responses, 4 frames per round trip in the log) may
    move it by allocator noise, while keeping even a third of them would add
    1 MiB.  Over the whole module the growth is bounded by the log itself
    (2000 frames of at most 64 KiB: the big-frame test sent a few), with slack.
    """
    # Under xdist this may run on a worker where few examples ran before it: the first
    # 1000 rounds below fill the frame log by themselves (4 frames a round trip).
    filler = "x" * 1000
    kinds = [
        json.dumps([2, "m-{}", "DataTransfer", {"vendorId": "v", "data": filler}]),
        "not json " + filler,
        json.dumps([3, "m-{}", {"x": filler}]),
        json.dumps([2, "m-{}", "GetConfiguration", {"key": [filler[:50]] * 18}]),
    ]

    async def burst(start: int, n: int) -> None:
        for i in range(start, start + n):
            await station.csms.send_raw(CP_ID, kinds[i % len(kinds)].replace("{}", str(i)))
        await station.csms.send_raw(CP_ID, json.dumps([2, f"burst-{start}", "ClearCache", {}]))
        await station.csms.recv_raw_response(CP_ID, f"burst-{start}", timeout=10)

    def rounds(count: int) -> None:
        for start in range(0, count, 40):
            station.run(burst(start, 40))

    rounds(1000)  # the log is now full of frames of this size
    time.sleep(0.3)
    settled = station.rss_kib()
    rounds(3000)
    time.sleep(0.3)
    end = station.rss_kib()
    print(f"{station.examples} examples; daemon RSS {station.rss_start} -> {settled} -> {end} KiB")
    assert station.rig.running
    assert end - settled < 1024, f"RSS grew {end - settled} KiB over 3000 frames in steady state"
    assert end - station.rss_start < 2000 * 64 + 16 * 1024, "RSS beyond the frame log's bound"
