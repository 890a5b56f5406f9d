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
from tessera.store.manifest import FileEntry, Manifest, ManifestError, TileEntry

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


def _check_parquet(path: Path) -> None:
    """A manifest or registry must at least be a readable Parquet file."""
    import pyarrow.parquet as pq

    try:
        pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise StoreError(f"{path}: not a readable Parquet file ({exc})") from None


def md5_etag(value: str | None) -> str | None:
    """The MD5 an ETag vouches for: a strong ETag of exactly 32 hex digits (what S3 and most
    object stores send for single-part uploads; geotessera >= 0.10 checks the same), else None
    (weak, multipart `-N` or opaque ETags say nothing about the bytes)."""
    if not value or value.startswith("W/"):
        return None
    v = value.strip().strip('"').lower()
    return v if re.fullmatch(r"[0-9a-f]{32}", v) else None


class _Partial:
    """A `.part` file and the running sha256 (and MD5) of the bytes in it."""

    def __init__(self, path: Path, chunk: int) -> None:
        self.path, self.chunk = path, chunk
        self.size, self.hasher, self.md5 = 0, hashlib.sha256(), hashlib.md5()
        self.etag: str | None = None  # the server's ETag for the file, as last sent

    def update(self, block: bytes) -> None:
        self.hasher.update(block)
        self.md5.update(block)
        self.size += len(block)

    def load(self) -> None:
        """Re-hash an existing `.part` (left by an interrupted download) so it can be resumed."""
        self.size, self.hasher, self.md5 = 0, hashlib.sha256(), hashlib.md5()
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            while block := f.read(self.chunk):
                self.update(block)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.size, self.hasher, self.md5 = 0, hashlib.sha256(), hashlib.md5()


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
                 sleep: Callable[[float], object] = time.sleep, chunk_size: int = CHUNK,
                 dataset_version: str | None = None) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise StoreError(f"{url}: not an http(s) URL")
        self.url = url.rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(self.url)
        self.retries, self.backoff, self.timeout = int(retries), float(backoff), float(timeout)
        self.session = session if session is not None else requests.Session()
        self.sleep, self.chunk_size = sleep, int(chunk_size)
        self.dataset_version = dataset_version  # one dataset of a GeoTessera mirror

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
        server cannot be reached after the retries, the cached copy, with a RuntimeWarning.

        A server holding one of GeoTessera's published layouts instead (`registry.parquet`, a
        geotessera >= 0.10 `manifest.parquet`, or a mirror's `npy/{dataset}/manifest.parquet`)
        is read as a store too: its registries become the manifest, and each tile's
        georeferencing is read from its landmask (downloaded) and the head of its embedding file
        (a range request) when a request first touches it."""
        from tessera.store import geotessera as gt

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        own = self._fetch_small(MANIFEST, _check_parquet)
        if own is not None and gt.is_own_manifest(own):
            if self.dataset_version is not None:
                raise StoreError(f"{self.url}: --dataset-version {self.dataset_version}: not a "
                                 "GeoTessera store (a tessera store holds one dataset)")
            return self._read_manifest(own, f"{self.url}/{MANIFEST}")
        reg: Path | None
        if (reg := self._fetch_small(gt.LEGACY_REGISTRY, _check_parquet)) is not None:
            layout = gt.registry_layout()  # sha256 per file: preferred to a 0.10 manifest
        elif own is not None:
            layout, reg = gt.manifest_layout(self.dataset_version), own
        else:
            layout = gt.mirror_layout(self.dataset_version or "v1")
            reg = self._fetch_small(layout.registry, _check_parquet)
            if reg is None and self.url.endswith(".zarr"):
                raise StoreError(f"{self.url}: a GeoTessera Zarr store, not a tile store: "
                                 "`tessera sample` and `export` (GeoTIFF) read it over HTTP "
                                 "(Python: tessera.store.gtzarr.ZarrStore)")
            if reg is None:
                raise StoreError(
                    f"{self.url}: not a store: no {MANIFEST} (a tessera store, or geotessera "
                    f">= 0.10's), no {gt.LEGACY_REGISTRY} (geotessera <= 0.8) and no "
                    f"{layout.registry} (a geotessera mirror; another dataset: "
                    "--dataset-version)")
        lm = self._fetch_small(layout.landmasks, _check_parquet)
        if lm is None:
            raise StoreError(f"{self.file_url(layout.landmasks)}: not on the server (the "
                             f"landmask registry of {layout.describe()})")
        table, landmasks = gt.read_tables(reg, lm, layout)
        entries = gt.entries_of(table, landmasks, layout, self.file_url(layout.registry),
                                self.file_url(layout.landmasks))
        return gt.GeoTesseraManifest(Manifest.from_entries(entries).table, self._resolve)

    def _resolve(self, e: TileEntry) -> TileEntry:
        """A GeoTessera tile's georeferencing: its landmask (downloaded, verified) and the header
        of its embedding file (the cached copy, or the first bytes over a range request)."""
        from tessera.store import geotessera as gt

        emb = e.files["embeddings"]
        if self.is_local(emb):
            with open(self.path(emb), "rb") as f:
                head = f.read(4096)
        else:
            head = self.read_head(emb, 4096)
        return gt.resolved(e, self.open_file(e.files["mask"]), head, self.file_url(emb))

    def read_head(self, f: FileEntry, n: int) -> bytes:
        """The first `n` bytes of a listed file (a range request; a server that ignores ranges
        sends the whole body, of which only `n` bytes are read)."""
        url = self.file_url(f)
        failures = 0
        while True:
            try:
                with self._get(url, {"Range": f"bytes=0-{n - 1}",
                                     "Accept-Encoding": "identity"}) as r:
                    if r.status_code not in (200, 206):
                        raise StoreError(f"{url}: unexpected HTTP {r.status_code} {r.reason}")
                    buf = bytearray()
                    for block in self._blocks(r):
                        buf += block
                        if len(buf) >= n:
                            break
                    return bytes(buf[:n])
            except _Transient:
                if failures >= self.retries:
                    raise
                self.sleep(self.backoff * 2 ** failures)
                failures += 1

    @staticmethod
    def _read_manifest(path: Path, what: str) -> Manifest:
        try:
            return Manifest.read(path)
        except ManifestError as exc:
            raise StoreError(f"{what}: {exc}") from None

    def _fetch_small(self, rel: str, check: Callable[[Path], None]) -> Path | None:
        """A small file of the store (a manifest, a registry), revalidated against its cached
        copy with If-None-Match; None when the server does not have it. `check(path)` raises
        StoreError for a damaged file. If the server cannot be reached: the cached copy, with a
        RuntimeWarning."""
        url, cached = self.file_url(rel), self.path(rel)
        cached.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(cached.with_name(f".{cached.name}.lock")):
            try:
                return self._fetch_revalidated(url, cached, check)
            except _Transient as exc:
                if not cached.exists():
                    raise StoreError(f"{url}: unreachable after {self.retries + 1} attempts "
                                     f"({exc}) and no cached {cached.name} in {cached.parent}") from None
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cached.stat().st_mtime))
                warnings.warn(f"{url}: unreachable ({exc}); using the copy cached at {when} "
                              f"in {cached}, which may be out of date", RuntimeWarning,
                              stacklevel=3)
                check(cached)
                return cached

    def _fetch_revalidated(self, url: str, cached: Path, check: Callable[[Path], None]
                           ) -> Path | None:
        etag_file = cached.with_name(cached.name + ".etag")
        conditional = cached.exists() and etag_file.exists()
        failures = 0
        while True:
            headers = {"Accept-Encoding": "identity"}
            if conditional:
                headers["If-None-Match"] = etag_file.read_text().strip()
            try:
                with self._get(url, headers, missing_ok=True) as r:
                    if r.status_code in (404, 410):
                        return None
                    if r.status_code == 304:
                        try:
                            check(cached)
                            return cached
                        except StoreError:  # a damaged cache: fetch it whole
                            etag_file.unlink(missing_ok=True)
                            conditional = False
                            continue
                    if r.status_code != 200:
                        raise StoreError(f"{url}: unexpected HTTP {r.status_code} {r.reason}")
                    tmp = self._stream_to_temp(r, url, cached)
                try:
                    check(tmp)
                    etag_file.unlink(missing_ok=True)
                    os.replace(tmp, cached)
                finally:
                    tmp.unlink(missing_ok=True)
                if r.headers.get("ETag"):
                    write_text(etag_file, r.headers["ETag"])
                return cached
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
        if not f.sha256:  # a registry without hashes (geotessera >= 0.10): the size is all
            return True   # there is to check once the download was verified
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
            etag_md5 = md5_etag(part.etag)
            if want:
                ok, expected = got == want, f"sha256 {want}"
            else:  # no hash listed: the size, and the server's MD5 ETag when it sends one
                ok = got is not None and etag_md5 in (None, part.md5.hexdigest())
                expected = f"MD5 {etag_md5} (the server's ETag)" if etag_md5 else "that size"
            if ok:
                break
            actual = ((f"{part.size} bytes, sha256 {got}" if want else
                       f"{part.size} bytes, MD5 {part.md5.hexdigest()}") if got
                      else f"more than {f.size} bytes")
            part.discard()
            if fresh_restarts:
                fresh_restarts -= 1  # a stale .part, or a glitch: once more from scratch
                continue
            tries = "resumed once, then downloaded whole" if resumed else "downloaded twice"
            raise StoreError(f"{url}: the copy does not match the manifest ({tries}): expected "
                             f"{f.size} bytes, {expected}; got {actual} (the file on the "
                             "server is corrupt, or differs from its manifest row)")
        sidecar = _sha_sidecar(final)
        sidecar.unlink(missing_ok=True)  # never a sidecar vouching for other bytes
        os.replace(part.path, final)
        if want:
            write_text(sidecar, want)
        return final

    def _get(self, url: str, headers: dict[str, str], missing_ok: bool = False
             ) -> requests.Response:
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
        if code < 400 or code == 416 or (missing_ok and code in (404, 410)):
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
            part.etag = r.headers.get("ETag") or part.etag
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
                        part.update(block)
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
