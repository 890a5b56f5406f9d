"""What GeoTessera users look for in the client: point metadata, band choice, probe with the
statuses valid / water / nodata / outside, fixed-size patches (across UTM zones) and a region read
strip by strip; on the SIMULATED store of tests/store_world.py, a store across the zone 30/31
border and stores in GeoTessera's layout with water in their landmasks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer
from store_world import BBOX, NE, NW, SW, YEAR, CountingStore, stored, xy

import tessera.store.client
from tessera.errors import InputError
from tessera.geo.crs import rio_crs
from tessera.geo.grid import parse_tile_name
from tessera.store.client import Client, ClientError, RegionStrips
from tessera.store.local import LocalStore
from tessera.store.points import is_landmask
from tessera.store.results import POINT_STATUSES, MissingTilesWarning, PointMetadata
from tessera.dims import check_bands, parse_bands
from tessera.store.synthetic import build_simulated_store, simulated_tile_arrays

from geotessera_layouts import write_store

GT_TILES = ["grid_0.15_52.05", "grid_-0.05_52.05"]
GT_YEAR = 2024
GT_RES = 500.0


# --- point metadata ------------------------------------------------------------------------------

def test_metadata_names_the_tile_and_pixel_read(client, store):
    rng = np.random.default_rng(7)
    lon, lat = rng.uniform(5.9, 6.1, 400), rng.uniform(44.9, 45.1, 400)
    lon, lat = np.append(lon, [7.05, 0.0]), np.append(lat, [45.05, 85.0])  # absent, beyond
    emb, status, meta = client.sample_points((lon, lat), YEAR, metadata=True)
    plain_emb, plain_status = client.sample_points((lon, lat), YEAR)
    np.testing.assert_array_equal(emb, plain_emb)
    assert status.tolist() == plain_status.tolist()
    assert isinstance(meta, PointMetadata) and len(meta) == lon.size
    assert status[-2:].tolist() == ["outside", "outside"]
    for k in (-2, -1):
        assert meta.tile[k] == "" and meta.crs[k] == "" and np.isnan(meta.tile_lon[k])
        assert np.isnan(meta.tile_lat[k]) and meta.pixel_row[k] == -1 == meta.pixel_col[k]
    # every point in a stored tile: the value is the stored pixel the metadata names
    arrays = {}
    for i in np.nonzero(status != "outside")[0]:
        t = meta.tile[i]
        if t not in arrays:
            arrays[t] = stored(store, t)
        q, s, e = arrays[t]
        assert meta.crs[i] == e.crs and (meta.tile_lon[i], meta.tile_lat[i]) == (e.lon, e.lat)
        r, c = meta.pixel_row[i], meta.pixel_col[i]
        if status[i] == "valid":
            np.testing.assert_array_equal(emb[i], q[r, c].astype(np.float32) * s[r, c])
        else:
            assert r == -1 or np.isnan(s[r, c])
    assert len(arrays) == 4 and {e[2].crs for e in arrays.values()} == {"EPSG:32631",
                                                                        "EPSG:32632"}
    # away from cell edges: the point's own tile, the pixel containing it
    x, y = Transformer.from_crs(4326, 32631, always_xy=True).transform(5.95, 44.95)
    _, _, e = arrays[SW]
    c, r = xy(~e.affine, x, y)
    _, _, m = client.sample_points([(5.95, 44.95)], YEAR, metadata=True)
    assert m.records() == [{"tile": SW, "tile_lon": 5.95, "tile_lat": 44.95,
                            "pixel_row": int(r), "pixel_col": int(c), "crs": "EPSG:32631"}]
    assert list(m.columns()) == ["tile", "tile_lon", "tile_lat", "pixel_row", "pixel_col", "crs"]
    records = meta.records()
    assert records[-1] is None and records[0] is not None


# --- bands ---------------------------------------------------------------------------------------

def test_parse_bands():
    assert parse_bands("0,5,127", 128) == [0, 5, 127]
    assert parse_bands(" 0-3 , 10 ", 128) == [0, 1, 2, 3, 10]
    assert parse_bands("127,0", 128) == [127, 0]  # the order given
    assert parse_bands("7-7", 8) == [7]
    for text, words in (("", "empty"), ("a", "'a'"), ("5-2", "backwards"),
                        ("0-200", "band 128 is beyond the store's 128 dimensions"),
                        ("1,2,1", "band 1 is given twice"), ("-1", "'-1'"), ("1,", "''"),
                        ("1.5", "'1.5'"), ("64", "64 dimensions")):
        with pytest.raises(InputError, match=words) as info:
            parse_bands(text, 64 if text == "64" else 128)
        assert "\n" not in str(info.value)
    assert check_bands(np.array([3, 1]), 4) == [3, 1]
    with pytest.raises(InputError, match="not a band index"):
        check_bands([True], 4)


def test_sample_points_bands(client):
    pts = [(5.95, 44.95), (6.05, 45.0), (5.95, 45.099), (7.05, 45.05)]
    full, status = client.sample_points(pts, YEAR)
    some, some_status = client.sample_points(pts, YEAR, bands=[127, 0, 5])
    assert some.shape == (4, 3) and some.dtype == np.float32
    np.testing.assert_array_equal(some, full[:, [127, 0, 5]])
    assert some_status.tolist() == status.tolist()
    none_read, _ = client.sample_points([(7.05, 45.05)], YEAR, bands=[1, 2])
    assert none_read.shape == (1, 2) and np.isnan(none_read).all()
    with pytest.raises(InputError, match="band 128 is beyond the store's 128"):
        client.sample_points(pts, YEAR, bands=[0, 128])


# --- statuses, probe and a year the store does not hold -----------------------------------------

def _gt_landmask(name: str, scales: np.ndarray) -> np.ndarray:
    """Water where there is no data, except the west half of the 'sea' strip: land without
    data there (cloud, say) -> "nodata"."""
    land = np.isfinite(scales).astype(np.uint8)
    strip = max(1, scales.shape[0] // 10)
    land[:strip, : scales.shape[1] // 2] = 1
    return land


@pytest.fixture(scope="module")
def gt_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("gt_water") / "registry"
    return write_store(root, "registry", GT_TILES, [GT_YEAR], resolution=GT_RES,
                       landmask=_gt_landmask)


def _strip_pixel(tile: str, west: bool) -> tuple[float, float, int, int]:
    """(lon, lat, row, col) of a pixel centre inside the tile's cell in its 'sea' strip, in the
    west (land) or east (water) half."""
    t = parse_tile_name(tile)
    _, s, _, g = simulated_tile_arrays(t, GT_YEAR, GT_RES)
    roi = g.roi()
    strip, half = max(1, s.shape[0] // 10), s.shape[1] // 2
    cols = np.arange(s.shape[1])
    for r in range(strip - 1, -1, -1):
        ok = (roi[r] == 1) & ((cols < half) if west else (cols >= half))
        ok &= (cols > 1) & (cols < s.shape[1] - 2)
        if ok.any():
            c = int(np.nonzero(ok)[0][len(np.nonzero(ok)[0]) // 2])
            break
    else:
        raise AssertionError("no strip pixel inside the cell")
    assert np.isnan(s[r, c])
    x, y = g.transform * (c + 0.5, r + 0.5)
    lon, lat = Transformer.from_crs(g.crs, 4326, always_xy=True).transform(x, y)
    return lon, lat, r, c


def test_water_nodata_valid_outside(gt_store):
    c = Client(gt_store)
    e = c.manifest.entry(GT_TILES[0], GT_YEAR)
    assert is_landmask(e)
    pts, want = [], []
    for tile in GT_TILES:
        for west, status in ((True, "nodata"), (False, "water")):
            lon, lat, *_ = _strip_pixel(tile, west)
            pts.append((lon, lat))
            want.append(status)
        t = parse_tile_name(tile)
        pts.append((t.lon, t.lat))
        want.append("valid")
    pts.append((5.0, 5.0))
    want.append("outside")
    emb, status, meta = c.sample_points(pts, GT_YEAR, metadata=True)
    assert status.tolist() == want
    assert set(status) == set(POINT_STATUSES)
    assert np.isnan(emb[status != "valid"]).all() and np.isfinite(emb[status == "valid"]).all()
    assert meta.tile[0] == GT_TILES[0] and meta.crs[0] == "EPSG:32631"
    assert meta.tile[3] == GT_TILES[1] and meta.crs[3] == "EPSG:32630"
    for (lon, lat), s, v in zip(pts, want, emb):
        got_v, got_s = c.probe(lon, lat, GT_YEAR)
        assert got_s == s and got_v.shape == (128,)
        np.testing.assert_array_equal(got_v, v)


def test_landmask_read_once_per_tile_and_only_when_needed(gt_store):
    counting = CountingStore(Client(gt_store).store)
    c = Client(counting)
    lon, lat, *_ = _strip_pixel(GT_TILES[0], False)
    pts = [(lon, lat)] * 5 + [(0.15, 52.05), (-0.05, 52.05)]
    _, status = c.sample_points(pts, GT_YEAR)
    assert status.tolist() == ["water"] * 5 + ["valid"] * 2
    masks = {p: n for p, n in counting.opens.items() if p.endswith(".tiff")}
    assert masks == {f"global_0.1_degree_tiff_all/{GT_TILES[0]}.tiff": 1}


def test_own_store_masks_are_not_landmasks(client, store):
    """A tessera store's mask marks the embedded pixels: no data there stays "nodata"."""
    e = store.manifest().entry(NW, YEAR)
    assert not is_landmask(e)
    assert client.probe(5.95, 45.098, YEAR)[1] == "nodata"


def test_a_year_the_store_does_not_hold_is_an_error(client):
    for call in (lambda: client.sample_points([(5.95, 44.95)], 2019),
                 lambda: client.probe(5.95, 44.95, 2019),
                 lambda: client.read_patch(5.95, 44.95, 2019),
                 lambda: client.iter_region(BBOX, 2019)):
        with pytest.raises(ClientError, match="year 2019 is not in the store .* 2021, 2022"):
            call()


# --- read_patch ----------------------------------------------------------------------------------

def _centres_lonlat(r) -> tuple[np.ndarray, np.ndarray]:
    h, w = r.shape
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x, y = xy(r.transform, cols.ravel(), rows.ravel())
    return Transformer.from_crs(r.crs, 4326, always_xy=True).transform(x, y)


def _assert_patch_is_the_points(c, patch, year):
    """Every pixel of the patch is what sample_points gives at its centre: exactly where the
    pixel comes from a tile of the patch's CRS (pasted), and but for a few pixels where it is
    warped from another zone (GDAL's warp approximates the transformation to ~1/8 px, so a
    location within a hair of a source pixel's edge may take the neighbour)."""
    lon, lat = (np.asarray(v, float) for v in _centres_lonlat(patch))
    emb, _, meta = c.sample_points((lon, lat), year, metadata=True)
    got = patch.embeddings.reshape(-1, emb.shape[1])
    same = ((got == emb) | (np.isnan(got) & np.isnan(emb))).all(axis=1)
    own = np.array([k == "" or rio_crs(k) == patch.crs for k in meta.crs])
    assert same[own].all()
    assert (~same[~own]).sum() <= max(2, 0.005 * same.size)


def test_read_patch_centred_on_the_tile_lattice(client, store):
    lon, lat = 5.951, 44.949
    p = client.read_patch(lon, lat, YEAR, size=24)
    assert p.shape == (24, 24) and p.embeddings.shape == (24, 24, 128)
    assert p.embeddings.dtype == np.float32 and p.crs.to_epsg() == 32631
    v, status = client.probe(lon, lat, YEAR)
    assert status == "valid"
    np.testing.assert_array_equal(p.embeddings[12, 12], v)
    _, _, e = stored(store, SW)
    off_c, off_r = xy(~e.affine, p.transform.c, p.transform.f)  # on the tile's lattice
    assert off_c == round(off_c) and off_r == round(off_r)
    assert np.isfinite(p.scales).all() and p.tiles == (SW,)
    _assert_patch_is_the_points(client, p, YEAR)
    odd = client.read_patch(lon, lat, YEAR, size=5, dequantize=False)
    assert odd.shape == (5, 5) and odd.embeddings.dtype == np.int8
    np.testing.assert_array_equal(odd.dequantize()[2, 2], v)
    # across the zone 31/32 border at 6 E, in zone 32 (the zone of 6.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingTilesWarning)
        q = client.read_patch(6.01, 45.0, YEAR, size=40)
    assert q.crs.to_epsg() == 32632 and set(q.tiles) == {NW, NE, SW, "grid_6.05_44.95"}
    _assert_patch_is_the_points(client, q, YEAR)


@pytest.fixture(scope="module")
def seam_client(tmp_path_factory):
    """Tiles on both sides of the zone 30/31 border at 0 E."""
    root = tmp_path_factory.mktemp("seam")
    build_simulated_store(root, ["grid_-0.05_52.05", "grid_0.05_52.05"], [GT_YEAR],
                          resolution=200.0)
    return Client(LocalStore(root))


@pytest.mark.parametrize("lon,epsg", [(-0.004, 32630), (0.004, 32631)])
def test_read_patch_across_utm_zones(seam_client, lon, epsg):
    p = seam_client.read_patch(lon, 52.05, GT_YEAR, size=40)
    assert p.shape == (40, 40) and p.crs.to_epsg() == epsg
    plon, _ = _centres_lonlat(p)
    plon = np.asarray(plon).reshape(40, 40)
    finite = np.isfinite(p.scales)
    assert finite[plon < -0.002].mean() > 0.95 and finite[plon > 0.002].mean() > 0.95
    assert sorted(p.tiles) == ["grid_-0.05_52.05", "grid_0.05_52.05"]
    _assert_patch_is_the_points(seam_client, p, GT_YEAR)
    v, status = seam_client.probe(lon, 52.05, GT_YEAR)
    assert status == "valid"
    np.testing.assert_array_equal(p.embeddings[20, 20], v)


def test_read_patch_in_a_given_crs(seam_client):
    p = seam_client.read_patch(-0.004, 52.06, GT_YEAR, size=30, crs="EPSG:32631")
    assert p.crs.to_epsg() == 32631 and p.shape == (30, 30)
    assert p.transform.c % 200 == 0 and p.transform.f % 200 == 0  # multiples of the pixel
    _assert_patch_is_the_points(seam_client, p, GT_YEAR)
    g = seam_client.read_patch(-0.004, 52.06, GT_YEAR, size=20, crs="EPSG:4326",
                               resolution=0.002)
    assert g.shape == (20, 20) and g.crs.to_epsg() == 4326 and np.isfinite(g.scales).any()
    with pytest.raises(ClientError, match="geographic, so give a resolution"):
        seam_client.read_patch(-0.004, 52.06, GT_YEAR, crs="EPSG:4326")
    with pytest.raises(ClientError, match="not a coordinate reference system"):
        seam_client.read_patch(-0.004, 52.06, GT_YEAR, crs="EPSG:999999")


def test_read_patch_bad_input(client):
    for size in (0, -3, 2.5, True):
        with pytest.raises(ClientError, match="expected a positive number of pixels"):
            client.read_patch(5.95, 44.95, YEAR, size=size)
    with pytest.raises(ClientError, match="none of the"):
        client.read_patch(20.05, 45.05, YEAR, size=8)
    with pytest.raises(ClientError, match="200"):
        client.read_patch(200.0, 45.0, YEAR)
    with pytest.warns(MissingTilesWarning, match="grid_5.85_44.95"):  # at the store's edge
        edge = client.read_patch(5.901, 44.95, YEAR, size=16)
    assert np.isnan(edge.scales[:, :4]).all() and np.isfinite(edge.scales[:, 10:]).all()


# --- iter_region ---------------------------------------------------------------------------------

@pytest.mark.parametrize("strip_rows", [7, 32, 500])
def test_iter_region_strips_concatenate_to_read_region(client, small_windows, strip_rows):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingTilesWarning)
        full = client.read_region(BBOX, YEAR)
        strips = client.iter_region(BBOX, YEAR, strip_rows=strip_rows)
    assert isinstance(strips, RegionStrips)
    h, w = full.shape
    assert strips.grid.height == h and strips.grid.width == w
    assert len(strips) == -(-h // strip_rows)
    got = list(strips)
    assert len(got) == len(strips) and list(strips) == []
    row = 0
    for s in got:
        assert s.shape[1] == w and 1 <= s.shape[0] <= strip_rows
        assert s.transform == full.transform * Affine.translation(0, row)
        assert s.crs == full.crs and s.year == YEAR and s.tiles == full.tiles
        row += s.shape[0]
    assert row == h
    np.testing.assert_array_equal(np.concatenate([s.embeddings for s in got]), full.embeddings)
    np.testing.assert_array_equal(np.concatenate([s.scales for s in got]), full.scales)


def test_iter_region_codes_crs_and_tiles(client, small_windows):
    region = [NW, SW]
    full = client.read_region(region, YEAR, crs="EPSG:32632", dequantize=False, clip=False)
    got = list(client.iter_region(region, YEAR, strip_rows=10, crs="EPSG:32632",
                                  dequantize=False, clip=False))
    assert all(s.embeddings.dtype == np.int8 for s in got)
    np.testing.assert_array_equal(np.concatenate([s.embeddings for s in got]), full.embeddings)
    np.testing.assert_array_equal(np.concatenate([s.scales for s in got]), full.scales)


def test_iter_region_memory_is_one_strip(client, monkeypatch):
    budget = 2_000_000
    monkeypatch.setattr(tessera.store.client, "STRIP_BYTES", budget)
    with pytest.warns(MissingTilesWarning):  # said at the call, before any strip is read
        strips = client.iter_region((5.9, 44.9, 6.1, 45.2), YEAR)
    assert strips.absent and len(strips) > 1
    for s in strips:
        assert s.embeddings.nbytes + s.scales.nbytes <= budget
    with pytest.raises(ClientError, match="strip_rows 0"):
        client.iter_region(BBOX, YEAR, strip_rows=0)
    with pytest.raises(ClientError, match="none of the"):
        client.iter_region((20.0, 45.0, 20.1, 45.1), YEAR)
