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
from typing import TYPE_CHECKING

from chargerd.features.authz import may_stop, same_id_tag
from chargerd.features.connectors import ConnectorSupervisor

if TYPE_CHECKING:
    from chargerd.features.auth import Authorizer
    from chargerd.features.configuration import ConfigurationService
    from hal.interfaces import RfidReader

log = logging.getLogger(__name__)


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

    async def run(self, reader: RfidReader) -> None:
        while True:
            uid = await reader.next_card()
            try:
                await self.present(uid)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("handling card %s failed", uid)

    async def present(self, uid: str) -> str:
        """Handle one presentation; returns what happened (for logs and the bench)."""
        self.last_card = uid
        log.info("card %s presented", uid, extra={"fields": {"id_tag": uid}})
        # 1. The card (or a sibling under the same parent) ends its own transaction.
        for conn in self._sup.connectors.values():
            tx = conn.tx
            if tx is None:
                continue
            if same_id_tag(uid, tx.id_tag):
                await self._sup.stop(conn, "Local", id_tag=uid)
                return f"stopped transaction on connector {conn.id}"
        released = await self._sup.release_for(uid)
        if released is not None:
            log.info("card %s: its cable on connector %d released", uid, released.id)
            return f"cable released on connector {released.id}"
        owners = [
            c for c in self._sup.connectors.values() if c.tx is not None and c.tx.parent_id_tag
        ]
        info = None  # asked once: the answer serves both the stop check and a new start
        if owners:
            info = await self._authorizer.authorize(uid, online=self._online())
            for conn in owners:
                if conn.tx is not None and may_stop(
                    started_by=conn.tx.id_tag,
                    started_parent=conn.tx.parent_id_tag,
                    presenter=uid,
                    presenter_parent=info.parent_id_tag,
                ):
                    await self._sup.stop(conn, "Local", id_tag=uid)
                    return f"stopped transaction on connector {conn.id} (same parent)"
        # 2. The same card again on a waiting connector withdraws the authorization.
        for conn in self._sup.connectors.values():
            if conn.authorization is not None and same_id_tag(conn.authorization.id_tag, uid):
                conn.authorization = None
                self._sup.poke()
                log.info(
                    "card %s presented again: authorization on connector %d withdrawn", uid, conn.id
                )
                return f"authorization withdrawn on connector {conn.id}"
        # 3. A new authorization.
        target = self._sup.first_free()
        if target is None:
            log.warning("card %s: no connector free for a new transaction", uid)
            return "no connector free"
        if info is None:
            info = await self._authorizer.authorize(uid, online=self._online())
        if info.status != "Accepted":
            log.warning("card %s refused: %s", uid, info.status)
            return f"refused: {info.status}"
        target = self._sup.first_free(id_tag=uid, parent_id_tag=info.parent_id_tag)
        if target is None:
            log.warning("card %s: no connector free for it (reservations)", uid)
            return "no connector free"
        self._sup.grant(target, id_tag=uid, parent_id_tag=info.parent_id_tag)
        log.info("card %s accepted for connector %d", uid, target.id)
        return f"authorized on connector {target.id}"
