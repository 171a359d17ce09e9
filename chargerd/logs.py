"""Logging set-up: journald with structured fields on a charger, text on a bench.

Modules log with ``logging.getLogger(__name__)`` and lazy ``%s`` arguments;
facts worth filtering on go in ``extra={"fields": {...}}``::

    log.info("Transaction %d started", tx_id,
             extra={"fields": {"connector_id": 1, "id_tag": "04A1B2"}})

On a bench this prints ``... INFO chargerd.tx: Transaction 7 started
connector_id=1 id_tag=04A1B2``; under systemd the same fields also become
journal fields (``CONNECTOR_ID=1``), so ``journalctl CONNECTOR_ID=1`` finds
every line about connector 1.  This is done by a Formatter and a Filter on the
handlers, not a logger wrapper, so third-party loggers keep working as usual.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chargerd.clock import iso
from chargerd.privacy import RedactFilter, Redactor

_MARK = "_chargerd_handler"  # set on the handlers we install, so a second call replaces them
# Keys python-systemd's JournalHandler sets itself; a field of the same name is renamed.
_JOURNAL_RESERVED = frozenset(
    {
        "MESSAGE",
        "MESSAGE_ID",
        "PRIORITY",
        "LOGGER",
        "THREAD_NAME",
        "PROCESS_NAME",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
        "CODE_ARGS",
        "EXCEPTION_TEXT",
        "EXCEPTION_INFO",
        "SYSLOG_IDENTIFIER",
    }
)


def syslog_priority(levelno: int) -> int:
    """Python level -> syslog priority (crit 2, err 3, warning 4, info 6, debug 7)."""
    for threshold, priority in (
        (logging.CRITICAL, 2),
        (logging.ERROR, 3),
        (logging.WARNING, 4),
        (logging.INFO, 6),
    ):
        if levelno >= threshold:
            return priority
    return 7


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text == "" or re.search(r'[\s"=]', text):
        return json.dumps(text, ensure_ascii=False)
    return text


def format_fields(fields: Mapping[str, Any]) -> str:
    """``key=value key2="with space"``: one line, greppable, unambiguous."""
    return " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())


def journal_field_name(key: str) -> str:
    """A journald field name: upper case, [A-Z0-9_], not starting with _ or a digit."""
    name = re.sub(r"[^A-Z0-9_]", "_", str(key).upper()).lstrip("_")
    if not name or name[0].isdigit() or name in _JOURNAL_RESERVED:
        name = "FIELD_" + name
    return name[:64]


class TextFormatter(logging.Formatter):
    """``2026-11-25T10:00:00.123Z INFO chargerd.link: message key=value``.

    UTC with milliseconds, like the OCPP timestamps, so a log line and a CSMS
    trace line can be matched by eye.  ``timestamps=False`` for journald,
    which stamps lines itself.
    """

    def __init__(self, *, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso(datetime.fromtimestamp(record.created, UTC))

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        text = f"{record.levelname} {record.name}: {record.message}"
        if self.timestamps:
            text = f"{self.formatTime(record)} {text}"
        fields = _fields(record)
        if fields:
            text += " " + format_fields(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


class SyslogPrefixFormatter(TextFormatter):
    """Text for stderr connected to journald: every line starts ``<priority>``.

    journald reads the prefix as the entry's priority (``SyslogLevelPrefix=``),
    so ``journalctl -p err`` works even without systemd-python.
    """

    def __init__(self) -> None:
        super().__init__(timestamps=False)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


class JournalFieldsFilter(logging.Filter):
    """Copies ``extra={"fields": ...}`` onto the record as upper-case attributes.

    python-systemd's JournalHandler sends every record attribute as a journal
    field; journald keeps only upper-case names, so ``connector_id`` becomes
    ``CONNECTOR_ID``.  Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _fields(record).items():
            setattr(record, journal_field_name(key), str(value))
        return True


def journal_stream_is_stderr() -> bool:
    """True when stderr is the journal stream systemd connected (JOURNAL_STREAM=dev:ino)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in expected.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _journal_handler() -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler  # type: ignore[import-not-found]
    except ImportError:
        return None
    handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="chargerd")
    return handler


def setup_logging(
    level: str, *, log_file: Path | None = None, redactor: Redactor | None = None
) -> None:
    """Install the daemon's handlers on the root logger (again: replaces ours).

    Under systemd (stderr is the journal, or INVOCATION_ID is set) the journal
    gets structured fields through systemd-python if installed, else prefixed
    text on stderr.  ``log_file`` adds a plain-text file, for a bench.
    ``redactor`` masks idTags in every record (``[logging] redact_id_tags``),
    before the journal fields are copied.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()

    handlers: list[logging.Handler] = []
    to_journal = journal_stream_is_stderr()
    journal = _journal_handler() if to_journal or os.environ.get("INVOCATION_ID") else None
    if journal is not None:
        journal.setFormatter(TextFormatter(timestamps=False))
        handlers.append(journal)
    else:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(SyslogPrefixFormatter() if to_journal else TextFormatter())
        handlers.append(stream)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # Watched: reopens the file after logrotate moved it.
        file_handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(TextFormatter())
        handlers.append(file_handler)

    for handler in handlers:
        if redactor is not None:
            handler.addFilter(RedactFilter(redactor))
        handler.addFilter(JournalFieldsFilter())
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)
