"""Security profiles 1 and 2 on the bench: HTTP Basic credentials and wss://.

The bench CSMS checks the station's Basic credentials when given some, and
serves TLS with a certificate made here by a test CA; the real daemon connects
with the matching [csms] settings.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from chargerd.bench.csms.certs import TestCa, make_ca_and_server_cert
from chargerd.bench.csms.csms import BenchCsms
from chargerd.bench.rig import StationRig

pytestmark = pytest.mark.e2e

CP = "CP-TEST"


async def _registered(rig: StationRig, timeout: float = 20) -> None:
    await rig.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted", timeout=timeout, what="registration"
    )


@pytest.mark.parametrize("password, accepted", [("s3cret-pass", True), ("wrong-pass", False)])
async def test_basic_auth_profile_1(tmp_path, password, accepted):
    csms = BenchCsms()
    await csms.start(basic_auth={CP: "s3cret-pass"})
    rig = StationRig(
        tmp_path / "station",
        csms_url=csms.url,
        charge_point_id=CP,
        csms={"security_profile": 1, "basic_auth_password": password},
    )
    try:
        await rig.start()
        if accepted:
            await _registered(rig)
            assert csms.is_connected(CP) and not csms.auth_failures
        else:
            for _ in range(100):
                if csms.auth_failures:
                    break
                await asyncio.sleep(0.05)
            assert csms.auth_failures and set(csms.auth_failures) == {CP}
            st = await rig.status()
            assert not st["ocpp"]["connected"] and not csms.received
    finally:
        await rig.stop()
        await csms.stop()


async def test_wss_profile_2_with_a_test_ca(tmp_path):
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(cert), str(key))
    csms = BenchCsms()
    await csms.start(ssl_context=tls, basic_auth={CP: "s3cret-pass"})
    assert csms.url.startswith("wss://127.0.0.1:")
    rig = StationRig(
        tmp_path / "station",
        csms_url=csms.url,
        charge_point_id=CP,
        csms={"security_profile": 2, "basic_auth_password": "s3cret-pass", "ca_file": str(ca)},
    )
    try:
        await rig.start()
        await _registered(rig)
        [boot] = csms.calls("BootNotification", CP)
        assert boot.payload["chargePointVendor"] == "chargerd"
    finally:
        await rig.stop()
        await csms.stop()


async def test_wss_refuses_a_server_the_ca_did_not_sign(tmp_path):
    _, cert, key = make_ca_and_server_cert(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(cert), str(key))
    csms = BenchCsms()
    await csms.start(ssl_context=tls)
    rig = StationRig(
        tmp_path / "station",
        csms_url=csms.url,
        charge_point_id=CP,
        csms={"security_profile": 2, "basic_auth_password": "pw", "ca_file": str(other_ca)},
    )
    try:
        await rig.start()
        for _ in range(60):
            if "certificate" in rig.tail_log():
                break
            await asyncio.sleep(0.1)
        assert "certificate verify failed" in rig.tail_log()
        assert not csms.received
    finally:
        await rig.stop()
        await csms.stop()


async def test_wss_profile_3_with_a_client_certificate(tmp_path):
    ca = TestCa(tmp_path)
    cert, key = ca.issue("127.0.0.1", tmp_path / "server.pem", tmp_path / "server.key", server=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(cert), str(key))
    tls.verify_mode = ssl.CERT_REQUIRED  # the CSMS wants the station's certificate
    tls.load_verify_locations(cafile=str(ca.pem))
    csms = BenchCsms()
    await csms.start(ssl_context=tls)
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
        await _registered(rig)
    finally:
        await rig.stop()
        await csms.stop()


async def test_wss_profile_3_without_a_client_certificate_is_refused(tmp_path):
    ca = TestCa(tmp_path)
    cert, key = ca.issue("127.0.0.1", tmp_path / "server.pem", tmp_path / "server.key", server=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(cert), str(key))
    tls.verify_mode = ssl.CERT_REQUIRED
    tls.load_verify_locations(cafile=str(ca.pem))
    csms = BenchCsms()
    await csms.start(ssl_context=tls)
    rig = StationRig(
        tmp_path / "station",
        csms_url=csms.url,
        charge_point_id=CP,
        csms={"security_profile": 3, "ca_file": str(ca.pem)},
    )
    try:
        await rig.start()
        for _ in range(60):
            if "cannot connect" in rig.tail_log():
                break
            await asyncio.sleep(0.1)
        assert "needs a client certificate" in rig.tail_log()
        assert "requires a client certificate (security profile 3)" in rig.tail_log()
        assert not csms.received
    finally:
        await rig.stop()
        await csms.stop()
