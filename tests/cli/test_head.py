"""`tessera head train | evaluate | predict` end to end: labels in, a head, a report, a map out
(a SIMULATED store whose labels are a function of the embeddings, so a head can learn them),
and the WorldCereal protocol through the new command on the real FRA 2022 table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from typer.testing import CliRunner

from fixtures import shared_path
from tessera.cli import app
from tessera.store.client import Client
from tessera.store.synthetic import build_simulated_store

TILES = ["grid_5.95_45.05", "grid_6.05_45.05", "grid_5.95_44.95", "grid_6.05_44.95"]
BBOX = "5.9,44.9,6.1,45.1"
runner = CliRunner()


def run(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store and points labelled by the sign of emb_0 + emb_1 (learnable, not trivial)."""
    root = tmp_path_factory.mktemp("head")
    st = build_simulated_store(root / "store", TILES, [2022], resolution=200.0)
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(5.9, 6.1, 500), rng.uniform(44.9, 45.1, 500)
    e, status = Client(st).sample_points((lon, lat), 2022)
    ok = status == "valid"
    label = np.where(e[:, 0] + e[:, 1] > 0, "crop", "grass")
    pd.DataFrame({"lon": lon[ok], "lat": lat[ok], "label": label[ok],
                  "field": np.arange(ok.sum()) // 4}).to_csv(root / "points.csv", index=False)
    return root


def test_train_predict_and_evaluate_on_a_store(world: Path, tmp_path: Path) -> None:
    res = run("head", "train", world / "points.csv", "-s", world / "store", "--year", 2022,
              "-o", tmp_path / "lr.skops", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "logistic head, 2 classes" in res.output
    res = run("head", "predict", tmp_path / "lr.skops", "-s", world / "store", "--year", 2022,
              "--bbox", BBOX, "-o", tmp_path / "map.tif", "--no-progress")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "map.png").is_file()
    with rasterio.open(tmp_path / "map.tif") as src:
        cls, conf = src.read(1), src.read(2)
        assert json.loads(src.tags()["CLASS_NAMES"]) == ["crop", "grass"]
        assert src.colormap(1)[0][:3] != src.colormap(1)[1][:3]
        ok = cls != src.nodata
    # the map agrees with the labels where they fall, as well as the head fits them
    pts = pd.read_csv(world / "points.csv")
    with rasterio.open(tmp_path / "map.tif") as src:
        from pyproj import Transformer
        x, y = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True).transform(
            pts["lon"].to_numpy(), pts["lat"].to_numpy())
        rows, cols = rasterio.transform.rowcol(src.transform, x, y)
    got = cls[np.asarray(rows), np.asarray(cols)]
    want = (pts["label"] == "grass").to_numpy().astype(int)
    assert ok.sum() > 1000 and (conf[ok] <= 100).all()
    assert (got == want).mean() > 0.85

    res = run("head", "evaluate", world / "points.csv", "-s", world / "store", "--year", 2022,
              "-o", tmp_path / "rep", "--seeds", "0,1", "--fractions", "0.1,1", "--group",
              "field", "--no-progress")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["meta"]["split"] == "grouped"
    rows = pd.read_csv(tmp_path / "rep" / "results.csv")
    full = rows[rows["fraction"] == 1.0].groupby("method")["macro_f1"].mean()
    assert full["logistic"] > full["majority"] + 0.3
    for f in ("learning_curve.png", "confusion_matrix.png", "summary.md"):
        assert (tmp_path / "rep" / f).is_file()
    # a spatial split by default when the labels have no groups
    res = run("head", "evaluate", world / "points.csv", "-s", world / "store", "--year", 2022,
              "-o", tmp_path / "rep2", "--seeds", "0", "--fractions", "1", "--heads", "knn",
              "--block-size", 5000, "--k", 3, "--no-progress")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "rep2" / "report.json").read_text())["meta"]["split"] == \
        "spatial"


def test_a_head_refuses_another_models_embeddings(world: Path, tmp_path: Path) -> None:
    res = run("head", "train", world / "points.csv", "-s", world / "store", "--year", 2022,
              "-o", tmp_path / "h.skops", "--head", "random_forest", "--param",
              "n_estimators=20", "--no-progress")
    assert res.exit_code == 0, res.output
    from tessera.geo.grid import parse_tile_name
    from tessera.store.local import LocalStore
    from tessera.store.synthetic import simulated_tile_arrays

    other = LocalStore(tmp_path / "other")
    t = parse_tile_name(TILES[0])
    q, s, m, g = simulated_tile_arrays(t, 2022, 200.0, 0)
    other.write_tile(t, 2022, q, s, m, version="x", model="v1", weights="w", crs=g.crs,
                     transform=g.transform)
    res = run("head", "predict", tmp_path / "h.skops", "-s", other.root, "--year", 2022,
              "--tile", TILES[0], "-o", tmp_path / "m.tif", "--no-progress")
    assert res.exit_code == 2 and "simulated" in res.output and "v1" in res.output
    assert not (tmp_path / "m.tif").exists()


def test_labels_without_embeddings_need_a_store(world: Path, tmp_path: Path) -> None:
    res = run("head", "train", world / "points.csv", "-o", tmp_path / "h.skops")
    assert res.exit_code == 2 and "--store" in res.output
    res = run("head", "evaluate", world / "points.csv", "-s", world / "store", "--year", 2022,
              "-o", tmp_path / "r", "--split", "grouped", "--no-progress")
    assert res.exit_code == 2 and "needs groups" in res.output


def test_an_embedded_point_table_is_its_own_embeddings(world: Path, tmp_path: Path) -> None:
    """`tessera sample` keeps the label column: its output trains a head with no store."""
    res = run("sample", world / "points.csv", "--year", 2022, "-s", world / "store", "-o",
              tmp_path / "emb.parquet")
    assert res.exit_code == 0, res.output
    res = run("head", "train", tmp_path / "emb.parquet", "-o", tmp_path / "h.safetensors",
              "--head", "mlp", "--param", "epochs=5", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "mlp head, 2 classes" in res.output and "of simulated" in res.output


@pytest.mark.parametrize("name", ["2022_FRA_LPIS_POLY_110.geoparquet"])
def test_worldcereal_protocol_through_head_evaluate(name: str, tmp_path: Path) -> None:
    """A raw point table with --model: embedded with the shipped tiny model, the raw series
    as the baseline on the same leave-one-cell-out folds."""
    table = shared_path("worldcereal", "extractions", name)
    res = run("head", "evaluate", table, "--model", "tiny", "-o", tmp_path / "rep", "--seeds",
              "0", "--fractions", "0.1,1", "--heads", "logistic", "--no-progress")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["meta"]["split"] == "column" and rep["meta"]["table"]["samples"] == 500
    rows = pd.read_csv(tmp_path / "rep" / "results.csv")
    assert set(rows["method"]) == {"logistic", "raw:logistic", "majority"}
    assert (rows.groupby(["method", "fraction"])["n_test"].sum() == 500).all()


def test_a_tile_from_labels_raster_to_compared_map(tmp_path: Path) -> None:
    """The patch workflow on a SIMULATED tile: its label raster (fields = groups), the
    embeddings of `tessera embed --geotiff`, the raw baseline from the d-pixel tile, a head,
    and a map of the embedding GeoTIFF drawn beside the labels."""
    res = run("simulate", tmp_path / "sim", "--size", 32)
    assert res.exit_code == 0, res.output
    res = run("embed", tmp_path / "sim", "-o", tmp_path / "emb", "--geotiff", "--no-progress")
    assert res.exit_code == 0, res.output
    labels = tmp_path / "sim" / "labels.tiff"
    res = run("head", "evaluate", labels, "-s", tmp_path / "emb", "--year", 2022, "--split",
              "grouped", "--k", 3, "--seeds", "0", "--fractions", "0.5,1", "--raw-tiles",
              tmp_path / "sim", "-o", tmp_path / "rep", "--no-progress")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert "monthly medians" in rep["meta"]["raw_baseline"]
    methods = set(pd.read_csv(tmp_path / "rep" / "results.csv")["method"])
    assert {"logistic", "raw:logistic", "majority"} <= methods
    res = run("head", "train", labels, "-s", tmp_path / "emb", "--year", 2022, "-o",
              tmp_path / "h.skops", "--no-progress")
    assert res.exit_code == 0, res.output
    res = run("head", "predict", tmp_path / "h.skops", "--embeddings",
              tmp_path / "emb" / "sim.tif", "-o", tmp_path / "map.tif", "--compare", labels,
              "--no-progress")
    assert res.exit_code == 0, res.output
    assert "labelled pixels agree with the map" in res.output
    assert (tmp_path / "map_vs_labels.png").is_file() and (tmp_path / "map.png").is_file()
    with rasterio.open(tmp_path / "map.tif") as m, rasterio.open(labels) as lab:
        assert (m.crs, m.transform, m.shape) == (lab.crs, lab.transform, lab.shape)


def test_netcdf_label_layers(tmp_path: Path) -> None:
    """A label variable of a netCDF cube (x / y pixel centres, spatial_ref, _FillValue) reads
    as a label raster; the real WorldCereal patch labels too when present."""
    import xarray as xr

    from tessera.downstream.labels import read_labels
    from tessera.errors import InputError

    x = 500005.0 + 10 * np.arange(6)
    y = 5600095.0 - 10 * np.arange(5)
    ct = np.zeros((5, 6), np.uint16)
    ct[:2, :3], ct[3:, 2:] = 1200, 9120
    ds = xr.Dataset({"CT": (("y", "x"), ct, {"_FillValue": 0}),
                     "spatial_ref": ((), 0, {"crs_wkt": 'EPSG:32631', "spatial_ref": ""})},
                    coords={"x": x, "y": y}, attrs={"epsg": 32631})
    ds.to_netcdf(tmp_path / "labels.nc")
    lab = read_labels(tmp_path / "labels.nc", layer="CT")
    assert lab.classes == ["1200", "9120"] and len(lab.table) == 6 + 8
    assert lab.table["group"].nunique() == 2
    with pytest.raises(InputError, match="layer 'LC'.*CT"):
        read_labels(tmp_path / "labels.nc", layer="LC")
    try:
        real = next(shared_path("worldcereal", "patches_raw", "00002806639B424A").glob(
            "OUTPUT_POLY-110_10m_*.nc"))
    except Exception:  # absent data: the synthetic cube above is the test
        return
    lab = read_labels(real, layer="CT")
    assert len(lab.table) == 2236 and lab.table["group"].nunique() == 19
