import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from shapely.geometry import Polygon, box

from tessera.geo.grid import (GridError, GridTile, parse_tile_name, tile_of, tiles_in_bbox,
                                tiles_in_geometry, tiles_of_points)

lons = st.floats(-180, 180, allow_nan=False)
lats = st.floats(-79.99, 83.99, allow_nan=False)
fast = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(lons, lats)
def test_tile_contains_its_point_and_names_round_trip(lon, lat):
    t = tile_of(lon, lat)
    w, s, e, n = t.bounds
    # 180 is -180, and float noise within 1e-9 of an edge snaps to it (179.99999999999997 too)
    lon_w = lon - 360.0 if lon >= 180.0 - 1e-9 else lon
    assert w - 1e-9 <= lon_w < e + 1e-9 and s - 1e-9 <= lat < n + 1e-9
    assert t.name == f"grid_{t.lon:.2f}_{t.lat:.2f}"
    assert round(abs(t.lon) * 100) % 10 == 5 and round(abs(t.lat) * 100) % 10 == 5
    assert parse_tile_name(t.name) == t
    assert abs(t.lon - lon_w) <= 0.05 + 1e-9 and abs(t.lat - lat) <= 0.05 + 1e-9


@fast
@given(lons, lats)
def test_vectorised_lookup_matches(lon, lat):
    t = tile_of(lon, lat)
    assert tuple(tiles_of_points([lon], [lat])[0]) == (t.ix, t.iy)


def test_decimal_edges_belong_to_the_tile_north_east():
    assert tile_of(0.3, 0.3).name == "grid_0.35_0.35"  # 0.3 * 10 is 2.9999999999999996
    assert tile_of(-0.3, -0.3).name == "grid_-0.25_-0.25"
    assert tile_of(0.0, 0.0).name == "grid_0.05_0.05"
    assert tile_of(-1e-9, -1e-9).name == "grid_-0.05_-0.05"
    assert tile_of(180.0, 10.0) == tile_of(-180.0, 10.0)
    assert tile_of(179.99, 10.0).name == "grid_179.95_10.05"
    assert tile_of(179.99999999999997, 0.0) == tile_of(180.0, 0.0)  # on the wrapped edge


@fast
@given(st.floats(-179.5, 179.3), st.floats(-79.5, 83.5), st.floats(0.01, 0.6), st.floats(0.01, 0.4),
       st.floats(0, 1), st.floats(0, 1))
def test_bbox_tiles_cover_every_inner_point(w, s, dw, dh, fx, fy):
    e, n = min(w + dw, 180.0), min(s + dh, 83.99)
    tiles = tiles_in_bbox(w, s, e, n)
    assert len(set(tiles)) == len(tiles)
    lon, lat = w + fx * (e - w) * 0.999, s + fy * (n - s) * 0.999
    assert tile_of(lon, lat) in tiles
    # no tile lies entirely outside the box
    for t in tiles:
        tw, ts, te, tn = t.bounds
        assert te > w and tw < e and tn > s and ts < n
    expected = (math.ceil(round(e * 10, 9)) - math.floor(round(w * 10, 9))) * \
        (math.ceil(round(n * 10, 9)) - math.floor(round(s * 10, 9)))
    assert len(tiles) == expected


def test_bbox_across_the_antimeridian():
    tiles = tiles_in_bbox(179.85, -17.0, -179.85, -16.9)
    assert [t.name for t in tiles] == ["grid_179.85_-16.95", "grid_179.95_-16.95",
                                       "grid_-179.95_-16.95", "grid_-179.85_-16.95"]
    assert tiles[1].utm_zone == 60 and tiles[2].utm_zone == 1


def test_geometry_selection_skips_tiles_the_polygon_misses():
    tri = Polygon([(0.0, 0.0), (0.3, 0.0), (0.0, 0.3)])
    names = {t.name for t in tiles_in_geometry(tri)}
    assert "grid_0.05_0.05" in names and "grid_0.25_0.25" not in names
    assert len(names) == 6  # the 3 + 2 + 1 cells under the hypotenuse
    assert {t.name for t in tiles_in_geometry(box(0.0, 0.0, 0.2, 0.1))} == {"grid_0.05_0.05",
                                                                           "grid_0.15_0.05"}


@settings(max_examples=40, deadline=None)
@given(lons, lats)
def test_utm_raster_covers_the_cell_at_10m(lon, lat):
    t = tile_of(lon, lat)
    g = t.target_grid()
    assert g.crs.to_epsg() == (32600 if t.lat >= 0 else 32700) + t.utm_zone
    assert g.transform.a == 10.0 and g.transform.e == -10.0
    assert g.transform.c % 10 == 0 and g.transform.f % 10 == 0
    # about 11.1 km north-south, plus the tilt of a cell away from the central meridian
    # (grid convergence, under 3 degrees within a zone); east-west shrinks with cos(lat)
    assert 1100 <= g.height <= 1116 + 0.06 * g.width
    ew = 11132 * math.cos(math.radians(abs(t.lat))) / 10
    assert g.width >= ew * 0.99
    # the four corners of the cell project inside the raster
    tr = Transformer.from_crs("EPSG:4326", g.crs.to_wkt(), always_xy=True)
    x0, y0, x1, y1 = g.bounds
    w, s, e, n = t.bounds
    for cx, cy in ((w, s), (w, n), (e, s), (e, n)):
        x, y = tr.transform(cx, cy)
        assert x0 - 1e-6 <= x <= x1 + 1e-6 and y0 - 1e-6 <= y <= y1 + 1e-6


def test_zone_borders_use_the_zone_of_the_centre():
    # 6.0 E is the border of zones 31 and 32: the tiles either side fall in different zones
    assert tile_of(5.95, 45.0).utm_zone == 31 and tile_of(6.05, 45.0).utm_zone == 32
    assert tile_of(5.95, 45.0).epsg == 32631 and tile_of(6.05, -45.0).epsg == 32732


def test_bad_names_and_places_are_refused():
    for bad, frag in (("grid_0.1_52.05", "expected grid_"), ("grid_0.10_52.05", "ends in .x5"),
                      ("tile_0.15_52.05", "expected grid_"), ("grid_180.05_0.05", "lon -180..180")):
        with pytest.raises(GridError, match=frag):
            parse_tile_name(bad)
    with pytest.raises(GridError, match="outside UTM's range"):
        tile_of(10.0, 85.0)
    with pytest.raises(GridError, match="outside UTM's range"):
        tile_of(10.0, -80.5)
    with pytest.raises(GridError, match="outside UTM's range"):
        tiles_in_bbox(0, 83.0, 1, 84.5)
    with pytest.raises(GridError, match="not finite"):
        tile_of(float("nan"), 0)
    with pytest.raises(GridError, match="expected south < north"):
        tiles_in_bbox(0, 1, 1, 0)
    with pytest.raises(GridError):
        GridTile(1800, 0)
    bad = tiles_of_points([0.0, np.nan, 200.0, 0.0], [0.0, 0.0, 0.0, 86.0])
    assert bad[0].tolist() == [0, 0] and (bad[1:] == -9999).all()
