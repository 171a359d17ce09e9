"""[logging] redact_id_tags: idTags masked in log records and in the frame log."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from chargerd.link.framelog import FrameLog
from chargerd.logs import JournalFieldsFilter, TextFormatter, setup_logging
from chargerd.privacy import RedactFilter, Redactor, mask


@pytest.mark.parametrize(
    ("tag", "shown"),
    [("DEADBEEF", "****BEEF"), ("TOKEN-0001", "****0001"), ("ABCD", "****"), ("", "****")],
)
def test_mask_keeps_the_last_four_characters(tag, shown):
    assert mask(tag) == shown


def test_frames_are_masked_and_their_tags_learned():
    r = Redactor()
    frame = json.dumps([2, "1", "StartTransaction", {"connectorId": 1, "idTag": "USER_42xyz"}])
    assert r.redact(frame) == frame.replace("USER_42xyz", "****2xyz")
    answer = '[3,"1",{"idTagInfo":{"status":"Accepted","parentIdTag":"FLEET-7"}}]'
    assert (
        r.redact(answer) == '[3,"1",{"idTagInfo":{"status":"Accepted","parentIdTag":"****ET-7"}}]'
    )
    # Learned: a log line naming it bare is masked too, as a whole word only.
    assert r.redact("card USER_42xyz refused; USER_42xyzz is another") == (
        "card ****2xyz refused; USER_42xyzz is another"
    )
    assert r.redact("parent FLEET-7.") == "parent ****ET-7."


def test_the_known_set_is_bounded():
    r = Redactor(capacity=2)
    for tag in ("AAAA1111", "BBBB2222", "CCCC3333"):
        r.learn(tag)
    assert r.redact("AAAA1111 BBBB2222 CCCC3333") == "AAAA1111 ****2222 ****3333"


def record(msg, *args, fields=None, exc_info=None) -> logging.LogRecord:
    rec = logging.LogRecord("chargerd.test", logging.INFO, __file__, 1, msg, args, exc_info)
    if fields is not None:
        rec.fields = fields
    return rec


def test_the_filter_masks_message_fields_journal_fields_and_tracebacks():
    redactor = Redactor()
    rec = record("card %s presented", "04A2B3C4D5", fields={"id_tag": "04A2B3C4D5", "n": 1})
    assert RedactFilter(redactor).filter(rec) and JournalFieldsFilter().filter(rec)
    assert rec.getMessage() == "card ****C4D5 presented"
    assert rec.fields == {"id_tag": "****C4D5", "n": 1}
    assert rec.ID_TAG == "****C4D5"  # what journald stores
    try:
        raise ValueError("no transaction for 04A2B3C4D5")
    except ValueError:
        failing = record("caching the answer for %s failed", "04A2B3C4D5", exc_info=sys.exc_info())
    RedactFilter(redactor).filter(failing)
    text = TextFormatter().format(failing)
    assert "04A2B3C4D5" not in text
    assert "no transaction for ****C4D5" in text


def test_setup_logging_with_a_redactor_masks_the_log_file(tmp_path):
    log_file = tmp_path / "chargerd.log"
    root = logging.getLogger()
    level = root.level
    setup_logging("INFO", log_file=log_file, redactor=Redactor())
    try:
        log = logging.getLogger("chargerd.features.cards")
        log.info("card %s presented", "DEADBEEF", extra={"fields": {"id_tag": "DEADBEEF"}})
        log.info("idTag %s: Accepted (CSMS)", "DEADBEEF")
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_chargerd_handler", False)]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    text = log_file.read_text()
    assert "card ****BEEF presented id_tag=****BEEF" in text
    assert "idTag ****BEEF: Accepted (CSMS)" in text
    assert "DEADBEEF" not in text


async def test_the_frame_log_keeps_and_streams_masked_frames():
    frames = FrameLog(redactor=Redactor())
    follow = frames.subscribe()
    frames.record("in", '[2,"9","RemoteStartTransaction",{"idTag":"TOKEN-0001"}]')
    (kept,) = frames.tail(5)
    assert kept["frame"] == '[2,"9","RemoteStartTransaction",{"idTag":"****0001"}]'
    assert (await anext(follow))["frame"] == kept["frame"]
    plain = FrameLog()
    plain.record("in", '[2,"9","RemoteStartTransaction",{"idTag":"TOKEN-0001"}]')
    assert "TOKEN-0001" in plain.tail(1)[0]["frame"]
