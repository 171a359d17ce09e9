"""Persistence: one SQLite file, versioned by numbered SQL migrations.

Feature modules own their tables (their own ``migrations/NNNN_*.sql``) and
talk to SQLite through :class:`Store`; nobody else opens the file.
"""

from chargerd.store.db import Store
from chargerd.store.errors import StoreError, StoreFullError
from chargerd.store.schema import Migration, load_migrations

__all__ = ["Migration", "Store", "StoreError", "StoreFullError", "load_migrations"]
