"""The store on real SQLite files in tmp_path."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from chargerd.store import Migration, Store, StoreError, StoreFullError, load_migrations


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql, encoding="utf-8")
    return directory


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "chargerd.db"


# ------------------------------------------------------------------ fresh db


def test_fresh_database_has_base_schema_and_kv(db_path: Path) -> None:
    with Store.open(db_path) as store:
        assert db_path.is_file()  # parent directory was created
        assert store.recovered_from is None
        assert store.schema_version == load_migrations()[-1].version
        tables = {r["name"] for r in store.query("SELECT name FROM sqlite_master")}
        assert {"kv", "ocpp_config"} <= tables
        assert store.get_kv("missing") is None
        assert store.get_kv("missing", "fallback") == "fallback"
        store.set_kv("boot.count", "1")
        store.set_kv("boot.count", "2")
        assert store.get_kv("boot.count") == "2"
        store.delete_kv("boot.count")
        assert store.get_kv("boot.count") is None


def test_packaged_migrations_start_with_base() -> None:
    migrations = load_migrations()
    assert migrations[0] == Migration(version=1, name="0001_base.sql", sql=migrations[0].sql)
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})


def test_reopen_keeps_data(db_path: Path) -> None:
    with Store.open(db_path) as store:
        with store.transaction():
            store.set_kv("a", "1")
            store.execute("INSERT INTO ocpp_config(key, value) VALUES ('HeartbeatInterval', '60')")
    with Store.open(db_path) as store:
        assert store.get_kv("a") == "1"
        row = store.query_one("SELECT value FROM ocpp_config WHERE key = ?", ("HeartbeatInterval",))
        assert row is not None and row["value"] == "60"


def test_durability_settings_are_in_effect(db_path: Path) -> None:
    with Store.open(db_path) as store:
        assert store.query_one("PRAGMA journal_mode")[0] == "wal"
        assert store.query_one("PRAGMA synchronous")[0] == 2  # FULL
        assert store.query_one("PRAGMA foreign_keys")[0] == 1
        assert store.query_one("PRAGMA busy_timeout")[0] >= 1000
        store.set_kv("x", "y")
        assert db_path.with_name(db_path.name + "-wal").exists()
    # WAL is a property of the file: another connection sees it too.
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


# ---------------------------------------------------------------- migrations


def test_migrations_apply_in_numeric_order_once(tmp_path: Path, db_path: Path) -> None:
    mdir = write_migrations(
        tmp_path / "m",
        {
            # 0010 depends on 0002 which depends on 0001: only numeric order works.
            "0010_more.sql": "INSERT INTO t(x, y) VALUES (2, 'ten');",
            "0001_t.sql": "CREATE TABLE t(x INTEGER);",
            "0002_col.sql": (
                "ALTER TABLE t ADD COLUMN y TEXT;\nINSERT INTO t(x, y) VALUES (1, 'two');"
            ),
            "README.txt": "not a migration",
        },
    )
    migrations = load_migrations(mdir)
    assert [m.version for m in migrations] == [1, 2, 10]
    with Store.open(db_path, migrations=migrations) as store:
        assert store.schema_version == 10
        assert [tuple(r) for r in store.query("SELECT x, y FROM t ORDER BY x")] == [
            (1, "two"),
            (2, "ten"),
        ]
    # Reopening does not apply anything again (the INSERTs would duplicate rows).
    write_migrations(mdir, {"0011_last.sql": "INSERT INTO t(x, y) VALUES (3, 'eleven');"})
    with Store.open(db_path, migrations=load_migrations(mdir)) as store:
        assert store.schema_version == 11
        assert [r["x"] for r in store.query("SELECT x FROM t ORDER BY x")] == [1, 2, 3]
    with Store.open(db_path, migrations=load_migrations(mdir)) as store:
        assert store.query_one("SELECT count(*) FROM t")[0] == 3


def test_failing_migration_leaves_previous_version_intact(tmp_path: Path, db_path: Path) -> None:
    mdir = write_migrations(
        tmp_path / "m",
        {
            "0001_t.sql": "CREATE TABLE t(x INTEGER);",
            "0002_bad.sql": "CREATE TABLE half(x);\nINSERT INTO nowhere VALUES (1);",
        },
    )
    with pytest.raises(StoreError, match=r"0002_bad\.sql.*nowhere"):
        Store.open(db_path, migrations=load_migrations(mdir))
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
        names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
        assert "t" in names and "half" not in names
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"1_short.sql": "SELECT 1;"}, "misnamed"),
        ({"0001_CamelCase.sql": "SELECT 1;"}, "misnamed"),
        ({"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 1;"}, "share version 1"),
        ({"0001_a.sql": "BEGIN;\nCREATE TABLE t(x);\nCOMMIT;"}, "transaction statement"),
    ],
)
def test_bad_migration_folders_are_refused(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    with pytest.raises(StoreError, match=message):
        load_migrations(write_migrations(tmp_path / "m", files))


def test_trigger_bodies_are_not_mistaken_for_transactions(tmp_path: Path, db_path: Path) -> None:
    mdir = write_migrations(
        tmp_path / "m",
        {
            "0001_t.sql": (
                "CREATE TABLE t(x INTEGER, n INTEGER DEFAULT 0);\n"
                "CREATE TRIGGER t_count AFTER INSERT ON t\n"
                "BEGIN\n"
                "    UPDATE t SET n = n + 1 WHERE rowid = new.rowid;\n"
                "END;\n"
            )
        },
    )
    with Store.open(db_path, migrations=load_migrations(mdir)) as store:
        store.execute("INSERT INTO t(x) VALUES (5)")
        assert store.query_one("SELECT n FROM t")["n"] == 1


def test_database_newer_than_code_is_refused_and_left_alone(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.set_kv("keep", "me")
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA user_version = 999")
    raw.close()
    with pytest.raises(StoreError, match=r"schema version 999, newer than this chargerd"):
        Store.open(db_path)
    # Not treated as corruption: the file is still there with its data.
    assert list(db_path.parent.glob("*.corrupt-*")) == []
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("SELECT value FROM kv WHERE key='keep'").fetchone() == ("me",)
    finally:
        raw.close()


# ---------------------------------------------------------------- corruption


def test_garbage_file_is_moved_aside_and_a_fresh_db_works(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path.parent.mkdir(parents=True)
    garbage = b"this is not sqlite " * 500
    db_path.write_bytes(garbage)
    db_path.with_name(db_path.name + "-wal").write_bytes(b"stale wal")
    with caplog.at_level(logging.ERROR, logger="chargerd.store"):
        store = Store.open(db_path)
    with store:
        moved = store.recovered_from
        assert moved is not None
        assert moved.parent == db_path.parent
        assert moved.name.startswith("chargerd.db.corrupt-") and moved.name.endswith("Z")
        assert moved.read_bytes() == garbage
        assert moved.with_name(moved.name + "-wal").read_bytes() == b"stale wal"
        assert store.recovered_reason == "file is not a database"
        store.set_kv("after", "recovery")
        assert store.get_kv("after") == "recovery"
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    text = record.getMessage()
    assert "file is not a database" in text and str(moved) in text


def test_damaged_pages_are_detected(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.execute("CREATE TABLE filler(x TEXT)")
        with store.transaction():
            store.executemany("INSERT INTO filler VALUES (?)", [("a" * 200,)] * 2000)
    page = 4096
    assert db_path.stat().st_size > 10 * page
    with db_path.open("r+b") as f:
        f.seek(3 * page)
        f.write(b"\xff" * (2 * page))
    with Store.open(db_path) as store:
        assert store.recovered_from is not None and store.recovered_from.exists()
        assert store.recovered_reason
        assert store.query("SELECT name FROM sqlite_master WHERE name = 'filler'") == []
    # The second open finds a healthy file and recovers nothing.
    with Store.open(db_path) as store:
        assert store.recovered_from is None


def test_unopenable_path_is_an_error_not_corruption(tmp_path: Path) -> None:
    target = tmp_path / "is_a_directory.db"
    target.mkdir()
    with pytest.raises(StoreError, match="cannot open database"):
        Store.open(target)
    assert target.is_dir()
    assert list(tmp_path.glob("*.corrupt-*")) == []


# -------------------------------------------------------------- transactions


def test_transaction_rolls_back_on_exception(db_path: Path) -> None:
    with Store.open(db_path) as store:
        with pytest.raises(RuntimeError), store.transaction():
            store.set_kv("a", "1")
            raise RuntimeError("boom")
        assert store.get_kv("a") is None
        assert not store.in_transaction


def test_nested_transaction_is_a_savepoint(db_path: Path) -> None:
    with Store.open(db_path) as store:
        with store.transaction():
            store.set_kv("outer", "1")
            with pytest.raises(ValueError), store.transaction():
                store.set_kv("inner", "1")
                raise ValueError
            with store.transaction():
                store.set_kv("inner2", "1")
        assert store.get_kv("outer") == "1"
        assert store.get_kv("inner") is None
        assert store.get_kv("inner2") == "1"

        # An error in the outer block undoes released savepoints too.
        with pytest.raises(KeyError), store.transaction():
            with store.transaction():
                store.set_kv("released", "1")
            raise KeyError
        assert store.get_kv("released") is None


def test_transaction_is_immediate_and_visible_to_others_only_after_commit(
    db_path: Path,
) -> None:
    with Store.open(db_path) as store:
        other = sqlite3.connect(db_path, timeout=0)
        try:
            with store.transaction():
                store.set_kv("a", "1")
                assert other.execute("SELECT count(*) FROM kv").fetchone()[0] == 0
                # IMMEDIATE: the write lock is already ours.
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("INSERT INTO kv VALUES ('b', '2')")
            assert other.execute("SELECT value FROM kv WHERE key='a'").fetchone() == ("1",)
        finally:
            other.close()


async def test_other_task_cannot_write_into_an_open_transaction(db_path: Path) -> None:
    store = Store.open(db_path)
    inside = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        with store.transaction():
            store.set_kv("holder", "1")
            inside.set()
            await release.wait()  # the mistake the store guards against

    task = asyncio.create_task(holder())
    await inside.wait()
    try:
        with pytest.raises(StoreError, match="another task"):
            store.set_kv("intruder", "1")
        with pytest.raises(StoreError, match="another task"), store.transaction():
            pass
    finally:
        release.set()
        await task
    assert store.get_kv("holder") == "1"
    assert store.get_kv("intruder") is None
    store.close()


def test_disk_full_raises_store_full_error_and_rolls_back(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.execute("CREATE TABLE blobs(b BLOB)")
        store.set_kv("before", "ok")
        pages = store.query_one("PRAGMA page_count")[0]
        store.execute(f"PRAGMA max_page_count = {pages + 4}")
        with pytest.raises(StoreFullError) as info, store.transaction():
            for _ in range(50):
                store.execute("INSERT INTO blobs VALUES (zeroblob(4096))")
        assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
        assert "full" in str(info.value)
        assert not store.in_transaction
        assert store.query_one("SELECT count(*) FROM blobs")[0] == 0
        assert store.get_kv("before") == "ok"
        # Still usable once space is back.
        store.execute("PRAGMA max_page_count = 1000000")
        with store.transaction():
            store.execute("INSERT INTO blobs VALUES (zeroblob(4096))")
        assert store.query_one("SELECT count(*) FROM blobs")[0] == 1


def test_closed_store_refuses_use(db_path: Path) -> None:
    store = Store.open(db_path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.get_kv("a")


def test_a_new_database_and_its_wal_files_are_the_owners_only(tmp_path):
    """idTags are personal data: 0600 files and a 0700 directory, even with umask 022."""
    import stat

    old = os.umask(0o022)
    try:
        path = tmp_path / "state" / "chargerd.db"
        with Store.open(path) as store, store.transaction():
            store.execute("INSERT INTO ocpp_config(key, value) VALUES ('K', 'v')")
            files = [path, path.with_name("chargerd.db-wal"), path.with_name("chargerd.db-shm")]
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
        assert modes == {f.name: 0o600 for f in files}
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)
