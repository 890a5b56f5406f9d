"""The README's demo: simulate -> embed -> PCA -> a head on 1 % of the labels -> class map."""

from __future__ import annotations

import json

import numpy as np
import rasterio
from typer.testing import CliRunner

from tessera.cli import app
from tessera.demo import head_training_pixels


def test_demo_cli_outputs(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", str(out), "--size", "32", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "SIMULATED" in res.output and "accuracy" in res.output and "5/5" in res.output
    for name in ("demo_pca.png", "demo_classes.png", "demo_classes.tif", "demo_summary.json"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert 0 <= summary["accuracy"] <= 1 and summary["simulated"] is True
    assert summary["n_train"] >= 1 and summary["n_test"] > 10 * summary["n_train"]
    emb_tif = next((out / "embeddings").glob("*.tif"))
    with rasterio.open(out / "demo_classes.tif") as c, rasterio.open(emb_tif) as e:
        assert c.crs == e.crs and c.transform == e.transform and c.shape == e.shape
        classes = c.read(1)
    labels = np.load(out / "tile" / "labels.npy")
    assert set(np.unique(classes)) <= set(np.unique(labels)) | {0}
    # deterministic: a second run gives the same class map
    res2 = CliRunner().invoke(app, ["demo", str(tmp_path / "again"), "--size", "32",
                                    "--no-progress"])
    assert res2.exit_code == 0
    with rasterio.open(tmp_path / "again" / "demo_classes.tif") as c2:
        assert np.array_equal(c2.read(1), classes)


def test_head_training_pixels_is_stratified_reproducible_and_disjoint():
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 5, (60, 60)).astype(np.uint8)
    labels[:5] = 0  # unlabelled rows are never picked
    usable = np.ones_like(labels, bool)
    usable[:, :3] = False
    a = head_training_pixels(labels, usable, 0.01, seed=3)
    b = head_training_pixels(labels, usable, 0.01, seed=3)
    c = head_training_pixels(labels, usable, 0.01, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    flat = labels.reshape(-1)
    assert set(flat[a]) == {1, 2, 3, 4} and (flat[a] > 0).all()
    assert usable.reshape(-1)[a].all()
    n_ok = (usable & (labels > 0)).sum()
    assert abs(len(a) - 0.01 * n_ok) <= 4
