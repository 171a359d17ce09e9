"""Card UIDs and idTags: how a UID read by the reader becomes the idTag sent to the CSMS.

OCPP carries an idTag as a CiString20 and says nothing of how a card's UID
maps to it; operators' back ends differ.  ``[hardware.reader] id_tag_format``
picks one, e.g. for the 4-byte UID 04 A2 B3 C4:

============== ================ ===============================================
format         idTag            used by
============== ================ ===============================================
hex (default)  ``04A2B3C4``     most back ends: the bytes as read, upper case
hex_reversed   ``C4B3A204``     readers that report the UID little-endian
decimal        ``77771716``     the UID as one big-endian number (printed cards)
============== ================ ===============================================

The bench's simulated reader also takes any printable idTag of up to 20
characters (``TOKEN-0001``, ``USER_42``) as CSMS teams' test tools use them.
"""

from __future__ import annotations

import re

ID_TAG_FORMATS = ("hex", "hex_reversed", "decimal")
DEFAULT_FORMAT = "hex"
MAX_ID_TAG = 20  # CiString20
UID_BYTES = (4, 7, 10)  # ISO 14443 single, double and triple size UIDs

_HEX = re.compile(r"[0-9A-Fa-f]+")


def uid_to_id_tag(uid: bytes | str, fmt: str = DEFAULT_FORMAT) -> str:
    """The idTag of a UID (bytes, or hex as the reader reports it) in format ``fmt``.

    A decimal idTag longer than 20 digits (a 10-byte UID can reach 25) cannot be
    a CiString20: ValueError, so that the caller reports the card instead of
    sending a tag the CSMS would refuse as a FormationViolation.
    """
    if isinstance(uid, str):
        if not _HEX.fullmatch(uid) or len(uid) % 2:
            raise ValueError(f"a UID is an even number of hex digits, got {uid!r}")
        data = bytes.fromhex(uid)
    else:
        data = bytes(uid)
    if not data:
        raise ValueError("an empty UID")
    if fmt == "hex":
        tag = data.hex().upper()
    elif fmt == "hex_reversed":
        tag = data[::-1].hex().upper()
    elif fmt == "decimal":
        tag = str(int.from_bytes(data, "big"))
    else:
        raise ValueError(f"id_tag_format must be one of {', '.join(ID_TAG_FORMATS)}, got {fmt!r}")
    if len(tag) > MAX_ID_TAG:
        raise ValueError(f"UID {data.hex().upper()} as {fmt} is {len(tag)} characters (> 20)")
    return tag


def normalize_presented(text: str) -> str:
    """What the bench's card control accepts: a hex UID (upper-cased), or any idTag.

    Hex UIDs of 4, 7 or 10 bytes are upper-cased as a reader reports them; any
    other printable ASCII text of 1 to 20 characters is an idTag kept as given.
    """
    if not isinstance(text, str):
        raise ValueError(f"an idTag is text, got {text!r}")
    tag = text.strip()
    if _HEX.fullmatch(tag) and len(tag) in tuple(2 * n for n in UID_BYTES):
        return tag.upper()
    if not tag or len(tag) > MAX_ID_TAG or not (tag.isascii() and tag.isprintable()):
        raise ValueError(
            f"an idTag is 1 to {MAX_ID_TAG} printable ASCII characters "
            f"(or a hex UID of 4, 7 or 10 bytes), got {text!r}"
        )
    return tag
