"""Security profiles 1-3 and AuthorizationKey: the decisions and the files, no network."""

from __future__ import annotations

import asyncio
import json
import ssl
import stat

import pytest

from chargerd.bench.csms.certs import TestCa
from chargerd.features.configuration import ConfigurationService
from chargerd.features.link_security import (
    LinkSecurity,
    ProfileState,
    after_connect,
    after_connect_failure,
    build_ssl_context,
    key_password,
    raise_refusal,
    url_for_profile,
)
from chargerd.link.tlsdiag import WHITEPAPER_CIPHERS
from chargerd.store import Store

CP = "CP-SEC"


class FakeLink:
    def __init__(self) -> None:
        self.endpoints: list[dict] = []
        self.reconnects: list[str] = []
        self.on_connect = None
        self.on_failure = None

    def set_endpoint(self, **kw) -> None:
        self.endpoints.append(kw)

    def reconnect(self, why: str) -> None:
        self.reconnects.append(why)

    def add_connect_listener(self, cb) -> None:
        self.on_connect = cb

    def add_connect_failure_listener(self, cb) -> None:
        self.on_failure = cb


@pytest.fixture
def events():
    return []


@pytest.fixture
def make(tmp_path, events):
    def make(*, profile=1, password="initial-password-1", ca_file=None, url="ws://h:9000/ocpp"):
        store = Store.open(tmp_path / "c.db")
        config = ConfigurationService(store)
        sec = LinkSecurity(
            url=url,
            profile=profile,
            charge_point_id=CP,
            password=password,
            ca_file=ca_file,
            state_dir=tmp_path,
            certs_dir=tmp_path / "certs",
            emit=lambda kind, info=None: events.append((kind, info)),
            fallback_after=3,
            reconnect_delay_s=0,
        )
        sec.declare_keys(config)
        link = FakeLink()
        sec.attach(link)
        return sec, config, link

    return make


# -- AuthorizationKey ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, password",
    [
        ("00112233445566778899aabbccddeeff", bytes.fromhex("00112233445566778899aabbccddeeff")),
        ("AB" * 20, b"\xab" * 20),  # 20 bytes: the whitepaper's maximum in hex
        ("sixteen-chars-ok", b"sixteen-chars-ok"),
        ("x" * 40, b"x" * 40),
        ("short", None),
        ("x" * 41, None),
        ("sixteen chars no", None),  # a space
        ("AB" * 21, None),  # 42 hex digits: not hex form, and longer than 40
        ("é" * 16, None),
    ],
)
def test_authorization_key_forms(value, password):
    assert key_password(value) == password


def test_authorization_key_is_write_only_stored_0600_and_used_next(make, tmp_path, events):
    sec, config, link = make()
    assert sec.basic_auth() == (CP, b"initial-password-1")
    change = config.change("AuthorizationKey", "00112233445566778899AABBCCDDEEFF")
    assert change.status == "Accepted"
    path = tmp_path / "security" / "authorization_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # never shown: neither GetConfiguration nor chargerctl config (same key_value)
    assert config.key_value("AuthorizationKey").value is None
    answer = config.on_get_configuration(key=["AuthorizationKey"])
    assert answer.configuration_key[0].value is None
    assert "00112233" not in json.dumps([kv.__dict__ for kv in answer.configuration_key])
    # the next connection uses it; the link is not dropped for it
    assert link.endpoints[-1]["basic_auth"] == (
        CP,
        bytes.fromhex("00112233445566778899AABBCCDDEEFF"),
    )
    assert link.reconnects == []
    assert events == [("ReconfigurationOfSecurityParameters", "AuthorizationKey")]
    # a new process reads it back (the [csms] password is only the initial value)
    sec2, _, _ = make()
    assert sec2.basic_auth() == (CP, bytes.fromhex("00112233445566778899AABBCCDDEEFF"))


def test_a_bad_authorization_key_is_rejected_and_changes_nothing(make, tmp_path, events):
    sec, config, _ = make()
    change = config.change("AuthorizationKey", "too-short")
    assert change.status == "Rejected" and "16 to 40" in change.reason
    assert not (tmp_path / "security" / "authorization_key").exists()
    assert sec.basic_auth() == (CP, b"initial-password-1") and events == []


def test_authorization_key_is_not_an_ocpp_table_key(make):
    _, config, _ = make()
    with pytest.raises(ValueError, match=r"ocpp.AuthorizationKey: set in the \[csms\] table"):
        config.apply_initial({"AuthorizationKey": "x" * 20})


# -- SecurityProfile -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "current, new, kw, refused",
    [
        (2, 1, {}, "never lowered"),
        (1, 0, {}, "never lowered"),
        (1, 1, {}, None),
        (0, 1, {"has_key": False}, "needs an AuthorizationKey"),
        (1, 2, {"has_csms_root": False}, "CSMS root certificate"),
        (2, 3, {"has_station_cert": False}, "station's certificate"),
        (1, 3, {}, None),
        (1, 4, {}, "0, 1, 2 or 3"),
    ],
)
def test_raise_rules(current, new, kw, refused):
    ok = {"has_key": True, "has_csms_root": True, "has_station_cert": True}
    reason = raise_refusal(current, new, **{**ok, **kw})
    assert (reason is None) if refused is None else (refused in reason)


def test_fallback_state_machine():
    raised = ProfileState(profile=2, previous=1, confirmed=False)
    s = after_connect_failure(raised, 3)
    s = after_connect_failure(s, 3)
    assert s.profile == 2 and s.failures == 2
    assert after_connect_failure(s, 3) == ProfileState(profile=1)
    assert after_connect(s) == ProfileState(profile=2)  # confirmed: no way back
    confirmed = ProfileState(profile=2)
    assert after_connect_failure(confirmed, 3) is confirmed  # a CSMS outage changes nothing


def test_url_follows_the_profile():
    assert url_for_profile("ws://csms:9000/ocpp", 2) == "wss://csms:9000/ocpp"
    assert url_for_profile("wss://csms/ocpp", 1) == "ws://csms/ocpp"
    # an installer who knows the CSMS's TLS endpoint names it: [csms] tls_url
    assert url_for_profile("ws://csms:80/ocpp", 3, "wss://csms:443/ocpp") == "wss://csms:443/ocpp"
    assert url_for_profile("ws://csms:80/ocpp", 1, "wss://csms:443/ocpp") == "ws://csms:80/ocpp"


def test_a_lower_profile_is_rejected(make, events):
    _, config, _ = make(profile=1)
    change = config.change("SecurityProfile", "0")
    assert change.status == "Rejected" and "never lowered" in change.reason
    assert config.key_value("SecurityProfile").value == "1" and events == []


async def test_a_raise_persists_the_previous_profile_then_falls_back(make, tmp_path, events):
    ca = TestCa(tmp_path)
    sec, config, link = make(profile=1, ca_file=ca.pem)
    assert config.change("SecurityProfile", "2").status == "Accepted"
    state_file = tmp_path / "security" / "link.json"
    assert json.loads(state_file.read_text()) == {"profile": 2, "previous": 1, "confirmed": False}
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    ep = link.endpoints[-1]
    assert ep["url"].startswith("wss://") and isinstance(ep["ssl_context"], ssl.SSLContext)
    assert ep["basic_auth"] == (CP, b"initial-password-1")
    for _ in range(3):
        await asyncio.sleep(0)  # the reconnect task runs (no real time: delay 0)
    assert link.reconnects == ["security profile 2"]
    assert events[-1] == ("ReconfigurationOfSecurityParameters", "SecurityProfile 1 -> 2")
    # a restart before the new profile ever connected keeps trying it
    sec2, _, _ = make(profile=1, ca_file=ca.pem)
    assert sec2.state == ProfileState(profile=2, previous=1, confirmed=False)
    for _ in range(3):
        link.on_failure("tls", "TLS handshake failed")
    assert sec.profile == 1 and config.key_value("SecurityProfile").value == "1"
    assert json.loads(state_file.read_text()) == {"profile": 1, "previous": None, "confirmed": True}
    assert link.endpoints[-1]["url"].startswith("ws://")
    assert link.endpoints[-1]["ssl_context"] is None
    assert link.reconnects[-1] == "back to security profile 1"  # at once, not after a backoff
    assert events[-1][0] == "ReconfigurationOfSecurityParameters"


def test_a_raise_that_connects_is_kept(make, tmp_path):
    ca = TestCa(tmp_path)
    sec, config, link = make(profile=1, ca_file=ca.pem)
    assert config.change("SecurityProfile", "2").status == "Accepted"
    link.on_connect()
    for _ in range(5):
        link.on_failure("network", "ConnectionRefusedError")
    assert sec.profile == 2
    state = json.loads((tmp_path / "security" / "link.json").read_text())
    assert state == {"profile": 2, "previous": None, "confirmed": True}


def test_the_configured_profile_cannot_lower_a_stored_one(make, tmp_path):
    ca = TestCa(tmp_path)
    _, config, _ = make(profile=1, ca_file=ca.pem)
    config.change("SecurityProfile", "2")
    sec, _, _ = make(profile=1, ca_file=ca.pem)
    assert sec.profile == 2
    sec3, _, _ = make(profile=3, url="wss://h/ocpp", ca_file=ca.pem)  # the file raises it
    assert sec3.profile == 3


def test_connect_failures_raise_one_event_per_failing_streak(make, events):
    _, _, link = make()
    for _ in range(3):
        link.on_failure("auth", "HTTP 401")
    link.on_failure("server_certificate", "certificate verify failed")
    link.on_failure("network", "refused")
    assert [k for k, _ in events] == [
        "FailedToAuthenticateAtCsms",
        "InvalidCentralSystemCertificate",
    ]
    link.on_connect()
    link.on_failure("tls_version", "TLSv1.1 only")
    link.on_failure("cipher", "no shared cipher")
    link.on_failure("auth", "HTTP 401")
    assert [k for k, _ in events][2:] == [
        "InvalidTLSVersion",
        "InvalidTLSCipherSuite",
        "FailedToAuthenticateAtCsms",
    ]


def test_ssl_context_offers_tls_1_2_and_the_whitepaper_suites_only(tmp_path):
    ca = TestCa(tmp_path)
    ctx = build_ssl_context([ca.pem])
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == set(WHITEPAPER_CIPHERS)
