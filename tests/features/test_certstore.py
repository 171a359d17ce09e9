"""The certificate directory: modes, hash data, roots, the station certificate swap."""

from __future__ import annotations

import hashlib
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from chargerd.features.certstore import (
    CertHash,
    CertStore,
    CertStoreError,
    RootKind,
    cert_hash,
)
from tests.features.certutil import make_ca, make_leaf


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_directory_is_private(tmp_path):
    store = CertStore(tmp_path / "certs")
    assert _mode(store.directory) == 0o700
    store.new_pending_key()
    assert _mode(store.pending_key_path) == 0o600


def test_hash_data_follows_the_whitepaper():
    ca_key, ca = make_ca("root")
    _, leaf = make_leaf(ca_key, ca, "CP-1")
    h = cert_hash(leaf, ca)
    assert h.hash_algorithm == "SHA256"
    assert h.issuer_name_hash == hashlib.sha256(ca.subject.public_bytes()).hexdigest()
    point = ca_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert h.issuer_key_hash == hashlib.sha256(point).hexdigest()
    assert h.serial_number == format(leaf.serial_number, "x")
    assert CertHash.from_ocpp(h.to_ocpp()) == h


def test_install_find_delete_roots_and_notify(tmp_path):
    store = CertStore(tmp_path / "certs")
    seen: list[str] = []
    store.on_change(seen.append)
    _, ca = make_ca("csms root")
    pem = ca.public_bytes(serialization.Encoding.PEM)
    path = store.install_root(RootKind.CSMS, pem)
    assert _mode(path) == 0o600
    store.install_root(RootKind.CSMS, pem)  # the same root twice: one file
    assert store.count(RootKind.CSMS) == 1 and store.count(RootKind.MANUFACTURER) == 0
    assert store.roots_pem(RootKind.CSMS).count("BEGIN CERTIFICATE") == 1
    found = store.find(store.installed(RootKind.CSMS)[0])
    assert found == (RootKind.CSMS, path)
    assert store.delete_root(path) == RootKind.CSMS
    assert store.count() == 0
    assert seen == ["csms_roots", "csms_roots", "csms_roots"]


def test_a_leaf_or_garbage_is_not_a_root(tmp_path):
    store = CertStore(tmp_path / "certs")
    ca_key, ca = make_ca("root")
    _, leaf = make_leaf(ca_key, ca, "CP-1")
    with pytest.raises(CertStoreError, match="not a CA"):
        store.install_root(RootKind.CSMS, leaf.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CertStoreError, match="PEM"):
        store.install_root(RootKind.CSMS, "hello")
    assert store.count() == 0


def test_station_certificate_swap_takes_the_pending_key(tmp_path):
    store = CertStore(tmp_path / "certs")
    seen: list[str] = []
    store.on_change(seen.append)
    key = store.new_pending_key()
    ca_key, ca = make_ca("root")
    _, leaf = make_leaf(ca_key, ca, "CP-1", public_key=key.public_key())
    store.install_station_certificate([leaf])
    assert not store.pending_key_path.exists()
    assert _mode(store.station_key_path) == 0o600
    assert store.station_certificate() == leaf
    assert store.station_expiry() == leaf.not_valid_after_utc
    assert seen == ["station"]


def test_a_swap_cut_by_a_crash_is_finished_at_start(tmp_path):
    store = CertStore(tmp_path / "certs")
    key = store.new_pending_key()
    ca_key, ca = make_ca("root")
    _, leaf = make_leaf(ca_key, ca, "CP-1", public_key=key.public_key())
    # The crash came after the marker was written, before the renames.
    (store.directory / "charge_point.pem.new").write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
    )
    (store.directory / "charge_point.swap").write_bytes(b"swap\n")
    again = CertStore(store.directory)
    assert again.station_certificate() == leaf
    assert again.station_key_path.exists() and not again.pending_key_path.exists()


def test_issuer_key_hash_of_an_rsa_issuer():
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "rsa root")])
    now = datetime.datetime.now(datetime.UTC)
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x00AB)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pkcs1 = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    h = cert_hash(root, algorithm="SHA384")
    assert h.issuer_key_hash == hashlib.sha384(pkcs1).hexdigest()
    assert h.serial_number == "ab"
