"""UID -> idTag conversion ([hardware.reader] id_tag_format) and the bench's idTags."""

from __future__ import annotations

import pytest

from hal.idtag import normalize_presented, uid_to_id_tag


@pytest.mark.parametrize(
    "uid, fmt, tag",
    [
        ("04A2B3C4", "hex", "04A2B3C4"),  # the README / etc example
        ("04A2B3C4", "hex_reversed", "C4B3A204"),
        ("04A2B3C4", "decimal", "77771716"),
        (bytes.fromhex("04a2b3c4"), "hex", "04A2B3C4"),
        ("deadbeef", "hex", "DEADBEEF"),
        ("000000FF", "decimal", "255"),  # leading zero bytes do not pad a number
        ("04A1B2C3D4E5F6", "hex_reversed", "F6E5D4C3B2A104"),
        ("0811223344556677889A", "hex", "0811223344556677889A"),  # 10 bytes: 20 hex digits
    ],
)
def test_uid_to_id_tag(uid, fmt, tag):
    assert uid_to_id_tag(uid, fmt) == tag


def test_a_tag_that_would_not_fit_a_cistring20_is_refused():
    with pytest.raises(ValueError, match="> 20"):
        uid_to_id_tag("FF112233445566778899", "decimal")  # 10 bytes: 25 digits
    with pytest.raises(ValueError, match="id_tag_format"):
        uid_to_id_tag("DEADBEEF", "octal")
    with pytest.raises(ValueError, match="hex digits"):
        uid_to_id_tag("XYZ", "hex")


@pytest.mark.parametrize(
    "given, tag",
    [
        ("deadbeef", "DEADBEEF"),  # a hex UID as a reader reports it
        ("04a1b2c3d4e5f6", "04A1B2C3D4E5F6"),
        ("TOKEN-0001", "TOKEN-0001"),
        ("USER_42", "USER_42"),
        ("abc", "abc"),  # not a UID length: an idTag as given, case kept
        ("x" * 20, "x" * 20),
        (" padded ", "padded"),
    ],
)
def test_the_bench_takes_any_printable_id_tag(given, tag):
    assert normalize_presented(given) == tag


@pytest.mark.parametrize("bad", ["", "   ", "x" * 21, "tab\there", "é-accent", "new\nline"])
def test_what_is_not_an_id_tag_is_refused_with_the_rule(bad):
    with pytest.raises(ValueError, match="1 to 20 printable ASCII"):
        normalize_presented(bad)
