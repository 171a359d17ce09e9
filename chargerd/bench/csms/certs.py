"""A throw-away CA with server and client certificates, for wss:// on the bench.

Security profile 2: ``python -m chargerd.bench.csms --cert server.pem --key
server.key`` and the station's ``[csms] ca_file = "ca.pem"``.  Profile 3 adds
``--client-ca ca.pem`` (the CSMS requires a certificate this CA signed) and the
station's own certificate, ``charge_point.pem`` / ``charge_point.key`` in its
certificates directory.  What a test makes in a second, and what a CSMS team
uses to try TLS before its real PKI is at hand.  Never for production: the
keys are written unencrypted.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chargerd test CA")])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class TestCa:
    """A CA in ``directory`` (ca.pem, ca.key) that signs leaf certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, *, days: int = 1) -> None:
        self.directory = Path(directory)
        self.days = days
        now = datetime.datetime.now(datetime.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_CA_NAME)
            .issuer_name(_CA_NAME)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.directory / "ca.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, name: str, cert_path: Path, key_path: Path, *, server: bool, expired: bool = False
    ) -> tuple[Path, Path]:
        """A leaf certificate for ``name``: a server (name = host) or a client (name = CN).

        ``expired``: valid from two days ago until yesterday (to see it refused)."""
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            now -= datetime.timedelta(days=self.days + 1)
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(_CA_NAME)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([_san(name)]), False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path


def make_ca_and_server_cert(
    directory: Path, *, host: str = "127.0.0.1", days: int = 1
) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key) in ``directory``: a CA and a server certificate for
    ``host`` (an IP address or a DNS name) that it signed."""
    ca = TestCa(directory, days=days)
    cert, key = ca.issue(host, directory / "server.pem", directory / "server.key", server=True)
    return ca.pem, cert, key


TLS_VERSIONS = {
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def server_context(
    cert: Path,
    key: Path | None = None,
    *,
    client_ca: Path | None = None,
    tls_max: str | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """The bench CSMS's TLS: TLS 1.2+ by default; ``client_ca`` requires a client
    certificate it signed (profile 3).  ``tls_max="1.1"`` plays an outdated CSMS that
    speaks TLS 1.0/1.1 only, ``ciphers`` (OpenSSL names, TLS 1.2) one whose suites are not
    the whitepaper's: what a station must refuse.  ValueError if this OpenSSL cannot."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key) if key else None)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(client_ca))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            if tls_max == "1.1":
                ctx.set_ciphers("ALL:@SECLEVEL=0")
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            else:
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                if tls_max is not None:
                    ctx.maximum_version = TLS_VERSIONS[tls_max]
            if ciphers is not None:
                ctx.set_ciphers(ciphers)
        except (ssl.SSLError, KeyError) as exc:
            raise ValueError(f"this OpenSSL cannot serve that TLS setting: {exc}") from None
    return ctx


def sign_csr(ca: TestCa, csr_pem: str | bytes, *, days: int | None = None) -> str:
    """What a CSMS does with a station's SignCertificate: a client certificate for the CSR's
    subject and key, signed by ``ca``; returned as the PEM ``certificateChain``."""
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    csr = x509.load_pem_x509_csr(data)
    if not csr.is_signature_valid:
        raise ValueError("the CSR's signature is not valid")
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days or ca.days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()
