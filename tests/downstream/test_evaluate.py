"""Label-efficiency evaluation (tessera.downstream): splits, subsets, raw features,
scores on synthetic tables with known answers, and the real FRA 2022 table end to end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fixtures import shared_path
from tessera.downstream.evaluate import METHODS, evaluate_table
from tessera.downstream.features import embed_samples, raw_features
from tessera.downstream.report import summarise, summary_dict, summary_markdown
from tessera.downstream.splits import leave_one_cell_out, subsample
from tessera.downstream.tables import load_table, merge_rare

FRA_2022 = ("worldcereal", "extractions", "2022_FRA_LPIS_POLY_110.geoparquet")
UGA = ("worldcereal", "extractions", "2017_UGA_SSD_public_extractions_wide.parquet")


def synthetic_long(n_per_cell=(120, 90, 60), classes=("1101", "1201", "2001"), seed=0):
    """A long table, two monthly rows per sample, balanced classes in every cell."""
    rng = np.random.default_rng(seed)
    rows = []
    k = 0
    for ci, n in enumerate(n_per_cell):
        for i in range(n):
            code = classes[i % len(classes)]
            for month in (3, 6):
                rows.append({"sample_id": f"s{k:04d}", "timestamp": pd.Timestamp(2021, month, 1),
                             "ewoc_code": int(code), "h3_l3_cell": f"cell{ci}",
                             "S2-L2A-B04": rng.integers(100, 3000), "S1-SIGMA0-VV": 3000})
            k += 1
    return pd.DataFrame(rows)


def label_embedder(noise: float, seed: int = 0):
    """Fake EmbedFn: a random unit-variance centroid per class (every dimension carries the
    label, as in a real embedding) plus Gaussian noise of std `noise`."""
    def embed(df):
        per = df.groupby("sample_id", sort=True)["ewoc_code"].first()
        codes = sorted(per.unique())
        rng = np.random.default_rng(seed)
        centroids = rng.normal(size=(len(codes), 128))
        x = centroids[[codes.index(c) for c in per]]
        return per.index.to_numpy(), x + rng.normal(0, noise, x.shape)
    return embed


def noise_embedder(df):
    ids = np.array(sorted(df["sample_id"].unique()))
    return ids, np.random.default_rng(1).normal(size=(len(ids), 128))


FAST = dict(n_estimators=30, n_jobs=1)


# --- splits and subsets -----------------------------------------------------------------------

def test_folds_are_geographic():
    cells = np.random.default_rng(0).choice(["a", "b", "c", "d"], 200)
    folds = leave_one_cell_out(cells)
    assert [f.cell for f in folds] == ["a", "b", "c", "d"]
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(200))  # each sample tested exactly once
    for f in folds:
        assert set(cells[f.test]) == {f.cell}
        assert not set(cells[f.train]) & set(cells[f.test])
        assert len(f.train) + len(f.test) == 200
    assert leave_one_cell_out(["x"] * 5) == []


def test_subsample_reproducible_nested_stratified():
    labels = np.array(["a"] * 150 + ["b"] * 60 + ["c"] * 30 + ["d"] * 7 + ["e"] * 3)
    n = len(labels)
    for seed in range(4):
        subsets = {f: subsample(labels, f, seed, salt=7) for f in (0.01, 0.1, 0.5, 1.0)}
        for f, s in subsets.items():
            assert np.array_equal(s, subsample(labels, f, seed, salt=7))  # reproducible
            assert len(np.unique(s)) == len(s) and np.all(np.diff(s) > 0)
            assert set(labels[s]) == set(labels)  # >= 1 sample of every class
        assert len(subsets[0.01]) == max(math.ceil(0.01 * n), 5) == 5
        assert len(subsets[0.1]) == 25 and len(subsets[1.0]) == n
        # nested: 1 % within 10 % within 50 % within 100 %
        assert set(subsets[0.01]) <= set(subsets[0.1]) <= set(subsets[0.5]) <= set(subsets[1.0])
        # stratified: each class close to its share
        for f in (0.1, 0.5):
            s = subsets[f]
            for c in set(labels):
                share = len(s) * (labels == c).sum() / n
                assert abs((labels[s] == c).sum() - share) <= 2, (f, c)
    # seeds and folds (salt) draw different subsets
    assert not np.array_equal(subsample(labels, 0.1, 0), subsample(labels, 0.1, 1))
    assert not np.array_equal(subsample(labels, 0.1, 0, salt=1),
                           subsample(labels, 0.1, 0, salt=2))
    # without the per-class minimum: exactly ceil(f n)
    assert len(subsample(labels, 0.01, 0, min_per_class=0)) == 3
    with pytest.raises(ValueError):
        subsample(labels, 0.0, 0)


def test_merge_rare_and_load_table():
    assert list(merge_rare([1, 1, 2, 3, 3, 3], min_count=2)) == ["1", "1", "other", "3", "3",
                                                                    "3"]
    df = synthetic_long((4, 4), classes=("10", "20", "20", "20"))
    t = load_table(df, name="syn", min_count=3)
    assert list(t.sample_ids) == sorted(df["sample_id"].unique())
    assert t.year == 2021 and len(t) == 8
    assert sorted(set(t.labels)) == ["20", "other"]  # "10" has 2 samples < 3
    info = t.info()
    assert info["merged_into_other"] == ["10"] and set(info["cells"]) == {"cell0", "cell1"}
    bad = df.copy()
    bad.loc[0, "h3_l3_cell"] = "elsewhere"  # one sample in two cells
    with pytest.raises(ValueError, match="several"):
        load_table(bad)


# --- raw features -----------------------------------------------------------------------------

def test_raw_features_matrix():
    t1, t2, t3 = (pd.Timestamp(2022, m, 1) for m in (1, 2, 3))
    long = pd.DataFrame({  # rows deliberately out of order
        "sample_id": ["b", "a", "a", "b", "a", "x"],
        "timestamp": [t1, t3, t1, t3, t2, t1],
        "S2-L2A-B02": [20, 3, 1, 22, 2, 9],
        "S2-L2A-B04": [200, 30, 10, 65535, 20, 9],
        "S1-SIGMA0-VV": [np.nan, 300, 100, 220, 200, 9],
        "S1-SIGMA0-VH": [65535] * 6,  # never valid: dropped
        "other": [0] * 6,
    })
    x, names = raw_features(long, ["a", "b", "c"])
    assert names == ["2022-01-01:S2-L2A-B04", "2022-01-01:S2-L2A-B02", "2022-01-01:S1-SIGMA0-VV",
                     "2022-02-01:S2-L2A-B04", "2022-02-01:S2-L2A-B02", "2022-02-01:S1-SIGMA0-VV",
                     "2022-03-01:S2-L2A-B04", "2022-03-01:S2-L2A-B02", "2022-03-01:S1-SIGMA0-VV"]
    nan = np.nan
    expected = np.array([[10, 1, 100, 20, 2, 200, 30, 3, 300],
                         [200, 20, nan, nan, nan, nan, nan, 22, 220],
                         [nan] * 9])
    np.testing.assert_array_equal(x, expected)
    x_all, names_all = raw_features(long, ["a"], drop_empty=False)
    assert x_all.shape == (1, 12) and names_all[3] == "2022-01-01:S1-SIGMA0-VH"
    with pytest.raises(ValueError, match="repeated"):
        raw_features(pd.concat([long, long.iloc[:1]]), ["a", "b"])


# --- scores with known answers ----------------------------------------------------------------

def test_informative_embeddings_score_about_one():
    t = load_table(synthetic_long())
    r = evaluate_table(t, label_embedder(noise=0.3), methods=("logreg_emb", "rf_emb"),
                       fractions=(0.01, 0.1, 1.0), seeds=(0, 1), **FAST)
    assert len(r) == 2 * 3 * 2 * 3  # methods x fractions x seeds x folds
    # with one labelled sample per class (1 %) a forest's bootstrap drops classes from trees
    strict = r[(r["method"] == "logreg_emb") | (r["fraction"] > 0.01)]
    assert (strict["accuracy"] > 0.97).all() and (strict["macro_f1"] > 0.97).all()
    assert (r["accuracy"] > 0.9).all(), r[["method", "fraction", "accuracy"]]  # chance 1/3
    md = summary_markdown(r)
    assert "| 1 % | 10 % | 100 % |" in md
    assert "| <table> | logreg_emb | acc 1.00 ± 0.00 (F1 1.00) |" in md


def test_noise_embeddings_score_about_chance():
    t = load_table(synthetic_long((240, 180, 180), seed=3))
    r = evaluate_table(t, noise_embedder, methods=("logreg_emb", "rf_emb", "majority"),
                       fractions=(0.1, 1.0), seeds=(0, 1, 2), **FAST)
    s = summarise(r)
    for m in ("logreg_emb", "rf_emb"):
        acc = s[s["method"] == m]["acc_mean"]
        assert ((acc > 0.2) & (acc < 0.47)).all(), s  # chance = 1/3
    # every test sample scored in every run: nothing dropped
    assert (r.groupby(["method", "fraction", "seed"])["n_test"].sum() == len(t)).all()


def test_missing_embeddings_are_errors_not_dropped():
    t = load_table(synthetic_long((30, 30, 30)))
    full = label_embedder(noise=0.1)

    def partial(df):
        ids, x = full(df)
        return ids[5:], x[5:], np.r_[np.ones(3), np.zeros(len(ids) - 8)].astype(np.uint8)
    r = evaluate_table(t, partial, methods=("logreg_emb",), fractions=(1.0,), seeds=(0,))
    assert r["n_test"].sum() == 90 and r["n_test_no_features"].sum() == 5
    assert r["n_test_flagged"].sum() == 3
    cell0 = r[r["test_cell"] == "cell0"].iloc[0]  # the skipped samples s0000..s0004 are in cell0
    assert cell0["n_test_no_features"] == 5 and cell0["accuracy"] == pytest.approx(25 / 30)
    with pytest.raises(ValueError, match="unknown sample id"):
        embed_samples(t, lambda df: (np.array(["nope"]), np.zeros((1, 4))))


def test_deterministic_and_summary():
    t = load_table(synthetic_long((45, 45, 45), seed=1))
    kw = dict(methods=METHODS, fractions=(0.1, 1.0), seeds=(0, 1), **FAST)
    r1 = evaluate_table(t, label_embedder(noise=3.0), **kw)
    r2 = evaluate_table(t, label_embedder(noise=3.0), **kw)
    pd.testing.assert_frame_equal(r1, r2)
    assert list(r1.columns[:10]) == ["table", "method", "fraction", "seed", "fold", "test_cell",
                                     "n_train", "n_test", "accuracy", "macro_f1"]
    s = summarise(r1)
    one = r1[(r1["method"] == "rf_emb") & (r1["fraction"] == 0.1)]
    per_seed = one.groupby("seed")["accuracy"].mean()
    row = s[(s["method"] == "rf_emb") & (s["fraction"] == 0.1)].iloc[0]
    assert row["acc_mean"] == pytest.approx(per_seed.mean())
    assert row["acc_std"] == pytest.approx(per_seed.std(ddof=1))
    d = summary_dict(r1, model="fake")
    assert d["model"] == "fake" and len(d["summary"]) == len(s)


# --- real data --------------------------------------------------------------------------------

def test_real_fra_2022_pipeline_with_fake_embeddings():
    t = load_table(shared_path(*FRA_2022))
    assert len(t) == 500 and t.year == 2022 and len(set(t.cells)) == 2
    x, names = raw_features(t.year_rows(), t.sample_ids)
    assert x.shape == (500, 12 * 11)  # 12 months x (9 S2 bands + VV + VH); B8A is all nodata
    assert not any("B8A" in n for n in names)

    seen_rows = []

    def fake(df):
        seen_rows.append(len(df))
        return noise_embedder(df)
    r = evaluate_table(t, fake, seeds=(0, 1), **FAST)
    assert seen_rows == [len(t.year_rows())]  # one embedding call, evaluation-year rows only
    assert set(r["method"]) == set(METHODS) and r["fold"].nunique() == 2
    assert (r.groupby(["method", "fraction", "seed"])["n_test"].sum() == 500).all()
    full = r[r["fraction"] == 1.0]
    assert (full["n_train"] == full["n_train_pool"]).all()
    assert (full["n_train"] + full["n_test"] == 500).all()
    assert r["accuracy"].between(0, 1).all() and r["macro_f1"].between(0, 1).all()
    md = summary_markdown(r)
    assert md.count("2022_FRA_LPIS_POLY_110.geoparquet |") == 4 + 1


def test_real_uga_wide_table_loads():
    t = load_table(shared_path(*UGA))
    assert len(t) == 500 and len(set(t.cells)) == 7 and t.year == 2017
    x, _ = raw_features(t.year_rows(), t.sample_ids)
    assert x.shape[0] == 500 and x.shape[1] > 0
