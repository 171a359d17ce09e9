"""Connectors: the supervisor that watches the hardware and moves the contactor.

Each connector is polled: EV state from the control pilot and standing faults
from every device, every ``poll_s``.  The meter is read in a task of its own
(``meter_loop``), once a second with its own timeout: a silent meter (2 s per
Modbus read) must never slow the pilot sampling or delay a stop.  Plug and unplug become
transaction events, the contactor follows the EV's request only while a
transaction runs and nothing makes charging unsafe, and the OCPP status is
recomputed by the pure status machine (chargerd.features.status) each pass.

Fail safe: any unsafe fault opens the contactor and ends the transaction;
the PWM goes back to 100 % whenever no transaction runs.  A stop sets the PWM
and opens the contactor before it awaits anything else (the meter reading for
meterStop comes after).  Each completed pass is time-stamped so that the
systemd watchdog is fed only while every connector is really supervised
(``supervision_stale``): a driver call that hangs stops the feeding.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from chargerd.clock import Clock
from chargerd.features import meter_task, protection
from chargerd.features import status as status_machine
from chargerd.features.authz import same_id_tag
from chargerd.features.connector_state import (
    STOP_FAULTS,
    UNLOCK_AFTER,
    UNSAFE_FAULTS,
    Authorization,
    ConnectorRuntime,
)
from chargerd.features.liveness import stale_supervision
from chargerd.features.transactions import TransactionRefused, TransactionService
from chargerd.features.txids import tx_label
from hal.errors import HardwareError
from hal.interfaces import EvState, Fault, MeterSample

if TYPE_CHECKING:
    from chargerd.features.configuration import ConfigurationService

log = logging.getLogger(__name__)

__all__ = [
    "STOP_FAULTS",
    "UNLOCK_AFTER",
    "UNSAFE_FAULTS",
    "Authorization",
    "ConnectorRuntime",
    "ConnectorSupervisor",
]


class ConnectorSupervisor:
    """Runs the connectors.  The decisions themselves live in status.py and authz.py."""

    def __init__(
        self,
        *,
        connectors: list[ConnectorRuntime],
        transactions: TransactionService,
        config: ConfigurationService,
        clock: Clock,
        report_status: Callable[[int, str, str], None],
        max_current_a: float = 32.0,
        poll_s: float = 0.04,  # 25 passes a second: the pilot sampled at >= 20 Hz
        meter_poll_s: float = 1.0,
        meter_timeout_s: float = 3.0,
        ventilated: bool = False,
    ) -> None:
        self.connectors = {c.id: c for c in connectors}
        self.transactions = transactions
        self._config = config
        self._clock = clock
        self._report_status = report_status
        self.max_current_a = max_current_a
        self._poll_s = poll_s
        self._meter_poll_s = meter_poll_s
        # A backstop above the driver's own timeout (Modbus: 1 s x 2 tries): a read that
        # never returns ends here, and the meter task goes on.  Below the watchdog's
        # 4 s: a stop holds the connector while it reads meterStop.
        self._meter_timeout_s = meter_timeout_s
        self._meter_wake = {c.id: asyncio.Event() for c in connectors}
        self.pass_at = {c.id: clock.monotonic() for c in connectors}
        self._wake = asyncio.Event()
        self.station_operative = True
        self.on_idle: list[Callable[[], Awaitable[None] | None]] = []
        self._background: set[asyncio.Task] = set()  # the loop keeps only weak references
        # The Reservation feature's gate (chargerd.features.reservations.ReservationService):
        # who may start where, and which connectors show Reserved.  None: no reservations.
        self.reservations: Any = None
        # Smart charging's limit in force for a connector (A), asked at each offer; None: none.
        self.limit_for: Callable[[int], float] | None = None
        self.ventilated = ventilated  # [station] ventilation: state D may be given energy
        transactions.connectors = self.connectors
        transactions.set_deauthorize(self._on_invalid_id)

    def poke(self) -> None:
        """Re-evaluate now (after a command changed something)."""
        self._wake.set()

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Supervise every connector, each with its meter read by a task of its own."""
        loop = asyncio.get_running_loop()
        for conn in self.connectors.values():
            if conn.hw.rcd is not None:
                # The trip itself opened the contactor (hal/); this only wakes the pass
                # that ends the transaction and reports the fault.
                conn.hw.rcd.on_trip(lambda: loop.call_soon_threadsafe(self.poke))
        async with asyncio.TaskGroup() as group:
            for conn in self.connectors.values():
                group.create_task(self.meter_loop(conn), name=f"meter-{conn.id}")
            while True:
                # Cleared before the pass, so that a poke during it (a PWM just offered, a
                # command) runs the next pass at once instead of after the poll interval.
                self._wake.clear()
                await self.run_pass()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
                except TimeoutError:
                    pass

    async def run_pass(self) -> None:
        """One pass over every connector; each completed one is time-stamped."""
        for conn in self.connectors.values():
            try:
                await self.tick(conn)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("connector %d supervision failed; opening its contactor", conn.id)
                await self._force_open(conn)
            self.pass_at[conn.id] = self._clock.monotonic()

    def supervision_stale(self, max_age_s: float) -> str | None:
        """Why the watchdog must not be fed (a connector without a recent pass), else None."""
        return stale_supervision(self.pass_at, self._clock.monotonic(), max_age_s)

    async def meter_loop(self, conn: ConnectorRuntime) -> None:
        """The meter of ``conn``, read every ``meter_poll_s`` (at once when poked)."""
        await meter_task.run(
            lambda: self.poll_meter(conn),
            self._meter_wake[conn.id],
            due=lambda: conn.sample_at + self._meter_poll_s - self._clock.monotonic(),
        )

    async def poll_meter(self, conn: ConnectorRuntime) -> None:
        """Read the meter if a reading is due (one step of ``meter_loop``)."""
        if self._clock.monotonic() - conn.sample_at >= self._meter_poll_s:
            await self._read_meter(conn, fresh=True, wait_silent=True)

    async def tick(self, conn: ConnectorRuntime) -> None:
        hw = conn.hw
        async with conn.busy:
            try:
                ev = await hw.pilot.ev_state()
            except HardwareError:
                ev = conn.ev_state
            faults = (
                hw.contactor.faults()
                | hw.meter.faults()
                | hw.pilot.faults()
                | hw.indicator.faults()
                | (hw.lock.faults() if hw.lock is not None else frozenset())
                | (hw.rcd.faults() if hw.rcd is not None else frozenset())
                | protection.ventilation_faults(ev, self.ventilated)
            )
            conn.faults = frozenset(faults)
            prev, conn.ev_state = conn.ev_state, ev
            # E/F is an error with the cable still in (the EV gone reads A): it suspends a
            # transaction (SuspendedEV), it does not end it as EVDisconnected.
            was_in, now_in = prev is not EvState.A, ev is not EvState.A
            if was_in and not now_in:
                await self._unplugged(conn)
            elif now_in and not was_in:
                log.info("connector %d: EV plugged (state %s)", conn.id, ev.value)
                conn.finishing = False
                if conn.tx is not None:
                    # A transaction kept across an EV-side unplug: energy may flow again,
                    # within what the cable now plugged in carries.
                    await self._offer(conn)
                elif conn.authorization is None:
                    self._take_waiting_card(conn)
            if conn.tx is None and conn.authorization is not None:
                if self._clock.monotonic() > conn.authorization.deadline:
                    log.info(
                        "connector %d: %s authorized but no EV plugged within ConnectionTimeOut",
                        conn.id,
                        conn.authorization.id_tag,
                    )
                    conn.authorization = None
                elif ev.plugged and conn.operative and self.station_operative:
                    if not conn.finishing:  # OCPP 1.6 §4.9: the next user after an unplug
                        await self._start(conn)
            if (
                conn.tx is not None
                and conn.stop_pending is not None
                and self._clock.monotonic() >= conn.stop_retry_at
            ):
                reason, id_tag = conn.stop_pending
                await self._stop(conn, reason, id_tag=id_tag)
            if conn.tx is not None:
                await self._supervise_tx(conn)
            await self._drive_contactor(conn)
        self._update_status(conn)

    async def read_meter(self, conn: ConnectorRuntime) -> MeterSample | None:
        """A fresh reading (the last good one when the meter is silent, without waiting)."""
        return await self._read_meter(conn, fresh=True)

    async def read_meter_now(self, conn: ConnectorRuntime) -> MeterSample | None:
        """A reading taken now, or None when the meter does not answer.

        Meter values sent to the CSMS must be measurements: while the meter is silent
        none are sent, rather than the last good reading under a fresh timestamp.
        """
        sample = await self._read_meter(conn, fresh=True)
        if Fault.METER_FAILURE in conn.hw.meter.faults():
            return None
        return sample

    async def _read_meter(
        self, conn: ConnectorRuntime, *, fresh: bool = False, wait_silent: bool = False
    ) -> MeterSample | None:
        """The latest reading; ``fresh`` reads the meter now.

        A meter already known to be silent is not waited for (``wait_silent`` is for
        the meter task, which finds out when it answers again): a stop or a command
        takes the last good reading at once instead of a bus timeout later.
        """
        if fresh and (wait_silent or Fault.METER_FAILURE not in conn.hw.meter.faults()):
            conn.sample_at = self._clock.monotonic()
            conn.sample = await meter_task.read(
                conn.hw.meter, conn.sample, timeout_s=self._meter_timeout_s, name=conn.id
            )
        return conn.sample

    async def _supervise_tx(self, conn: ConnectorRuntime) -> None:
        tx = conn.tx
        assert tx is not None
        unsafe = conn.faults & STOP_FAULTS
        if unsafe:
            log.error(
                "connector %d: %s during %s; stopping it",
                conn.id,
                ", ".join(sorted(unsafe)),
                tx_label(tx.local_id, tx.transaction_id),
            )
            await self._stop(conn, "EmergencyStop")
            return
        if tx.invalid and not tx.energy_blocked and conn.sample is not None:
            limit = int(self._config.get("MaxEnergyOnInvalidId") or 0)
            if conn.sample.energy_wh - tx.meter_start_wh >= limit:
                # OCPP 1.6 (StopTransactionOnInvalidId=false): only the energy delivery
                # stops; the transaction stays open (SuspendedEVSE) until its owner ends it.
                log.warning(
                    "connector %d: MaxEnergyOnInvalidId (%d Wh) reached for the invalid id %s; "
                    "energy delivery stopped, the transaction stays open",
                    conn.id,
                    limit,
                    tx.id_tag,
                )
                tx.energy_blocked = True
                conn.hw.pilot.set_offered_current(None)

    async def _drive_contactor(self, conn: ConnectorRuntime) -> None:
        hw = conn.hw
        want = (
            conn.tx is not None
            and conn.stop_pending is None
            and conn.ev_state.requesting
            and hw.pilot.offered_current_a is not None
            and not (conn.faults & UNSAFE_FAULTS)
        )
        if want and not hw.contactor.closed:
            if not await protection.rcd_ready(conn):
                return
            conn.sample_at = -1e9  # the power changes now: the meter task reads at once
            self._meter_wake[conn.id].set()
            try:
                await hw.contactor.close()
                log.info("connector %d: contactor closed, EV charging", conn.id)
            except HardwareError as exc:
                log.error("connector %d: contactor did not close: %s", conn.id, exc)
        elif not want and hw.contactor.closed:
            await self._force_open(conn)

    async def _force_open(self, conn: ConnectorRuntime) -> None:
        try:
            await conn.hw.contactor.open()
            log.info("connector %d: contactor opened", conn.id)
        except HardwareError as exc:
            log.error("connector %d: contactor did not open: %s", conn.id, exc)

    async def _unplugged(self, conn: ConnectorRuntime) -> None:
        log.info("connector %d: EV unplugged", conn.id)
        conn.finishing = False
        if conn.tx is not None:
            if self._config.get("StopTransactionOnEVSideDisconnect"):
                await self._stop(conn, "EVDisconnected", unplugged=True)
            else:
                # The transaction stays open (SuspendedEV) until the same card or the CSMS
                # ends it; the offer stands so that the EV may charge again when it is back.
                await self._force_open(conn)
        if conn.tx is None and conn.hw.lock is not None and conn.hw.lock.locked:
            if self._config.get("UnlockConnectorOnEVSideDisconnect"):
                await self._unlock(conn)

    # -- start / stop -------------------------------------------------------------------

    def offered_current(self, conn: ConnectorRuntime, cable_a: int | None) -> float:
        amps = self.max_current_a
        if cable_a is not None:
            amps = min(amps, float(cable_a))
        if self.limit_for is not None:
            amps = min(amps, self.limit_for(conn.id))
        return amps

    async def _start(self, conn: ConnectorRuntime) -> bool:
        auth = conn.authorization
        assert auth is not None
        hw = conn.hw
        if self.reservations is not None:
            admission = self.reservations.admit(conn, auth.id_tag, auth.parent_id_tag)
            if not admission.allowed:
                log.warning("connector %d: %s refused: %s", conn.id, auth.id_tag, admission.reason)
                conn.authorization = None
                return False
            auth.reservation_id = admission.reservation_id
        if hw.lock is not None:
            try:
                await hw.lock.lock()
            except HardwareError as exc:
                log.error("connector %d: cable lock failed, not starting: %s", conn.id, exc)
                conn.authorization = None
                return False
        sample = await self._read_meter(conn, fresh=True)
        try:
            self.transactions.begin(
                conn,
                id_tag=auth.id_tag,
                parent_id_tag=auth.parent_id_tag,
                sample=sample,
                reservation_id=auth.reservation_id,
            )
        except TransactionRefused as exc:
            log.error("connector %d: transaction refused: %s", conn.id, exc)
            conn.authorization = None
            if hw.lock is not None:
                await self._unlock(conn)
            return False
        conn.authorization = None
        if auth.reservation_id is not None and self.reservations is not None:
            self.reservations.started(conn, auth.reservation_id)
        await self._offer(conn)
        return True

    async def _offer(self, conn: ConnectorRuntime) -> None:
        """Offer the EV the most the station and the plugged cable allow (PWM on)."""
        if conn.tx is not None and conn.tx.energy_blocked:
            return
        try:
            cable = await conn.hw.pilot.cable_capacity_a()
        except HardwareError:
            cable = None
        amps = self.offered_current(conn, cable)
        # Below 6 A the pilot cannot signal a current: no PWM, the EV pauses (SuspendedEVSE).
        conn.hw.pilot.set_offered_current(amps if amps >= 6.0 else None)
        self.poke()  # the EV answers the PWM with state C: look again at once

    async def reoffer(self, conn: ConnectorRuntime) -> None:
        """Offer again after the limit in force changed (smart charging), if a transaction runs."""
        async with conn.busy:
            if conn.tx is not None and conn.stop_pending is None:
                if self.limit_for is not None and self.limit_for(conn.id) < 6.0:
                    conn.hw.pilot.set_offered_current(None)  # a pause: no I/O before it
                else:
                    await self._offer(conn)
                await self._drive_contactor(conn)  # a paused EV: the contactor opens now
        self._update_status(conn)

    async def stop(self, conn: ConnectorRuntime, reason: str, *, id_tag: str | None = None) -> None:
        """Stop a running transaction (card, remote, reset, unlock...)."""
        async with conn.busy:
            await self._stop(conn, reason, id_tag=id_tag)
        self._update_status(conn)

    async def _stop(
        self,
        conn: ConnectorRuntime,
        reason: str,
        *,
        id_tag: str | None = None,
        unplugged: bool = False,
    ) -> None:
        if conn.tx is None:
            return
        # Energy off first, before any awaited I/O: PWM to 100 %, contactor open.  Only
        # then the meter reading for meterStop (no energy flows any more).
        conn.hw.pilot.set_offered_current(None)
        if conn.hw.contactor.closed or conn.stop_pending is None:
            await self._force_open(conn)
        sample = await self._read_meter(conn, fresh=True)
        owner = conn.tx.id_tag
        try:
            self.transactions.end(conn, reason=reason, sample=sample, id_tag=id_tag)
        except Exception as exc:
            # Safety before bookkeeping: a stop the store cannot write ahead (a full disk,
            # an I/O error) still cuts the energy and frees the cable; the transaction
            # stays open and its stop is written on a later pass (or, if the process dies
            # first, it ends as PowerLoss at the next start).
            first = conn.stop_pending is None
            conn.stop_pending = (reason, id_tag)
            conn.stop_retry_at = self._clock.monotonic() + 1.0
            if not first:
                return
            log.error(
                "connector %d: cannot record the stop of %s (%s); energy cut, "
                "the stop is retried until the store takes it",
                conn.id,
                tx_label(conn.tx.local_id, conn.tx.transaction_id),
                exc,
            )
            if conn.hw.lock is not None and reason in UNLOCK_AFTER:
                await self._unlock(conn)
            return
        conn.stop_pending = None
        conn.finishing = conn.ev_state.plugged and not unplugged
        if conn.hw.lock is not None and reason in UNLOCK_AFTER:
            await self._unlock(conn)
        elif reason == "DeAuthorized" and conn.hw.lock is not None and conn.hw.lock.locked:
            conn.locked_for = owner
            log.info("connector %d: cable stays locked until %s is presented", conn.id, owner)
        if conn.scheduled_operative is not None:
            conn.operative, conn.scheduled_operative = conn.scheduled_operative, None
            log.info(
                "connector %d: scheduled availability change applied (operative=%s)",
                conn.id,
                conn.operative,
            )
        # Every end of a transaction: a station-wide change may have waited for this one
        # even when the connector's own schedule was cancelled in the meantime.
        for cb in self.on_idle:
            result = cb()
            if asyncio.iscoroutine(result):
                await result

    async def _unlock(self, conn: ConnectorRuntime) -> bool:
        if conn.hw.lock is None:
            return False
        refusal = protection.unlock_refusal(
            contactor_closed=conn.hw.contactor.closed,
            contactor_faults=conn.hw.contactor.faults(),
        )
        if refusal is not None:
            log.error("connector %d: cable kept locked: %s", conn.id, refusal)
            return False
        try:
            await conn.hw.lock.unlock()
            conn.locked_for = None
            return True
        except HardwareError as exc:
            log.error("connector %d: cable lock did not release: %s", conn.id, exc)
            return False

    async def unlock(self, conn: ConnectorRuntime) -> bool | None:
        """UnlockConnector: stop a running transaction (UnlockCommand), then release.

        Returns None when the connector has no lock (a tethered cable).
        """
        if conn.tx is not None:
            await self.stop(conn, "UnlockCommand")
        if conn.hw.lock is None:
            return None
        async with conn.busy:
            return await self._unlock(conn)

    async def release_for(self, id_tag: str) -> ConnectorRuntime | None:
        """The owner's card frees a cable kept locked after DeAuthorized; the connector, if any.

        Identification, not authorization: the CSMS refused the card for charging,
        but it still proves whose car is on the cable.
        """
        for conn in self.connectors.values():
            if conn.tx is None and same_id_tag(conn.locked_for, id_tag):
                async with conn.busy:
                    await self._unlock(conn)
                self.poke()
                return conn
        return None

    def _take_waiting_card(self, conn: ConnectorRuntime) -> None:
        """A card presented before the EV was plugged goes to the socket the EV is plugged into.

        The reader is shared, so the card was parked on the first idle connector; a
        driver who then plugs into another socket expects the session there.  Remote
        starts and reservations stay where the CSMS put them.
        """
        if conn.held or not (conn.operative and self.station_operative):
            return
        if conn.faults & UNSAFE_FAULTS:
            return
        for other in self.connectors.values():
            auth = other.authorization
            if other is conn or auth is None or auth.remote or auth.reservation_id is not None:
                continue
            if not self._admits(conn, auth.id_tag, auth.parent_id_tag):
                continue
            if other.tx is None and not other.ev_state.plugged:
                conn.authorization, other.authorization = auth, None
                log.info(
                    "connector %d: %s, authorized on connector %d, plugged in here",
                    conn.id,
                    auth.id_tag,
                    other.id,
                )
                self.poke()
                return

    def authorize(self, conn: ConnectorRuntime, auth: Authorization) -> None:
        # A connector in Finishing keeps it: the authorization waits for the EV that
        # ended its session to be unplugged (OCPP 1.6 §4.9), then for the next one.
        conn.authorization = auth
        self.poke()

    def grant(
        self,
        conn: ConnectorRuntime,
        *,
        id_tag: str,
        parent_id_tag: str | None,
        remote: bool = False,
    ) -> None:
        """Hand an accepted idTag to a connector for ConnectionTimeOut seconds (0: no limit)."""
        timeout = int(self._config.get("ConnectionTimeOut") or 0)
        deadline = self._clock.monotonic() + (timeout if timeout > 0 else 1e9)
        reservation_id = None
        if self.reservations is not None:
            reservation_id = self.reservations.admit(conn, id_tag, parent_id_tag).reservation_id
        self.authorize(
            conn,
            Authorization(
                id_tag, parent_id_tag, deadline, remote=remote, reservation_id=reservation_id
            ),
        )

    def _on_invalid_id(self, connector_id: int) -> None:
        conn = self.connectors.get(connector_id)
        if conn is None or conn.tx is None:
            return
        if self._config.get("StopTransactionOnInvalidId"):
            task = asyncio.get_running_loop().create_task(self.stop(conn, "DeAuthorized"))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            self.poke()  # MaxEnergyOnInvalidId is checked by the supervisor

    # -- status -------------------------------------------------------------------------

    def inputs(self, conn: ConnectorRuntime) -> status_machine.ConnectorInputs:
        return status_machine.ConnectorInputs(
            ev_state=conn.ev_state,
            operative=conn.operative and self.station_operative,
            reserved=conn.reserved
            or (self.reservations is not None and self.reservations.is_reserved(conn)),
            authorized_pending=conn.authorization is not None and not conn.finishing,
            transaction_active=conn.tx is not None,
            offered_current_a=conn.hw.pilot.offered_current_a,
            contactor_closed=conn.hw.contactor.closed,
            transaction_stopped_plugged=conn.finishing and conn.ev_state.plugged,
            faults=conn.faults,
        )

    def _update_status(self, conn: ConnectorRuntime) -> None:
        st, code = status_machine.connector_status(self.inputs(conn))
        conn.status, conn.error_code = str(st), str(code)
        conn.hw.indicator.show(status_machine.indicator_for(st))
        self._report_status(conn.id, conn.status, conn.error_code)

    def station_status(self, station_faults: frozenset[Fault]) -> tuple[str, str]:
        """Connector 0: the charge point as a whole."""
        statuses = [c.status for c in self.connectors.values() if c.status is not None]
        st, code = status_machine.station_status(statuses, station_faults, self.station_operative)
        return str(st), str(code)

    def _admits(self, conn: ConnectorRuntime, id_tag: str | None, parent: str | None) -> bool:
        """Reservations allow ``id_tag`` here (always, without an idTag or a Reservation gate)."""
        if id_tag is None or self.reservations is None:
            return True
        return bool(self.reservations.admit(conn, id_tag, parent).allowed)

    def first_free(
        self,
        connector_id: int | None = None,
        *,
        id_tag: str | None = None,
        parent_id_tag: str | None = None,
    ) -> ConnectorRuntime | None:
        """The connector a new authorization goes to: the given one, or a plugged idle one first.

        With ``id_tag``, reservations are respected: the driver's own reserved
        connector comes first, and one reserved for someone else is not free.
        """

        def free(c: ConnectorRuntime) -> bool:
            return (
                c.tx is None
                and not c.held
                and c.operative
                and self.station_operative
                and not (c.faults & UNSAFE_FAULTS)
                and self._admits(c, id_tag, parent_id_tag)
            )

        if connector_id:
            conn = self.connectors.get(connector_id)
            return conn if conn is not None and free(conn) else None
        candidates = [c for c in self.connectors.values() if free(c)]
        if id_tag is not None and self.reservations is not None:
            for c in candidates:
                if c.authorization is None and self.reservations.prefers(c, id_tag, parent_id_tag):
                    return c
        for c in candidates:
            if c.ev_state.plugged and c.authorization is None and not c.finishing:
                return c
        for c in candidates:
            if c.authorization is None and not c.ev_state.plugged:
                return c
        # Last: a connector whose session just ended with the cable still in (Finishing);
        # OCPP allows Finishing -> Preparing when the driver authorizes again.
        for c in candidates:
            if c.authorization is None and c.finishing:
                return c
        return None
