"""Regions and points as users give them: bbox strings, GeoJSON (dicts, files, with an old-style
`crs` member), polygon files, shapely geometries, tile names; points in every accepted form."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pyproj import Transformer
from shapely.geometry import Point, box

from tessera.errors import GridError, RegionError
from tessera.geo import Region, parse_bbox, points_lonlat, read_polygon


def test_parse_bbox():
    assert parse_bbox(" 5.9, 44.9 ,6.1,45.1") == (5.9, 44.9, 6.1, 45.1)
    for bad in ("5.9,44.9,6.1", "a,b,c,d", "5.9,44.9,inf,45.1", ""):
        with pytest.raises(RegionError, match="four numbers"):
            parse_bbox(bad)


def test_region_forms_agree(tmp_path):
    bbox = (5.92, 45.01, 6.08, 45.09)
    poly = box(*bbox)
    path = tmp_path / "r.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": poly.__geo_interface__}]}))
    forms = [bbox, list(bbox), poly, poly.__geo_interface__, str(path), path]
    tiles = {tuple(t.name for t in Region.parse(f).tiles) for f in forms}
    assert tiles == {("grid_5.95_45.05", "grid_6.05_45.05")}
    one = Region.parse("grid_6.05_45.05")
    assert [t.name for t in one.tiles] == ["grid_6.05_45.05"]
    across = Region.parse((179.95, 10.0, -179.95, 10.1))
    assert across.crosses_antimeridian and len(across.tiles) == 2


def test_geojson_crs_member_is_honoured(tmp_path):
    """A GeoJSON whose (pre-RFC 7946) crs says UTM is reprojected, not read as degrees."""
    t = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    xs, ys = t.transform([6.01, 6.04, 6.04, 6.01], [45.02, 45.02, 45.08, 45.08])
    ring = [[x, y] for x, y in zip(xs, ys)] + [[xs[0], ys[0]]]
    doc = {"type": "FeatureCollection",
           "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32632"}},
           "features": [{"type": "Feature", "properties": {},
                         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}
    path = tmp_path / "utm.geojson"
    path.write_text(json.dumps(doc))
    geom, name = read_polygon(path)
    assert name == "utm"
    w, s, e, n = geom.bounds
    assert abs(w - 6.01) < 1e-6 and abs(n - 45.08) < 1e-6
    assert [t.name for t in Region.parse(path).tiles] == ["grid_6.05_45.05"]


def test_bad_regions_name_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(RegionError, match="bad.geojson: not valid GeoJSON"):
        Region.parse(bad)
    line = tmp_path / "line.geojson"
    line.write_text(json.dumps({"type": "LineString", "coordinates": [[6, 45], [6.1, 45.1]]}))
    with pytest.raises(RegionError, match="must be a polygon"):
        read_polygon(line)
    with pytest.raises(RegionError, match="no geometry"):
        Region.parse({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {}, "geometry": None}]})
    with pytest.raises(RegionError, match="not lon/lat degrees"):
        Region.parse(box(500000, 5000000, 501000, 5001000))
    with pytest.raises(GridError):
        Region.parse("grid_6.00_45.05")
    with pytest.raises(RegionError, match="expected a bbox"):
        Region.parse(42)


def test_points_forms(tmp_path):
    lon, lat = np.array([6.01, 5.97]), np.array([45.02, 44.96])
    want = np.column_stack([lon, lat])
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": i}, "geometry": Point(x, y).__geo_interface__}
        for i, (x, y) in enumerate(want)]}
    path = tmp_path / "p.geojson"
    path.write_text(json.dumps(fc))

    to_mercator = Transformer.from_crs(4326, 3857, always_xy=True)

    class GDF:  # .geometry + .crs, in web mercator
        crs = "EPSG:3857"
        geometry = [Point(*to_mercator.transform(x, y)) for x, y in want]

    for form in (want, want.tolist(), (lon, lat), fc, path, str(path), GDF()):
        got = np.column_stack(points_lonlat(form))
        np.testing.assert_allclose(got, want, atol=1e-9)
    t = Transformer.from_crs(4326, 32632, always_xy=True)
    utm = {**fc, "crs": {"type": "name", "properties": {"name": "EPSG:32632"}},
           "features": [{"type": "Feature", "properties": {},
                         "geometry": Point(*t.transform(x, y)).__geo_interface__}
                        for x, y in want]}
    np.testing.assert_allclose(np.column_stack(points_lonlat(utm)), want, atol=1e-7)
    with pytest.raises(RegionError, match="feature 0 is LineString"):
        points_lonlat({"type": "LineString", "coordinates": [[0, 0], [1, 1]]})
    with pytest.raises(RegionError, match=r"shape \(3,\)"):
        points_lonlat([1.0, 2.0, 3.0])
    with pytest.raises(RegionError, match="points file not found"):
        points_lonlat(tmp_path / "nope.geojson")
