"""What the supervisor knows of each connector, and the fault sets its decisions use.

Kept apart from the supervisor (connectors.py) so that the services that read a
connector's state (remote, reservations, status report, control commands) need not
import the supervisor's machinery.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from chargerd.features.transactions import ActiveTx
from hal.interfaces import ConnectorHardware, EvState, Fault, MeterSample

#: Faults with which a contactor must not stay closed.
UNSAFE_FAULTS = frozenset(
    {
        Fault.CONTACTOR_WELDED,
        Fault.CONTACTOR_FAILED_TO_CLOSE,
        Fault.EV_ERROR,
        Fault.PILOT_FAILURE,
        Fault.LOCK_FAILURE,
        Fault.RCD_TRIPPED,
        Fault.RCD_FAILURE,
        Fault.VENTILATION_REQUIRED,
    }
)

#: Faults of the station's own equipment that end a running transaction.  An EV in
#: state E/F only suspends it (SuspendedEV): the contactor opens, the session stays;
#: so does an EV asking for ventilation where there is none (SuspendedEVSE).
STOP_FAULTS = UNSAFE_FAULTS - {Fault.EV_ERROR, Fault.VENTILATION_REQUIRED}

#: Stop reasons after which the plug is released for the driver to take it.  Not
#: DeAuthorized: OCPP 1.6 §4.8 keeps the cable locked until its owner's card comes back.
UNLOCK_AFTER = frozenset(
    {
        "Local",
        "Remote",
        "UnlockCommand",
        "Other",
        "EmergencyStop",
        "SoftReset",
        "HardReset",
        "Reboot",
    }
)


@dataclass
class Authorization:
    """An idTag accepted for a connector that has no transaction yet."""

    id_tag: str
    parent_id_tag: str | None
    deadline: float  # monotonic; ConnectionTimeOut after the authorization
    remote: bool = False
    reservation_id: int | None = None


@dataclass
class ConnectorRuntime:
    id: int
    hw: ConnectorHardware
    ev_state: EvState = EvState.A
    operative: bool = True
    scheduled_operative: bool | None = None  # applied when the transaction ends
    reserved: bool = False
    authorization: Authorization | None = None
    held: bool = False  # claimed by a remote start whose Authorize is still under way
    locked_for: str | None = None  # the idTag whose card releases a cable kept locked
    tx: ActiveTx | None = None
    begin_sample: MeterSample | None = None
    finishing: bool = False
    faults: frozenset[Fault] = frozenset()
    status: str | None = None
    error_code: str | None = None
    sample: MeterSample | None = None
    sample_at: float = -1e9
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    # A stop the store could not record (full disk): (reason, id_tag), retried each second.
    stop_pending: tuple[str, str | None] | None = None
    stop_retry_at: float = 0.0
    rcd_tested_for: int | None = None  # the transaction whose RCD self-test passed

    @property
    def in_use(self) -> bool:
        return self.tx is not None or self.authorization is not None
