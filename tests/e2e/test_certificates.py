"""Certificate management end to end, the real daemon against the real bench CSMS: the CSMS
installs its root, asks for a CSR, signs it with its test CA and sends it back; the station
swaps it in; a certificate with a wrong CN is refused; roots are listed and deleted."""

from __future__ import annotations

import asyncio
import datetime
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from chargerd.bench.csms.certs import TestCa, sign_csr
from chargerd.features.certstore import cert_hash

pytestmark = pytest.mark.e2e

CP = "CP-TEST"


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def install(csms, kind: str, cert: x509.Certificate) -> str:
    answer = await csms.call(
        CP, "InstallCertificate", {"certificateType": kind, "certificate": pem(cert)}
    )
    return answer["status"]


async def ask_for_csr(csms) -> x509.CertificateSigningRequest:
    before = len(csms.calls("SignCertificate", CP))
    answer = await csms.call(
        CP, "ExtendedTriggerMessage", {"requestedMessage": "SignChargePointCertificate"}
    )
    assert answer == {"status": "Accepted"}
    got = await csms.wait_for("SignCertificate", lambda r: r.cp_id == CP, count=before + 1)
    return x509.load_pem_x509_csr(got[-1].payload["csr"].encode())


async def test_csr_signed_and_swapped_in(csms, make_registered_rig, tmp_path):
    rig = await make_registered_rig()
    ca = TestCa(tmp_path, days=90)
    assert await install(csms, "CentralSystemRootCertificate", ca.cert) == "Accepted"
    changed = await csms.call(CP, "ChangeConfiguration", {"key": "CpoName", "value": "Acme CPO"})
    assert changed == {"status": "Accepted"}

    # The bench CSMS signs each CSR with its test CA and answers with CertificateSigned.
    csms.csr_signer = lambda csr_pem: sign_csr(ca, csr_pem)
    csr = await ask_for_csr(csms)
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CP
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Acme CPO"
    async with asyncio.timeout(10):
        while not csms.certificates_signed:  # the station's answer to CertificateSigned
            await asyncio.sleep(0.05)
    ((cp_id, chain, answer),) = csms.certificates_signed
    assert (cp_id, answer) == (CP, "Accepted")

    status = await rig.status()
    leaf = x509.load_pem_x509_certificate(chain.encode())
    assert status["certificates"] == {
        "station_certificate_expiry": leaf.not_valid_after_utc.isoformat(),
        "csms_roots": 1,
        "manufacturer_roots": 0,
    }
    certs = rig.state_dir / "certs"
    assert (certs / "charge_point.pem").read_text() == chain
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    assert stat.S_IMODE((certs / "charge_point.key").stat().st_mode) == 0o600
    key = serialization.load_pem_private_key((certs / "charge_point.key").read_bytes(), None)
    assert key.public_key() == leaf.public_key()
    # The key never went over the wire.
    assert not any("PRIVATE KEY" in f.frame for f in csms.frames)


async def test_certificate_with_a_wrong_cn_refused(csms, make_registered_rig, tmp_path):
    rig = await make_registered_rig()
    ca = TestCa(tmp_path)
    assert await install(csms, "CentralSystemRootCertificate", ca.cert) == "Accepted"
    csr = await ask_for_csr(csms)
    # The CSMS signs the right key, but under another charge point's name.
    now = datetime.datetime.now(datetime.UTC)
    wrong_cn = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CP-OTHER")]))
        .issuer_name(ca.cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )
    answer = await csms.call(CP, "CertificateSigned", {"certificateChain": pem(wrong_cn)})
    assert answer == {"status": "Rejected"}
    await csms.wait_for(
        "SecurityEventNotification",
        lambda r: r.cp_id == CP and r.payload.get("type") == "InvalidChargePointCertificate",
    )
    assert (await rig.status())["certificates"]["station_certificate_expiry"] is None
    assert not (rig.state_dir / "certs" / "charge_point.pem").exists()


async def test_install_list_delete_round_trip(csms, make_registered_rig, tmp_path):
    rig = await make_registered_rig()
    (tmp_path / "csms").mkdir()
    (tmp_path / "maker").mkdir()
    csms_root, maker = TestCa(tmp_path / "csms"), TestCa(tmp_path / "maker")
    assert await install(csms, "CentralSystemRootCertificate", csms_root.cert) == "Accepted"
    assert await install(csms, "ManufacturerRootCertificate", maker.cert) == "Accepted"
    for kind, cert in (
        ("CentralSystemRootCertificate", csms_root.cert),
        ("ManufacturerRootCertificate", maker.cert),
    ):
        ids = await csms.call(CP, "GetInstalledCertificateIds", {"certificateType": kind})
        assert ids == {"status": "Accepted", "certificateHashData": [cert_hash(cert).to_ocpp()]}
    assert (await rig.status())["certificates"]["manufacturer_roots"] == 1

    hash_of = {"certificateHashData": cert_hash(maker.cert).to_ocpp()}
    assert await csms.call(CP, "DeleteCertificate", hash_of) == {"status": "Accepted"}
    assert await csms.call(CP, "DeleteCertificate", hash_of) == {"status": "NotFound"}
    last = {"certificateHashData": cert_hash(csms_root.cert).to_ocpp()}
    assert await csms.call(CP, "DeleteCertificate", last) == {"status": "Failed"}
    ids = await csms.call(
        CP, "GetInstalledCertificateIds", {"certificateType": "ManufacturerRootCertificate"}
    )
    assert ids == {"status": "NotFound"}
    assert (await rig.status())["certificates"]["csms_roots"] == 1
