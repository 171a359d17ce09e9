"""``python -m chargerd.bench.csms``: a CSMS on the bench that prints every frame.

Without a command (or with ``serve``) it runs the server: one line per frame
on stdout, flushed, so that ``| grep`` and ``tee`` follow a session live:
``<time> <charge point id> in|out <frame>`` ("in" = from the station to the
CSMS).  It also listens on a local control socket, through which the other
commands drive it while it runs:

  call CP-ID ACTION [PAYLOAD]   send any OCPP 1.6 request to a connected station
                                and print its answer (PAYLOAD: a JSON object)
  script FILE                   run a JSON/TOML file of calls and expectations;
                                exit status 1 on the first failed expectation
  stations                      list the connected charge points
  set NAME VALUE                change an answer of the running server
                                (boot_status Pending, accept_all_cards true...)

``python -m chargerd.benchcsms`` is the same program under its former name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import ssl
import sys
from pathlib import Path
from typing import TextIO

from chargerd.bench.csms.certs import server_context
from chargerd.bench.csms.control import (
    KNOBS,
    ControlClient,
    ControlServer,
    default_control_path,
    socket_timeout_for,
)
from chargerd.bench.csms.csms import BenchCsms, FrameRecord
from chargerd.clock import iso

log = logging.getLogger("chargerd.bench.csms")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
COMMANDS = ("serve", "call", "script", "stations", "set")

_PROG = "python -m chargerd.bench.csms"


def _basic_auth_pair(text: str) -> tuple[str, str]:
    cp_id, sep, password = text.partition(":")
    if not sep or not cp_id or not password:
        raise argparse.ArgumentTypeError("expected CP-ID:PASSWORD")
    return cp_id, password


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("seconds must be in (0, 3600]")
    return value


def serve_parser(prog: str = _PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=9000, help="0 picks a free port (printed)")
    p.add_argument("--cards", default="", help="comma-separated idTags answered Accepted")
    p.add_argument("--accept-all-cards", action="store_true", help="unknown idTags Accepted")
    p.add_argument(
        "--boot",
        choices=["Accepted", "Pending", "Rejected"],
        default="Accepted",
        help="the BootNotification answer (default Accepted)",
    )
    p.add_argument("--heartbeat", type=int, default=60, help="HeartbeatInterval in s")
    p.add_argument("--log-file", help="also append frames and log lines to this file")
    p.add_argument(
        "--basic-auth",
        type=_basic_auth_pair,
        action="append",
        default=[],
        metavar="CP-ID:PASSWORD",
        help="require HTTP Basic credentials (security profiles 1-2); repeat per station. "
        "A station without them gets HTTP 401",
    )
    p.add_argument("--cert", type=Path, help="serve wss:// with this PEM certificate (chain)")
    p.add_argument("--key", type=Path, help="the private key of --cert (PEM)")
    p.add_argument(
        "--client-ca",
        type=Path,
        metavar="PEM",
        help="with --cert: require a client certificate signed by this CA (security profile 3)",
    )
    p.add_argument(
        "--files",
        type=Path,
        metavar="DIR",
        help="serve DIR over HTTP and FTP (firmware for UpdateFirmware) and receive uploads "
        "(GetDiagnostics, GetLog) into DIR/uploads",
    )
    p.add_argument("--http-port", type=_port, default=9080, help="with --files (default 9080)")
    p.add_argument("--ftp-port", type=_port, default=9021, help="with --files (default 9021)")
    p.add_argument(
        "--tls-max",
        choices=["1.1", "1.2", "1.3"],
        help="with --cert: the highest TLS version served; 1.1 plays an outdated CSMS "
        "(TLS 1.0/1.1 only) that a station must refuse",
    )
    p.add_argument(
        "--ciphers",
        metavar="OPENSSL-LIST",
        help="with --cert: the TLS 1.2 cipher suites served (with --tls-max 1.2: a CSMS "
        "without the whitepaper's suites)",
    )
    p.add_argument(
        "--control",
        type=Path,
        metavar="PATH",
        help="control socket for call/script (default /tmp/chargerd-benchcsms-PORT.sock "
        "or $BENCHCSMS_CONTROL)",
    )
    return p


def client_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control", type=Path, metavar="PATH", help="the running server's control socket"
    )
    common.add_argument(
        "--port",
        type=_port,
        default=9000,
        help="find the control socket of the server on this port (default 9000)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("call", parents=[common], help="send one request to a station")
    c.add_argument("cp_id", metavar="CP-ID", help="the charge point id (see stations)")
    c.add_argument(
        "action",
        metavar="ACTION",
        help="any OCPP 1.6 action, sent as given (RemoteStartTransaction, Reset, ...)",
    )
    c.add_argument(
        "payload", nargs="?", default="{}", metavar="PAYLOAD", help="a JSON object (default {})"
    )
    c.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        help="seconds to wait for the station's answer (default 10)",
    )

    s = sub.add_parser("script", parents=[common], help="run a file of calls and expectations")
    s.add_argument("file", type=Path, metavar="FILE", help="a .json or .toml script")
    s.add_argument("--keep-going", action="store_true", help="run every step even after a failure")

    sub.add_parser("stations", parents=[common], help="list the connected stations")

    k = sub.add_parser("set", parents=[common], help="change an answer of the running server")
    k.add_argument("name", choices=sorted(KNOBS), help="the answer to change")
    k.add_argument("value", help="a JSON value (strings may be bare: Pending)")
    return p


# --------------------------------------------------------------------------- serve


def frame_printer(outputs: list[TextIO]):
    def show(rec: FrameRecord) -> None:
        line = f"{iso(rec.time)} {rec.cp_id} {rec.direction} {rec.frame}\n"
        for out in outputs:
            out.write(line)
            out.flush()

    return show


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.cert is None:
        return None
    return server_context(
        args.cert,
        args.key,
        client_ca=args.client_ca,
        tls_max=args.tls_max,
        ciphers=args.ciphers,
    )


async def serve(args: argparse.Namespace, outputs: list[TextIO]) -> None:
    csms = BenchCsms(on_frame=frame_printer(outputs))
    csms.boot_status = args.boot
    csms.heartbeat_interval = args.heartbeat
    csms.accept_all_cards = args.accept_all_cards
    csms.cards = {card: "Accepted" for card in args.cards.split(",") if card}
    tls = _tls(args)
    port = await csms.start(args.host, args.port, ssl_context=tls, basic_auth=dict(args.basic_auth))
    control = ControlServer(csms, args.control or default_control_path(port))
    await control.start()
    scheme = "wss" if tls else "ws"
    # stdout: this banner (its last word is the URL), then one line per frame.
    print(f"benchcsms listening on {scheme}://{args.host}:{port}/", flush=True)
    log.info("control socket %s (for call, script, stations, set)", control.path)
    if csms.basic_auth:
        log.info("HTTP Basic credentials required for %s", ", ".join(sorted(csms.basic_auth)))
    from chargerd.bench.csms.files import start_file_servers

    file_servers = start_file_servers(args.files, args.host, args.http_port, args.ftp_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for server in file_servers:
            server.close()
        await control.close()
        await csms.stop()


def main_serve(argv: list[str], prog: str = _PROG) -> int:
    args = serve_parser(prog).parse_args(argv)
    tls_only = (args.key, args.client_ca, args.tls_max, args.ciphers)
    if any(a is not None for a in tls_only) and args.cert is None:
        print(f"{prog}: --key, --client-ca, --tls-max and --ciphers need --cert", file=sys.stderr)
        return EXIT_USAGE
    outputs: list[TextIO] = [sys.stdout]
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    log_file = None
    if args.log_file:
        log_file = open(args.log_file, "a", encoding="utf-8")
        outputs.append(log_file)
        handlers.append(logging.StreamHandler(log_file))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
    )
    try:
        asyncio.run(serve(args, outputs))
    except (OSError, ssl.SSLError, ValueError) as exc:
        print(f"{prog}: cannot serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if log_file is not None:
            log_file.close()
    return EXIT_OK


# --------------------------------------------------------------------------- clients


def _control_path(args: argparse.Namespace) -> Path:
    return args.control or default_control_path(args.port)


def _fail(answer: dict) -> int:
    print(f"{_PROG}: {answer.get('error')}", file=sys.stderr)
    kind = answer.get("kind")
    return EXIT_USAGE if kind == "usage" else EXIT_FAILED


def cmd_call(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        print(f"{_PROG}: PAYLOAD is not JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(payload, dict):
        print(f"{_PROG}: PAYLOAD must be a JSON object", file=sys.stderr)
        return EXIT_USAGE
    with ControlClient(_control_path(args), timeout=socket_timeout_for(args.timeout)) as client:
        answer = client.request(
            "call", cp_id=args.cp_id, action=args.action, payload=payload, timeout=args.timeout
        )
    if not answer.get("ok"):
        if answer.get("kind") == "callerror":
            print(json.dumps({k: answer.get(k) for k in ("code", "description", "details")}))
        return _fail(answer)
    print(json.dumps(answer.get("result"), ensure_ascii=False))
    return EXIT_OK


def cmd_script(args: argparse.Namespace) -> int:
    from chargerd.bench.csms.script import ScriptError, client_for, load_script, run_script

    try:
        script = load_script(args.file)
    except ScriptError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def report(r) -> None:
        mark = "ok  " if r.passed else "FAIL"
        print(f"{mark} {r.number:>3}  {r.title}" + (f"\n           {r.detail}" if r.detail else ""))
        sys.stdout.flush()

    try:
        with client_for(_control_path(args), script) as client:
            results = run_script(script, client, report=report, stop_on_failure=not args.keep_going)
    except ScriptError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    failed = [r for r in results if not r.passed]
    total = len(script["steps"])
    print(f"{total - len(failed) - (total - len(results))}/{total} steps passed")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_stations(args: argparse.Namespace) -> int:
    with ControlClient(_control_path(args)) as client:
        answer = client.request("stations")
    if not answer.get("ok"):
        return _fail(answer)
    for cp_id in answer.get("stations", []):
        print(cp_id)
    return EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    try:
        value = json.loads(args.value)
    except ValueError:
        value = args.value  # a bare string: Pending, Rejected...
    with ControlClient(_control_path(args)) as client:
        answer = client.request("set", values={args.name: value})
    if not answer.get("ok"):
        return _fail(answer)
    print(f"{args.name} = {json.dumps(value)}")
    return EXIT_OK


def main(argv: list[str] | None = None, prog: str = _PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        # Without a command: the server, as this program always started.
        return main_serve(argv, prog)
    if argv[0] == "serve":
        return main_serve(argv[1:], f"{prog} serve")
    try:
        args = client_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler = {
        "call": cmd_call,
        "script": cmd_script,
        "stations": cmd_stations,
        "set": cmd_set,
    }[args.command]
    try:
        return handler(args)
    except ConnectionError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
