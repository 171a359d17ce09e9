"""transfer.py against real servers on 127.0.0.1: HTTP, HTTPS (test CA), FTP (pyftpdlib)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from chargerd.bench.csms.certs import make_ca_and_server_cert
from chargerd.bench.csms.files import FtpFileServer, HttpFileServer
from chargerd.features import transfer
from chargerd.features.transfer import TransferError

PAYLOAD = bytes(range(256)) * 1000  # 256 kB: several chunks


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "srv"
    r.mkdir()
    (r / "fw.bin").write_bytes(PAYLOAD)
    return r


@pytest.fixture
def http(root: Path):
    with HttpFileServer(root) as srv:
        yield srv


@pytest.fixture
def ftp(root: Path):
    with FtpFileServer(root) as srv:
        yield srv


async def test_http_download(http: HttpFileServer, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "fw.bin"
    n = await transfer.download(http.url("fw.bin"), dest, timeout=10)
    assert n == len(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD


async def test_http_truncated_download_is_an_error_and_leaves_no_file(
    http: HttpFileServer, tmp_path: Path
) -> None:
    http.truncate_next(1000)
    dest = tmp_path / "fw.bin"
    with pytest.raises(TransferError, match="1000"):
        await transfer.download(http.url("fw.bin"), dest, timeout=10)
    assert not dest.exists()
    assert not (tmp_path / "fw.bin.part").exists()
    # the retry gets the whole file
    assert await transfer.download(http.url("fw.bin"), dest, timeout=10) == len(PAYLOAD)


async def test_http_404(http: HttpFileServer, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="HTTP 404"):
        await transfer.download(http.url("nope.bin"), tmp_path / "x", timeout=10)


async def test_connection_refused(tmp_path: Path, http: HttpFileServer) -> None:
    port = http.port
    http.close()
    with pytest.raises(TransferError, match="refused"):
        await transfer.download(f"http://127.0.0.1:{port}/fw.bin", tmp_path / "x", timeout=5)


async def test_bad_scheme_and_redacted_password(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="unsupported URL scheme") as err:
        await transfer.download("sftp://u:secret@127.0.0.1/x", tmp_path / "x", timeout=1)
    assert "secret" not in str(err.value)


async def test_https_download_with_test_ca(root: Path, tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    with HttpFileServer(root, ssl_context=server_ctx) as srv:
        client = ssl.create_default_context(cafile=str(ca))
        dest = tmp_path / "fw.bin"
        await transfer.download(srv.url("fw.bin"), dest, timeout=10, ssl_context=client)
        assert dest.read_bytes() == PAYLOAD
        # an unknown CA is refused with a clear message
        with pytest.raises(TransferError, match="certificate"):
            await transfer.download(
                srv.url("fw.bin"),
                tmp_path / "y",
                timeout=10,
                ssl_context=ssl.create_default_context(),
            )


async def test_http_upload_post_and_put(http: HttpFileServer, root: Path, tmp_path: Path) -> None:
    src = tmp_path / "diag.zip"
    src.write_bytes(b"diagnostics" * 100)
    await transfer.upload(http.url("upload/"), src, timeout=10)
    assert (root / "uploads" / "diag.zip").read_bytes() == src.read_bytes()
    await transfer.upload(http.url("put.zip"), src, timeout=10, method="PUT")
    assert (root / "uploads" / "put.zip").read_bytes() == src.read_bytes()


async def test_http_upload_refused(http: HttpFileServer, tmp_path: Path) -> None:
    http.refuse_uploads = True
    src = tmp_path / "diag.zip"
    src.write_bytes(b"x")
    with pytest.raises(TransferError, match="HTTP 403"):
        await transfer.upload(http.url("upload/"), src, timeout=10)


async def test_ftp_download_and_upload(ftp: FtpFileServer, root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "fw.bin"
    assert await transfer.download(ftp.url("fw.bin"), dest, timeout=10) == len(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD
    anon = tmp_path / "anon.bin"
    await transfer.download(ftp.url("fw.bin", login=False), anon, timeout=10)
    assert anon.read_bytes() == PAYLOAD
    src = tmp_path / "log.txt"
    src.write_bytes(b"security log\n" * 50)
    await transfer.upload(ftp.url("uploads/"), src, timeout=10)
    assert (root / "uploads" / "log.txt").read_bytes() == src.read_bytes()


async def test_ftp_errors(ftp: FtpFileServer, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="FTP 550"):
        await transfer.download(ftp.url("missing.bin"), tmp_path / "x", timeout=10)
    src = tmp_path / "log.txt"
    src.write_bytes(b"x")
    with pytest.raises(TransferError, match="FTP 5"):  # no write permission outside uploads/
        await transfer.upload(ftp.url("log.txt"), src, timeout=10)
    bad = ftp.url("fw.bin").replace("password", "wrong")
    with pytest.raises(TransferError, match="FTP 530") as err:
        await transfer.download(bad, tmp_path / "x", timeout=10)
    assert "wrong" not in str(err.value)


async def test_bench_csms_file_servers(root: Path, tmp_path: Path) -> None:
    from chargerd.bench.csms.files import start_file_servers

    assert start_file_servers(None, "127.0.0.1", 0, 0) == []
    servers = start_file_servers(root, "127.0.0.1", 0, 0)
    try:
        assert {s.url().split(":")[0] for s in servers} == {"http", "ftp"}
        for i, srv in enumerate(servers):
            dest = tmp_path / f"got{i}"
            await transfer.download(srv.url("fw.bin"), dest, timeout=10)
            assert dest.read_bytes() == PAYLOAD
    finally:
        for srv in servers:
            srv.close()
