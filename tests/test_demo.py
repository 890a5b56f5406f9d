"""The README's demo: simulate -> embed -> PCA -> a head on 1 % of the labels -> class map."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from tessera.cli import app
from tessera.demo import head_training_pixels, split_head_pixels, train_head
from tessera.simulate import CLASSES


def _demo(out, *extra):
    res = CliRunner().invoke(app, ["demo", str(out), "--size", "32", *extra])
    assert res.exit_code == 0, res.output
    return res


def test_demo_cli_outputs_and_determinism(tmp_path):
    out = tmp_path / "demo"
    res = _demo(out, "--no-progress")
    assert "SIMULATED" in res.output and "accuracy" in res.output and "5/5" in res.output
    assert "majority-class baseline" in res.output
    for name in ("demo_pca.png", "demo_classes.png", "demo_classes.tif", "demo_summary.json"):
        assert (out / name).stat().st_size > 0
    for png in ("demo_pca.png", "demo_classes.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["simulated"] is True and "SIMULATED" in summary["data"]
    for key in ("accuracy", "macro_f1", "majority_accuracy"):
        assert isinstance(summary["metrics"][key], float) and 0 <= summary["metrics"][key] <= 1
    assert summary["accuracy"] == summary["metrics"]["accuracy"]
    assert summary["preset"] and isinstance(summary["random_init"], bool)
    assert summary["seconds"] > 0 and set(summary["step_seconds"]) == {
        "simulate", "embed", "pca", "head", "class_map"}
    px = summary["pixels"]
    assert px["total"] == 32 * 32 and px["train"] >= 1 and px["test"] > 10 * px["train"]
    assert px["train"] + px["test"] == px["labelled_usable"] <= px["usable"] <= px["total"]
    assert sum(c["train"] + c["test"] for c in px["per_class"].values()) == px["labelled_usable"]
    assert all(c["train"] >= 1 for c in px["per_class"].values())
    assert set(px["per_class"]) <= set(CLASSES.values())

    emb_tif = out / summary["outputs"]["embedding_geotiff"]
    with rasterio.open(out / "demo_classes.tif") as c, rasterio.open(emb_tif) as e:
        assert c.crs is not None and c.crs == e.crs and c.transform == e.transform
        assert c.shape == e.shape == (32, 32) and c.count == 1 and c.dtypes[0] == "uint8"
        assert c.tags()["simulated"] == "true"
        classes = c.read(1)
    labels = np.load(out / "tile" / "labels.npy")
    assert set(np.unique(classes)) <= set(CLASSES) and set(np.unique(classes)) <= (
        set(np.unique(labels)) | {0})
    scales = np.load(out / "embeddings" / "demo_scales.npy")
    assert (classes[np.isfinite(scales)] > 0).all()  # every usable pixel gets a class

    # same seed, another folder, progress on: the same class map
    _demo(tmp_path / "again", "--progress")
    with rasterio.open(tmp_path / "again" / "demo_classes.tif") as c2:
        assert np.array_equal(c2.read(1), classes)
    again = json.loads((tmp_path / "again" / "demo_summary.json").read_text())
    assert again["metrics"] == summary["metrics"] and again["pixels"] == summary["pixels"]


def test_demo_cli_rejects_bad_options(tmp_path):
    for args in (["--size", "2"], ["--label-fraction", "0"], ["--label-fraction", "1.5"]):
        res = CliRunner().invoke(app, ["demo", str(tmp_path / "x"), *args])
        assert res.exit_code == 2 and "error:" in res.output, (args, res.output)
    assert not (tmp_path / "x").exists()


def _labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 5, (60, 60)).astype(np.uint8)
    labels[:5] = 0  # unlabelled rows are never picked
    labels[30, 30] = 7  # a class with one pixel still gets a training pixel
    usable = np.ones_like(labels, bool)
    usable[:, :3] = False
    return labels, usable


def test_head_training_pixels_is_stratified_and_reproducible():
    labels, usable = _labels()
    a = head_training_pixels(labels, usable, 0.01, seed=3)
    b = head_training_pixels(labels, usable, 0.01, seed=3)
    c = head_training_pixels(labels, usable, 0.01, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    flat = labels.reshape(-1)
    assert set(flat[a]) == {1, 2, 3, 4, 7} and (flat[a] > 0).all()
    assert usable.reshape(-1)[a].all() and len(np.unique(a)) == len(a)
    ok = usable & (labels > 0)
    for cls in (1, 2, 3, 4):
        assert (flat[a] == cls).sum() == round(0.01 * (ok & (labels == cls)).sum())
    with pytest.raises(ValueError):
        head_training_pixels(labels, usable, 0.0, seed=0)


def test_split_head_pixels_is_disjoint_and_covers_the_labelled_pixels():
    labels, usable = _labels()
    train, test = split_head_pixels(labels, usable, 0.01, seed=3)
    train2, test2 = split_head_pixels(labels, usable, 0.01, seed=3)
    assert np.array_equal(train, train2) and np.array_equal(test, test2)
    assert np.array_equal(train, head_training_pixels(labels, usable, 0.01, seed=3))
    assert len(np.intersect1d(train, test)) == 0
    labelled = np.flatnonzero(usable.reshape(-1) & (labels.reshape(-1) > 0))
    assert np.array_equal(np.union1d(train, test), labelled)


def test_train_head_scores_only_the_held_out_pixels():
    labels, usable = _labels()
    # embeddings that separate the classes: the head must be (nearly) perfect
    emb = np.eye(8, dtype=np.float32)[labels] + 0.01 * np.random.default_rng(1).standard_normal(
        labels.shape + (8,)).astype(np.float32)
    head = train_head(emb, labels, usable, 0.01, seed=0)
    assert head["accuracy"] > 0.99 and 0 <= head["majority_accuracy"] < 0.5
    assert len(np.intersect1d(head["train"], head["test"])) == 0
    assert (head["pred"][~usable] == 0).all() and (head["pred"][usable] > 0).all()
    again = train_head(emb, labels, usable, 0.01, seed=0)
    assert np.array_equal(again["pred"], head["pred"])
    # one class only: a constant head instead of a failure
    one = np.where(labels > 0, 2, 0).astype(np.uint8)
    head1 = train_head(emb, one, usable, 0.01, seed=0)
    assert head1["accuracy"] == 1.0 and set(np.unique(head1["pred"][usable])) == {2}
