"""The bench demo: the bundled CSMS and the daemon on the mock station, on this laptop.

``./dev demo`` runs both until Ctrl-C and restarts the daemon when it dies, as
systemd's Restart=always would on a charger (so ``chargerctl sim power-cut``
is followed by a power-loss recovery).  ``--scenario`` drives one charging
session by itself through the control socket, prints what happened and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_CARD = "DEADBEEF"
DEMO_FIRMWARE = "chargerd-0.2.0-bench.bin"  # a mock firmware (bench/mock_installer.py)


def _ctl(sock: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chargerd.cli", "--socket", str(sock), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _wait_socket(sock: Path, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.exists() and _ctl(sock, "status", "--json").returncode == 0:
            return True
        time.sleep(0.2)
    return False


def _wait_connected(sock: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = _status(sock)
        if st and st.get("ocpp", {}).get("connected"):
            return True
        time.sleep(0.2)
    return False


def _status(sock: Path) -> dict:
    out = _ctl(sock, "status", "--json")
    return json.loads(out.stdout) if out.returncode == 0 else {}


def scenario(sock: Path) -> int:
    """One session, as a driver would have it: plug, card, charge, card again, unplug."""

    def step(title: str, *args: str) -> None:
        res = _ctl(sock, *args)
        print(f"  $ chargerctl {' '.join(args)}  -> exit {res.returncode}", flush=True)
        if res.returncode != 0:
            print(res.stdout + res.stderr, flush=True)

    def wait(predicate, timeout=20.0) -> dict:
        deadline = time.monotonic() + timeout
        st = {}
        while time.monotonic() < deadline:
            st = _status(sock)
            if st and predicate(st):
                return st
            time.sleep(0.3)
        return st

    print("waiting for the station to register with the CSMS...", flush=True)
    wait(lambda s: s["ocpp"]["registration"] == "Accepted")
    step("plug", "sim", "plug", "1", "--ev-max-current", "16")
    step("card", "sim", "card", DEMO_CARD)
    step("charge", "sim", "charge", "1")
    st = wait(
        lambda s: (
            s["connectors"][0]["status"] == "Charging" and (s["connectors"][0]["power_w"] or 0) > 0
        )
    )
    c = st.get("connectors", [{}])[0]
    print(
        f"  connector 1: {c.get('status')}, transaction {c.get('transaction_id')}, "
        f"{c.get('power_w')} W",
        flush=True,
    )
    time.sleep(3)
    step("card again", "sim", "card", DEMO_CARD)
    wait(lambda s: s["connectors"][0]["status"] == "Finishing")
    step("unplug", "sim", "unplug", "1")
    st = wait(
        lambda s: s["connectors"][0]["status"] == "Available" and s["ocpp"]["outbox_pending"] == 0
    )
    print(json.dumps(st.get("connectors", []), indent=2), flush=True)
    ok = bool(st) and st["connectors"][0]["status"] == "Available"
    print("scenario " + ("completed" if ok else "FAILED"), flush=True)
    return 0 if ok else 1


_PATH_KEYS = ("state_dir", "control_socket", "log_file", "ca_file")


def config_for_port(config: Path, port: int, out: Path) -> Path:
    """A copy of ``config`` whose [csms] url points at ``port`` on the same host.

    Relative paths in the copy are made absolute (they were relative to the original
    file), so the copy may live anywhere.  Returns ``config`` itself when its url
    already has that port.
    """
    import tomllib
    from urllib.parse import urlsplit, urlunsplit

    text = config.read_text(encoding="utf-8")
    url = tomllib.loads(text)["csms"]["url"]
    parts = urlsplit(url)
    if parts.port == port:
        return config
    new_url = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))
    base = config.resolve().parent
    lines = []
    for line in text.splitlines():
        m = re.match(r'^(\s*)(\w+)(\s*=\s*)"([^"]*)"(.*)$', line)
        if m and m.group(2) == "url" and m.group(4) == url:
            line = f'{m.group(1)}url{m.group(3)}"{new_url}"{m.group(5)}'
        elif m and m.group(2) in _PATH_KEYS and not Path(m.group(4)).is_absolute():
            absolute = json.dumps(str((base / m.group(4)).resolve()))
            line = f"{m.group(1)}{m.group(2)}{m.group(3)}{absolute}{m.group(5)}"
        lines.append(line)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _files_ports(port: int) -> tuple[int, int]:
    """The bench file servers' HTTP and FTP ports: beside the CSMS's (9080, 9021 for 9000)."""
    http, ftp = port + 80, port + 21
    return (http if http <= 65535 else 0, ftp if ftp <= 65535 else 0)


def demo_files_args(state_dir: Path, port: int) -> list[str]:
    """The bench CSMS's file servers on ``state_dir/files``, with a mock firmware to offer."""
    from chargerd.bench.csms.firmware import mock_firmware

    files = state_dir / "files"
    files.mkdir(parents=True, exist_ok=True)
    (files / DEMO_FIRMWARE).write_bytes(mock_firmware("0.2.0-bench"))
    http, ftp = _files_ports(port)
    return ["--files", str(files), "--http-port", str(http), "--ftp-port", str(ftp)]


def demo_firmware_url(port: int) -> str:
    return f"http://127.0.0.1:{_files_ports(port)[0]}/{DEMO_FIRMWARE}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./dev demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=ROOT / "etc" / "bench.toml",
        metavar="PATH",
        help="the daemon's configuration (default etc/bench.toml: mock station, state in var/)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=9000,
        metavar="N",
        help="TCP port of the bench CSMS on 127.0.0.1 (default 9000); the daemon is pointed "
        "at it too (a copy of --config with that port in its [csms] url)",
    )
    parser.add_argument(
        "--scenario",
        action="store_true",
        help="drive one charging session by itself (plug, card, charge, card, unplug), "
        "print what happened and exit (status 0 when it completed)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.port <= 65535:
        print(f"./dev demo: --port must be 1..65535, got {args.port}", file=sys.stderr)
        return 2

    from chargerd.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
        state_dir = Path(cfg.paths.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        config = config_for_port(args.config, args.port, state_dir / "demo-chargerd.toml")
        cfg = load_config(config)
    except (ConfigError, OSError, KeyError) as exc:
        print(f"./dev demo: {exc}", file=sys.stderr)
        return 2
    sock = Path(cfg.paths.control_socket)
    csms_log = state_dir / "benchcsms.log"
    control = state_dir / "benchcsms.sock"
    csms = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chargerd.bench.csms",
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port),
            "--cards",
            f"{DEMO_CARD},04A1B2C3D4E5F6",
            "--heartbeat",
            "60",
            "--control",
            str(control),
            *demo_files_args(state_dir, args.port),
        ],
        stdout=open(csms_log, "w"),
        stderr=subprocess.STDOUT,
    )
    print(
        f"bench CSMS on ws://127.0.0.1:{args.port} (frames in {csms_log}); cards: {DEMO_CARD}",
        flush=True,
    )
    cp_id = cfg.station.charge_point_id
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    daemon: subprocess.Popen | None = None
    rc = 0
    try:
        while not stop:
            if daemon is None or daemon.poll() is not None:
                if daemon is not None:
                    print(
                        f"chargerd exited ({daemon.returncode}); restarting it as systemd would",
                        flush=True,
                    )
                    time.sleep(1)
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "chargerd.daemon", "--config", str(config)],
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
                if not _wait_socket(sock):
                    print("chargerd did not come up; see its log above", flush=True)
                    rc = 1
                    break
                if not _wait_connected(sock):
                    print(
                        f"chargerd runs but does not reach the CSMS at {cfg.csms.url} "
                        f"(see {csms_log} and chargerctl status)",
                        flush=True,
                    )
                if not args.scenario:
                    print(
                        "\nThe station is up.  In another terminal:\n"
                        f"  export CHARGERD_SOCKET={sock}\n"
                        "  .venv/bin/chargerctl status\n"
                        "  .venv/bin/chargerctl sim plug 1\n"
                        f"  .venv/bin/chargerctl sim card {DEMO_CARD}\n"
                        "  .venv/bin/chargerctl sim charge 1\n"
                        "  .venv/bin/chargerctl meter --follow\n"
                        "  .venv/bin/chargerctl log --follow\n"
                        "As the CSMS:\n"
                        f"  .venv/bin/python -m chargerd.bench.csms call {cp_id} "
                        f"RemoteStartTransaction '{{\"idTag\": \"{DEMO_CARD}\"}}' "
                        f"--control {control}\n"
                        f"  .venv/bin/python -m chargerd.bench.csms call {cp_id} UpdateFirmware "
                        f"'{{\"location\": \"{demo_firmware_url(args.port)}\", "
                        f"\"retrieveDate\": \"2020-01-01T00:00:00Z\"}}' --control {control}\n"
                        "Ctrl-C here stops the demo.\n",
                        flush=True,
                    )
                else:
                    rc = scenario(sock)
                    break
            time.sleep(0.5)
    finally:
        for proc in (daemon, csms):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return rc


if __name__ == "__main__":
    sys.exit(main())
