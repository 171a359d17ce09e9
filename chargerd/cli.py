"""chargerctl: the technician's command line, a thin client of the control socket.

It runs on a Pi over a slow SSH session, often many times in a script, so it
starts fast: stdlib only, blocking sockets, no asyncio, none of the daemon's
heavy dependencies.  All knowledge of the station lives in the daemon; this
file only turns arguments into requests and answers into text and exit codes.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from chargerd.control import protocol
from chargerd.ctl_security import add_security_log_parser
from chargerd.ctlformat import (
    _METER_HEADER,
    _as_dict,
    _as_list,
    _dump,
    _log_line,
    _meter_row,
    _table,
    _text,
    format_status,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

DEFAULT_TIMEOUT_S = 10.0

_EXIT_OF_KIND = {
    protocol.REFUSED: EXIT_FAILED,
    protocol.NOT_FOUND: EXIT_FAILED,
    protocol.INTERNAL: EXIT_FAILED,
    protocol.USAGE: EXIT_USAGE,
}

EPILOG = f"""\
exit status:
  {EXIT_OK}  done
  {EXIT_FAILED}  the daemon refused or found no such thing, an internal error, a failed
     selftest, or a configuration change that was rejected / not supported
  {EXIT_USAGE}  usage error: bad arguments (--socket naming a file that is not a socket),
     or a request the daemon did not understand
  {EXIT_UNREACHABLE}  chargerd could not be reached: not running, permission denied on the
     socket, or no answer within --timeout

environment:
  {protocol.SOCKET_ENV}  control socket path (default {protocol.DEFAULT_SOCKET})
"""


class CtlError(Exception):
    """A failure to report on stderr with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def describe_connect_error(exc: OSError, path: Path, timeout: float | None = None) -> str:
    """What a technician should read when the socket cannot be used."""
    if isinstance(exc, TimeoutError):
        return f"timeout: no answer from chargerd on {path} within {timeout or 0:g} s"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"chargerd is not running (no socket at {path})"
    if exc.errno == errno.ECONNREFUSED:
        if _is_not_a_socket(path):
            return (
                f"{path} is not a socket (a {_kind_of(path)}): --socket or "
                f"{protocol.SOCKET_ENV} must name chargerd's control socket "
                f"(paths.control_socket, default {protocol.DEFAULT_SOCKET})"
            )
        return f"chargerd is not running (no socket at {path}; a stale one, nobody listening)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied on {path}: add yourself to the chargerd group or use sudo"
    return f"cannot reach chargerd on {path}: {exc.strerror or exc}"


def _is_not_a_socket(path: Path) -> bool:
    try:
        return not stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


def _kind_of(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except OSError:
        return "missing file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "regular file"
    return "file that is not a socket"


class Client:
    """One connection to the control socket; requests are answered in order."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError as exc:
            self._sock.close()
            # A path that is not a socket at all is a wrong argument, not a daemon down.
            code = EXIT_USAGE if _is_not_a_socket(path) else EXIT_UNREACHABLE
            raise CtlError(describe_connect_error(exc, path, timeout), code) from None
        self._file = self._sock.makefile("rb")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, cmd: str, args: dict[str, Any]) -> None:
        try:
            self._sock.sendall(protocol.encode(protocol.request(cmd, args)))
        except OSError as exc:
            raise CtlError(
                describe_connect_error(exc, self.path, self.timeout), EXIT_UNREACHABLE
            ) from None

    def receive(self) -> dict[str, Any] | None:
        """The next message; None when the daemon closed the connection."""
        try:
            line = self._file.readline()
        except ConnectionResetError:
            return None
        except OSError as exc:
            raise CtlError(
                describe_connect_error(exc, self.path, self.timeout), EXIT_UNREACHABLE
            ) from None
        if not line:
            return None
        try:
            message = protocol.decode(line)
        except protocol.ProtocolError as exc:
            raise CtlError(f"unreadable answer from chargerd: {exc}", EXIT_FAILED) from None
        if not message.get("ok"):
            kind = message.get("kind", protocol.INTERNAL)
            text = message.get("error") or kind
            raise CtlError(str(text), _EXIT_OF_KIND.get(kind, EXIT_FAILED))
        return message

    def call(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        self.send(cmd, args)
        message = self.receive()
        if message is None:
            raise CtlError(
                "chargerd closed the connection without answering (did it stop?)",
                EXIT_UNREACHABLE,
            )
        return _as_dict(message.get("result"))

    def follow(self, cmd: str, args: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Events until the daemon ends the stream; the caller stops it by closing."""
        self.send(cmd, args)
        # Events may be minutes apart (a quiet log): only connecting is timed.
        self._sock.settimeout(None)
        while True:
            message = self.receive()
            if message is None:
                raise CtlError("chargerd closed the stream (did it stop?)", EXIT_UNREACHABLE)
            if "event" not in message:
                return
            yield _as_dict(message["event"])


# --------------------------------------------------------------------------- commands


def _client(ns: argparse.Namespace) -> Client:
    return Client(ns.socket, ns.timeout)


def cmd_status(ns: argparse.Namespace) -> int:
    with _client(ns) as client:
        status = client.call("status", {})
    if ns.json:
        _dump(status)
    else:
        print("\n".join(format_status(status)))
    return EXIT_OK


def cmd_meter(ns: argparse.Namespace) -> int:
    with _client(ns) as client:
        if not ns.follow:
            reading = client.call("meter", {})
            if ns.json:
                _dump(reading)
            else:
                rows = [_METER_HEADER]
                connectors = _as_list(reading.get("connectors"))
                rows += [_meter_row(c) for c in connectors if isinstance(c, dict)]
                print("\n".join(_table(rows)))
            return EXIT_OK
        for ev in client.follow("meter.follow", {}):
            if ns.json:
                print(json.dumps(ev, ensure_ascii=False), flush=True)
                continue
            # Tolerate a daemon that sends the whole station in one event.
            connectors = _as_list(ev.get("connectors")) if "connectors" in ev else [ev]
            stamp = time.strftime("%H:%M:%S")
            for c in connectors:
                if isinstance(c, dict):
                    row = _meter_row(c)
                    print(f"{stamp}  connector {row[0]}  " + "  ".join(row[1:]), flush=True)
    return EXIT_OK


def cmd_selftest(ns: argparse.Namespace) -> int:
    with _client(ns) as client:
        report = client.call("selftest", {"device": ns.device, "connector": ns.connector})
    passed = report.get("passed") is True
    if ns.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK if passed else EXIT_FAILED
    where = "" if ns.connector is None else f", connector {ns.connector}"
    print(f"selftest {report.get('device', ns.device)}{where}")
    for step in _as_list(report.get("steps")):
        step = _as_dict(step)
        mark = "ok  " if step.get("ok") else "FAIL"
        detail = step.get("detail")
        print(f"  {mark}  {_text(step.get('step'))}" + (f": {detail}" if detail else ""))
    passed = report.get("passed") is True
    print("PASSED" if passed else "FAILED")
    return EXIT_OK if passed else EXIT_FAILED


def cmd_log(ns: argparse.Namespace) -> int:
    with _client(ns) as client:
        if not ns.follow:
            log = client.call("log", {"lines": ns.lines})
            if ns.json:
                _dump(log)
            else:
                for frame in _as_list(log.get("frames")):
                    print(_log_line(_as_dict(frame)))
            return EXIT_OK
        for frame in client.follow("log.follow", {"lines": ns.lines}):
            line = json.dumps(frame, ensure_ascii=False) if ns.json else _log_line(frame)
            print(line, flush=True)
    return EXIT_OK


def cmd_config(ns: argparse.Namespace) -> int:
    with _client(ns) as client:
        if ns.value is not None:
            answer = client.call("config.set", {"key": ns.key, "value": ns.value})
            status = answer.get("status")
            reason = answer.get("reason") or answer.get("detail")
            if status in ("Rejected", "NotSupported"):
                message = f"{ns.key}: {status}" + (f": {reason}" if reason else "")
                raise CtlError(message, EXIT_FAILED)
            if status == "RebootRequired":
                print(f"{ns.key}: RebootRequired (takes effect after a reboot)")
            else:
                print(f"{ns.key}: {_text(status)}")
            return EXIT_OK
        answer = client.call("config.get", {"keys": [ns.key] if ns.key else []})
    entries = [_as_dict(e) for e in _as_list(answer.get("configuration_key"))]
    width = max((len(str(e.get("key", ""))) for e in entries), default=0)
    for e in entries:
        value = e.get("value")
        shown = "(no value)" if value is None else str(value)
        suffix = "  [read-only]" if e.get("readonly") else ""
        print(f"{str(e.get('key', '?')).ljust(width)}  {shown}{suffix}")
    unknown = [str(k) for k in _as_list(answer.get("unknown_key"))]
    if unknown:
        raise CtlError(f"unknown configuration key: {', '.join(unknown)}", EXIT_FAILED)
    return EXIT_OK


def _print_result(result: dict[str, Any]) -> None:
    if not result:
        print("ok")
    else:
        print("  ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in result.items()))


def _sim_request(ns: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    action = ns.sim_action
    if action == "plug":
        return "sim.plug", {
            "connector": ns.connector,
            "ev_max_current_a": ns.ev_max_current,
            "phases": ns.phases,
            "cable_capacity_a": ns.cable_capacity,
        }
    if action in ("charge", "suspend", "unplug"):
        return f"sim.{action}", {"connector": ns.connector}
    if action == "card":
        return "sim.card", {"uid": ns.uid}
    if action == "fault":
        return "sim.fault", {"name": ns.name, "on": ns.state == "on", "connector": ns.connector}
    if action == "network":
        return "sim.network", {"up": ns.state == "up"}
    raise AssertionError(action)


def cmd_sim(ns: argparse.Namespace) -> int:
    with _client(ns) as client:
        if ns.sim_action == "power-cut":
            client.send("sim.power_cut", {})
            # The daemon dies without answering; an answer (or none) both mean done.
            client.receive()
            print("power cut")
            return EXIT_OK
        if ns.sim_action == "fault" and ns.list:
            answer = client.call("sim.faults", {})
            active = _as_dict(answer.get("active"))
            for name in _as_list(answer.get("faults")):
                state = active.get(name)
                print(f"{name}  active: {json.dumps(state)}" if state else str(name))
            return EXIT_OK
        if ns.sim_action == "world":
            # The simulated world (on a pibox: pins, PWM, timestamped records), as JSON.
            print(json.dumps(client.call("sim.world", {}), indent=2))
            return EXIT_OK
        cmd, args = _sim_request(ns)
        result = client.call(cmd, args)
        if ns.sim_action == "card" and "message" in result and not ns.json:
            print(f"card {_text(result.get('id_tag'))}: {result['message']}")
        elif ns.json:
            _dump(result)
        else:
            _print_result(result)
    return EXIT_OK


# --------------------------------------------------------------------------- arguments


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of seconds > 0")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chargerctl",
        description="Diagnose and drive a running chargerd over its control socket.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--socket", type=Path, metavar="PATH", help="control socket path")
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for an answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("status", help="station, connectors, faults and OCPP link")
    s.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("meter", help="energy meter readings")
    s.add_argument("--follow", "-f", action="store_true", help="one reading per second")
    s.add_argument("--json", action="store_true", help="JSON (one object per line with -f)")
    s.set_defaults(func=cmd_meter)

    s = sub.add_parser("selftest", help="exercise one device and report each step")
    s.add_argument("device", choices=["contactor", "lock", "led", "reader", "meter", "rcd"])
    s.add_argument("--connector", type=int, metavar="N")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(func=cmd_selftest)

    s = sub.add_parser(
        "log",
        help="recent OCPP frames (>> sent to the CSMS, << received)",
        description="Recent OCPP frames: '>>' sent to the CSMS, '<<' received from it.",
    )
    s.add_argument("--follow", "-f", action="store_true", help="keep printing new frames")
    s.add_argument("--lines", "-n", type=_non_negative_int, default=20, metavar="N")
    s.add_argument("--json", action="store_true", help="JSON (one object per line with -f)")
    s.set_defaults(func=cmd_log)

    s = sub.add_parser("config", help="read or change an OCPP configuration key")
    s.add_argument("key", nargs="?", metavar="KEY", help="omit to list every key")
    s.add_argument("value", nargs="?", metavar="VALUE", help="set KEY to VALUE")
    s.set_defaults(func=cmd_config)

    _add_sim(sub)
    add_security_log_parser(sub, _non_negative_int, _client)
    return p


def _add_sim(sub: Any) -> None:
    sim = sub.add_parser("sim", help="drive the simulated station (mock hardware only)")
    sim.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    acts = sim.add_subparsers(dest="sim_action", required=True, metavar="ACTION")
    sim.set_defaults(func=cmd_sim)

    a = acts.add_parser("plug", help="plug an EV in")
    a.add_argument("connector", type=int, metavar="N")
    a.add_argument("--ev-max-current", type=float, metavar="A")
    a.add_argument("--phases", type=int, choices=[1, 3])
    a.add_argument("--cable-capacity", type=int, metavar="A")
    for name, text in (
        ("charge", "the EV asks for power (state C)"),
        ("suspend", "the EV stops drawing (state B)"),
        ("unplug", "pull the cable"),
    ):
        a = acts.add_parser(name, help=text)
        a.add_argument("connector", type=int, metavar="N")

    a = acts.add_parser(
        "card",
        help="present a card; says what the station did with it",
        description="Present a card to the simulated reader and print what the station did "
        "(accepted and started / refused: Invalid / stopped transaction N).",
    )
    a.add_argument(
        "uid",
        metavar="IDTAG",
        help="a hex UID (4/7/10 bytes, upper-cased as a reader reports it) or any idTag "
        "of 1-20 printable characters (TOKEN-0001, USER_42)",
    )

    a = acts.add_parser("fault", help="inject or clear a hardware fault (--list to see them)")
    a.add_argument("name", nargs="?", metavar="NAME")
    a.add_argument("state", nargs="?", choices=["on", "off"])
    a.add_argument("--connector", type=int, metavar="N")
    a.add_argument("--list", action="store_true", help="list the faults that can be injected")
    a.set_defaults(check=_check_fault_args, subparser=a)

    a = acts.add_parser("network", help="cut or restore the link to the CSMS")
    a.add_argument("state", choices=["down", "up"])

    acts.add_parser("power-cut", help="kill the daemon abruptly, as a power cut would")
    acts.add_parser("world", help="show the simulated world as JSON (EVs, pins, records)")


def _check_fault_args(ns: argparse.Namespace) -> None:
    if ns.list and (ns.name or ns.state):
        ns.subparser.error("--list takes no NAME")
    if not ns.list and (ns.name is None or ns.state is None):
        ns.subparser.error("NAME and on|off are required (or --list)")


def _quiet_stdout() -> None:
    """After the reader of our stdout went away (| head), keep exit from complaining."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
        check: Callable[[argparse.Namespace], None] | None = getattr(ns, "check", None)
        if check is not None:
            check(ns)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if ns.socket is None:
        ns.socket = protocol.default_socket()
    try:
        return ns.func(ns)
    except CtlError as exc:
        print(f"chargerctl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        # Ctrl-C is how a technician stops --follow: a normal end there.
        return EXIT_OK if getattr(ns, "follow", False) else 130
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
