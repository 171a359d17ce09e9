"""UpdateFirmware and SignedUpdateFirmware end to end: the real daemon, the bench CSMS, and
real file servers on 127.0.0.1 (HTTP, HTTPS with a test CA, pyftpdlib FTP)."""

from __future__ import annotations

import datetime
import json
import ssl
from pathlib import Path

import pytest

import chargerd.bench.mock_installer as mock_installer
from chargerd.bench.csms.certs import make_ca_and_server_cert
from chargerd.bench.csms.files import FtpFileServer, HttpFileServer
from chargerd.bench.csms.firmware import make_manufacturer, mock_firmware

pytestmark = pytest.mark.e2e

CP = "CP-TEST"
PLAIN_OK = ["Downloading", "Downloaded", "Installing", "Installed"]


def now_iso(delta_s: float = 0) -> str:
    t = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delta_s)
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    (root / "fw-2.0.0.bin").write_bytes(mock_firmware("2.0.0"))
    (root / "fw-broken.bin").write_bytes(mock_firmware("9.9.9", fail=True))
    return root


@pytest.fixture
def http(files: Path):
    with HttpFileServer(files) as srv:
        yield srv


def firmware_toml(workdir: Path) -> str:
    return (
        "[firmware]\n"
        f'installer = "{mock_installer.__file__}"\n'
        f'version_file = "{workdir / "firmware-version"}"\n'
        "download_timeout_s = 10\n"
    )


@pytest.fixture
def make_fw_rig(make_rig, tmp_path: Path):
    async def make(**kw):
        n = kw.pop("n", 0)
        workdir = tmp_path / f"station{n}"
        rig = await make_rig(extra_toml=firmware_toml(workdir), **kw)
        await rig.wait_status(
            lambda s: s["ocpp"]["registration"] == "Accepted", timeout=15, what="registration"
        )
        return rig

    return make


async def status_when_up(rig, predicate, timeout: float = 30.0) -> dict:
    """rig.wait_status across the daemon's own restart (the socket is gone meanwhile)."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            st = await rig.status()
            if predicate(st):
                return st
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("station status never matched")
        await asyncio.sleep(0.1)


def statuses(csms, action: str = "FirmwareStatusNotification") -> list[str]:
    return [r.payload["status"] for r in csms.calls(action, cp_id=CP)]


async def wait_statuses(csms, last: str, action="FirmwareStatusNotification", timeout=30):
    await csms.wait_for(
        action, predicate=lambda r: r.payload.get("status") == last, timeout=timeout
    )
    return statuses(csms, action)


def installs(rig) -> list[dict]:
    path = rig.state_dir / "firmware" / "installed.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_http_update_reports_each_status_and_comes_up_with_the_new_version(
    make_fw_rig, csms, http
):
    rig = await make_fw_rig()
    assert (await rig.status())["firmware"]["version"] != "2.0.0"
    answer = await csms.call(
        CP, "UpdateFirmware", {"location": http.url("fw-2.0.0.bin"), "retrieveDate": now_iso()}
    )
    assert answer == {}
    assert await wait_statuses(csms, "Installed") == PLAIN_OK
    # the installer ran once with the downloaded file; the station restarted with 2.0.0
    assert [i["version"] for i in installs(rig)] == ["2.0.0"]
    boots = csms.calls("BootNotification", cp_id=CP)
    assert boots[-1].payload["firmwareVersion"] == "2.0.0"
    status = await status_when_up(rig, lambda s: s["firmware"]["version"] == "2.0.0")
    assert status["firmware"]["last_status"] == "Installed"
    # the connector was Unavailable during the installation and is Available again
    conn = [r.payload["status"] for r in csms.calls("StatusNotification", cp_id=CP, connectorId=1)]
    assert "Unavailable" in conn
    await rig.wait_connector(1, "Available", timeout=10)
    # TriggerMessage: nothing under way any more
    await csms.call(CP, "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
    await csms.wait_for("FirmwareStatusNotification", lambda r: r.payload["status"] == "Idle")


async def test_ftp_download_and_an_installer_that_fails(make_fw_rig, csms, files):
    rig = await make_fw_rig()
    with FtpFileServer(files) as ftp:
        await csms.call(
            CP,
            "UpdateFirmware",
            {"location": ftp.url("fw-broken.bin"), "retrieveDate": now_iso()},
        )
        got = await wait_statuses(csms, "InstallationFailed")
    assert got == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert [i["exit"] for i in installs(rig)] == [1]
    # no restart, same version, connectors back in service
    assert len(csms.calls("BootNotification", cp_id=CP)) == 1
    await rig.wait_connector(1, "Available", timeout=10)
    status = await rig.status()
    assert status["firmware"]["last_status"] == "InstallationFailed"


async def test_https_download_checked_against_the_ca(make_fw_rig, csms, files, tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    ca, cert, key = make_ca_and_server_cert(pki)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with HttpFileServer(files, ssl_context=ctx) as https:
        rig = await make_fw_rig(csms={"ca_file": str(ca)})
        await csms.call(
            CP,
            "UpdateFirmware",
            {"location": https.url("fw-2.0.0.bin"), "retrieveDate": now_iso()},
        )
        assert await wait_statuses(csms, "Installed") == PLAIN_OK
    assert await status_when_up(rig, lambda s: s["firmware"]["version"] == "2.0.0")


async def test_download_fails_after_its_retries(make_fw_rig, csms, http):
    rig = await make_fw_rig()
    await csms.call(
        CP,
        "UpdateFirmware",
        {
            "location": http.url("missing.bin"),
            "retrieveDate": now_iso(),
            "retries": 2,
            "retryInterval": 1,
        },
    )
    assert await wait_statuses(csms, "DownloadFailed") == ["Downloading", "DownloadFailed"]
    assert http.served == ["/missing.bin"] * 3  # the first try and 2 retries
    assert installs(rig) == []
    assert "404" in (await rig.status())["firmware"]["error"]


async def test_a_download_interrupted_midway_is_retried(make_fw_rig, csms, http):
    rig = await make_fw_rig()
    http.truncate_next(5000)  # announces the whole file, sends 5000 bytes, hangs up
    await csms.call(
        CP,
        "UpdateFirmware",
        {
            "location": http.url("fw-2.0.0.bin"),
            "retrieveDate": now_iso(),
            "retries": 1,
            "retryInterval": 1,
        },
    )
    assert await wait_statuses(csms, "Installed") == PLAIN_OK
    assert http.served == ["/fw-2.0.0.bin"] * 2
    (record,) = installs(rig)
    assert record["version"] == "2.0.0"  # the whole file, not the first 5000 bytes


async def test_retrieve_date_in_the_future_survives_a_restart(make_fw_rig, csms, http):
    rig = await make_fw_rig()
    await csms.call(
        CP,
        "UpdateFirmware",
        {"location": http.url("fw-2.0.0.bin"), "retrieveDate": now_iso(8)},
    )
    status = await rig.status()
    assert status["firmware"]["phase"] == "scheduled"
    rig.kill9()
    await rig.start()
    assert (await rig.status())["firmware"]["phase"] == "scheduled"
    assert http.served == []  # not before the retrieveDate
    assert await wait_statuses(csms, "Installed", timeout=40) == PLAIN_OK
    assert len(http.served) == 1


async def test_installation_waits_for_the_running_transaction(
    make_fw_rig, csms, http, start_charging
):
    rig = await make_fw_rig(connectors=2)
    await start_charging(rig, connector=1)
    await csms.call(
        CP, "UpdateFirmware", {"location": http.url("fw-2.0.0.bin"), "retrieveDate": now_iso()}
    )
    await wait_statuses(csms, "Downloaded")
    # the idle connector leaves service at once, the charging one goes on charging
    await rig.wait_connector(2, "Unavailable", timeout=10)
    import asyncio

    await asyncio.sleep(2)
    assert statuses(csms) == ["Downloading", "Downloaded"]
    assert (await rig.connector(1))["status"] == "Charging"
    assert installs(rig) == []
    # TriggerMessage reports the real state
    await csms.call(CP, "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
    await csms.wait_for("FirmwareStatusNotification", count=3)
    assert statuses(csms)[-1] == "Downloaded"
    # the session ends: the installation goes on
    await rig.unplug(1)
    await csms.wait_for("StopTransaction")
    got = await wait_statuses(csms, "Installed")
    assert got == ["Downloading", "Downloaded", "Downloaded", "Installing", "Installed"]
    stop = csms.calls("StopTransaction", cp_id=CP)[0]
    installing = csms.calls("FirmwareStatusNotification", cp_id=CP, status="Installing")[0]
    assert stop.time <= installing.time
    await rig.wait_connector(1, "Available", timeout=10)
    await rig.wait_connector(2, "Available", timeout=10)


async def test_statuses_reach_the_csms_after_the_link_was_down(make_fw_rig, csms, http):
    rig = await make_fw_rig()
    await csms.call(
        CP, "UpdateFirmware", {"location": http.url("fw-2.0.0.bin"), "retrieveDate": now_iso(2)}
    )
    await rig.network(False)
    # downloaded and installed while offline
    import asyncio

    for _ in range(300):
        if installs(rig):
            break
        await asyncio.sleep(0.1)
    assert [i["version"] for i in installs(rig)] == ["2.0.0"]
    # the restart brings the link back (the sim's cut cable does not survive the process)
    assert await wait_statuses(csms, "Installed", timeout=30) == PLAIN_OK
    # none of them reached the CSMS while the link was down: all came after the new boot
    second_boot = csms.calls("BootNotification", cp_id=CP)[1]
    assert second_boot.payload["firmwareVersion"] == "2.0.0"
    assert all(r.time >= second_boot.time for r in csms.calls("FirmwareStatusNotification"))


# -- signed firmware --------------------------------------------------------------------


def signed_request(location: str, manufacturer, signature: str, request_id: int = 7) -> dict:
    return {
        "requestId": request_id,
        "retries": 1,
        "retryInterval": 1,
        "firmware": {
            "location": location,
            "retrieveDateTime": now_iso(),
            "signingCertificate": manufacturer.signing_pem,
            "signature": signature,
        },
    }


SIGNED = "SignedFirmwareStatusNotification"


@pytest.mark.parametrize("rsa_signing", [True, False], ids=["rsa", "ecdsa"])
async def test_signed_update_verified_installed_and_reported(
    make_fw_rig, csms, http, files, rsa_signing
):
    maker = make_manufacturer(rsa_signing=rsa_signing)
    rig = await make_fw_rig()
    maker.install_root(rig.state_dir / "certs")
    sig = maker.sign((files / "fw-2.0.0.bin").read_bytes())
    answer = await csms.call(
        CP, "SignedUpdateFirmware", signed_request(http.url("fw-2.0.0.bin"), maker, sig)
    )
    assert answer == {"status": "Accepted"}
    got = await wait_statuses(csms, "Installed", action=SIGNED)
    assert got == [
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "Installing",
        "InstallRebooting",
        "Installed",
    ]
    assert {r.payload["requestId"] for r in csms.calls(SIGNED, cp_id=CP)} == {7}
    await csms.wait_for(
        "SecurityEventNotification", lambda r: r.payload["type"] == "FirmwareUpdated"
    )
    assert statuses(csms) == []  # no plain FirmwareStatusNotification for a signed update


async def test_a_firmware_with_a_bad_signature_is_never_installed(make_fw_rig, csms, http):
    maker = make_manufacturer()
    rig = await make_fw_rig()
    maker.install_root(rig.state_dir / "certs")
    sig = maker.sign(b"some other file")
    answer = await csms.call(
        CP, "SignedUpdateFirmware", signed_request(http.url("fw-2.0.0.bin"), maker, sig)
    )
    assert answer == {"status": "Accepted"}
    got = await wait_statuses(csms, "InvalidSignature", action=SIGNED)
    assert got == ["Downloading", "Downloaded", "InvalidSignature"]
    await csms.wait_for(
        "SecurityEventNotification", lambda r: r.payload["type"] == "InvalidFirmwareSignature"
    )
    assert installs(rig) == []
    assert not (rig.state_dir / "firmware" / "fw-2.0.0.bin").exists()
    assert (await rig.connector(1))["status"] == "Available"  # never taken out of service


async def test_a_signing_certificate_not_from_the_manufacturer_is_refused(
    make_fw_rig, csms, http, files
):
    trusted, other = make_manufacturer(), make_manufacturer()
    rig = await make_fw_rig()
    trusted.install_root(rig.state_dir / "certs")
    sig = other.sign((files / "fw-2.0.0.bin").read_bytes())
    answer = await csms.call(
        CP, "SignedUpdateFirmware", signed_request(http.url("fw-2.0.0.bin"), other, sig)
    )
    assert answer == {"status": "InvalidCertificate"}
    await csms.wait_for(
        "SecurityEventNotification",
        lambda r: r.payload["type"] == "InvalidFirmwareSigningCertificate",
    )
    assert http.served == [] and installs(rig) == []
