"""Why a wss:// handshake failed, in words a technician can act on.

A CSMS that only speaks TLS 1.0/1.1 answers our TLS 1.2+ ClientHello by
resetting the connection: Python reports a bare ``ConnectionResetError``,
which reads like a network fault.  When a TLS connect fails that way, one
probe handshake that accepts any version (nothing is sent over it, nothing is
trusted) tells what the server really speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

from websockets.exceptions import InvalidMessage

MIN_TLS = "TLS 1.2"
_OLD_VERSIONS = ("SSLv3", "TLSv1", "TLSv1.1")
_PROTOCOL_REASONS = (
    "UNSUPPORTED_PROTOCOL",
    "WRONG_SSL_VERSION",
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "NO_PROTOCOLS_AVAILABLE",
    "VERSION_TOO_LOW",
)


def is_handshake_failure(exc: BaseException) -> bool:
    """A failure that may come from the TLS layer rather than the network."""
    if isinstance(exc, InvalidMessage) and isinstance(exc.__cause__, EOFError):
        return True  # closed after the TLS handshake, before the HTTP answer
    return isinstance(exc, ssl.SSLError | ConnectionResetError | EOFError) and not isinstance(
        exc, ssl.SSLCertVerificationError
    )


def _too_old_message(where: str, version: str) -> str:
    return (
        f"TLS handshake refused: the CSMS at {where} speaks {version} only; chargerd "
        f"requires {MIN_TLS} or newer (OCPP security profiles 2 and 3). "
        "The CSMS's TLS configuration must be upgraded"
    )


async def probe_version(host: str, port: int, timeout: float = 5.0) -> str | None:
    """The TLS version the server picks when any version is offered; None if no handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(ssl.SSLError, ValueError):
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=ctx)
    except (OSError, TimeoutError, ssl.SSLError, EOFError):
        return None
    try:
        obj = writer.get_extra_info("ssl_object")
        return obj.version() if obj is not None else None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def describe_handshake_failure(url: str, exc: BaseException) -> str:
    """A log line for a failed wss:// connect (probing the server when the error is vague)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or 443
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLError) and any(r in str(exc).upper() for r in _PROTOCOL_REASONS):
        version = await probe_version(host, port)
        return _too_old_message(where, version or "a TLS version below 1.2")
    version = await probe_version(host, port)
    if version in _OLD_VERSIONS:
        return _too_old_message(where, version)
    if isinstance(exc, InvalidMessage):
        return (
            f"the CSMS at {where} closed the connection right after the TLS handshake, before "
            "any HTTP answer: a CSMS that requires a client certificate (security profile 3) "
            "does this when it gets none, or one it does not trust"
        )
    what = type(exc).__name__ + (f": {exc}" if str(exc) else "")
    return f"TLS handshake with {where} failed ({what}); the server closed the connection"
