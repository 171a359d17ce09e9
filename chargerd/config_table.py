"""The typed getters behind chargerd.config: every mistake with its key path and expectation.

One ``_Table`` per TOML table being read; each getter checks the type and the
range of its key, marks the key as read (``finish()`` refuses the keys nobody
read: a typo is an error, not a default), and fails with
``FILE: key.path: found X, expected Y``.  Split from chargerd.config, which
re-exports ConfigError and GPIO_RANGE.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

GPIO_RANGE = (0, 27)  # BCM numbers on the 40-pin header
_REQUIRED: Any = object()


class ConfigError(Exception):
    """The configuration file is missing, unreadable, not TOML, or wrong."""

    def __init__(
        self, message: str, *, path: Path, key: str | None = None, line: int | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.key = key
        self.line = line


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # TOML true is not 1


def _show(value: Any) -> str:
    """A value as it is written in TOML, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


class _Table:
    """One TOML table being read: typed getters that fail with the key path."""

    def __init__(self, file: Path, data: Mapping[str, Any], prefix: str) -> None:
        self.file = file
        self.data = data
        self.prefix = prefix
        self.used: set[str] = set()

    def keypath(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, value: Any, expected: str) -> ConfigError:
        kp = self.keypath(key)
        found = "missing" if value is _REQUIRED else f"found {_show(value)}"
        return ConfigError(
            f"{self.file}: {kp}: {found}, expected {expected}", path=self.file, key=kp
        )

    def _get(self, key: str, default: Any, expected: str, check: Callable[[Any], bool]) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.fail(key, _REQUIRED, expected)
            return default
        value = self.data[key]
        if not check(value):
            raise self.fail(key, value, expected)
        return value

    def string(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        choices: tuple[str, ...] = (),
        max_len: int | None = None,
        pattern: re.Pattern[str] | None = None,
        expected: str | None = None,
    ) -> Any:
        if expected is None:
            if choices:
                expected = "one of " + ", ".join(json.dumps(c) for c in choices)
            else:
                expected = "a non-empty string"
                if max_len:
                    expected += f" of at most {max_len} characters"

        def ok(v: Any) -> bool:
            return (
                isinstance(v, str)
                and v != ""
                and (not choices or v in choices)
                and (max_len is None or len(v) <= max_len)
                and (pattern is None or pattern.match(v) is not None)
            )

        return self._get(key, default, expected, ok)

    def integer(
        self,
        key: str,
        default: Any = _REQUIRED,
        lo: int | None = None,
        hi: int | None = None,
        *,
        allowed: tuple[int, ...] = (),
        none_ok: bool = False,
    ) -> Any:
        """An integer in lo..hi; with none_ok the string "none" gives None (TOML has no null)."""
        if allowed:
            expected = "one of " + ", ".join(map(str, allowed))
        elif lo is not None and hi is not None:
            expected = f"an integer from {lo} to {hi}"
        elif lo is not None:
            expected = f"an integer >= {lo}"
        else:
            expected = "an integer"
        if none_ok:
            expected += ' or "none"'

        def ok(v: Any) -> bool:
            if none_ok and v == "none":
                return True
            return (
                _is_int(v)
                and (not allowed or v in allowed)
                and (lo is None or v >= lo)
                and (hi is None or v <= hi)
            )

        value = self._get(key, default, expected, ok)
        return None if none_ok and value == "none" else value

    def gpio(self, key: str, default: Any = _REQUIRED, *, none_ok: bool = False) -> Any:
        return self.integer(key, default, *GPIO_RANGE, none_ok=none_ok)

    def number(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        positive: bool = False,
        lo: float | None = None,
        hi: float | None = None,
    ) -> Any:
        expected = "a number"
        if positive:
            expected = "a number > 0"
        elif lo is not None and hi is not None:
            expected = f"a number from {lo:g} to {hi:g}"

        def ok(v: Any) -> bool:
            return (
                isinstance(v, int | float)
                and not isinstance(v, bool)
                and math.isfinite(v)
                and (not positive or v > 0)
                and (lo is None or v >= lo)
                and (hi is None or v <= hi)
            )

        value = self._get(key, default, expected, ok)
        return float(value)

    def boolean(self, key: str, default: Any = _REQUIRED) -> Any:
        return self._get(key, default, "true or false", lambda v: isinstance(v, bool))

    def gpio_list(self, key: str, default: Any, count: int) -> tuple[int, ...]:
        expected = f"an array of {count} GPIO numbers ({GPIO_RANGE[0]}..{GPIO_RANGE[1]})"
        if count == 0:
            expected = "no pins (an empty array)"

        def ok(v: Any) -> bool:
            return (
                isinstance(v, list)
                and len(v) == count
                and all(_is_int(p) and GPIO_RANGE[0] <= p <= GPIO_RANGE[1] for p in v)
            )

        return tuple(self._get(key, default, expected, ok))

    def path(self, key: str, default: Any, base: Path) -> Any:
        value = self._get(key, default, "a path", lambda v: isinstance(v, str) and v != "")
        if value is None or isinstance(value, Path):
            return value
        # Relative paths are relative to the config file, not to the cwd of
        # whoever started the daemon.
        return Path(os.path.normpath(base / Path(value).expanduser()))

    def table(self, key: str) -> _Table:
        value = self._get(key, {}, "a table", lambda v: isinstance(v, dict))
        return _Table(self.file, value, self.keypath(key))

    def array_of_tables(self, key: str) -> list[_Table] | None:
        if key not in self.data:
            self.used.add(key)
            return None
        value = self._get(
            key,
            None,
            f"an array of tables ([[{self.keypath(key)}]])",
            lambda v: isinstance(v, list) and all(isinstance(t, dict) for t in v),
        )
        return [
            _Table(self.file, t, f"{self.keypath(key)}[{i}]") for i, t in enumerate(value, start=1)
        ]

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                kp = self.keypath(key)
                hint = difflib.get_close_matches(key, sorted(self.used), n=1)
                more = f"; did you mean {hint[0]!r}?" if hint else ""
                known = ", ".join(sorted(self.used))
                raise ConfigError(
                    f"{self.file}: unknown key {kp}{more} (known here: {known})",
                    path=self.file,
                    key=kp,
                )
