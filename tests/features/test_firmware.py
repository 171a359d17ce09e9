"""Firmware: the signature checks, the decisions, and FirmwareService on a real store with a
manual clock (no real-time waits) against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from chargerd.bench.csms.files import HttpFileServer
from chargerd.bench.csms.firmware import make_manufacturer, mock_firmware
from chargerd.clock import ManualClock, iso
from chargerd.features import firmware_signing as fs
from chargerd.features.firmware import (
    FirmwareService,
    file_name_for,
    outcome_after_restart,
    running_version,
)

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


# -- signature checks -------------------------------------------------------------------


def test_signing_certificate_from_the_installed_root_is_accepted() -> None:
    m = make_manufacturer()
    cert = fs.check_signing_certificate(m.signing_pem, [m.root], NOW)
    assert cert == m.signing_cert


def test_signing_certificate_refusals() -> None:
    m, other = make_manufacturer(), make_manufacturer()
    with pytest.raises(fs.SigningError, match="not issued by an installed"):
        fs.check_signing_certificate(m.signing_pem, [other.root], NOW)
    with pytest.raises(fs.SigningError, match="no manufacturer root"):
        fs.check_signing_certificate(m.signing_pem, [], NOW)
    with pytest.raises(fs.SigningError, match="not valid now"):
        fs.check_signing_certificate(m.signing_pem, [m.root], NOW + datetime.timedelta(days=60))
    with pytest.raises(fs.SigningError, match="not a PEM"):
        fs.check_signing_certificate("garbage", [m.root], NOW)


@pytest.mark.parametrize("rsa_signing", [True, False], ids=["rsa", "ecdsa"])
def test_signature_over_the_file(tmp_path: Path, rsa_signing: bool) -> None:
    m = make_manufacturer(rsa_signing=rsa_signing)
    f = tmp_path / "fw.bin"
    f.write_bytes(mock_firmware("1.0.0"))
    fs.check_signature(m.signing_cert, f, m.sign(f.read_bytes()))
    with pytest.raises(fs.SigningError, match="does not verify"):
        fs.check_signature(m.signing_cert, f, m.sign(b"another file"))
    with pytest.raises(fs.SigningError, match="not base64"):
        fs.check_signature(m.signing_cert, f, "%%%")
    # a signature by another key, valid base64
    other = ec.generate_private_key(ec.SECP256R1())
    from cryptography.hazmat.primitives import hashes

    sig = base64.b64encode(other.sign(f.read_bytes(), ec.ECDSA(hashes.SHA256()))).decode()
    with pytest.raises(fs.SigningError):
        fs.check_signature(m.signing_cert, f, sig)


# -- decisions --------------------------------------------------------------------------


def test_outcome_after_restart() -> None:
    assert outcome_after_restart("1.0", "2.0") == "Installed"
    assert outcome_after_restart("1.0", "1.0") == "InstallationFailed"
    assert outcome_after_restart(None, "1.0") == "InstallationFailed"


def test_file_name_for() -> None:
    assert file_name_for("http://h/a/fw-2.bin?x=1") == "fw-2.bin"
    assert file_name_for("ftp://u:p@h/dir/") == "firmware.bin"
    assert file_name_for("http://h/..") == "firmware.bin"


def test_running_version(tmp_path: Path) -> None:
    vf = tmp_path / "version"
    assert running_version("0.1.0", None) == "0.1.0"
    assert running_version("0.1.0", vf) == "0.1.0"  # missing file
    vf.write_text("2.0.0\n")
    assert running_version("0.1.0", vf) == "2.0.0"


# -- the service --------------------------------------------------------------------------


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def enqueue(self, action: str, payload: dict, *, tx_local_id=None) -> int:
        self.sent.append((action, payload))
        return len(self.sent)


class Conn:
    def __init__(self, cid: int) -> None:
        self.id = cid
        self.tx = None
        self.operative = True
        self.scheduled_operative = None


class Sup:
    def __init__(self) -> None:
        self.connectors = {1: Conn(1), 2: Conn(2)}
        self.station_operative = True


class Availability:
    def __init__(self, sup: Sup) -> None:
        self.sup = sup
        self.calls: list[tuple[int, str]] = []

    def change_availability(self, connector_id: int, type: str):
        self.calls.append((connector_id, type))
        targets = (
            self.sup.connectors.values()
            if connector_id == 0
            else [self.sup.connectors[connector_id]]
        )
        for c in targets:
            if c.tx is not None and type == "Inoperative":
                c.scheduled_operative = False
            else:
                c.operative = type == "Operative"


class Events:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def emit(self, kind: str, tech_info=None) -> None:
        self.kinds.append(kind)


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "srv"
    root.mkdir()
    (root / "fw.bin").write_bytes(mock_firmware("2.0.0"))
    with HttpFileServer(root) as srv:
        yield srv


def make_service(store, tmp_path: Path, clock, installer: Path | None, **kw):
    sup = Sup()
    restarts: list[str] = []

    async def restart(reason: str) -> None:
        restarts.append(reason)

    svc = FirmwareService(
        store=store,
        outbox=kw.pop("outbox", Outbox()),
        clock=clock,
        supervisor=sup,
        availability=Availability(sup),
        directory=tmp_path / "fwdir",
        version=kw.pop("version", "1.0.0"),
        installer=installer,
        restart=restart,
        events=kw.pop("events", Events()),
        download_timeout_s=10,
        **kw,
    )
    svc.restarts = restarts  # type: ignore[attr-defined]
    return svc


def script(tmp_path: Path, code: int) -> Path:
    p = tmp_path / f"install-{code}.sh"
    p.write_text(f'#!/bin/sh\necho installing "$1"\nexit {code}\n')
    p.chmod(0o755)
    return p


async def run_until(svc: FirmwareService, done, limit: int = 2000) -> None:
    task = asyncio.create_task(svc.run())
    try:
        for _ in range(limit):
            if done():
                return
            await asyncio.sleep(0.005)
        raise AssertionError("service never got there")
    finally:
        task.cancel()


def sent_statuses(svc) -> list[str]:
    return [p["status"] for _, p in svc._outbox.sent]


async def test_future_retrieve_date_persisted_then_installed_and_restart(store, tmp_path, served):
    clock = ManualClock(NOW)
    svc = make_service(store, tmp_path, clock, script(tmp_path, 0))
    svc.on_update_firmware(
        location=served.url("fw.bin"), retrieve_date=iso(NOW + datetime.timedelta(hours=2))
    )
    assert svc.state()["phase"] == "scheduled"
    # a new process finds the job where the old one left it
    again = make_service(store, tmp_path, clock, script(tmp_path, 0))
    assert again.job is not None and again.job.phase == "scheduled"
    await run_until(again, lambda: again.restarts)
    assert clock.now() >= NOW + datetime.timedelta(hours=2)  # waited on the clock, not in real time
    assert sent_statuses(again) == ["Downloading", "Downloaded", "Installing"]
    assert again.job.phase == "rebooting"
    # connectors were taken out of service during the installation
    assert all(not c.operative for c in again._sup.connectors.values())
    # after the restart, the new version reports Installed and the connectors come back
    after = make_service(store, tmp_path, clock, None, version="2.0.0")
    after._sup.connectors[1].operative = after._sup.connectors[2].operative = False
    after.restore()
    assert sent_statuses(after) == ["Installed"]
    assert after._events.kinds == ["FirmwareUpdated"]
    assert all(c.operative for c in after._sup.connectors.values())
    assert after.trigger_status() == "Idle"


async def test_same_version_after_restart_is_installation_failed(store, tmp_path, served):
    clock = ManualClock(NOW)
    svc = make_service(store, tmp_path, clock, script(tmp_path, 0))
    svc.on_update_firmware(location=served.url("fw.bin"), retrieve_date=iso(NOW))
    await run_until(svc, lambda: svc.restarts)
    after = make_service(store, tmp_path, clock, None, version="1.0.0")
    after.restore()
    assert sent_statuses(after) == ["InstallationFailed"]
    assert after._events.kinds == []


async def test_installer_failure_and_no_installer(store, tmp_path, served):
    clock = ManualClock(NOW)
    for installer in (script(tmp_path, 3), None, tmp_path / "missing-installer"):
        svc = make_service(store, tmp_path, clock, installer)
        svc.on_update_firmware(location=served.url("fw.bin"), retrieve_date=iso(NOW))
        await run_until(svc, lambda svc=svc: svc.job.phase == "done")
        assert sent_statuses(svc) == [
            "Downloading",
            "Downloaded",
            "Installing",
            "InstallationFailed",
        ]
        assert not svc.restarts
        assert all(c.operative for c in svc._sup.connectors.values())


async def test_install_waits_for_transactions(store, tmp_path, served):
    clock = ManualClock(NOW)
    svc = make_service(store, tmp_path, clock, script(tmp_path, 0))
    svc._sup.connectors[1].tx = object()
    svc.on_update_firmware(location=served.url("fw.bin"), retrieve_date=iso(NOW))
    task = asyncio.create_task(svc.run())
    try:
        for _ in range(2000):
            if svc.job.phase == "installing":
                break
            await asyncio.sleep(0.005)
        for _ in range(50):
            await asyncio.sleep(0)
        assert sent_statuses(svc) == ["Downloading", "Downloaded"]
        assert svc.trigger_status() == "Downloaded"
        assert svc._sup.connectors[2].operative is False  # idle one out of service at once
        assert svc._sup.connectors[1].scheduled_operative is False  # after its session
        svc._sup.connectors[1].tx = None
        for _ in range(2000):
            if svc.restarts:
                break
            await asyncio.sleep(0.005)
        assert sent_statuses(svc)[-1] == "Installing"
    finally:
        task.cancel()


async def test_signed_flow_and_statuses(store, tmp_path, served):
    clock = ManualClock(NOW)
    m = make_manufacturer()
    data = (served.root / "fw.bin").read_bytes()
    svc = make_service(
        store, tmp_path, clock, script(tmp_path, 0), manufacturer_roots=lambda: [m.root]
    )
    answer = svc.on_signed_update_firmware(
        request_id=5,
        firmware={
            "location": served.url("fw.bin"),
            "retrieve_date_time": iso(NOW + datetime.timedelta(minutes=5)),
            "install_date_time": iso(NOW + datetime.timedelta(minutes=30)),
            "signing_certificate": m.signing_pem,
            "signature": m.sign(data),
        },
    )
    assert answer.status == "Accepted"
    await run_until(svc, lambda: svc.restarts)
    assert sent_statuses(svc) == [
        "DownloadScheduled",
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "InstallScheduled",
        "Installing",
        "InstallRebooting",
    ]
    assert {a for a, _ in svc._outbox.sent} == {"SignedFirmwareStatusNotification"}
    assert {p["requestId"] for _, p in svc._outbox.sent} == {5}
    # ExtendedTriggerMessage and TriggerMessage report the state under way
    assert svc.signed_trigger_payload() == {"status": "InstallRebooting", "requestId": 5}
    assert svc.trigger_status() == "InstallRebooting"
    assert clock.now() >= NOW + datetime.timedelta(minutes=30)


async def test_signed_bad_signature_and_bad_certificate(store, tmp_path, served):
    clock = ManualClock(NOW)
    m, other = make_manufacturer(), make_manufacturer()
    installer = script(tmp_path, 0)
    svc = make_service(store, tmp_path, clock, installer, manufacturer_roots=lambda: [m.root])
    firmware = {
        "location": served.url("fw.bin"),
        "retrieve_date_time": iso(NOW),
        "signing_certificate": other.signing_pem,
        "signature": other.sign(b"x"),
    }
    assert svc.on_signed_update_firmware(request_id=1, firmware=firmware).status == (
        "InvalidCertificate"
    )
    assert svc.job is None and served.served == []
    firmware.update(signing_certificate=m.signing_pem, signature=m.sign(b"not the file"))
    assert svc.on_signed_update_firmware(request_id=2, firmware=firmware).status == "Accepted"
    await run_until(svc, lambda: svc.job.phase == "done")
    assert sent_statuses(svc) == ["Downloading", "Downloaded", "InvalidSignature"]
    assert svc.signed_trigger_payload() == {"status": "Idle"}
    assert svc._events.kinds == ["InvalidFirmwareSigningCertificate", "InvalidFirmwareSignature"]
    assert not svc.restarts and not any(svc.directory.glob("*.bin"))
    assert all(c.operative for c in svc._sup.connectors.values())


async def test_retries_with_retry_interval_on_the_clock(store, tmp_path, served):
    clock = ManualClock(NOW)
    svc = make_service(store, tmp_path, clock, None)
    svc.on_update_firmware(
        location=served.url("missing.bin"), retrieve_date=iso(NOW), retries=3, retry_interval=60
    )
    await run_until(svc, lambda: svc.job.phase == "done")
    assert sent_statuses(svc) == ["Downloading", "DownloadFailed"]
    assert len(served.served) == 4
    assert clock.now() >= NOW + datetime.timedelta(seconds=180)
    state = svc.state()
    assert state["last_status"] == "DownloadFailed" and "404" in state["error"]
    assert json.dumps(state)  # chargerctl --json can print it


async def test_an_installer_that_restarts_the_service_itself(store, tmp_path, served):
    """The process ends while the installer runs: the version that comes up decides."""
    clock = ManualClock(NOW)
    for new_version, outcome in (("2.0.0", "Installed"), ("1.0.0", "InstallationFailed")):
        svc = make_service(store, tmp_path, clock, script(tmp_path, 0))
        svc.on_update_firmware(location=served.url("fw.bin"), retrieve_date=iso(NOW))
        svc._sup.connectors[1].tx = object()  # held before the installer: phase "installing"
        await run_until(svc, lambda svc=svc: svc.job.phase == "installing")
        after = make_service(store, tmp_path, clock, None, version=new_version)
        for c in after._sup.connectors.values():
            c.operative = False  # as the availability service restores them after the restart
        after.restore()
        assert sent_statuses(after) == [outcome]
        assert after.job.phase == "done"
        assert all(c.operative for c in after._sup.connectors.values())


async def test_edge_requests(store, tmp_path, served):
    clock = ManualClock(NOW)
    m = make_manufacturer()
    svc = make_service(
        store, tmp_path, clock, script(tmp_path, 3), manufacturer_roots=lambda: [m.root]
    )
    # a scheme the station cannot fetch: DownloadFailed after the retries, no crash
    svc.on_update_firmware(
        location="sftp://h/fw.bin", retrieve_date=iso(NOW), retries=1, retry_interval=5
    )
    await run_until(svc, lambda: svc.job.phase == "done")
    assert sent_statuses(svc) == ["Downloading", "DownloadFailed"]
    assert "unsupported URL scheme" in svc.state()["error"]
    # a signed request replacing one still waiting for its retrieveDate: AcceptedCanceled
    firmware = {
        "location": served.url("fw.bin"),
        "retrieve_date_time": iso(NOW + datetime.timedelta(days=1)),
        "signing_certificate": m.signing_pem,
        "signature": m.sign((served.root / "fw.bin").read_bytes()),
    }
    assert svc.on_signed_update_firmware(request_id=1, firmware=firmware).status == "Accepted"
    assert svc.on_signed_update_firmware(request_id=2, firmware=firmware).status == (
        "AcceptedCanceled"
    )
    assert svc.job.request_id == 2
    # the installer fails: the downloaded file does not stay on the disk
    firmware["retrieve_date_time"] = iso(NOW)
    svc.on_signed_update_firmware(request_id=3, firmware=firmware)
    await run_until(svc, lambda: svc.job.phase == "done" and svc.job.request_id == 3)
    assert sent_statuses(svc)[-1] == "InstallationFailed"
    assert not (svc.directory / "fw.bin").exists()
    # while an installation runs, a new request is Rejected
    svc.job.phase = "installing"
    assert svc.on_signed_update_firmware(request_id=4, firmware=firmware).status == "Rejected"


async def test_signed_install_that_fails_verification_reports_install_verification_failed(
    store, tmp_path, served
):
    """The installer's exit 65 (the installed package failed verification, rolled back):
    InstallVerificationFailed for SignedUpdateFirmware, InstallationFailed for the plain one."""
    m = make_manufacturer()
    data = (served.root / "fw.bin").read_bytes()
    clock = ManualClock(NOW)
    svc = make_service(
        store, tmp_path, clock, script(tmp_path, 65), manufacturer_roots=lambda: [m.root]
    )
    firmware = {
        "location": served.url("fw.bin"),
        "retrieve_date_time": iso(NOW),
        "signing_certificate": m.signing_pem,
        "signature": m.sign(data),
    }
    assert svc.on_signed_update_firmware(request_id=9, firmware=firmware).status == "Accepted"
    await run_until(svc, lambda: "InstallVerificationFailed" in sent_statuses(svc))
    assert sent_statuses(svc)[-2:] == ["Installing", "InstallVerificationFailed"]
    assert not svc.restarts
    assert "failed verification" in (svc.last_error or "")
    assert svc._sup.connectors[1].operative  # back in service

    plain_clock = ManualClock(NOW)
    plain = make_service(store, tmp_path / "plain", plain_clock, script(tmp_path, 65))
    plain.on_update_firmware(location=served.url("fw.bin"), retrieve_date=iso(NOW))
    await run_until(plain, lambda: "InstallationFailed" in sent_statuses(plain))
    assert "InstallVerificationFailed" not in sent_statuses(plain)
