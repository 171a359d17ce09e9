"""The one SQLite database of the daemon.

Write-ahead is the point: a transaction event and its outgoing message are
committed together before the contactor moves, so the settings favour
durability over speed (WAL + synchronous=FULL: a COMMIT that returned survives
a power cut).  One connection, used only from the event loop thread, with
explicit transactions (``isolation_level=None``) so that nothing commits
behind the caller's back.

Transactions are synchronous.  Never ``await`` inside ``with
store.transaction():`` -- another task would run its statements inside your
transaction; the store detects that and raises rather than mixing them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from chargerd.store.errors import StoreError, StoreFullError
from chargerd.store.schema import Migration, load_migrations

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
# Primary result codes (the low byte of extended codes) that mean "this file is
# not a usable database", as opposed to permissions or a missing directory.
_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}

Params = Sequence[Any] | dict[str, Any]


class _Corrupt(Exception):
    """The file is unusable; ``conn`` is still open so that the files can be
    moved aside before SQLite's close deletes the -wal (or checkpoints it)."""

    def __init__(self, reason: str, conn: sqlite3.Connection) -> None:
        super().__init__(reason)
        self.reason = reason
        self.conn = conn


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """Raise SQLITE_FULL as StoreFullError; other sqlite errors pass unchanged."""
    try:
        yield
    except sqlite3.Error as exc:
        if _primary_code(exc) == sqlite3.SQLITE_FULL:
            raise StoreFullError(f"{exc} ({path})") from exc
        raise


class Store:
    """The daemon's SQLite file; see the module docstring for the rules."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        recovered_from: Path | None = None,
        recovered_reason: str | None = None,
    ) -> None:
        self._conn = conn
        self._path = path
        # Where a corrupt predecessor was moved to at open, for the daemon to
        # report (security event / status); None on a normal open.
        self.recovered_from = recovered_from
        self.recovered_reason = recovered_reason
        self._depth = 0
        self._owner: asyncio.Task[Any] | None = None
        self._closed = False
        # Called with the StoreFullError of a write the disk refused (the security
        # events raise MemoryExhaustion); a listener must not touch the store.
        self.full_listeners: list[Callable[[StoreFullError], None]] = []

    # ------------------------------------------------------------------ open

    @classmethod
    def open(cls, path: Path, *, migrations: Sequence[Migration] | None = None) -> Store:
        """Open (or create) the database, recovering from a corrupt file.

        A corrupt file is moved aside rather than deleted so that it can still
        be inspected; the station then starts from an empty state, which is
        safe (the CSMS holds the authoritative transaction record), whereas
        refusing to start would leave the charger dead in the field.
        """
        path = Path(path)
        if migrations is None:
            migrations = load_migrations()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {path}: {exc}") from exc
        try:
            # idTags are personal data: the file is the owner's only, whatever the
            # umask; SQLite gives its -wal and -shm the database file's mode.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc

        recovered_from: Path | None = None
        reason: str | None = None
        try:
            conn = _connect_checked(path)
        except _Corrupt as corrupt:
            reason = corrupt.reason
            try:
                recovered_from = _move_aside(path)
            finally:
                corrupt.conn.close()
            log.error(
                "Database %s is corrupt (%s); moved it to %s and started a fresh one",
                path,
                reason,
                recovered_from,
            )
            try:
                conn = _connect_checked(path)
            except _Corrupt as again:
                again.conn.close()
                raise StoreError(f"fresh database {path} reports corruption: {again}") from again

        store = cls(conn, path, recovered_from=recovered_from, recovered_reason=reason)
        try:
            store._configure()
            store._migrate(migrations)
        except BaseException:
            conn.close()
            raise
        return store

    def _configure(self) -> None:
        conn = self._conn
        with _translated(self._path):
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self._path}: cannot switch to WAL journal (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        current = self.schema_version
        latest = migrations[-1].version if migrations else 0
        if current > latest:
            raise StoreError(
                f"{self._path} has schema version {current}, newer than this chargerd "
                f"knows ({latest}); it was written by a newer release. Downgrades are not "
                "supported: install the newer release again or move the file away."
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            # executescript() commits any open transaction first, so the BEGIN
            # lives inside the script: schema change and version bump commit
            # together or not at all.
            script = (
                "BEGIN IMMEDIATE;\n"
                f"{migration.sql}\n;\n"
                f"PRAGMA user_version = {migration.version};\n"
                "COMMIT;"
            )
            try:
                with _translated(self._path):
                    self._conn.executescript(script)
            except sqlite3.Error as exc:
                self._rollback_quietly()
                raise StoreError(f"{self._path}: migration {migration.name} failed: {exc}") from exc
            log.info(
                "Database %s migrated to version %d (%s)",
                self._path,
                migration.version,
                migration.name,
            )

    # ----------------------------------------------------------- properties

    @property
    def path(self) -> Path:
        return self._path

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    # ---------------------------------------------------------- transactions

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception.

        Nested use opens a SAVEPOINT: the inner block can fail and roll back on
        its own while the outer one goes on, and nothing is durable until the
        outermost block commits.  IMMEDIATE takes the write lock at once so a
        commit never fails half-way with SQLITE_BUSY after work was done.

        ``durable=False`` commits without the fsync (synchronous=NORMAL for this
        commit only).  The commit is still atomic and survives a crash of the
        process; only an OS crash or a power cut can undo it, and then only
        together with the other non-durable commits made since the last durable
        one (the WAL is recovered in order, so the disk keeps a prefix of the
        history).  It is for writes whose loss merely repeats work, such as
        forgetting a message that was delivered.  A nested block has the
        durability of the outermost one.
        """
        self._check_owner()
        if self._depth == 0:
            if not durable:
                self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with _translated(self._path):
                    self._conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                if not durable:
                    self._conn.execute("PRAGMA synchronous=FULL")
                raise
            self._depth = 1
            self._owner = _current_task()
            try:
                try:
                    yield
                except BaseException:
                    self._rollback_quietly()
                    raise
                try:
                    with self._writing():
                        self._conn.execute("COMMIT")
                except BaseException:
                    self._rollback_quietly()
                    raise
            finally:
                self._depth = 0
                self._owner = None
                if not durable:
                    self._conn.execute("PRAGMA synchronous=FULL")
        else:
            name = f"sp{self._depth}"
            with _translated(self._path):
                self._conn.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                try:
                    yield
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute(f"ROLLBACK TO {name}")
                        self._conn.execute(f"RELEASE {name}")
                    raise
                with _translated(self._path):
                    self._conn.execute(f"RELEASE {name}")
            finally:
                self._depth -= 1

    def _rollback_quietly(self) -> None:
        # SQLite may already have rolled back by itself (SQLITE_FULL, IOERR).
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("ROLLBACK failed on %s", self._path)

    def _check_owner(self) -> None:
        if self._closed:
            raise StoreError(f"{self._path}: store is closed")
        if self._depth and _current_task() is not self._owner:
            raise StoreError(
                "a store transaction is open in another task (an await inside "
                "'with store.transaction()'?)"
            )

    # ------------------------------------------------------------ statements

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        self._check_owner()
        with self._writing():
            return self._conn.execute(sql, params)

    def executemany(self, sql: str, seq_of_params: Iterable[Params]) -> sqlite3.Cursor:
        self._check_owner()
        with self._writing():
            return self._conn.executemany(sql, seq_of_params)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """``_translated`` that also tells ``full_listeners`` about a full disk."""
        try:
            with _translated(self._path):
                yield
        except StoreFullError as exc:
            for listener in list(self.full_listeners):
                try:
                    listener(exc)
                except Exception:
                    log.exception("a store-full listener failed")
            raise

    def query(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        self._check_owner()
        with _translated(self._path):
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        self._check_owner()
        with _translated(self._path):
            return self._conn.execute(sql, params).fetchone()

    # -------------------------------------------------------------------- kv

    def get_kv(self, key: str, default: str | None = None) -> str | None:
        row = self.query_one("SELECT value FROM kv WHERE key = ?", (key,))
        return default if row is None else str(row["value"])

    def set_kv(self, key: str, value: str) -> None:
        self.execute(
            "INSERT INTO kv(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def delete_kv(self, key: str) -> None:
        self.execute("DELETE FROM kv WHERE key = ?", (key,))

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        """Close the connection; an open transaction is rolled back by SQLite."""
        if not self._closed:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: plain synchronous use
        return None


def _connect_checked(path: Path) -> sqlite3.Connection:
    """Connect and run integrity_check; raise _Corrupt for an unusable file."""
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=True
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        if _primary_code(exc) in _CORRUPT_CODES:
            raise _Corrupt(str(exc), conn) from exc
        conn.close()
        raise StoreError(f"cannot read database {path}: {exc}") from exc
    problems = [str(r[0]) for r in rows]
    if problems != ["ok"]:
        shown = "; ".join(problems[:5])
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise _Corrupt(f"integrity_check: {shown}{more}", conn)
    return conn


def _move_aside(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, target)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.replace(side, target.with_name(target.name + suffix))
    except OSError as exc:
        raise StoreError(f"database {path} is corrupt and cannot be moved aside: {exc}") from exc
    return target
