"""A read-only HTTP server for a store directory (`tessera serve`).

`serve_store(root)` (background thread, for tests and notebooks) and `run_server(root, host,
port)` (blocking, for `tessera serve`) answer GET and HEAD for the files of the directory, with
single byte ranges (206 / 416), Content-Length, ETag, Last-Modified, If-None-Match and If-Range.
They list no directories, refuse paths that leave the root (403, symlinks included) and hide
dot-files (the writer's lock and temporary files), so any HTTP client, GDAL's /vsicurl/
included, can read a store as it is written.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import mimetypes
import os
import re
import socket
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

from tessera.errors import StoreError

CHUNK = 1 << 20  # bytes per read / write
LISTEN_BACKLOG = 1024  # connections the kernel queues while every thread is busy
MAX_THREADS = 128      # connections served at once
IDLE_TIMEOUT_S = 30    # an idle keep-alive connection is closed after this
_CONTENT_TYPES = {".parquet": "application/vnd.apache.parquet", ".npy": "application/octet-stream",
                  ".tif": "image/tiff", ".tiff": "image/tiff", ".json": "application/json"}


@dataclasses.dataclass(frozen=True)
class RequestLog:
    """One answered request, handed to the server's `log` callback (never printed by us)."""

    client: str
    method: str
    path: str
    status: int
    range: str | None  # the Range header as sent
    nbytes: int  # body bytes promised by Content-Length (0 for HEAD and errors without body)

    def __str__(self) -> str:
        rng = f" [{self.range}]" if self.range else ""
        return f'{self.client} "{self.method} {self.path}"{rng} {self.status} {self.nbytes}'


class RangeNotSatisfiable(ValueError):
    """A Range that starts past the end of the file (answered 416)."""


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


_HUGE = 10 ** 18  # beyond any file: what a position of more digits than that means


def _number(digits: str) -> int:
    """A byte position of a Range header; absurdly long ones (Python refuses to parse more than
    4300 digits) are simply beyond any file."""
    return int(digits) if len(digits) <= 18 else _HUGE


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte of a single-range `Range` header, or None to send the
    whole file (no header, several ranges, or a malformed one: RFC 9110 lets a server ignore
    those). Raises RangeNotSatisfiable for a range past the end (answered 416)."""
    m = _RANGE.match(header or "")
    if m is None or not (m.group(1) or m.group(2)):
        return None
    a, b = m.groups()
    if a:
        start = _number(a)
        if b and _number(b) < start:
            return None  # invalid spec: ignore the header
        if start >= size:
            raise RangeNotSatisfiable
        return start, min(_number(b), size - 1) if b else size - 1
    n = _number(b)  # suffix range: the last n bytes
    if n == 0 or size == 0:
        raise RangeNotSatisfiable
    return max(size - n, 0), size - 1


class StoreRequestHandler(BaseHTTPRequestHandler):
    """Read-only GET/HEAD of the files under the server's root. Subclass and override
    `send_body` or `do_GET` to inject faults in tests."""

    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections across tiles
    server_version = "tessera-store/1"
    disable_nagle_algorithm = True  # headers and body written apart would wait on delayed ACKs
    timeout = IDLE_TIMEOUT_S  # seconds an idle keep-alive connection is kept
    server: _StoreHTTPServer

    # --- logging: through the server's callback only ------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def _record(self, method: str, status: int, nbytes: int) -> None:
        if self.server.log is not None:
            self.server.log(RequestLog(self.client_address[0], method, self.path, status,
                                       self.headers.get("Range"), nbytes))

    def end_headers(self) -> None:
        if self.server.busy and not self.close_connection:
            # others are waiting for a thread: this connection lets go of its thread after this
            # response, and says so in it (a keep-alive connection closed without
            # `Connection: close` loses the client's next request)
            self.send_header("Connection", "close")
        super().end_headers()

    # --- methods -----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self.serve_file(head=False)

    def do_HEAD(self) -> None:
        self.serve_file(head=True)

    def _not_allowed(self) -> None:
        self.close_connection = True  # its request body is unread
        self.send_text(405, "read-only store: only GET and HEAD",
                       {"Allow": "GET, HEAD", "Connection": "close"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    # --- responses ---------------------------------------------------------------------------
    def send_text(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        """A short text/plain answer (errors), with Content-Length so keep-alive continues."""
        body = (text + "\n").encode()
        head = self.command == "HEAD"
        self._record(self.command, status, 0 if head else len(body))  # before the client sees it
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def resolve(self) -> Path | int:
        """The file a request names, or the status that refuses it: 403 for paths that leave the
        root (`..`, symlinks pointing out), 404 for missing files, directories and dot-files."""
        raw = self.path
        if raw.startswith(("http://", "https://")):  # absolute-form request target
            raw = urllib.parse.urlsplit(raw).path
        raw = raw.split("?", 1)[0].split("#", 1)[0]
        path = urllib.parse.unquote(raw, errors="strict") if "%" in raw else raw
        if "\x00" in path or "\\" in path:
            return 404
        parts = [p for p in path.split("/") if p]
        if ".." in parts:
            return 403
        if not parts or any(p.startswith(".") for p in parts):
            return 404
        root = self.server.root
        full = os.path.realpath(os.path.join(root, *parts))
        if not full.startswith(str(root) + os.sep):
            return 403
        return Path(full) if os.path.isfile(full) else 404

    def serve_file(self, head: bool) -> None:
        try:
            target = self.resolve()
        except UnicodeDecodeError:
            target = 404
        if isinstance(target, int):
            self.send_text(target, "forbidden: outside the store" if target == 403
                           else f"not found: {self.path}")
            return
        try:
            f = open(target, "rb")  # noqa: SIM115 - closed below, after streaming
        except OSError:
            self.send_text(404, f"not found: {self.path}")
            return
        with f:
            st = os.fstat(f.fileno())
            size = st.st_size
            etag = (f'"{self.server.md5_of(target, st)}"' if self.server.md5_etags
                    else f'"{size:x}-{st.st_mtime_ns:x}"')
            modified = email.utils.formatdate(st.st_mtime, usegmt=True)
            common = {"ETag": etag, "Last-Modified": modified, "Accept-Ranges": "bytes"}
            inm = self.headers.get("If-None-Match")
            if inm and (inm.strip() == "*" or etag in (t.strip() for t in inm.split(","))):
                self._record(self.command, 304, 0)
                self._headers(304, {**common, "Content-Length": str(size)})
                return
            rng = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if rng and if_range and if_range.strip() not in (etag, modified):
                rng = None  # the client's partial copy is of another version: send it all
            try:
                span = byte_range(rng, size)
            except RangeNotSatisfiable:
                self._record(self.command, 416, 0)
                self._headers(416, {**common, "Content-Range": f"bytes */{size}",
                                    "Content-Length": "0"})
                return
            start, end = span if span is not None else (0, size - 1)
            length = end - start + 1
            headers = {**common, "Content-Type": _content_type(target),
                       "Content-Length": str(length)}
            if span is not None:
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            status = 206 if span is not None else 200
            self._record(self.command, status, 0 if head else length)
            self._headers(status, headers)
            if not head and length > 0:
                try:
                    self.send_body(f, start, length)
                except (ConnectionError, TimeoutError, socket.timeout):
                    self.close_connection = True  # the client went away mid-body

    def _headers(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def send_body(self, f: BinaryIO, start: int, length: int) -> None:
        """Copy `length` bytes of `f` from `start` to the client, CHUNK at a time."""
        f.seek(start)
        while length > 0:
            block = f.read(min(CHUNK, length))
            if not block:  # the file shrank while we sent it: the client sees a short body
                self.close_connection = True
                return
            self.wfile.write(block)
            length -= len(block)


def _content_type(path: Path) -> str:
    return (_CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
            or "application/octet-stream")


class _StoreHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_THREADS at once (more connections wait in the
    listen queue, which holds LISTEN_BACKLOG: a burst of clients is queued, not refused)."""

    daemon_threads = True  # a stuck keep-alive connection never blocks shutdown
    request_queue_size = LISTEN_BACKLOG
    root: str
    log: Callable[[RequestLog], None] | None
    md5_etags: bool = False
    _md5: dict[tuple[str, int, int], str]

    def md5_of(self, path: Path, st: os.stat_result) -> str:
        """The MD5 of a file version (path, size, mtime), hashed on its first request."""
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._md5.get(key)
        if known is None:
            h = hashlib.md5()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            known = h.hexdigest()
            with self._lock:
                self._md5[key] = known
        return known

    def server_activate(self) -> None:
        self._md5 = {}
        self._slots = threading.BoundedSemaphore(MAX_THREADS)
        self._lock = threading.Lock()
        self._active = 0
        super().server_activate()

    def _done(self) -> None:
        with self._lock:
            self._active -= 1
        self._slots.release()

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()  # all threads busy: the next connection waits in the backlog
        with self._lock:
            self._active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done()

    @property
    def busy(self) -> bool:
        """Whether most threads are taken: a keep-alive connection then lets go of its thread
        after each request, so queued connections are served."""
        return self._active >= MAX_THREADS // 2

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return  # clients hanging up are routine, not worth a traceback
        super().handle_error(request, client_address)


class _StoreHTTPServer6(_StoreHTTPServer):
    address_family = socket.AF_INET6


class StoreServer:
    """A running (or ready to run) HTTP server for one store directory.

    `url` is where clients reach it ("http://HOST:PORT", no trailing slash). Use as a context
    manager, or call `close()`; `start()` serves from a daemon thread, `serve_forever()` blocks.
    `md5_etags`: ETags are the files' MD5 (as object stores send them, and as geotessera >= 0.10
    and tessera's client check downloads against), hashed once per file version; otherwise
    size and modification time.
    """

    def __init__(self, root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                 log: Callable[[RequestLog], None] | None = None,
                 handler: type[StoreRequestHandler] = StoreRequestHandler,
                 md5_etags: bool = False) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise StoreError(f"{root}: no such store directory to serve")
        cls = _StoreHTTPServer6 if ":" in host else _StoreHTTPServer
        try:
            self.httpd = cls((host, port), handler)
        except OSError as exc:  # port in use, address not on this machine, no permission
            raise StoreError(f"{host}:{port}: cannot serve there "
                             f"({exc.strerror or exc})") from None
        self.httpd.root = str(self.root)
        self.httpd.log = log
        self.httpd.md5_etags = md5_etags
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()
        self._closed = False

    @property
    def host(self) -> str:
        return str(self.httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __repr__(self) -> str:
        return f"StoreServer({str(self.root)!r}, url={self.url!r})"

    def serve_forever(self) -> None:
        """Block, answering requests, until `close()` from another thread."""
        self._serving.set()
        try:
            self.httpd.serve_forever(poll_interval=0.1)
        finally:
            self._serving.clear()

    def start(self) -> StoreServer:
        """Serve from a daemon thread and return at once."""
        self._thread = threading.Thread(target=self.serve_forever, name=f"tessera-serve-{self.port}",
                                        daemon=True)
        self._thread.start()
        self._serving.wait(5)
        return self

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._serving.is_set():
            self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StoreServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve_store(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, *,
                log: Callable[[RequestLog], None] | None = None,
                handler: type[StoreRequestHandler] = StoreRequestHandler,
                md5_etags: bool = False) -> StoreServer:
    """Serve a store directory from a background thread (port 0: any free port);
    `with serve_store(root) as srv: HttpStore(srv.url)`. `log` receives a RequestLog per
    request; `handler` lets tests inject faults; `md5_etags` as StoreServer."""
    return StoreServer(root, host, port, log=log, handler=handler, md5_etags=md5_etags).start()


def run_server(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, *,
               log: Callable[[RequestLog], None] | None = None,
               on_ready: Callable[[StoreServer], None] | None = None,
               md5_etags: bool = False) -> None:
    """Serve a store directory until interrupted (Ctrl-C returns normally). Prints nothing:
    `on_ready(server)` runs once the port is bound (e.g. to print `server.url`), `log` gets
    each request."""
    server = StoreServer(root, host, port, log=log, md5_etags=md5_etags)
    try:
        if on_ready is not None:
            on_ready(server)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


__all__ = ["RangeNotSatisfiable", "RequestLog", "StoreRequestHandler", "StoreServer", "byte_range",
           "run_server", "serve_store"]
