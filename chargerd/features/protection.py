"""Protection decisions around the contactor: residual current, the cable lock, state D.

Plain functions of state, used by the connector supervisor
(chargerd.features.connectors), which owns the devices and the awaits:

- **Residual current.**  A trip of the residual-current monitor is acted on in
  hal/ (the monitor's callback drops the contactor coil before any await);
  here it is a fault: RCD_TRIPPED is Faulted / GroundFailure and ends the
  transaction (EmergencyStop, as every fault of the station's own equipment
  does).  The monitor's self-test runs once per transaction, before the
  contactor first closes for it (:func:`self_test_due`); a failed self-test is
  RCD_FAILURE (Faulted): no energy, the transaction ends, and the fault stands
  until a self-test passes (``chargerctl selftest rcd``).
- **Lock.**  A lock lost under the plug while locked (its sense reads
  unlocked) is LOCK_FAILURE: the contactor opens and the transaction ends
  (EmergencyStop), Faulted / ConnectorLockFailure; a socket outlet must not be
  live with the plug free to come out (IEC 61851-1).  The cable is never
  unlocked while the contactor is closed or welded (:func:`unlock_refusal`):
  after a stop with a welded contactor the plug stays locked and the connector
  shows Faulted / PowerSwitchFailure until a technician sees to it.
- **State D.**  An EV asking for energy with ventilation (state D) gets none
  unless ``[station] ventilation = true``: VENTILATION_REQUIRED keeps the
  contactor open, the transaction stays (SuspendedEVSE) with error code
  OtherError (OCPP 1.6 has no closer code; the info field names the fault), and
  charging starts if the EV switches to state C.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from hal.errors import HardwareError
from hal.interfaces import EvState, Fault

if TYPE_CHECKING:
    from chargerd.features.transactions import ActiveTx
    from hal.interfaces import ConnectorHardware


class ConnectorRuntime(Protocol):
    """What these checks need of a connector; connectors.ConnectorRuntime is one.

    A Protocol, not an import: connectors.py imports this module, and this one
    never imports connectors.py back.
    """

    id: int
    tx: ActiveTx | None
    rcd_tested_for: int | None
    faults: frozenset[Fault]

    @property
    def hw(self) -> ConnectorHardware: ...


log = logging.getLogger(__name__)

NO_FAULTS: frozenset[Fault] = frozenset()


def ventilation_faults(ev_state: EvState, ventilated: bool) -> frozenset[Fault]:
    """VENTILATION_REQUIRED while the EV is in state D at a site without ventilation."""
    if ev_state is EvState.D and not ventilated:
        return frozenset({Fault.VENTILATION_REQUIRED})
    return NO_FAULTS


def unlock_refusal(*, contactor_closed: bool, contactor_faults: frozenset[Fault]) -> str | None:
    """Why the cable must stay locked now, or None when it may be released."""
    if Fault.CONTACTOR_WELDED in contactor_faults:
        return "the contactor is welded: the socket may be live"
    if contactor_closed:
        return "the contactor is closed"
    return None


def self_test_due(
    *, has_monitor: bool, can_self_test: bool, tested_for: int | None, tx_local_id: int | None
) -> bool:
    """Whether the residual-current monitor's self-test runs before this close."""
    return has_monitor and can_self_test and tx_local_id is not None and tested_for != tx_local_id


async def rcd_ready(conn: ConnectorRuntime) -> bool:
    """Run the residual-current monitor's self-test if it is due; False when it failed.

    Called by the supervisor before it closes the contactor, under the connector's lock.
    """
    rcd = conn.hw.rcd
    tx_id = conn.tx.local_id if conn.tx is not None else None
    if rcd is None or not self_test_due(
        has_monitor=True,
        can_self_test=rcd.can_self_test,
        tested_for=conn.rcd_tested_for,
        tx_local_id=tx_id,
    ):
        return True
    try:
        await rcd.self_test()
    except HardwareError as exc:
        log.error("connector %d: residual-current monitor self-test failed: %s", conn.id, exc)
        conn.faults = conn.faults | rcd.faults()
        return False
    conn.rcd_tested_for = tx_id
    log.info("connector %d: residual-current monitor self-test passed", conn.id)
    return True


async def rcd_selftest_step(conn: ConnectorRuntime) -> dict:
    """``chargerctl selftest rcd`` on one idle connector: one report step.

    A monitor that passes clears a standing RCD_FAILURE.  No monitor is not a
    failure here: the supply may be protected by an RCD type B instead.
    """
    name = f"connector {conn.id}: residual-current monitor"
    rcd = conn.hw.rcd
    if rcd is None:
        detail = "none configured (the supply must then have an RCD type B)"
        return {"step": name, "ok": True, "detail": detail}
    if not rcd.can_self_test:
        tripped = rcd.tripped
        detail = "tripped" if tripped else "no test input wired; fault output inactive"
        return {"step": name, "ok": not tripped, "detail": detail}
    try:
        await rcd.self_test()
    except HardwareError as exc:
        return {"step": name, "ok": False, "detail": str(exc)}
    took = getattr(rcd, "last_trip_time_s", None)
    detail = "tripped on its test input and released"
    if took is not None:
        detail += f" (trip after {took * 1000:.1f} ms)"
    return {"step": name, "ok": True, "detail": detail}
