"""Signed firmware (Security Whitepaper Ed. 3, SignedUpdateFirmware): the two checks.

Plain functions of their inputs, so that they are tested with certificates a
test makes, without a CSMS or a download:

- ``check_signing_certificate``: the firmware signing certificate must be
  signed directly by one of the installed manufacturer root certificates and be
  valid now.  Checked when the request arrives (the answer is then
  InvalidCertificate and nothing is downloaded).
- ``check_signature``: the downloaded file's signature (base64 in the request)
  verifies with the signing certificate's public key, SHA-256 with RSA
  (PKCS#1 v1.5) or ECDSA.  Checked before anything is installed.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils


class SigningError(ValueError):
    """The certificate or the signature does not hold; the message says why."""


def check_signing_certificate(
    pem: str, roots: list[x509.Certificate], now: datetime.datetime
) -> x509.Certificate:
    """The signing certificate, if a manufacturer root signed it and it is valid at ``now``."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    except ValueError as exc:
        raise SigningError(f"signing certificate is not a PEM certificate: {exc}") from None
    if not roots:
        raise SigningError("no manufacturer root certificate is installed")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SigningError(
            "signing certificate not valid now "
            f"({cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d})"
        )
    for root in roots:
        if root.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        if not root.not_valid_before_utc <= now <= root.not_valid_after_utc:
            raise SigningError("the manufacturer root that signed it has expired")
        return cert
    raise SigningError("signing certificate not issued by an installed manufacturer root")


def file_digest(path: Path) -> bytes:
    """SHA-256 of the file, read in chunks (a firmware may be larger than the RAM spare)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def check_signature(cert: x509.Certificate, path: Path, signature_b64: str) -> None:
    """Raise SigningError unless ``signature_b64`` signs the file with ``cert``'s key."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise SigningError("signature is not base64") from None
    digest = file_digest(path)
    key = cert.public_key()
    prehashed = utils.Prehashed(hashes.SHA256())
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, padding.PKCS1v15(), prehashed)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(prehashed))
        else:
            raise SigningError(f"unsupported signing key type {type(key).__name__}")
    except InvalidSignature:
        raise SigningError("firmware signature does not verify") from None


#: The installer's exit status for "the package was installed but failed its verification
#: and was rolled back" (EX_DATAERR; etc/chargerd-install-firmware uses it when the new
#: version does not come up).  Any other non-zero exit is a plain installation failure.
VERIFICATION_FAILED_EXIT = 65
_VERIFICATION_FAILED = "the installed package failed verification (installer exited 65)"


def installer_failure(returncode: int) -> str:
    """Why the installer failed, as kept in the job and shown by chargerctl."""
    if returncode == VERIFICATION_FAILED_EXIT:
        return _VERIFICATION_FAILED
    return f"installer exited {returncode}"


def install_failure_status(signed: bool, why: str) -> str:
    """The final status of a failed installation: SignedFirmwareStatusNotification has
    InstallVerificationFailed for a package that failed verification; the plain
    FirmwareStatusNotification of OCPP 1.6 only knows InstallationFailed."""
    if signed and why == _VERIFICATION_FAILED:
        return "InstallVerificationFailed"
    return "InstallationFailed"
