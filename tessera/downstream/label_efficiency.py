"""Honest label-efficiency evaluation on the real WorldCereal extraction tables.

Protocol (what the README and MODEL_CARD numbers mean):
- one sample = one labelled point with its time series for one calendar year (the table's
  main year; the d-pixel is annual);
- labels = `ewoc_code`; classes with fewer than `min_count` samples in the table become "other";
- geographic splits: leave-one-`h3_l3_cell`-out (each cell is the test set once; the model is
  trained on the other cells), so no test point has a training neighbour in its cell;
- label fractions of the TRAIN samples (1 %, 10 %, 100 %): a uniformly random subset of
  max(2, ceil(f n)) samples per fold and seed; a subset with one class predicts that class;
- 5 seeds change the subset and the classifier's seed;
- methods: logistic regression and random forest on embeddings; random forest on the raw
  time-series features (every S2 band and S1 VV/VH at every timestep of the same year, missing
  = NaN, which scikit-learn's forests handle);
- metrics: accuracy and macro F1 on the test cell; per seed the mean over folds; reported as
  mean and standard deviation over seeds. Samples the model flags (no valid S2 or S1) are kept
  and predicted like the others; nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from tessera.bands import S2_BANDS

FRACTIONS = (0.01, 0.1, 1.0)
SEEDS = (0, 1, 2, 3, 4)
#: how the WorldCereal extraction tables are read (see the datasets README)
TABLE_OPTIONS = dict(s2_pattern="S2-L2A-{band}", s1_pattern="S1-SIGMA0-{pol}",
                     s1_encoding="amplitude", s1_offset=-83.0, nodata=[65535], fill_missing=True)
_WIDE = re.compile(r"^(OPTICAL|SAR)-([A-Z0-9]+)-ts(\d+)-\d+m$")


@dataclasses.dataclass
class EvalTable:
    """One labelled table: a long frame (rows of its `year`), labels and cells per sample."""

    name: str
    year: int
    long: pd.DataFrame
    sample_ids: np.ndarray  # sorted
    labels: np.ndarray
    cells: np.ndarray


def wide_to_long(df: pd.DataFrame, source: str = "<table>") -> pd.DataFrame:
    """WorldCereal WIDE layout (OPTICAL-B02-ts0-10m, SAR-VV-ts3-20m, start_date) -> the long
    layout (S2-L2A-B02, S1-SIGMA0-VV, timestamp), timestep k = the k-th month from start_date."""
    cols = {c: _WIDE.match(c) for c in df.columns}
    cols = {c: m for c, m in cols.items() if m}
    if not cols or "start_date" not in df.columns:
        raise ValueError(f"{source}: not the WorldCereal wide layout (expected columns like "
                         "OPTICAL-B02-ts0-10m and a start_date column)")
    id_col = "sample_id" if "sample_id" in df.columns else "location_id"
    meta = [c for c in ("h3_l3_cell", "ewoc_code", "lat", "lon") if c in df.columns]
    steps = sorted({int(m.group(3)) for m in cols.values()})
    start = pd.to_datetime(df["start_date"]).dt.to_period("M")
    frames = []
    for k in steps:
        f = df[[id_col, *meta]].copy()
        f["timestamp"] = (start + k).dt.to_timestamp()
        for c, m in cols.items():
            if int(m.group(3)) == k:
                kind, band = m.group(1), m.group(2)
                f["S2-L2A-" + band if kind == "OPTICAL" else "S1-SIGMA0-" + band] = df[c].values
        frames.append(f)
    out = pd.concat(frames, ignore_index=True).rename(columns={id_col: "sample_id"})
    return out.sort_values(["sample_id", "timestamp"], kind="stable").reset_index(drop=True)


def load_table(path: str | Path, min_count: int = 10) -> EvalTable:
    """Read a WorldCereal extraction table (long or wide) for the evaluation."""
    path = Path(path)
    df = pd.read_parquet(path)
    if "timestamp" not in df.columns:
        df = wide_to_long(df, str(path))
    for col in ("sample_id", "ewoc_code", "h3_l3_cell", "timestamp"):
        if col not in df.columns:
            raise ValueError(f"{path}: no {col!r} column; the evaluation needs labelled, "
                             "geolocated samples")
    ts = pd.to_datetime(df["timestamp"])
    year = int(ts.dt.year.value_counts().idxmax())
    long = df[ts.dt.year == year].reset_index(drop=True)
    per = df.groupby("sample_id", sort=True).first()
    missing = sorted(set(per.index) - set(long["sample_id"]))
    if missing:
        raise ValueError(f"{path}: {len(missing)} sample(s) have no row in {year}, e.g. "
                         f"{missing[0]!r}")
    labels = per["ewoc_code"].astype(str)
    counts = labels.value_counts()
    labels = np.where(labels.map(counts) >= min_count, labels, "other")
    return EvalTable(path.name, year, long, per.index.to_numpy(), labels,
                     per["h3_l3_cell"].astype(str).to_numpy())


def raw_features(t: EvalTable) -> np.ndarray:
    """(N, timesteps x bands) raw values in time order; missing (65535 or absent) = NaN."""
    bands = [f"S2-L2A-{b}" for b in S2_BANDS] + ["S1-SIGMA0-VV", "S1-SIGMA0-VH"]
    bands = [b for b in bands if b in t.long.columns]
    long = t.long.assign(timestamp=pd.to_datetime(t.long["timestamp"]))
    wide = long.pivot_table(index="sample_id", columns="timestamp", values=bands,
                            aggfunc="first", dropna=False)
    wide = wide.reindex(t.sample_ids)
    x = wide.to_numpy(dtype=np.float64)
    x[x == 65535] = np.nan
    return x


def subset(n_train: int, fraction: float, seed: int) -> np.ndarray:
    """Indices (into the train set) of a label-scarce subset: max(2, ceil(f n)) at random."""
    k = n_train if fraction >= 1 else min(n_train, max(2, math.ceil(fraction * n_train)))
    return np.sort(np.random.default_rng(seed).choice(n_train, k, replace=False))


def folds(cells: np.ndarray) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    """Leave-one-cell-out: (test cell, train indices, test indices)."""
    for cell in sorted(set(cells)):
        test = np.flatnonzero(cells == cell)
        train = np.flatnonzero(cells != cell)
        if len(train) and len(test):
            yield cell, train, test


def _classifier(method: str, seed: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if method.startswith("logreg"):
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, random_state=seed))
    return RandomForestClassifier(n_estimators=200, n_jobs=2, random_state=seed)


def evaluate(tables: list[EvalTable], features: dict[str, Callable[[EvalTable], np.ndarray]],
             methods: dict[str, tuple[str, str]], fractions=FRACTIONS, seeds=SEEDS,
             log=print) -> pd.DataFrame:
    """Score each method on each table.

    `features[name](table) -> (N, F)` gives a feature matrix (rows = table.sample_ids);
    `methods[label] = (feature name, "logreg" | "rf")`.
    """
    from sklearn.metrics import accuracy_score, f1_score

    rows = []
    for t in tables:
        mats = {name: f(t) for name, f in features.items()}
        for label, (feat, kind) in methods.items():
            x = mats[feat]
            if kind == "logreg":
                x = np.nan_to_num(x)
            for frac in fractions:
                for seed in seeds:
                    for cell, train, test in folds(t.cells):
                        pick = train[subset(len(train), frac, seed)]
                        y = t.labels[pick]
                        if len(set(y)) < 2:
                            pred = np.full(len(test), y[0])
                        else:
                            with warnings.catch_warnings():
                                warnings.simplefilter("ignore")
                                clf = _classifier(kind, seed).fit(x[pick], y)
                                pred = clf.predict(x[test])
                        truth = t.labels[test]
                        rows.append({"table": t.name, "method": label, "fraction": frac,
                                     "seed": seed, "test_cell": cell, "n_train": len(pick),
                                     "n_test": len(test),
                                     "accuracy": accuracy_score(truth, pred),
                                     "macro_f1": f1_score(truth, pred, average="macro",
                                                          zero_division=0)})
            log(f"{t.name}: {label} done")
    return pd.DataFrame(rows)


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean over folds per seed, then mean and std over seeds."""
    per_seed = results.groupby(["table", "method", "fraction", "seed"], sort=False)[
        ["accuracy", "macro_f1"]].mean().reset_index()
    agg = per_seed.groupby(["table", "method", "fraction"], sort=False).agg(
        acc_mean=("accuracy", "mean"), acc_std=("accuracy", "std"),
        f1_mean=("macro_f1", "mean"), f1_std=("macro_f1", "std")).reset_index()
    return agg


def markdown(summary: pd.DataFrame) -> str:
    fr = sorted(summary["fraction"].unique())
    head = "| table | method | " + " | ".join(f"{f:.0%} labels" for f in fr) + " |"
    lines = [head, "|" + "---|" * (2 + len(fr))]
    for (table, method), g in summary.groupby(["table", "method"], sort=False):
        cells = []
        for f in fr:
            r = g[g["fraction"] == f].iloc[0]
            cells.append(f"{r.acc_mean:.3f} ± {r.acc_std:.3f} (F1 {r.f1_mean:.2f})")
        lines.append(f"| {table} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
