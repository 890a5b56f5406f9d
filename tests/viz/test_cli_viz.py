"""`tessera visualize` from files and stores (--balance, --crs, --world-file, --landmask) and
`tessera coverage` with its JSON, through the command line (typer's CliRunner)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from tessera.cli import app

from viz_world import BBOX, EAST, WEST, YEAR, read_png, write_geotessera_zarr

BBOX_TEXT = ",".join(map(str, BBOX))


def run(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})


def one_line_error(res, *parts):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    for p in parts:
        assert p in " ".join(res.output.split()), (p, res.output)


@pytest.fixture(scope="module")
def tiles(store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiffs")
    res = run("download", "--store", store.root, "--tile", WEST, "--tile", EAST, "--year", YEAR,
              "-f", "tiff", "-o", folder, "--no-progress")
    assert res.exit_code == 0, res.output
    # only this folder: the base temp is shared with every other test of this worker process
    return sorted(p for p in folder.rglob("*.tiff") if p.stem.endswith(f"_{YEAR}"))


def test_visualize_a_tile_geotiff_like_its_store(store, tiles, tmp_path):
    tif = next(p for p in tiles if p.name.startswith(WEST))
    res = run("visualize", tif, "-o", tmp_path / "f.png", "--pca-out", tmp_path / "f.json",
              "--no-progress")
    assert res.exit_code == 0, res.output
    assert "1 input(s)" in res.output and "EPSG:32631" in res.output
    res = run("visualize", "--store", store.root, "--tile", WEST, "--year", YEAR, "-o",
              tmp_path / "s.png", "--no-progress")
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(read_png(tmp_path / "f.png"), read_png(tmp_path / "s.png"))
    # the store's folder given as INPUT is the store
    res = run("visualize", store.root, "--tile", WEST, "--year", YEAR, "-o", tmp_path / "i.png",
              "--no-progress")
    assert res.exit_code == 0, res.output and "1 tiles" in res.output
    assert (tmp_path / "i.png").read_bytes() == (tmp_path / "s.png").read_bytes()
    assert json.loads((tmp_path / "f.json").read_text())["tiles"] == [WEST]


def test_visualize_files_balance_crs_and_outputs(store, tiles, tmp_path):
    folder = tiles[0].parents[2]
    outs = {}
    for bal in ("percentile", "histogram", "adaptive"):
        res = run("visualize", folder, "-o", tmp_path / f"{bal}.png", "--balance", bal,
                  "--no-progress")
        assert res.exit_code == 0, res.output
        assert "2 input(s)" in res.output
        outs[bal] = (tmp_path / f"{bal}.png").read_bytes()
    assert len(set(outs.values())) == 3
    res = run("visualize", folder, "-o", tmp_path / "m.png", "--crs", "EPSG:3857", "--geotiff",
              tmp_path / "m.tif", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "m.pgw" in res.output and "m.png.aux.xml" in res.output and "EPSG:3857" in res.output
    for f in ("m.png", "m.tif"):
        with rasterio.open(tmp_path / f) as ds:
            assert ds.crs.to_epsg() == 3857
    # the old name of --balance still works
    res = run("visualize", folder, "-o", tmp_path / "h.png", "--stretch", "histogram",
              "--no-progress")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "h.png").read_bytes() == outs["histogram"]
    # --bbox crops files
    res = run("visualize", folder, "-o", tmp_path / "c.png", "--bbox", "5.93,45.03,5.97,45.07",
              "--no-progress")
    assert res.exit_code == 0, res.output and "1 input(s)" in res.output
    assert read_png(tmp_path / "c.png").shape[0] < read_png(tmp_path / "m.png").shape[0]


def test_visualize_npy_with_landmask_and_a_zarr(store, tmp_path):
    e = store.manifest().entry(EAST, YEAR)
    for kind in ("embeddings", "scales"):
        shutil.copy(store.open_file(e.files[kind]), tmp_path)
    npy = tmp_path / f"{EAST}.npy"
    res = run("visualize", npy, "-o", tmp_path / "plain.png", "--no-progress")
    assert res.exit_code == 0, res.output and "not georeferenced" in res.output
    res = run("visualize", npy, "-o", tmp_path / "g.png", "--geotiff", tmp_path / "g.tif",
              "--no-progress")
    one_line_error(res, "not georeferenced, so --geotiff cannot place it", "--landmask")
    res = run("visualize", npy, "-o", tmp_path / "g.png", "--geotiff", tmp_path / "g.tif",
              "--landmask", store.open_file(e.files["mask"]), "--no-progress")
    assert res.exit_code == 0, res.output and "EPSG:32632" in res.output
    z = tmp_path / "gt.zarr"
    write_geotessera_zarr(z, store, WEST)
    res = run("visualize", z, "-o", tmp_path / "z.png", "--no-progress")
    one_line_error(res, "holds 2 years (2021, 2022); pass --year")
    res = run("visualize", z, "--year", YEAR, "-o", tmp_path / "z.png", "--no-progress")
    assert res.exit_code == 0, res.output and "EPSG:32631" in res.output


def test_visualize_errors_are_one_line(store, tiles, tmp_path):
    (tmp_path / "x.txt").write_text("x")
    one_line_error(run("visualize", tmp_path / "x.txt", "-o", tmp_path / "o.png"),
                   "x.txt: not a file of embeddings", "expected a GeoTIFF")
    one_line_error(run("visualize", tiles[0], "-o", tmp_path / "o.png", "--balance", "vivid"),
                   "balance 'vivid': expected one of percentile, histogram, adaptive")
    one_line_error(run("visualize", tiles[0], "--store", store.root, "-o", tmp_path / "o.png"),
                   "give INPUT files or --store, not both")
    one_line_error(run("visualize", tiles[0], "-o", tmp_path / "o.png", "--tiles-dir",
                       tmp_path / "t"), "--tiles-dir")
    one_line_error(run("visualize", "--store", store.root, "--bbox", BBOX_TEXT, "-o",
                       tmp_path / "o.png"), "--year is needed with a store")
    one_line_error(run("visualize", "-o", tmp_path / "o.png"), "give INPUT files, or --store")
    one_line_error(run("visualize", tiles[0], "-o", tmp_path / "o.png", "--crs", "EPSG:0"),
                   "--crs 'EPSG:0': not a coordinate reference system")
    nan = tmp_path / "nan.tif"
    with rasterio.open(tiles[0]) as src:
        prof = src.profile
    with rasterio.open(nan, "w", **prof) as dst:
        dst.write(np.full((prof["count"], prof["height"], prof["width"]), np.nan, np.float32))
    one_line_error(run("visualize", nan, "-o", tmp_path / "o.png"), "nan.tif: no valid pixels")
    assert not (tmp_path / "o.png").exists()
    # a store given by $TESSERA_STORE does not get in the way of INPUT files
    res = run("visualize", tiles[0], "-o", tmp_path / "e.png", "--no-progress",
              env={"TESSERA_STORE": str(store.root)})
    assert res.exit_code == 0, res.output


def test_visualize_a_store_in_web_mercator(store, tmp_path):
    res = run("visualize", "--store", store.root, "--bbox", BBOX_TEXT, "--year", YEAR, "-o",
              tmp_path / "w.png", "--crs", "EPSG:3857", "--balance", "adaptive", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "EPSG:3857" in res.output and (tmp_path / "w.pgw").exists()
    with rasterio.open(tmp_path / "w.png") as ds:
        assert ds.crs.to_epsg() == 3857


def test_coverage_writes_its_json_beside_the_map(store, tmp_path):
    res = run("coverage", "--store", store.root, "-o", tmp_path / "cov.png")
    assert res.exit_code == 0, res.output
    assert "cov.png" in res.output and "cov.json" in res.output
    doc = json.loads((tmp_path / "cov.json").read_text())
    man = store.manifest()
    assert [y["year"] for y in doc["years"]] == man.years()
    assert sum(y["tiles"] for y in doc["years"]) == len(man)
    assert doc["store"] == store.describe()
    res = run("coverage", "--store", store.root, "--json", tmp_path / "only.json", "--year",
              YEAR)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "only.json").read_text())
    assert [y["year"] for y in doc["years"]] == [YEAR] and "2021" not in res.output
    res = run("coverage", "--store", store.root, "-o", tmp_path / "x.json")
    assert res.exit_code == 0 and (tmp_path / "x.json").exists()
    assert not (tmp_path / "x.png").exists()
    one_line_error(run("coverage", "--store", store.root, "--year", 2019),
                   "year(s) 2019 not in the store (it has 2021, 2022)")
