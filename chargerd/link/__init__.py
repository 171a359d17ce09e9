"""The OCPP-J 1.6 link to the CSMS: websocket, reconnect, routing, frame log.

Feature-agnostic: features register handlers and listeners and call ``Link.call``.
"""

from chargerd.link.backoff import reconnect_delay
from chargerd.link.connection import Link
from chargerd.link.errors import (
    CallErrorReceived,
    CallResultInvalid,
    CallTimeout,
    LinkError,
    NotConnected,
)
from chargerd.link.framelog import FrameLog

__all__ = [
    "CallErrorReceived",
    "CallResultInvalid",
    "CallTimeout",
    "FrameLog",
    "Link",
    "LinkError",
    "NotConnected",
    "reconnect_delay",
]
