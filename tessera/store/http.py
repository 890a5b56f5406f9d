"""A store over HTTP(S), read through a verified local cache (SPEC section 7: resumable
downloads, verification that never goes stale, clear errors on missing tiles).

`HttpStore(url)` implements `tessera.store.Store`: `manifest()` and `open_file(entry) -> Path`, a
local copy laid out like the store under the cache directory. Every download is checked against
the manifest's size and sha256 while it streams (constant memory), lands in `<file>.part` and is
renamed to its final name only once verified, so the cache never holds a corrupt file under a
final name. An interrupted download resumes from its `.part` (`Range: bytes=<n>-`); transient
failures (connection errors, timeouts, truncated bodies, 5xx, 429) are retried with exponential
backoff; 404 / 403 fail at once. A verified file gets a `<file>.sha256` sidecar; a cached copy is
trusted only while the manifest lists that same sha256, so the cache follows the server when a
tile is rewritten.

If the server cannot be reached, `manifest()` falls back to the last manifest it cached, with a
`RuntimeWarning` saying so (files already in the cache stay usable offline). The server side is
`tessera.store.server`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import requests
import urllib3

from tessera.atomic import tmp_sibling, write_text
from tessera.errors import StoreError
from tessera.store.layout import MANIFEST
from tessera.store.manifest import FileEntry, Manifest, ManifestError

CHUNK = 1 << 20  # bytes per read / write / hash update


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
                 sleep: Callable[[float], object] = time.sleep, chunk_size: int = CHUNK) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise StoreError(f"{url}: not an http(s) URL")
        self.url = url.rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(self.url)
        self.retries, self.backoff, self.timeout = int(retries), float(backoff), float(timeout)
        self.session = session if session is not None else requests.Session()
        self.sleep, self.chunk_size = sleep, int(chunk_size)

    def __repr__(self) -> str:
        return f"HttpStore({self.url!r}, cache_dir={str(self.cache_dir)!r})"

    def describe(self) -> str:
        return repr(self)

    def is_local(self, f: FileEntry) -> bool:
        """Whether the cache holds a copy of `f` of the listed size (no download needed)."""
        try:
            p = self.path(f)
        except StoreError:
            return False
        return p.is_file() and p.stat().st_size == f.size

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
                    write_text(etag_file, r.headers["ETag"])
                return man
            except _Transient:
                if failures >= self.retries:
                    raise
                self.sleep(self.backoff * 2 ** failures)
                failures += 1

    def _stream_to_temp(self, r: requests.Response, url: str, near: Path) -> Path:
        tmp, n = tmp_sibling(near), 0
        try:
            with open(tmp, "wb") as f:
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
                write_text(sidecar, f.sha256.lower())
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
        write_text(sidecar, want)
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
