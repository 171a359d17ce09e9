"""Errors of the OCPP link.

Each also inherits the built-in type a caller would naturally catch, so that a
feature can write ``except ConnectionError`` or ``except TimeoutError`` without
importing this module.
"""

from __future__ import annotations

from typing import Any


class LinkError(Exception):
    """Base of every error raised by the link."""


class NotConnected(LinkError, ConnectionError):
    """No websocket to the CSMS right now, or it dropped while a CALL was waiting."""


class CallTimeout(LinkError, TimeoutError):
    """The CSMS did not answer a CALL in time (asyncio.TimeoutError is TimeoutError)."""


class CallErrorReceived(LinkError):
    """The CSMS answered a CALL with a CALLERROR."""

    def __init__(self, code: str, description: str, details: dict[str, Any]) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details


class CallResultInvalid(LinkError, ValueError):
    """The CSMS answered with a CALLRESULT that violates the OCPP 1.6 schema."""

    def __init__(self, action: str, code: str, cause: str, payload: dict[str, Any]) -> None:
        super().__init__(f"invalid {action} CALLRESULT ({code}): {cause}")
        self.action = action
        self.code = code
        self.cause = cause
        self.payload = payload
