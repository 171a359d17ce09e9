"""The station's certificate directory (``<state_dir>/certs/``, mode 0700, files 0600).

What lives there, by path (the link and the firmware check read these, nothing else):

- ``charge_point.key`` / ``charge_point.pem``: the station's private key and its certificate
  (leaf first, then any intermediates) presented at security profile 3.  The key is made
  here for a CSR and never leaves this directory.
- ``charge_point.pending.key``: the key of the CSR sent with SignCertificate, waiting for
  the CSMS's CertificateSigned.
- ``csms_roots/*.pem``: the CentralSystemRootCertificate(s) the CSMS server certificate is
  checked against (security profiles 2 and 3).
- ``manufacturer_roots/*.pem``: the ManufacturerRootCertificate(s) a firmware signing
  certificate is checked against (SignedUpdateFirmware).

Why one module: the TLS code, the certificate messages and the firmware check all need the
same files and the same hash data (OCPP Security Whitepaper Ed. 3, CertificateHashDataType:
issuerNameHash, issuerKeyHash, serialNumber, hashAlgorithm), and a swap of the station
certificate must be atomic across a crash: a station that boots with a key that does not
match its certificate cannot reach a profile-3 CSMS at all.

Change notification: ``on_change(callback)``; the callback gets ``"station"``,
``"csms_roots"`` or ``"manufacturer_roots"`` after the files changed (the link reconnects
on ``"station"`` / ``"csms_roots"`` to present or check the new certificate).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger(__name__)

STATION_KEY = "charge_point.key"
STATION_CERT = "charge_point.pem"
PENDING_KEY = "charge_point.pending.key"
_NEW_CERT = "charge_point.pem.new"
_SWAP_MARK = "charge_point.swap"

HASH_ALGORITHMS = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}


class CertStoreError(ValueError):
    """A certificate that cannot be stored or read (bad PEM, not a CA): the message says why."""


class RootKind(StrEnum):
    """The certificateUse / certificateType values of InstallCertificate and friends."""

    CSMS = "CentralSystemRootCertificate"
    MANUFACTURER = "ManufacturerRootCertificate"


_ROOT_DIRS = {RootKind.CSMS: "csms_roots", RootKind.MANUFACTURER: "manufacturer_roots"}
_ROOT_EVENTS = {RootKind.CSMS: "csms_roots", RootKind.MANUFACTURER: "manufacturer_roots"}


@dataclass(frozen=True, slots=True)
class CertHash:
    """CertificateHashDataType of the whitepaper: identifies a certificate without sending it."""

    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str

    def to_ocpp(self) -> dict[str, str]:
        return {
            "hashAlgorithm": self.hash_algorithm,
            "issuerNameHash": self.issuer_name_hash,
            "issuerKeyHash": self.issuer_key_hash,
            "serialNumber": self.serial_number,
        }

    @classmethod
    def from_ocpp(cls, data: dict) -> CertHash:
        """From the wire (camelCase) or from a routed handler's snake_case kwargs."""

        def get(camel: str, snake: str) -> str:
            return str(data.get(camel, data.get(snake, "")))

        return cls(
            hash_algorithm=get("hashAlgorithm", "hash_algorithm"),
            issuer_name_hash=get("issuerNameHash", "issuer_name_hash").lower(),
            issuer_key_hash=get("issuerKeyHash", "issuer_key_hash").lower(),
            serial_number=get("serialNumber", "serial_number").lower().lstrip("0") or "0",
        )


# --- plain functions -------------------------------------------------------------------


def _der_read(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    return tag, pos, pos + length


def public_key_bits(public_key) -> bytes:
    """The subjectPublicKey BIT STRING contents (what OCSP and the whitepaper hash as the
    issuer key), taken from the SubjectPublicKeyInfo so that RSA, EC and EdDSA all work."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, start, _ = _der_read(spki, 0)  # SEQUENCE
    _, _, alg_end = _der_read(spki, start)  # AlgorithmIdentifier
    tag, bits_start, bits_end = _der_read(spki, alg_end)
    if tag != 0x03:
        raise CertStoreError("public key is not a BIT STRING")
    return spki[bits_start + 1 : bits_end]  # skip the unused-bits byte


def cert_hash(
    cert: x509.Certificate, issuer: x509.Certificate | None = None, algorithm: str = "SHA256"
) -> CertHash:
    """The hash data of ``cert``: issuer name (DER) hash, issuer public key hash, serial in
    lowercase hex.  ``issuer`` defaults to ``cert`` itself (a root is its own issuer)."""
    fn = HASH_ALGORITHMS[algorithm]
    issuer = issuer or cert
    return CertHash(
        hash_algorithm=algorithm,
        issuer_name_hash=fn(cert.issuer.public_bytes()).hexdigest(),
        issuer_key_hash=fn(public_key_bits(issuer.public_key())).hexdigest(),
        serial_number=format(cert.serial_number, "x"),
    )


def load_pem_chain(pem: str | bytes) -> list[x509.Certificate]:
    """All certificates of a PEM text, in order; CertStoreError when there is none or one
    does not parse."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertStoreError(f"not a PEM certificate: {exc}") from None
    if not certs:
        raise CertStoreError("no certificate in the PEM text")
    return certs


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def not_after(cert: x509.Certificate) -> datetime.datetime:
    return cert.not_valid_after_utc


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# --- files -----------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (tmp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class CertStore:
    """The certificate directory; every method works on the files (no cache to go stale)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._callbacks: list[Callable[[str], None]] = []
        for d in (self.directory, *(self.directory / n for n in _ROOT_DIRS.values())):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        self._recover_swap()

    # paths the link and the firmware check use
    @property
    def station_key_path(self) -> Path:
        return self.directory / STATION_KEY

    @property
    def station_cert_path(self) -> Path:
        return self.directory / STATION_CERT

    @property
    def pending_key_path(self) -> Path:
        return self.directory / PENDING_KEY

    def root_dir(self, kind: RootKind) -> Path:
        return self.directory / _ROOT_DIRS[RootKind(kind)]

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(what)`` after a change: "station", "csms_roots", "manufacturer_roots"."""
        self._callbacks.append(callback)

    def notify(self, what: str) -> None:
        """Tell the listeners that ``what`` changed (see ``on_change``)."""
        self._changed(what)

    def _changed(self, what: str) -> None:
        for cb in list(self._callbacks):
            try:
                cb(what)
            except Exception:  # a listener never breaks the store
                log.exception("certificate change listener failed for %s", what)

    # roots -------------------------------------------------------------------------------
    def root_paths(self, kind: RootKind) -> list[Path]:
        return sorted(self.root_dir(kind).glob("*.pem"))

    def roots(self, kind: RootKind) -> list[x509.Certificate]:
        out = []
        for path in self.root_paths(kind):
            try:
                out.extend(load_pem_chain(path.read_bytes()))
            except (OSError, CertStoreError) as exc:
                log.error("unreadable certificate %s ignored: %s", path, exc)
        return out

    def roots_pem(self, kind: RootKind) -> str:
        """All roots of ``kind`` as one PEM text ("" if none): for
        ``SSLContext.load_verify_locations(cadata=...)``."""
        return "".join(_pem(c).decode() for c in self.roots(kind))

    def count(self, kind: RootKind | None = None) -> int:
        kinds = [RootKind(kind)] if kind else list(RootKind)
        return sum(len(self.root_paths(k)) for k in kinds)

    def installed(self, kind: RootKind, algorithm: str = "SHA256") -> list[CertHash]:
        return [cert_hash(c, algorithm=algorithm) for c in self.roots(kind)]

    def install_root(self, kind: RootKind, pem: str | bytes) -> Path:
        """Store a root certificate (one PEM certificate, a CA); returns its path.  The file
        name is the SHA-256 fingerprint, so installing the same root twice is harmless."""
        certs = load_pem_chain(pem)
        if len(certs) != 1:
            raise CertStoreError(f"expected one certificate, got {len(certs)}")
        cert = certs[0]
        if not is_ca(cert):
            raise CertStoreError("not a CA certificate (basicConstraints CA is not set)")
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()
        path = self.root_dir(kind) / f"{fingerprint[:32]}.pem"
        write_private(path, _pem(cert))
        log.info("%s installed: %s", RootKind(kind).value, cert.subject.rfc4514_string())
        self._changed(_ROOT_EVENTS[RootKind(kind)])
        return path

    def find(self, wanted: CertHash) -> tuple[RootKind, Path] | None:
        """The installed root matching ``wanted`` (compared with its hash algorithm)."""
        algorithm = wanted.hash_algorithm if wanted.hash_algorithm in HASH_ALGORITHMS else None
        if algorithm is None:
            return None
        for kind in RootKind:
            for path in self.root_paths(kind):
                try:
                    cert = load_pem_chain(path.read_bytes())[0]
                except (OSError, CertStoreError):
                    continue
                if cert_hash(cert, algorithm=algorithm) == wanted:
                    return kind, path
        return None

    def delete_root(self, path: Path) -> RootKind:
        """Remove the root file at ``path`` (from ``find``)."""
        kind = next(k for k in RootKind if path.parent == self.root_dir(k))
        path.unlink()
        _fsync_dir(path.parent)
        self._changed(_ROOT_EVENTS[kind])
        return kind

    # station certificate -----------------------------------------------------------------
    def station_chain(self) -> list[x509.Certificate]:
        try:
            return load_pem_chain(self.station_cert_path.read_bytes())
        except (OSError, CertStoreError):
            return []

    def station_certificate(self) -> x509.Certificate | None:
        chain = self.station_chain()
        return chain[0] if chain else None

    def station_expiry(self) -> datetime.datetime | None:
        cert = self.station_certificate()
        return not_after(cert) if cert is not None else None

    def new_pending_key(self) -> ec.EllipticCurvePrivateKey:
        """A fresh key for a CSR (EC P-256), written 0600 as the pending key; it replaces
        any earlier pending key (only the newest CSR can be answered)."""
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(
            self.pending_key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return key

    def pending_key(self):
        """The pending CSR key, or None when no CSR waits."""
        try:
            data = self.pending_key_path.read_bytes()
        except OSError:
            return None
        try:
            return serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            log.error("unreadable pending key %s ignored", self.pending_key_path)
            return None

    def install_station_certificate(
        self, chain: list[x509.Certificate], *, notify: bool = True
    ) -> None:
        """Make ``chain`` (leaf first, signed for the pending key) the station certificate,
        the pending key the station key: atomically across a crash (a swap marker makes the
        start-up finish a half-done swap), then notify "station" (``notify=False``: the
        caller calls ``notify("station")`` itself, e.g. once its answer is on the wire)."""
        if not self.pending_key_path.exists():
            raise CertStoreError("no pending key: no CSR waits for a certificate")
        write_private(self.directory / _NEW_CERT, b"".join(_pem(c) for c in chain))
        write_private(self.directory / _SWAP_MARK, b"swap\n")
        self._finish_swap()
        log.info(
            "station certificate installed: %s, valid until %s",
            chain[0].subject.rfc4514_string(),
            not_after(chain[0]).isoformat(),
        )
        if notify:
            self._changed("station")

    def _finish_swap(self) -> None:
        if self.pending_key_path.exists():
            os.replace(self.pending_key_path, self.station_key_path)
        new_cert = self.directory / _NEW_CERT
        if new_cert.exists():
            os.replace(new_cert, self.station_cert_path)
        _fsync_dir(self.directory)
        (self.directory / _SWAP_MARK).unlink(missing_ok=True)
        _fsync_dir(self.directory)

    def _recover_swap(self) -> None:
        if (self.directory / _SWAP_MARK).exists():
            log.warning("finishing a station certificate swap interrupted by a crash")
            self._finish_swap()
        else:
            (self.directory / _NEW_CERT).unlink(missing_ok=True)
