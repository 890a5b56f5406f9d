import json

import numpy as np
import pytest
from rasterio.warp import transform_bounds

from tessera.geo import Patch, RegionError, TargetGrid, utm_crs


@pytest.mark.parametrize("lon, lat, epsg", [(3.0, 50.5, 32631), (-0.5, 51.0, 32630),
                                            (37.1, -3.0, 32737), (179.9, 10.0, 32660),
                                            (-179.9, -10.0, 32701)])
def test_utm_zone_of_centre(lon, lat, epsg):
    assert utm_crs(lon, lat).to_epsg() == epsg


def test_utm_out_of_range():
    with pytest.raises(RegionError, match="outside the UTM range"):
        utm_crs(3.0, 85.0)


def test_bbox_grid_is_snapped_and_covers_the_bbox():
    bbox = (3.0013, 50.5011, 3.0517, 50.5333)
    g = TargetGrid.from_bbox(*bbox)
    assert g.crs.to_epsg() == 32631 and g.resolution == 10
    w, s, e, n = g.bounds
    assert all(v % 10 == 0 for v in (w, s, e, n))
    lw, ls, le, ln = g.lonlat_bounds()
    assert lw <= bbox[0] and ls <= bbox[1] and le >= bbox[2] and ln >= bbox[3]
    # Snapped outward by less than one pixel on each side of the projected bbox.
    pw, ps, pe, pn = transform_bounds("EPSG:4326", g.crs, *bbox, densify_pts=21)
    assert 0 <= pw - w < 10 + 1e-6 and 0 <= e - pe < 10 + 1e-6
    roi = g.roi()
    assert roi.shape == (g.height, g.width) and roi.dtype == np.uint8
    # The bbox is a slightly rotated quadrilateral in UTM: most pixels inside, a few outside.
    assert 0.95 < roi.mean() < 1.0


def test_adjacent_bboxes_share_the_pixel_lattice():
    a = TargetGrid.from_bbox(3.00, 50.50, 3.02, 50.52)
    b = TargetGrid.from_bbox(3.0137, 50.5071, 3.04, 50.53)
    for g in (a, b):
        assert g.transform.c % 10 == 0 and g.transform.f % 10 == 0


def test_grid_tile_name():
    g = TargetGrid.from_tile_name("grid_0.15_52.05")
    assert g.crs.to_epsg() == 32631 and g.name == "grid_0.15_52.05"
    w, s, e, n = g.lonlat_bounds()
    assert w <= 0.10 and e >= 0.20 and s <= 52.0 and n >= 52.1
    # About 0.1 degree: ~6.9 km x 11.1 km at 52 N.
    assert 680 < g.width < 760 and 1100 < g.height < 1160
    south = TargetGrid.from_tile_name("grid_-3.05_-0.45")
    assert south.crs.to_epsg() == 32730
    for bad in ("grid_0.1_52.05", "grid_0.15", "tile_0.15_52.05", "grid_0.12_52.05"):
        with pytest.raises(RegionError, match="grid"):
            TargetGrid.from_tile_name(bad)


def test_bad_bbox():
    with pytest.raises(RegionError, match="west < east"):
        TargetGrid.from_bbox(3.1, 50.0, 3.0, 50.1)
    with pytest.raises(RegionError, match="lon/lat"):
        TargetGrid.from_bbox(500000, 5500000, 500100, 5500100)


def test_patches_names_and_edges():
    g = TargetGrid.from_bbox(3.0, 50.5, 3.02, 50.51)
    ps = g.patches(500)
    assert ps[0] == Patch(0, 0, min(500, g.width), min(500, g.height))
    small = g.patches(100)
    assert sum(p.width * p.height for p in small) == g.width * g.height
    assert {p.name for p in small} == {f"{p.x0}_{p.y0}_{p.x1}_{p.y1}" for p in small}
    last = small[-1]
    assert last.x1 == g.width and last.y1 == g.height
    sub = g.sub(last)
    assert sub.transform.c == g.transform.c + 10 * last.x0
    assert sub.transform.f == g.transform.f - 10 * last.y0
    with pytest.raises(RegionError):
        g.patches(0)


def _triangle(tmp_path, crs=None):
    coords = [[3.0, 50.5], [3.03, 50.5], [3.0, 50.52], [3.0, 50.5]]
    doc = {"type": "FeatureCollection",
           "features": [{"type": "Feature", "properties": {},
                         "geometry": {"type": "Polygon", "coordinates": [coords]}}]}
    p = tmp_path / "field.geojson"
    p.write_text(json.dumps(doc))
    return p


def test_polygon_roi_and_patch_skipping(tmp_path):
    g = TargetGrid.from_file(_triangle(tmp_path))
    roi = g.roi()
    assert 0.4 < roi.mean() < 0.6  # a right triangle fills half its bounding box
    h, w = roi.shape
    # SW, SE and NW corners are the triangle's; the NE corner is outside.
    assert roi[h - 3, 3] == 1 and roi[h - 3, w - 12] == 1 and roi[6, 2] == 1 and roi[3, w - 3] == 0
    ps = g.patches(50)
    all_windows = -(-g.width // 50) * -(-g.height // 50)
    assert len(ps) < all_windows  # windows beyond the hypotenuse are skipped


def test_geopackage_region(tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    from shapely import Polygon, to_wkb
    from pyproj import Transformer
    tr = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True)
    ring = [tr.transform(x, y) for x, y in [(3.0, 50.5), (3.03, 50.5), (3.0, 50.52)]]
    path = tmp_path / "region.gpkg"
    pyogrio.raw.write(path, geometry=np.array([to_wkb(Polygon(ring))], dtype=object),
                      field_data=[], fields=[], geometry_type="Polygon", crs="EPSG:3035",
                      driver="GPKG")
    g = TargetGrid.from_file(path)
    ref = TargetGrid.from_file(_triangle(tmp_path))
    assert g.crs == ref.crs
    assert abs(g.width - ref.width) <= 2 and abs(g.height - ref.height) <= 2
    assert abs(g.roi().mean() - ref.roi().mean()) < 0.02


def test_bad_region_files(tmp_path):
    with pytest.raises(RegionError, match="not found"):
        TargetGrid.from_file(tmp_path / "missing.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(RegionError, match="bad.geojson: not valid GeoJSON"):
        TargetGrid.from_file(bad)
    line = tmp_path / "line.geojson"
    line.write_text(json.dumps({"type": "LineString", "coordinates": [[3, 50], [3.1, 50.1]]}))
    with pytest.raises(RegionError, match="must be a polygon"):
        TargetGrid.from_file(line)
