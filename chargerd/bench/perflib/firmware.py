"""Bench figures of firmware updates: transfer rates and UpdateFirmware to Installed.

The file servers are the bench CSMS's (``chargerd.bench.csms.files``) on 127.0.0.1,
so the rates are the transfer module's own cost (a thread, stdlib clients, fsync of
the file), not a network's.  UpdateFirmware -> Installed runs the real daemon with
the mock installer: download, Unavailable, installer, the daemon's restart, boot,
and the Installed status through the outbox.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import chargerd.bench.mock_installer as mock_installer
from chargerd.bench.csms.files import FtpFileServer, HttpFileServer
from chargerd.bench.csms.firmware import mock_firmware
from chargerd.bench.perflib.figures import Figure
from chargerd.features import transfer

KEYS: tuple[str, ...] = ("fw_http_rate", "fw_ftp_rate", "fw_update_to_installed")
_MB = 1024 * 1024


def make_figures() -> dict[str, Figure]:
    return {
        f.key: f
        for f in (
            Figure("fw_http_rate", "firmware download over HTTP, 127.0.0.1", "MB/s"),
            Figure("fw_ftp_rate", "firmware download over FTP, 127.0.0.1", "MB/s"),
            Figure(
                "fw_update_to_installed",
                "UpdateFirmware -> Installed (download, install, restart, boot)",
                "s",
            ),
        )
    }


async def measure(bench: Any) -> None:
    quick = bench.plan.boot_starts < 12
    size_mb = 8 if quick else 32
    rounds = 2 if quick else 5
    root = bench.workdir / "fw-files"
    root.mkdir(parents=True, exist_ok=True)
    (root / "big.bin").write_bytes(b"\xa5" * (size_mb * _MB))
    dest = bench.workdir / "fw-download.bin"
    with HttpFileServer(root) as http, FtpFileServer(root) as ftp:
        for key, url in (
            ("fw_http_rate", http.url("big.bin")),
            ("fw_ftp_rate", ftp.url("big.bin")),
        ):
            fig = bench.figs[key]
            fig.note = f"{size_mb} MB file, {rounds} downloads"
            for _ in range(rounds):
                t0 = time.perf_counter()
                await transfer.download(url, dest, timeout=120)
                fig.add(size_mb / (time.perf_counter() - t0))
        await _update_to_installed(bench, http, root, 1 if quick else 3)


async def _update_to_installed(bench: Any, http: HttpFileServer, root, rounds: int) -> None:
    fig = bench.figs["fw_update_to_installed"]
    rig = bench.rig(
        "firmware",
        "CP-BENCH-FW",
        extra_toml=(
            "[firmware]\n"
            f'installer = "{mock_installer.__file__}"\n'
            f'version_file = "{bench.workdir / "firmware" / "firmware-version"}"\n'
        ),
    )
    await rig.start()
    await bench.registered(rig)
    fig.note = "1 MB mock firmware, mock installer; includes the daemon's restart"
    cp = rig.charge_point_id
    for i in range(rounds):
        name = f"fw-{i}.bin"
        (root / name).write_bytes(mock_firmware(f"9.0.{i}", size=_MB))
        before = len(bench.csms.calls("FirmwareStatusNotification", cp_id=cp, status="Installed"))
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        await bench.csms.call(
            cp, "UpdateFirmware", {"location": http.url(name), "retrieveDate": now}
        )
        await bench.csms.wait_for(
            "FirmwareStatusNotification",
            predicate=lambda r: r.cp_id == cp and r.payload.get("status") == "Installed",
            count=before + 1,
            timeout=60,
        )
        fig.add(time.perf_counter() - t0)
        await asyncio.sleep(0.5)
    await rig.stop()
