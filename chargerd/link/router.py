"""Routing of CSMS requests to the feature objects' handlers.

Feature modules declare their handlers with ocpp's own ``@on(Action.X)`` and
``@after(Action.X)`` decorators, exactly as they would on an ocpp
ChargePoint; the link just merges the route maps of several objects, since
here one object per feature area answers the CSMS, not one god object.

Unlike ocpp's ChargePoint, a handler's failure always becomes a CALLERROR
(InternalError unless it raised an OCPPError) and a result that violates the
schema is our bug, answered as InternalError, never blamed on the CSMS.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, is_dataclass
from typing import Any

from ocpp.charge_point import (
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.exceptions import InternalError, OCPPError
from ocpp.messages import CallResult
from ocpp.routing import create_route_map

from chargerd.link.frames import InboundCall, callerror_json, check_call, check_result

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """The frame answering a CALL, and the @after hook to start once it is sent."""

    frame: str
    after: Callable[[], Awaitable[Any] | Any] | None = None


def _call_handler(handler: Callable[..., Any], kwargs: dict[str, Any], unique_id: str) -> Any:
    # Like ocpp: the unique id only for handlers that ask for it.
    if "call_unique_id" in inspect.signature(handler).parameters:
        return handler(**kwargs, call_unique_id=unique_id)
    return handler(**kwargs)


@functools.lru_cache(maxsize=1024)
def _snake_key(key: str) -> str:
    return next(iter(camel_to_snake_case({key: None})))


def snake_case(data: Any) -> Any:
    """ocpp's camel_to_snake_case with each key converted once: OCPP has few distinct keys,
    and a 10,000-entry SendLocalList spent 180 ms in the regular expressions."""
    if isinstance(data, dict):
        return {_snake_key(k): snake_case(v) for k, v in data.items()}
    if isinstance(data, list):
        return [snake_case(v) for v in data]
    return data


def _result_payload(response: Any) -> dict[str, Any]:
    if is_dataclass(response) and not isinstance(response, type):
        return snake_to_camel_case(remove_nones(serialize_as_dict(response)))
    if isinstance(response, dict):  # a snake_case dict is accepted too
        return snake_to_camel_case(remove_nones(response))
    raise TypeError(f"handler returned {type(response).__name__}, not a call_result dataclass")


class Router:
    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Any]] = {}

    def register(self, obj: object) -> None:
        """Add the @on/@after handlers of ``obj``; two @on for one action is a wiring bug."""
        for action, entry in create_route_map(obj).items():
            mine = self._routes.setdefault(str(action), {})
            for key in ("_on_action", "_after_action"):
                if key in entry and key in mine:
                    raise ValueError(f"two {key[1:]} handlers registered for {action}")
            mine.update(entry)

    @property
    def handled(self) -> frozenset[str]:
        """The actions this charge point answers (an @on handler is registered)."""
        return frozenset(a for a, e in self._routes.items() if "_on_action" in e)

    async def answer(self, call: InboundCall) -> Answer:
        """Run the handler of a well-formed CALL; never raises (bar cancellation)."""
        routes = self._routes.get(call.action, {})
        validate = not routes.get("_skip_schema_validation", False)
        try:
            payload = await check_call(call, handled=self.handled, validate=validate)
        except OCPPError as exc:
            log.warning("refusing %s %s: %s %s", call.action, call.unique_id, exc.code, exc.details)
            return Answer(callerror_json(call.unique_id, exc.code, exc.description, exc.details))

        kwargs = snake_case(payload)
        try:
            response = _call_handler(routes["_on_action"], kwargs, call.unique_id)
            if inspect.isawaitable(response):
                response = await response
            result = _result_payload(response)
        except OCPPError as exc:
            log.info("%s %s answered %s: %s", call.action, call.unique_id, exc.code, exc)
            return Answer(callerror_json(call.unique_id, exc.code, exc.description, exc.details))
        except Exception:
            log.exception("handler for %s %s failed", call.action, call.unique_id)
            return Answer(self._internal_error(call, "handler failed"))

        if validate:
            try:
                await check_result(call.action, call.unique_id, result)
            except OCPPError as exc:
                log.error(
                    "our %s result violates the schema (%s): %s", call.action, exc.code, result
                )
                return Answer(self._internal_error(call, "invalid result"))

        after = None
        if "_after_action" in routes:
            hook = routes["_after_action"]

            def after() -> Awaitable[Any] | Any:
                return _call_handler(hook, kwargs, call.unique_id)

        return Answer(CallResult(call.unique_id, result).to_json(), after)

    @staticmethod
    def _internal_error(call: InboundCall, cause: str) -> str:
        err = InternalError()
        return callerror_json(call.unique_id, err.code, err.description, {"cause": cause})
