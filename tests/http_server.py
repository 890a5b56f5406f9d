"""A loopback HTTP server for tests: a directory served with Range requests, plus an optional
minimal STAC API over items held in memory.

    with serve(root) as srv:                       # static files (GDAL /vsicurl/ reads them)
        srv.url                                    # "http://127.0.0.1:PORT"
    with serve(root, StacApi.from_catalog(root / "catalog.json")) as srv:
        srv.url + "/"                              # landing page, /collections, /search

GDAL's /vsicurl/ needs `HEAD` (file size) and single byte ranges (`Range: bytes=a-b` answered
with 206 and `Content-Range`). A request with several ranges gets the whole file (200), which
HTTP allows. `srv.requests` records (method, path, Range header) for assertions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urljoin, urlsplit

CONFORMANCE = ["https://api.stacspec.org/v1.0.0/core",
               "https://api.stacspec.org/v1.0.0/item-search",
               "https://api.stacspec.org/v1.0.0/collections",
               "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core"]
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclasses.dataclass
class StacApi:
    """Collections and items as STAC dicts. Relative asset hrefs are relative to the served
    root and become absolute URLs in responses; links are rewritten to the API's own."""

    collections: list[dict[str, Any]]
    items: list[dict[str, Any]]

    @classmethod
    def from_catalog(cls, catalog: str | os.PathLike, root: str | os.PathLike | None = None
                     ) -> "StacApi":
        """Every collection and item of a static catalog on disk; asset hrefs made relative to
        `root` (default: the catalog's folder), the folder the server serves."""
        import pystac
        cat = pystac.Catalog.from_file(str(catalog))
        root = Path(root or Path(catalog).parent).resolve()
        collections, items = [], []
        for col in cat.get_all_collections():
            collections.append(col.to_dict(include_self_link=False, transform_hrefs=False))
            for item in col.get_items(recursive=True):
                d = item.to_dict(include_self_link=False, transform_hrefs=False)
                for key, asset in item.assets.items():
                    path = Path(asset.get_absolute_href()).resolve()
                    d["assets"][key]["href"] = path.relative_to(root).as_posix()
                d["collection"] = col.id
                items.append(d)
        return cls(collections, items)

    # --- responses -------------------------------------------------------------------------------

    def landing(self, base: str) -> dict[str, Any]:
        return {"type": "Catalog", "stac_version": "1.0.0", "id": "test-api",
                "description": "minimal STAC API for tests", "conformsTo": CONFORMANCE,
                "links": [
                    {"rel": "self", "href": f"{base}/", "type": "application/json"},
                    {"rel": "root", "href": f"{base}/", "type": "application/json"},
                    {"rel": "data", "href": f"{base}/collections", "type": "application/json"},
                    {"rel": "conformance", "href": f"{base}/conformance"},
                    {"rel": "search", "href": f"{base}/search", "method": "GET",
                     "type": "application/geo+json"},
                    {"rel": "search", "href": f"{base}/search", "method": "POST",
                     "type": "application/geo+json"}]}

    def collection(self, base: str, cid: str) -> dict[str, Any] | None:
        for c in self.collections:
            if c["id"] == cid:
                c = dict(c)
                c["links"] = [
                    {"rel": "self", "href": f"{base}/collections/{cid}"},
                    {"rel": "root", "href": f"{base}/"}, {"rel": "parent", "href": f"{base}/"},
                    {"rel": "items", "href": f"{base}/collections/{cid}/items"}]
                return c
        return None

    def item(self, base: str, d: dict[str, Any]) -> dict[str, Any]:
        cid = d["collection"]
        d = json.loads(json.dumps(d))
        for asset in d["assets"].values():
            asset["href"] = urljoin(f"{base}/", asset["href"])
        d["links"] = [{"rel": "self", "href": f"{base}/collections/{cid}/items/{d['id']}"},
                      {"rel": "collection", "href": f"{base}/collections/{cid}"},
                      {"rel": "parent", "href": f"{base}/collections/{cid}"},
                      {"rel": "root", "href": f"{base}/"}]
        return d

    def search(self, base: str, params: dict[str, Any]) -> dict[str, Any]:
        """`params`: collections (list), ids (list), bbox (4 floats), datetime ("a/b", open
        ends as ".." or empty)."""
        cols, ids = params.get("collections"), params.get("ids")
        bbox, interval = params.get("bbox"), _interval(params.get("datetime"))
        feats = [self.item(base, d) for d in self.items
                 if (not cols or d["collection"] in cols) and (not ids or d["id"] in ids)
                 and (not bbox or _bbox_hit(d["bbox"], bbox)) and _time_hit(d, interval)]
        return {"type": "FeatureCollection", "features": feats, "numberMatched": len(feats),
                "numberReturned": len(feats), "context": {"returned": len(feats),
                                                          "matched": len(feats)},
                "links": [{"rel": "root", "href": f"{base}/"}]}


def _bbox_hit(a: list[float], b: list[float]) -> bool:
    a = [a[0], a[1], a[3], a[4]] if len(a) == 6 else a
    return not (a[2] < b[0] or a[0] > b[2] or a[3] < b[1] or a[1] > b[3])


def _parse_dt(text: str | None) -> _dt.datetime | None:
    if text in (None, "", ".."):
        return None
    d = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=_dt.timezone.utc)


def _interval(value: str | None) -> tuple[_dt.datetime | None, _dt.datetime | None] | None:
    if not value:
        return None
    if "/" not in value:
        t = _parse_dt(value)
        return t, t
    a, b = value.split("/", 1)
    return _parse_dt(a), _parse_dt(b)


def _time_hit(item: dict[str, Any], interval: tuple | None) -> bool:
    if interval is None:
        return True
    p = item["properties"]
    start = _parse_dt(p.get("datetime") or p.get("start_datetime"))
    end = _parse_dt(p.get("datetime") or p.get("end_datetime"))
    lo, hi = interval
    return (hi is None or start <= hi) and (lo is None or end >= lo)


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: GDAL reuses its connections
    disable_nagle_algorithm = True  # else headers and body sent apart stall 40 ms (delayed ACK)
    api: StacApi | None = None
    log: list[tuple[str, str, str | None]]
    head_only = False

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        self.log.append((method, self.path, self.headers.get("Range")))
        self.head_only = method == "HEAD"
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = urlsplit(self.path)
        if self.api is not None and self._api(method, parts.path.rstrip("/") or "/",
                                              parts.query, body):
            return
        if method == "POST":
            self._json({"code": "NotFound", "description": self.path}, 404)
        else:
            self._file()

    # --- the STAC API ----------------------------------------------------------------------------

    def _api(self, method: str, path: str, query: str, body: bytes) -> bool:
        api, base = self.api, self.base
        if path == "/":
            self._json(api.landing(base))
        elif path == "/conformance":
            self._json({"conformsTo": CONFORMANCE})
        elif path == "/collections":
            self._json({"collections": [api.collection(base, c["id"]) for c in api.collections],
                        "links": [{"rel": "self", "href": f"{base}/collections"}]})
        elif path.startswith("/collections/") and path.count("/") == 2:
            c = api.collection(base, path.split("/")[2])
            self._json(c or {"code": "NotFound", "description": f"no collection {path}"},
                       200 if c else 404)
        elif path == "/search":
            if method == "POST":
                params = json.loads(body or b"{}")
            else:
                q = {k: v[-1] for k, v in parse_qs(query).items()}
                params = {"datetime": q.get("datetime")}
                for key in ("collections", "ids"):
                    if q.get(key):
                        params[key] = q[key].split(",")
                if q.get("bbox"):
                    params["bbox"] = [float(v) for v in q["bbox"].split(",")]
            self._json(api.search(base, params))
        else:
            return False
        return True

    def _json(self, doc: Any, status: int = 200) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)

    # --- files with Range ------------------------------------------------------------------------

    def _file(self) -> None:
        path = self.translate_path(self.path)  # drops the query string, stays under the root
        if not os.path.isfile(path):
            self._json({"code": "NotFound", "description": self.path}, 404)
            return
        size = os.path.getsize(path)
        start, end, status = 0, size - 1, 200
        m = _RANGE.match(self.headers.get("Range") or "")
        if m and m.group(1) + m.group(2):  # one range; several ranges -> whole file
            a, b = m.groups()
            if a:
                start, end = int(a), min(int(b), size - 1) if b else size - 1
            else:  # suffix range: the last b bytes
                start, end = max(size - int(b), 0), size - 1
            if start > end or start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not self.head_only:
            with open(path, "rb") as f:
                f.seek(start)
                self.wfile.write(f.read(end - start + 1))


@dataclasses.dataclass
class Served:
    url: str                                  # "http://127.0.0.1:PORT", no trailing slash
    requests: list[tuple[str, str, str | None]]  # (method, path, Range header)


@contextlib.contextmanager
def serve(root: str | os.PathLike, api: StacApi | None = None) -> Iterator[Served]:
    """Serve `root` on 127.0.0.1 (an ephemeral port) from a daemon thread; with `api`, also the
    STAC API routes (`/`, `/conformance`, `/collections[/{id}]`, `/search`)."""
    log: list[tuple[str, str, str | None]] = []
    handler = type("Handler", (_Handler,), {"api": api, "log": log})

    def make(*args: Any, **kw: Any) -> _Handler:
        return handler(*args, directory=str(root), **kw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), make)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="test-http", daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_address[1]}", log)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
