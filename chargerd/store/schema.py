"""Schema migrations: numbered SQL files applied in order, once.

Every feature module that needs tables adds its own ``NNNN_name.sql`` file to
``chargerd/store/migrations/``; the number is the schema version the file
brings the database to (``PRAGMA user_version``).  Files are data, not code, so
that a migration is reviewed as plain SQL and shipped as package data.

A migration file must not contain BEGIN/COMMIT/ROLLBACK: the store runs each
file inside one ``BEGIN IMMEDIATE ... COMMIT`` together with the version bump,
so that a crash during a migration leaves the previous version intact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from chargerd.store.errors import StoreError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# BEGIN alone (newline after it) opens a trigger body and is allowed; END is
# left alone for the same reason.
_TXN_STATEMENT = re.compile(
    r"^\s*(BEGIN\s*(;|DEFERRED|IMMEDIATE|EXCLUSIVE|TRANSACTION)|COMMIT\b|ROLLBACK\b|SAVEPOINT\b)",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file name, for messages
    sql: str


def load_migrations(directory: Traversable | Path | None = None) -> tuple[Migration, ...]:
    """Read the migration files of ``directory`` (default: the packaged ones).

    Misnamed ``.sql`` files and duplicate numbers are errors rather than being
    skipped: a silently ignored migration would leave a table missing on some
    chargers and not on others.  Gaps are allowed (numbers are handed out to
    feature modules in advance), but a database only ever moves forward: a
    file numbered below a database's ``user_version`` is never applied to it,
    so a released number must never be reused or inserted below.
    """
    if directory is None:
        directory = resources.files("chargerd.store").joinpath("migrations")
    found: dict[int, Migration] = {}
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            raise StoreError(
                f"migration file {entry.name!r} is misnamed: expected NNNN_lower_case_name.sql"
            )
        version = int(match.group(1))
        if version in found:
            raise StoreError(
                f"migrations {found[version].name!r} and {entry.name!r} share version {version}"
            )
        sql = entry.read_text(encoding="utf-8")
        if _TXN_STATEMENT.search(_strip_comments(sql)):
            raise StoreError(
                f"migration {entry.name!r} contains a transaction statement; "
                "the store wraps each migration in its own transaction"
            )
        found[version] = Migration(version=version, name=entry.name, sql=sql)
    return tuple(found[v] for v in sorted(found))


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)
