"""A store over HTTP(S): a read-only server for a store directory, and a client that keeps a
verified local cache (SPEC section 7: resumable downloads, verification that never goes stale,
clear errors on missing tiles).

Server. `serve_store(root)` (background thread, for tests and notebooks) and `run_server(root,
host, port)` (blocking, for `tessera serve`) answer GET and HEAD for the files of the directory,
with single byte ranges (206 / 416), Content-Length, ETag, Last-Modified, If-None-Match and
If-Range. They list no directories, refuse paths that leave the root (403, symlinks included)
and hide dot-files (the writer's lock and temporary files), so any HTTP client, GDAL's /vsicurl/
included, can read a store as it is written.

Client. `HttpStore(url)` has the reader interface of `LocalStore`: `manifest()` and
`open_file(entry) -> Path`, a local copy laid out like the store under the cache directory.
Every download is checked against the manifest's size and sha256 while it streams (constant
memory), lands in `<file>.part` and is renamed to its final name only once verified, so the
cache never holds a corrupt file under a final name. An interrupted download resumes from its
`.part` (`Range: bytes=<n>-`); transient failures (connection errors, timeouts, truncated
bodies, 5xx, 429) are retried with exponential backoff; 404 / 403 fail at once. A verified file
gets a `<file>.sha256` sidecar; a cached copy is trusted only while the manifest lists that same
sha256, so the cache follows the server when a tile is rewritten.

If the server cannot be reached, `manifest()` falls back to the last manifest it cached, with a
`RuntimeWarning` saying so (files already in the cache stay usable offline).
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import fcntl
import hashlib
import mimetypes
import os
import re
import socket
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import requests
import urllib3

from tessera.atomic import atomic_path
from tessera.store.layout import MANIFEST
from tessera.store.local import StoreError
from tessera.store.manifest import FileEntry, Manifest, ManifestError

CHUNK = 1 << 20  # bytes per read / write / hash update, both sides
_CONTENT_TYPES = {".parquet": "application/vnd.apache.parquet", ".npy": "application/octet-stream",
                  ".tif": "image/tiff", ".tiff": "image/tiff", ".json": "application/json"}


# ================================================================================================
# Server
# ================================================================================================

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


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte of a single-range `Range` header, or None to send the
    whole file (no header, several ranges, or a malformed one: RFC 9110 lets a server ignore
    those). Raises RangeNotSatisfiable for a range past the end (answered 416)."""
    m = _RANGE.match(header or "")
    if m is None or not (m.group(1) or m.group(2)):
        return None
    a, b = m.groups()
    if a:
        start = int(a)
        if b and int(b) < start:
            return None  # invalid spec: ignore the header
        if start >= size:
            raise RangeNotSatisfiable
        return start, min(int(b), size - 1) if b else size - 1
    n = int(b)  # suffix range: the last n bytes
    if n == 0 or size == 0:
        raise RangeNotSatisfiable
    return max(size - n, 0), size - 1


class StoreRequestHandler(BaseHTTPRequestHandler):
    """Read-only GET/HEAD of the files under the server's root. Subclass and override
    `send_body` or `do_GET` to inject faults in tests."""

    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections across tiles
    server_version = "tessera-store/1"
    disable_nagle_algorithm = True  # headers and body written apart would wait on delayed ACKs
    timeout = 120  # seconds an idle keep-alive connection is kept
    server: _StoreHTTPServer

    # --- logging: through the server's callback only ------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass

    def _record(self, method: str, status: int, nbytes: int) -> None:
        if self.server.log is not None:
            self.server.log(RequestLog(self.client_address[0], method, self.path, status,
                                       self.headers.get("Range"), nbytes))

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
            etag = f'"{size:x}-{st.st_mtime_ns:x}"'
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

    def send_body(self, f: Any, start: int, length: int) -> None:
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
    daemon_threads = True  # a stuck keep-alive connection never blocks shutdown
    root: str
    log: Callable[[RequestLog], None] | None

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
    """

    def __init__(self, root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                 log: Callable[[RequestLog], None] | None = None,
                 handler: type[StoreRequestHandler] = StoreRequestHandler) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise StoreError(f"{root}: no such store directory to serve")
        cls = _StoreHTTPServer6 if ":" in host else _StoreHTTPServer
        self.httpd = cls((host, port), handler)
        self.httpd.root = str(self.root)
        self.httpd.log = log
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
                handler: type[StoreRequestHandler] = StoreRequestHandler) -> StoreServer:
    """Serve a store directory from a background thread (port 0: any free port);
    `with serve_store(root) as srv: HttpStore(srv.url)`. `log` receives a RequestLog per
    request; `handler` lets tests inject faults."""
    return StoreServer(root, host, port, log=log, handler=handler).start()


def run_server(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, *,
               log: Callable[[RequestLog], None] | None = None,
               on_ready: Callable[[StoreServer], None] | None = None) -> None:
    """Serve a store directory until interrupted (Ctrl-C returns normally). Prints nothing:
    `on_ready(server)` runs once the port is bound (e.g. to print `server.url`), `log` gets
    each request."""
    server = StoreServer(root, host, port, log=log)
    try:
        if on_ready is not None:
            on_ready(server)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


# ================================================================================================
# Client
# ================================================================================================

class _Transient(Exception):
    """A failure worth retrying (network, timeout, truncated body, 5xx)."""


def default_cache_dir(url: str) -> Path:
    """`$TESSERA_CACHE/<name>` or `~/.cache/tessera/<name>`, one folder per store URL, so two
    stores never share cached files."""
    parts = urllib.parse.urlsplit(url)
    where = (parts.hostname or "") + (f"_{parts.port}" if parts.port else "")  # no user:password
    name = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{where}{parts.path}").strip("_") or "store"
    base = os.environ.get("TESSERA_CACHE") or Path.home() / ".cache" / "tessera"
    return Path(base) / name


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock (threads and processes) named by `path`, removed afterwards. A waiter
    that wakes on a lock file already unlinked by its holder tries again on the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # releases the flock


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _sha_sidecar(final: Path) -> Path:
    return final.with_name(final.name + ".sha256")


def _content_range(value: str | None) -> tuple[int, int, int | None] | None:
    m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value or "")
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), None if m.group(3) == "*" else int(m.group(3))


class _Partial:
    """A `.part` file and the running sha256 of the bytes in it."""

    def __init__(self, path: Path, chunk: int) -> None:
        self.path, self.chunk = path, chunk
        self.size, self.hasher = 0, hashlib.sha256()

    def load(self) -> None:
        """Re-hash an existing `.part` (left by an interrupted download) so it can be resumed."""
        self.size, self.hasher = 0, hashlib.sha256()
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            while block := f.read(self.chunk):
                self.hasher.update(block)
                self.size += len(block)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.size, self.hasher = 0, hashlib.sha256()


class HttpStore:
    """A store behind an HTTP(S) URL, read through a verified local cache.

    `retries`: extra attempts after a transient failure, waiting `backoff * 2**k` seconds before
    the k-th (`sleep` is injectable for tests); an attempt that advanced a download by a whole
    chunk resets the count, so a long download on a flaky link keeps resuming. `timeout`: seconds
    to connect and between received bytes. `session`: a `requests.Session` to share (proxies,
    auth headers, mounted adapters). Safe for several threads fetching files: each file is
    locked while it downloads, and nothing else is shared but the session.
    """

    def __init__(self, url: str, cache_dir: str | os.PathLike | None = None, retries: int = 4,
                 backoff: float = 0.5, timeout: float = 30.0,
                 session: requests.Session | None = None, *,
                 sleep: Callable[[float], Any] = time.sleep, chunk_size: int = CHUNK) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise StoreError(f"{url}: not an http(s) URL")
        self.url = url.rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(self.url)
        self.retries, self.backoff, self.timeout = int(retries), float(backoff), float(timeout)
        self.session = session if session is not None else requests.Session()
        self.sleep, self.chunk_size = sleep, int(chunk_size)

    def __repr__(self) -> str:
        return f"HttpStore({self.url!r}, cache_dir={str(self.cache_dir)!r})"

    describe = __repr__

    def file_url(self, f: FileEntry | str) -> str:
        rel = f.path if isinstance(f, FileEntry) else f
        return f"{self.url}/{urllib.parse.quote(rel)}"

    def path(self, f: FileEntry | str) -> Path:
        """Where the cached copy of a listed file lives (it may not be there yet)."""
        rel = f.path if isinstance(f, FileEntry) else f
        parts = PurePosixPath(rel).parts
        if (not parts or rel.startswith("/") or "\\" in rel
                or any(p in ("..", ".") or p.startswith(".") for p in parts)):
            raise StoreError(f"{rel!r}: the manifest lists a path that is not a plain relative "
                             f"path inside the store {self.url}")
        return self.cache_dir.joinpath(*parts)

    # --- the manifest ----------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        """The server's manifest, revalidated with If-None-Match against the cached copy. If the
        server cannot be reached after the retries, the cached copy, with a RuntimeWarning."""
        url = f"{self.url}/{MANIFEST}"
        cached = self.cache_dir / MANIFEST
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.cache_dir / f".{MANIFEST}.lock"):
            try:
                return self._fetch_manifest(url, cached)
            except _Transient as exc:
                if not cached.exists():
                    raise StoreError(f"{url}: unreachable after {self.retries + 1} attempts "
                                     f"({exc}) and no cached manifest in {self.cache_dir}") from None
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cached.stat().st_mtime))
                warnings.warn(f"{url}: unreachable ({exc}); using the manifest cached at {when} "
                              f"in {cached}, which may be out of date", RuntimeWarning,
                              stacklevel=2)
                return self._read_manifest(cached, f"cached copy of {url}")

    @staticmethod
    def _read_manifest(path: Path, what: str) -> Manifest:
        try:
            return Manifest.read(path)
        except ManifestError as exc:
            raise StoreError(f"{what}: {exc}") from None

    def _fetch_manifest(self, url: str, cached: Path) -> Manifest:
        etag_file = cached.with_name(MANIFEST + ".etag")
        conditional = cached.exists() and etag_file.exists()
        failures = 0
        while True:
            headers = {"Accept-Encoding": "identity"}
            if conditional:
                headers["If-None-Match"] = etag_file.read_text().strip()
            try:
                with self._get(url, headers) as r:
                    if r.status_code == 304:
                        try:
                            return Manifest.read(cached)
                        except ManifestError:  # a damaged cache: fetch it whole
                            etag_file.unlink(missing_ok=True)
                            conditional = False
                            continue
                    if r.status_code != 200:
                        raise StoreError(f"{url}: unexpected HTTP {r.status_code} {r.reason}")
                    tmp = self._stream_to_temp(r, url, cached)
                try:
                    man = self._read_manifest(tmp, url)
                    etag_file.unlink(missing_ok=True)
                    os.replace(tmp, cached)
                finally:
                    tmp.unlink(missing_ok=True)
                if r.headers.get("ETag"):
                    _write_text_atomic(etag_file, r.headers["ETag"])
                return man
            except _Transient:
                if failures >= self.retries:
                    raise
                self.sleep(self.backoff * 2 ** failures)
                failures += 1

    def _stream_to_temp(self, r: requests.Response, url: str, near: Path) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{near.name}.", suffix=".tmp", dir=near.parent)
        tmp, n = Path(name), 0
        try:
            with os.fdopen(fd, "wb") as f:
                for block in self._blocks(r):
                    f.write(block)
                    n += len(block)
        except _Transient as exc:
            tmp.unlink(missing_ok=True)
            raise _Transient(f"connection lost after {n} bytes ({exc})") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        want = r.headers.get("Content-Length")
        if want is not None and not r.headers.get("Content-Encoding") and n != int(want):
            tmp.unlink(missing_ok=True)
            raise _Transient(f"body ended after {n} of {want} bytes")
        return tmp

    # --- files -------------------------------------------------------------------------------------
    def open_file(self, f: FileEntry, verify: bool = False) -> Path:
        """The path of a verified local copy of a listed file, downloading it if the cache has
        no copy verified against this sha256. `verify` re-hashes a cached copy too."""
        final = self.path(f)
        if self._cached_ok(f, final, verify):
            return final
        with _file_lock(final.with_name(final.name + ".lock")):
            if self._cached_ok(f, final, verify):  # another thread or process fetched it
                return final
            return self._download(f, final)

    def _cached_ok(self, f: FileEntry, final: Path, verify: bool) -> bool:
        try:
            if final.stat().st_size != f.size:
                return False
        except FileNotFoundError:
            return False
        sidecar = _sha_sidecar(final)
        try:
            recorded = sidecar.read_text().strip().lower()
        except FileNotFoundError:
            recorded = None
        if recorded is not None and recorded != f.sha256.lower():
            return False  # the manifest lists another version of the file
        if recorded is None or verify:  # e.g. a crash between rename and sidecar: hash locally
            h = _Partial(final, self.chunk_size)
            h.load()
            if h.hasher.hexdigest() != f.sha256.lower():
                return False
            if recorded is None:
                _write_text_atomic(sidecar, f.sha256.lower())
        return True

    def _download(self, f: FileEntry, final: Path) -> Path:
        url = self.file_url(f)
        want = f.sha256.lower()
        final.parent.mkdir(parents=True, exist_ok=True)
        part = _Partial(final.with_name(final.name + ".part"), self.chunk_size)
        part.load()
        if part.size > f.size:  # a leftover of some other version
            part.discard()
        resumed = part.size > 0
        fresh_restarts = 1
        failures = 0
        while True:
            if part.size < f.size:
                before = part.size
                try:
                    self._fetch_into(url, part, f.size)
                except _Transient as exc:
                    if part.size - before >= self.chunk_size:
                        failures = 0  # progress: a flaky link, not a dead one
                    if failures >= self.retries:
                        raise StoreError(
                            f"{url}: download failed after {failures + 1} attempts ({exc}); the "
                            f"{part.size} of {f.size} bytes received are kept in {part.path} "
                            "and the next attempt resumes from there") from None
                    self.sleep(self.backoff * 2 ** failures)
                    failures += 1
                    continue
            got = part.hasher.hexdigest() if part.size == f.size else None
            if got == want:
                break
            actual = (f"{part.size} bytes, sha256 {got}" if got
                      else f"more than {f.size} bytes")
            part.discard()
            if fresh_restarts:
                fresh_restarts -= 1  # a stale .part, or a glitch: once more from scratch
                continue
            tries = "resumed once, then downloaded whole" if resumed else "downloaded twice"
            raise StoreError(f"{url}: the copy does not match the manifest ({tries}): expected "
                             f"{f.size} bytes, sha256 {want}; got {actual} (the file on the "
                             "server is corrupt, or differs from its manifest row)")
        sidecar = _sha_sidecar(final)
        sidecar.unlink(missing_ok=True)  # never a sidecar vouching for other bytes
        os.replace(part.path, final)
        _write_text_atomic(sidecar, want)
        return final

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        """One streaming GET. Raises _Transient for failures worth retrying, StoreError for
        answers that retrying will not change."""
        try:
            r = self.session.get(url, headers=headers, stream=True, timeout=self.timeout)
        except requests.exceptions.SSLError as exc:
            raise StoreError(f"{url}: TLS failed ({exc})") from None
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        code = r.status_code
        if code < 400 or code == 416:
            return r
        r.close()
        if code >= 500 or code in (408, 429):
            raise _Transient(f"HTTP {code} {r.reason}")
        if code in (404, 410):
            raise StoreError(f"{url}: not on the server ({code})")
        if code in (401, 403):
            raise StoreError(f"{url}: refused by the server ({code} {r.reason})")
        raise StoreError(f"{url}: HTTP {code} {r.reason}")

    def _fetch_into(self, url: str, part: _Partial, size: int) -> None:
        """One GET appending to `part` (from its current length); returns once the body is
        complete, raises _Transient if it ended early."""
        headers = {"Accept-Encoding": "identity"}
        if part.size:
            headers["Range"] = f"bytes={part.size}-"
        with self._get(url, headers) as r:
            code = r.status_code
            if code == 416:
                total = (_content_range(r.headers.get("Content-Range")) or (0, 0, None))[2]
                msg = (f"{url}: the server has {total} bytes, the manifest says {size} (Range "
                       f"{headers.get('Range')} unsatisfiable)")
                part.discard()
                raise StoreError(msg)
            if code == 206:
                cr = _content_range(r.headers.get("Content-Range"))
                if cr is None or cr[0] != part.size:
                    part.discard()
                    raise _Transient(f"asked for bytes {headers.get('Range')}, got Content-Range "
                                     f"{r.headers.get('Content-Range')!r}; restarting from 0")
                total = cr[2]
            elif code == 200:
                if part.size:  # the server ignored the Range: start over
                    part.discard()
                length = r.headers.get("Content-Length")
                total = int(length) if length and not r.headers.get("Content-Encoding") else None
            else:
                raise StoreError(f"{url}: unexpected HTTP {code} {r.reason}")
            if total is not None and total != size:
                part.discard()
                raise StoreError(f"{url}: the server has {total} bytes, the manifest says {size} "
                                 "(the file or the manifest changed on the server)")
            try:
                with open(part.path, "ab") as out:
                    for block in self._blocks(r):
                        if part.size + len(block) > size:
                            block = block[: size - part.size + 1]  # one byte over: mismatch
                        out.write(block)
                        part.hasher.update(block)
                        part.size += len(block)
                        if part.size > size:
                            return
            except _Transient as exc:
                raise _Transient(f"connection lost after {part.size} of {size} bytes "
                                 f"({exc})") from None
        if part.size < size:
            raise _Transient(f"body ended after {part.size} of {size} bytes")

    def _blocks(self, r: requests.Response) -> Iterator[bytes]:
        """The body in `chunk_size` blocks. Reads with `read1`, so when the connection breaks
        the bytes that did arrive are still yielded (and kept for the resume) before _Transient
        is raised; `iter_content` would drop a partly filled chunk."""
        read1 = getattr(r.raw, "read1", None)
        if read1 is None:  # not urllib3 (e.g. a mocked session): no partial blocks
            try:
                yield from r.iter_content(self.chunk_size)
            except requests.RequestException as exc:
                raise _Transient(type(exc).__name__) from None
            return
        buf = bytearray()
        while True:
            try:
                got = read1(self.chunk_size - len(buf), decode_content=True)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                if buf:
                    yield bytes(buf)
                raise _Transient(str(exc) or type(exc).__name__) from None
            if not got:
                break
            buf += got
            if len(buf) >= self.chunk_size:
                yield bytes(buf)
                buf.clear()
        if buf:
            yield bytes(buf)
