"""``chargerctl security-log``: read or clear the station's security log.

Kept out of cli.py (stdlib only here too, so chargerctl still starts fast).
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

EXIT_OK = 0


def add_security_log_parser(sub: Any, non_negative_int: Any, client: Any) -> None:
    """``client(ns)`` opens the control-socket client (cli._client: passed in, no import
    circle)."""
    s = sub.add_parser(
        "security-log",
        help="the security events log (--clear empties it)",
        description="The security events the station logged (what GetLog(SecurityLog) "
        "uploads). --clear deletes the log and records SecurityLogWasCleared, which the "
        "CSMS is told about.",
    )
    s.add_argument("--lines", "-n", type=non_negative_int, default=20, metavar="N")
    s.add_argument("--clear", action="store_true", help="delete the log (technician)")
    s.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    s.set_defaults(func=functools.partial(cmd_security_log, client))


def cmd_security_log(open_client: Any, ns: argparse.Namespace) -> int:
    from chargerd.ctlformat import _dump, _text

    with open_client(ns) as client:
        if ns.clear:
            result = client.call("security_log.clear", {})
            if ns.json:
                _dump(result)
            else:
                print(f"security log cleared ({_text(result.get('cleared'))} entries)")
            return EXIT_OK
        result = client.call("security_log", {"lines": ns.lines})
    if ns.json:
        _dump(result)
        return EXIT_OK
    entries = result.get("entries")
    for e in entries if isinstance(entries, list) else []:
        if not isinstance(e, dict):
            continue
        info = e.get("techInfo")
        line = f"{_text(e.get('timestamp'))}  {_text(e.get('type'))}"
        print(f"{line}  {_text(info)}" if info else line)
    if not result.get("total"):
        print("the security log is empty")
    return EXIT_OK
