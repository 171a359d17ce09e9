"""An AuthorizationKey sent by the CSMS never reaches the frame log in clear."""

from __future__ import annotations

import json

from chargerd.link.framelog import FrameLog, hide_secrets

KEY = "00112233445566778899AABBCCDDEEFF"


def test_the_key_is_masked_in_either_field_order_and_any_case():
    call = json.dumps([2, "u1", "ChangeConfiguration", {"key": "AuthorizationKey", "value": KEY}])
    swapped = f'[2,"u2","ChangeConfiguration",{{"value":"{KEY}", "key":"authorizationkey"}}]'
    for frame in (call, swapped):
        shown = hide_secrets(frame)
        assert KEY not in shown and '"****"' in shown
        assert json.loads(shown)[3]["value"] == "****"


def test_other_keys_and_messages_are_untouched():
    other = json.dumps(
        [2, "u3", "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "60"}]
    )
    boot = json.dumps([2, "u4", "DataTransfer", {"vendorId": "x", "data": "AuthorizationKey"}])
    assert hide_secrets(other) == other and hide_secrets(boot) == boot


def test_the_frame_log_keeps_only_the_masked_frame():
    flog = FrameLog()
    flog.record(
        "in",
        json.dumps([2, "u5", "ChangeConfiguration", {"key": "AuthorizationKey", "value": KEY}]),
    )
    assert KEY not in json.dumps(flog.tail(10))
