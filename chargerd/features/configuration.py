"""OCPP configuration keys: declared by the features that use them, set by the CSMS.

Each feature declares its keys MicroOcpp-style (type, default, read-only,
validator), so that the rules of a key live next to the code that reads it and
GetConfiguration/ChangeConfiguration need no knowledge of any feature.  The
Core profile's keys are declared here by :func:`declare_core_keys`.

Where a value comes from, highest precedence first:

1. **csms** -- set by ChangeConfiguration, persisted in ``ocpp_config``.  A
   row in that table *is* the marker "the CSMS set this": only
   :meth:`ConfigurationService.set` writes there.  The operator's central
   system is the authority on a running station, and a value it set must not
   silently snap back when the daemon restarts with an older config file.
2. **file** -- the ``[ocpp]`` table of chargerd.toml (:meth:`apply_initial`),
   not persisted, re-read at every start.
3. **station** -- learned at run time (:meth:`set_internal`, e.g. the heartbeat
   interval of BootNotification.conf), not persisted.
4. **default** -- the declared default.

Keys are CiString50 and matched case-insensitively; values travel as strings
(booleans as ``true``/``false``, lists as comma-separated lists, CSL).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ocpp.exceptions import OccurenceConstraintViolationError
from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.datatypes import KeyValue
from ocpp.v16.enums import Action, ConfigurationStatus

from chargerd.store import Store

log = logging.getLogger(__name__)

MAX_VALUE_LENGTH = 500  # ChangeConfiguration.req value: CiString500

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


_TYPE_NAMES = {bool: "a boolean", int: "an integer", str: "a string", CSL: "a comma-separated list"}


def _parse(kind: type, text: str) -> Any:
    """A wire string as a typed value; ValueError with a readable reason."""
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise ValueError(f"{text!r} is not true or false")
        return lowered == "true"
    if kind is int:
        if not re.fullmatch(r"\s*[+-]?\d+\s*", text):
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
    raise TypeError(f"expected {_TYPE_NAMES[kind]}, got {type(raw).__name__} {raw!r}")


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

    def check(self, value: Any) -> str | None:
        if len(wire(value)) > MAX_VALUE_LENGTH:
            return f"longer than {MAX_VALUE_LENGTH} characters"
        return self.validator(value) if self.validator else None


class ConfigurationService:
    """The station's OCPP configuration keys and their two OCPP messages."""

    def __init__(self, store: Store, *, max_keys: int = 100) -> None:
        self._store = store
        #: GetConfigurationMaxKeys: how many keys one GetConfiguration may name.
        self.max_keys = max_keys
        self._keys: dict[str, _Key] = {}  # casefolded name -> key, in declaration order
        self._persisted = {
            str(row["key"]).casefold(): (str(row["key"]), str(row["value"]))
            for row in store.query("SELECT key, value FROM ocpp_config")
        }

    # -- declaring ---------------------------------------------------------------------

    def declare(
        self,
        key: str,
        default: Any,
        *,
        type: type,
        readonly: bool = False,
        reboot_required: bool = False,
        validator: Validator | None = None,
        on_change: Listener | None = None,
    ) -> None:
        """Declare a key; a value the CSMS persisted earlier becomes its value at once."""
        if type not in _TYPE_NAMES:
            raise TypeError(f"{key}: unsupported configuration type {type!r}")
        if key.casefold() in self._keys:
            raise ValueError(f"configuration key {key} declared twice")
        default = _coerce(type, default)
        entry = _Key(key, type, default, readonly, reboot_required, validator)
        reason = entry.check(default)
        if reason:
            raise ValueError(f"{key}: default {wire(default)!r} is invalid: {reason}")
        if on_change is not None:
            entry.listeners.append(on_change)
        stored = self._persisted.get(key.casefold())
        if stored is not None and not readonly:
            try:
                value = _parse(type, stored[1])
                reason = entry.check(value)
            except ValueError as exc:
                reason = str(exc)
            if reason:
                log.warning("ignoring the stored value %r of %s: %s", stored[1], key, reason)
            else:
                entry.value, entry.origin = value, "csms"
        self._keys[key.casefold()] = entry

    def watch(self, key: str, listener: Listener) -> None:
        """Call ``listener(new_value)`` whenever ``key`` changes at run time."""
        self._entry(key).listeners.append(listener)

    # -- reading -------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The value in effect (bool, int, str or CSL); KeyError for an undeclared key."""
        return self._entry(key).value

    def origin(self, key: str) -> str:
        """Where the value in effect comes from: csms, file, station or default."""
        return self._entry(key).origin

    def keys(self) -> list[str]:
        return [k.name for k in self._keys.values()]

    def is_declared(self, key: str) -> bool:
        return key.casefold() in self._keys

    def key_value(self, key: str) -> KeyValue:
        """The GetConfiguration entry of a key (a pending reboot value is shown as set)."""
        entry = self._entry(key)
        value = entry.pending if entry.has_pending else entry.value
        return KeyValue(key=entry.name, readonly=entry.readonly, value=wire(value))

    # -- changing ------------------------------------------------------------------------

    def set(self, key: str, value: str) -> ConfigurationStatus:
        """ChangeConfiguration semantics: parse, validate, persist, notify."""
        entry = self._keys.get(key.casefold())
        if entry is None:
            return ConfigurationStatus.not_supported
        if entry.readonly:
            log.info("ChangeConfiguration %s refused: read-only", entry.name)
            return ConfigurationStatus.rejected
        try:
            parsed = _parse(entry.kind, value)
            reason = entry.check(parsed)
        except ValueError as exc:
            reason = str(exc)
        if reason:
            log.info("ChangeConfiguration %s=%r refused: %s", entry.name, value, reason)
            return ConfigurationStatus.rejected
        with self._store.transaction():
            self._store.execute(
                "INSERT INTO ocpp_config(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (entry.name, wire(parsed)),
            )
        self._persisted[entry.name.casefold()] = (entry.name, wire(parsed))
        log.info("configuration %s set to %r by the CSMS", entry.name, wire(parsed))
        if entry.reboot_required:
            entry.pending, entry.has_pending = parsed, True
            return ConfigurationStatus.reboot_required
        self._apply(entry, parsed, "csms")
        return ConfigurationStatus.accepted

    def set_internal(self, key: str, value: Any) -> None:
        """A value the station learned itself (read-only keys included); not persisted.

        Raises ValueError when the value is invalid: the caller's bug, not the CSMS's.
        """
        entry = self._entry(key)
        try:
            typed = _coerce(entry.kind, value)
        except TypeError as exc:
            raise ValueError(f"{entry.name}: {exc}") from exc
        reason = entry.check(typed)
        if reason:
            raise ValueError(f"{entry.name}: {wire(typed)!r} is invalid: {reason}")
        self._apply(entry, typed, "station")

    def apply_initial(self, values: dict[str, object]) -> None:
        """Apply the ``[ocpp]`` table of the config file, after every key is declared.

        All values are checked before any is applied, so a bad file changes
        nothing.  Raises ``ValueError("ocpp.<Key>: <reason>")`` for an unknown
        or read-only key, a wrong type or a value its validator refuses.  A
        key the CSMS has set keeps the CSMS's value (see the module docstring).
        """
        checked: list[tuple[_Key, Any]] = []
        for key, raw in values.items():
            entry = self._keys.get(key.casefold())
            if entry is None:
                raise ValueError(f"ocpp.{key}: unknown configuration key")
            if entry.readonly:
                raise ValueError(f"ocpp.{key}: read-only, the station sets it itself")
            try:
                typed = _coerce(entry.kind, raw)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"ocpp.{key}: {exc}") from exc
            reason = entry.check(typed)
            if reason:
                raise ValueError(f"ocpp.{key}: {wire(typed)!r} is invalid: {reason}")
            checked.append((entry, typed))
        for entry, typed in checked:
            if entry.origin == "csms":
                if typed != entry.value:
                    log.info(
                        "ocpp.%s from the config file (%r) is overridden by the value the "
                        "CSMS set (%r)",
                        entry.name,
                        wire(typed),
                        wire(entry.value),
                    )
                continue
            self._apply(entry, typed, "file")

    def _apply(self, entry: _Key, value: Any, origin: str) -> None:
        changed = value != entry.value
        entry.value, entry.origin = value, origin
        if not changed:
            return
        for listener in entry.listeners:
            try:
                listener(value)
            except Exception:
                log.exception("on_change of %s failed", entry.name)

    def _entry(self, key: str) -> _Key:
        try:
            return self._keys[key.casefold()]
        except KeyError:
            raise KeyError(f"configuration key {key!r} is not declared") from None

    # -- OCPP ----------------------------------------------------------------------------

    @on(Action.get_configuration)
    def on_get_configuration(
        self, key: list[str] | None = None, **_: Any
    ) -> call_result.GetConfiguration:
        """All keys for an empty request; otherwise the known ones and the unknown ones.

        A request naming more keys than GetConfigurationMaxKeys is answered with
        a CALLERROR (OccurenceConstraintViolation, the 1.6 spelling) rather than
        silently truncated: a CSMS that gets a partial answer cannot tell which
        keys are missing and why.
        """
        if not key:
            found = [self.key_value(k.name) for k in self._keys.values()]
            return call_result.GetConfiguration(configuration_key=found)
        if len(key) > self.max_keys:
            raise OccurenceConstraintViolationError(
                description=f"{len(key)} keys requested, GetConfigurationMaxKeys is {self.max_keys}"
            )
        found, unknown = [], []
        for name in key:
            if self.is_declared(name):
                found.append(self.key_value(name))
            else:
                unknown.append(name)
        return call_result.GetConfiguration(
            configuration_key=found or None, unknown_key=unknown or None
        )

    @on(Action.change_configuration)
    def on_change_configuration(
        self, key: str, value: str, **_: Any
    ) -> call_result.ChangeConfiguration:
        return call_result.ChangeConfiguration(status=self.set(key, value))


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


# -- the Core profile (OCPP 1.6 §9.1) ------------------------------------------------------

FEATURE_PROFILES = (
    "Core",
    "FirmwareManagement",
    "LocalAuthListManagement",
    "Reservation",
    "SmartCharging",
    "RemoteTrigger",
)
PHASE_ROTATIONS = ("NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR")
DEFAULT_MEASURAND = "Energy.Active.Import.Register"


def _phase_rotation(connectors: int, max_length: Callable[[], int]) -> Validator:
    def check(value: CSL) -> str | None:
        seen: set[int] = set()
        for item in value:
            m = re.fullmatch(r"(\d+)\.(\w+)", item)
            if m is None or m.group(2) not in PHASE_ROTATIONS:
                return (
                    f"{item!r} is not <connectorId>.<rotation> with a rotation among "
                    f"{', '.join(PHASE_ROTATIONS)}"
                )
            cid = int(m.group(1))
            if cid > connectors:
                return f"connector {cid} does not exist (0..{connectors})"
            if cid in seen:
                return f"connector {cid} is listed twice"
            seen.add(cid)
        limit = max_length()
        return None if len(value) <= limit else f"{len(value)} entries, at most {limit} allowed"

    return check


def declare_core_keys(
    svc: ConfigurationService,
    *,
    connectors: int,
    supported_measurands: set[str],
    feature_profiles: Sequence[str] = ("Core",),
) -> None:
    """Declare every Core profile key with its type, default, access and range.

    ``feature_profiles`` is what SupportedFeatureProfiles reports: the daemon
    passes the profiles whose modules it wired.
    """
    unknown = [p for p in feature_profiles if p not in FEATURE_PROFILES]
    if unknown:
        raise ValueError(f"unknown feature profiles: {', '.join(unknown)}")
    if connectors < 1:
        raise ValueError("a station has at least one connector")
    non_negative = at_least(0)

    def measurand_keys(name: str, default: str) -> None:
        limit_key = f"{name}MaxLength"
        svc.declare(limit_key, len(supported_measurands), type=int, readonly=True)
        svc.declare(
            name,
            default if default in supported_measurands else "",
            type=CSL,
            validator=csl_of(
                supported_measurands,
                max_length=lambda: int(svc.get(limit_key)),
                what="measurand",
            ),
        )

    d = svc.declare
    d("AllowOfflineTxForUnknownId", False, type=bool)
    d("AuthorizationCacheEnabled", True, type=bool)
    d("AuthorizeRemoteTxRequests", False, type=bool)
    d("BlinkRepeat", 3, type=int, validator=non_negative)
    d("ClockAlignedDataInterval", 0, type=int, validator=non_negative)
    d("ConnectionTimeOut", 60, type=int, validator=non_negative)
    d("ConnectorPhaseRotationMaxLength", connectors + 1, type=int, readonly=True)
    d(
        "ConnectorPhaseRotation",
        ",".join(f"{c}.Unknown" for c in range(1, connectors + 1)),
        type=CSL,
        validator=_phase_rotation(
            connectors, lambda: int(svc.get("ConnectorPhaseRotationMaxLength"))
        ),
    )
    d("GetConfigurationMaxKeys", svc.max_keys, type=int, readonly=True)
    d("HeartbeatInterval", 86400, type=int, validator=non_negative)
    d("LightIntensity", 100, type=int, validator=in_range(0, 100))
    d("LocalAuthorizeOffline", True, type=bool)
    d("LocalPreAuthorize", False, type=bool)
    d("MaxEnergyOnInvalidId", 0, type=int, validator=non_negative)
    measurand_keys("MeterValuesAlignedData", DEFAULT_MEASURAND)
    measurand_keys("MeterValuesSampledData", DEFAULT_MEASURAND)
    d("MeterValueSampleInterval", 60, type=int, validator=non_negative)
    d("MinimumStatusDuration", 0, type=int, validator=non_negative)
    d("NumberOfConnectors", connectors, type=int, readonly=True)
    d("ResetRetries", 1, type=int, validator=non_negative)
    d("StopTransactionOnEVSideDisconnect", True, type=bool)
    d("StopTransactionOnInvalidId", True, type=bool)
    measurand_keys("StopTxnAlignedData", "")
    measurand_keys("StopTxnSampledData", "")
    d("SupportedFeatureProfiles", ",".join(feature_profiles), type=CSL, readonly=True)
    d("SupportedFeatureProfilesMaxLength", len(FEATURE_PROFILES), type=int, readonly=True)
    d("TransactionMessageAttempts", 3, type=int, validator=non_negative)
    d("TransactionMessageRetryInterval", 60, type=int, validator=non_negative)
    d("UnlockConnectorOnEVSideDisconnect", True, type=bool)
    d("WebSocketPingInterval", 60, type=int, validator=non_negative)
