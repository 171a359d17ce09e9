"""``chargerctl sim card``: present a card on the mock reader and say what the station did.

The card goes through the simulated reader exactly as a real one would (the
card service takes it from the reader's queue); this only waits for the
verdict and, when the card was accepted for a plugged EV, for the transaction
it starts, so that a bench user reads "accepted and started transaction 12"
rather than a bare "done".
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from chargerd.features.cards import CardOutcome
from chargerd.features.txids import tx_label


class _Cards(Protocol):
    def expect(self, id_tag: str) -> asyncio.Future[CardOutcome]: ...
    def forget(self, fut: asyncio.Future[CardOutcome]) -> None: ...


async def card_outcome(
    cards: _Cards,
    supervisor: Any,
    sim: Any,
    id_tag: str,
    *,
    timeout: float = 15.0,
    start_wait: float = 3.0,
) -> dict[str, Any]:
    """Present ``id_tag`` and return the sim.card answer (done/read kept for old scripts)."""
    answer: dict[str, Any] = {"done": True, "read": True, "id_tag": id_tag}
    fut = cards.expect(id_tag)
    try:
        seen = sim.present_card(id_tag)
    except ValueError:
        cards.forget(fut)
        raise
    if not seen:
        cards.forget(fut)
        return answer | {
            "read": False,
            "outcome": "not_read",
            "message": "the reader did not see the card (it is dead: sim fault reader_dead)",
        }
    try:
        outcome = await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        cards.forget(fut)
        return answer | {
            "outcome": "pending",
            "message": f"the station is still handling the card after {timeout:g} s",
        }
    except RuntimeError as exc:
        return answer | {"outcome": "error", "message": str(exc)}
    answer |= {
        "outcome": outcome.kind,
        "connector": outcome.connector,
        "status": outcome.status,
        "transaction_id": outcome.transaction_id,
        "local_transaction_id": outcome.local_transaction_id,
    }
    if outcome.kind == "stopped":
        label = tx_label(outcome.local_transaction_id or 0, outcome.transaction_id)
        return answer | {"message": f"stopped {label} on connector {outcome.connector}"}
    if outcome.kind == "refused":
        return answer | {"message": f"refused: {outcome.status}"}
    if outcome.kind == "no_connector":
        return answer | {"message": "refused: no connector free for a new transaction"}
    if outcome.kind != "authorized" or outcome.connector is None:
        return answer | {"message": outcome.text}
    return answer | await _after_authorized(supervisor, outcome.connector, id_tag, start_wait)


async def _after_authorized(supervisor: Any, cid: int, id_tag: str, wait: float) -> dict:
    """Accepted: the transaction it started, or what the connector waits for."""
    conn = supervisor.connectors[cid]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while loop.time() < deadline:
        tx = conn.tx
        if tx is not None and tx.id_tag.casefold() == id_tag.casefold():
            # Online, the CSMS's id follows within milliseconds; give it a moment.
            id_deadline = min(deadline, loop.time() + 1.0)
            while tx.transaction_id is None and loop.time() < id_deadline:
                await asyncio.sleep(0.02)
            return {
                "outcome": "started",
                "transaction_id": tx.transaction_id,
                "local_transaction_id": tx.local_id,
                "message": f"accepted and started {tx_label(tx.local_id, tx.transaction_id)} "
                f"on connector {cid}",
            }
        if conn.authorization is None or not conn.ev_state.plugged or conn.finishing:
            break
        await asyncio.sleep(0.02)
    if conn.authorization is None:
        return {"message": f"accepted for connector {cid}, but no transaction started"}
    if conn.finishing:
        why = "the EV whose session just ended is unplugged and an EV is plugged in"
    elif not conn.ev_state.plugged:
        why = "an EV is plugged in (ConnectionTimeOut)"
    else:
        why = "the transaction starts"
    return {"message": f"accepted: connector {cid} waits until {why}"}
