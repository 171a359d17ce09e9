"""[csms] tls_url: where a ws:// station goes once the CSMS raised it to TLS."""

from __future__ import annotations

import pytest

from chargerd.config import load_config
from tests.test_config import BENCH, error_of, write


def test_tls_url_is_optional_and_read(tmp_path):
    assert load_config(write(tmp_path, BENCH)).csms.tls_url is None
    text = BENCH.replace(
        'url = "ws://127.0.0.1:9000"',
        'url = "ws://127.0.0.1:9000"\ntls_url = "wss://csms.example.org:443/ocpp"',
    )
    assert load_config(write(tmp_path, text)).csms.tls_url == "wss://csms.example.org:443/ocpp"


@pytest.mark.parametrize("bad", ["ws://h/ocpp", "wss://", "wss://u:p@h/ocpp", "https://h/"])
def test_a_tls_url_that_is_not_wss_is_refused_with_its_key(tmp_path, bad):
    text = BENCH.replace(
        'url = "ws://127.0.0.1:9000"', f'url = "ws://127.0.0.1:9000"\ntls_url = "{bad}"'
    )
    err = error_of(write(tmp_path, text))
    assert err.key == "csms.tls_url" and "wss://" in str(err)
