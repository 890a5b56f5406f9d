"""The store client: tiles, regions (mosaics across the UTM zone border) and dry runs, on the
SIMULATED store of tests/store_world.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pyproj import Transformer
from shapely.geometry import box
from store_world import BBOX, NE, NW, SW, TILES, YEAR, CountingStore, stored, xy

from tessera.geo import utm_crs
from tessera.geo.grid import GridError, parse_tile_name, tile_of
from tessera.store.client import Client, ClientError, MissingTilesWarning


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
    assert run.export_bytes["geotiff-int8"] == m.shape[0] * m.shape[1] * 129 * 4  # + scale band
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


