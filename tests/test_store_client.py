"""The store client on SIMULATED stores (random embeddings on real grid tiles at 200 m), with
tiles on both sides of the UTM zone 31/32 border at 6 degrees E."""

from __future__ import annotations

import collections
import errno
import json

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import Point, box

import tessera.geotiff
import tessera.store.export
import tessera.store.mosaic
from tessera.geo import utm_crs
from tessera.store.client import Client, ClientError, MissingTilesWarning
from tessera.geo.grid import GridError, parse_tile_name, tile_of
from tessera.store.layout import geotiff_relpath
from tessera.store.local import LocalStore
from tessera.store.synthetic import build_simulated_store

NW, NE, SW, SE = "grid_5.95_45.05", "grid_6.05_45.05", "grid_5.95_44.95", "grid_6.05_44.95"
TILES = [NW, NE, SW, SE]
BBOX = (5.9, 44.9, 6.1, 45.1)
YEAR = 2022


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    build_simulated_store(root, TILES, [YEAR], resolution=200.0)
    build_simulated_store(root, [NW], [2021], resolution=200.0)  # one tile of another year
    return LocalStore(root)


@pytest.fixture(scope="module")
def client(store):
    return Client(store)


@pytest.fixture
def small_windows(monkeypatch):
    """Several windows per region, so window-by-window code paths and seams are exercised."""
    monkeypatch.setattr(tessera.store.mosaic, "WINDOW", 32)
    monkeypatch.setattr(tessera.store.export, "TIFF_BLOCK", 32)


def xy(t, x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def stored(store, tile, year=YEAR):
    e = store.manifest().entry(tile, year)
    return np.load(store.path(e.files["embeddings"])), np.load(store.path(e.files["scales"])), e


class CountingStore:
    """A store wrapper counting every file open."""

    def __init__(self, inner):
        self.inner = inner
        self.opens = collections.Counter()

    def manifest(self):
        return self.inner.manifest()

    def open_file(self, f, verify=False):
        self.opens[f.path] += 1
        return self.inner.open_file(f)

    def is_local(self, f):
        return self.inner.is_local(f)

    def describe(self):
        return f"counting {self.inner.describe()}"


# --- tiles ------------------------------------------------------------------------------------------

def test_fetch_tile_equals_stored_arrays_dequantised(client, store):
    q, s, e = stored(store, NE)
    t = client.fetch_tile(NE, YEAR)
    np.testing.assert_array_equal(t.embeddings, q.astype(np.float32) * s[..., None])
    assert t.embeddings.dtype == np.float32 and np.isnan(t.embeddings[~np.isfinite(s)]).all()
    assert (t.tile, t.year, t.crs.to_epsg()) == (NE, YEAR, 32632)
    assert tuple(t.transform)[:6] == e.transform
    raw = client.fetch_tile(6.05, 45.05, YEAR, dequantize=False)  # by lon/lat
    np.testing.assert_array_equal(raw.embeddings, q)
    np.testing.assert_array_equal(raw.scales, s)
    assert raw.tile == NE and raw.dequantized is False
    by_path = Client(str(store.root)).fetch_tile(NE, year=YEAR)  # a path opens a LocalStore
    np.testing.assert_array_equal(by_path.scales, s)


def test_fetch_tile_errors_name_tile_and_year(client):
    with pytest.raises(ClientError, match=r"grid_7\.05_45\.05.*2022.*not in the store"):
        client.fetch_tile("grid_7.05_45.05", YEAR)
    with pytest.raises(ClientError, match=r"grid_6\.05_45\.05.*2021.*it has 2022"):
        client.fetch_tile(NE, 2021)
    with pytest.raises(GridError, match="grid_6.00_45.05"):
        client.fetch_tile("grid_6.00_45.05", YEAR)


def test_iter_tiles_over_bbox_names_absent_tiles(client, store, tmp_path):
    with pytest.warns(MissingTilesWarning, match="grid_6.15_45.05"):
        it = client.iter_tiles((5.9, 44.9, 6.2, 45.1), YEAR)
    assert sorted(it.absent) == ["grid_6.15_44.95", "grid_6.15_45.05"]
    got = {t.tile: t for t in it}
    assert sorted(got) == sorted(TILES)
    q, s, _ = stored(store, SW)
    np.testing.assert_array_equal(got[SW].scales, s)
    assert all(t.absent == tuple(it.absent) for t in got.values())
    # the same region as a GeoJSON file and as a shapely geometry
    f = tmp_path / "r.geojson"
    f.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": box(5.91, 44.91, 5.99, 45.09).__geo_interface__}]}))
    assert sorted(t.tile for t in client.iter_tiles(f, YEAR)) == [SW, NW]
    assert [t.tile for t in client.iter_tiles(box(6.01, 45.01, 6.02, 45.02), YEAR)] == [NE]


# --- mosaics ----------------------------------------------------------------------------------------

def test_read_region_across_zone_border(client, store):
    m = client.read_region(BBOX, YEAR, dequantize=False)
    assert m.crs.to_epsg() == utm_crs(6.0, 45.0).to_epsg() == 32632  # the centre's zone
    assert m.transform.a == 200.0 and m.transform.c % 200 == 0 and m.transform.f % 200 == 0
    h, w = m.shape
    rows, cols = np.nonzero(m.valid)
    x, y = xy(m.transform, cols + 0.5, rows + 0.5)
    lon, lat = Transformer.from_crs(32632, 4326, always_xy=True).transform(x, y)
    checked = {}
    for name in (NW, SW):  # zone 31 tiles, warped into zone 32
        q, s, e = stored(store, name)
        t = parse_tile_name(name)
        inside = np.array([tile_of(a, b) == t for a, b in zip(lon, lat)])
        sx, sy = Transformer.from_crs(32632, 32631, always_xy=True).transform(
            x[inside], y[inside])
        cf, rf = xy(~e.affine, sx, sy)
        r0, c0 = np.floor(rf).astype(int), np.floor(cf).astype(int)
        clear = (np.minimum(np.abs(cf - np.round(cf)), np.abs(rf - np.round(rf))) > 0.01)
        ok = clear & np.isfinite(s[r0.clip(0, e.height - 1), c0.clip(0, e.width - 1)])
        rr, cc = rows[inside][ok], cols[inside][ok]
        np.testing.assert_array_equal(m.embeddings[rr, cc], q[r0[ok], c0[ok]])
        np.testing.assert_array_equal(m.scales[rr, cc], s[r0[ok], c0[ok]])
        checked[name] = ok.sum()
        # about as many valid pixels as the source tile has (same pixel size)
        assert abs(inside.sum() - e.valid_pixels) < 0.05 * e.valid_pixels
    assert min(checked.values()) > 1000
    # no NaN line along the zone seam: pixels within 1 km of 6 E, away from sea strips, have data
    xx, yy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    ax, ay = xy(m.transform, xx, yy)
    alon, alat = Transformer.from_crs(32632, 4326, always_xy=True).transform(ax, ay)
    seam = (np.abs(alon - 6.0) < 0.012) & (np.abs(alat - 45.0) > 0.015) & (alat > 44.905) & \
        (alat < 45.085)
    assert seam.sum() > 50 and m.valid[seam].all()


def test_same_zone_mosaic_is_exact(client, store, small_windows):
    m = client.read_region([NW, SW], YEAR, dequantize=False)
    assert m.crs.to_epsg() == 32631
    total = 0
    for name in (NW, SW):
        q, s, e = stored(store, name)
        c0 = round((e.transform[2] - m.transform.c) / 200.0)
        r0 = round((m.transform.f - e.transform[5]) / 200.0)
        v = np.isfinite(s)
        rr, cc = np.nonzero(v)
        np.testing.assert_array_equal(m.embeddings[rr + r0, cc + c0], q[rr, cc])
        np.testing.assert_array_equal(m.scales[rr + r0, cc + c0], s[rr, cc])
        total += v.sum()
    assert m.valid.sum() == total  # nothing else, nothing lost at the tile or window seams


def test_read_region_xarray_has_crs_and_transform(client):
    da = client.read_region_xarray(BBOX, YEAR)
    m = client.read_region(BBOX, YEAR)
    assert da.dims == ("band", "y", "x") and da.shape == (128, *m.shape)
    assert da.rio.crs.to_epsg() == 32632
    assert tuple(da.rio.transform())[:6] == tuple(m.transform)[:6]
    assert da.x.values[0] == m.transform.c + 100.0 and da.y.values[0] == m.transform.f - 100.0
    np.testing.assert_array_equal(da.values, m.embeddings.transpose(2, 0, 1))
    assert da.attrs["long_name"][127] == "A127"
    ds = client.read_region_xarray(BBOX, YEAR, dequantize=False)
    assert ds["embeddings"].dtype == np.int8 and ds["scales"].dims == ("y", "x")


# --- points -----------------------------------------------------------------------------------------

def test_sample_points_statuses_and_values(client, store):
    rng = np.random.default_rng(1)
    pts = np.column_stack([rng.uniform(5.91, 5.99, 50), rng.uniform(44.91, 44.98, 50)])
    sea = [5.95, 45.098]   # the simulated 'sea' strip along the north edge of grid_5.95_45.05
    absent = [7.05, 45.05]  # a tile the store does not have
    polar = [0.0, 85.0]     # beyond the grid
    emb, status = client.sample_points(np.vstack([pts, sea, absent, polar, [np.nan, 45]]), YEAR)
    assert status.tolist() == ["valid"] * 50 + ["nodata", "outside", "outside", "outside"]
    assert np.isnan(emb[50:]).all() and emb.dtype == np.float32 and emb.shape == (54, 128)
    q, s, e = stored(store, SW)
    x, y = Transformer.from_crs(4326, 32631, always_xy=True).transform(pts[:, 0], pts[:, 1])
    c, r = xy(~e.affine, x, y)
    r, c = np.floor(r).astype(int), np.floor(c).astype(int)
    np.testing.assert_array_equal(emb[:50], q[r, c].astype(np.float32) * s[r, c][:, None])
    # the sea point: its pixel in its tile has no data
    qn, sn, en = stored(store, NW)
    sx, sy = Transformer.from_crs(4326, 32631, always_xy=True).transform(*sea)
    cn, rn = xy(~en.affine, sx, sy)
    assert np.isnan(sn[int(rn), int(cn)])


def test_sample_points_match_the_mosaic_near_tile_edges(client):
    """Points straddling the edge between two same-zone tiles get the mosaic's pixel."""
    rng = np.random.default_rng(2)
    lon, lat = rng.uniform(5.905, 5.995, 300), rng.uniform(44.99, 45.01, 300)
    emb, status = client.sample_points((lon, lat), YEAR)
    m = client.read_region([NW, SW], YEAR, clip=False)
    x, y = Transformer.from_crs(4326, 32631, always_xy=True).transform(lon, lat)
    c, r = xy(~m.transform, x, y)
    px = m.embeddings[np.floor(r).astype(int), np.floor(c).astype(int)]
    np.testing.assert_array_equal(emb, px)
    assert set(status[np.isfinite(px[:, 0])]) == {"valid"}
    assert set(status[~np.isfinite(px[:, 0])]) == {"nodata"}
    assert 50 < (status == "valid").sum() < 300  # both kinds occur: the edge is exercised


def test_sample_points_geojson_and_geodataframe_like(client, tmp_path):
    lonlat = [(5.95, 44.95), (6.05, 44.95), (7.05, 45.05)]
    ref, ref_status = client.sample_points(np.array(lonlat), YEAR)
    assert ref_status.tolist() == ["valid", "valid", "outside"]
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": i}, "geometry": {"type": "Point",
                                                                   "coordinates": list(p)}}
        for i, p in enumerate(lonlat)]}
    f = tmp_path / "pts.geojson"
    f.write_text(json.dumps(fc))
    for src in (fc, f, str(f)):
        emb, status = client.sample_points(src, YEAR)
        np.testing.assert_array_equal(emb, ref)
        assert status.tolist() == ref_status.tolist()

    class FakeGDF:  # .geometry + .crs, in web mercator
        crs = "EPSG:3857"

        def __init__(self):
            t = Transformer.from_crs(4326, 3857, always_xy=True)
            self.geometry = [Point(*t.transform(*p)) for p in lonlat]

    emb, status = client.sample_points(FakeGDF(), YEAR)
    np.testing.assert_allclose(emb, ref)
    assert status.tolist() == ref_status.tolist()
    with pytest.raises(ClientError, match="feature 0 is LineString"):
        client.sample_points({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, YEAR)


def test_sample_points_reads_each_tile_once(store, monkeypatch):
    counting = CountingStore(store)
    c = Client(counting)
    loads = collections.Counter()
    real_load = np.load

    def load(path, *a, **k):
        loads[str(path)] += 1
        return real_load(path, *a, **k)

    monkeypatch.setattr(np, "load", load)
    rng = np.random.default_rng(3)
    pts = np.column_stack([rng.uniform(5.9, 6.2, 2000), rng.uniform(44.9, 45.1, 2000)])
    _, status = c.sample_points(pts, YEAR)
    assert {"valid", "nodata", "outside"} <= set(status)
    assert len(counting.opens) == 8 and set(counting.opens.values()) == {1}  # 4 tiles x 2 files
    assert len(loads) == 8 and set(loads.values()) == {1}


# --- dry run ----------------------------------------------------------------------------------------

def test_dry_run_numbers(client, store, tmp_path):
    region = (5.9, 44.9, 6.2, 45.1)
    run = client.dry_run(region, YEAR, formats=("geotiff", "geotiff-int8", "zarr", "tiles"))
    man = store.manifest().query(year=YEAR)
    sizes = {e.tile: e.files["embeddings"].size + e.files["scales"].size for e in man.entries()}
    assert sorted(run.tiles_present) == sorted(TILES) and len(run.tiles_absent) == 2
    assert run.files == 8 and run.bytes_total == sum(sizes.values())
    assert run.bytes_to_download == 0 and run.bytes_local == run.bytes_total  # a LocalStore
    with pytest.warns(MissingTilesWarning):
        m = client.read_region(region, YEAR, dequantize=False)
    assert (run.height, run.width) == m.shape and run.crs == "EPSG:32632"
    assert run.export_bytes["geotiff"] == m.shape[0] * m.shape[1] * 128 * 4
    assert run.export_bytes["geotiff-int8"] == m.shape[0] * m.shape[1] * 132
    assert run.export_bytes["tiles"] == sum(e.width * e.height * 512 for e in man.entries())
    text = str(run)
    assert "2 absent" in text and "grid_6.15_45.05" in text and "to download" in text

    class CachedStore(CountingStore):  # a remote store with a cache directory
        cache_dir = tmp_path / "cache"

        def is_local(self, f):
            p = self.cache_dir / f.path
            return p.is_file() and p.stat().st_size == f.size

    remote = Client(CachedStore(store))
    assert remote.dry_run(region, YEAR).bytes_to_download == run.bytes_total
    e = man.entries()[0]
    for k in ("embeddings", "scales"):
        dst = CachedStore.cache_dir / e.files[k].path
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(store.path(e.files[k]).read_bytes())
    assert remote.dry_run(region, YEAR).bytes_to_download == run.bytes_total - sizes[e.tile]


# --- GeoTIFF ----------------------------------------------------------------------------------------

def test_export_geotiff_matches_read_region(client, tmp_path, small_windows):
    m = client.read_region(BBOX, YEAR)
    path = client.export_geotiff(BBOX, YEAR, tmp_path / "out" / "r.tif")
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32632 and src.transform == m.transform
        assert src.count == 128 and src.dtypes[0] == "float32" and np.isnan(src.nodata)
        assert src.descriptions[0] == "A000" and src.descriptions[127] == "A127"
        tags = src.tags()
        assert tags["TESSERA_YEAR"] == "2022" and tags["TESSERA_VERSION"] == "simulated-random"
        assert set(tags["TESSERA_TILES"].split(",")) == set(TILES)
        assert src.profile["tiled"] and src.profile["compress"] == "deflate"
        assert src.block_shapes[0] == (32, 32)
        np.testing.assert_array_equal(src.read().transpose(1, 2, 0), m.embeddings)
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.tif"]
    with pytest.raises(FileExistsError):
        client.export_geotiff(BBOX, YEAR, path)

    raw = client.read_region(BBOX, YEAR, dequantize=False)
    p8 = client.export_geotiff(BBOX, YEAR, tmp_path / "r8.tif", dtype="int8", compress="zstd")
    with rasterio.open(p8) as src, rasterio.open(tmp_path / "r8_scales.tif") as sc:
        assert src.dtypes[0] == "int8" and src.nodata == -128 and src.count == 128
        expect = np.where(raw.valid[..., None], raw.embeddings, np.int8(-128))
        np.testing.assert_array_equal(src.read().transpose(1, 2, 0), expect)
        np.testing.assert_array_equal(sc.read(1), raw.scales)
        assert sc.transform == src.transform


def test_interrupted_geotiff_export_leaves_no_file_and_rerun_completes(client, tmp_path,
                                                                        monkeypatch,
                                                                        small_windows):
    real = tessera.geotiff.write_window
    calls = []

    def dying(dst, data, win):
        calls.append(win)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way
        real(dst, data, win)

    monkeypatch.setattr(tessera.geotiff, "write_window", dying)
    path = tmp_path / "r.tif"
    with pytest.raises(KeyboardInterrupt):
        client.export_geotiff(BBOX, YEAR, path)
    assert list(tmp_path.iterdir()) == []  # no final file, no partial left
    monkeypatch.setattr(tessera.geotiff, "write_window", real)
    client.export_geotiff(BBOX, YEAR, path)
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read().transpose(1, 2, 0),
                                      client.read_region(BBOX, YEAR).embeddings)


def test_no_space_left_leaves_nothing_corrupt(client, tmp_path, monkeypatch, small_windows):
    import zarr

    def full_disk(real):
        n = [0]

        def write(self, *a, **k):
            n[0] += 1
            if n[0] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, *a, **k)
        return write

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", full_disk(rasterio.io.DatasetWriter.write))
    with pytest.raises(OSError, match="no space left") as exc:
        client.export_geotiff(BBOX, YEAR, tmp_path / "r.tif", dtype="int8")
    assert exc.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(tessera.store.mosaic, "WINDOW", 32)
    monkeypatch.setattr(tessera.store.export, "TIFF_BLOCK", 32)

    real_set = zarr.Array.__setitem__
    monkeypatch.setattr(zarr.Array, "__setitem__", full_disk(real_set))
    out = tmp_path / "r.zarr"
    with pytest.raises(OSError, match="rerun continues") as exc:
        client.export_zarr(BBOX, YEAR, out)
    assert exc.value.errno == errno.ENOSPC and not out.exists()
    partial = zarr.open_group(str(tmp_path / ".r.zarr.partial"), mode="r")
    assert sum(partial.attrs["tessera:progress"].values()) >= 1  # windows before the failure

    def counted(real):
        n = [0]

        def setitem(self, *a, **k):
            n[0] += 1
            return real(self, *a, **k)
        return setitem, n

    setitem, resumed = counted(real_set)
    monkeypatch.setattr(zarr.Array, "__setitem__", setitem)
    client.export_zarr(BBOX, YEAR, out)  # resumes the partial store
    setitem, full = counted(real_set)
    monkeypatch.setattr(zarr.Array, "__setitem__", setitem)
    ref = client.export_zarr(BBOX, YEAR, tmp_path / "ref.zarr")
    assert 0 < resumed[0] < full[0]
    a, b = zarr.open_group(str(out), mode="r"), zarr.open_group(str(ref), mode="r")
    for zone in ("utm31n", "utm32n"):
        np.testing.assert_array_equal(a[zone]["embeddings"][:], b[zone]["embeddings"][:])
        np.testing.assert_array_equal(a[zone]["scales"][:], b[zone]["scales"][:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr", "ref.zarr"]


def test_export_tiles_geotiff_layout_and_resume(client, store, tmp_path):
    with pytest.warns(MissingTilesWarning, match="grid_7.05_45.05"):
        res = client.export_tiles_geotiff([NW, NE, "grid_7.05_45.05"], YEAR, tmp_path)
    assert res.absent == ["grid_7.05_45.05"] and len(res.written) == 2
    for name in (NW, NE):
        p = tmp_path / geotiff_relpath(YEAR, name)
        q, s, e = stored(store, name)
        with rasterio.open(p) as src:
            assert src.crs.to_string() == e.crs and tuple(src.transform)[:6] == e.transform
            np.testing.assert_array_equal(src.read().transpose(1, 2, 0),
                                          q.astype(np.float32) * s[..., None])
    again = client.export_tiles_geotiff([NW, NE], YEAR, tmp_path)
    assert again.written == [] and sorted(again.skipped) == sorted(res.written)


# --- Zarr -------------------------------------------------------------------------------------------

def test_export_zarr_round_trip_with_attributes(client, store, tmp_path):
    import zarr

    path = client.export_zarr(BBOX, YEAR, tmp_path / "r.zarr")
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["geoemb:dimensions"] == 128 and root.attrs["tessera:complete"] is True
    assert sorted(root.group_keys()) == ["utm31n", "utm32n"]
    for zone, epsg, tiles in (("utm31n", 32631, (NW, SW)), ("utm32n", 32632, (NE, SE))):
        g = root[zone]
        a = g.attrs
        assert a["proj:code"] == f"EPSG:{epsg}" and "UTM zone" in a["proj:wkt2"]
        assert {c["name"] for c in a["zarr_conventions"]} == {"geoemb:", "proj:", "spatial:"}
        assert a["geoemb:type"] == "pixel" and a["geoemb:data_type"] == "int8"
        assert a["tessera:version"] == "simulated-random" and a["geoemb:gsd"] == 200.0
        assert a["geoemb:quantization"]["scale"] == {"type": "array", "array_name": "scales",
                                                     "nodata": "NaN"}
        emb, sca = g["embeddings"], g["scales"]
        assert emb.dtype == np.int8 and sca.dtype == np.float32
        assert emb.shape == (*a["spatial:shape"], 128) and emb.chunks == (256, 256, 128)
        assert emb.metadata.dimension_names == ("y", "x", "band")
        t = a["spatial:transform"]
        assert a["spatial:bbox"] == [t[2], t[5] + t[4] * sca.shape[0], t[2] + t[0] * sca.shape[1],
                                     t[5]]
        q_all, s_all = emb[:], sca[:]
        assert g["x"][0] == t[2] + 100.0
        total = 0
        for name in tiles:  # native pixels: each tile pasted at its offset
            q, s, e = stored(store, name)
            c0, r0 = round((e.transform[2] - t[2]) / 200), round((t[5] - e.transform[5]) / 200)
            rr, cc = np.nonzero(np.isfinite(s))
            np.testing.assert_array_equal(q_all[rr + r0, cc + c0], q[rr, cc])
            np.testing.assert_array_equal(s_all[rr + r0, cc + c0], s[rr, cc])
            total += rr.size
        assert np.isfinite(s_all).sum() == total
        assert (q_all[~np.isfinite(s_all)] == 0).all()
