"""`tessera head evaluate | train --features`: plain table columns instead of embeddings, through
the command line; and the two NDVI-only sanity data sets of ../shared/datasets (skipped when
absent): UCR Crop against its published 1-NN number, the eo-learn patch with spatial blocks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fixtures import shared_path
from tessera.cli import app
from tessera.downstream.heads import Head

runner = CliRunner()
FAST = ("--fractions", "1", "--seeds", "0", "--no-progress")


def run(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args])


def _separable(tmp_path: Path, n: int = 240, shuffle: bool = False, name: str = "t.csv",
               seed: int = 0) -> Path:
    """Three classes, each a cluster in f_0 / f_1, plus noise columns; `shuffle` permutes the
    labels so the features carry nothing."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 5))
    x[:, 0] += 5 * (y == 1)
    x[:, 1] += 5 * (y == 2)
    labels = np.array(["crop", "forest", "water"])[rng.permutation(y) if shuffle else y]
    df = pd.DataFrame(x, columns=[f"f_{i}" for i in range(5)])
    df["label"] = labels
    df["field"] = np.arange(n) // 4
    path = tmp_path / name
    df.to_csv(path, index=False) if name.endswith(".csv") else df.to_parquet(path)
    return path


def _f1(report: Path) -> pd.Series:
    rows = pd.read_csv(report / "results.csv")
    return rows[rows["fraction"] == 1.0].groupby("method")["macro_f1"].mean()


def test_features_that_separate_classes_score_and_shuffled_labels_do_not(tmp_path: Path) -> None:
    for shuffle, out in ((False, "good"), (True, "shuffled")):
        table = _separable(tmp_path, shuffle=shuffle, name=f"{out}.csv")
        res = run("head", "evaluate", table, "--features", "f_*", "--group", "field",
                  "--heads", "logistic,knn", "-o", tmp_path / out, *FAST)
        assert res.exit_code == 0, res.output
    good, bad = _f1(tmp_path / "good"), _f1(tmp_path / "shuffled")
    assert good["logistic"] > 0.95 and good["knn"] > 0.95
    assert bad["logistic"] < 0.5 and bad["knn"] < 0.5  # chance: about 1/3
    rep = json.loads((tmp_path / "good" / "report.json").read_text())
    assert rep["meta"]["split"] == "grouped"
    assert rep["n_features"] == {"table": 5}
    assert "plain features, not embeddings" in rep["meta"]["features"]
    assert [m["name"] for m in rep["methods"]] == ["logistic", "knn", "majority"]
    for f in ("learning_curve.png", "confusion_matrix.png", "summary.md"):
        assert (tmp_path / "good" / f).is_file()


def test_a_test_table_is_the_fixed_test_set(tmp_path: Path) -> None:
    train = _separable(tmp_path, name="train.parquet")
    test = _separable(tmp_path, n=60, name="test.parquet", seed=1)
    res = run("head", "evaluate", train, "--features", "f_0..f_4", "--test-table", test,
              "--heads", "knn", "--param", "knn.n_neighbors=1", "-o", tmp_path / "rep", *FAST)
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    (fold,) = rep["folds"]
    assert (fold["method"], fold["n_train"], fold["n_test"]) == ("holdout", 240, 60)
    assert rep["meta"]["split"] == "holdout"
    assert _f1(tmp_path / "rep")["knn"] > 0.9
    # the parameter reached the head: 1-NN on its own training table is exact
    res = run("head", "evaluate", train, "--features", "f_*", "--test-table", train,
              "--heads", "knn", "--param", "knn.n_neighbors=1", "-o", tmp_path / "self", *FAST)
    assert res.exit_code == 0, res.output
    assert _f1(tmp_path / "self")["knn"] == 1.0


def test_train_a_head_on_table_columns(tmp_path: Path) -> None:
    table = _separable(tmp_path)
    res = run("head", "train", table, "--features", "f_*", "--head", "random_forest",
              "--param", "n_estimators=20", "-o", tmp_path / "rf.skops", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "240 rows of 5 table columns" in res.output
    h = Head.load(tmp_path / "rf.skops")
    assert h.info.model == "table-columns" and h.info.classes == ["crop", "forest", "water"]
    assert h.info.extra["feature_columns"] == [f"f_{i}" for i in range(5)]
    df = pd.read_csv(table)
    pred = h.predict(df[[f"f_{i}" for i in range(5)]].to_numpy(np.float32))
    assert (np.asarray(h.info.classes)[pred] == df["label"]).mean() > 0.95


@pytest.mark.parametrize("edit, args, words", [
    ("text", ("--features", "f_*"), ["bad.csv", "feature column 'f_2' is not numeric",
                                     "row 4"]),
    ("empty", ("--features", "f_0,f_3"), ["bad.csv", "feature column 'f_3' has no value"]),
    (None, ("--features", "f_0,f_9"), ["bad.csv", "feature column 'f_9' is missing"]),
    (None, ("--features", "g_*"), ["'g_*' matches no column"]),
    (None, ("--features", "f_0,label"), ["'label' is both a feature and the label"]),
    (None, ("--features", "f_0", "--label", "crop"), ["bad.csv", "label column 'crop' is "
                                                      "missing"]),
    (None, ("--features", "f_0", "--split", "spatial"), ["needs lon and lat columns"]),
    (None, ("--features", "f_0", "-s", "somewhere"), ["leave out --store"]),
    (None, ("--features", "f_0", "--param", "n_neighbors=1"), ["HEAD.KEY=VALUE"]),
    (None, ("--features", "f_0", "--heads", "knn", "--param", "logistic.C=2"),
     ["'logistic' is not among --heads knn"]),
    (None, ("--test-table", "x.csv"), ["give --features"]),
])
def test_feature_table_errors_are_one_line(tmp_path: Path, edit: str | None,
                                           args: tuple[str, ...], words: list[str]) -> None:
    df = pd.read_csv(_separable(tmp_path, n=30))
    if edit == "text":
        df["f_2"] = df["f_2"].astype(object)
        df.loc[3, "f_2"] = "cloudy"
    elif edit == "empty":
        df["f_3"] = np.nan
    df.to_csv(tmp_path / "bad.csv", index=False)
    res = run("head", "evaluate", tmp_path / "bad.csv", *args, "-o", tmp_path / "rep", *FAST)
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert all(w in text for w in words), res.output
    assert not (tmp_path / "rep").exists()


# --- the real NDVI tables (../shared/datasets) -------------------------------------------------

def test_ucr_crop_1nn_matches_the_published_number(tmp_path: Path) -> None:
    """UCR Crop, 1-NN Euclidean, trained on TRAIN + VALIDATION (5759 rows: a reduced re-split
    of the canonical 7200), tested on the canonical TEST: the published 0.712 used the full
    training set, so a close but not equal accuracy is expected (this data gives 0.718)."""
    from tessera.downstream.sanity_tables import ucr_crop_tables

    paths = ucr_crop_tables(shared_path("ucr_crop_formosat2"), tmp_path)
    res = run("head", "evaluate", paths["train"], "--test-table", paths["test"], "--features",
              "ndvi_*", "--label", "class_name", "--heads", "knn", "--param",
              "knn.n_neighbors=1", "-o", tmp_path / "rep", *FAST)
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(tmp_path / "rep" / "results.csv").set_index("method")
    assert rows.loc["knn", "n_train"] == 5759 and rows.loc["knn", "n_test"] == 16799
    assert abs(rows.loc["knn", "accuracy"] - 0.712) < 0.015
    assert rows.loc["majority", "accuracy"] < 0.05  # 24 balanced classes


def test_eolearn_lulc_with_spatial_blocks(tmp_path: Path) -> None:
    """eo-learn's patch: pixels as rows, 200 m blocks as folds (neighbouring pixels are alike,
    so a random split would flatter every head); a k-NN head beats the majority class."""
    from tessera.downstream.sanity_tables import eolearn_lulc_table

    table = eolearn_lulc_table(shared_path("eolearn_testeopatch"), tmp_path)
    res = run("head", "evaluate", table, "--features", "ndvi_*", "--label", "class_name",
              "--heads", "knn", "--split", "spatial", "--block-size", 200, "--k", 3,
              "-o", tmp_path / "rep", *FAST)
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["meta"]["split"] == "spatial" and len(rep["folds"]) == 3
    groups = [set(f["test_groups"]) for f in rep["folds"]]
    assert not (groups[0] & groups[1]) and not (groups[1] & groups[2])
    f1 = _f1(tmp_path / "rep")
    assert f1["knn"] > f1["majority"] + 0.2
