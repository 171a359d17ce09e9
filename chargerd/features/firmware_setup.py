"""Builds the FirmwareService from the daemon's parts (kept out of daemon.py, which many
features share): the firmware directory, the running version, the manufacturer roots from
the certificate directory, and the TLS context for https:// downloads."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

from chargerd.features.firmware import FirmwareService, running_version

log = logging.getLogger(__name__)


def https_context(ca_file: Path | None, certs_dir: Path) -> ssl.SSLContext:
    """The system's CAs, plus the configured CSMS CA file and the installed CSMS roots:
    a firmware server is often the operator's own, signed by the same PKI."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    extra = [ca_file] if ca_file else []
    extra += sorted((certs_dir / "csms_roots").glob("*.pem"))
    for path in extra:
        try:
            ctx.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            log.warning("CA file %s not usable for downloads: %s", path, exc)
    return ctx


def build_firmware(daemon: Any) -> FirmwareService:
    """The service, wired; ``daemon`` is the Daemon after its store, outbox, supervisor and
    availability service exist."""
    cfg = daemon.cfg
    certs_dir = Path(cfg.paths.certs_dir)

    def manufacturer_roots() -> list:
        store = getattr(daemon, "certstore", None)
        try:
            if store is None:
                from chargerd.features.certstore import CertStore

                store = CertStore(certs_dir)
            from chargerd.features.certstore import RootKind

            return store.roots(RootKind.MANUFACTURER)
        except Exception as exc:  # unreadable directory: no root, the request is refused
            log.error("manufacturer roots not readable: %s", exc)
            return []

    # What the installer is told besides the file: the configuration (a real installer runs
    # `chargerd --check-config` with the new version) and, on a bench, the version file.
    installer_env = {"CHARGERD_CONFIG": str(daemon.config_path or cfg.source)}
    if cfg.firmware.version_file is not None:
        installer_env["CHARGERD_VERSION_FILE"] = str(cfg.firmware.version_file)
    return FirmwareService(
        store=daemon.store,
        outbox=daemon.outbox,
        clock=daemon.clock,
        supervisor=daemon.supervisor,
        availability=daemon.availability,
        directory=Path(cfg.paths.state_dir) / "firmware",
        version=running_version(cfg.station.firmware_version, cfg.firmware.version_file),
        installer=cfg.firmware.installer,
        download_timeout_s=cfg.firmware.download_timeout_s,
        install_timeout_s=cfg.firmware.install_timeout_s,
        restart=daemon.request_restart,
        manufacturer_roots=manufacturer_roots,
        ssl_context=lambda: https_context(cfg.csms.ca_file, certs_dir),
        events=getattr(daemon, "security_events", None),
        installer_env=installer_env,
    )
