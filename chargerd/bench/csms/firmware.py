"""Bench helpers for signed firmware: a manufacturer root, a firmware signing certificate,
mock firmware files and their signatures (what a manufacturer's release process makes).

Never for production: keys live in memory or unencrypted files.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chargerd bench manufacturer"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass
class Manufacturer:
    """A manufacturer root and a firmware signing certificate it issued."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    signing_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    signing_cert: x509.Certificate

    @property
    def root_pem(self) -> str:
        return self.root.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def signing_pem(self) -> str:
        return self.signing_cert.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, data: bytes) -> str:
        """The base64 SHA-256 signature of ``data`` (RSA PKCS#1 v1.5 or ECDSA)."""
        key = self.signing_key
        if isinstance(key, rsa.RSAPrivateKey):
            sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        else:
            sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(sig).decode()

    def install_root(self, certs_dir: Path) -> Path:
        """Put the root where the station looks for manufacturer roots."""
        d = Path(certs_dir) / "manufacturer_roots"
        d.mkdir(parents=True, exist_ok=True)
        path = d / "bench-manufacturer.pem"
        path.write_text(self.root_pem)
        return path


def make_manufacturer(*, rsa_signing: bool = True, days: int = 30) -> Manufacturer:
    now = datetime.datetime.now(datetime.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(_name("bench manufacturer root"))
        .issuer_name(_name("bench manufacturer root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    signing_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if rsa_signing
        else ec.generate_private_key(ec.SECP256R1())
    )
    signing = (
        x509.CertificateBuilder()
        .subject_name(_name("bench firmware signing"))
        .issuer_name(root.subject)
        .public_key(signing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    return Manufacturer(root_key, root, signing_key, signing)


def mock_firmware(version: str, *, fail: bool = False, size: int = 200_000) -> bytes:
    """A file the bench's mock installer "installs" (chargerd/bench/mock_installer.py)."""
    head = f"chargerd mock firmware\nversion={version}\n" + ("fail=1\n" if fail else "")
    body = head.encode()
    return body + b"#" * max(0, size - len(body))
