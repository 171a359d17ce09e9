"""Parsing of inbound OCPP-J 1.6 frames, as plain functions.

The ocpp package's ``unpack`` raises on a bad frame and its ChargePoint then
drops it silently; OCPP-J 1.6 (section 4) wants a CALLERROR for a malformed
CALL, so that the CSMS learns why nothing happened, and silence only for
message type ids it does not know.  These functions decide which, and hand
the answer's error code to the link.

The spec's names are used on the wire: "FormationViolation" (OCPP-J 1.6
errata 5.2) where ocpp 2.x says "FormatViolation".
"""

from __future__ import annotations

import json
import re
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from ocpp.exceptions import (
    FormationViolationError,
    FormatViolationError,
    NotImplementedError,
    NotSupportedError,
    OCPPError,
)
from ocpp.messages import Call, CallResult, validate_payload

# ocpp's validate_payload runs every validation in an executor thread.  For our own
# CALLs and for CALLRESULTs, which are small, that hop cost more than the validation
# (on a two-core bench it made each replayed outbox message take ~60 % longer), so
# they are validated inline with ocpp's own validator.  Inbound CALLs, which a CSMS
# may make as large as max_frame_bytes (a 64 kB SendLocalList takes ~50 ms to
# validate), keep the executor so that the event loop is not held that long.
# (_validate_payload is private in ocpp 2.x: the link tests break loudly if it moves.)
from ocpp.messages import _validate_payload as _validate_inline
from ocpp.v16.enums import Action

OCPP_VERSION = "1.6"
CALL, CALLRESULT, CALLERROR = 2, 3, 4
NO_ID = "-1"  # OCPP-J: the unique id to use when the CALL's own id cannot be read

KNOWN_ACTIONS: frozenset[str] = frozenset(a.value for a in Action)

# Reads "[<type>, "<id>"" from the start of a frame that JSON cannot parse
# (truncated, or too large to parse at all).
_LENIENT_HEAD = re.compile(r'^\s*\[\s*(\d{1,3})\s*,\s*"((?:[^"\\]|\\.){1,128})"')


@dataclass(frozen=True, slots=True)
class InboundCall:
    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InboundResult:
    unique_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InboundError:
    unique_id: str
    code: str
    description: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReplyError:
    """A malformed frame that deserves a CALLERROR with this code."""

    unique_id: str
    code: str
    description: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return callerror_json(self.unique_id, self.code, self.description, self.details)


@dataclass(frozen=True, slots=True)
class Ignore:
    """A frame to log and drop (unknown message type, malformed response)."""

    reason: str


Inbound = InboundCall | InboundResult | InboundError | ReplyError | Ignore


def callerror_json(unique_id: str, code: str, description: str, details: dict | None) -> str:
    frame = [CALLERROR, unique_id, code, description, details or {}]
    return json.dumps(frame, separators=(",", ":"))


def recover_head(text: str) -> tuple[int | None, str | None]:
    """Best effort (message type id, unique id) from the start of a broken frame."""
    m = _LENIENT_HEAD.match(text[:512])
    if not m:
        return None, None
    try:
        unique_id = json.loads(f'"{m.group(2)}"')
    except ValueError:
        return int(m.group(1)), None
    return int(m.group(1)), unique_id


def refuse_unreadable(text: str, description: str) -> ReplyError | Ignore:
    """The answer to a frame that cannot be parsed (bad JSON, or too large to try).

    A broken CALLRESULT/CALLERROR is dropped: the spec has no CALLERROR for a response.
    """
    type_id, unique_id = recover_head(text)
    if type_id in (CALLRESULT, CALLERROR):
        return Ignore(f"unreadable response: {description}")
    return ReplyError(unique_id or NO_ID, "FormationViolation", description)


def _is_int(value: Any) -> bool:
    return type(value) is int  # bool is an int subclass; true is no message type


def parse_frame(text: str) -> Inbound:
    """Classify one inbound text frame."""
    try:
        msg = json.loads(text)
    except ValueError:
        return refuse_unreadable(text, "frame is not valid JSON")
    except RecursionError:  # "[[[[..." within the size limit: valid JSON, but no OCPP frame
        return refuse_unreadable(text, "frame is nested too deeply")
    if not isinstance(msg, list):
        return ReplyError(NO_ID, "FormationViolation", "frame is not a JSON array")
    if not msg:
        return ReplyError(NO_ID, "FormationViolation", "frame is an empty array")
    type_id = msg[0]
    if not _is_int(type_id) or type_id not in (CALL, CALLRESULT, CALLERROR):
        return Ignore(f"unknown message type id {type_id!r}")
    if type_id == CALL:
        return _parse_call(msg)
    if type_id == CALLRESULT:
        if len(msg) != 3 or not isinstance(msg[1], str) or not isinstance(msg[2], dict):
            return Ignore("malformed CALLRESULT")
        return InboundResult(msg[1], msg[2])
    if (
        len(msg) != 5
        or not isinstance(msg[1], str)
        or not isinstance(msg[2], str)
        or not isinstance(msg[3], str)
        or not isinstance(msg[4], dict)
    ):
        return Ignore("malformed CALLERROR")
    return InboundError(msg[1], msg[2], msg[3], msg[4])


def _parse_call(msg: list) -> InboundCall | ReplyError:
    unique_id = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else None
    reply_id = unique_id or NO_ID
    if len(msg) < 4:
        # "Payload for Action is incomplete"
        return ReplyError(reply_id, "ProtocolError", f"CALL has {len(msg)} elements, not 4")
    if len(msg) > 4:
        return ReplyError(reply_id, "FormationViolation", f"CALL has {len(msg)} elements, not 4")
    if unique_id is None:
        return ReplyError(NO_ID, "FormationViolation", "CALL unique id is not a string")
    if not isinstance(msg[2], str):
        return ReplyError(reply_id, "FormationViolation", "CALL action is not a string")
    if not isinstance(msg[3], dict):
        return ReplyError(reply_id, "FormationViolation", "CALL payload is not a JSON object")
    return InboundCall(unique_id, msg[2], msg[3])


def _spec_error(exc: OCPPError) -> OCPPError:
    """ocpp's error with 1.6 spelling and JSON-safe details (its own hold the message object)."""
    cause = exc.details.get("cause") if isinstance(exc.details, dict) else None
    # The cause may quote the offending value whole; a CALLERROR need not echo 64 KiB.
    details = {"cause": _clip(str(cause))} if cause else {}
    if isinstance(exc, FormatViolationError):
        return FormationViolationError(description=exc.description, details=details)
    return type(exc)(description=exc.description, details=details)


async def check_call(
    call: InboundCall, *, handled: Container[str], validate: bool = True
) -> dict[str, Any]:
    """Admit a well-formed CALL, or raise the OCPPError its CALLERROR must carry.

    Returns the payload to give the handler: ocpp's validator re-parses the
    decimals of SetChargingProfile and RemoteStartTransaction as Decimal, and
    handlers get them exactly as they would under ocpp's own ChargePoint.
    """
    if call.action not in KNOWN_ACTIONS:
        raise NotImplementedError(
            description="Requested Action is not known by receiver",
            details={"cause": f"{call.action} is not an OCPP 1.6 action"},
        )
    if call.action not in handled:
        raise NotSupportedError(
            description="Requested Action is recognized but not supported by the receiver",
            details={"cause": f"{call.action} is not supported by this charge point"},
        )
    if not validate:
        return call.payload
    message = Call(call.unique_id, call.action, call.payload)
    try:
        await validate_payload(message, OCPP_VERSION)
    except OCPPError as exc:
        raise _spec_error(exc) from exc
    return message.payload


async def check_result(action: str, unique_id: str, payload: dict[str, Any]) -> None:
    """Raise the OCPPError describing how a CALLRESULT payload violates its schema."""
    message = CallResult(unique_id, payload, action=action)
    try:
        _validate_inline(message, OCPP_VERSION)
    except OCPPError as exc:
        raise _spec_error(exc) from exc


async def check_outgoing_call(action: str, payload: dict[str, Any]) -> None:
    """Raise the OCPPError describing how an outgoing CALL violates its schema."""
    if action not in KNOWN_ACTIONS:
        raise NotImplementedError(details={"cause": f"{action} is not an OCPP 1.6 action"})
    try:
        _validate_inline(Call("-", action, payload), OCPP_VERSION)
    except OCPPError as exc:
        raise _spec_error(exc) from exc


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
