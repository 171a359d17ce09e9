"""A card on the reader: stop the transaction it owns, or authorize a new one.

The order follows what drivers expect at a public charger: the card that
started a transaction (or one with the same parentIdTag) ends it; any other
card is authorized (cache, local list, CSMS, offline rules: authz.decide) and
given to a plugged idle connector, or held for ConnectionTimeOut until an EV
is plugged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chargerd.features.authz import may_stop, same_id_tag
from chargerd.features.connectors import ConnectorSupervisor

if TYPE_CHECKING:
    from chargerd.features.auth import Authorizer
    from chargerd.features.configuration import ConfigurationService
    from chargerd.features.transactions import ActiveTx
    from hal.interfaces import RfidReader

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CardOutcome:
    """What the station did with a card: for the log, the bench and ``chargerctl sim card``."""

    kind: str  # stopped | released | withdrawn | authorized | refused | no_connector
    text: str
    connector: int | None = None
    status: str | None = None  # the authorization verdict of a refused card
    transaction_id: int | None = None  # the CSMS's id of the transaction it stopped
    local_transaction_id: int | None = None


class CardService:
    def __init__(
        self,
        *,
        supervisor: ConnectorSupervisor,
        authorizer: Authorizer,
        config: ConfigurationService,
        online: callable,
    ) -> None:
        self._sup = supervisor
        self._authorizer = authorizer
        self._config = config
        self._online = online
        self.last_card: str | None = None
        self._waiters: dict[str, list[asyncio.Future[CardOutcome]]] = {}

    def expect(self, id_tag: str) -> asyncio.Future[CardOutcome]:
        """A future for what the station does with the next presentation of ``id_tag``."""
        fut: asyncio.Future[CardOutcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(id_tag.casefold(), []).append(fut)
        return fut

    def forget(self, fut: asyncio.Future[CardOutcome]) -> None:
        """Drop a waiter whose card will never come (a dead reader missed it)."""
        for key, futs in list(self._waiters.items()):
            if fut in futs:
                futs.remove(fut)
                if not futs:
                    del self._waiters[key]
        fut.cancel()

    def _resolve(self, id_tag: str, outcome: CardOutcome | BaseException) -> None:
        key = id_tag.casefold()
        if key not in self._waiters and self._waiters:
            # The reader reported the card under another form (id_tag_format hex_reversed
            # or decimal on an emulated reader): the oldest waiter is the one it answers.
            key = next(iter(self._waiters))
        futs = self._waiters.get(key)
        while futs:
            fut = futs.pop(0)
            if not fut.done():
                if isinstance(outcome, BaseException):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)
                break
        if futs is not None and not futs:
            self._waiters.pop(key, None)

    async def run(self, reader: RfidReader) -> None:
        while True:
            uid = await reader.next_card()
            try:
                outcome = await self.handle(uid)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("handling card %s failed", uid)
                self._resolve(uid, RuntimeError(f"handling the card failed: {exc}"))
            else:
                self._resolve(uid, outcome)

    async def present(self, uid: str) -> str:
        """Handle one presentation; returns what happened (for logs and the bench)."""
        return (await self.handle(uid)).text

    async def handle(self, uid: str) -> CardOutcome:
        """Handle one presentation; returns what the station did with the card."""
        self.last_card = uid
        log.info("card %s presented", uid, extra={"fields": {"id_tag": uid}})
        # 1. The card (or a sibling under the same parent) ends its own transaction.
        for conn in self._sup.connectors.values():
            tx = conn.tx
            if tx is None:
                continue
            if same_id_tag(uid, tx.id_tag):
                await self._sup.stop(conn, "Local", id_tag=uid)
                return _stopped(conn.id, tx, "")
        released = await self._sup.release_for(uid)
        if released is not None:
            log.info("card %s: its cable on connector %d released", uid, released.id)
            return CardOutcome(
                "released", f"cable released on connector {released.id}", released.id
            )
        owners = [
            c for c in self._sup.connectors.values() if c.tx is not None and c.tx.parent_id_tag
        ]
        info = None  # asked once: the answer serves both the stop check and a new start
        if owners:
            info = await self._authorizer.authorize(uid, online=self._online())
            for conn in owners:
                tx = conn.tx
                if tx is not None and may_stop(
                    started_by=tx.id_tag,
                    started_parent=tx.parent_id_tag,
                    presenter=uid,
                    presenter_parent=info.parent_id_tag,
                ):
                    await self._sup.stop(conn, "Local", id_tag=uid)
                    return _stopped(conn.id, tx, " (same parent)")
        # 2. The same card again on a waiting connector withdraws the authorization.
        for conn in self._sup.connectors.values():
            if conn.authorization is not None and same_id_tag(conn.authorization.id_tag, uid):
                conn.authorization = None
                self._sup.poke()
                log.info(
                    "card %s presented again: authorization on connector %d withdrawn", uid, conn.id
                )
                return CardOutcome(
                    "withdrawn", f"authorization withdrawn on connector {conn.id}", conn.id
                )
        # 3. A new authorization.
        target = self._sup.first_free()
        if target is None:
            log.warning("card %s: no connector free for a new transaction", uid)
            return CardOutcome("no_connector", "no connector free")
        if info is None:
            info = await self._authorizer.authorize(uid, online=self._online())
        if info.status != "Accepted":
            log.warning("card %s refused: %s", uid, info.status)
            return CardOutcome("refused", f"refused: {info.status}", status=str(info.status))
        target = self._sup.first_free(id_tag=uid, parent_id_tag=info.parent_id_tag)
        if target is None:
            log.warning("card %s: no connector free for it (reservations)", uid)
            return CardOutcome("no_connector", "no connector free")
        self._sup.grant(target, id_tag=uid, parent_id_tag=info.parent_id_tag)
        log.info("card %s accepted for connector %d", uid, target.id)
        return CardOutcome("authorized", f"authorized on connector {target.id}", target.id)


def _stopped(connector: int, tx: ActiveTx, suffix: str) -> CardOutcome:
    return CardOutcome(
        "stopped",
        f"stopped transaction on connector {connector}{suffix}",
        connector,
        transaction_id=tx.transaction_id,
        local_transaction_id=tx.local_id,
    )
