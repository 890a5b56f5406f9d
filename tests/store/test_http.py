"""The HTTP store: the read-only server (ranges, HEAD, refusals) and the caching client
(streamed verification, resume, retries, cache invalidation), all over loopback."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tessera.store import open_store
from tessera.errors import StoreError
from tessera.store.http import HttpStore
from tessera.store.local import LocalStore
from tessera.store.server import (RangeNotSatisfiable, RequestLog, StoreRequestHandler, byte_range,
                                  run_server, serve_store)
from tessera.store.manifest import FileEntry
from tessera.store.synthetic import build_simulated_store, simulated_tile_arrays

TILES = ["grid_5.95_45.05", "grid_6.05_45.05"]
EMB = "2022/grid_5.95_45.05/grid_5.95_45.05.npy"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("template") / "store"
    build_simulated_store(root, TILES, years=(2022,))
    return root


@pytest.fixture
def store(template, tmp_path) -> LocalStore:
    """A fresh copy per test: some tests tamper with the served files."""
    return LocalStore(shutil.copytree(template, tmp_path / "store"))


class Recorder:
    """The server's request log plus the client's sleeps."""

    def __init__(self) -> None:
        self.log: list[RequestLog] = []
        self.sleeps: list[float] = []

    def gets(self, rel: str) -> list[RequestLog]:
        return [r for r in self.log if r.method == "GET" and r.path == f"/{rel}"]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def client(url: str, tmp_path: Path, rec: Recorder, **kw) -> HttpStore:
    return HttpStore(url, cache_dir=tmp_path / "cache", sleep=rec.sleeps.append, **kw)


def entry(store: LocalStore, rel: str = EMB) -> FileEntry:
    for e in store.manifest():
        for f in e.files.values():
            if f.path == rel:
                return f
    raise KeyError(rel)


def raw(url: str, method: str, path: str, headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, str], bytes]:
    """One request exactly as written (no client-side path normalisation)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# --- the server ---------------------------------------------------------------------------------

def test_byte_range_parsing():
    assert byte_range(None, 100) is None
    assert byte_range("bytes=10-19", 100) == (10, 19)
    assert byte_range("bytes=90-", 100) == (90, 99)
    assert byte_range("bytes=95-200", 100) == (95, 99)
    assert byte_range("bytes=-30", 100) == (70, 99)
    assert byte_range("bytes=-300", 100) == (0, 99)
    assert byte_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole file
    assert byte_range("bytes=20-10", 100) is None  # invalid: ignored
    assert byte_range("items=0-5", 100) is None
    for bad in ("bytes=100-", "bytes=-0", "bytes=150-160"):
        with pytest.raises(RangeNotSatisfiable):
            byte_range(bad, 100)


def test_range_requests_and_validators(store):
    data = (store.root / EMB).read_bytes()
    size = len(data)
    with serve_store(store.root) as srv:
        status, h, body = raw(srv.url, "GET", f"/{EMB}", {"Range": "bytes=10-99"})
        assert (status, body, h["content-range"]) == (206, data[10:100], f"bytes 10-99/{size}")
        assert h["accept-ranges"] == "bytes" and h["content-length"] == "90"
        status, h, body = raw(srv.url, "GET", f"/{EMB}", {"Range": f"bytes={size - 5}-"})
        assert (status, body, h["content-range"]) == (206, data[-5:],
                                                      f"bytes {size - 5}-{size - 1}/{size}")
        status, h, body = raw(srv.url, "GET", f"/{EMB}", {"Range": "bytes=-7"})
        assert (status, body) == (206, data[-7:])
        status, h, body = raw(srv.url, "GET", f"/{EMB}", {"Range": f"bytes={size}-"})
        assert (status, h["content-range"], h["content-length"], body) == (
            416, f"bytes */{size}", "0", b"")
        status, h, body = raw(srv.url, "GET", f"/{EMB}", {"Range": "bytes=0-1,4-5"})
        assert (status, body) == (200, data)
        status, h, body = raw(srv.url, "GET", f"/{EMB}")
        assert (status, body, h["content-length"]) == (200, data, str(size))
        assert h["etag"] and h["last-modified"].endswith("GMT")
        etag = h["etag"]
        status, h, body = raw(srv.url, "GET", f"/{EMB}", {"If-None-Match": etag})
        assert (status, body) == (304, b"")
        # If-Range with another version's validator: the whole file, not the range
        status, h, body = raw(srv.url, "GET", f"/{EMB}",
                              {"Range": "bytes=0-9", "If-Range": '"stale"'})
        assert (status, body) == (200, data)
        status, h, body = raw(srv.url, "GET", f"/{EMB}", {"Range": "bytes=0-9", "If-Range": etag})
        assert (status, body) == (206, data[:10])


def test_head(store):
    size = (store.root / EMB).stat().st_size
    with serve_store(store.root) as srv:
        status, h, body = raw(srv.url, "HEAD", f"/{EMB}")
        assert (status, h["content-length"], body) == (200, str(size), b"")
        assert h["accept-ranges"] == "bytes" and "etag" in h
        status, h, body = raw(srv.url, "HEAD", f"/{EMB}", {"Range": "bytes=0-99"})
        assert (status, h["content-length"], h["content-range"], body) == (
            206, "100", f"bytes 0-99/{size}", b"")
        status, h, _ = raw(srv.url, "HEAD", "/2022/nothing.npy")
        assert status == 404


def test_refuses_escapes_listings_dotfiles_and_writes(store, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    os.symlink(secret, store.root / "2022" / "link.txt")
    (store.root / ".hidden").write_text("writer's temporary file")
    with serve_store(store.root) as srv:
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/2022/%2E%2E/%2E%2E/secret.txt",
                     "/2022/../../secret.txt", "/2022/link.txt"):
            status, _, body = raw(srv.url, "GET", path)
            assert status == 403, path
            assert b"TOP SECRET" not in body
        for path in ("/", "/2022", "/2022/", "/.hidden", "/2022/grid_5.95_45.05/"):
            status, _, body = raw(srv.url, "GET", path)
            assert status == 404, path
            assert b".npy" not in body and b"manifest" not in body  # no listing
        status, h, _ = raw(srv.url, "POST", f"/{EMB}")
        assert status == 405 and h["allow"] == "GET, HEAD"
        status, _, _ = raw(srv.url, "GET", f"/{EMB}?x=1")  # the query string is ignored
        assert status == 200


def test_run_server_blocks_until_closed(store, tmp_path, rec):
    ready: list = []
    started = threading.Event()

    def on_ready(server):
        ready.append(server)
        started.set()

    t = threading.Thread(target=run_server, args=(store.root, "127.0.0.1", 0),
                         kwargs={"on_ready": on_ready, "log": rec.log.append}, daemon=True)
    t.start()
    assert started.wait(10)
    srv = ready[0]
    assert srv.url.startswith("http://127.0.0.1:")
    assert len(client(srv.url, tmp_path, rec).manifest()) == 2
    last = rec.log[-1]
    assert (last.method, last.path, last.status) == ("GET", "/manifest.parquet", 200)
    assert str(last) == f'127.0.0.1 "GET /manifest.parquet" 200 {last.nbytes}'
    srv.close()
    t.join(10)
    assert not t.is_alive()


# --- the client ------------------------------------------------------------------------------

def test_manifest_and_files_match_the_store(store, tmp_path, rec):
    with serve_store(store.root, log=rec.log.append) as srv:
        h = open_store(srv.url, cache_dir=tmp_path / "cache", sleep=rec.sleeps.append)
        assert isinstance(h, HttpStore)
        assert srv.url in repr(h) and h.describe() == repr(h)
        m = h.manifest()
        assert m.table.equals(store.manifest().table)
        for e in m:
            for f in e.files.values():
                p = h.open_file(f)
                assert p == tmp_path / "cache" / f.path
                assert p.read_bytes() == (store.root / f.path).read_bytes()
                assert Path(f"{p}.sha256").read_text() == f.sha256
                assert not Path(f"{p}.part").exists() and not Path(f"{p}.lock").exists()
        # the manifest is revalidated, not fetched again
        assert h.manifest().table.equals(m.table)
        assert [r.status for r in rec.gets("manifest.parquet")] == [200, 304]
        # a damaged cached manifest answered by 304 is fetched whole
        (tmp_path / "cache" / "manifest.parquet").write_bytes(b"not parquet")
        assert h.manifest().table.equals(m.table)
        assert [r.status for r in rec.gets("manifest.parquet")] == [200, 304, 304, 200]
    assert rec.sleeps == []


def test_resume_requests_only_the_rest(store, tmp_path, rec):
    f = entry(store)
    data = (store.root / EMB).read_bytes()
    half = len(data) // 2
    part = tmp_path / "cache" / f"{EMB}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:half])
    with serve_store(store.root, log=rec.log.append) as srv:
        p = client(srv.url, tmp_path, rec).open_file(f)
    assert p.read_bytes() == data and not part.exists()
    assert [(r.status, r.range, r.nbytes) for r in rec.gets(EMB)] == [
        (206, f"bytes={half}-", len(data) - half)]


def test_stale_or_oversized_part_restarts_from_scratch(store, tmp_path, rec):
    f = entry(store)
    data = (store.root / EMB).read_bytes()
    part = tmp_path / "cache" / f"{EMB}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\x01" * 1000)  # of another version: the resumed copy fails its hash
    with serve_store(store.root, log=rec.log.append) as srv:
        h = client(srv.url, tmp_path, rec)
        assert h.open_file(f).read_bytes() == data
        assert [(r.status, r.range) for r in rec.gets(EMB)] == [(206, "bytes=1000-"),
                                                               (200, None)]
        (tmp_path / "cache" / EMB).unlink()
        part.write_bytes(data + b"extra")  # longer than the file: dropped before any request
        assert h.open_file(f).read_bytes() == data
        assert [(r.status, r.range) for r in rec.gets(EMB)][2:] == [(200, None)]
    assert rec.sleeps == []


def test_server_ignoring_range_restarts_from_zero(store, tmp_path, rec):
    class NoRanges(StoreRequestHandler):
        def serve_file(self, head: bool) -> None:
            del self.headers["Range"]
            super().serve_file(head)

    f = entry(store)
    data = (store.root / EMB).read_bytes()
    part = tmp_path / "cache" / f"{EMB}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:100])
    with serve_store(store.root, log=rec.log.append, handler=NoRanges) as srv:
        assert client(srv.url, tmp_path, rec).open_file(f).read_bytes() == data
    assert [r.status for r in rec.gets(EMB)] == [200]


def test_truncated_bodies_are_resumed(store, tmp_path, rec):
    drops = [2]

    class Truncating(StoreRequestHandler):
        """Promises the whole range, sends half of it, hangs up (twice)."""

        def send_body(self, f, start, length):
            if drops[0] > 0:
                drops[0] -= 1
                f.seek(start)
                self.wfile.write(f.read(length // 2))
                self.close_connection = True
                return
            super().send_body(f, start, length)

    f = entry(store)
    data = (store.root / EMB).read_bytes()
    n = len(data)
    with serve_store(store.root, log=rec.log.append, handler=Truncating) as srv:
        p = client(srv.url, tmp_path, rec).open_file(f)
    assert p.read_bytes() == data
    h1 = n // 2
    h2 = h1 + (n - h1) // 2
    assert [(r.status, r.range) for r in rec.gets(EMB)] == [
        (200, None), (206, f"bytes={h1}-"), (206, f"bytes={h2}-")]
    assert rec.sleeps == [0.5, 1.0]


def test_progress_resets_the_retry_budget_but_a_dead_link_gives_up(store, tmp_path, rec):
    sent = [3, 0]  # drops that send half, then drops that send nothing

    class Flaky(StoreRequestHandler):
        def send_body(self, f, start, length):
            if sent[0] > 0:
                sent[0] -= 1
                f.seek(start)
                self.wfile.write(f.read(length // 2))
            elif sent[1] > 0:
                sent[1] -= 1
            else:
                return super().send_body(f, start, length)
            self.close_connection = True

    f = entry(store)
    data = (store.root / EMB).read_bytes()
    with serve_store(store.root, log=rec.log.append, handler=Flaky) as srv:
        h = client(srv.url, tmp_path, rec, retries=1, chunk_size=4096)
        assert h.open_file(f).read_bytes() == data  # 3 drops, but each one made progress
        (tmp_path / "cache" / EMB).unlink()
        sent[:] = [1, 5]
        with pytest.raises(StoreError, match=r"failed after 2 attempts.*kept in .*\.part"):
            h.open_file(f)
    part = tmp_path / "cache" / f"{EMB}.part"
    assert part.stat().st_size == len(data) // 2
    assert not (tmp_path / "cache" / EMB).exists()


def test_tampered_file_is_refused_and_nothing_is_left(store, tmp_path, rec):
    f = entry(store)
    served = store.root / EMB
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    served.write_bytes(bytes(data))
    actual = hashlib.sha256(data).hexdigest()
    with serve_store(store.root, log=rec.log.append) as srv:
        url = f"{srv.url}/{EMB}"
        with pytest.raises(StoreError, match="sha256") as exc:
            client(srv.url, tmp_path, rec).open_file(f)
    msg = str(exc.value)
    assert url in msg and f.sha256 in msg and actual in msg and str(f.size) in msg
    final = tmp_path / "cache" / EMB
    assert not final.exists() and not Path(f"{final}.part").exists()
    assert not Path(f"{final}.sha256").exists()
    assert [r.status for r in rec.gets(EMB)] == [200, 200]  # once more from scratch, then stop


def test_size_differing_from_the_manifest_fails_at_once(store, tmp_path, rec):
    f = entry(store)
    served = store.root / EMB
    served.write_bytes(served.read_bytes()[:-10])
    with serve_store(store.root, log=rec.log.append) as srv:
        with pytest.raises(StoreError, match=rf"has {f.size - 10} bytes, the manifest says "
                                             rf"{f.size}"):
            client(srv.url, tmp_path, rec).open_file(f)
    assert len(rec.gets(EMB)) == 1 and rec.sleeps == []
    assert not (tmp_path / "cache" / f"{EMB}.part").exists()


def test_404_fails_without_retries(store, tmp_path, rec):
    missing = FileEntry("2022/grid_9.95_45.05/grid_9.95_45.05.npy", 10, "0" * 64)
    with serve_store(store.root, log=rec.log.append) as srv:
        with pytest.raises(StoreError, match=r"grid_9.95_45.05.npy: not on the server \(404\)"):
            client(srv.url, tmp_path, rec).open_file(missing)
    assert [r.status for r in rec.gets(missing.path)] == [404]
    assert rec.sleeps == []


def test_unsafe_manifest_path_is_refused_before_any_request(store, tmp_path, rec):
    with serve_store(store.root, log=rec.log.append) as srv:
        h = client(srv.url, tmp_path, rec)
        for bad in ("../outside.npy", "/etc/passwd", "2022/../../x.npy", ""):
            with pytest.raises(StoreError, match="not a plain relative path"):
                h.open_file(FileEntry(bad, 1, "0" * 64))
    assert rec.log == []


def test_server_errors_are_retried_with_backoff(store, tmp_path, rec):
    busy = [2]

    class Busy(StoreRequestHandler):
        def do_GET(self):
            if busy[0] > 0:
                busy[0] -= 1
                self.send_text(503, "try later")
                return
            super().do_GET()

    f = entry(store)
    with serve_store(store.root, log=rec.log.append, handler=Busy) as srv:
        h = client(srv.url, tmp_path, rec, backoff=0.25)
        assert h.open_file(f).read_bytes() == (store.root / EMB).read_bytes()
        assert [r.status for r in rec.gets(EMB)] == [503, 503, 200]
        assert rec.sleeps == [0.25, 0.5]
        busy[0] = 10
        f2 = entry(store, EMB.replace(".npy", "_scales.npy"))
        with pytest.raises(StoreError, match=r"failed after 3 attempts \(HTTP 503"):
            client(srv.url, tmp_path, rec, retries=2).open_file(f2)
        assert [r.status for r in rec.gets(f2.path)] == [503] * 3


def test_cached_copy_is_reused_without_requests(store, tmp_path, rec):
    f = entry(store)
    with serve_store(store.root, log=rec.log.append) as srv:
        client(srv.url, tmp_path, rec).open_file(f)
        assert len(rec.gets(EMB)) == 1
        p = client(srv.url, tmp_path, rec).open_file(f)  # a new client on the same cache
        assert len(rec.gets(EMB)) == 1
        sidecar = Path(f"{p}.sha256")
        sidecar.unlink()  # e.g. a crash between the rename and the sidecar: hashed locally
        client(srv.url, tmp_path, rec).open_file(f)
        assert len(rec.gets(EMB)) == 1 and sidecar.read_text() == f.sha256
        data = bytearray(p.read_bytes())
        data[0] ^= 1
        p.write_bytes(bytes(data))  # damaged in the cache: only `verify` notices
        client(srv.url, tmp_path, rec).open_file(f)
        assert len(rec.gets(EMB)) == 1
        assert client(srv.url, tmp_path, rec).open_file(f, verify=True).read_bytes() == \
            (store.root / EMB).read_bytes()
        assert len(rec.gets(EMB)) == 2


def test_manifest_sha_change_redownloads(store, tmp_path, rec):
    with serve_store(store.root, log=rec.log.append) as srv:
        h = client(srv.url, tmp_path, rec)
        old = h.manifest().entry(TILES[0], 2022).files["embeddings"]
        h.open_file(old)
        from tessera.geo.grid import parse_tile_name
        q, s, m, g = simulated_tile_arrays(parse_tile_name(TILES[0]), 2022, seed=1)
        store.write_tile(TILES[0], 2022, q, s, m, version="v2", crs=g.crs, transform=g.transform,
                         model="simulated", weights="simulated")  # the store's one model
        new = h.manifest().entry(TILES[0], 2022).files["embeddings"]
        assert new.sha256 != old.sha256 and new.size == old.size
        p = h.open_file(new)
        assert p.read_bytes() == (store.root / EMB).read_bytes()
        assert Path(f"{p}.sha256").read_text() == new.sha256
        assert len(rec.gets(EMB)) == 2
        # the old row can no longer be satisfied: the server's bytes are the new ones
        with pytest.raises(StoreError, match="sha256"):
            h.open_file(old)
        assert p.read_bytes() == (store.root / EMB).read_bytes()  # the good copy stays


def test_unreachable_server_falls_back_to_the_cached_manifest(store, tmp_path, rec):
    with serve_store(store.root) as srv:
        url = srv.url
        expected = client(url, tmp_path, rec).manifest()
    h = client(url, tmp_path, rec, retries=1)
    with pytest.warns(RuntimeWarning, match="unreachable.*cached"):
        assert h.manifest().table.equals(expected.table)
    assert rec.sleeps == [0.5]
    with pytest.raises(StoreError, match="unreachable after 2 attempts.*no cached manifest"):
        HttpStore(url, cache_dir=tmp_path / "empty", retries=1, sleep=rec.sleeps.append).manifest()


def test_threads_download_each_file_once(store, tmp_path, rec):
    files = [f for e in store.manifest() for f in e.files.values()]
    with serve_store(store.root, log=rec.log.append) as srv:
        h = client(srv.url, tmp_path, rec)
        with ThreadPoolExecutor(6) as pool:
            paths = list(pool.map(h.open_file, files + files))
    for f, p in zip(files + files, paths):
        assert p.read_bytes() == (store.root / f.path).read_bytes()
    assert sorted(r.path for r in rec.log) == sorted(f"/{f.path}" for f in files)


def test_default_cache_dir_per_store(monkeypatch, tmp_path):
    monkeypatch.setenv("TESSERA_CACHE", str(tmp_path))
    h = HttpStore("http://example.test:8080/stores/v1/")
    assert h.url == "http://example.test:8080/stores/v1"
    assert h.cache_dir == tmp_path / "example.test_8080_stores_v1"
    assert h.file_url("2022/a b.npy") == "http://example.test:8080/stores/v1/2022/a%20b.npy"
    assert HttpStore("https://user:pw@example.test/s").cache_dir == tmp_path / "example.test_s"
    with pytest.raises(StoreError, match="not an http"):
        HttpStore("ftp://example.test/store")
