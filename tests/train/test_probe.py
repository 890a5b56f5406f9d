"""The periodic linear probe and best-checkpoint selection."""

from __future__ import annotations

import csv

import pytest

from fixtures import make_tile_arrays
from tessera.dpixel import write_tile
from tessera.infer import resolve_model
from tessera.simulate import SimConfig, simulate_table
from tessera.train.loop import TrainConfig, pretrain
from tessera.train.probe import TableProbe
from tessera.train.shards import TileSource, write_shards



@pytest.fixture(scope="module")
def table():
    return simulate_table(80, SimConfig(height=32, width=32, seed=0))


def test_probe_scores_a_model(table):
    probe = TableProbe(table, label="label", group=None, min_count=3)
    model, _ = resolve_model(preset="tiny", seed=0)
    model.train()
    score = probe.score(model)
    assert 0.0 <= score <= 1.0
    assert model.training  # the probe restores the mode it found
    assert probe.score(model) == score  # deterministic


def test_probe_bad_inputs(table, tmp_path):
    with pytest.raises(ValueError, match="no label column 'crop'"):
        TableProbe(table, label="crop")
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        TableProbe(table.assign(label="x"), label="label")


def test_probe_keeps_the_best_checkpoint(table, tmp_path):
    tiles = [write_tile(tmp_path / f"t{k}", **make_tile_arrays(h=8, w=8, seed=k)) for k in range(2)]
    write_shards([TileSource(t) for t in tiles], tmp_path / "s", shard_size=64)
    cfg = TrainConfig(shards=str(tmp_path / "s"), out=str(tmp_path / "run"), steps=4,
                      batch_size=16, view_steps=8, probe_every=2, log_every=2)
    result = pretrain(cfg, probe=TableProbe(table, label="label", group=None, min_count=3))
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    probes = [float(r["probe"]) for r in rows if r["probe"]]
    assert len(probes) == 2 and result["best_probe"] == max(probes)
    assert (tmp_path / "run" / "best.safetensors").exists()
