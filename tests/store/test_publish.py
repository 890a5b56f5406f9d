"""`tessera store publish` / `import` (tessera.store.publish), and GeoTessera's layouts over
HTTP: the real geotessera clients (0.7.5 and 0.11.0, their own venvs) read a published store
locally and through `tessera serve`, and return what tessera's client returns; tessera's
HttpStore reads every GeoTessera layout a server holds, fetching only what a request needs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from geotessera_layouts import VENVS, geotessera_python, LAYOUTS, write_store
from typer.testing import CliRunner

from tessera.cli import app
from tessera.errors import ExistsError, StoreError
from tessera.geo.grid import parse_tile_name
from tessera.store.client import Client
from tessera.store.http import HttpStore
from tessera.store.local import LocalStore
from tessera.store.publish import import_store, publish
from tessera.store.server import StoreRequestHandler, serve_store
from tessera.store.synthetic import simulated_tile_arrays

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "geotessera_probe.py"
TILES = ["grid_0.15_52.05", "grid_-0.05_52.05"]
YEARS = [2023, 2024]
POINTS = [(0.15, 52.05), (0.11, 52.01), (-0.05, 52.06), (-0.01, 52.09), (5.0, 5.0)]


def _store(root: Path, model: str = "v1", years: list[int] = YEARS) -> LocalStore:
    st = LocalStore(root)
    for y in years:
        for name in TILES:
            t = parse_tile_name(name)
            q, s, m, g = simulated_tile_arrays(t, y, 500.0, 0)
            st.write_tile(t, y, q, s, m, version="1.0", model=model, weights="test-weights",
                          crs=g.crs, transform=g.transform)
    return st


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, Path]:
    base = tmp_path_factory.mktemp("pub")
    st = _store(base / "store")
    publish(st, base / "www" / "v1")
    return st, base / "www" / "v1"


def test_publish_lays_out_both_registries_and_links_the_tiles(
        published: tuple[LocalStore, Path]) -> None:
    st, pub = published
    reg = pd.read_parquet(pub / "registry.parquet")
    assert b"geo" in pq.read_schema(pub / "registry.parquet").metadata
    assert len(reg) == 4 and {"hash", "scales_hash", "file_size", "scales_size", "mtime"} <= \
        set(reg.columns)
    man = pd.read_parquet(pub / "manifest.parquet")
    assert set(man["version"]) == {"1.0"} and set(man["variant"]) == {"vultr"}
    assert (man["grid_size"].to_numpy() > 0).all()
    pd.testing.assert_frame_equal(man, pd.read_parquet(pub / "npy/v1/manifest.parquet"))
    for e in st.manifest().entries():
        src = st.path(e.files["embeddings"])
        for d in ("global_0.1_degree_representation", "npy/v1"):
            dst = pub / d / str(e.year) / e.tile / f"{e.tile}.npy"
            assert os.stat(dst).st_ino == os.stat(src).st_ino  # a hard link, not a copy
        row = reg[(reg["year"] == e.year) & np.isclose(reg["lon"], e.lon)
                  & np.isclose(reg["lat"], e.lat)].iloc[0]
        assert row["hash"] == e.files["embeddings"].sha256
        assert row["scales_hash"] == e.files["scales"].sha256
        sums = (pub / "global_0.1_degree_representation" / str(e.year) / e.tile / "SHA256"
                ).read_text()
        assert f"{e.files['embeddings'].sha256}  {e.tile}.npy" in sums
    assert json.loads((pub / "tessera_provenance.json").read_text())["model"] == "v1"


def test_published_and_imported_stores_read_the_same(published: tuple[LocalStore, Path],
                                                     tmp_path: Path) -> None:
    st, pub = published
    ours, theirs = Client(st), Client(pub)
    assert theirs.years() == YEARS
    for year in YEARS:
        a, sa = ours.sample_points(POINTS, year)
        b, sb = theirs.sample_points(POINTS, year)
        np.testing.assert_array_equal(a, b)
        assert list(sa) == list(sb)
    back = import_store(pub, tmp_path / "back")
    assert back.tiles == 4 and back.copied == 0
    src = {(e.tile, e.year): e for e in st.manifest().entries()}
    for e in LocalStore(tmp_path / "back").manifest().entries():
        o = src[(e.tile, e.year)]
        assert (e.model, e.dims, e.weights, e.version) == (o.model, o.dims, o.weights, o.version)
        assert (e.crs, e.transform, e.width, e.height, e.valid_pixels) == \
            (o.crs, o.transform, o.width, o.height, o.valid_pixels)
        for k in ("embeddings", "scales"):
            assert e.files[k].sha256 == o.files[k].sha256
    assert LocalStore(tmp_path / "back").check().ok


def test_publish_refuses_what_it_cannot_do(published: tuple[LocalStore, Path],
                                           tmp_path: Path) -> None:
    st, pub = published
    before = sorted(p.name for p in pub.iterdir())
    with pytest.raises(ExistsError, match="exists"):
        publish(st, pub)
    assert sorted(p.name for p in pub.iterdir()) == before
    mixed = _store(tmp_path / "mixed", model="v1", years=[2023])
    _store(tmp_path / "mixed", model="tiny", years=[2024])
    with pytest.raises(StoreError, match="tiles of 2 models.*--year"):
        publish(mixed, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    res = publish(mixed, tmp_path / "out", years=[2024])
    assert res.dataset == "tiny" and (tmp_path / "out/npy/tiny/manifest.parquet").is_file()
    assert "version" not in pd.read_parquet(tmp_path / "out/manifest.parquet").columns
    with pytest.raises(StoreError, match="no tiles to publish"):
        publish(mixed, tmp_path / "none", years=[1999])


@pytest.mark.parametrize("mode", ["local", "http"])
@pytest.mark.parametrize("version", ["0.7.5", "0.11.0"])
def test_real_geotessera_reads_a_published_store(published: tuple[LocalStore, Path],
                                                 tmp_path: Path, version: str,
                                                 mode: str) -> None:
    py = geotessera_python(version)
    st, pub = published
    args = [str(py), str(PROBE), "", str(tmp_path / "gt.npz"),
            *(f"{lon},{lat}" for lon, lat in POINTS)]
    if mode == "local":
        args[2] = str(pub)
        res = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    else:
        log: list = []
        with serve_store(pub.parent, md5_etags=True, log=log.append) as srv:
            args[2] = srv.url
            res = subprocess.run(args, capture_output=True, text=True, timeout=300,
                                 cwd=tmp_path)
        assert any(r.path.endswith(".npy") and r.status == 200 for r in log)
    assert res.returncode == 0, res.stderr[-3000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen["version"] == version and seen["network"] == []
    assert seen["years"] == YEARS
    gt = np.load(tmp_path / "gt.npz")
    c = Client(st)
    year, lon, lat = seen["tile"]
    raster = c.fetch_tile(lon, lat, year)
    np.testing.assert_array_equal(raster.embeddings, gt["tile_embedding"])
    assert raster.crs.to_string() == seen["crs"]
    np.testing.assert_allclose(list(raster.transform)[:6], seen["transform"])
    ours, status = c.sample_points(POINTS, year)
    np.testing.assert_array_equal(ours, gt["samples"])
    assert list(status)[-1] == "outside"
    assert len(seen["tiffs"]) == len(TILES)


def _http_client(url: str, tmp_path: Path, **kw: object) -> Client:
    return Client(HttpStore(url, cache_dir=tmp_path / "cache", retries=0, **kw))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_our_client_reads_each_geotessera_layout_over_http(layout: str, tmp_path: Path) -> None:
    root = write_store(tmp_path / "s", layout, TILES, [2024])
    local = Client(root)
    log: list = []
    with serve_store(root, md5_etags=layout != "registry", log=log.append) as srv:
        c = _http_client(srv.url, tmp_path)
        assert c.years() == [2024] and sorted(c.manifest.tiles()) == sorted(TILES)
        got, status = c.sample_points(POINTS[:1], 2024)  # one tile only
        want, _ = local.sample_points(POINTS[:1], 2024)
        np.testing.assert_array_equal(got, want)
        assert list(status) == ["valid"]
        fetched = {r.path for r in log if r.status in (200, 206)}
        assert not any("grid_-0.05_52.05" in p for p in fetched), fetched  # never touched
        got, status = c.sample_points(POINTS, 2024)
        want, wstatus = local.sample_points(POINTS, 2024)
        np.testing.assert_array_equal(got, want)
        assert list(status) == list(wstatus)
        e, le = c.manifest.entry(TILES[0], 2024), local.manifest.entry(TILES[0], 2024)
        assert (e.crs, e.transform, e.width, e.height) == (le.crs, le.transform, le.width,
                                                            le.height)


def test_http_downloads_are_checked_against_md5_etags(tmp_path: Path) -> None:
    root = write_store(tmp_path / "s", "manifest", TILES, [2024])

    class WrongMd5(StoreRequestHandler):
        def send_header(self, keyword: str, value: str) -> None:
            if keyword == "ETag" and self.path.endswith("_scales.npy"):
                value = '"0123456789abcdef0123456789abcdef"'
            super().send_header(keyword, value)

    with serve_store(root, md5_etags=True, handler=WrongMd5) as srv:
        c = _http_client(srv.url, tmp_path)
        with pytest.raises(StoreError, match=r"does not match.*MD5 0123456789abcdef"):
            c.sample_points(POINTS[:1], 2024)
    assert not list((tmp_path / "cache").rglob("*_scales.npy"))  # nothing unverified kept


def test_http_bad_geotessera_stores_get_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with serve_store(tmp_path / "empty") as srv:
        with pytest.raises(StoreError, match=r"not a store: no manifest.parquet.*registry"):
            _http_client(srv.url, tmp_path / "a").years()
    root = write_store(tmp_path / "s", "mirror", TILES, [2024])
    with serve_store(root) as srv:
        with pytest.raises(StoreError, match=r"not a store.*npy/v2/manifest.parquet"):
            _http_client(srv.url, tmp_path / "b", dataset_version="v2").years()
        assert _http_client(srv.url, tmp_path / "c", dataset_version="v1").years() == [2024]
    (root / "landmasks/v1/landmasks.parquet").unlink()
    with serve_store(root) as srv:
        with pytest.raises(StoreError, match=r"landmasks.parquet: not on the server"):
            _http_client(srv.url, tmp_path / "d").years()


def test_cli_publish_and_import(published: tuple[LocalStore, Path], tmp_path: Path) -> None:
    st, _ = published
    runner = CliRunner()
    res = runner.invoke(app, ["store", "publish", str(st.root), "-o", str(tmp_path / "pub"),
                              "--year", "2024", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "2 tile-years of v1" in res.output
    assert pd.read_parquet(tmp_path / "pub/registry.parquet")["year"].unique().tolist() == [2024]
    res = runner.invoke(app, ["store", "import", str(tmp_path / "pub"), "-o",
                              str(tmp_path / "back"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert Client(tmp_path / "back").years() == [2024]
    res = runner.invoke(app, ["store", "import", str(tmp_path / "pub"), "-o",
                              str(tmp_path / "back"), "--no-progress"])
    assert res.exit_code == 2 and "exists" in res.output


@pytest.mark.parametrize("version", ["0.7.5", "0.11.0"])
def test_geotessera_registry_tools_accept_and_index_a_published_store(
        published: tuple[LocalStore, Path], tmp_path: Path, version: str) -> None:
    """geotessera's own producer tool checks the published tree (sha256 against its SHA256
    files) and builds registries from it, which tessera reads like its own (<= 0.8 `scan`;
    >= 0.10 `file-scan` for the manifest)."""
    py = geotessera_python(version)
    tool = py.parent / "geotessera-registry"
    st, pub = published
    tree = tmp_path / "tree"
    tree.mkdir()
    for d in ("global_0.1_degree_representation", "global_0.1_degree_tiff_all"):
        (tree / d).symlink_to(pub / d)
    if version == "0.7.5":  # 0.11's `check` calls numpy.lib.format._read_array_header, which
        # the numpy its own pins install no longer has: it fails on every .npy, ours or not
        res = subprocess.run([str(tool), "check", "--verify-hashes", str(tree)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0 and "All hashes verified" in res.stdout, res.stdout[-2000:]
    res = subprocess.run([str(tool), "scan", str(tree), "--registry-dir", str(tree)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    keys = ["year", "lon", "lat", "hash", "scales_hash", "file_size", "scales_size"]
    theirs = pd.read_parquet(tree / "registry.parquet")[keys].sort_values(keys[:3])
    ours = pd.read_parquet(pub / "registry.parquet")[keys].sort_values(keys[:3])
    pd.testing.assert_frame_equal(theirs.reset_index(drop=True), ours.reset_index(drop=True))
    if version != "0.7.5":  # the >= 0.10 manifest, from its file-scan
        res = subprocess.run([str(tool), "file-scan", str(tree / "global_0.1_degree_"
                                                                 "representation"),
                              "--output", str(tmp_path / "manifest.parquet")],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        (tree / "registry.parquet").unlink()
        os.replace(tmp_path / "manifest.parquet", tree / "manifest.parquet")
        assert LocalStore(tree).geotessera_layout().kind == "manifest"
    a, b = Client(st), Client(tree)
    assert b.years() == YEARS
    for year in YEARS:
        np.testing.assert_array_equal(a.sample_points(POINTS, year)[0],
                                      b.sample_points(POINTS, year)[0])


GT_ZARR = """
import json, socket, sys
import numpy as np
_connect = socket.socket.connect
def _only_loopback(self, address):
    if isinstance(address, tuple) and address[0] == "127.0.0.1":
        return _connect(self, address)
    raise OSError(f"network refused by the test: {address}")
socket.socket.connect = _only_loopback
from geotessera.store import GeoTesseraZarr
url, out, year = sys.argv[1], sys.argv[2], int(sys.argv[3])
pts = [tuple(map(float, p.split(","))) for p in sys.argv[4:]]
from obstore.store import HTTPStore
from zarr.storage import ObjectStore
# geotessera opens http(s) URLs with obstore, which refuses plain http unless allowed: the
# same store object, allowed (loopback here)
z = GeoTesseraZarr(ObjectStore(HTTPStore.from_url(url, client_options={"allow_http": True}),
                               read_only=True))
vals = np.asarray(z.sample_points(pts, year, search_px=0, cross_zone=False), np.float32)
np.save(out, vals)
print(json.dumps({"years": [int(y) for y in z.years]}))
"""


def test_publish_zarr_is_read_over_http_by_us_and_by_geotessera(
        published: tuple[LocalStore, Path], tmp_path: Path) -> None:
    """`publish --zarr` adds GeoTessera's Zarr store; `tessera serve` serves it; `tessera
    sample -s URL.zarr` reads it lazily (shard index and chunks by range requests), and so
    does the real geotessera 0.11 `GeoTesseraZarr`, with the same values as the tile store."""
    st, _ = published
    runner = CliRunner()
    res = runner.invoke(app, ["store", "publish", str(st.root), "-o", str(tmp_path / "www/v1"),
                              "--zarr", "--no-progress"])
    assert res.exit_code == 0, res.output
    pts = tmp_path / "pts.csv"
    pd.DataFrame(POINTS, columns=["lon", "lat"]).to_csv(pts, index=False)
    want, wstatus = Client(st).sample_points(POINTS, 2024)
    log: list = []
    with serve_store(tmp_path / "www", log=log.append) as srv:
        url = f"{srv.url}/v1/zarr/v1.zarr"
        res = runner.invoke(app, ["sample", str(pts), "--year", "2024", "-s", url,
                                  "-o", str(tmp_path / "z.parquet")])
        assert res.exit_code == 0, res.output
        got = pd.read_parquet(tmp_path / "z.parquet")
        np.testing.assert_array_equal(got[[f"emb_{i:03d}" for i in range(128)]].to_numpy(),
                                      want)
        assert list(got["status"]) == list(wstatus)
        if (VENVS / "0.11.0" / ".installed").exists():
            py = geotessera_python("0.11.0")
            r = subprocess.run([str(py), "-c", GT_ZARR, url, str(tmp_path / "gt.npy"), "2024",
                                *(f"{lon},{lat}" for lon, lat in POINTS)],
                               capture_output=True, text=True, timeout=300, cwd=tmp_path)
            assert r.returncode == 0, r.stderr[-3000:]
            assert json.loads(r.stdout.strip().splitlines()[-1])["years"] == YEARS
            np.testing.assert_array_equal(np.load(tmp_path / "gt.npy"), want)
    res = runner.invoke(app, ["sample", str(pts), "--year", "2020", "-s",
                              str(tmp_path / "www/v1/zarr/v1.zarr"), "-o", str(tmp_path / "x.pq")])
    assert res.exit_code == 2 and "2020" in res.output


def test_a_zarr_store_over_http_is_read_by_byte_ranges(tmp_path: Path) -> None:
    """One point of a 50 m tile: the shard's index (a suffix range) and one inner chunk, not
    the shard file."""
    from tessera.store.gtzarr import ZarrStore, write_zarr_store
    from tessera.store.synthetic import build_simulated_store

    st = build_simulated_store(tmp_path / "s", [TILES[0]], [2024], resolution=50.0)
    path = write_zarr_store(Client(st), tmp_path / "www" / "v1.zarr", [2024])
    log: list = []
    with serve_store(tmp_path / "www", log=log.append) as srv:
        got, status = ZarrStore(f"{srv.url}/v1.zarr").sample_points(POINTS[:1], 2024)
    np.testing.assert_array_equal(got, Client(st).sample_points(POINTS[:1], 2024)[0])
    emb = [r for r in log if "/embeddings/c/" in r.path]
    shard = next(path.glob("utm31/embeddings/c/*/*/*/*")).stat().st_size
    assert emb and all(r.status == 206 for r in emb)
    assert any(r.range.startswith("bytes=-") for r in emb)  # the shard index, at its end
    assert sum(r.nbytes for r in emb) < shard / 4


def test_export_and_visualize_from_a_zarr_store(published: tuple[LocalStore, Path],
                                               tmp_path: Path) -> None:
    """`export -s STORE.zarr -o OUT.tif` equals the tile store pixel for pixel (codes exact,
    float32 and int8), `visualize -s STORE.zarr` draws it, and commands that need tiles say
    what a Zarr store is."""
    import rasterio
    from pyproj import Transformer

    from tessera.store.gtzarr import write_zarr_store

    st, _ = published
    z = write_zarr_store(Client(st), tmp_path / "v1.zarr", YEARS)
    runner = CliRunner()
    bbox = "0.1,52.0,0.2,52.1"
    for dtype in ("float32", "int8"):
        res = runner.invoke(app, ["export", "-s", str(z), "--year", "2024", "--bbox", bbox,
                                  "--dtype", dtype, "-o", str(tmp_path / f"{dtype}.tif")])
        assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "float32.tif") as src:
        e = np.moveaxis(src.read(), 0, -1)
        rows, cols = np.nonzero(np.isfinite(e).all(axis=2))
        xs, ys = rasterio.transform.xy(src.transform, rows, cols)
        lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    assert rows.size > 100
    want, status = Client(st).sample_points((np.asarray(lon), np.asarray(lat)), 2024)
    assert (status == "valid").all()
    np.testing.assert_array_equal(e[rows, cols], want)
    with rasterio.open(tmp_path / "int8.tif") as src:
        q = np.moveaxis(src.read(), 0, -1)
    np.testing.assert_array_equal(q[rows, cols, :128] * q[rows, cols, 128:], want)
    res = runner.invoke(app, ["visualize", "-s", str(z), "--year", "2024", "--bbox", bbox,
                              "-o", str(tmp_path / "z.png"), "--no-progress"])
    assert res.exit_code == 0 and (tmp_path / "z.png").is_file(), res.output
    res = runner.invoke(app, ["coverage", "-s", str(z), "-o", str(tmp_path / "c.png")])
    assert res.exit_code == 2 and "a GeoTessera Zarr store, not a tile store" in res.output
