"""Security profiles 1-3 on the link (OCPP 1.6 Security Whitepaper, edition 3).

Owns the two configuration keys of the link's security, how the station
presents itself to the CSMS and which CSMS it trusts:

- ``SecurityProfile`` (readable; only ever raised): 1 HTTP Basic over ws://,
  2 TLS with Basic, 3 TLS with the station's client certificate (0: plain ws://,
  no authentication, outside the whitepaper).  A raise is checked first (key,
  CSMS root, station certificate present), answered Accepted, then the link
  reconnects with the new profile.  Until a connection with the new profile has
  succeeded the previous profile is kept on disk; after ``fallback_after``
  failed attempts the station goes back to it, as the whitepaper asks, so a
  raise the CSMS cannot serve never strands the station offline.
- ``AuthorizationKey`` (write-only: GetConfiguration and ``chargerctl config``
  never show it): the HTTP Basic password, user = charge_point_id.  The
  whitepaper's form is hexadecimal, 16 to 20 bytes as 32 to 40 hex digits: the
  decoded bytes are the password.  Any other value of 16 to 40 printable ASCII
  characters is taken as the password itself (what CSMSs in the field send).
  Stored in a 0600 file, written and fsynced before the CSMS hears Accepted, so
  a crash between the change and the next connection loses nothing; it takes
  effect at the next connection.

Both are kept in ``<state_dir>/security/`` (0700), each file 0600, written
atomically: they win over the ``[csms]`` table, as a value the CSMS set wins
over ``[ocpp]``.  To lower the profile on purpose, an installer edits the
``[csms]`` table and removes ``security/link.json``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import re
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from ocpp.v16.enums import ConfigurationStatus

from chargerd.features.config_values import Change
from chargerd.link.tlsdiag import WHITEPAPER_CIPHERS

log = logging.getLogger(__name__)

# The security events this module raises (names of the whitepaper).
FAILED_TO_AUTHENTICATE = "FailedToAuthenticateAtCsms"
INVALID_CSMS_CERTIFICATE = "InvalidCentralSystemCertificate"
INVALID_TLS_VERSION = "InvalidTLSVersion"
INVALID_TLS_CIPHER_SUITE = "InvalidTLSCipherSuite"
RECONFIGURATION = "ReconfigurationOfSecurityParameters"

#: connect failure kind (chargerd.link.tlsdiag) -> security event
EVENT_OF_FAILURE = {
    "auth": FAILED_TO_AUTHENTICATE,
    "server_certificate": INVALID_CSMS_CERTIFICATE,
    "tls_version": INVALID_TLS_VERSION,
    "cipher": INVALID_TLS_CIPHER_SUITE,
}

KEY_MIN_BYTES, KEY_MAX_BYTES = 16, 40
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2}){16,20}")
_PRINTABLE = re.compile(r"[\x21-\x7e]{16,40}")

Emit = Callable[[str, "str | None"], None]


class ConfigKeys(Protocol):
    def declare_external(
        self,
        key: str,
        *,
        read: Callable[[], str | None],
        write: Callable[[str, str], Change],
        readonly: bool = False,
    ) -> None: ...


class LinkEndpoint(Protocol):
    def set_endpoint(
        self, *, url: str | None = ..., ssl_context: Any = ..., basic_auth: Any = ...
    ) -> None: ...
    def reconnect(self, why: str) -> None: ...
    def add_connect_listener(self, cb: Callable[[], Any]) -> None: ...
    def add_connect_failure_listener(self, cb: Callable[[str, str], None]) -> None: ...


# -- decisions ---------------------------------------------------------------------------


def key_password(value: str) -> bytes | None:
    """The Basic password an AuthorizationKey value stands for; None when not acceptable.

    32-40 hex digits (16-20 bytes, the whitepaper's form) are decoded; otherwise
    16-40 printable ASCII characters are the password as they are.
    """
    if _HEX.fullmatch(value):
        return bytes.fromhex(value)
    if _PRINTABLE.fullmatch(value):
        return value.encode("ascii")
    return None


def key_refusal(value: str) -> str | None:
    """Why an AuthorizationKey value is refused (None: accepted)."""
    if key_password(value) is not None:
        return None
    return (
        "an AuthorizationKey is 32 to 40 hexadecimal digits (16 to 20 bytes), or 16 to 40 "
        "printable ASCII characters without spaces"
    )


@dataclass(frozen=True, slots=True)
class ProfileState:
    """The profile in force; ``previous`` is kept until the raised one has connected."""

    profile: int
    previous: int | None = None
    confirmed: bool = True
    failures: int = 0  # failed connects with an unconfirmed profile (not persisted)


def raise_refusal(
    current: int, new: int, *, has_key: bool, has_csms_root: bool, has_station_cert: bool
) -> str | None:
    """Why a SecurityProfile change is refused (None: accepted).  Whitepaper: a profile
    is never lowered, and a raise needs what the new profile presents and checks."""
    if not 0 <= new <= 3:
        return "a security profile is 0, 1, 2 or 3"
    if new < current:
        return f"the security profile is never lowered (now {current})"
    if new in (1, 2) and not has_key:
        return f"profile {new} needs an AuthorizationKey (HTTP Basic password): set it first"
    if new >= 2 and not has_csms_root:
        return f"profile {new} needs an installed CSMS root certificate"
    if new == 3 and not has_station_cert:
        return "profile 3 needs the station's certificate (charge_point.pem and its key)"
    return None


def after_connect_failure(state: ProfileState, fallback_after: int) -> ProfileState:
    """One more failed connect; an unconfirmed raise falls back after ``fallback_after``."""
    if state.confirmed or state.previous is None:
        return state
    failures = state.failures + 1
    if failures >= fallback_after:
        return ProfileState(profile=state.previous)
    return replace(state, failures=failures)


def after_connect(state: ProfileState) -> ProfileState:
    """A connection with the profile in force: a raise is confirmed for good."""
    return ProfileState(profile=state.profile)


def url_for_profile(url: str, profile: int, tls_url: str | None = None) -> str:
    """The configured URL with the scheme the profile needs (wss:// for 2 and 3);
    ``tls_url`` instead, when given, for a ws:// station raised to TLS."""
    parts = urlsplit(url)
    if profile >= 2 and parts.scheme == "ws" and tls_url is not None:
        return tls_url
    scheme = "wss" if profile >= 2 else "ws"
    return urlunsplit((scheme, *parts[1:]))


def build_ssl_context(
    cafiles: Iterable[Path], client_cert: tuple[Path, Path] | None = None
) -> ssl.SSLContext:
    """TLS 1.2 or newer, the whitepaper's cipher suites, the server checked against
    ``cafiles`` (the system's roots when none) with its hostname; ``client_cert``
    (certificate, key) is presented at profile 3."""
    files = [str(p) for p in cafiles]
    if files:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies and checks the hostname
        for f in files:
            ctx.load_verify_locations(cafile=f)
    else:
        ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(":".join(WHITEPAPER_CIPHERS))
    if client_cert is not None:
        ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    return ctx


# -- files -------------------------------------------------------------------------------


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600, durable when this returns."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# -- the service -------------------------------------------------------------------------


class LinkSecurity:
    """The station's side of security profiles 1-3 and its two configuration keys."""

    def __init__(
        self,
        *,
        url: str,
        profile: int,
        tls_url: str | None = None,
        charge_point_id: str,
        password: str | None,
        ca_file: Path | None,
        state_dir: Path,
        certs_dir: Path,
        emit: Emit,
        csms_roots: Callable[[], list[Path]] = list,
        fallback_after: int = 3,
        reconnect_delay_s: float = 0.5,
    ) -> None:
        self._url = url
        self._tls_url = tls_url
        self._charge_point_id = charge_point_id
        self._ca_file = ca_file
        self._certs_dir = certs_dir
        self._emit = emit
        self._csms_roots = csms_roots
        self._fallback_after = fallback_after
        self._reconnect_delay_s = reconnect_delay_s
        self._dir = state_dir / "security"
        self._key_path = self._dir / "authorization_key"
        self._state_path = self._dir / "link.json"
        self._link: LinkEndpoint | None = None
        self._reported: set[str] = set()  # events raised during this failing streak
        self._tasks: set[asyncio.Task] = set()
        self._password: bytes | None = password.encode() if password else None
        stored_key = self._read_key()
        if stored_key is not None:
            self._password = stored_key
        self.state = self._load_state(profile)

    # -- persistence ---------------------------------------------------------------------

    def _read_key(self) -> bytes | None:
        try:
            value = self._key_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.error("cannot read the AuthorizationKey in %s: %s", self._key_path, exc)
            return None
        password = key_password(value)
        if password is None:
            log.error("the AuthorizationKey in %s is malformed: ignored", self._key_path)
        return password

    def _load_state(self, configured: int) -> ProfileState:
        try:
            raw = json.loads(self._state_path.read_text())
            state = ProfileState(
                profile=int(raw["profile"]),
                previous=None if raw.get("previous") is None else int(raw["previous"]),
                confirmed=bool(raw.get("confirmed", True)),
            )
            if not 0 <= state.profile <= 3:
                raise ValueError(f"profile {state.profile}")
        except FileNotFoundError:
            return ProfileState(profile=configured)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("ignoring the unreadable %s (%s)", self._state_path, exc)
            return ProfileState(profile=configured)
        if state.profile < configured:
            log.info(
                "[csms] security_profile %d raises the stored profile %d",
                configured,
                state.profile,
            )
            return ProfileState(profile=configured)
        if state.profile != configured:
            log.info(
                "security profile %d (set by the CSMS) overrides [csms] security_profile %d",
                state.profile,
                configured,
            )
        return state

    def _save_state(self, state: ProfileState) -> None:
        data = {"profile": state.profile, "previous": state.previous, "confirmed": state.confirmed}
        write_private(self._state_path, json.dumps(data).encode())

    # -- what the link uses --------------------------------------------------------------

    @property
    def profile(self) -> int:
        return self.state.profile

    def url(self) -> str:
        return url_for_profile(self._url, self.state.profile, self._tls_url)

    def basic_auth(self) -> tuple[str, bytes] | None:
        if self.state.profile in (1, 2) and self._password is not None:
            return (self._charge_point_id, self._password)
        return None

    def _cafiles(self) -> list[Path]:
        files = [self._ca_file] if self._ca_file is not None else []
        return files + [p for p in self._csms_roots() if p.exists()]

    def _station_cert(self) -> tuple[Path, Path] | None:
        cert = self._certs_dir / "charge_point.pem"
        key = self._certs_dir / "charge_point.key"
        return (cert, key) if cert.exists() and key.exists() else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the profile in force (None below profile 2); never raises."""
        if self.state.profile < 2:
            return None
        client = None
        if self.state.profile == 3:
            client = self._station_cert()
            if client is None:
                log.error(
                    "security profile 3 needs a client certificate at %s; the CSMS will "
                    "refuse the TLS handshake without it",
                    self._certs_dir / "charge_point.pem",
                )
            else:
                self._warn_if_expired(client[0])
        try:
            return build_ssl_context(self._cafiles(), client)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("cannot load the station's TLS certificate or key: %s", exc)
            return build_ssl_context(self._cafiles(), None)

    def _warn_if_expired(self, cert_path: Path) -> None:
        from cryptography import x509

        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("the station certificate %s cannot be read: %s", cert_path, exc)
            return
        now = datetime.datetime.now(datetime.UTC)
        if cert.not_valid_after_utc < now:
            log.error(
                "the station certificate %s expired on %s: the CSMS will refuse it; "
                "a new one is needed (SignCertificate / CertificateSigned)",
                cert_path,
                cert.not_valid_after_utc.isoformat(),
            )

    def attach(self, link: LinkEndpoint) -> None:
        """Give the link its endpoint and learn how each connect ends."""
        self._link = link
        self.refresh()
        link.add_connect_listener(self._on_connect)
        link.add_connect_failure_listener(self._on_connect_failed)

    def refresh(self) -> None:
        """Build the endpoint again for the next connection (new key, certificates, profile)."""
        if self._link is not None:
            self._link.set_endpoint(
                url=self.url(), ssl_context=self.ssl_context(), basic_auth=self.basic_auth()
            )

    def _on_connect(self) -> None:
        self._reported.clear()
        if not self.state.confirmed:
            log.info("security profile %d confirmed: connected with it", self.state.profile)
            self._set_state(after_connect(self.state))

    def _on_connect_failed(self, kind: str, reason: str) -> None:
        event = EVENT_OF_FAILURE.get(kind)
        if event is not None and event not in self._reported:
            self._reported.add(event)
            self._emit(event, reason[:255])
        state = after_connect_failure(self.state, self._fallback_after)
        if state.profile != self.state.profile:
            log.error(
                "no connection with security profile %d after %d attempts: back to "
                "security profile %d",
                self.state.profile,
                self._fallback_after,
                state.profile,
            )
            self._set_state(state)
            self._emit(RECONFIGURATION, f"SecurityProfile back to {state.profile} (fallback)")
            self.refresh()
            if self._link is not None:
                self._link.reconnect(f"back to security profile {state.profile}")  # no backoff
        else:
            self.state = state

    def _set_state(self, state: ProfileState) -> None:
        try:
            self._save_state(state)
        except OSError as exc:
            log.error("cannot store the security profile in %s: %s", self._state_path, exc)
        self.state = state

    # -- configuration keys --------------------------------------------------------------

    def declare_keys(self, config: ConfigKeys) -> None:
        config.declare_external(
            "SecurityProfile", read=lambda: str(self.state.profile), write=self._change_profile
        )
        config.declare_external("AuthorizationKey", read=lambda: None, write=self._change_key)

    def _change_key(self, value: str, by: str) -> Change:
        reason = key_refusal(value)
        if reason is not None:
            log.info("ChangeConfiguration AuthorizationKey by %s refused: %s", by, reason)
            return Change(ConfigurationStatus.rejected, reason)
        try:
            write_private(self._key_path, value.encode("ascii") + b"\n")
        except OSError as exc:
            log.error("cannot store the AuthorizationKey in %s: %s", self._key_path, exc)
            return Change(ConfigurationStatus.rejected, "the station cannot store it")
        self._password = key_password(value)
        log.info("AuthorizationKey changed by %s: used from the next connection", by)
        self._emit(RECONFIGURATION, "AuthorizationKey")
        self.refresh()
        return Change(ConfigurationStatus.accepted)

    def _change_profile(self, value: str, by: str) -> Change:
        try:
            new = int(value.strip())
        except ValueError:
            return Change(ConfigurationStatus.rejected, "a security profile is 0, 1, 2 or 3")
        current = self.state.profile
        reason = raise_refusal(
            current,
            new,
            has_key=self._password is not None,
            has_csms_root=bool(self._cafiles()),
            has_station_cert=self._station_cert() is not None,
        )
        if reason is not None:
            log.info("ChangeConfiguration SecurityProfile=%s by %s refused: %s", value, by, reason)
            return Change(ConfigurationStatus.rejected, reason)
        if new == current:
            return Change(ConfigurationStatus.accepted)
        state = ProfileState(profile=new, previous=current, confirmed=False)
        try:
            self._save_state(state)
        except OSError as exc:
            log.error("cannot store the security profile in %s: %s", self._state_path, exc)
            return Change(ConfigurationStatus.rejected, "the station cannot store it")
        self.state = state
        log.warning(
            "security profile raised from %d to %d by %s: reconnecting with it", current, new, by
        )
        self._emit(RECONFIGURATION, f"SecurityProfile {current} -> {new}")
        self.refresh()
        self._later(self._reconnect(f"security profile {new}"))
        return Change(ConfigurationStatus.accepted)

    async def _reconnect(self, why: str) -> None:
        # Let the ChangeConfiguration answer leave on the old connection first.
        await asyncio.sleep(self._reconnect_delay_s)
        if self._link is not None:
            self._link.reconnect(why)

    def _later(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
