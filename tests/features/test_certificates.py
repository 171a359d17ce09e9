"""Certificate management through the router, as the CSMS sends it: CSR, CertificateSigned,
Install/Delete/GetInstalledCertificateIds, ExtendedTriggerMessage, the expiry watch."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from chargerd.clock import ManualClock
from chargerd.features.certificates import (
    CertificateService,
    check_signed_chain,
    declare_certificate_keys,
    renewal_delay,
)
from chargerd.features.certstore import CertStore, RootKind, cert_hash
from chargerd.features.configuration import ConfigurationService
from chargerd.link.frames import InboundCall
from chargerd.link.router import Router
from chargerd.store import Store
from tests.features.certutil import make_ca, make_leaf

CP = "CP-7"


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class Station:
    """The service wired as the daemon does, on a real store and a recording link."""

    def __init__(self, tmp_path, **keys) -> None:
        self.store = Store.open(tmp_path / "chargerd.db")
        self.config = ConfigurationService(self.store)
        declare_certificate_keys(self.config, **keys)
        self.certs = CertStore(tmp_path / "certs")
        self.clock = ManualClock(datetime.datetime.now(datetime.UTC))
        self.sent: list[tuple[str, dict]] = []
        self.sent_at: list[datetime.datetime] = []
        self.events: list[tuple[str, str | None]] = []
        self.changes: list[str] = []
        self.certs.on_change(self.changes.append)
        self.svc = CertificateService(
            store=self.certs,
            config=self.config,
            clock=self.clock,
            charge_point_id=CP,
            call=self.call,
            emit=lambda kind, tech_info=None: self.events.append((kind, tech_info)),
        )
        self.router = Router()
        self.router.register(self.svc)

    async def call(self, action: str, payload: dict) -> dict:
        self.sent.append((action, payload))
        self.sent_at.append(self.clock.now())
        return {"status": "Accepted"} if action == "SignCertificate" else {}

    async def csms(self, action: str, payload: dict) -> dict:
        answer = await self.router.answer(InboundCall("u1", action, payload))
        frame = json.loads(answer.frame)
        assert frame[0] == 3, frame
        if answer.after is not None:
            result = answer.after()
            if hasattr(result, "__await__"):
                await result
        return frame[2]

    def csr(self) -> x509.CertificateSigningRequest:
        action, payload = self.sent[-1]
        assert action == "SignCertificate"
        return x509.load_pem_x509_csr(payload["csr"].encode())


@pytest.fixture
def station(tmp_path):
    s = Station(tmp_path)
    yield s
    s.store.close()


@pytest.fixture
def csms_ca():
    return make_ca("CSMS root")


async def test_csr_on_extended_trigger_key_stays_private(station):
    station.config.set("CpoName", "Acme Charging")
    answer = await station.csms(
        "ExtendedTriggerMessage", {"requestedMessage": "SignChargePointCertificate"}
    )
    assert answer == {"status": "Accepted"}
    csr = station.csr()
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CP
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "Acme Charging"
    )
    assert stat.S_IMODE(station.certs.pending_key_path.stat().st_mode) == 0o600
    assert "PRIVATE" not in json.dumps(station.sent)


async def test_certificate_signed_swaps_in_and_announces_after_answer(station, csms_ca):
    ca_key, ca = csms_ca
    station.certs.install_root(RootKind.CSMS, pem(ca))
    station.changes.clear()
    await station.svc.request_certificate()
    _, leaf = make_leaf(ca_key, ca, CP, public_key=station.csr().public_key())
    answer = await station.router.answer(
        InboundCall("u2", "CertificateSigned", {"certificateChain": pem(leaf)})
    )
    assert json.loads(answer.frame)[2] == {"status": "Accepted"}
    assert station.changes == []  # the link must not reconnect before the answer is out
    answer.after()
    assert station.changes == ["station"]
    assert station.certs.station_certificate() == leaf
    assert station.svc.status_fields()["station_certificate_expiry"] == (
        leaf.not_valid_after_utc.isoformat()
    )


@pytest.mark.parametrize(
    "what", ["wrong_cn", "wrong_key", "other_ca", "expired", "too_big", "garbage", "no_csr"]
)
async def test_certificate_signed_refused(tmp_path, csms_ca, what):
    station = Station(tmp_path, max_chain_size=2000 if what == "too_big" else 10000)
    ca_key, ca = csms_ca
    station.certs.install_root(RootKind.CSMS, pem(ca))
    if what != "no_csr":
        await station.svc.request_certificate()
        key = station.csr().public_key()
    else:
        key = make_leaf(ca_key, ca, "x")[1].public_key()
    chain = {
        "wrong_cn": lambda: pem(make_leaf(ca_key, ca, "CP-8", public_key=key)[1]),
        "wrong_key": lambda: pem(make_leaf(ca_key, ca, CP)[1]),
        "other_ca": lambda: pem(make_leaf(*make_ca("evil"), CP, public_key=key)[1]),
        "expired": lambda: pem(make_leaf(ca_key, ca, CP, public_key=key, days=-1)[1]),
        "too_big": lambda: pem(make_leaf(ca_key, ca, CP, public_key=key)[1]) * 4,
        "garbage": lambda: "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
        "no_csr": lambda: pem(make_leaf(ca_key, ca, CP, public_key=key)[1]),
    }[what]()
    answer = await station.csms("CertificateSigned", {"certificateChain": chain})
    assert answer == {"status": "Rejected"}
    assert station.certs.station_certificate() is None
    assert [k for k, _ in station.events] == ["InvalidChargePointCertificate"]
    station.store.close()


async def test_chain_through_an_intermediate(station, csms_ca):
    ca_key, ca = csms_ca
    station.certs.install_root(RootKind.CSMS, pem(ca))
    sub_key, sub = make_ca("CPO sub-CA", issuer=(ca_key, ca))
    await station.svc.request_certificate()
    _, leaf = make_leaf(sub_key, sub, CP, public_key=station.csr().public_key())
    answer = await station.csms("CertificateSigned", {"certificateChain": pem(leaf) + pem(sub)})
    assert answer == {"status": "Accepted"}
    assert station.certs.station_chain() == [leaf, sub]


def test_check_signed_chain_needs_a_root():
    ca_key, ca = make_ca("root")
    key, leaf = make_leaf(ca_key, ca, CP)
    now = datetime.datetime.now(datetime.UTC)
    args = dict(charge_point_id=CP, pending_public_key=key.public_key(), now=now)
    assert "no CentralSystemRootCertificate" in check_signed_chain([leaf], roots=[], **args)
    assert check_signed_chain([leaf], roots=[ca], **args) is None


async def test_install_get_delete_round_trip(station, csms_ca):
    _, ca = csms_ca
    _, mf = make_ca("Manufacturer root")
    for kind, cert in (("CentralSystemRootCertificate", ca), ("ManufacturerRootCertificate", mf)):
        answer = await station.csms(
            "InstallCertificate", {"certificateType": kind, "certificate": pem(cert)}
        )
        assert answer == {"status": "Accepted"}
    ids = await station.csms(
        "GetInstalledCertificateIds", {"certificateType": "ManufacturerRootCertificate"}
    )
    assert ids == {"status": "Accepted", "certificateHashData": [cert_hash(mf).to_ocpp()]}
    deleted = await station.csms(
        "DeleteCertificate", {"certificateHashData": cert_hash(mf).to_ocpp()}
    )
    assert deleted == {"status": "Accepted"}
    assert await station.csms(
        "GetInstalledCertificateIds", {"certificateType": "ManufacturerRootCertificate"}
    ) == {"status": "NotFound"}
    again = await station.csms(
        "DeleteCertificate", {"certificateHashData": cert_hash(mf).to_ocpp()}
    )
    assert again == {"status": "NotFound"}
    last = await station.csms("DeleteCertificate", {"certificateHashData": cert_hash(ca).to_ocpp()})
    assert last == {"status": "Failed"}  # the last CSMS root stays
    assert station.certs.count(RootKind.CSMS) == 1


async def test_install_refuses_a_leaf_garbage_and_a_full_store(tmp_path):
    station = Station(tmp_path, store_max_length=2)
    ca_key, ca = make_ca("root")
    _, leaf = make_leaf(ca_key, ca, "server")
    kind = "CentralSystemRootCertificate"
    for bad in (pem(leaf), "hello"):
        answer = await station.csms(
            "InstallCertificate", {"certificateType": kind, "certificate": bad}
        )
        assert answer == {"status": "Rejected"}
    assert [k for k, _ in station.events] == ["InvalidCentralSystemCertificate"] * 2
    for cn in ("a", "b"):
        answer = await station.csms(
            "InstallCertificate", {"certificateType": kind, "certificate": pem(make_ca(cn)[1])}
        )
        assert answer == {"status": "Accepted"}
    full = await station.csms(
        "InstallCertificate", {"certificateType": kind, "certificate": pem(make_ca("c")[1])}
    )
    assert full == {"status": "Rejected"}
    assert station.certs.count() == 2
    station.store.close()


async def test_additional_root_check_replaces_only_with_a_signed_root(tmp_path):
    station = Station(tmp_path, additional_root_check=True)
    kind = "CentralSystemRootCertificate"
    old_key, old = make_ca("root 1")
    assert (
        await station.csms("InstallCertificate", {"certificateType": kind, "certificate": pem(old)})
    )["status"] == "Accepted"
    _, stranger = make_ca("root 2")
    assert (
        await station.csms(
            "InstallCertificate", {"certificateType": kind, "certificate": pem(stranger)}
        )
    )["status"] == "Rejected"
    _, successor = make_ca("root 2", issuer=(old_key, old))
    assert (
        await station.csms(
            "InstallCertificate", {"certificateType": kind, "certificate": pem(successor)}
        )
    )["status"] == "Accepted"
    assert station.certs.roots(RootKind.CSMS) == [successor]
    station.store.close()


@pytest.mark.parametrize(
    "message, sent",
    [
        ("FirmwareStatusNotification", ("SignedFirmwareStatusNotification", {"status": "Idle"})),
        ("LogStatusNotification", ("LogStatusNotification", {"status": "Idle"})),
    ],
)
async def test_extended_trigger_status_messages(station, message, sent):
    answer = await station.csms("ExtendedTriggerMessage", {"requestedMessage": message})
    assert answer == {"status": "Accepted"}
    assert station.sent == [sent]


async def test_extended_trigger_ordinary_messages_go_through_trigger(station):
    class Trigger:
        def __init__(self):
            self.sent = []

        def decide(self, requested, connector_id):
            return "Rejected" if connector_id == 9 else "Accepted"

        async def send(self, requested, connector_id):
            self.sent.append((requested, connector_id))

    station.svc._trigger = trig = Trigger()
    assert (await station.csms("ExtendedTriggerMessage", {"requestedMessage": "Heartbeat"})) == {
        "status": "Accepted"
    }
    assert (
        await station.csms(
            "ExtendedTriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 9}
        )
    ) == {"status": "Rejected"}
    assert trig.sent == [("Heartbeat", None)]


def test_renewal_delay_is_30_days_ahead():
    now = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
    assert renewal_delay(None, now) is None
    assert renewal_delay(now + datetime.timedelta(days=31), now) == 86400.0
    assert renewal_delay(now + datetime.timedelta(days=10), now) == 0.0


async def test_expiry_watch_requests_a_new_csr_before_expiry(station, csms_ca):
    ca_key, ca = csms_ca
    station.certs.install_root(RootKind.CSMS, pem(ca))
    await station.svc.request_certificate()
    _, leaf = make_leaf(ca_key, ca, CP, public_key=station.csr().public_key(), days=40)
    assert (await station.csms("CertificateSigned", {"certificateChain": pem(leaf)}))[
        "status"
    ] == "Accepted"
    station.sent.clear()
    start = station.clock.now()
    while not station.sent:  # the watch, one check after the other
        station.clock.advance(await station.svc.check_renewal())
        assert station.clock.now() - start < datetime.timedelta(days=11)
    due = leaf.not_valid_after_utc - datetime.timedelta(days=30)
    assert abs((station.clock.now() - due).total_seconds()) < 86400 + 1
    assert station.clock.now() >= due
    assert [a for a, _ in station.sent] == ["SignCertificate"]
    assert station.certs.station_certificate() == leaf  # kept until the new one comes


async def test_the_watch_task_renews_on_the_injected_clock(station, csms_ca):
    ca_key, ca = csms_ca
    station.certs.install_root(RootKind.CSMS, pem(ca))
    await station.svc.request_certificate()
    _, leaf = make_leaf(ca_key, ca, CP, public_key=station.csr().public_key(), days=33)
    await station.csms("CertificateSigned", {"certificateChain": pem(leaf)})
    station.sent.clear()
    start = station.clock.now()
    task = asyncio.create_task(station.svc.run())
    try:
        for _ in range(1000):
            if station.sent:
                break
            await asyncio.sleep(0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [a for a, _ in station.sent] == ["SignCertificate"]
    due = leaf.not_valid_after_utc - datetime.timedelta(days=30)  # 3 days after the start
    assert station.sent_at[-1] - due < datetime.timedelta(seconds=1)
    assert station.sent_at[-1] >= due > start
