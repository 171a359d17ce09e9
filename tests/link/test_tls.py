"""wss:// failures a technician must understand from one log line."""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings

import pytest
from websockets.asyncio.server import serve

from chargerd.bench.csms.certs import make_ca_and_server_cert


def _client_ctx(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # what the daemon uses
    return ctx


async def _wait_for_log(caplog, text: str, timeout: float = 5.0) -> str:
    async with asyncio.timeout(timeout):
        while True:
            for rec in caplog.records:
                if text in rec.getMessage():
                    return rec.getMessage()
            await asyncio.sleep(0.02)


async def test_a_server_below_tls_1_2_is_named_as_such(tmp_path, make_link, caplog):
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    old.load_cert_chain(str(cert), str(key))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            old.set_ciphers("ALL:@SECLEVEL=0")
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ssl.SSLError, ValueError):
            pytest.skip("this OpenSSL cannot serve TLS 1.1 at all")

    async def handler(ws):
        await ws.wait_closed()

    server = await serve(handler, "127.0.0.1", 0, ssl=old)
    port = server.sockets[0].getsockname()[1]
    caplog.set_level(logging.ERROR, logger="chargerd.link")
    try:
        make_link(f"wss://127.0.0.1:{port}/ocpp", ssl_context=_client_ctx(ca))
        line = await _wait_for_log(caplog, "cannot connect")
    finally:
        server.close()
    assert "TLS handshake refused" in line and "TLSv1.1 only" in line
    assert "requires TLS 1.2 or newer" in line
    assert "ConnectionResetError" not in line


async def test_a_reset_that_is_not_about_versions_still_says_tls(tmp_path, make_link, caplog):
    ca, _, _ = make_ca_and_server_cert(tmp_path)

    async def reset(reader, writer):
        await reader.read(1)  # the ClientHello begins: hang up on it
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    caplog.set_level(logging.ERROR, logger="chargerd.link")
    try:
        make_link(f"wss://127.0.0.1:{port}/ocpp", ssl_context=_client_ctx(ca))
        line = await _wait_for_log(caplog, "cannot connect")
    finally:
        server.close()
    assert f"TLS handshake with 127.0.0.1:{port} failed" in line
