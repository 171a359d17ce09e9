"""idTags are personal data: masking them in logs and in the frame log.

An idTag names a person's card.  With ``[logging] redact_id_tags = true`` the
daemon's logs (journal, file) and its frame log (``chargerctl log``) show
``****BEEF`` instead: the last four characters, enough for a technician to
match a complaint to a session, not enough to clone or track a card.

Log lines name idTags in many ways (``"card %s presented"``, a payload dict,
a field ``id_tag=...``), so rather than trusting every call site the
:class:`Redactor` *learns* the idTags the station meets -- every ``idTag`` /
``parentIdTag`` of a frame and every ``id_tag`` log field -- and masks each
known one wherever it appears.  The known set is bounded (least recently seen
forgotten first).  A tag the station has not met in this run (one only in the
database from an earlier run) is masked only where it sits in a payload or a
field, not as a bare word: the README says so.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

#: Payload and field names whose value is an idTag (wire camelCase, our snake_case, and
#: a card's UID, which becomes its idTag).
ID_TAG_KEYS = ("idTag", "parentIdTag", "id_tag", "parent_id_tag", "uid")
_KEYED = re.compile(
    r"""(?P<head>(?P<q>["'])(?:idTag|parentIdTag|id_tag|parent_id_tag|uid)(?P=q)\s*:\s*(?P<vq>["']))"""
    r"""(?P<tag>[^"']*)(?P=vq)"""
)
_SHOWN = 4


def mask(id_tag: str) -> str:
    """``04A2B3C4`` -> ``****B3C4``; four characters or fewer are masked whole."""
    text = str(id_tag)
    return "****" + (text[-_SHOWN:] if len(text) > _SHOWN else "")


class Redactor:
    """Learns the idTags the station meets and masks them in any text."""

    def __init__(self, *, capacity: int = 2000) -> None:
        self._known: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._pattern: re.Pattern[str] | None = None

    def learn(self, id_tag: Any) -> None:
        if not isinstance(id_tag, str) or not id_tag:
            return
        if id_tag in self._known:
            self._known.move_to_end(id_tag)
            return
        self._known[id_tag] = None
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)
        self._pattern = None

    def _bare(self) -> re.Pattern[str] | None:
        if self._pattern is None and self._known:
            # Longest first, so that a tag that contains another is masked whole.
            alternatives = "|".join(
                re.escape(t) for t in sorted(self._known, key=len, reverse=True)
            )
            self._pattern = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")
        return self._pattern

    def redact(self, text: str) -> str:
        """``text`` with every idTag in a payload or field masked, and every known one."""

        def keyed(m: re.Match[str]) -> str:
            self.learn(m.group("tag"))
            return f"{m.group('head')}{mask(m.group('tag'))}{m.group('vq')}"

        text = _KEYED.sub(keyed, text)
        bare = self._bare()
        if bare is None:
            return text
        masked = bare.sub(lambda m: mask(m.group(0)), text)
        return masked

    def redact_fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(fields)
        for key in ID_TAG_KEYS:
            value = out.get(key)
            if isinstance(value, str) and value:
                self.learn(value)
                out[key] = mask(value)
        return out


class RedactFilter(logging.Filter):
    """A handler filter: the record's message, fields and traceback with idTags masked.

    The record is rewritten in place (message formatted, args dropped), so
    every handler after this one sees the masked text; never drops a record.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_chargerd_redacted", False):
            return True
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            record.fields = self.redactor.redact_fields(fields)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the formatter's error path
            return True
        record.msg, record.args = self.redactor.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        record._chargerd_redacted = True
        return True
