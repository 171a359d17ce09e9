"""chargerctl security-log: read and clear the real security log over a real socket."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

from chargerd.clock import ManualClock
from chargerd.control.security_log_cmds import security_log_handlers
from chargerd.features import security_events as sec
from chargerd.features.security_log import SecurityLog
from tests.control.test_cli import run


def _daemon(tmp_path):
    clock = ManualClock(datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
    log = SecurityLog(tmp_path / "security.log")
    events = sec.SecurityEvents(clock=clock, security_log=log)
    sent: list[tuple[str, dict]] = []

    class Store:
        def transaction(self):
            import contextlib

            return contextlib.nullcontext()

    class Outbox:
        def enqueue(self, action, payload):
            sent.append((action, payload))

    events.bind(store=Store(), outbox=Outbox(), send_live=lambda a, p: None)
    return SimpleNamespace(security_log=log, security_events=events), sent


def test_read_shows_the_last_entries(serve, sock_path, tmp_path, capsys):
    d, _ = _daemon(tmp_path)
    for i in range(5):
        d.security_events.emit(sec.INVALID_MESSAGES, f"bad frame {i}")
    serve(security_log_handlers(d))
    assert run(sock_path, "security-log", "--lines", "2") == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "2026-12-01T08:00:00.000Z  InvalidMessages  bad frame 3",
        "2026-12-01T08:00:00.000Z  InvalidMessages  bad frame 4",
    ]
    assert run(sock_path, "security-log", "--json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["total"] == 5 and len(answer["entries"]) == 5


def test_clear_empties_the_log_and_emits_a_critical_event(serve, sock_path, tmp_path, capsys):
    d, queued = _daemon(tmp_path)
    d.security_events.emit(sec.INVALID_MESSAGES, "x")
    d.security_events.emit(sec.INVALID_MESSAGES, "y")
    serve(security_log_handlers(d))
    assert run(sock_path, "security-log", "--clear") == 0
    assert capsys.readouterr().out.strip() == "security log cleared (2 entries)"
    # the fresh log holds only the clearing itself
    assert [e["type"] for e in d.security_log.entries()] == [sec.SECURITY_LOG_WAS_CLEARED]
    # and it went to the durable outbox (critical)
    assert queued[-1][0] == "SecurityEventNotification"
    assert queued[-1][1]["type"] == sec.SECURITY_LOG_WAS_CLEARED
    assert run(sock_path, "security-log", "--json") == 0
    assert json.loads(capsys.readouterr().out)["total"] == 1


def test_bad_lines_is_a_usage_error(serve, sock_path, tmp_path, capsys):
    d, _ = _daemon(tmp_path)
    serve(security_log_handlers(d))
    assert run(sock_path, "security-log", "--lines", "-3") == 2
    assert "must be >= 0" in capsys.readouterr().err


def test_a_daemon_without_a_security_log_refuses_cleanly(serve, sock_path, capsys):
    serve(security_log_handlers(SimpleNamespace()))
    assert run(sock_path, "security-log", "--clear") == 1
    err = capsys.readouterr().err
    assert "keeps no security log" in err and "Traceback" not in err
