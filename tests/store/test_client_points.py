"""The store client: embeddings at points (statuses, values near tile edges, input forms, one
read per tile), on the SIMULATED store of tests/store_world.py."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
from pyproj import Transformer
from shapely.geometry import Point
from store_world import NW, SW, YEAR, CountingStore, stored, xy

from tessera.store.client import Client, ClientError


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


