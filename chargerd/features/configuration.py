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

Every key has bounds: an integer key a range (``declare_int(name, default, lo,
hi)``; an integer declared without one is held to 0..2**31-1, what a CSMS's
32-bit column and every timer here can take), a string a maximum length, a list
its allowed items and a maximum count.  One value out of bounds once put the
station in a crash loop (an interval too large for a timer, persisted, then
fatal at every start); now it is Rejected with a reason, refused in the config
file, and a stored one is dropped in favour of the default at start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ocpp.exceptions import OccurenceConstraintViolationError
from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.datatypes import KeyValue
from ocpp.v16.enums import Action, ConfigurationStatus

from chargerd.features.config_values import (  # noqa: F401 (re-exported)
    CSL,
    INT_MAX,
    MAX_VALUE_LENGTH,
    TYPE_NAMES,
    Change,
    Listener,
    Validator,
    _coerce,
    _Key,
    _parse,
    at_least,
    csl_of,
    in_range,
    wire,
)
from chargerd.store import Store

log = logging.getLogger(__name__)

#: declare_external: the wire value shown (None: write-only) and the ChangeConfiguration.
ExternalRead = Callable[[], str | None]
ExternalWrite = Callable[[str, str], Change]


class ConfigurationService:
    """The station's OCPP configuration keys and their two OCPP messages."""

    def __init__(self, store: Store, *, max_keys: int = 100) -> None:
        self._store = store
        #: GetConfigurationMaxKeys: how many keys one GetConfiguration may name.
        self.max_keys = max_keys
        self._keys: dict[str, _Key] = {}  # casefolded name -> key, in declaration order
        # Keys whose value and storage belong to their feature (declare_external).
        self._external: dict[str, tuple[ExternalRead, ExternalWrite]] = {}
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
        lo: int | None = None,
        hi: int | None = None,
        max_length: int = MAX_VALUE_LENGTH,
    ) -> None:
        """Declare a key; a value the CSMS persisted earlier becomes its value at once.

        ``lo``/``hi`` bound an integer key (0 and INT_MAX when not given);
        ``max_length`` the characters of any value.  A stored value that these
        (or the validator) refuse is logged and replaced by the default: a
        configuration value never stops the station from booting.
        """
        if type not in TYPE_NAMES:
            raise TypeError(f"{key}: unsupported configuration type {type!r}")
        if key.casefold() in self._keys:
            raise ValueError(f"configuration key {key} declared twice")
        if (lo is not None or hi is not None) and type is not int:
            raise TypeError(f"{key}: lo/hi bound integer keys only")
        if type is int:
            lo = 0 if lo is None else lo
            hi = INT_MAX if hi is None else hi
            if lo > hi:
                raise ValueError(f"{key}: empty range {lo}..{hi}")
        if not 0 < max_length <= MAX_VALUE_LENGTH:
            raise ValueError(f"{key}: max_length must be 1..{MAX_VALUE_LENGTH}")
        default = _coerce(type, default)
        entry = _Key(
            key,
            type,
            default,
            readonly,
            reboot_required,
            validator,
            lo=lo,
            hi=hi,
            max_length=max_length,
        )
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
                log.warning(
                    "the stored value %r of %s is refused (%s): replaced by its default %r",
                    stored[1][:80],
                    key,
                    reason,
                    wire(default),
                )
                self._forget(stored[0])
            else:
                entry.value, entry.origin = value, "csms"
        self._keys[key.casefold()] = entry

    def declare_int(
        self,
        key: str,
        default: int,
        lo: int,
        hi: int,
        *,
        readonly: bool = False,
        reboot_required: bool = False,
        validator: Validator | None = None,
        on_change: Listener | None = None,
    ) -> None:
        """An integer key in ``lo..hi`` (bounds are not optional here, by design)."""
        self.declare(
            key,
            default,
            type=int,
            lo=lo,
            hi=hi,
            readonly=readonly,
            reboot_required=reboot_required,
            validator=validator,
            on_change=on_change,
        )

    def declare_bool(
        self,
        key: str,
        default: bool,
        *,
        readonly: bool = False,
        reboot_required: bool = False,
        on_change: Listener | None = None,
    ) -> None:
        """A boolean key (``true``/``false`` on the wire)."""
        self.declare(
            key,
            default,
            type=bool,
            readonly=readonly,
            reboot_required=reboot_required,
            on_change=on_change,
        )

    def declare_str(
        self,
        key: str,
        default: str,
        *,
        max_length: int,
        readonly: bool = False,
        reboot_required: bool = False,
        validator: Validator | None = None,
        on_change: Listener | None = None,
    ) -> None:
        """A string key of at most ``max_length`` characters."""
        self.declare(
            key,
            default,
            type=str,
            max_length=max_length,
            readonly=readonly,
            reboot_required=reboot_required,
            validator=validator,
            on_change=on_change,
        )

    def declare_csl(
        self,
        key: str,
        default: str | Sequence[str],
        *,
        allowed: Iterable[str],
        max_items: int | Callable[[], int],
        what: str = "item",
        readonly: bool = False,
        reboot_required: bool = False,
        on_change: Listener | None = None,
    ) -> None:
        """A comma-separated list of ``allowed`` items, without duplicates, at most max_items."""
        if callable(max_items):
            limit = max_items
        else:
            count = int(max_items)

            def limit() -> int:
                return count

        self.declare(
            key,
            default,
            type=CSL,
            readonly=readonly,
            reboot_required=reboot_required,
            validator=csl_of(allowed, max_length=limit, what=what),
            on_change=on_change,
        )

    def declare_external(
        self, key: str, *, read: ExternalRead, write: ExternalWrite, readonly: bool = False
    ) -> None:
        """A key its feature stores itself (a secret in a 0600 file, a state file).

        ``read()`` gives the wire value GetConfiguration shows (None: shown without
        a value, as a write-only key must be); ``write(value, by)`` checks, stores and
        applies a ChangeConfiguration and returns its Change.  Not settable in [ocpp].
        """
        if key.casefold() in self._keys:
            raise ValueError(f"configuration key {key} declared twice")
        self._keys[key.casefold()] = _Key(key, str, "", readonly, False, None)
        self._external[key.casefold()] = (read, write)

    def bounds(self, key: str) -> tuple[int, int] | None:
        """The range of an integer key, None for other types."""
        entry = self._entry(key)
        if entry.kind is not int or entry.lo is None or entry.hi is None:
            return None
        return entry.lo, entry.hi

    def _forget(self, stored_name: str) -> None:
        try:
            with self._store.transaction():
                self._store.execute("DELETE FROM ocpp_config WHERE key = ?", (stored_name,))
        except Exception:  # a read-only or full disk: the default is used anyway
            log.warning("could not delete the refused stored value of %s", stored_name)
        self._persisted.pop(stored_name.casefold(), None)

    def watch(self, key: str, listener: Listener) -> None:
        """Call ``listener(new_value)`` whenever ``key`` changes at run time."""
        self._entry(key).listeners.append(listener)

    # -- reading -------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The value in effect (bool, int, str or CSL); KeyError for an undeclared key."""
        external = self._external.get(key.casefold())
        if external is not None:
            return external[0]()
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
        external = self._external.get(key.casefold())
        if external is not None:
            return KeyValue(key=entry.name, readonly=entry.readonly, value=external[0]())
        value = entry.pending if entry.has_pending else entry.value
        return KeyValue(key=entry.name, readonly=entry.readonly, value=wire(value))

    # -- changing ------------------------------------------------------------------------

    def set(self, key: str, value: str) -> ConfigurationStatus:
        """ChangeConfiguration semantics: parse, validate, persist, notify."""
        return self.change(key, value).status

    def change(self, key: str, value: str, *, by: str = "the CSMS") -> Change:
        """:meth:`set`, with the reason of a refusal; ``by`` names who asked, for the log."""
        entry = self._keys.get(key.casefold())
        if entry is None:
            return Change(ConfigurationStatus.not_supported, f"unknown configuration key {key!r}")
        if entry.readonly:
            log.info("ChangeConfiguration %s by %s refused: read-only", entry.name, by)
            return Change(ConfigurationStatus.rejected, "read-only, the station sets it itself")
        external = self._external.get(key.casefold())
        if external is not None:
            if len(value) > MAX_VALUE_LENGTH:
                return Change(ConfigurationStatus.rejected, "longer than 500 characters")
            return external[1](value, by)
        try:
            parsed = _parse(entry.kind, value)
            reason = entry.check(parsed)
        except ValueError as exc:
            reason = str(exc)
        if reason:
            log.info(
                "ChangeConfiguration %s=%r by %s refused: %s", entry.name, value[:80], by, reason
            )
            return Change(ConfigurationStatus.rejected, reason)
        with self._store.transaction():
            self._store.execute(
                "INSERT INTO ocpp_config(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (entry.name, wire(parsed)),
            )
        self._persisted[entry.name.casefold()] = (entry.name, wire(parsed))
        log.info("configuration %s set to %r by %s", entry.name, wire(parsed), by)
        if entry.reboot_required:
            entry.pending, entry.has_pending = parsed, True
            return Change(ConfigurationStatus.reboot_required)
        self._apply(entry, parsed, "csms")
        return Change(ConfigurationStatus.accepted)

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
            if key.casefold() in self._external:
                raise ValueError(f"ocpp.{key}: set in the [csms] table, not in [ocpp]")
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
DAY_S = 86400

#: The ranges of the Core profile's integer keys.  OCPP 1.6 gives no maxima, so
#: these are what makes sense on this station; each is far beyond any real use
#: and far below what overflows a timer or a CSMS's 32-bit column.
CORE_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "BlinkRepeat": (0, 100),  # blinks of the light
    # OCPP counts aligned intervals from midnight, within a day: a day at most.
    "ClockAlignedDataInterval": (0, DAY_S),
    "ConnectionTimeOut": (0, 3600),  # seconds to plug in after a card: an hour at most
    # 0 = no heartbeat; a day covers every CSMS we know (the websocket ping keeps the link).
    "HeartbeatInterval": (0, DAY_S),
    "LightIntensity": (0, 100),  # percent
    # Wh: 10 MWh is more than 80 A x 3 phases x 230 V deliver in a day (1.3 MWh).
    "MaxEnergyOnInvalidId": (0, 10_000_000),
    "MeterValueSampleInterval": (0, DAY_S),
    "MinimumStatusDuration": (0, 3600),
    "ResetRetries": (0, 10),
    "TransactionMessageAttempts": (0, 100),
    "TransactionMessageRetryInterval": (0, DAY_S),  # the n-th retry waits n x this
    "WebSocketPingInterval": (0, 3600),
}


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

    def measurand_keys(name: str, default: str) -> None:
        limit_key = f"{name}MaxLength"
        svc.declare(limit_key, len(supported_measurands), type=int, readonly=True)
        svc.declare_csl(
            name,
            default if default in supported_measurands else "",
            allowed=supported_measurands,
            max_items=lambda: int(svc.get(limit_key)),
            what="measurand",
        )

    def i(name: str, default: int) -> None:
        svc.declare_int(name, default, *CORE_INT_BOUNDS[name])

    d = svc.declare
    d("AllowOfflineTxForUnknownId", False, type=bool)
    d("AuthorizationCacheEnabled", True, type=bool)
    d("AuthorizeRemoteTxRequests", False, type=bool)
    i("BlinkRepeat", 3)
    i("ClockAlignedDataInterval", 0)
    i("ConnectionTimeOut", 60)
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
    i("HeartbeatInterval", 86400)
    i("LightIntensity", 100)
    d("LocalAuthorizeOffline", True, type=bool)
    d("LocalPreAuthorize", False, type=bool)
    i("MaxEnergyOnInvalidId", 0)
    measurand_keys("MeterValuesAlignedData", DEFAULT_MEASURAND)
    measurand_keys("MeterValuesSampledData", DEFAULT_MEASURAND)
    i("MeterValueSampleInterval", 60)
    i("MinimumStatusDuration", 0)
    d("NumberOfConnectors", connectors, type=int, readonly=True)
    i("ResetRetries", 1)
    d("StopTransactionOnEVSideDisconnect", True, type=bool)
    d("StopTransactionOnInvalidId", True, type=bool)
    measurand_keys("StopTxnAlignedData", "")
    measurand_keys("StopTxnSampledData", "")
    d("SupportedFeatureProfiles", ",".join(feature_profiles), type=CSL, readonly=True)
    d("SupportedFeatureProfilesMaxLength", len(FEATURE_PROFILES), type=int, readonly=True)
    i("TransactionMessageAttempts", 3)
    i("TransactionMessageRetryInterval", 60)
    d("UnlockConnectorOnEVSideDisconnect", True, type=bool)
    i("WebSocketPingInterval", 60)
