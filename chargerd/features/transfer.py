"""File transfer for firmware downloads and log/diagnostics uploads: http://, https://, ftp://.

OCPP hands the station a URL (UpdateFirmware ``location``, GetDiagnostics / GetLog
``location``) and leaves the protocol to it.  The stdlib clients (urllib's
http.client, ftplib) do the work in a thread, so the event loop never blocks on a
slow server; every socket operation carries ``timeout`` and the whole transfer is
bounded by it too (a server that trickles bytes cannot hold a transfer forever).

API (stable, used by firmware.py and by the diagnostics / GetLog uploads):

- ``await download(url, dest_path, *, timeout, ssl_context=None) -> int``: the
  number of bytes written.  The file is written to ``dest_path + ".part"`` and
  renamed once complete, so ``dest_path`` never holds half a file; a body shorter
  than the server's Content-Length is an error, not a short firmware.
- ``await upload(url, src_path, *, timeout, ssl_context=None, method="POST")``:
  HTTP(S) POSTs ``multipart/form-data`` with the file in the field ``file`` (what
  most CSMS upload endpoints take), ``method="PUT"`` sends the raw body; FTP
  stores the file under the URL's path (a path ending in ``/`` gets the file's own
  name).
- Every failure raises ``TransferError`` with a one-line message that names the
  URL without its password.

User and password in the URL (``ftp://user:pass@host/dir/``, ``https://user:pass@...``)
are used to log in (FTP) or sent as HTTP Basic; without them FTP logs in as
anonymous.
"""

from __future__ import annotations

import asyncio
import base64
import ftplib
import http.client
import logging
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMES = ("http", "https", "ftp")
_CHUNK = 64 * 1024


class TransferError(Exception):
    """A download or upload failed; the message says why, in one line."""


def check_url(url: str) -> urllib.parse.SplitResult:
    """The parsed URL, or TransferError when its scheme or host is not usable."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise TransferError(f"bad URL {redact(url)!r}: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise TransferError(
            f"unsupported URL scheme {parts.scheme!r} in {redact(url)!r} "
            "(http, https and ftp are supported)"
        )
    if not parts.hostname:
        raise TransferError(f"no host in URL {redact(url)!r}")
    return parts


def redact(url: str) -> str:
    """``url`` with the password, if any, replaced by ``***`` (for logs and messages)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


async def download(
    url: str,
    dest_path: str | os.PathLike[str],
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Fetch ``url`` into ``dest_path`` (atomically); the number of bytes written."""
    parts = check_url(url)
    dest = Path(dest_path)
    return await asyncio.to_thread(_download, url, parts, dest, float(timeout), ssl_context)


async def upload(
    url: str,
    src_path: str | os.PathLike[str],
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    method: str = "POST",
) -> None:
    """Send the file ``src_path`` to ``url``."""
    parts = check_url(url)
    src = Path(src_path)
    if method not in ("POST", "PUT"):
        raise TransferError(f"unsupported upload method {method!r} (POST or PUT)")
    await asyncio.to_thread(_upload, url, parts, src, float(timeout), ssl_context, method)


# -- the blocking work, in a thread ------------------------------------------------------------


class _Deadline:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise TransferError(f"{redact(self.url)}: timed out after {self.timeout:g} s")


def _download(
    url: str,
    parts: urllib.parse.SplitResult,
    dest: Path,
    timeout: float,
    ctx: ssl.SSLContext | None,
) -> int:
    part = dest.with_name(dest.name + ".part")
    deadline = _Deadline(url, timeout)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "wb") as out:
            if parts.scheme.lower() == "ftp":
                written = _ftp_get(parts, out, timeout, deadline)
            else:
                written = _http_get(url, parts, out, timeout, ctx, deadline)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, dest)
    except TransferError:
        part.unlink(missing_ok=True)
        raise
    except Exception as exc:
        part.unlink(missing_ok=True)
        raise TransferError(f"download of {redact(url)} failed: {_why(exc)}") from None
    log.info("downloaded %s: %d bytes into %s", redact(url), written, dest)
    return written


def _upload(
    url: str,
    parts: urllib.parse.SplitResult,
    src: Path,
    timeout: float,
    ctx: ssl.SSLContext | None,
    method: str,
) -> None:
    deadline = _Deadline(url, timeout)
    if not src.is_file():
        raise TransferError(f"nothing to upload: {src} is not a file")
    try:
        if parts.scheme.lower() == "ftp":
            _ftp_put(parts, src, timeout, deadline)
        else:
            _http_put(url, parts, src, timeout, ctx, method)
    except TransferError:
        raise
    except Exception as exc:
        raise TransferError(f"upload to {redact(url)} failed: {_why(exc)}") from None
    log.info("uploaded %s (%d bytes) to %s", src.name, src.stat().st_size, redact(url))


def _why(exc: BaseException) -> str:
    """One line for a transfer failure."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return _why(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} bytes, {exc.expected} more expected"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {exc.verify_message}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ftplib.Error):
        return f"FTP {str(exc).strip()}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _request(url: str, parts: urllib.parse.SplitResult, **kwargs) -> urllib.request.Request:
    # urllib ignores user:password in the URL: strip it and send it as Basic.
    clean = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    req = urllib.request.Request(clean, **kwargs)
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    req.add_header("User-Agent", "chargerd")
    return req


def _opener(ctx: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    # No proxies from the environment: a charger talks to the URL it was given.
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )


def _http_get(url, parts, out, timeout, ctx, deadline: _Deadline) -> int:
    written = 0
    with _opener(ctx).open(_request(url, parts), timeout=timeout) as resp:
        expected = resp.headers.get("Content-Length")
        while True:
            deadline.check()
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            out.write(chunk)
            written += len(chunk)
    if expected is not None and expected.isdigit() and written != int(expected):
        raise TransferError(f"download of {redact(url)} failed: got {written} of {expected} bytes")
    return written


def _http_put(url, parts, src: Path, timeout, ctx, method: str) -> None:
    data = src.read_bytes()
    if method == "POST":
        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{src.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        body = head + data + f"\r\n--{boundary}--\r\n".encode()
        ctype = f"multipart/form-data; boundary={boundary}"
    else:
        body = data
        ctype = "application/octet-stream"
    req = _request(url, parts, data=body, method=method)
    req.add_header("Content-Type", ctype)
    with _opener(ctx).open(req, timeout=timeout) as resp:
        resp.read()


def _ftp_login(parts: urllib.parse.SplitResult, timeout: float) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=timeout)
    ftp.connect(parts.hostname or "", parts.port or 21)
    user = urllib.parse.unquote(parts.username) if parts.username else "anonymous"
    password = urllib.parse.unquote(parts.password) if parts.password else "anonymous@"
    ftp.login(user, password)
    return ftp


def _ftp_get(parts, out, timeout, deadline: _Deadline) -> int:
    path = urllib.parse.unquote(parts.path)
    if not path or path.endswith("/"):
        raise TransferError(f"no file name in ftp://{parts.hostname}{parts.path}")
    written = 0

    def sink(chunk: bytes) -> None:
        nonlocal written
        deadline.check()
        out.write(chunk)
        written += len(chunk)

    ftp = _ftp_login(parts, timeout)
    try:
        try:
            expected: int | None = ftp.size(path)
        except ftplib.Error:
            expected = None
        ftp.retrbinary(f"RETR {path}", sink, blocksize=_CHUNK)
    finally:
        _ftp_close(ftp)
    if expected is not None and written != expected:
        raise TransferError(f"FTP download of {path} failed: got {written} of {expected} bytes")
    return written


def _ftp_put(parts, src: Path, timeout, deadline: _Deadline) -> None:
    path = urllib.parse.unquote(parts.path) or "/"
    if path.endswith("/"):
        path += src.name

    def tick(_chunk: bytes) -> None:
        deadline.check()

    ftp = _ftp_login(parts, timeout)
    try:
        with open(src, "rb") as fh:
            ftp.storbinary(f"STOR {path}", fh, blocksize=_CHUNK, callback=tick)
    finally:
        _ftp_close(ftp)


def _ftp_close(ftp: ftplib.FTP) -> None:
    try:
        ftp.quit()
    except Exception:
        ftp.close()
