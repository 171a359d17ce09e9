"""The connector status machine (OCPP 1.6 §4.9), as a pure function of a snapshot.

The status is *derived*, never stored: each pass, the connector supervisor
takes a snapshot of the hardware and the transaction state
(:class:`ConnectorInputs`) and :func:`connector_status` walks an ordered rule
table, first match wins.  A table rather than nested ifs so that the
precedence between rules (a fault beats a transaction, a transaction beats an
inoperative connector, ...) is visible in one place and every row has its own
test, in the spirit of EVerest libocpp's ``(state, event) -> state`` table.

Faults and their OCPP error codes (:data:`FAULT_TABLE`):

- A fault that makes charging unsafe or impossible puts the connector in
  ``Faulted``: a welded contactor or one that does not close
  (PowerSwitchFailure), a lock that does not hold the plug (ConnectorLockFailure:
  a socket outlet must not be energised unlocked, and a plug stuck after the
  session needs a technician), a control pilot that cannot be read (OtherError:
  without the CP the EV's state is unknown).
- A fault that does not stop energy flowing is reported as the error code with
  the status the connector would have anyway: a silent meter
  (PowerMeterFailure; a running charge goes on, as on most stations, and the
  last good register is kept), a dead card reader (ReaderFailure; remote starts
  still work) and an EV in pilot state E/F (EVCommunicationError; the
  specification says explicitly that this is not a reason for Faulted, the
  transaction shows SuspendedEV).
- A residual-current monitor that tripped is Faulted / GroundFailure, one that
  failed its self-test Faulted / OtherError; an EV in state D at a site without
  ventilation gets no energy (SuspendedEVSE) with OtherError
  (chargerd.features.protection).
- With several faults, the first one in :data:`FAULT_TABLE` names the code.

:class:`StatusReporter` decides *when* a derived status is sent, applying
MinimumStatusDuration and re-sending everything after a reconnect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ocpp.v16.enums import ChargePointErrorCode, ChargePointStatus

from hal.interfaces import EvState, Fault, IndicatorState

Status = ChargePointStatus
ErrorCode = ChargePointErrorCode

#: Fault -> (error code, puts the connector in Faulted).  Order is priority.
FAULT_TABLE: dict[Fault, tuple[ChargePointErrorCode, bool]] = {
    Fault.RCD_TRIPPED: (ErrorCode.ground_failure, True),
    Fault.CONTACTOR_WELDED: (ErrorCode.power_switch_failure, True),
    Fault.CONTACTOR_FAILED_TO_CLOSE: (ErrorCode.power_switch_failure, True),
    Fault.LOCK_FAILURE: (ErrorCode.connector_lock_failure, True),
    Fault.PILOT_FAILURE: (ErrorCode.other_error, True),
    Fault.RCD_FAILURE: (ErrorCode.other_error, True),
    Fault.EV_ERROR: (ErrorCode.ev_communication_error, False),
    Fault.VENTILATION_REQUIRED: (ErrorCode.other_error, False),
    Fault.METER_FAILURE: (ErrorCode.power_meter_failure, False),
    Fault.READER_FAILURE: (ErrorCode.reader_failure, False),
}

#: The faults that put a connector (or the station) in Faulted.
BLOCKING_FAULTS = frozenset(f for f, (_, blocking) in FAULT_TABLE.items() if blocking)

#: Statuses in which a transaction is running.
TRANSACTION_STATUSES = frozenset({Status.charging, Status.suspended_ev, Status.suspended_evse})


@dataclass(frozen=True, slots=True)
class ConnectorInputs:
    """Everything the status of one connector depends on, at one instant."""

    ev_state: EvState
    operative: bool  # availability (ChangeAvailability), connector and station combined
    reserved: bool
    authorized_pending: bool  # an idTag accepted (or a remote start) waiting for the EV
    transaction_active: bool
    offered_current_a: float | None  # None or 0: the EVSE offers nothing (no PWM)
    contactor_closed: bool
    transaction_stopped_plugged: bool  # a transaction ended, the cable is still in
    faults: frozenset[Fault] = frozenset()


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the status table: when ``when`` holds, the status is ``status``."""

    name: str
    when: Callable[[ConnectorInputs], bool]
    status: ChargePointStatus


def _blocked(i: ConnectorInputs) -> bool:
    return bool(i.faults & BLOCKING_FAULTS)


def _tx(i: ConnectorInputs) -> bool:
    return i.transaction_active


def _evse_offers_nothing(i: ConnectorInputs) -> bool:
    return i.transaction_active and not i.offered_current_a


def _ev_draws(i: ConnectorInputs) -> bool:
    return i.transaction_active and i.ev_state.requesting and i.contactor_closed


def _ev_waits_for_contactor(i: ConnectorInputs) -> bool:
    return i.transaction_active and i.ev_state.requesting and not i.contactor_closed


def _reserved_idle(i: ConnectorInputs) -> bool:
    return i.reserved and not i.ev_state.plugged


#: The status table, first match wins.  Inside a transaction the EVSE's reason
#: to suspend outranks the EV's (with no PWM the EV cannot ask for anything);
#: an EV unplugged or in state E/F during a transaction that is kept
#: (StopTransactionOnEVSideDisconnect=false) is SuspendedEV.  A transaction
#: outlives an inoperative connector (ChangeAvailability answers Scheduled), so
#: Unavailable applies only without one, and then it outranks everything but
#: a fault.  A new authorization on a Finishing connector is Preparing (the
#: specification's F2), one on a Reserved connector too (G2: the reservation's
#: idTag was presented; the reservations feature only authorizes that one).
RULES: tuple[Rule, ...] = (
    Rule("blocking fault", _blocked, Status.faulted),
    Rule("transaction, EVSE offers no current", _evse_offers_nothing, Status.suspended_evse),
    Rule("transaction, EV draws, contactor closed", _ev_draws, Status.charging),
    Rule("transaction, EV ready, contactor open", _ev_waits_for_contactor, Status.suspended_evse),
    Rule("transaction, EV not requesting", _tx, Status.suspended_ev),
    Rule("inoperative", lambda i: not i.operative, Status.unavailable),
    Rule("authorized, waiting for the EV", lambda i: i.authorized_pending, Status.preparing),
    Rule("transaction ended, cable in", lambda i: i.transaction_stopped_plugged, Status.finishing),
    Rule("reserved, nobody there", _reserved_idle, Status.reserved),
    Rule("plugged", lambda i: i.ev_state.plugged, Status.preparing),
    Rule("idle", lambda i: True, Status.available),
)


def explain(i: ConnectorInputs) -> Rule:
    """The row of :data:`RULES` that decides ``i`` (for logs and chargerctl)."""
    for rule in RULES:
        if rule.when(i):
            return rule
    raise AssertionError("the last rule matches everything")  # pragma: no cover


def error_code_for(faults: Iterable[Fault]) -> ChargePointErrorCode:
    """The error code of the highest-priority fault, NoError without one."""
    present = set(faults)
    for fault, (code, _) in FAULT_TABLE.items():
        if fault in present:
            return code
    return ErrorCode.no_error


def status_info(faults: Iterable[Fault]) -> str | None:
    """The faults by name for StatusNotification.info (CiString50), None without faults."""
    names = [f.value for f in FAULT_TABLE if f in set(faults)]
    if not names:
        return None
    text = ",".join(names)
    return text[:50]


def connector_status(i: ConnectorInputs) -> tuple[ChargePointStatus, ChargePointErrorCode]:
    """The OCPP status and error code of one connector."""
    return explain(i).status, error_code_for(i.faults)


def station_status(
    connector_statuses: Iterable[ChargePointStatus],
    station_faults: frozenset[Fault],
    station_operative: bool,
) -> tuple[ChargePointStatus, ChargePointErrorCode]:
    """The status of connector 0, the charge point as a whole.

    Only Available, Unavailable and Faulted are allowed there.  The station is
    Faulted for its own blocking faults only (a connector's welded contactor
    leaves the others usable).  An inoperative station stays Available while
    a transaction still runs on one of its connectors, since ChangeAvailability
    was answered Scheduled and takes effect when the last transaction ends.
    """
    code = error_code_for(station_faults)
    if station_faults & BLOCKING_FAULTS:
        return Status.faulted, code
    if not station_operative and not any(s in TRANSACTION_STATUSES for s in connector_statuses):
        return Status.unavailable, code
    return Status.available, code


_INDICATOR: dict[ChargePointStatus, IndicatorState] = {
    Status.available: IndicatorState.AVAILABLE,
    Status.preparing: IndicatorState.PREPARING,
    Status.charging: IndicatorState.CHARGING,
    Status.suspended_ev: IndicatorState.SUSPENDED,
    Status.suspended_evse: IndicatorState.SUSPENDED,
    Status.finishing: IndicatorState.FINISHING,
    Status.reserved: IndicatorState.RESERVED,
    Status.unavailable: IndicatorState.UNAVAILABLE,
    Status.faulted: IndicatorState.FAULTED,
}


def indicator_for(status: ChargePointStatus | str) -> IndicatorState:
    """What the connector's light shows for an OCPP status."""
    return _INDICATOR[ChargePointStatus(status)]


# -- when to report -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One StatusNotification to send."""

    connector_id: int
    status: ChargePointStatus
    error_code: ChargePointErrorCode


@dataclass(slots=True)
class _Held:
    report: StatusReport
    since: float


class StatusReporter:
    """Decides when a derived status goes out as a StatusNotification.

    MinimumStatusDuration: a new status is sent only once it has held for that
    many seconds, so a cable wiggle (Preparing -> Available -> Preparing) sends
    nothing; a status that reverts to the last one sent cancels the hold.  The
    first status of a connector (after boot) goes out at once.  A status is
    counted as reported when this says "send"; StatusNotifications are live
    messages, dropped while offline, which is why :meth:`pending_after_reconnect`
    hands every connector's last status out again once the link is back.

    Time is the caller's monotonic clock; nothing here sleeps.
    """

    def __init__(self, minimum_duration_s: float = 0.0) -> None:
        self.minimum_duration_s = float(minimum_duration_s)
        self._reported: dict[int, StatusReport] = {}
        self._held: dict[int, _Held] = {}

    def observe(
        self,
        connector_id: int,
        status: ChargePointStatus,
        error_code: ChargePointErrorCode,
        *,
        now: float,
    ) -> StatusReport | None:
        """Record the current status; the report to send now, or None (unchanged or held)."""
        report = StatusReport(connector_id, Status(status), ErrorCode(error_code))
        last = self._reported.get(connector_id)
        if last is None:
            return self._report(report)
        if report == last:
            self._held.pop(connector_id, None)
            return None
        held = self._held.get(connector_id)
        if held is None or held.report != report:
            held = self._held[connector_id] = _Held(report, now)
        if now - held.since >= self.minimum_duration_s:
            return self._report(report)
        return None

    def due(self, *, now: float) -> list[StatusReport]:
        """Held statuses whose minimum duration has passed; they count as reported."""
        ready = [h.report for h in self._held.values() if now - h.since >= self.minimum_duration_s]
        for report in ready:
            self._report(report)
        return sorted(ready, key=lambda r: r.connector_id)

    def next_deadline(self) -> float | None:
        """The monotonic time at which :meth:`due` will next have something, if any."""
        if not self._held:
            return None
        return min(h.since for h in self._held.values()) + self.minimum_duration_s

    def pending_after_reconnect(self) -> list[StatusReport]:
        """Every connector's last reported status, to send again after a reconnect.

        A status still held by MinimumStatusDuration stays held and comes out
        through :meth:`due` once it is stable.
        """
        return [self._reported[c] for c in sorted(self._reported)]

    def _report(self, report: StatusReport) -> StatusReport:
        self._reported[report.connector_id] = report
        self._held.pop(report.connector_id, None)
        return report
