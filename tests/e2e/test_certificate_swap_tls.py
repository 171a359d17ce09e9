"""The station certificate renewed under security profile 3: the real daemon, the real TLS
bench CSMS that requires a client certificate of its CA.  After CertificateSigned the
station reconnects once and presents the new certificate."""

from __future__ import annotations

import asyncio

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chargerd.bench.csms.certs import TestCa, server_context, sign_csr
from chargerd.bench.csms.csms import BenchCsms
from chargerd.bench.rig import StationRig

pytestmark = pytest.mark.e2e

CP = "CP-SWAP"


def presented(csms: BenchCsms) -> x509.Certificate:
    """The client certificate of the station's current TLS connection, as the CSMS saw it."""
    ssl_object = csms._session(CP).ws.transport.get_extra_info("ssl_object")
    return x509.load_der_x509_certificate(ssl_object.getpeercert(binary_form=True))


async def test_new_station_certificate_presented_after_one_reconnection(tmp_path):
    ca = TestCa(tmp_path, days=90)
    cert, key = ca.issue("127.0.0.1", tmp_path / "s.pem", tmp_path / "s.key", server=True)
    csms = BenchCsms()
    await csms.start(ssl_context=server_context(cert, key, client_ca=ca.pem))
    rig = StationRig(
        tmp_path / "station",
        csms_url=csms.url,
        charge_point_id=CP,
        csms={"security_profile": 3, "ca_file": str(ca.pem)},
    )
    certs = rig.state_dir / "certs"
    ca.issue(CP, certs / "charge_point.pem", certs / "charge_point.key", server=False)
    try:
        await rig.start()
        await csms.wait_connected(CP, timeout=20)
        await rig.wait_status(
            lambda s: s["ocpp"]["registration"] == "Accepted", timeout=20, what="registration"
        )
        old = presented(csms)
        root = ca.cert.public_bytes(serialization.Encoding.PEM).decode()
        answer = await csms.call(
            CP,
            "InstallCertificate",
            {"certificateType": "CentralSystemRootCertificate", "certificate": root},
        )
        assert answer == {"status": "Accepted"}
        assert csms.connections(CP) == 1  # a new root changes nothing on the running link

        answer = await csms.call(
            CP, "ExtendedTriggerMessage", {"requestedMessage": "SignChargePointCertificate"}
        )
        assert answer == {"status": "Accepted"}
        (request,) = await csms.wait_for("SignCertificate", lambda r: r.cp_id == CP)
        chain = sign_csr(ca, request.payload["csr"])
        answer = await csms.call(CP, "CertificateSigned", {"certificateChain": chain})
        assert answer == {"status": "Accepted"}

        await csms.wait_connected(CP, timeout=20, count=2)
        new = presented(csms)
        assert new == x509.load_pem_x509_certificate(chain.encode())
        assert new.serial_number != old.serial_number
        await asyncio.sleep(2)  # no second reconnection follows
        assert csms.connections(CP) == 2
        assert csms.is_connected(CP)
    finally:
        await rig.stop()
        await csms.stop()
