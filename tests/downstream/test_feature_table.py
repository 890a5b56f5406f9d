"""Plain feature tables (tessera.downstream.feature_table) and the converters of the two
NDVI-only sanity data sets (tessera.downstream.sanity_tables), on small synthetic files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tessera.downstream.benchmark import evaluate
from tessera.downstream.feature_table import feature_columns, read_feature_table
from tessera.downstream.labels import LabelWarning
from tessera.downstream.sanity_tables import eolearn_lulc_table, ucr_crop_tables
from tessera.downstream.splits import make_folds
from tessera.errors import ExistsError, InputError

COLS = ["id", "ndvi_000", "ndvi_001", "ndvi_002", "b_mean", "label"]


def test_feature_columns_names_globs_and_ranges() -> None:
    assert feature_columns("ndvi_*", COLS, "t.csv") == ["ndvi_000", "ndvi_001", "ndvi_002"]
    assert feature_columns("ndvi_001..b_mean", COLS, "t.csv") == ["ndvi_001", "ndvi_002",
                                                                 "b_mean"]
    # the order given, each column once
    assert feature_columns("b_mean, ndvi_00?,ndvi_000", COLS, "t.csv") == [
        "b_mean", "ndvi_000", "ndvi_001", "ndvi_002"]


@pytest.mark.parametrize("spec, words", [
    ("x_*", ["t.csv", "'x_*' matches no column"]),
    ("ndvi_000,zz", ["t.csv", "'zz' is missing"]),
    ("ndvi_002..ndvi_000", ["'ndvi_000' comes before 'ndvi_002'"]),
    ("ndvi_000..zz", ["no column 'zz'"]),
    (" , ", ["empty"]),
])
def test_feature_columns_errors_name_the_file_and_column(spec: str, words: list[str]) -> None:
    with pytest.raises(InputError) as err:
        feature_columns(spec, COLS, "t.csv")
    assert all(w in str(err.value) for w in words), str(err.value)


def _table(tmp_path: Path, n: int = 60, name: str = "t.csv", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    df = pd.DataFrame({"f_0": y * 4.0 + rng.normal(size=n), "f_1": rng.normal(size=n),
                       "label": np.array(["a", "b", "c"])[y], "field": np.arange(n) // 3})
    path = tmp_path / name
    df.to_csv(path, index=False) if name.endswith(".csv") else df.to_parquet(path)
    return path


def test_gaps_are_filled_with_the_training_median_and_unlabelled_rows_counted(
        tmp_path: Path) -> None:
    train = pd.DataFrame({"f_0": [1.0, np.nan, 3.0, 5.0], "label": ["a", "b", None, "a"]})
    test = pd.DataFrame({"f_0": [np.nan, 7.0], "label": ["b", "c"]})
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    with pytest.warns(LabelWarning, match="1 of 4 rows have no label"):
        ft = read_feature_table(tmp_path / "train.csv", "f_0", test=tmp_path / "test.csv")
    # the training median (of the labelled rows 1, 5) fills both tables, never the test's 7
    assert ft.X[:, 0].tolist() == [1.0, 3.0, 5.0, 3.0, 7.0]
    assert ft.classes == ["a", "b", "c"] and ft.y.tolist() == [0, 1, 0, 1, 2]
    assert ft.filled == {"f_0": 2} and ft.unlabelled == 1
    (fold,) = ft.holdout()
    assert fold.train.tolist() == [0, 1, 2] and fold.test.tolist() == [3, 4]


def test_grouped_folds_of_a_feature_table_keep_groups_apart(tmp_path: Path) -> None:
    ft = read_feature_table(_table(tmp_path), "f_*", group="field")
    assert ft.groups is not None and ft.lon is None and ft.test is None
    folds = make_folds(len(ft), "grouped", k=4, group=ft.groups,
                       labels=np.asarray(ft.classes, dtype=object)[ft.y])
    for f in folds:
        assert not set(ft.groups[f.train]) & set(ft.groups[f.test])
    res = evaluate(ft.X, ft.y, classes=ft.classes, folds=folds, heads=["logistic"],
                   fractions=[1.0], seeds=[0], features="table")
    assert [m["name"] for m in res.methods] == ["logistic", "majority"]
    assert res.n_features == {"table": 2}


def test_a_test_table_and_a_group_do_not_mix(tmp_path: Path) -> None:
    path = _table(tmp_path)
    with pytest.raises(InputError, match="fixed split"):
        read_feature_table(path, "f_*", group="field", test=path)


# --- the converters, on files shaped like the real ones ------------------------------------------

def test_ucr_crop_tables(tmp_path: Path) -> None:
    src = tmp_path / "ucr"
    src.mkdir()
    rng = np.random.default_rng(0)
    for part, n in (("TRAIN", 30), ("VALIDATION", 10), ("TEST", 24)):
        a = rng.random((n, 47)).astype(np.float32)
        a[:, 0] = np.arange(n) % 24 + 1
        np.save(src / f"Crop_{part}.npy", a)
    paths = ucr_crop_tables(src, tmp_path / "out")
    train, test = pd.read_parquet(paths["train"]), pd.read_parquet(paths["test"])
    assert len(train) == 40 and len(test) == 24
    assert train["part"].tolist() == ["TRAIN"] * 30 + ["VALIDATION"] * 10
    assert [c for c in train.columns if c.startswith("ndvi_")][-1] == "ndvi_045"
    assert test.loc[0, "label"] == 1 and test.loc[0, "class_name"] == "corn"
    with pytest.raises(ExistsError):
        ucr_crop_tables(src, tmp_path / "out")
    bad = np.load(src / "Crop_TEST.npy")
    bad[0, 0] = 99
    np.save(src / "Crop_TEST.npy", bad)
    with pytest.raises(InputError, match="expected the classes 1..24"):
        ucr_crop_tables(src, tmp_path / "out2")


def _eopatch(root: Path, t: int = 4, h: int = 3, w: int = 2) -> Path:
    for d in ("data", "mask", "mask_timeless"):
        (root / d).mkdir(parents=True)
    ndvi = np.zeros((t, h, w, 1), np.float32)
    ndvi[:, :, :, 0] = np.array([0.1, 0.9, 0.3, 0.5])[:, None, None]  # the cloud at date 1
    clm = np.zeros((t, h, w, 1), np.uint8)
    clm[1] = 1
    lulc = np.array([[0, 2], [3, 2], [8, 3]], np.uint16)[..., None]
    np.save(root / "data" / "NDVI.npy", ndvi)
    np.save(root / "mask" / "CLM.npy", clm)
    np.save(root / "mask" / "IS_DATA.npy", np.ones_like(clm))
    np.save(root / "mask_timeless" / "LULC.npy", lulc)
    (root / "timestamps.json").write_text(json.dumps(
        ["2016-01-01T10:00:00", "2016-01-11T10:00:00", "2016-01-21T10:00:00",
         "2016-02-20T10:00:00"]))
    (root / "bbox.geojson").write_text(json.dumps({
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
        "type": "Polygon", "coordinates": [[[465000, 5079000], [465000, 5079030],
                                            [465020, 5079030], [465020, 5079000],
                                            [465000, 5079000]]]}))
    return root


def test_eolearn_lulc_table_pixels_interpolation_and_coordinates(tmp_path: Path) -> None:
    src = _eopatch(tmp_path / "patch")
    df = pd.read_parquet(eolearn_lulc_table(src, tmp_path / "out", block_px=2))
    assert len(df) == 5  # the no-data pixel left out
    assert df["label"].tolist() == [2, 3, 2, 8, 3]
    assert df["class_name"].tolist()[:2] == ["forest", "grassland"]
    # the cloudy date is interpolated in time between its clear neighbours 0.1 and 0.3
    np.testing.assert_allclose(df[["ndvi_000", "ndvi_001", "ndvi_002", "ndvi_003"]].iloc[0],
                               [0.1, 0.2, 0.3, 0.5], atol=1e-6)
    assert (df["n_clear"] == 3).all()
    first = df.iloc[0]  # row 0, col 1: the centre of the second 10 m column
    assert (first["row"], first["col"], first["x"], first["y"]) == (0, 1, 465015.0, 5079025.0)
    assert 14.5 < first["lon"] < 14.6 and 45.8 < first["lat"] < 45.9
    assert df["block"].tolist() == ["r0_c0", "r0_c0", "r0_c0", "r1_c0", "r1_c0"]
    kept = pd.read_parquet(eolearn_lulc_table(src, tmp_path / "raw", clouds="keep"))
    assert kept.loc[0, "ndvi_001"] == pytest.approx(0.9)
