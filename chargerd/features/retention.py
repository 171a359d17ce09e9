"""How long the station keeps idTags: ended transactions are forgotten after 30 days.

idTags are personal data.  The CSMS holds the record of every transaction;
the station needs its own row only until the CSMS has received the
StopTransaction (and a little longer, for a technician asking about last
week).  So a transaction that ended more than KEEP_DAYS ago and has nothing
left in the outbox is deleted, at start and then once a day.  Row ids are
never reused (AUTOINCREMENT), so no later transaction takes an old one's id.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from chargerd.clock import Clock, iso
from chargerd.store import Store

log = logging.getLogger(__name__)

KEEP_DAYS = 30
EVERY_S = 86400.0


def forget_old_transactions(store: Store, now: datetime, *, keep_days: int = KEEP_DAYS) -> int:
    """Delete what ended before ``now - keep_days`` and the CSMS has all of; the count."""
    cutoff = iso(now - timedelta(days=keep_days))
    with store.transaction():
        cursor = store.execute(
            "DELETE FROM transactions WHERE state = 'stopped' AND stop_time < ? AND NOT EXISTS "
            "(SELECT 1 FROM outbox WHERE outbox.tx_local_id = transactions.local_id)",
            (cutoff,),
        )
    count = max(0, cursor.rowcount)
    if count:
        log.info("forgot %d transaction(s) that ended more than %d days ago", count, keep_days)
    return count


async def run(store: Store, clock: Clock, *, every_s: float = EVERY_S) -> None:
    """Forget old transactions now and then every ``every_s`` seconds."""
    while True:
        try:
            forget_old_transactions(store, clock.now())
        except Exception as exc:  # a full disk, a locked file: try again tomorrow
            log.warning("could not forget old transactions: %s", exc)
        await asyncio.sleep(every_s)
