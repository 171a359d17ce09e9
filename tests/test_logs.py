"""What a technician reads: the text lines, the log file, the journal prefixes."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from chargerd.logs import JournalFieldsFilter, journal_field_name, setup_logging

REPO = Path(__file__).resolve().parents[1]
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(autouse=True)
def restore_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_text_line_with_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info")
    log = logging.getLogger("chargerd.tx")
    log.info(
        "Transaction %d started",
        7,
        extra={"fields": {"connector_id": 1, "id_tag": "04 A1", "note": ""}},
    )
    log.debug("not shown at INFO")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(
        STAMP + r' INFO chargerd\.tx: Transaction 7 started connector_id=1 id_tag="04 A1" note=""',
        lines[0],
    ), lines[0]


def test_exception_traceback_follows_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("DEBUG")
    try:
        raise ValueError("meter register out of range")
    except ValueError:
        logging.getLogger("chargerd.metering").exception("Sample failed")
    err = capsys.readouterr().err
    first, *rest = err.splitlines()
    assert re.fullmatch(STAMP + r" ERROR chargerd\.metering: Sample failed", first)
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: meter register out of range"


def test_setting_up_twice_does_not_duplicate_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO")
    setup_logging("WARNING")
    log = logging.getLogger("chargerd.x")
    log.info("hidden")
    log.warning("once")
    assert [line.split(" ", 1)[1] for line in capsys.readouterr().err.splitlines()] == [
        "WARNING chargerd.x: once"
    ]


def test_log_file(tmp_path: Path) -> None:
    log_file = tmp_path / "var" / "bench" / "chargerd.log"
    setup_logging("INFO", log_file=log_file)
    logging.getLogger("chargerd.link").warning(
        "Connection lost", extra={"fields": {"url": "ws://127.0.0.1:9000/CP-1"}}
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    [line] = log_file.read_text(encoding="utf-8").splitlines()
    assert re.fullmatch(
        STAMP + r" WARNING chargerd\.link: Connection lost url=ws://127.0.0.1:9000/CP-1", line
    )


def test_unknown_level_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("LOUD")


def test_journal_fields_filter_adds_upper_case_attributes() -> None:
    record = logging.LogRecord("chargerd.tx", logging.INFO, __file__, 1, "m", None, None)
    record.fields = {"connector_id": 1, "id-tag": "AB", "priority": "x", "2nd": True}
    assert JournalFieldsFilter().filter(record) is True
    assert record.CONNECTOR_ID == "1"
    assert record.ID_TAG == "AB"
    # Names JournalHandler sets itself or that journald refuses are renamed.
    assert record.FIELD_PRIORITY == "x"
    assert record.FIELD_2ND == "True"


@pytest.mark.parametrize(
    ("key", "name"),
    [("connector_id", "CONNECTOR_ID"), ("_x", "X"), ("a.b", "A_B"), ("message", "FIELD_MESSAGE")],
)
def test_journal_field_name(key: str, name: str) -> None:
    assert journal_field_name(key) == name


@pytest.mark.skipif(
    importlib.util.find_spec("systemd") is not None,
    reason="systemd-python installed: the journal gets native fields instead",
)
def test_stderr_connected_to_journald_gets_priority_prefixes(tmp_path: Path) -> None:
    child = textwrap.dedent(
        """
        import logging
        from chargerd.logs import setup_logging
        setup_logging("DEBUG")
        log = logging.getLogger("chargerd.x")
        log.debug("detail")
        log.error("boom %s", 1, extra={"fields": {"connector_id": 2}})
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("failed")
        """
    )
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr:
        st = os.fstat(stderr.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", PYTHONPATH=str(REPO))
        env.pop("INVOCATION_ID", None)
        subprocess.run([sys.executable, "-c", child], stderr=stderr, env=env, check=True)
    lines = stderr_path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "<7>DEBUG chargerd.x: detail"  # no timestamp: journald adds it
    assert lines[1] == "<3>ERROR chargerd.x: boom 1 connector_id=2"
    assert lines[2] == "<3>ERROR chargerd.x: failed"
    assert all(line.startswith("<3>") for line in lines[3:])
    assert lines[-1] == "<3>ZeroDivisionError: division by zero"
