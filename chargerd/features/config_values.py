"""The values of OCPP configuration keys: types, wire form, bounds and validators.

Split from :mod:`chargerd.features.configuration` (which re-exports all of it)
so that the service stays readable; nothing here knows a key by name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ocpp.v16.enums import ConfigurationStatus

MAX_VALUE_LENGTH = 500  # ChangeConfiguration.req value: CiString500
#: The bounds of an integer key declared without its own: a signed 32-bit
#: integer's positive half, which every CSMS database and timer here can hold.
INT_MAX = 2**31 - 1

Validator = Callable[[Any], "str | None"]
Listener = Callable[[Any], None]


class CSL(tuple[str, ...]):
    """A comma-separated list value; ``str()`` gives the wire form."""

    __slots__ = ()

    def __new__(cls, items: Iterable[str] = ()) -> CSL:
        return super().__new__(cls, tuple(items))

    @classmethod
    def parse(cls, text: str) -> CSL:
        """Split on commas; an empty string is the empty list, an empty item is an error."""
        if not text.strip():
            return cls()
        items = [part.strip() for part in text.split(",")]
        if any(not item for item in items):
            raise ValueError(f"empty item in the list {text!r}")
        return cls(items)

    def __str__(self) -> str:
        return ",".join(self)

    def __repr__(self) -> str:
        return f"CSL({str(self)!r})"


TYPE_NAMES = {bool: "a boolean", int: "an integer", str: "a string", CSL: "a comma-separated list"}


def _parse(kind: type, text: str) -> Any:
    """A wire string as a typed value; ValueError with a readable reason."""
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise ValueError(f"{text!r} is not true or false")
        return lowered == "true"
    if kind is int:
        if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
            raise ValueError(f"{text!r} is not an integer")
        return int(text)
    if kind is CSL:
        return CSL.parse(text)
    return text


def _coerce(kind: type, raw: object) -> Any:
    """A value from the TOML file as a typed value; TypeError on the wrong type."""
    if kind is bool and isinstance(raw, bool):
        return raw
    if kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind is str and isinstance(raw, str):
        return raw
    if kind is CSL:
        if isinstance(raw, str):
            return CSL.parse(raw)
        if isinstance(raw, list | tuple) and all(isinstance(x, str) for x in raw):
            return CSL(x.strip() for x in raw)
    raise TypeError(f"expected {TYPE_NAMES[kind]}, got {type(raw).__name__} {raw!r}")


def wire(value: Any) -> str:
    """A typed value as it travels in GetConfiguration / is stored."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class _Key:
    name: str
    kind: type
    value: Any
    readonly: bool
    reboot_required: bool
    validator: Validator | None
    listeners: list[Listener] = field(default_factory=list)
    origin: str = "default"
    pending: Any = None  # a reboot-required value set by the CSMS, active after restart
    has_pending: bool = False
    lo: int | None = None  # integer keys: the range
    hi: int | None = None
    max_length: int = MAX_VALUE_LENGTH  # characters of the wire form

    def check(self, value: Any) -> str | None:
        if self.kind is int and self.lo is not None and self.hi is not None:
            if value < self.lo and self.hi == INT_MAX:
                return f"must be at least {self.lo}"
            if not self.lo <= value <= self.hi:
                return f"must be between {self.lo} and {self.hi}"
        if len(wire(value)) > self.max_length:
            return f"longer than {self.max_length} characters"
        return self.validator(value) if self.validator else None


class Change(NamedTuple):
    """What a ChangeConfiguration came to, and why when it was refused."""

    status: ConfigurationStatus
    reason: str | None = None


# -- validators --------------------------------------------------------------------------


def at_least(minimum: int) -> Validator:
    def check(value: int) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}"

    return check


def in_range(low: int, high: int) -> Validator:
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def csl_of(
    allowed: Iterable[str], *, max_length: Callable[[], int], what: str = "item"
) -> Validator:
    """A list whose items are all in ``allowed``, without duplicates, at most max_length()."""
    allowed_set = frozenset(allowed)

    def check(value: CSL) -> str | None:
        bad = [item for item in value if item not in allowed_set]
        if bad:
            supported = ", ".join(sorted(allowed_set))
            return f"unsupported {what} {', '.join(bad)} (supported: {supported})"
        if len(set(value)) != len(value):
            return f"a {what} is listed twice"
        limit = max_length()
        if len(value) > limit:
            return f"{len(value)} {what}s, at most {limit} allowed"
        return None

    return check
