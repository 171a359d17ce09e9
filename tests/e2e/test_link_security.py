"""Security profiles 1-3 against a real TLS websocket CSMS, certificates made here.

The real daemon process connects to the bench CSMS (in this process, or as its own
process for the TLS 1.1 server); what is checked is what an operator sees: whether the
station connects, the daemon's log line, the security log on disk, the files' modes,
what GetConfiguration shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chargerd.bench.csms.certs import TestCa, server_context
from chargerd.bench.csms.csms import BenchCsms
from chargerd.bench.rig import StationRig

pytestmark = pytest.mark.e2e

CP = "CP-SEC"
PASSWORD = "initial-password-1"


def security_log(rig: StationRig) -> list[dict]:
    path = rig.state_dir / "security.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_event(rig: StationRig, kind: str, timeout: float = 20) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            for entry in security_log(rig):
                if entry["type"] == kind:
                    return entry
            await asyncio.sleep(0.1)


async def wait_log(rig: StationRig, text: str, timeout: float = 20) -> None:
    try:
        async with asyncio.timeout(timeout):
            while text not in rig.tail_log(200):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{text!r} not in the daemon's log:\n{rig.tail_log()}") from None


async def registered(rig: StationRig, timeout: float = 20) -> None:
    await rig.wait_status(
        lambda s: s["ocpp"]["registration"] == "Accepted" and s["ocpp"]["connected"],
        timeout=timeout,
        what="registration",
    )


def station(tmp_path: Path, url: str, **csms) -> StationRig:
    return StationRig(tmp_path / "station", csms_url=url, charge_point_id=CP, csms=csms)


async def test_basic_auth_refused_is_failed_to_authenticate_at_csms(tmp_path):
    csms = BenchCsms()
    await csms.start(basic_auth={CP: "the-csms-expects-this"})
    rig = station(tmp_path, csms.url, security_profile=1, basic_auth_password=PASSWORD)
    try:
        await rig.start()
        entry = await wait_event(rig, "FailedToAuthenticateAtCsms")
        assert "HTTP 401" in entry["techInfo"]
        await wait_log(rig, "refused the station's HTTP Basic credentials (HTTP 401)")
        assert not csms.received
        # once per failing streak, not once per retry
        await asyncio.sleep(3)
        kinds = [e["type"] for e in security_log(rig)]
        assert kinds.count("FailedToAuthenticateAtCsms") == 1
    finally:
        await rig.stop()
        await csms.stop()


async def test_a_server_certificate_of_another_ca_is_refused(tmp_path):
    ca = TestCa(tmp_path)
    cert, key = ca.issue("127.0.0.1", tmp_path / "s.pem", tmp_path / "s.key", server=True)
    (tmp_path / "other").mkdir()
    other = TestCa(tmp_path / "other")
    csms = BenchCsms()
    await csms.start(ssl_context=server_context(cert, key), basic_auth={CP: PASSWORD})
    rig = station(
        tmp_path, csms.url, security_profile=2, basic_auth_password=PASSWORD, ca_file=other.pem
    )
    try:
        await rig.start()
        entry = await wait_event(rig, "InvalidCentralSystemCertificate")
        assert "certificate verify failed" in entry["techInfo"]
        assert not csms.received
    finally:
        await rig.stop()
        await csms.stop()


async def test_a_hostname_mismatch_is_refused(tmp_path):
    ca = TestCa(tmp_path)
    # signed by the right CA, but for another name than the 127.0.0.1 the station dials
    cert, key = ca.issue("csms.example.org", tmp_path / "s.pem", tmp_path / "s.key", server=True)
    csms = BenchCsms()
    await csms.start(ssl_context=server_context(cert, key), basic_auth={CP: PASSWORD})
    rig = station(
        tmp_path, csms.url, security_profile=2, basic_auth_password=PASSWORD, ca_file=ca.pem
    )
    try:
        await rig.start()
        entry = await wait_event(rig, "InvalidCentralSystemCertificate")
        assert (
            "Hostname mismatch" in entry["techInfo"] or "IP address mismatch" in entry["techInfo"]
        )
        assert not csms.received
    finally:
        await rig.stop()
        await csms.stop()


async def test_an_expired_client_certificate_is_refused_and_said(tmp_path):
    ca = TestCa(tmp_path)
    cert, key = ca.issue("127.0.0.1", tmp_path / "s.pem", tmp_path / "s.key", server=True)
    csms = BenchCsms()
    await csms.start(ssl_context=server_context(cert, key, client_ca=ca.pem))
    rig = station(tmp_path, csms.url, security_profile=3, ca_file=ca.pem)
    certs = rig.state_dir / "certs"
    ca.issue(CP, certs / "charge_point.pem", certs / "charge_point.key", server=False, expired=True)
    try:
        await rig.start()
        await wait_log(rig, "cannot connect")
        log = rig.tail_log(200)
        assert "the station certificate" in log and "expired on" in log
        assert "requires a client certificate (security profile 3)" in log
        assert not csms.received
        st = await rig.status()
        assert not st["ocpp"]["connected"]
    finally:
        await rig.stop()
        await csms.stop()


class CsmsProcess:
    """``python -m chargerd.bench.csms`` as its own process, as a CSMS team runs it."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.control = tmp_path / "csms.sock"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chargerd.bench.csms", "--port", "0",
             "--control", str(self.control), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        self.url = ""

    async def __aenter__(self) -> CsmsProcess:
        assert self.proc.stdout is not None
        banner = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 15)
        self.url = banner.split()[-1].rstrip("/") + "/ocpp"  # "... listening on wss://..:P/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)

    def stations(self) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "chargerd.bench.csms", "stations", "--control",
             str(self.control)],
            capture_output=True, text=True, timeout=15,
        )  # fmt: skip
        return out.stdout


async def test_profile_3_against_a_csms_process_that_requires_client_certificates(tmp_path):
    ca = TestCa(tmp_path)
    cert, key = ca.issue("127.0.0.1", tmp_path / "s.pem", tmp_path / "s.key", server=True)
    args = ("--cert", str(cert), "--key", str(key), "--client-ca", str(ca.pem))
    async with CsmsProcess(tmp_path, *args) as csms:
        assert csms.url.startswith("wss://127.0.0.1:")
        rig = station(tmp_path, csms.url, security_profile=3, ca_file=ca.pem)
        certs = rig.state_dir / "certs"
        ca.issue(CP, certs / "charge_point.pem", certs / "charge_point.key", server=False)
        try:
            await rig.start()
            await registered(rig)
            assert CP in csms.stations()
            assert (await rig.status())["ocpp"]["security_profile"] == 3
            human = subprocess.run(
                [sys.executable, "-m", "chargerd.cli", "--socket", str(rig.socket), "status"],
                capture_output=True, text=True, timeout=15,
            )  # fmt: skip
            assert "security profile 3" in human.stdout, human.stdout + human.stderr
        finally:
            await rig.stop()


async def test_a_tls_1_1_csms_process_is_refused(tmp_path):
    ca = TestCa(tmp_path)
    cert, key = ca.issue("127.0.0.1", tmp_path / "s.pem", tmp_path / "s.key", server=True)
    try:
        server_context(cert, key, tls_max="1.1")
    except ValueError:
        pytest.skip("this OpenSSL cannot serve TLS 1.1 at all")
    args = ("--cert", str(cert), "--key", str(key), "--tls-max", "1.1")
    async with CsmsProcess(tmp_path, *args) as csms:
        assert csms.url.startswith("wss://127.0.0.1:")
        rig = station(
            tmp_path, csms.url, security_profile=2, basic_auth_password=PASSWORD, ca_file=ca.pem
        )
        try:
            await rig.start()
            entry = await wait_event(rig, "InvalidTLSVersion")
            assert "TLSv1.1 only" in entry["techInfo"] or "TLSv1 only" in entry["techInfo"]
            await wait_log(rig, "requires TLS 1.2 or newer")
            assert not (await rig.status())["ocpp"]["connected"]
        finally:
            await rig.stop()


async def test_a_csms_without_the_whitepaper_cipher_suites_is_refused(tmp_path):
    ca = TestCa(tmp_path)
    cert, key = ca.issue("127.0.0.1", tmp_path / "s.pem", tmp_path / "s.key", server=True)
    # TLS 1.2 with CBC suites only: none of the whitepaper's (AES-GCM)
    ctx = server_context(cert, key, tls_max="1.2", ciphers="ECDHE-ECDSA-AES128-SHA256")
    csms = BenchCsms()
    await csms.start(ssl_context=ctx, basic_auth={CP: PASSWORD})
    rig = station(
        tmp_path, csms.url, security_profile=2, basic_auth_password=PASSWORD, ca_file=ca.pem
    )
    try:
        await rig.start()
        entry = await wait_event(rig, "InvalidTLSCipherSuite")
        assert "ECDHE-ECDSA-AES128-SHA256" in entry["techInfo"]
        assert not csms.received
    finally:
        await rig.stop()
        await csms.stop()


async def test_profile_2_with_basic_auth_over_tls_1_2_connects(tmp_path):
    """The whitepaper's suites are enough for a TLS-1.2-only CSMS (no TLS 1.3 to hide behind)."""
    ca = TestCa(tmp_path)
    cert, key = ca.issue("127.0.0.1", tmp_path / "s.pem", tmp_path / "s.key", server=True)
    csms = BenchCsms()
    await csms.start(
        ssl_context=server_context(cert, key, tls_max="1.2"), basic_auth={CP: PASSWORD}
    )
    rig = station(
        tmp_path, csms.url, security_profile=2, basic_auth_password=PASSWORD, ca_file=ca.pem
    )
    try:
        await rig.start()
        await registered(rig)
        answer = await csms.call(CP, "GetConfiguration", {"key": ["SecurityProfile"]})
        assert answer["configurationKey"][0]["value"] == "2"
    finally:
        await rig.stop()
        await csms.stop()


async def test_a_profile_raise_that_cannot_connect_falls_back(tmp_path):
    ca = TestCa(tmp_path)
    csms = BenchCsms()  # ws:// only: a raise to TLS cannot connect here
    await csms.start(basic_auth={CP: PASSWORD})
    rig = station(
        tmp_path, csms.url, security_profile=1, basic_auth_password=PASSWORD, ca_file=ca.pem
    )
    try:
        await rig.start()
        await registered(rig)
        lower = await csms.call(CP, "ChangeConfiguration", {"key": "SecurityProfile", "value": "0"})
        assert lower["status"] == "Rejected"
        up = await csms.call(CP, "ChangeConfiguration", {"key": "SecurityProfile", "value": "2"})
        assert up["status"] == "Accepted"
        state = rig.state_dir / "security" / "link.json"
        assert json.loads(state.read_text()) == {"profile": 2, "previous": 1, "confirmed": False}
        await wait_log(rig, "back to security profile 1", timeout=40)
        await csms.wait_connected(CP, count=2, timeout=20)  # ws:// again, with profile 1
        await registered(rig)
        answer = await csms.call(CP, "GetConfiguration", {"key": ["SecurityProfile"]})
        assert answer["configurationKey"][0]["value"] == "1"
        assert json.loads(state.read_text())["profile"] == 1
        kinds = [e["type"] for e in security_log(rig)]
        assert kinds.count("ReconfigurationOfSecurityParameters") == 2  # the raise, the fallback
    finally:
        await rig.stop()
        await csms.stop()


async def test_a_profile_raise_1_to_2_moves_to_the_tls_url(tmp_path):
    ca = TestCa(tmp_path)
    cert, key = ca.issue("127.0.0.1", tmp_path / "s.pem", tmp_path / "s.key", server=True)
    plain, tls = BenchCsms(), BenchCsms()
    await plain.start(basic_auth={CP: PASSWORD})
    await tls.start(ssl_context=server_context(cert, key), basic_auth={CP: PASSWORD})
    rig = station(
        tmp_path,
        plain.url,
        security_profile=1,
        basic_auth_password=PASSWORD,
        ca_file=ca.pem,
        tls_url=tls.url,  # the CSMS's TLS endpoint is on another port
    )
    try:
        await rig.start()
        await registered(rig)
        up = await plain.call(CP, "ChangeConfiguration", {"key": "SecurityProfile", "value": "2"})
        assert up["status"] == "Accepted"
        await tls.wait_connected(CP, timeout=20)
        await registered(rig)
        assert not plain.is_connected(CP)
        state = json.loads((rig.state_dir / "security" / "link.json").read_text())
        assert state == {"profile": 2, "previous": None, "confirmed": True}
        # a restart stays at 2, on the TLS endpoint, although [csms] still says 1
        await rig.stop()
        await rig.start()
        await tls.wait_connected(CP, timeout=20, count=2)
        assert (await rig.status())["ocpp"]["security_profile"] == 2
    finally:
        await rig.stop()
        await plain.stop()
        await tls.stop()


async def test_a_profile_raise_2_to_3_connects_with_the_client_certificate(tmp_path):
    ca = TestCa(tmp_path)
    cert, key = ca.issue("127.0.0.1", tmp_path / "s.pem", tmp_path / "s.key", server=True)
    ctx = server_context(cert, key, client_ca=ca.pem)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # profile 2 stations (Basic) and 3 (certificate) alike
    csms = BenchCsms()
    await csms.start(ssl_context=ctx)
    rig = station(
        tmp_path, csms.url, security_profile=2, basic_auth_password=PASSWORD, ca_file=ca.pem
    )
    certs = rig.state_dir / "certs"
    ca.issue(CP, certs / "charge_point.pem", certs / "charge_point.key", server=False)
    try:
        await rig.start()
        await registered(rig)
        up = await csms.call(CP, "ChangeConfiguration", {"key": "SecurityProfile", "value": "3"})
        assert up["status"] == "Accepted"
        await csms.wait_connected(CP, count=2, timeout=20)
        await registered(rig)
        state = json.loads((rig.state_dir / "security" / "link.json").read_text())
        assert state == {"profile": 3, "previous": None, "confirmed": True}
    finally:
        await rig.stop()
        await csms.stop()


async def test_an_authorization_key_change_survives_a_kill_9(tmp_path):
    csms = BenchCsms()
    await csms.start(basic_auth={CP: PASSWORD})
    rig = station(tmp_path, csms.url, security_profile=1, basic_auth_password=PASSWORD)
    new_key = "00112233445566778899AABBCCDDEEFF0A0B0C0D"  # 20 bytes, the whitepaper's hex form
    try:
        await rig.start()
        await registered(rig)
        bad = await csms.call(
            CP, "ChangeConfiguration", {"key": "AuthorizationKey", "value": "short"}
        )
        assert bad["status"] == "Rejected"
        ok = await csms.call(
            CP, "ChangeConfiguration", {"key": "AuthorizationKey", "value": new_key}
        )
        assert ok["status"] == "Accepted"
        # write-only: the CSMS and the technician never read it back
        got = await csms.call(CP, "GetConfiguration", {"key": ["AuthorizationKey"]})
        assert got["configurationKey"] == [{"key": "AuthorizationKey", "readonly": False}]
        shown = await rig.ctl("config.get", keys=["AuthorizationKey"])
        assert shown["configuration_key"][0]["value"] is None
        frames = await rig.ctl("log", lines=200)  # chargerctl log: the frame, key masked
        assert any("AuthorizationKey" in f["frame"] for f in frames["frames"])
        assert new_key not in json.dumps(frames)
        path = rig.state_dir / "security" / "authorization_key"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert (
            new_key not in rig.tail_log(500)
            and new_key not in (rig.state_dir / "security.log").read_text()
        )
        # the CSMS now expects the new key; the station dies before it ever reconnected
        csms.basic_auth[CP] = bytes.fromhex(new_key)
        rig.kill9()
        failures = len(csms.auth_failures)
        await rig.start()
        await csms.wait_connected(CP, count=2, timeout=20)
        await registered(rig)
        assert len(csms.auth_failures) == failures  # the new key, at the first attempt
    finally:
        await rig.stop()
        await csms.stop()
