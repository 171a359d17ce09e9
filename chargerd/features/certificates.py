"""Certificate management of the OCPP 1.6 Security Whitepaper (Edition 3).

The CSMS requests answered here: ExtendedTriggerMessage, CertificateSigned,
InstallCertificate, DeleteCertificate, GetInstalledCertificateIds; the station's request:
SignCertificate (a CSR made with ``cryptography``; its private key is written 0600 in the
certificate directory and never leaves it).  The files themselves are certstore's.

Decisions are plain functions (``check_signed_chain``, ``renewal_delay``, ``make_csr``) so
they are tested without a network or a clock.

Policies worth knowing (the whitepaper leaves room; these are ours):
- A CertificateSigned chain is validated up to an installed CentralSystemRootCertificate:
  with no CSMS root installed the station cannot trust any chain and rejects it.
- DeleteCertificate never removes the last CentralSystemRootCertificate (Failed): without it
  the station cannot authenticate the CSMS at security profiles 2 and 3.
- AdditionalRootCertificateCheck: a new CSMS root must be signed by the installed one and
  replaces it (no fallback root is kept).
- Renewal: a new CSR is sent ``RENEW_BEFORE`` (30 days) before the station certificate
  expires, then once a day until a new certificate is installed.
- The swap of the station certificate is announced (certstore's change callback, which the
  link listens to) once the CertificateSigned answer is on the wire, so the one reconnection
  that presents the new certificate never loses that answer.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from ocpp.routing import after, on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from chargerd.clock import Clock, sleep_or_wake
from chargerd.features.certstore import (
    CertHash,
    CertStore,
    CertStoreError,
    RootKind,
    cert_hash,
    common_name,
    is_ca,
    load_pem_chain,
)

log = logging.getLogger(__name__)

RENEW_BEFORE = datetime.timedelta(days=30)
RENEW_RETRY_S = 86400.0

INVALID_CHARGE_POINT_CERTIFICATE = "InvalidChargePointCertificate"
INVALID_CENTRAL_SYSTEM_CERTIFICATE = "InvalidCentralSystemCertificate"

SIGN_CHARGE_POINT_CERTIFICATE = "SignChargePointCertificate"
_ORDINARY = ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification")


class Trigger(Protocol):
    """The part of trigger.TriggerService reused for the ordinary messages."""

    def decide(self, requested: str, connector_id: int | None) -> Any: ...

    async def send(self, requested: str, connector_id: int | None) -> None: ...


def declare_certificate_keys(
    svc: Any,
    *,
    max_chain_size: int = 10000,
    store_max_length: int = 20,
    additional_root_check: bool = False,
) -> None:
    """The whitepaper's certificate keys; the read-only ones are the station's own limits."""
    svc.declare_int("CertificateSignedMaxChainSize", max_chain_size, 1, 10000, readonly=True)
    svc.declare_int("CertificateStoreMaxLength", store_max_length, 1, 1000, readonly=True)
    svc.declare_str("CpoName", "", max_length=64)  # the O of the CSR (X.509 ub-organization-name)
    svc.declare_bool("AdditionalRootCertificateCheck", additional_root_check, readonly=True)


# --- plain functions ---------------------------------------------------------------------


def make_csr(key: Any, charge_point_id: str, cpo_name: str) -> str:
    """A PEM CSR: CN = charge_point_id, O = CpoName (left out while CpoName is empty)."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, charge_point_id)]
    if cpo_name:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, cpo_name))
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(
        key, hashes.SHA256()
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _valid_at(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def check_signed_chain(
    chain: list[x509.Certificate],
    *,
    roots: list[x509.Certificate],
    charge_point_id: str,
    pending_public_key: Any,
    now: datetime.datetime,
) -> str | None:
    """Why a CertificateSigned chain (leaf first) is refused, or None when it is good.

    Each certificate must be signed by the next one, the last by an installed CSMS root;
    intermediates must be CAs; all valid now; the leaf's CN the charge point id and its key
    the key of the pending CSR."""
    if pending_public_key is None:
        return "no CSR is pending (no SignCertificate was sent)"
    if not roots:
        return "no CentralSystemRootCertificate is installed to validate the chain against"
    leaf = chain[0]
    if common_name(leaf) != charge_point_id:
        return f"CN {common_name(leaf)!r} is not the charge point id {charge_point_id!r}"
    if leaf.public_key() != pending_public_key:
        return "the certificate is not for the key of the pending CSR"
    for cert in chain:
        if not _valid_at(cert, now):
            return f"{cert.subject.rfc4514_string()} is not valid at {now.isoformat()}"
    for cert, issuer in itertools.pairwise(chain):
        if not is_ca(issuer):
            return f"{issuer.subject.rfc4514_string()} is not a CA"
        if not _signed_by(cert, issuer):
            return f"{cert.subject.rfc4514_string()} is not signed by the next certificate"
    top = chain[-1]
    if not any(_signed_by(top, root) and _valid_at(root, now) for root in roots) and not any(
        top == root for root in roots
    ):
        return "the chain does not lead to an installed CentralSystemRootCertificate"
    return None


def renewal_delay(
    expiry: datetime.datetime | None,
    now: datetime.datetime,
    before: datetime.timedelta = RENEW_BEFORE,
) -> float | None:
    """Seconds until a renewal CSR is due (0: due now); None without a station certificate."""
    if expiry is None:
        return None
    return max(0.0, (expiry - before - now).total_seconds())


# --- the service ---------------------------------------------------------------------------


class CertificateService:
    """Owns the certificate messages; the files are certstore's."""

    def __init__(
        self,
        *,
        store: CertStore,
        config: Any,
        clock: Clock,
        charge_point_id: str,
        call: Callable[[str, dict], Awaitable[dict]],
        trigger: Trigger | None = None,
        emit: Callable[..., None] | None = None,
        online: Callable[[], bool] = lambda: True,
        errors: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._cp_id = charge_point_id
        self._call = call
        self._trigger = trigger
        self._emit = emit or (lambda kind, tech_info=None: None)
        self._online = online
        self._errors = errors
        # What the firmware and log modules report when triggered (Idle while they are not
        # wired): the payloads of SignedFirmwareStatusNotification / LogStatusNotification.
        self.firmware_status: Callable[[], dict] = lambda: {"status": "Idle"}
        self.log_status: Callable[[], dict] = lambda: {"status": "Idle"}
        self._accepted: list[tuple[str, int | None]] = []
        self._swapped = False  # a CertificateSigned was installed, not yet announced
        self._wake = asyncio.Event()
        store.on_change(self._on_store_change)

    def _on_store_change(self, what: str) -> None:
        if what == "station":
            self._wake.set()

    # -- SignCertificate ---------------------------------------------------------------------

    async def request_certificate(self) -> str | None:
        """Make a new key and CSR and send SignCertificate; the CSMS's status, None when the
        request did not get through (logged)."""
        key = self._store.new_pending_key()
        csr = make_csr(key, self._cp_id, str(self._config.get("CpoName") or ""))
        try:
            answer = await self._call("SignCertificate", {"csr": csr})
        except self._errors as exc:
            log.warning("SignCertificate not delivered: %s", exc)
            return None
        status = str(answer.get("status"))
        log.info("SignCertificate (CSR for CN=%s): %s", self._cp_id, status)
        return status

    # -- ExtendedTriggerMessage --------------------------------------------------------------

    def decide_trigger(self, requested: str, connector_id: int | None) -> str:
        if requested in _ORDINARY:
            if self._trigger is None:
                return "NotImplemented"
            return str(self._trigger.decide(requested, connector_id))
        if requested in (
            SIGN_CHARGE_POINT_CERTIFICATE,
            "FirmwareStatusNotification",
            "LogStatusNotification",
        ):
            return "Accepted"
        return "NotImplemented"

    async def send_triggered(self, requested: str, connector_id: int | None) -> None:
        if requested in _ORDINARY and self._trigger is not None:
            await self._trigger.send(requested, connector_id)
            return
        try:
            if requested == SIGN_CHARGE_POINT_CERTIFICATE:
                await self.request_certificate()
            elif requested == "FirmwareStatusNotification":
                await self._call("SignedFirmwareStatusNotification", self.firmware_status())
            elif requested == "LogStatusNotification":
                await self._call("LogStatusNotification", self.log_status())
        except self._errors as exc:
            log.info("triggered %s not delivered: %s", requested, exc)

    @on(Action.extended_trigger_message)
    def on_extended_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> call_result.ExtendedTriggerMessage:
        status = self.decide_trigger(requested_message, connector_id)
        log.info(
            "ExtendedTriggerMessage %s (connector %s): %s", requested_message, connector_id, status
        )
        if status == "Accepted":
            self._accepted.append((requested_message, connector_id))
        return call_result.ExtendedTriggerMessage(status=status)

    @after(Action.extended_trigger_message)
    async def _extended_trigger_after(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> None:
        key = (requested_message, connector_id)
        if key in self._accepted:
            self._accepted.remove(key)
            await self.send_triggered(requested_message, connector_id)

    # -- CertificateSigned -------------------------------------------------------------------

    def accept_signed(self, certificate_chain: str) -> str | None:
        """Install a CertificateSigned chain; the reason it is refused, or None (installed)."""
        limit = int(self._config.get("CertificateSignedMaxChainSize") or 10000)
        if len(certificate_chain.encode()) > limit:
            return f"chain of {len(certificate_chain.encode())} bytes exceeds {limit}"
        try:
            chain = load_pem_chain(certificate_chain)
        except CertStoreError as exc:
            return str(exc)
        pending = self._store.pending_key()
        reason = check_signed_chain(
            chain,
            roots=self._store.roots(RootKind.CSMS),
            charge_point_id=self._cp_id,
            pending_public_key=pending.public_key() if pending is not None else None,
            now=self._clock.now(),
        )
        if reason:
            return reason
        try:
            self._store.install_station_certificate(chain, notify=False)
        except (OSError, CertStoreError) as exc:
            return f"could not store it: {exc}"
        self._swapped = True
        return None

    @on(Action.certificate_signed)
    def on_certificate_signed(
        self, certificate_chain: str, **_: Any
    ) -> call_result.CertificateSigned:
        reason = self.accept_signed(certificate_chain)
        if reason:
            log.warning("CertificateSigned rejected: %s", reason)
            self._emit(INVALID_CHARGE_POINT_CERTIFICATE, reason[:255])
            return call_result.CertificateSigned(status="Rejected")
        return call_result.CertificateSigned(status="Accepted")

    @after(Action.certificate_signed)
    def _certificate_signed_after(self, **_: Any) -> None:
        if self._swapped:  # the answer is out: now the link may reconnect to present it
            self._swapped = False
            self._store.notify("station")

    # -- InstallCertificate / DeleteCertificate / GetInstalledCertificateIds -------------------

    def install(self, certificate_type: str, certificate: str) -> tuple[str, str | None]:
        """(status, reason) of an InstallCertificate."""
        kind = RootKind(certificate_type)
        try:
            cert = load_pem_chain(certificate)
        except CertStoreError as exc:
            return "Rejected", str(exc)
        if len(cert) != 1 or not is_ca(cert[0]):
            return "Rejected", "not one CA certificate"
        if not _valid_at(cert[0], self._clock.now()):
            return "Rejected", "the certificate is not valid now"
        replaced: list = []
        if kind == RootKind.CSMS and self._config.get("AdditionalRootCertificateCheck"):
            olds = self._store.root_paths(kind)
            if olds and not any(_signed_by(cert[0], old) for old in self._store.roots(kind)):
                return "Rejected", "AdditionalRootCertificateCheck: not signed by the old root"
            replaced = olds
        limit = int(self._config.get("CertificateStoreMaxLength") or 1)
        known = self._store.find(cert_hash(cert[0]))
        if known is None and self._store.count() - len(replaced) >= limit:
            return "Rejected", f"the certificate store is full ({limit}, CertificateStoreMaxLength)"
        try:
            self._store.install_root(kind, certificate)
            for path in replaced:
                if path.exists() and (known is None or path != known[1]):
                    self._store.delete_root(path)
        except CertStoreError as exc:
            return "Rejected", str(exc)
        except OSError as exc:
            return "Failed", f"could not store it: {exc}"
        return "Accepted", None

    @on(Action.install_certificate)
    def on_install_certificate(
        self, certificate_type: str, certificate: str, **_: Any
    ) -> call_result.InstallCertificate:
        status, reason = self.install(certificate_type, certificate)
        if reason:
            log.warning("InstallCertificate %s %s: %s", certificate_type, status, reason)
            if certificate_type == RootKind.CSMS and status == "Rejected":
                self._emit(INVALID_CENTRAL_SYSTEM_CERTIFICATE, reason[:255])
        else:
            log.info("InstallCertificate %s: Accepted", certificate_type)
        return call_result.InstallCertificate(status=status)

    def delete(self, hash_data: dict) -> str:
        wanted = CertHash.from_ocpp(hash_data)
        found = self._store.find(wanted)
        if found is None:
            return "NotFound"
        kind, path = found
        if kind == RootKind.CSMS and self._store.count(RootKind.CSMS) <= 1:
            log.warning("DeleteCertificate refused: the last CentralSystemRootCertificate")
            return "Failed"
        try:
            self._store.delete_root(path)
        except OSError as exc:
            log.error("DeleteCertificate: could not delete %s: %s", path, exc)
            return "Failed"
        return "Accepted"

    @on(Action.delete_certificate)
    def on_delete_certificate(
        self, certificate_hash_data: dict, **_: Any
    ) -> call_result.DeleteCertificate:
        status = self.delete(certificate_hash_data)
        log.info("DeleteCertificate %s: %s", certificate_hash_data.get("serial_number"), status)
        return call_result.DeleteCertificate(status=status)

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(
        self, certificate_type: str, **_: Any
    ) -> call_result.GetInstalledCertificateIds:
        hashes_ = [h.to_ocpp() for h in self._store.installed(RootKind(certificate_type))]
        if not hashes_:
            return call_result.GetInstalledCertificateIds(status="NotFound")
        return call_result.GetInstalledCertificateIds(
            status="Accepted", certificate_hash_data=hashes_
        )

    # -- expiry watch ------------------------------------------------------------------------

    async def check_renewal(self) -> float:
        """Request a renewal when it is due; seconds until the next check."""
        delay = renewal_delay(self._store.station_expiry(), self._clock.now())
        if delay is None:
            return RENEW_RETRY_S
        if delay > 0:
            return min(delay, RENEW_RETRY_S)
        if self._online():
            log.warning(
                "the station certificate expires %s: requesting a new one",
                self._store.station_expiry(),
            )
            await self.request_certificate()
        return RENEW_RETRY_S if self._online() else 60.0

    async def run(self) -> None:
        """Watch the station certificate's expiry (timer on the injectable clock)."""
        while True:
            delay = await self.check_renewal()
            self._wake.clear()
            await sleep_or_wake(self._clock, delay, self._wake)

    def status_fields(self) -> dict[str, Any]:
        """For ``chargerctl status``: the station certificate's expiry, the roots installed."""
        expiry = self._store.station_expiry()
        return {
            "station_certificate_expiry": expiry.isoformat() if expiry else None,
            "csms_roots": self._store.count(RootKind.CSMS),
            "manufacturer_roots": self._store.count(RootKind.MANUFACTURER),
        }
