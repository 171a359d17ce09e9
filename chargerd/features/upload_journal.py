"""GetDiagnostics / GetLog uploads across a restart: the CSMS always gets a final status.

An accepted upload is written to ``upload_job`` (migration 0031) before anything
else happens, and removed in the same SQLite transaction that queues its final
status notification.  A row still there at start is an upload a restart cut
(kill -9, power cut, Reset, a stop): it is closed with UploadFailed
(DiagnosticsStatusNotification) or UploadFailure (LogStatusNotification, with its
requestId), queued durably, in the same transaction as the row's removal, so
that the final status is sent exactly once whatever happens next.

Closed rather than resumed: a bundle built after the restart would not hold
what the CSMS asked for (the frame log and the logs of the process that ran),
and the CSMS can simply ask again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from chargerd.store import Store

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted by a restart"


@dataclass(frozen=True)
class Interrupted:
    slot: str
    kind: str
    request_id: int | None
    filename: str
    location: str
    accepted_at: str


def final_failure(kind: str, request_id: int | None) -> tuple[str, dict]:
    """The (action, payload) that closes a failed upload of ``kind``."""
    if kind == "Diagnostics":
        return "DiagnosticsStatusNotification", {"status": "UploadFailed"}
    return "LogStatusNotification", {"status": "UploadFailure", "requestId": request_id}


class UploadJournal:
    """The ``upload_job`` rows: one per slot (``diagnostics``, ``log``)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @staticmethod
    def slot_of(kind: str) -> str:
        return "diagnostics" if kind == "Diagnostics" else "log"

    def begin(
        self, kind: str, request_id: int | None, filename: str, location: str, at: str
    ) -> None:
        """An accepted upload (replaces the slot's earlier one: a newer request cancels it)."""
        from chargerd.features.transfer import redact

        with self._store.transaction():
            self._store.execute(
                "INSERT OR REPLACE INTO upload_job "
                "(slot, kind, request_id, filename, location, accepted_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self.slot_of(kind), kind, request_id, filename, redact(location), at),
            )

    @contextlib.contextmanager
    def ending(self, kind: str, filename: str) -> Iterator[None]:
        """Around the final status notification: the row goes in the same transaction."""
        with self._store.transaction():
            yield
            self._store.execute(
                "DELETE FROM upload_job WHERE slot = ? AND filename = ?",
                (self.slot_of(kind), filename),
            )

    def interrupted(self) -> list[Interrupted]:
        rows = self._store.query(
            "SELECT slot, kind, request_id, filename, location, accepted_at FROM upload_job "
            "ORDER BY accepted_at"
        )
        return [Interrupted(*tuple(r)) for r in rows]

    def close_interrupted(self, notify: Callable[[str, dict], None]) -> list[Interrupted]:
        """Send the final failure of every upload a restart cut; the rows go with it."""
        closed = self.interrupted()
        for job in closed:
            action, payload = final_failure(job.kind, job.request_id)
            log.warning(
                "%s upload %s was %s: reporting %s",
                job.kind,
                job.filename,
                INTERRUPTED,
                payload["status"],
            )
            with self.ending(job.kind, job.filename):
                notify(action, payload)
        return closed
