import json

import numpy as np
import pytest
from rasterio.warp import transform_bounds
from fixtures import one_line_error
from typer.testing import CliRunner

from tessera.cli import app
from tessera.dpixel import Tile
from tessera.preprocess.synthetic import S1_TEMPLATE, S2_TEMPLATE, write_scene_files
from tessera.simulate import SimConfig

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    write_scene_files(root, SimConfig(size=64, n_s2_dates=8, n_s1_asc=4, n_s1_desc=4,
                                      origin=(500000.0, 5600000.0), seed=1))
    return root


def files_args(raw):
    # A bbox well inside the simulated scene (x 500000..500640, y 5599360..5600000, UTM 31N).
    w, s, e, n = transform_bounds("EPSG:32631", "EPSG:4326", 500105, 5599455, 500495, 5599895)
    return ["preprocess", "--source", "files", "--s2", raw / S2_TEMPLATE, "--s1",
            raw / S1_TEMPLATE, "--bbox", f"{w},{s},{e},{n}", "--year", 2022, "--no-progress"]


def test_dry_run_states_the_plan_and_writes_nothing(raw, tmp_path):
    result = run(*files_args(raw), "-o", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    for frag in ("EPSG:32631", "patches 1 of up to 500 x 500 px", "S2 8 granules on 8 dates",
                 "S1 asc 4 granules on 4 dates", "disk at most"):
        assert frag in out, out
    assert not (tmp_path / "out").exists()


def test_run_then_resume_then_embed(raw, tmp_path):
    args = [*files_args(raw), "-o", tmp_path / "out", "--patch-size", 24]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "wrote 4 patch(es), skipped 0" in result.output
    patches = sorted(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert len(patches) == 4
    tile = Tile.open(patches[0])
    assert tile.bands.shape[0] == 8 and tile.crs.to_epsg() == 32631
    assert json.loads((patches[0] / "preprocess.json").read_text())["year"] == 2022
    again = run(*args)
    assert "wrote 0 patch(es), skipped 4" in again.output
    result = run("embed", patches[0], "-o", tmp_path / "emb", "--preset", "tiny", "--no-progress")
    assert result.exit_code == 0, result.output
    q = np.load(tmp_path / "emb" / f"{patches[0].name}.npy")
    assert q.shape == (*tile.shape, 128)


def test_cli_bad_input(raw, tmp_path):
    one_line_error(run("preprocess", "--source", "ftp", "--year", 2022), "--source 'ftp'")
    one_line_error(run("preprocess", "--source", "stac", "--year", 2022), "--stac-url")
    one_line_error(run("preprocess", "--source", "netcdf", "--year", 2022), "--netcdf")
    one_line_error(run("preprocess", "--source", "files", "--s2", tmp_path / "x_{date}_{band}.tif",
                       "--bbox", "3,50,3.01,50.01", "--year", 2022, "--dry-run"),
                   "no files match the S2 template")
    one_line_error(run("preprocess", "--source", "files", "--s2", raw / S2_TEMPLATE,
                       "--bbox", "3,50,3.01", "--year", 2022), "--bbox '3,50,3.01'")
    one_line_error(run("preprocess", "--source", "files", "--s2", raw / S2_TEMPLATE,
                       "--year", 2022), "give the region")
    one_line_error(run("preprocess", "--source", "files", "--s2", raw / S2_TEMPLATE,
                       "--tile", "grid_3.05_50.55", "--year", 2019, "--dry-run"),
                   "no acquisitions in 2019")
    one_line_error(run(*files_args(raw)), "-o DIR")
