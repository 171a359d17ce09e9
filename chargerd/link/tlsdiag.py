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
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.exceptions import InvalidMessage, InvalidStatus

MIN_TLS = "TLS 1.2"
_OLD_VERSIONS = ("SSLv3", "TLSv1", "TLSv1.1")
_PROTOCOL_REASONS = (
    "UNSUPPORTED_PROTOCOL",
    "WRONG_SSL_VERSION",
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "NO_PROTOCOLS_AVAILABLE",
    "VERSION_TOO_LOW",
)


#: TLS 1.2 cipher suites of the OCPP 1.6 Security Whitepaper (edition 3), OpenSSL names:
#: TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
#: TLS_RSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_AES_256_GCM_SHA384 (the last two for RSA
#: server certificates).  TLS 1.3 suites are OpenSSL's defaults (all AEAD).
WHITEPAPER_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
)
_CIPHER_REASONS = ("HANDSHAKE_FAILURE", "NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE")


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A failed TLS connect in words (``text``) and as a kind a program acts on."""

    text: str
    kind: str  # tls_version, cipher, client_certificate, tls


def connect_failure_kind(exc: BaseException, diagnosis: Diagnosis | None = None) -> str:
    """Why a connect failed, for the security events: auth (HTTP 401), server_certificate
    (verification or hostname), tls_version, cipher, client_certificate, tls, network."""
    if isinstance(exc, InvalidStatus) and exc.response.status_code == 401:
        return "auth"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "server_certificate"
    if diagnosis is not None:
        return diagnosis.kind
    if isinstance(exc, ssl.SSLError):
        return "tls"
    return "network"


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
    found = await probe(host, port, timeout)
    return found[0] if found is not None else None


async def probe(host: str, port: int, timeout: float = 5.0) -> tuple[str, str] | None:
    """(version, cipher) the server picks when any is offered; None if no handshake."""
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
        if obj is None:
            return None
        cipher = obj.cipher()
        return obj.version() or "?", cipher[0] if cipher else "?"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def describe_handshake_failure(url: str, exc: BaseException) -> str:
    """A log line for a failed wss:// connect (probing the server when the error is vague)."""
    return (await diagnose_handshake_failure(url, exc)).text


async def diagnose_handshake_failure(url: str, exc: BaseException) -> Diagnosis:
    """:func:`describe_handshake_failure` with the kind of failure."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or 443
    where = f"{host}:{port}"
    found = await probe(host, port)
    version, cipher = found if found is not None else (None, None)
    upper = str(exc).upper()
    if isinstance(exc, ssl.SSLError) and any(r in upper for r in _PROTOCOL_REASONS):
        return Diagnosis(
            _too_old_message(where, version or "a TLS version below 1.2"), "tls_version"
        )
    if version in _OLD_VERSIONS:
        return Diagnosis(_too_old_message(where, version), "tls_version")
    if (
        cipher is not None
        and version == "TLSv1.2"
        and cipher not in WHITEPAPER_CIPHERS
        # an alert about ciphers, or the bare reset a server gives a hello it cannot serve
        and (
            any(r in upper for r in _CIPHER_REASONS)
            if isinstance(exc, ssl.SSLError)
            else isinstance(exc, ConnectionResetError | EOFError)
        )
    ):
        return Diagnosis(
            f"TLS handshake refused: the CSMS at {where} chose {cipher} when offered any "
            "cipher suite and offers none of the OCPP security whitepaper's "
            f"({', '.join(WHITEPAPER_CIPHERS)}). The CSMS's TLS configuration must be changed",
            "cipher",
        )
    if (
        isinstance(exc, InvalidMessage)
        or "ALERT_CERTIFICATE" in upper
        or "CERTIFICATE_REQUIRED" in upper
    ):
        return Diagnosis(
            f"the CSMS at {where} closed the connection during or right after the TLS "
            "handshake, before any HTTP answer: a CSMS that requires a client certificate "
            "(security profile 3) does this when it gets none, or one it does not trust "
            "(expired, or signed by another CA)",
            "client_certificate",
        )
    what = type(exc).__name__ + (f": {exc}" if str(exc) else "")
    return Diagnosis(
        f"TLS handshake with {where} failed ({what}); the server closed the connection", "tls"
    )
