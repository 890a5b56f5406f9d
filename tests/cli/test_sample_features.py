"""`tessera sample --metadata / --bands`, the water status in its table and summary, and the
inputs it refuses (a year the store does not hold, bad band lists, clashing columns)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tessera.cli import app
from tessera.store.client import Client
from tessera.store.synthetic import build_simulated_store

sys.path.insert(0, str(Path(__file__).parents[1]))
from geotessera_layouts import write_store  # noqa: E402

TILES = ["grid_5.95_45.05", "grid_6.05_45.05", "grid_5.95_44.95", "grid_6.05_44.95"]
POINTS = pd.DataFrame({"id": [1, 2, 3, 4], "lon": [5.95, 6.05, 5.95, 7.55],
                       "lat": [44.95, 44.95, 45.099, 45.05]})  # valid, valid, sea strip, absent


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    build_simulated_store(root, TILES, years=(2022,), resolution=250.0)
    return root


@pytest.fixture
def points_csv(tmp_path):
    POINTS.to_csv(tmp_path / "p.csv", index=False)
    return tmp_path / "p.csv"


def test_metadata_columns(store, points_csv, tmp_path):
    res = run("sample", points_csv, "--store", store, "--year", 2022, "--metadata", "-o",
              tmp_path / "m.parquet")
    assert res.exit_code == 0, res.output
    assert "2 valid, 0 water, 1 nodata, 1 outside" in res.output
    out = pd.read_parquet(tmp_path / "m.parquet")
    cols = list(out.columns)
    assert cols[:8] == ["id", "lon", "lat", "status", "tile", "tile_lon", "tile_lat",
                        "pixel_row"]
    assert cols[8:11] == ["pixel_col", "crs", "emb_000"] and cols[-1] == "emb_127"
    _, _, meta = Client(store).sample_points(POINTS[["lon", "lat"]].to_numpy(), 2022,
                                            metadata=True)
    assert out["tile"].tolist() == list(meta.tile)
    assert out["tile"].tolist() == ["grid_5.95_44.95", "grid_6.05_44.95", "grid_5.95_45.05", ""]
    assert out["crs"].tolist() == ["EPSG:32631", "EPSG:32632", "EPSG:32631", ""]
    np.testing.assert_array_equal(out["pixel_row"], meta.pixel_row)
    np.testing.assert_array_equal(out["pixel_col"], meta.pixel_col)
    assert out["pixel_row"].iloc[3] == -1 and np.isnan(out["tile_lon"].iloc[3])
    assert out["tile_lon"].iloc[0] == 5.95 and out["tile_lat"].iloc[0] == 44.95
    # without --metadata: no such columns
    res = run("sample", points_csv, "--store", store, "--year", 2022, "-o",
              tmp_path / "p.parquet")
    assert res.exit_code == 0, res.output
    plain = pd.read_parquet(tmp_path / "p.parquet")
    assert "tile" not in plain.columns and list(plain.columns[:4]) == ["id", "lon", "lat",
                                                                       "status"]
    np.testing.assert_array_equal(plain.filter(like="emb_").to_numpy(),
                                  out.filter(like="emb_").to_numpy())


def test_bands(store, points_csv, tmp_path):
    res = run("sample", points_csv, "--store", store, "--year", 2022, "--bands", "0,5,120-122",
              "-o", tmp_path / "b.parquet")
    assert res.exit_code == 0, res.output
    got = pd.read_parquet(tmp_path / "b.parquet")
    names = ["emb_000", "emb_005", "emb_120", "emb_121", "emb_122"]
    assert [c for c in got.columns if c.startswith("emb_")] == names
    run("sample", points_csv, "--store", store, "--year", 2022, "-o", tmp_path / "a.parquet")
    full = pd.read_parquet(tmp_path / "a.parquet")
    np.testing.assert_array_equal(got[names].to_numpy(), full[names].to_numpy())
    info = json.loads(pq.read_schema(tmp_path / "b.parquet").metadata[b"tessera"])
    assert info["bands"] == [0, 5, 120, 121, 122] and info["dims"] == 128
    for bad, words in (("0-200", "band 128 is beyond the store's 128 dimensions"),
                       ("x", "'x' is not a band index"), ("3,3", "band 3 is given twice")):
        res = run("sample", points_csv, "--store", store, "--year", 2022, "--bands", bad, "-o",
                  tmp_path / "x.parquet")
        assert res.exit_code == 2 and words in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.parquet").exists()


def test_a_year_the_store_does_not_hold(store, points_csv, tmp_path):
    res = run("sample", points_csv, "--store", store, "--year", 2021, "-o",
              tmp_path / "y.parquet")
    assert res.exit_code == 2, res.output
    assert "year 2021 is not in the store" in res.output and "2022" in res.output
    assert not (tmp_path / "y.parquet").exists()


def test_clashing_columns_are_refused(store, tmp_path):
    POINTS.assign(tile="mine").to_csv(tmp_path / "t.csv", index=False)
    res = run("sample", tmp_path / "t.csv", "--store", store, "--year", 2022, "--metadata",
              "-o", tmp_path / "c.parquet")
    assert res.exit_code == 2 and "already has the column tile" in res.output, res.output
    res = run("sample", tmp_path / "t.csv", "--store", store, "--year", 2022, "-o",
              tmp_path / "c.parquet")  # no clash without --metadata
    assert res.exit_code == 0, res.output


def test_water_in_a_geotessera_store(tmp_path):
    root = write_store(tmp_path / "gt", "manifest", ["grid_0.15_52.05"], [2024],
                       resolution=500.0)
    pd.DataFrame({"lon": [0.15, 0.15, 3.0], "lat": [52.05, 52.0985, 52.0]}).to_csv(
        tmp_path / "w.csv", index=False)
    res = run("sample", tmp_path / "w.csv", "--store", root, "--year", 2024, "--metadata",
              "-o", tmp_path / "w.parquet")
    assert res.exit_code == 0, res.output
    out = pd.read_parquet(tmp_path / "w.parquet")
    assert out["status"].tolist() == ["valid", "water", "outside"]
    assert "1 valid, 1 water, 0 nodata, 1 outside" in res.output
