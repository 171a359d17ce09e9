"""The bench's firmware installer: records the installation and "installs" a mock firmware.

``[firmware] installer`` points at this file on a bench (chargerd runs a ``.py`` installer
with its own Python).  A mock firmware is a text file whose lines include
``version=X.Y.Z``; installing it writes X.Y.Z to the station's ``[firmware] version_file``
(passed as ``--version-file`` or ``$CHARGERD_VERSION_FILE``; default: ``firmware-version``
beside the firmware directory), which chargerd reads as its running version after the
restart it does when this exits 0.  Every call is appended to ``installed.jsonl`` in the
firmware's directory (file, sha256, version, exit), which a test or a bench user reads.
A file without a version line, or with ``fail=1``, fails (exit 1): an installation
failure on demand.  Never on a real charger: it installs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path


def parse(data: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    version_file: Path | None = None
    if "--version-file" in args:
        i = args.index("--version-file")
        version_file = Path(args[i + 1])
        del args[i : i + 2]
    if len(args) != 1:
        print("usage: mock_installer.py [--version-file PATH] FIRMWARE_FILE", file=sys.stderr)
        return 2
    firmware = Path(args[0])
    if version_file is None:
        env = os.environ.get("CHARGERD_VERSION_FILE")
        version_file = Path(env) if env else firmware.parent.parent / "firmware-version"
    try:
        data = firmware.read_bytes()
    except OSError as exc:
        print(f"cannot read {firmware}: {exc.strerror}", file=sys.stderr)
        return 1
    fields = parse(data)
    version = fields.get("version")
    ok = bool(version) and fields.get("fail") != "1"
    record = {
        "file": str(firmware),
        "sha256": hashlib.sha256(data).hexdigest(),
        "version": version,
        "exit": 0 if ok else 1,
        "time": time.time(),
    }
    with open(firmware.parent / "installed.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")
    if not ok:
        print(f"mock installer: {firmware.name} is not an installable mock firmware")
        return 1
    version_file.parent.mkdir(parents=True, exist_ok=True)
    version_file.write_text(f"{version}\n")
    print(f"mock installer: firmware {version} installed; chargerd restarts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
