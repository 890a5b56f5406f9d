"""Splits, metrics, the evaluation engine and its report (tessera.downstream.splits / metrics /
benchmark / report): folds never leak, spatial blocks keep neighbours together, subsets nest,
metrics agree with scikit-learn, embeddings beat noise, results are deterministic, the report
holds what it says, bad input gives one-line errors."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from tessera.downstream.benchmark import EvalResult, best_method, evaluate
from tessera.downstream.metrics import (as_indices, classification_metrics, compute_metrics,
                                        regression_metrics)
from tessera.downstream.report import write_report
from tessera.downstream.splits import (SplitWarning, label_subsets, make_folds, project_lonlat,
                                       spatial_blocks)
from tessera.errors import InputError

CLASSES = ("wheat", "maize", "grass")


class SkHead:
    """A stand-in for tessera.downstream.heads.Head: fit(X, y) / predict(X) on class indices."""

    def __init__(self, est, classes):
        self.est, self.classes = est, tuple(classes)

    def fit(self, X, y):
        self.est.fit(X, y)
        return self

    def predict(self, X):
        return self.est.predict(X)


def sk_head(kind, task="classification", *, classes=(), seed=0, **params):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    if kind == "logistic":
        est = LogisticRegression(max_iter=500) if task == "classification" else Ridge()
    elif kind == "random_forest":
        cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
        est = cls(n_estimators=15, random_state=seed, n_jobs=1)
    else:
        raise ValueError(kind)
    return SkHead(est, classes)


def dataset(n_fields=40, per_field=6, seed=0):
    """Fields of `per_field` samples of one class each, in two regions ~150 km apart;
    embeddings = class centroid + noise (informative), raw = noise."""
    rng = np.random.default_rng(seed)
    n = n_fields * per_field
    field = np.repeat(np.arange(n_fields), per_field)
    label = np.repeat(rng.permutation(np.arange(n_fields) % 3), per_field)
    region = np.repeat(np.arange(n_fields) % 2, per_field)
    f_lon = rng.uniform(0.5, 1.5, n_fields) + 2.0 * (np.arange(n_fields) % 2)
    f_lat = rng.uniform(45.0, 45.5, n_fields)
    lon = np.repeat(f_lon, per_field) + rng.normal(0, 0.0005, n)
    lat = np.repeat(f_lat, per_field) + rng.normal(0, 0.0005, n)
    centroids = rng.normal(0, 1.5, (3, 8))
    emb = centroids[label] + rng.normal(0, 0.7, (n, 8))
    raw = rng.normal(0, 1, (n, 8))
    return pd.DataFrame({"lon": lon, "lat": lat, "field": field, "region": region,
                         "h3": [f"cell{g % 5}" for g in field],
                         "label": np.array(CLASSES)[label]}), emb, raw


def assert_no_leak(folds, n, groups=None):
    assert folds
    for f in folds:
        assert not np.intersect1d(f.train, f.test).size
        assert f.train.min(initial=0) >= 0 and f.test.max(initial=0) < n
        if groups is not None:
            assert not set(groups[f.train]) & set(groups[f.test]), f.cell


# --- splits -----------------------------------------------------------------------------------

@pytest.mark.parametrize("method,kw,group_col", [
    ("random", {}, None),
    ("grouped", {"group": "field"}, "field"),
    ("spatial", {"block_size_m": 20_000}, None),
    ("column", {"group": "h3"}, "h3"),
])
def test_folds_never_leak(method, kw, group_col):
    df, _, _ = dataset()
    n = len(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitWarning)
        folds = make_folds(df, method, k=4, seed=3, labels="label", **kw)
    groups = df[group_col].to_numpy() if group_col else None
    if method == "spatial":
        groups = spatial_blocks(df["lon"], df["lat"], 20_000)
    assert_no_leak(folds, n, groups)
    tested = np.sort(np.concatenate([f.test for f in folds]))
    assert np.array_equal(tested, np.arange(n))  # every sample tested exactly once
    for f in folds:
        assert len(f.train) + len(f.test) == n and f.method == method
    if method == "column":  # 5 cells <= logo_max: leave-one-cell-out
        assert [f.cell for f in folds] == [f"cell{i}" for i in range(5)]
    # deterministic for a seed, different for another
    again = make_folds(df, method, k=4, seed=3, labels="label", **kw)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again))


def test_column_many_groups_is_grouped_kfold():
    df, _, _ = dataset()
    folds = make_folds(df, "column", group="field", k=4, logo_max=10, labels="label")
    assert len(folds) == 4
    assert_no_leak(folds, len(df), df["field"].to_numpy())


def test_spatial_blocks_keep_clusters_together():
    from pyproj import Transformer

    size = 10_000.0
    rng = np.random.default_rng(1)
    # two tight clusters (~30 m) far apart, each at the centre of a block
    probe_xy, crs = project_lonlat([1.5, 2.8], [45.2, 45.6])
    inv = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat, cluster = [], [], []
    for c, (x, y) in enumerate(probe_xy):
        cx, cy = (np.floor(x / size) + 0.5) * size, (np.floor(y / size) + 0.5) * size
        lo, la = inv.transform(cx + rng.normal(0, 30, 50), cy + rng.normal(0, 30, 50))
        lon += list(lo)
        lat += list(la)
        cluster += [c] * 50
    lon, lat, cluster = np.array(lon), np.array(lat), np.array(cluster)
    assert project_lonlat(lon, lat)[1] == crs  # the same projection (UTM 31N)
    blocks = spatial_blocks(lon, lat, size)
    assert len(set(blocks)) == 2
    for b in set(blocks):  # no block spans the two clusters
        assert len(set(cluster[blocks == b])) == 1
    folds = make_folds(len(lon), "spatial", k=2, lon=lon, lat=lat, block_size_m=size)
    assert sorted(tuple(sorted(set(cluster[f.test]))) for f in folds) == [(0,), (1,)]
    # a buffer: no training sample within buffer_m of a test sample
    df, _, _ = dataset()
    buffered = make_folds(df, "spatial", k=3, block_size_m=10_000, buffer_m=15_000)
    xy, _ = project_lonlat(df["lon"], df["lat"])
    assert sum(f.n_buffered for f in buffered) > 0
    for f in buffered:
        d = np.sqrt(((xy[f.train][:, None, :] - xy[f.test][None, :, :]) ** 2).sum(-1))
        assert d.min() > 15_000
        assert len(f.train) + len(f.test) + f.n_buffered == len(df)


def test_stratified_folds_and_warnings():
    labels = np.array(["a"] * 100 + ["b"] * 40 + ["c"] * 10)
    folds = make_folds(len(labels), "random", k=5, labels=labels)
    for f in folds:
        for c, total in (("a", 100), ("b", 40), ("c", 10)):
            assert abs((labels[f.test] == c).sum() - total / 5) <= 1
    # grouped: classes spread over folds as far as groups allow
    groups = np.arange(150) // 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitWarning)  # every class in >= 3 groups: no warning
        gf = make_folds(len(labels), "grouped", k=3, labels=labels, group=groups)
    for f in gf:
        for c, total in (("a", 100), ("b", 40), ("c", 10)):
            assert abs((labels[f.test] == c).sum() - total / 3) <= 2
    assert_no_leak(gf, 150, groups)
    # class "c" in 2 groups of 5 < 3 folds: said
    with pytest.warns(SplitWarning, match="fewer groups than the 3 folds.*'c' \\(2\\)"):
        make_folds(len(labels), "grouped", k=3, labels=labels, group=np.arange(150) // 5)
    # a class smaller than the number of folds: a warning that names it
    rare = np.array(["a"] * 50 + ["b"] * 2)
    with pytest.warns(SplitWarning, match="'b' \\(2\\)"):
        make_folds(len(rare), "random", k=5, labels=rare)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitWarning)  # no labels / stratify off: no warning
        make_folds(len(rare), "random", k=5, labels=rare, stratify=False)


def test_nested_label_fractions():
    labels = np.array(["a"] * 300 + ["b"] * 60 + ["c"] * 4)
    fr = (0.01, 0.1, 0.5, 1.0)
    for seed in range(3):
        s = label_subsets(labels, fr, seed, salt=11)
        assert set(s[0.01]) <= set(s[0.1]) <= set(s[0.5]) <= set(s[1.0])
        assert len(s[1.0]) == len(labels) and len(s[0.1]) == math.ceil(0.1 * len(labels))
        assert all(set(labels[s[f]]) == {"a", "b", "c"} for f in fr)  # >= 1 of every class
        again = label_subsets(labels, fr, seed, salt=11)
        assert all(np.array_equal(s[f], again[f]) for f in fr)
    assert not np.array_equal(label_subsets(labels, fr, 0)[0.1], label_subsets(labels, fr, 1)[0.1])
    target = np.random.default_rng(0).normal(size=500)
    r = label_subsets(target, fr, 0, regression=True)
    assert set(r[0.01]) <= set(r[0.1]) <= set(r[1.0]) and len(r[0.01]) == 5


# --- metrics ----------------------------------------------------------------------------------

def test_metrics_match_sklearn():
    from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, mean_absolute_error,
                                 mean_squared_error, r2_score)

    rng = np.random.default_rng(0)
    names = ["a", "b", "c", "d"]  # "d" never occurs: not counted in macro F1
    t = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.7, t, rng.integers(0, 3, 200))
    m = classification_metrics(t, p, names)
    assert m["accuracy"] == pytest.approx(accuracy_score(t, p))
    assert m["macro_f1"] == pytest.approx(f1_score(t, p, average="macro"))
    f1s = f1_score(t, p, average=None, labels=[0, 1, 2])
    assert [m["per_class_f1"][c] for c in "abc"] == pytest.approx(list(f1s))
    assert math.isnan(m["per_class_f1"]["d"])
    assert np.array_equal(m["confusion"], confusion_matrix(t, p, labels=[0, 1, 2, 3]))
    assert m["support"] == {"a": (t == 0).sum(), "b": (t == 1).sum(), "c": (t == 2).sum(), "d": 0}
    # names and indices give the same scores
    named = classification_metrics(np.array(names)[t], np.array(names)[p], names)
    assert named["macro_f1"] == m["macro_f1"]
    assert compute_metrics(t, p, task="classification", classes=names)["accuracy"] == m["accuracy"]
    y, yp = rng.normal(size=50), rng.normal(size=50)
    r = regression_metrics(y, yp)
    assert r["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, yp)))
    assert r["mae"] == pytest.approx(mean_absolute_error(y, yp))
    assert r["r2"] == pytest.approx(r2_score(y, yp))
    assert math.isnan(regression_metrics([1.0], [2.0])["r2"])
    with pytest.raises(InputError, match="'e' not among"):
        as_indices(["a", "e"], names)


# --- the engine -------------------------------------------------------------------------------

FAST = dict(heads=("logistic", "random_forest"), fractions=(0.05, 0.2, 1.0), seeds=(0, 1),
            make_head=sk_head)


@pytest.fixture(scope="module")
def run():
    df, emb, raw = dataset()
    folds = make_folds(df, "grouped", k=3, group="field", labels="label")
    calls = []

    class Bar:
        def advance(self, n=1, info=None):
            calls.append(n)

        def update(self, **kw):
            pass

    class Prog:
        def task(self, description, total=None, unit=""):
            calls.append(("total", total))
            return Bar()

    res = evaluate(emb, df["label"].to_numpy(), task="classification", classes=CLASSES,
                   folds=folds, baselines={"raw": raw}, progress=Prog(), **FAST)
    return df, emb, raw, folds, res, calls


def test_evaluate_embeddings_beat_raw_and_majority(run):
    df, emb, raw, folds, res, calls = run
    assert isinstance(res, EvalResult)
    names = [m["name"] for m in res.methods]
    assert names == ["logistic", "random_forest", "raw:logistic", "raw:random_forest", "majority"]
    rows = res.rows
    assert len(rows) == len(folds) * 3 * 2 * len(names)
    assert calls[0] == ("total", len(rows)) and sum(c for c in calls[1:]) == len(rows)
    # every method of a (fold, fraction, seed) saw the same subset
    assert (rows.groupby(["fold", "fraction", "seed"])["n_train"].nunique() == 1).all()
    lc = res.learning_curve().set_index(["method", "fraction"])
    for f in (0.2, 1.0):
        emb_f1 = lc.loc[("logistic", f), "macro_f1_mean"]
        assert emb_f1 > 0.8
        for other in ("raw:logistic", "raw:random_forest", "majority"):
            assert emb_f1 > lc.loc[(other, f), "macro_f1_mean"] + 0.3, (f, other)
    assert lc.loc[("majority", 1.0), "accuracy_mean"] < 0.5
    # label fractions: nested sizes, n_train grows; at 100 % the whole pool
    n_tr = rows[rows["method"] == "logistic"].groupby("fraction")["n_train"].mean()
    assert n_tr.is_monotonic_increasing
    full = rows[(rows["fraction"] == 1.0) & (rows["method"] == "logistic")]
    pools = {f.index: len(f.train) for f in folds}
    assert all(full["n_train"].to_numpy() == full["fold"].map(pools).to_numpy())
    # the confusion at 100 %: every sample tested once per seed (means over seeds)
    counts = df["label"].value_counts()
    for cm in res.confusion.values():
        assert cm.shape == (3, 3)
        assert cm.sum(axis=1) == pytest.approx([counts[c] for c in CLASSES])
    assert best_method(res) in ("logistic", "random_forest")
    assert best_method(res, features="raw") in ("raw:logistic", "raw:random_forest")
    pc = res.per_class_f1()
    assert set(pc["class"]) == set(CLASSES) and len(pc) == 3 * len(names)


def test_evaluate_is_deterministic(run):
    df, emb, raw, folds, res, _ = run
    again = evaluate(emb, df["label"].to_numpy(), task="classification", classes=CLASSES,
                     folds=folds, baselines={"raw": raw}, **FAST)
    pd.testing.assert_frame_equal(res.rows, again.rows)
    assert all(np.array_equal(res.confusion[k], again.confusion[k]) for k in res.confusion)


def test_evaluate_regression():
    df, emb, raw = dataset(n_fields=30, per_field=5, seed=2)
    target = emb[:, 0] * 2.0 + emb[:, 1] + np.random.default_rng(0).normal(0, 0.1, len(emb))
    folds = make_folds(df, "random", k=3, seed=0)
    res = evaluate(emb, target, task="regression", folds=folds, baselines={"raw": raw},
                   heads=("logistic",), fractions=(0.2, 1.0), seeds=(0,), make_head=sk_head)
    assert [m["name"] for m in res.methods] == ["logistic", "raw:logistic", "mean"]
    assert set(res.metrics) == {"rmse", "mae", "r2"} and not res.confusion
    lc = res.learning_curve().set_index(["method", "fraction"])
    assert lc.loc[("logistic", 1.0), "r2_mean"] > 0.9
    assert lc.loc[("logistic", 1.0), "rmse_mean"] < 0.5 * lc.loc[("mean", 1.0), "rmse_mean"]
    assert lc.loc[("raw:logistic", 1.0), "r2_mean"] < 0.3


def test_evaluate_empty_training_pool_counts_as_errors():
    from tessera.downstream.splits import Fold

    df, emb, _ = dataset(n_fields=6, per_field=5)
    y = df["label"].to_numpy()
    folds = [Fold(0, "empty", np.zeros(0, np.int64), np.arange(10)),
             Fold(1, "ok", np.arange(10, 30), np.arange(0, 10))]
    res = evaluate(emb, y, classes=CLASSES, folds=folds, heads=("logistic",), fractions=(1.0,),
                   seeds=(0,), make_head=sk_head)
    empty = res.rows[res.rows["fold"] == 0]
    assert (empty["n_train"] == 0).all() and (empty["accuracy"] == 0).all()
    assert res.confusion["logistic"].sum() == 10  # the unpredicted samples are in no column


# --- the report -------------------------------------------------------------------------------

def test_write_report(run, tmp_path):
    _, _, _, folds, res, _ = run
    meta = {"data_source": "synthetic", "model_id": "tessera-test", "split_method": "grouped"}
    out = tmp_path / "rep"
    paths = write_report(res, out, title="Synthetic check", meta=meta)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.json", "results.csv", "learning_curve.png", "confusion_matrix.png", "summary.md"])
    assert set(paths) == {p.name for p in out.iterdir()}
    for png in ("learning_curve.png", "confusion_matrix.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "report.json").read_text())
    assert doc["title"] == "Synthetic check" and doc["classes"] == list(CLASSES)
    assert doc["meta"]["model_id"] == "tessera-test" and doc["meta"]["seeds"] == [0, 1]
    assert doc["meta"]["split"] == "grouped" and doc["task"] == "classification"
    assert len(doc["rows"]) == len(res.rows) and len(doc["folds"]) == len(folds)
    assert doc["confusion"]["labels"] == list(CLASSES)
    assert set(doc["confusion"]["matrices"]) == {m["name"] for m in res.methods}
    assert doc["best"]["embedding"] in ("logistic", "random_forest")
    assert set(doc["per_class_f1"]["f1"]["logistic"]) == set(CLASSES)
    assert {"method", "fraction", "macro_f1_mean", "macro_f1_std"} <= set(doc["summary"][0])
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == len(res.rows) and {"accuracy", "macro_f1", "n_train"} <= set(csv.columns)
    md = (out / "summary.md").read_text()
    assert md.startswith("# Synthetic check") and "raw:random_forest" in md and "100 %" in md
    # rewriting replaces the files; other files in the folder stay
    (out / "notes.txt").write_text("keep")
    write_report(res, out, title="again", meta=meta)
    assert (out / "notes.txt").read_text() == "keep"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    ({"method": "grouped", "group": "parcel"}, "group column 'parcel' missing"),
    ({"method": "grouped"}, "needs a group column"),
    ({"method": "spatial", "block_size_m": 0}, "block_size_m 0: expected"),
    ({"method": "spatial", "block_size_m": -5.0}, "block_size_m -5.0: expected"),
    ({"method": "spatial"}, "needs a block size"),
    ({"method": "grouped", "group": "region", "k": 5}, "k=5 folds but only 2 groups"),
    ({"method": "spatial", "block_size_m": 1e7, "k": 3}, "only 1 blocks"),
    ({"method": "column", "group": "h3", "logo_max": 0, "k": 9}, "only 5 groups"),
    ({"method": "random", "k": 1}, "k 1: expected"),
    ({"method": "random", "labels": "crop"}, "labels column 'crop' missing"),
    ({"method": "voronoi"}, "split method 'voronoi'"),
    ({"method": "random", "buffer_m": -1}, "buffer_m -1"),
])
def test_bad_split_input(kw, match):
    df, _, _ = dataset(n_fields=10, per_field=2)
    method = kw.pop("method")
    with pytest.raises(InputError, match=match) as err:
        make_folds(df, method, **kw)
    assert "\n" not in str(err.value)


def test_bad_evaluate_input(run):
    df, emb, raw, folds, _, _ = run
    y = df["label"].to_numpy()
    leak = [folds[0].__class__(0, "bad", np.arange(10), np.arange(5, 15))]
    cases = [
        (dict(folds=leak), "5 samples in both"),
        (dict(folds=folds, baselines={"raw": raw[:10]}), "10 rows for 240 samples"),
        (dict(folds=folds, fractions=(0.0, 1.0)), "fractions"),
        (dict(folds=folds, task="ranking"), "task 'ranking'"),
        (dict(folds=folds, classes=("wheat", "maize")), "'grass' not among"),
        (dict(folds=[]), "folds: none given"),
    ]
    for kw, match in cases:
        with pytest.raises(InputError, match=match) as err:
            evaluate(emb, y, **{"task": "classification", "make_head": sk_head, "seeds": (0,),
                                "fractions": (1.0,), **kw})
        assert "\n" not in str(err.value)


def test_evaluate_with_the_real_heads():
    """The default head factory (tessera.downstream.heads.make_head), class indices in and out."""
    pytest.importorskip("tessera.downstream.heads")
    df, emb, raw = dataset(n_fields=24, per_field=5, seed=4)
    folds = make_folds(df, "grouped", k=3, group="field", labels="label")
    res = evaluate(emb.astype(np.float32), df["label"].to_numpy(), classes=CLASSES, folds=folds,
                   heads=("logistic",), fractions=(0.1, 1.0), seeds=(0,),
                   baselines={"raw": raw})
    lc = res.learning_curve().set_index(["method", "fraction"])
    assert lc.loc[("logistic", 1.0), "macro_f1_mean"] > 0.9
    assert lc.loc[("logistic", 1.0), "macro_f1_mean"] > lc.loc[("raw:logistic", 1.0),
                                                               "macro_f1_mean"] + 0.3
