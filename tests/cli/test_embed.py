import numpy as np
import pytest
from typer.testing import CliRunner

from tessera.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert out.startswith("error:") and "Traceback" not in out
    assert len(out.splitlines()) <= 3  # one message (rich may wrap a long line)
    for f in fragments:
        assert f in " ".join(out.split()), out


def test_info():
    result = run("info")
    assert result.exit_code == 0
    for word in ("tessera-eo", "v1", "tiny", "small", "45.83 M", "cpu"):
        assert word in result.output


def test_embed_tile_folder(tile_dir, tmp_path, monkeypatch):
    result = run("embed", tile_dir, "-o", tmp_path / "shipped", "--no-progress", "--year", "2022")
    assert result.exit_code == 0, result.output
    assert "RANDOMLY INITIALISED" not in result.output  # the shipped weights
    monkeypatch.setattr("tessera.infer.shipped_checkpoint", lambda: None)
    result = run("embed", tile_dir, "-o", tmp_path / "out", "--preset", "tiny", "--geotiff",
                 "--no-progress", "--year", "2022")
    assert result.exit_code == 0, result.output
    assert "RANDOMLY INITIALISED" in result.output
    q = np.load(tmp_path / "out" / "tile.npy")
    assert q.shape == (16, 12, 128) and q.dtype == np.int8
    assert (tmp_path / "out" / "tile_scales.npy").exists() and (tmp_path / "out" / "tile.tif").exists()


def test_embed_bad_inputs(tile_dir, tmp_path):
    one_line_error(run("embed", tmp_path / "nope", "-o", tmp_path / "o", "--no-progress"),
                   "nope", "not a tile folder")
    (tile_dir / "doys.npy").unlink()
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "o", "--no-progress"),
                   "missing doys.npy")


def test_embed_bad_options(tile_dir, tmp_path):
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "o", "--preset", "huge"),
                   "unknown model 'huge'")
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "o", "--sampling", "random"),
                   "sampling 'random'")
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "o", "--checkpoint",
                       tmp_path / "none.safetensors"), "none.safetensors", "not found")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "o", "--checkpoint", bad), "bad.pt")
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "o", "--geotiff-dtype", "int16"),
                   "--geotiff-dtype")


def test_simulate_then_embed(tmp_path):
    result = run("simulate", tmp_path / "sim", "--size", "24", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "SIMULATED" in result.output
    one_line_error(run("simulate", tmp_path / "sim", "--size", "24"), "exists")
    result = run("embed", tmp_path / "sim", "-o", tmp_path / "emb", "--no-progress", "--geotiff",
                 "--geotiff-dtype", "int8")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "emb" / "sim.npy").shape == (24, 24, 128)
    import rasterio
    with rasterio.open(tmp_path / "emb" / "sim.tif") as src:  # codes + a scale band, one file
        assert src.count == 129 and src.descriptions[128] == "scale"
    assert not (tmp_path / "emb" / "sim_scales.tif").exists()


@pytest.mark.slow
def test_simulate_and_embed_512(tmp_path):
    """The issue's acceptance run: a 512 x 512 simulated tile, int8 + scales + GeoTIFF on CPU."""
    assert run("simulate", tmp_path / "sim", "--size", "512").exit_code == 0
    result = run("embed", tmp_path / "sim", "-o", tmp_path / "emb", "--geotiff", "--no-progress")
    assert result.exit_code == 0, result.output
    q = np.load(tmp_path / "emb" / "sim.npy", mmap_mode="r")
    assert q.shape == (512, 512, 128)
    import rasterio
    with rasterio.open(tmp_path / "emb" / "sim.tif") as src:
        assert src.count == 128 and src.width == 512


def test_models_lists_every_registered_model():
    import json

    result = run("models")
    assert result.exit_code == 0, result.output
    for word in ("v1.1-mpc", "v1.1-aws", "v2-nano", "v2-medium", "57.71 M", "21.03 M",
                 "16/32/64/128", "tessera_v1_1_aws_encoder.pt", "student_large.pt"):
        assert word in result.output
    rows = json.loads(run("models", "--json").output)
    assert {r["id"] for r in rows} >= {"v1", "v2-small", "tiny"}


def test_embed_refuses_model_options_that_do_not_fit(tile_dir, tmp_path):
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "a", "--dim", "32", "--no-progress"),
                   "--dim 32", "128")
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "b", "--sampling", "v2",
                       "--no-progress"), "sampling 'v2' does not fit a v1.0 model")
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "c", "--model", "v2-medium",
                       "--no-progress"), "v2-medium", "--checkpoint")
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "d", "--model", "v7",
                       "--no-progress"), "unknown model 'v7'")
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()


def test_embed_a_random_init_v2_student_at_a_matryoshka_width(tile_dir, tmp_path):
    result = run("embed", tile_dir, "-o", tmp_path / "out", "--model", "v2-small", "--dim",
                 "16", "--geotiff", "--no-progress", "--year", "2022")
    assert result.exit_code == 0, result.output
    assert "RANDOMLY INITIALISED" in result.output and "v2-small, 16 dims" in result.output
    q = np.load(tmp_path / "out" / "tile.npy")
    assert q.shape == (16, 12, 16)
    import rasterio
    with rasterio.open(tmp_path / "out" / "tile.tif") as ds:
        assert ds.count == 16 and ds.tags()["model"] == "v2-small"
