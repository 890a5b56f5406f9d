"""`tessera shards` and `tessera pretrain` end to end, then `tessera embed` with the result."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from fixtures import make_tile_arrays
from tessera.cli import app
from tessera.dpixel import write_tile

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_shards_pretrain_resume_embed(tmp_path):
    tiles = [write_tile(tmp_path / f"t{k}", **make_tile_arrays(h=8, w=8, seed=k)) for k in range(3)]
    res = run("shards", *tiles, "-o", tmp_path / "shards", "--shard-size", "50", "--batch-size",
              "16", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "distinct tiles per minibatch" in res.output
    m = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert m["samples"] > 100 and len(m["sources"]) == 3

    args = ["pretrain", "--shards", tmp_path / "shards", "-o", tmp_path / "run", "--preset",
            "tiny", "--steps", "4", "--batch-size", "16", "--qat-start", "2",
            "--checkpoint-every", "2", "--log-every", "1", "--no-progress"]
    res = run(*args)
    assert res.exit_code == 0, res.output
    assert "trained 4 steps" in res.output and (tmp_path / "run" / "model.safetensors").exists()
    # a second start without --resume is refused; with --resume it has nothing left to do
    res = run(*args)
    assert res.exit_code == 2 and "--resume" in res.output
    res = run(*args, "--resume")
    assert res.exit_code == 0 and "trained 4 steps" in res.output

    res = run("embed", tiles[0], "-o", tmp_path / "emb", "--checkpoint",
              tmp_path / "run" / "model.safetensors", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "RANDOMLY INITIALISED" not in res.output
    assert np.load(tmp_path / "emb" / "t0.npy").shape == (8, 8, 128)


def test_bad_inputs(tmp_path):
    res = run("shards", tmp_path / "nope", "-o", tmp_path / "s", "--no-progress")
    assert res.exit_code == 2 and "not a tile folder" in res.output
    res = run("pretrain", "--shards", tmp_path, "-o", tmp_path / "r", "--steps", "2",
              "--no-progress")
    assert res.exit_code == 2 and "manifest.json" in res.output
    res = run("pretrain", "--shards", tmp_path, "-o", tmp_path / "r", "--no-progress")
    assert res.exit_code == 2 and "--steps" in res.output
    res = run("pretrain", "--shards", tmp_path, "-o", tmp_path / "r", "--steps", "2",
              "--preset", "huge", "--no-progress")
    assert res.exit_code == 2 and "unknown preset" in res.output
