"""`tessera serve` under a burst: 200 simultaneous range requests (new connections and
keep-alive) are all answered, none lost; absurd Range headers get an answer, not a dead
handler."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import threading
import time

import pytest

BURST = 200


@pytest.fixture(scope="module")
def served(world):
    proc = subprocess.Popen([sys.executable, "-m", "tessera.cli", "serve", str(world.store),
                             "--port", "0", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert m, line
        yield int(m.group(1)), world
    finally:
        proc.terminate()
        proc.wait(10)


def _file(world):
    from tessera.store.local import LocalStore
    e = LocalStore(world.store).manifest().entries()[0]
    return "/" + e.files["scales"].path, (world.store / e.files["scales"].path).read_bytes()


def _burst(port, path, body, keep_alive):
    results = [None] * BURST
    start = threading.Barrier(BURST)

    def one(i):
        lo = (i * 37) % (len(body) - 64)
        try:
            start.wait(10)
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            for _ in range(2 if keep_alive else 1):  # keep-alive: two requests per connection
                headers = {"Range": f"bytes={lo}-{lo + 63}"}
                if not keep_alive:
                    headers["Connection"] = "close"
                c.request("GET", path, headers=headers)
                r = c.getresponse()
                data = r.read()
                ok = r.status == 206 and data == body[lo:lo + 64]
                if not ok:
                    break
            results[i] = ok
            c.close()
        except Exception as exc:  # a refused, reset or timed-out connection: lost
            results[i] = repr(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(BURST)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, time.perf_counter() - t0


@pytest.mark.parametrize("keep_alive", [False, True], ids=["connection-close", "keep-alive"])
def test_a_burst_of_200_range_requests_loses_none(served, keep_alive):
    port, world = served
    path, body = _file(world)
    results, seconds = _burst(port, path, body, keep_alive)
    lost = [r for r in results if r is not True]
    assert not lost, f"{len(lost)} of {BURST} lost: {lost[:3]}"
    assert seconds < 30


def test_absurd_range_headers_are_answered(served):
    port, world = served
    path, body = _file(world)
    for rng, status in ((f"bytes={'9' * 5000}-", 416), (f"bytes=0-{'9' * 5000}", 206),
                        (f"bytes=-{'9' * 5000}", 206), ("bytes=5-2", 200), ("bytes=abc", 200)):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", path, headers={"Range": rng})
        r = c.getresponse()
        data = r.read()
        assert r.status == status, (rng[:30], r.status)
        if status != 416:
            assert data == body
        c.close()


def test_a_busy_server_announces_closing_a_keep_alive_connection(world, monkeypatch):
    """When most threads are taken, a keep-alive connection gives its thread back after a
    response, and that response says `Connection: close`: a client's next request then opens a
    new connection instead of being lost on the closed one (RemoteDisconnected)."""
    from tessera.store import server as srv_mod

    monkeypatch.setattr(srv_mod._StoreHTTPServer, "busy", property(lambda self: True))
    path, body = _file(world)
    with srv_mod.serve_store(world.store) as srv:
        port = int(srv.url.rsplit(":", 1)[1].strip("/"))
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(3):  # keep-alive from the client's side
            c.request("GET", path, headers={"Range": "bytes=0-63"})
            r = c.getresponse()
            assert r.status == 206 and r.read() == body[:64]
            assert r.getheader("Connection") == "close"
        c.close()
