"""chargerctl against a real ControlServer, in-process and as a subprocess."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from chargerd import cli
from chargerd.control.server import CommandRefused, CommandUsageError, NotFound

STATUS: dict[str, Any] = {
    "station": {
        "charge_point_id": "CP-0001",
        "vendor": "Acme",
        "model": "Wallbox 22",
        "firmware_version": "1.4.2",
        "hardware": "mock",
        "uptime_s": 7380,
    },
    "ocpp": {
        "csms_url": "ws://127.0.0.1:9000/CP-0001",
        "connected": True,
        "registration": "Accepted",
        "outbox_pending": 3,
        "last_heartbeat": "2026-01-01T10:00:00Z",
    },
    "connectors": [
        {
            "id": 1,
            "status": "Charging",
            "error_code": "NoError",
            "ev_state": "C",
            "contactor_closed": True,
            "locked": True,
            "offered_current_a": 32.0,
            "power_w": 7360.0,
            "energy_wh": 12345.6,
            "transaction_id": 42,
            "id_tag": "04A1B2C3",
        },
        {
            "id": 2,
            "status": "Faulted",
            "error_code": "GroundFailure",
            "ev_state": "A",
            "contactor_closed": False,
            "locked": None,
            "offered_current_a": None,
            "power_w": None,
            "energy_wh": None,
            "transaction_id": None,
            "id_tag": None,
        },
    ],
    "reader": {"faults": ["reader_failure"]},
    "faults": [
        {"connector": 1, "fault": "contactor_welded"},
        {"connector": 0, "fault": "reader_failure"},
    ],
}

METER_1 = {
    "id": 1,
    "energy_wh": 12345.6,
    "power_w": 7360.0,
    "voltage_v": [230.1, 229.8, 231.0],
    "current_a": [10.7, 10.6, 10.7],
    "frequency_hz": 50.0,
    "faults": [],
}


def returning(value: Any, calls: list | None = None) -> Callable[[dict], Any]:
    """A handler that records its args and answers ``value`` (or raises it)."""

    async def handler(args: dict) -> dict:
        if calls is not None:
            calls.append(args)
        if isinstance(value, Exception):
            raise value
        return value

    return handler


def run(sock: Path, *argv: str) -> int:
    return cli.main(["--socket", str(sock), *argv])


def columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


# --------------------------------------------------------------------------- status


def test_status_json_prints_the_result_exactly(serve, sock_path, capsys) -> None:
    serve({"status": returning(STATUS)})
    assert run(sock_path, "status", "--json") == 0
    out = capsys.readouterr().out
    assert out == json.dumps(STATUS, indent=2) + "\n"
    assert json.loads(out) == STATUS


def test_status_human_is_one_row_per_connector_then_faults_then_link(
    serve, sock_path, capsys
) -> None:
    serve({"status": returning(STATUS)})
    assert run(sock_path, "status") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "CP-0001  Acme Wallbox 22  fw 1.4.2  (mock hardware, up 2h 03m)"
    assert columns(lines[1])[:3] == ["CONN", "STATUS", "EV"]
    assert columns(lines[2]) == [
        "1", "Charging", "C", "closed", "locked", "32.0 A", "7.36 kW", "12.346 kWh",
        "42", "04A1B2C3", "-",
    ]  # fmt: skip
    assert columns(lines[3]) == [
        "2", "Faulted", "A", "open", "-", "-", "-", "-", "-", "-", "GroundFailure",
    ]  # fmt: skip
    # the reader fault is reported once, though the daemon lists it twice
    assert lines[4] == "faults: connector 1: contactor_welded; station: reader_failure"
    assert lines[5] == (
        "ocpp: ws://127.0.0.1:9000/CP-0001  connected  registration Accepted  outbox 3"
        "  last heartbeat 2026-01-01T10:00:00Z"
    )
    assert len(lines) == 6


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"connectors": [{"id": 1}], "ocpp": {"connected": None}, "station": None},
        {"connectors": None, "faults": "garbage", "reader": {"faults": ["reader_failure"]}},
    ],
)
def test_status_human_survives_missing_and_null_fields(serve, sock_path, capsys, status) -> None:
    serve({"status": returning(status)})
    assert run(sock_path, "status") == 0
    out = capsys.readouterr().out
    assert "ocpp: -  link unknown" in out
    assert "faults: " in out


# --------------------------------------------------------------------------- errors


def test_refused_exits_1_with_the_reason(serve, sock_path, capsys) -> None:
    serve({"sim.charge": returning(CommandRefused("no EV plugged on connector 1"))})
    assert run(sock_path, "sim", "charge", "1") == 1
    captured = capsys.readouterr()
    assert captured.err == "chargerctl: no EV plugged on connector 1\n"
    assert captured.out == ""


def test_unknown_connector_exits_1_with_the_reason(serve, sock_path, capsys) -> None:
    calls: list[dict] = []
    serve({"sim.plug": returning(NotFound("unknown connector 9"), calls)})
    assert run(sock_path, "sim", "plug", "9") == 1
    assert "unknown connector 9" in capsys.readouterr().err
    assert calls[0]["connector"] == 9


def test_server_usage_error_exits_2(serve, sock_path, capsys) -> None:
    serve({"sim.plug": returning(CommandUsageError("ev max current must be 6..80 A"))})
    assert run(sock_path, "sim", "plug", "1", "--ev-max-current", "500") == 2
    assert "ev max current must be 6..80 A" in capsys.readouterr().err


def test_command_the_daemon_does_not_know_exits_2(serve, sock_path, capsys) -> None:
    serve({"status": returning(STATUS)})
    assert run(sock_path, "meter") == 2
    err = capsys.readouterr().err
    assert "unknown command 'meter'" in err and "status" in err


def test_internal_error_exits_1(serve, sock_path, capsys) -> None:
    serve({"status": returning(RuntimeError("database is locked"))})
    assert run(sock_path, "status") == 1
    assert "database is locked" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["selftest", "toaster"],
        ["sim", "fault", "meter_failure"],
        ["sim", "fault", "--list", "meter_failure"],
        ["sim", "plug", "one"],
        ["sim", "plug", "1", "--phases", "2"],
        ["--timeout", "0", "status"],
        ["log", "--lines", "-1"],
        [],
    ],
)
def test_argument_errors_exit_2_without_contacting_the_daemon(sock_path, capsys, argv) -> None:
    assert run(sock_path, *argv) == 2  # no server: reaching it would exit 3
    assert "usage: chargerctl" in capsys.readouterr().err


def test_help_exits_0_and_documents_exit_codes(capsys) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit status:" in out and "3  chargerd could not be reached" in out


def test_daemon_not_running_no_socket(sock_path, capsys) -> None:
    assert run(sock_path, "status") == 3
    assert capsys.readouterr().err == (
        f"chargerctl: chargerd is not running (no socket at {sock_path})\n"
    )


def test_daemon_not_running_stale_socket(sock_path, capsys) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))
    dead.close()
    assert run(sock_path, "status") == 3
    assert "chargerd is not running" in capsys.readouterr().err


def test_socket_path_comes_from_the_environment(serve, sock_path, capsys, monkeypatch) -> None:
    serve({"status": returning(STATUS)})
    monkeypatch.setenv("CHARGERD_SOCKET", str(sock_path))
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == STATUS


@pytest.mark.skipif(os.geteuid() == 0, reason="root is never denied by file modes")
def test_permission_denied_on_the_socket(serve, sock_path, capsys) -> None:
    serve({"status": returning(STATUS)})
    os.chmod(sock_path, 0)
    assert run(sock_path, "status") == 3
    assert capsys.readouterr().err == (
        f"chargerctl: permission denied on {sock_path}: "
        "add yourself to the chargerd group or use sudo\n"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_permission_denied_for_a_user_outside_the_group(sock_path) -> None:
    # Tests run as root, whom file modes never deny: fork, become nobody, and
    # run chargerctl there against a socket with the daemon's mode 0660.
    os.chmod(sock_path.parent, 0o755)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen()
    os.chmod(sock_path, 0o660)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 99
        try:
            sys.stderr = os.fdopen(write_end, "w")  # pytest's capture owns the usual one
            os.setgid(65534)
            os.setuid(65534)
            code = cli.main(["--socket", str(sock_path), "status"])
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as err:
            message = err.read()
        _, status = os.waitpid(pid, 0)
    finally:
        listener.close()
    assert os.waitstatus_to_exitcode(status) == 3
    assert message == (
        f"chargerctl: permission denied on {sock_path}: "
        "add yourself to the chargerd group or use sudo\n"
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            PermissionError(errno.EACCES, "Permission denied"),
            "permission denied on /run/c.sock: add yourself to the chargerd group or use sudo",
        ),
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory"),
            "chargerd is not running (no socket at /run/c.sock)",
        ),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "chargerd is not running"),
        (TimeoutError("timed out"), "timeout: no answer from chargerd on /run/c.sock within 2 s"),
        (OSError(errno.EIO, "Input/output error"), "cannot reach chargerd on /run/c.sock"),
    ],
)
def test_connection_error_messages(exc: OSError, expected: str) -> None:
    assert cli.describe_connect_error(exc, Path("/run/c.sock"), 2.0).startswith(expected)


def test_timeout_exits_3(serve, sock_path, capsys) -> None:
    async def stuck(args: dict) -> dict:
        await asyncio.Event().wait()
        return {}

    serve({"status": stuck})
    assert run(sock_path, "--timeout", "0.2", "status") == 3
    assert "timeout: no answer from chargerd" in capsys.readouterr().err


# --------------------------------------------------------------------------- power cut


def test_power_cut_is_success_when_the_daemon_dies_without_answering(
    serve, sock_path, capsys
) -> None:
    holder: dict[str, Any] = {}

    async def power_cut(args: dict) -> dict:
        holder["server"].close_soon()  # the daemon vanishes mid-request
        await asyncio.Event().wait()
        return {}

    holder["server"] = serve({"sim.power_cut": power_cut})
    assert run(sock_path, "sim", "power-cut") == 0
    assert capsys.readouterr().out == "power cut\n"
    # The server's close runs on its own thread: the client may see the connection drop
    # a moment before the socket file is gone.
    deadline = time.monotonic() + 2
    while sock_path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not sock_path.exists()


def test_other_commands_report_a_daemon_that_dies_without_answering(
    serve, sock_path, capsys
) -> None:
    holder: dict[str, Any] = {}

    async def dying(args: dict) -> dict:
        holder["server"].close_soon()
        await asyncio.Event().wait()
        return {}

    holder["server"] = serve({"status": dying})
    assert run(sock_path, "status") == 3
    assert "closed the connection without answering" in capsys.readouterr().err


def test_power_cut_refused_on_real_hardware_is_a_failure(serve, sock_path, capsys) -> None:
    serve({"sim.power_cut": returning(CommandRefused("not a simulated station"))})
    assert run(sock_path, "sim", "power-cut") == 1
    assert "not a simulated station" in capsys.readouterr().err


# --------------------------------------------------------------------------- other commands


def test_selftest_prints_steps_and_fails_with_exit_1(serve, sock_path, capsys) -> None:
    calls: list[dict] = []
    report = {
        "device": "contactor",
        "passed": False,
        "steps": [
            {"step": "close", "ok": True, "detail": "feedback closed"},
            {"step": "open", "ok": False, "detail": "feedback still closed (welded?)"},
        ],
    }
    serve({"selftest": returning(report, calls)})
    assert run(sock_path, "selftest", "contactor", "--connector", "1") == 1
    assert calls == [{"device": "contactor", "connector": 1}]
    assert capsys.readouterr().out.splitlines() == [
        "selftest contactor, connector 1",
        "  ok    close: feedback closed",
        "  FAIL  open: feedback still closed (welded?)",
        "FAILED",
    ]


def test_selftest_passing_exits_0(serve, sock_path, capsys) -> None:
    calls: list[dict] = []
    report = {"device": "reader", "passed": True, "steps": [{"step": "probe", "ok": True}]}
    serve({"selftest": returning(report, calls)})
    assert run(sock_path, "selftest", "reader") == 0
    assert calls == [{"device": "reader", "connector": None}]
    assert capsys.readouterr().out.splitlines()[-1] == "PASSED"


def test_meter_table(serve, sock_path, capsys) -> None:
    serve({"meter": returning({"connectors": [METER_1, {"id": 2, "energy_wh": None}]})})
    assert run(sock_path, "meter") == 0
    lines = capsys.readouterr().out.splitlines()
    assert columns(lines[1]) == [
        "1", "12.346 kWh", "7.36 kW", "230.1/229.8/231.0 V", "10.7/10.6/10.7 A", "50.00 Hz", "-",
    ]  # fmt: skip
    assert columns(lines[2]) == ["2", "-", "-", "-", "-", "-", "-"]


def test_log_human_marks_direction(serve, sock_path, capsys) -> None:
    calls: list[dict] = []
    frames = [
        {"time": "2026-01-01T10:00:00Z", "direction": "out", "frame": '[2,"1","Heartbeat",{}]'},
        {"time": "2026-01-01T10:00:01Z", "direction": "in", "frame": '[3,"1",{}]'},
    ]
    serve({"log": returning({"frames": frames}, calls)})
    assert run(sock_path, "log", "--lines", "5") == 0
    assert calls == [{"lines": 5}]
    assert capsys.readouterr().out.splitlines() == [
        '2026-01-01T10:00:00Z  >>  [2,"1","Heartbeat",{}]',
        '2026-01-01T10:00:01Z  <<  [3,"1",{}]',
    ]


def test_config_get_lists_keys_and_unknown_keys_fail(serve, sock_path, capsys) -> None:
    calls: list[dict] = []
    answer = {
        "configuration_key": [
            {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
            {"key": "NumberOfConnectors", "readonly": True, "value": "2"},
            {"key": "AuthorizationKey", "readonly": False, "value": None},
        ],
        "unknown_key": [],
    }
    serve({"config.get": returning(answer, calls)})
    assert run(sock_path, "config") == 0
    assert calls == [{"keys": []}]
    assert capsys.readouterr().out.splitlines() == [
        "HeartbeatInterval   300",
        "NumberOfConnectors  2  [read-only]",
        "AuthorizationKey    (no value)",
    ]
    answer["configuration_key"], answer["unknown_key"] = [], ["Nope"]
    assert run(sock_path, "config", "Nope") == 1
    assert calls[-1] == {"keys": ["Nope"]}
    assert "unknown configuration key: Nope" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("answer", "code", "stream", "text"),
    [
        ({"status": "Accepted"}, 0, "out", "HeartbeatInterval: Accepted"),
        ({"status": "RebootRequired"}, 0, "out", "RebootRequired"),
        ({"status": "Rejected", "reason": "must be >= 0"}, 1, "err", "Rejected: must be >= 0"),
        ({"status": "NotSupported"}, 1, "err", "HeartbeatInterval: NotSupported"),
    ],
)
def test_config_set(serve, sock_path, capsys, answer, code, stream, text) -> None:
    calls: list[dict] = []
    serve({"config.set": returning(answer, calls)})
    assert run(sock_path, "config", "HeartbeatInterval", "-5") == code
    assert calls == [{"key": "HeartbeatInterval", "value": "-5"}]
    assert text in getattr(capsys.readouterr(), stream)


def test_sim_fault_list(serve, sock_path, capsys) -> None:
    answer = {"faults": ["meter_failure", "reader_failure"], "active": {"meter_failure": [1]}}
    serve({"sim.faults": returning(answer)})
    assert run(sock_path, "sim", "fault", "--list") == 0
    assert capsys.readouterr().out.splitlines() == ["meter_failure  active: [1]", "reader_failure"]


@pytest.mark.parametrize(
    ("argv", "cmd", "args"),
    [
        (
            ["sim", "plug", "1"],
            "sim.plug",
            {"connector": 1, "ev_max_current_a": None, "phases": None, "cable_capacity_a": None},
        ),
        (
            [
                "sim",
                "plug",
                "2",
                "--ev-max-current",
                "16",
                "--phases",
                "1",
                "--cable-capacity",
                "20",
            ],
            "sim.plug",
            {"connector": 2, "ev_max_current_a": 16.0, "phases": 1, "cable_capacity_a": 20},
        ),
        (["sim", "charge", "1"], "sim.charge", {"connector": 1}),
        (["sim", "suspend", "2"], "sim.suspend", {"connector": 2}),
        (["sim", "unplug", "1"], "sim.unplug", {"connector": 1}),
        (["sim", "card", "04A1B2C3"], "sim.card", {"uid": "04A1B2C3"}),
        (
            ["sim", "fault", "meter_failure", "on", "--connector", "1"],
            "sim.fault",
            {"name": "meter_failure", "on": True, "connector": 1},
        ),
        (
            ["sim", "fault", "reader_failure", "off"],
            "sim.fault",
            {"name": "reader_failure", "on": False, "connector": None},
        ),
        (["sim", "network", "down"], "sim.network", {"up": False}),
        (["sim", "network", "up"], "sim.network", {"up": True}),
        (["status"], "status", {}),
        (["meter", "--json"], "meter", {}),
        (["log"], "log", {"lines": 20}),
    ],
)
def test_requests_on_the_wire(serve, sock_path, capsys, argv, cmd, args) -> None:
    seen: list[tuple[str, dict]] = []

    def recorder(name: str) -> Callable[[dict], Any]:
        async def handler(a: dict) -> dict:
            seen.append((name, a))
            return {}

        return handler

    names = ["sim.plug", "sim.charge", "sim.suspend", "sim.unplug", "sim.card", "sim.fault"]
    names += ["sim.network", "status", "meter", "log"]
    serve({n: recorder(n) for n in names})
    assert run(sock_path, *argv) == 0
    assert seen == [(cmd, args)]


# --------------------------------------------------------------------------- following


def test_meter_follow_prints_events_until_the_daemon_ends_the_stream(
    serve, sock_path, capsys
) -> None:
    async def three(args: dict) -> AsyncIterator[dict]:
        for n in range(3):
            yield {**METER_1, "energy_wh": 1000.0 * (n + 1)}

    serve({}, {"meter.follow": three})
    assert run(sock_path, "meter", "--follow") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for n, line in enumerate(lines):
        assert re.fullmatch(r"\d\d:\d\d:\d\d", columns(line)[0])
        assert columns(line)[1:4] == ["connector 1", f"{n + 1}.000 kWh", "7.36 kW"]


def test_log_follow_json_is_one_object_per_line(serve, sock_path, capsys) -> None:
    frames = [
        {"time": "2026-01-01T10:00:00Z", "direction": "out", "frame": "[2]"},
        {"time": "2026-01-01T10:00:01Z", "direction": "in", "frame": "[3]"},
    ]
    calls: list[dict] = []

    async def two(args: dict) -> AsyncIterator[dict]:
        calls.append(args)
        for f in frames:
            yield f

    serve({}, {"log.follow": two})
    assert run(sock_path, "log", "--follow", "--json", "-n", "0") == 0
    assert calls == [{"lines": 0}]
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == frames


def test_follow_of_an_unknown_connector_fails(serve, sock_path, capsys) -> None:
    async def failing(args: dict) -> AsyncIterator[dict]:
        raise NotFound("no meter on connector 3")
        yield {}

    serve({}, {"meter.follow": failing})
    assert run(sock_path, "meter", "--follow") == 1
    assert "no meter on connector 3" in capsys.readouterr().err


def _child_env(sock_path: Path) -> dict[str, str]:
    return {**os.environ, "CHARGERD_SOCKET": str(sock_path), "PYTHONUNBUFFERED": "1"}


def test_follow_in_a_subprocess_stops_cleanly_on_ctrl_c(serve, sock_path) -> None:
    released = threading.Event()

    async def ticks(args: dict) -> AsyncIterator[dict]:
        try:
            n = 0
            while True:
                yield {**METER_1, "energy_wh": 1000.0 + n}
                n += 1
                await asyncio.sleep(0.02)
        finally:
            released.set()

    serve({}, {"meter.follow": ticks})
    proc = subprocess.Popen(
        [sys.executable, "-m", "chargerd.cli", "meter", "--follow"],
        env=_child_env(sock_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert all("connector 1" in line for line in lines), lines
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0
        assert proc.stderr.read() == ""
    finally:
        proc.kill()
        proc.communicate()
    assert released.wait(5), "the daemon kept streaming to a client that left"


def test_subprocess_exit_code_and_message_when_daemon_is_not_running(sock_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chargerd.cli", "status"],
        env=_child_env(sock_path),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 3
    assert proc.stderr == f"chargerctl: chargerd is not running (no socket at {sock_path})\n"


def test_cli_imports_nothing_heavy() -> None:
    code = (
        "import sys, chargerd.cli\n"
        "heavy = {'asyncio', 'ocpp', 'websockets', 'gpiozero', 'pymodbus', 'serial', 'hal'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- clear messages


def test_a_socket_path_that_is_a_regular_file_says_so(tmp_path, capsys) -> None:
    regular = tmp_path / "chargerd.toml"
    regular.write_text("[station]\n")
    assert run(regular, "status") == 2  # a wrong argument, not a daemon down
    err = capsys.readouterr().err
    assert f"{regular} is not a socket (a regular file)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_a_number_of_seconds_says_so(sock_path, capsys, value) -> None:
    assert run(sock_path, "--timeout", value, "status") == 2
    err = capsys.readouterr().err
    assert f"argument --timeout: {value!r}" in err and "_positive_float" not in err


def test_log_lines_that_are_not_a_number_say_so(sock_path, capsys) -> None:
    assert run(sock_path, "log", "--lines", "ten") == 2
    assert "'ten' is not a whole number" in capsys.readouterr().err


def test_sim_card_prints_what_the_station_did(serve, sock_path, capsys) -> None:
    answer = {
        "done": True,
        "read": True,
        "id_tag": "TOKEN-0001",
        "outcome": "started",
        "connector": 1,
        "transaction_id": 1000,
        "local_transaction_id": 3,
        "message": "accepted and started transaction 1000 (local 3) on connector 1",
    }
    calls: list[dict] = []
    serve({"sim.card": returning(answer, calls)})
    assert run(sock_path, "sim", "card", "TOKEN-0001") == 0
    assert calls == [{"uid": "TOKEN-0001"}]
    assert capsys.readouterr().out == (
        "card TOKEN-0001: accepted and started transaction 1000 (local 3) on connector 1\n"
    )
    assert run(sock_path, "sim", "--json", "card", "TOKEN-0001") == 0
    assert json.loads(capsys.readouterr().out) == answer


def test_status_shows_the_local_id_until_the_csms_id_is_known(serve, sock_path, capsys) -> None:
    status = json.loads(json.dumps(STATUS))
    c = status["connectors"][0]
    c["transaction_id"], c["transaction_local_id"] = None, 7
    serve({"status": returning(status)})
    assert run(sock_path, "status") == 0
    header, row = capsys.readouterr().out.splitlines()[1:3]
    assert columns(row)[columns(header).index("TX")] == "local 7"


def test_status_human_shows_reservations_and_the_local_list(serve, sock_path, capsys) -> None:
    status = {
        **STATUS,
        "reservations": [
            {"reservation_id": 7, "connector_id": 0, "id_tag": "AB12", "expiry_date": "T1"},
            {"reservation_id": 8, "connector_id": 2, "id_tag": "CD34", "expiry_date": "T2"},
        ],
        "local_list": {"enabled": True, "version": 12, "entries": 3456},
    }
    serve({"status": returning(status)})
    assert run(sock_path, "status") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[6:] == [
        "reservations: #7 connector 0 for AB12 until T1; #8 connector 2 for CD34 until T2",
        "local list: version 12, 3456 entries",
    ]


def test_status_human_shows_the_limit_in_force_and_its_source(serve, sock_path, capsys) -> None:
    status = json.loads(json.dumps(STATUS))
    status["connectors"][0].update(
        limit_a=16.0, limit_source="ChargePointMaxProfile #1 shared by 2"
    )
    status["connectors"][1].update(
        limit_a=0.0, limit_source="TxDefaultProfile #3 (paused: below 6 A)"
    )
    serve({"status": returning(status)})
    assert run(sock_path, "status") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[4:6] == [
        "limit connector 1: 16.0 A (ChargePointMaxProfile #1 shared by 2)",
        "limit connector 2: 0.0 A (TxDefaultProfile #3 (paused: below 6 A))",
    ]
