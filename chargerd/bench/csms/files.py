"""The bench CSMS's file servers: HTTP(S) and FTP on 127.0.0.1, serving and receiving files.

What a CSMS operator has beside the CSMS: a place the station downloads firmware
from (UpdateFirmware ``location``) and one it uploads diagnostics and logs to
(GetDiagnostics / GetLog ``location``).  Both serve the files of ``root`` and
store what is uploaded in ``root/uploads/``.  They run in a thread each, so a
test or the bench CSMS starts them beside its event loop and stops them with
``close()`` (or as context managers).

HTTP: ``GET /name`` serves ``root/name``; ``POST`` (multipart/form-data, field
``file``) or ``PUT`` to any path stores the body under ``uploads/``.  Faults a test
sets: ``truncate_next(n)`` (the next GET sends the full Content-Length header but
only ``n`` bytes, then closes: a download interrupted midway), ``refuse_uploads``
(answers 403), ``served`` (paths asked for, in order) and ``uploads`` (names received).

FTP (pyftpdlib): user ``user`` / password ``password`` (or anonymous, read only) with read
access to ``root`` and write access to ``root/uploads``.
"""

from __future__ import annotations

import email.parser
import email.policy
import http.server
import logging
import ssl
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FTP_USER = "user"
FTP_PASSWORD = "password"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)

    def _file(self) -> Path | None:
        name = self.path.split("?", 1)[0].lstrip("/")
        target = (self.server.root / name).resolve()
        if self.server.root.resolve() not in target.parents or not target.is_file():
            return None
        return target

    def do_GET(self) -> None:
        target = self._file()
        owner = self.server.owner
        with owner.lock:
            owner.served.append(self.path)
        if target is None:
            self.send_error(404, "no such file")
            return
        data = target.read_bytes()
        with owner.lock:
            cut = owner.truncate_at
            owner.truncate_at = None
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if cut is not None:
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)

    def _receive(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if owner.refuse_uploads:
            self.send_error(403, "uploads refused")
            return
        name = self.path.rstrip("/").rsplit("/", 1)[-1] or "upload.bin"
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode() + body
            )
            for part in msg.iter_parts():
                if part.get_param("name", header="content-disposition") == "file":
                    name = part.get_filename() or name
                    body = part.get_payload(decode=True) or b""
                    break
        name = Path(name).name or "upload.bin"
        uploads = self.server.root / "uploads"
        uploads.mkdir(exist_ok=True)
        (uploads / name).write_bytes(body)
        with owner.lock:
            owner.uploads.append(name)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = _receive
    do_PUT = _receive


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    owner: HttpFileServer


class HttpFileServer:
    """An HTTP (or, with ``ssl_context``, HTTPS) file server on 127.0.0.1."""

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.served: list[str] = []
        self.uploads: list[str] = []
        self.truncate_at: int | None = None
        self.refuse_uploads = False
        self._server = _HttpServer((host, port), _Handler)
        self._server.root = self.root
        self._server.owner = self
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https" if ssl_context is not None else "http"
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="bench-http", daemon=True
        )
        self._thread.start()

    def url(self, name: str = "") -> str:
        return f"{self.scheme}://{self.host}:{self.port}/{name}"

    def truncate_next(self, n: int) -> None:
        """The next GET announces the whole file but sends only ``n`` bytes."""
        with self.lock:
            self.truncate_at = n

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HttpFileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FtpFileServer:
    """A pyftpdlib FTP server on 127.0.0.1: ``root`` readable, ``root/uploads`` writable."""

    def __init__(self, root: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            from pyftpdlib.authorizers import DummyAuthorizer
            from pyftpdlib.handlers import FTPHandler
            from pyftpdlib.servers import ThreadedFTPServer
        except ImportError as exc:  # the dev extra brings it
            raise RuntimeError("the bench FTP server needs pyftpdlib (the dev extra)") from exc
        self.root = Path(root)
        (self.root / "uploads").mkdir(parents=True, exist_ok=True)
        auth = DummyAuthorizer()
        auth.add_user(FTP_USER, FTP_PASSWORD, str(self.root), perm="elr")
        auth.override_perm(FTP_USER, str(self.root / "uploads"), perm="elradfmw", recursive=True)
        auth.add_anonymous(str(self.root), perm="elr")
        handler = type("BenchFtpHandler", (FTPHandler,), {})
        handler.authorizer = auth
        handler.passive_ports = None
        handler.banner = "chargerd bench FTP"
        self._server = ThreadedFTPServer((host, port), handler)
        self.host = host
        self.port = self._server.address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"timeout": 0.2, "blocking": True, "handle_exit": False},
            name="bench-ftp",
            daemon=True,
        )
        self._thread.start()

    def url(self, name: str = "", *, login: bool = True) -> str:
        cred = f"{FTP_USER}:{FTP_PASSWORD}@" if login else ""
        return f"ftp://{cred}{self.host}:{self.port}/{name}"

    def close(self) -> None:
        self._server.close_all()
        self._thread.join(timeout=5)

    def __enter__(self) -> FtpFileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_file_servers(
    root: Path | None, host: str, http_port: int, ftp_port: int
) -> list[HttpFileServer | FtpFileServer]:
    """The bench CSMS's ``--files DIR``: HTTP and FTP servers on DIR (none without it)."""
    if root is None:
        return []
    servers: list[HttpFileServer | FtpFileServer] = [
        HttpFileServer(root, host=host, port=http_port)
    ]
    try:
        servers.append(FtpFileServer(root, host=host, port=ftp_port))
    except RuntimeError as exc:
        log.warning("no FTP server: %s", exc)
    for server in servers:
        log.info("serving %s at %s (uploads into %s/uploads)", root, server.url(), root)
    return servers
