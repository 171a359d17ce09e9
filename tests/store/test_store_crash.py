"""kill -9 in the middle of writes: every commit a writer saw return is on disk."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chargerd.store import Store

REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from chargerd.store import Store

    store = Store.open(Path(sys.argv[1]))
    while True:
        with store.transaction():
            rid = store.execute(
                "INSERT INTO crash(payload) VALUES (?)", ("x" * 3000,)
            ).lastrowid
            store.execute("UPDATE crash SET payload = ? WHERE id = ?", ("y" * 3000, rid))
        # Printed only after COMMIT returned: a reported id is a promise.
        print(rid, flush=True)
    """
)


def _run_writer_and_kill(db: Path, rows_before_kill: int) -> list[int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    first_line_deadline = time.monotonic() + 15.0  # interpreter start-up on a slow box
    kill_deadline: float | None = None
    try:
        while True:
            now = time.monotonic()
            if kill_deadline is None and b"\n" in data:
                kill_deadline = now + 0.3
            deadline = kill_deadline or first_line_deadline
            if data.count(b"\n") >= rows_before_kill or now >= deadline:
                break
            ready, _, _ = select.select([fd], [], [], deadline - now)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break  # the writer died on its own
                data += chunk
    finally:
        proc.kill()  # SIGKILL: no cleanup, no final checkpoint
        rest, err = proc.communicate(timeout=10)
    data += rest
    assert proc.returncode == -9, err.decode(errors="replace")
    # A last line without its newline may be cut; only complete lines count.
    lines = data.split(b"\n")[:-1]
    return [int(line) for line in lines]


@pytest.mark.parametrize("rows_before_kill", [1, 7, 40])
def test_committed_rows_survive_kill_9(tmp_path: Path, rows_before_kill: int) -> None:
    db = tmp_path / "crash.db"
    with Store.open(db) as store:
        store.execute("CREATE TABLE crash(id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")

    reported: list[int] = []
    for _round in range(2):  # the second writer starts from the first one's leftovers
        ids = _run_writer_and_kill(db, rows_before_kill)
        assert ids, "the writer never reported a commit"
        reported += ids

    with Store.open(db) as store:
        assert store.recovered_from is None  # integrity_check passed
        present = {r["id"] for r in store.query("SELECT id FROM crash")}
        assert set(reported) <= present
        # No half-done transaction: every row got its UPDATE.
        assert store.query("SELECT id FROM crash WHERE payload NOT LIKE 'y%'") == []
