"""Errors of the store."""

from __future__ import annotations

import errno


class StoreError(Exception):
    """The database cannot be opened, migrated or used as asked."""


class StoreFullError(StoreError, OSError):
    """SQLite reported SQLITE_FULL (disk or max_page_count reached).

    Also an OSError(ENOSPC) so that code handling a full disk generically
    catches it; the caller should refuse to start new transactions (nothing may
    happen that cannot be written ahead) rather than retry in a loop.
    """

    def __init__(self, message: str) -> None:
        OSError.__init__(self, errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)
