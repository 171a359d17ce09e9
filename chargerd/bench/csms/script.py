"""Scripted runs against a running bench CSMS: a file of calls and expectations.

A CSMS team writes what its back end would do and what it expects back, and
runs it in CI; the exit status is non-zero as soon as an expectation fails.
JSON (``{"station": ..., "steps": [...]}`` or a bare list of steps) or TOML
(``[[step]]`` tables)::

    station = "CP-1"                      # default charge point of every step
    timeout = 10                          # default seconds per step

    [[step]]                              # a CALL to the station and its answer
    call = "RemoteStartTransaction"
    payload = { idTag = "TOKEN-0001", connectorId = 1 }
    expect = { status = "Accepted" }      # a subset of the CALLRESULT

    [[step]]                              # a message the station must send
    expect_message = "StartTransaction"
    match = { idTag = "TOKEN-0001" }
    save = { tx = "answer.transactionId" }  # what the CSMS answered, for later steps

    [[step]]
    call = "RemoteStopTransaction"
    payload = { transactionId = "${tx}" }  # a saved value, with its type
    expect = { status = "Accepted" }

    [[step]]
    call = "ReserveNow"
    payload = { connectorId = 9 }
    expect_error = "FormationViolation"   # a CALLERROR with this code (or any: true)

    [[step]]
    sleep = 0.5

Messages are looked for from the start of the script on (``expect_message``
only sees what arrived after the script began), each one matched once.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chargerd.bench.csms.control import ControlClient, matches, socket_timeout_for


class ScriptError(Exception):
    """The script file itself is wrong (not an expectation that failed)."""


@dataclass
class StepResult:
    number: int
    title: str
    passed: bool
    detail: str


_STEP_KINDS = ("call", "expect_message", "sleep")
_VAR = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def load_script(path: Path) -> dict[str, Any]:
    """The script as {"station": ..., "timeout": ..., "steps": [...]}; ScriptError if malformed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if Path(path).suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
            data["steps"] = data.pop("step", data.get("steps", []))
        else:
            data = json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ScriptError(f"{path}: {exc}") from None
    if isinstance(data, list):
        data = {"steps": data}
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise ScriptError(f"{path}: expected a list of steps")
    for n, step in enumerate(data["steps"], 1):
        kinds = [k for k in _STEP_KINDS if isinstance(step, dict) and k in step]
        if len(kinds) != 1:
            raise ScriptError(f"{path}: step {n} needs exactly one of {', '.join(_STEP_KINDS)}")
    return data


def substitute(value: Any, saved: dict[str, Any]) -> Any:
    """Replace every "${name}" string by the value saved under that name."""
    if isinstance(value, str):
        m = _VAR.match(value)
        if m:
            if m.group(1) not in saved:
                raise ScriptError(f"${{{m.group(1)}}} is used before a step saved it")
            return saved[m.group(1)]
        return value
    if isinstance(value, dict):
        return {k: substitute(v, saved) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, saved) for v in value]
    return value


def _dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            raise KeyError(path)
    return obj


def run_script(
    script: dict[str, Any],
    client: ControlClient,
    *,
    report: Callable[[StepResult], None] = lambda r: None,
    stop_on_failure: bool = True,
) -> list[StepResult]:
    """Run every step; a failed expectation ends the run unless ``stop_on_failure`` is off."""
    station = script.get("station")
    default_timeout = float(script.get("timeout", 10))
    saved: dict[str, Any] = {}
    mark = client.request("mark")
    after = int(mark.get("index", 0))
    used: set[int] = set()
    results: list[StepResult] = []
    for n, step in enumerate(script["steps"], 1):
        timeout = float(step.get("timeout", default_timeout))
        cp_id = step.get("station", station)
        if "sleep" in step:
            time.sleep(float(step["sleep"]))
            result = StepResult(n, f"sleep {step['sleep']} s", True, "")
        elif "call" in step:
            result, output = _call_step(n, step, cp_id, timeout, client, saved)
            result = _save(result, step, output, saved)
        else:
            result, output = _message_step(n, step, cp_id, timeout, client, saved, after, used)
            result = _save(result, step, output, saved)
        results.append(result)
        report(result)
        if not result.passed and stop_on_failure:
            break
    return results


def _call_step(n, step, cp_id, timeout, client, saved) -> tuple[StepResult, dict]:
    action = step["call"]
    payload = substitute(step.get("payload", {}), saved)
    title = f"call {action} {json.dumps(payload, ensure_ascii=False)}"
    if not isinstance(cp_id, str):
        raise ScriptError(f"step {n}: no station (set station = ... at the top or in the step)")
    answer = client.request("call", cp_id=cp_id, action=action, payload=payload, timeout=timeout)
    expect_error = step.get("expect_error")
    if answer.get("ok"):
        result = answer.get("result")
        shown = json.dumps(result, ensure_ascii=False)
        if expect_error:
            return StepResult(n, title, False, f"expected a CALLERROR, got {shown}"), {}
        expected = substitute(step.get("expect", {}), saved)
        if not matches(expected, result):
            return StepResult(n, title, False, f"expected {json.dumps(expected)}, got {shown}"), {}
        return StepResult(n, title, True, shown), {"result": result}
    if answer.get("kind") == "callerror" and expect_error:
        code = answer.get("code")
        ok = expect_error is True or expect_error == code
        detail = f"CALLERROR {code}" + ("" if ok else f", expected {expect_error}")
        return StepResult(n, title, ok, detail), {"error": answer}
    return StepResult(n, title, False, str(answer.get("error"))), {}


def _message_step(n, step, cp_id, timeout, client, saved, after, used) -> tuple[StepResult, dict]:
    action = step["expect_message"]
    match = substitute(step.get("match", {}), saved)
    title = f"expect {action} {json.dumps(match, ensure_ascii=False)}"
    start = after
    while True:
        answer = client.request(
            "wait_for", action=action, cp_id=cp_id, match=match, after=start, timeout=timeout
        )
        if not answer.get("ok"):
            return StepResult(n, title, False, str(answer.get("error"))), {}
        record = answer["record"]
        if record["index"] in used:  # each message satisfies one expectation only
            start = record["index"] + 1
            continue
        used.add(record["index"])
        return StepResult(n, title, True, json.dumps(record["payload"])), record


def _save(result: StepResult, step: dict, output: dict, saved: dict) -> StepResult:
    if not result.passed:
        return result
    for name, path in (step.get("save") or {}).items():
        try:
            saved[name] = _dig(output, path)
        except KeyError:
            return StepResult(result.number, result.title, False, f"nothing at {path} to save")
    return result


def client_for(path: Path, script: dict[str, Any]) -> ControlClient:
    longest = max(
        [float(s.get("timeout", script.get("timeout", 10))) for s in script["steps"]] or [10]
    )
    return ControlClient(path, timeout=socket_timeout_for(longest))
