"""Labels in (`tessera.downstream.labels`): points, polygons, label rasters and embedded tables
read from what users have, joined with embeddings of a SIMULATED store (tests/store_world.py:
four 200 m tiles on both sides of the UTM 31/32 border, one of them also in 2021) or of a
folder of `tessera embed` outputs; labels without an embedding counted by reason."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Polygon, box, mapping

from store_world import NW, SE, SW, TILES, YEAR, build_store, stored
from tessera.downstream.labels import (NODATA, OUTSIDE, Joined, LabelError, LabelWarning,
                                       join_embeddings, not_in_year, read_labels)
from tessera.geo import parse_tile_name, tiles_of_points
from tessera.errors import InputError
from tessera.geo.crs import LONLAT, transformer
from tessera.store.client import Client


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory)


@pytest.fixture(scope="module")
def client(store):
    return Client(store)


# --- helpers ----------------------------------------------------------------------------------

def centres(affine, height, width, crs):
    """lon, lat, row, col of every pixel centre of a grid."""
    rr, cc = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    rr, cc = rr.ravel(), cc.ravel()
    x = affine.a * (cc + 0.5) + affine.c
    y = affine.e * (rr + 0.5) + affine.f
    lon, lat = transformer(str(crs), LONLAT).transform(x, y)
    return np.asarray(lon), np.asarray(lat), rr, cc


def brute_force(store, geom, tiles=TILES, year=YEAR):
    """Every stored pixel whose centre is inside the lon/lat `geom`, each in the tile whose cell
    holds its centre: (lon, lat, embedding or NaN) sorted by (lon, lat)."""
    lons, lats, embs = [], [], []
    for t in tiles:
        q, s, e = stored(store, t, year)
        lon, lat, r, c = centres(e.affine, e.height, e.width, e.crs)
        own = parse_tile_name(t)
        cells = tiles_of_points(lon, lat)
        keep = shapely.contains_xy(geom, lon, lat) & (cells[:, 0] == own.ix) & (
            cells[:, 1] == own.iy)
        lons.append(lon[keep])
        lats.append(lat[keep])
        embs.append(q[r[keep], c[keep]].astype(np.float32) * s[r[keep], c[keep]][:, None])
    lon, lat, emb = np.concatenate(lons), np.concatenate(lats), np.concatenate(embs)
    order = np.lexsort((lat, lon))
    return lon[order], lat[order], emb[order]


def sorted_rows(j: Joined):
    order = np.lexsort((j.lat, j.lon))
    return j.lon[order], j.lat[order], j.X[order]


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LabelWarning)
        return fn(*args, **kw)


def geojson(path, geoms, props, crs=None):
    doc = {"type": "FeatureCollection",
           "features": [{"type": "Feature", "geometry": None if g is None else mapping(g),
                         "properties": p} for g, p in zip(geoms, props)]}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


# points well inside the tiles' cells, clear of the 'sea' strip along the north edge of each
POINTS = pd.DataFrame({"lon": [5.93, 5.96, 6.04, 6.07, 5.95, 6.05],
                       "lat": [45.04, 45.06, 45.03, 45.05, 44.95, 44.94],
                       "crop": ["wheat", "maize", "wheat", "maize", "rice", "wheat"],
                       "field": [1, 1, 2, 2, 3, 3], "note": list("abcdef")})


def reference(client, lon, lat, year=YEAR):
    emb, status = client.sample_points((np.asarray(lon, float), np.asarray(lat, float)), year)
    return emb, status


# --- points -------------------------------------------------------------------------------------

def test_csv_points_join(client, tmp_path):
    path = tmp_path / "points.csv"
    POINTS.to_csv(path, index=False)
    labels = read_labels(path, label="crop", group="field", keep="note")
    assert labels.kind == "points" and labels.task == "classification"
    assert labels.classes == ["maize", "rice", "wheat"]
    assert list(labels.table.columns) == ["lon", "lat", "label", "group", "note"]
    j = join_embeddings(labels, client, YEAR)
    emb, status = reference(client, POINTS["lon"], POINTS["lat"])
    assert (status == "valid").all() and j.dropped == {}
    np.testing.assert_array_equal(j.X, emb)
    assert j.X.dtype == np.float32 and j.X.shape == (6, 128)
    assert j.y.tolist() == [2, 0, 2, 0, 1, 2] and j.y.dtype == np.int64
    assert j.groups.tolist() == [1, 1, 2, 2, 3, 3]
    assert j.table["note"].tolist() == list("abcdef")
    assert j.model == "simulated" and j.dims == 128 and j.weights == "simulated"
    # a store path works as the source too, and bands choose dimensions
    j5 = join_embeddings(labels, client.store.root, YEAR, bands=[5, 0])
    np.testing.assert_array_equal(j5.X, emb[:, [5, 0]])


def test_geojson_points_in_web_mercator(client, tmp_path):
    x, y = transformer(LONLAT, "EPSG:3857").transform(POINTS["lon"].to_numpy(),
                                                      POINTS["lat"].to_numpy())
    geoms = [shapely.Point(a, b) for a, b in zip(x, y)]
    path = geojson(tmp_path / "pts.geojson", geoms,
                   [{"crop": c} for c in POINTS["crop"]], crs="EPSG:3857")
    labels = read_labels(path, label="crop")
    np.testing.assert_allclose(labels.table["lon"], POINTS["lon"], atol=1e-9)
    np.testing.assert_allclose(labels.table["lat"], POINTS["lat"], atol=1e-9)
    assert labels.groups is None
    j = join_embeddings(labels, client, YEAR)
    np.testing.assert_array_equal(j.X, reference(client, POINTS["lon"], POINTS["lat"])[0])
    assert j.groups is None


def test_geoparquet_points_utm_projjson(client, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyproj import CRS

    x, y = transformer(LONLAT, "EPSG:32631").transform(POINTS["lon"].to_numpy(),
                                                       POINTS["lat"].to_numpy())
    wkb = shapely.to_wkb(shapely.points(x, y))
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"],
                                    "crs": CRS.from_epsg(32631).to_json_dict()}}}
    table = pa.table({"crop": POINTS["crop"], "geometry": wkb})
    table = table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})
    path = tmp_path / "pts.geoparquet"
    pq.write_table(table, path)
    labels = read_labels(path, label="crop")
    np.testing.assert_allclose(labels.table["lon"], POINTS["lon"], atol=1e-9)
    j = join_embeddings(labels, client, YEAR)
    assert len(j) == 6 and j.y.tolist() == [2, 0, 2, 0, 1, 2]


def test_geopackage_points_and_csv_xy_with_crs(tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    x, y = transformer(LONLAT, "EPSG:32631").transform(POINTS["lon"].to_numpy(),
                                                       POINTS["lat"].to_numpy())
    path = tmp_path / "pts.gpkg"
    pyogrio.raw.write(path, shapely.to_wkb(shapely.points(x, y)),
                      [POINTS["crop"].to_numpy(dtype=object)], ["crop"], geometry_type="Point",
                      crs="EPSG:32631", driver="GPKG")
    labels = read_labels(path, label="crop")
    np.testing.assert_allclose(labels.table["lon"], POINTS["lon"], atol=1e-9)
    csv = tmp_path / "xy.csv"
    pd.DataFrame({"x": x, "y": y, "crop": POINTS["crop"]}).to_csv(csv, index=False)
    with pytest.raises(LabelError, match=r"xy\.csv.*records no CRS"):
        read_labels(csv, label="crop")
    got = read_labels(csv, label="crop", crs="EPSG:32631")
    np.testing.assert_allclose(got.table["lat"], POINTS["lat"], atol=1e-9)


def test_outside_and_other_year_counted_and_warned(client, tmp_path):
    # 3 in NW (stored in 2021 and 2022), 2 in SE (2022 only), 1 far from the store
    df = pd.DataFrame({"lon": [5.93, 5.95, 5.97, 6.05, 6.07, 10.0],
                       "lat": [45.04, 45.05, 45.06, 44.95, 44.96, 50.0],
                       "label": [1, 2, 1, 2, 1, 2]})
    path = tmp_path / "mixed.csv"
    df.to_csv(path, index=False)
    labels = read_labels(path)
    assert labels.classes == ["1", "2"]
    with pytest.warns(LabelWarning, match=r"mixed\.csv: 3 of 6 points have no embedding .*"
                      r"for 2021.*: 1 outside the store, 2 not in year 2021"):
        j = join_embeddings(labels, client, 2021)
    assert j.dropped == {OUTSIDE: 1, not_in_year(2021): 2}
    assert len(j) == 3 and j.table["label_row"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(j.X, reference(client, df["lon"][:3], df["lat"][:3], 2021)[0])
    # no data: a point in the simulated 'sea' strip of NW's north edge
    df.loc[len(df)] = [5.95, 45.0995, 1]
    df.to_csv(path, index=False)
    with pytest.warns(LabelWarning, match="1 no data"):
        j = join_embeddings(read_labels(path), client, 2022)
    assert j.dropped == {OUTSIDE: 1, NODATA: 1}
    # every label dropped: an error naming the file and the counts
    df.iloc[3:6].to_csv(path, index=False)
    with pytest.raises(LabelError, match=r"mixed\.csv: none of the 3 points .*1 outside the "
                       r"store, 2 not in year 2021"):
        join_embeddings(read_labels(path), client, 2021)
    with pytest.raises(InputError, match="year 2019 is not in the store"):
        join_embeddings(read_labels(path), client, 2019)


def test_task_inference_and_regression(client, tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    df = pd.DataFrame({"lon": rng.uniform(5.91, 5.99, n), "lat": rng.uniform(44.91, 44.98, n),
                       "yield_t": rng.uniform(2, 9, n)})
    path = tmp_path / "yield.csv"
    df.to_csv(path, index=False)
    labels = read_labels(path, label="yield_t")
    assert labels.task == "regression" and labels.classes == []
    j = join_embeddings(labels, client, YEAR)
    assert j.y.dtype == np.float32 and np.allclose(j.y, df["yield_t"], atol=1e-5)
    # integer codes stay classes, sorted numerically
    df["code"] = np.where(np.arange(n) % 2, 10, 9)
    df.to_csv(path, index=False)
    got = read_labels(path, label="code")
    assert got.task == "classification" and got.classes == ["9", "10"]
    assert read_labels(path, label="yield_t", task="classification").task == "classification"


# --- polygons -----------------------------------------------------------------------------------

def utm_rectangle(store, tile, col0, col1, row0, row1):
    """A rectangle on pixel edges of a stored tile, in the tile's CRS, and its pixels' values."""
    q, s, e = stored(store, tile)
    a = e.affine
    poly = box(a.c + col0 * a.a, a.f + row1 * a.e, a.c + col1 * a.a, a.f + row0 * a.e)
    emb = q[row0:row1, col0:col1].astype(np.float32) * s[row0:row1, col0:col1, None]
    return poly, e.crs, emb.reshape(-1, q.shape[2])


def test_polygon_in_utm_gives_its_pixels(client, store, tmp_path):
    poly, crs, emb = utm_rectangle(store, SW, 10, 15, 20, 27)  # 5 x 7 pixels
    assert np.isfinite(emb).all()
    path = geojson(tmp_path / "field.geojson", [poly], [{"crop": "wheat"}], crs=crs)
    path2 = geojson(tmp_path / "two.geojson", [poly, poly.buffer(-250, join_style="mitre")],
                    [{"crop": "wheat"}, {"crop": "maize"}], crs=crs)
    with pytest.raises(LabelError, match="one class only"):
        read_labels(path, label="crop")
    labels = read_labels(path2, label="crop")
    assert labels.kind == "polygons" and len(labels.geometry) == 2
    j = join_embeddings(labels, client, YEAR)
    assert (j.table["label_row"] == 0).sum() == 35 and j.dropped == {}
    first = j.X[j.table["label_row"].to_numpy() == 0]
    order = np.lexsort(first.T[::-1])
    np.testing.assert_array_equal(first[order], emb[np.lexsort(emb.T[::-1])])
    # the inner polygon (250 m in, 200 m pixels): 3 x 5 pixel centres inside
    assert (j.table["label_row"] == 1).sum() == 15
    assert j.groups.tolist() == [0] * 35 + [1] * 15
    assert j.y.tolist() == [1] * 35 + [0] * 15
    assert j.lon.shape == (50,) and np.isfinite(j.lat).all()


def test_polygon_across_zones_matches_brute_force(client, store, tmp_path):
    poly = Polygon([(5.975, 45.02), (6.03, 45.015), (6.02, 45.07), (5.985, 45.06)])
    other = box(5.91, 44.91, 5.94, 44.93)
    path = geojson(tmp_path / "fields.geojson", [poly, other],
                   [{"crop": "a", "fid": "F1"}, {"crop": "b", "fid": "F2"}])
    labels = read_labels(path, label="crop", group="fid")
    j = join_embeddings(labels, client, YEAR)
    assert set(j.groups) == {"F1", "F2"}
    for row, geom in enumerate([poly, other]):
        lon, lat, emb = brute_force(store, geom)
        valid = np.isfinite(emb).all(axis=1)
        sub = j.table["label_row"].to_numpy() == row
        part = Joined(j.X[sub], j.y[sub], None, j.lon[sub], j.lat[sub], j.table[sub], "", 0, "",
                      {})
        glon, glat, gx = sorted_rows(part)
        np.testing.assert_allclose(glon, lon[valid], atol=1e-9)
        np.testing.assert_allclose(glat, lat[valid], atol=1e-9)
        np.testing.assert_array_equal(gx, emb[valid])
    assert sum(j.dropped.values()) + len(j) == sum(len(brute_force(store, g)[0])
                                                   for g in (poly, other))
    # on both sides of the zone border, no pixel twice
    assert len(np.unique(np.round(np.c_[j.lon, j.lat], 9), axis=0)) == len(j)
    assert (j.lon[j.table["label_row"] == 0] > 6).any() and (j.lon < 6).any()


def test_polygon_partly_outside_store_counted(client, store, tmp_path):
    poly = box(6.07, 44.92, 6.13, 44.97)  # half in SE, half in a tile the store does not have
    path = geojson(tmp_path / "edge.geojson", [poly, box(5.92, 44.92, 5.95, 44.95)],
                   [{"c": 1}, {"c": 2}])
    with pytest.warns(LabelWarning, match=r"edge\.geojson: \d+ of \d+ pixels of 2 polygons"):
        j = join_embeddings(read_labels(path, label="c"), client, YEAR)
    g = parse_tile_name("grid_6.15_44.95").target_grid(200.0)
    lon, lat, _, _ = centres(g.transform, g.height, g.width, g.crs)
    cells = tiles_of_points(lon, lat)
    outside = shapely.contains_xy(poly, lon, lat) & (cells[:, 0] == 61) & (cells[:, 1] == 449)
    assert j.dropped[OUTSIDE] == outside.sum() > 0


def test_invalid_polygon_repaired_and_degenerate_refused(client, store, tmp_path):
    bowtie = Polygon([(5.92, 44.92), (5.98, 44.97), (5.98, 44.92), (5.92, 44.97)])
    assert not bowtie.is_valid
    path = geojson(tmp_path / "bow.geojson", [bowtie, box(5.91, 44.975, 5.99, 44.99)],
                   [{"crop": "x"}, {"crop": "y"}])
    with pytest.warns(LabelWarning, match=r"bow\.geojson: 1 invalid polygon repaired .*feature 1"):
        labels = read_labels(path, label="crop")
    assert labels.geometry[0].is_valid
    j = quiet(join_embeddings, labels, client, YEAR)
    lon, _, emb = brute_force(store, shapely.make_valid(bowtie))
    assert (j.table["label_row"] == 0).sum() == np.isfinite(emb).all(axis=1).sum() > 0
    flat = Polygon([(5.92, 44.92), (5.98, 44.92), (5.95, 44.92), (5.92, 44.92)])
    geojson(path, [flat, box(5.91, 44.975, 5.99, 44.99)], [{"crop": "x"}, {"crop": "y"}])
    with pytest.raises(LabelError, match=r"bow\.geojson: feature 1: invalid polygon.*no area"):
        read_labels(path, label="crop")


def test_polygon_in_geopackage_other_crs_and_cap(client, store, tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    poly, crs, emb = utm_rectangle(store, SW, 5, 15, 15, 30)  # 150 pixels
    small, _, _ = utm_rectangle(store, SW, 30, 33, 40, 43)
    path = tmp_path / "fields.gpkg"
    pyogrio.raw.write(path, shapely.to_wkb(np.array([poly, small])),
                      [np.array(["wheat", "maize"], dtype=object)], ["crop"],
                      geometry_type="Polygon", crs=crs, driver="GPKG")
    labels = read_labels(path, label="crop")
    full = quiet(join_embeddings, labels, client, YEAR)
    assert (full.table["label_row"] == 0).sum() == 150
    a = quiet(join_embeddings, labels, client, YEAR, max_pixels_per_polygon=20, seed=3)
    b = quiet(join_embeddings, labels, client, YEAR, max_pixels_per_polygon=20, seed=3)
    np.testing.assert_array_equal(a.X, b.X)
    assert (a.table["label_row"] == 0).sum() == 20 and (a.table["label_row"] == 1).sum() == 9
    have = {tuple(r) for r in full.X[:, :4]}
    assert all(tuple(r) in have for r in a.X[:, :4])
    with pytest.raises(LabelError, match="max_pixels_per_polygon"):
        join_embeddings(labels, client, YEAR, max_pixels_per_polygon=0)


def test_polygon_smaller_than_a_pixel_gives_one(client, tmp_path):
    tiny = box(5.9301, 44.9301, 5.9302, 44.9302)
    path = geojson(tmp_path / "tiny.geojson", [tiny, tiny.buffer(0.0001)],
                   [{"crop": "a"}, {"crop": "b"}])
    j = join_embeddings(read_labels(path, label="crop"), client, YEAR)
    assert len(j) == 2
    np.testing.assert_array_equal(j.X[0], reference(client, [tiny.centroid.x],
                                                    [tiny.centroid.y])[0][0])


# --- label rasters -------------------------------------------------------------------------------

def write_raster(path, data, crs="EPSG:32631", x0=730000.0, y0=4985000.0, res=100.0, nodata=0):
    import rasterio
    from rasterio.transform import Affine

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0],
                       count=1, dtype=data.dtype, crs=crs, nodata=nodata,
                       transform=Affine(res, 0, x0, 0, -res, y0)) as dst:
        dst.write(data, 1)
    return path


def test_label_raster_components_are_groups(client, tmp_path):
    data = np.zeros((20, 20), np.uint8)
    data[2:6, 2:6] = 1      # field A, class 1: 16 px
    data[10:15, 10:16] = 1  # field B, class 1 too: 30 px
    data[2:7, 12:17] = 2    # field C, class 2: 25 px
    path = write_raster(tmp_path / "labels.tif", data)
    labels = read_labels(path)
    assert labels.kind == "points" and len(labels) == 71 and labels.classes == ["1", "2"]
    groups = labels.table.groupby("group")["label"].agg(["nunique", "size", "first"])
    assert (groups["nunique"] == 1).all()
    assert sorted(groups["size"]) == [16, 25, 30]
    assert sorted(groups.loc[groups["first"] == "1", "size"]) == [16, 30]  # two groups
    # each point at its pixel's centre
    x, y = transformer(LONLAT, "EPSG:32631").transform(labels.table["lon"].to_numpy(),
                                                       labels.table["lat"].to_numpy())
    np.testing.assert_allclose((np.asarray(x) - 730000.0) % 100, 50, atol=1e-6)
    j = join_embeddings(labels, client, YEAR)
    assert len(j) + sum(j.dropped.values()) == 71 and len(set(j.groups)) == 3
    with pytest.raises(LabelError, match=r"labels\.tif: keep"):
        read_labels(path, keep=["x"])
    write_raster(path, np.zeros((4, 4), np.uint8))
    with pytest.raises(LabelError, match=r"labels\.tif: band 1: no labelled pixel"):
        read_labels(path)
    import rasterio
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "plain.tif", "w", driver="GTiff", width=4, height=4,
                           count=1, dtype="uint8") as dst:
            dst.write(np.ones((1, 4, 4), np.uint8))
    with pytest.raises(LabelError, match=r"plain\.tif: not georeferenced"):
        read_labels(tmp_path / "plain.tif")


# --- embedded tables and folders of embed outputs -------------------------------------------------

def test_embedded_table_needs_no_store(tmp_path):
    from tessera.table import write_parquet

    rng = np.random.default_rng(1)
    emb = rng.normal(size=(5, 8)).astype(np.float32)
    df = pd.DataFrame({"sample_id": list("abcde"), "ewoc_code": [11, 12, 11, 12, 11],
                       "lon": np.linspace(5, 6, 5), "lat": np.linspace(45, 46, 5),
                       **{f"emb_{i:03d}": emb[:, i] for i in range(8)},
                       "flags": np.array([0, 0, 3, 1, 0], np.uint8),
                       "n_s2_valid": 1, "n_s1_valid": 1})
    df.attrs["tessera"] = {"model": "tiny", "dims": 8, "checkpoint": "tiny.safetensors"}
    path = write_parquet(df, tmp_path / "emb.parquet")
    labels = read_labels(path, label="ewoc_code", keep=["sample_id"])
    assert labels.kind == "embedded" and labels.classes == ["11", "12"]
    with pytest.warns(LabelWarning, match=r"emb\.parquet: 1 of 5 points .*1 no data"):
        j = join_embeddings(labels)
    np.testing.assert_array_equal(j.X, emb[[0, 1, 3, 4]])  # FLAG_NO_S2 alone still counts
    assert j.table["sample_id"].tolist() == list("abde") and j.model == "tiny" and j.dims == 8
    np.testing.assert_allclose(j.lon, df["lon"][[0, 1, 3, 4]])
    np.testing.assert_array_equal(quiet(join_embeddings, labels, bands=[3, 1]).X,
                                  emb[[0, 1, 3, 4]][:, [3, 1]])


def write_outputs(store, folder, tile, year=YEAR, geotiff=True):
    """A `tessera embed`-like output of a stored tile: NAME.npy, NAME_scales.npy, NAME.tif."""
    import rasterio

    q, s, e = stored(store, tile)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{tile}.npy", q)
    np.save(folder / f"{tile}_scales.npy", s)
    if geotiff:
        with rasterio.open(folder / f"{tile}.tif", "w", driver="GTiff", width=e.width,
                           height=e.height, count=1, dtype="float32", crs=e.crs,
                           transform=e.affine) as dst:
            dst.write(np.nan_to_num(s)[None])
            dst.update_tags(year=str(year), model="simulated", dims="128")
    return folder


def test_folder_of_embed_outputs(client, store, tmp_path):
    folder = write_outputs(store, tmp_path / "out", SW)
    write_outputs(store, folder, NW)
    path = tmp_path / "points.csv"
    POINTS.to_csv(path, index=False)
    labels = read_labels(path, label="crop")
    with pytest.warns(LabelWarning, match=r"3 of 6 points .*out for 2022.*: 3 outside the "
                      "store"):
        j = join_embeddings(labels, folder, YEAR)
    a = join_embeddings(labels, client, YEAR)
    inside = np.isin(a.table["label_row"], j.table["label_row"])
    np.testing.assert_array_equal(j.X, a.X[inside])  # NE / SE points are not in the folder
    assert j.dropped == {OUTSIDE: 3} and j.model == "simulated"
    poly, crs, emb = utm_rectangle(store, SW, 10, 15, 20, 27)
    polys = geojson(tmp_path / "f.geojson", [poly, poly.buffer(-250, join_style="mitre")],
                    [{"c": "a"}, {"c": "b"}], crs=crs)
    jp = join_embeddings(read_labels(polys, label="c"), folder, YEAR)
    jp_store = join_embeddings(read_labels(polys, label="c"), client, YEAR)
    np.testing.assert_array_equal(sorted_rows(jp)[2], sorted_rows(jp_store)[2])
    with pytest.raises(LabelError, match="no outputs of year 2021"):
        join_embeddings(labels, folder, 2021)
    bare = write_outputs(store, tmp_path / "bare", SE, geotiff=False)
    with pytest.raises(LabelError, match=r"not georeferenced.*--geotiff"):
        join_embeddings(labels, bare, YEAR)


# --- bad input ------------------------------------------------------------------------------------

def test_errors_name_file_and_field(tmp_path):
    path = tmp_path / "pts.csv"
    POINTS.to_csv(path, index=False)
    for kw, pattern in [({"label": "nope"}, r"pts\.csv: no label column 'nope'.*crop"),
                        ({"label": "crop", "keep": ["zzz"]}, r"pts\.csv: keep column 'zzz'"),
                        ({"label": "crop", "group": "g"}, r"pts\.csv: no group column 'g'"),
                        ({"label": "crop", "task": "ranking"}, r"task 'ranking'"),
                        ({"label": "note", "task": "regression"}, r"'a' is not a number")]:
        with pytest.raises(LabelError, match=pattern):
            read_labels(path, **kw)
    POINTS.assign(crop=np.nan).to_csv(path, index=False)
    with pytest.raises(LabelError, match=r"pts\.csv: label column 'crop' is empty"):
        read_labels(path, label="crop")
    POINTS.assign(crop=["a", None, "b", "a", "b", None]).to_csv(path, index=False)
    with pytest.warns(LabelWarning, match=r"2 of 6 rows have no label in column 'crop'"):
        assert len(read_labels(path, label="crop")) == 4
    POINTS.assign(lon=POINTS["lon"] * 1e5).to_csv(path, index=False)
    with pytest.raises(LabelError, match=r"pts\.csv: row 1: .*not lon/lat.*no CRS"):
        read_labels(path, label="crop")
    (tmp_path / "labels.xyz").write_text("x")
    with pytest.raises(LabelError, match=r"labels\.xyz: unknown labels file type"):
        read_labels(tmp_path / "labels.xyz")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_labels(tmp_path / "missing.csv")
    gj = geojson(tmp_path / "e.geojson", [box(5.9, 44.9, 5.95, 44.95), None],
                 [{"crop": "a"}, {"crop": "b"}])
    with pytest.raises(LabelError, match=r"e\.geojson: feature 2: empty geometry"):
        read_labels(gj, label="crop")
    geojson(gj, [box(5.9, 44.9, 5.95, 44.95), Polygon()], [{"crop": "a"}, {"crop": "b"}])
    with pytest.raises(LabelError, match=r"e\.geojson: feature 2: empty geometry"):
        read_labels(gj, label="crop")
    geojson(gj, [box(5.9, 44.9, 5.95, 44.95), shapely.Point(5.9, 44.9)],
            [{"crop": "a"}, {"crop": "b"}])
    with pytest.raises(LabelError, match=r"e\.geojson: geometry mixes points and polygons"):
        read_labels(gj, label="crop")
    with pytest.raises(LabelError, match="needs a source"):
        join_embeddings(_ok(tmp_path))


def _ok(tmp_path):
    path = tmp_path / "ok.csv"
    POINTS.rename(columns={"crop": "label"}).to_csv(path, index=False)
    return read_labels(path)


def test_one_line_errors_are_input_errors(tmp_path):
    path = tmp_path / "one.csv"
    POINTS.assign(crop="wheat").to_csv(path, index=False)
    with pytest.raises(InputError) as info:
        read_labels(path, label="crop")
    assert "\n" not in str(info.value) and "one.csv" in str(info.value)
