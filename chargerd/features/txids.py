"""How a transaction is named where people read it: by both of its ids."""

from __future__ import annotations


def tx_label(local_id: int, transaction_id: int | None) -> str:
    """A transaction named by both its ids, for logs and technicians.

    The station numbers its transactions itself (local id) and learns the CSMS's
    transactionId from StartTransaction.conf, later when it started offline: a
    log line with one id only cannot be matched with the CSMS's records.
    """
    if transaction_id is None:
        return f"transaction local {local_id} (no CSMS id yet)"
    return f"transaction {transaction_id} (local {local_id})"
