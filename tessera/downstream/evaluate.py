"""Label-efficiency evaluation of embeddings on labelled point tables (WorldCereal extractions).

The question answered: with 1 %, 10 % or 100 % of the labels of some regions, how well do simple
heads on the embeddings classify the crops / land cover of a region never seen in training, and
how does that compare with a random forest on the raw time series? Protocol:

Samples and labels
    One sample = one `sample_id` of a long table (one row per sample and date; the WIDE
    WorldCereal layout is converted by `tessera.widetable.wide_to_long`). Its class is its
    `ewoc_code` (as text). Classes with fewer than `min_count` (default 10) samples in the table
    are merged into one class "other" (which is kept whatever its size). Class names come from
    the WorldCereal legend (`load_class_names`) and are for display only.

Evaluation year
    The d-pixel is annual, so the embedding sees the rows of one calendar year: the table's
    `year` column when it has one value, else the calendar year with most rows (FRA 2022:
    2022-01..12 of a 2021-09..2023-01 series; FRA 2023: 2023; UGA/SSD 2017: 2017-01..11). The raw
    baseline sees the same rows by default, so both get the same information
    (`raw_all_rows=True` gives it every row of the table instead).

Geographic splits
    Leave-one-`h3_l3_cell`-out (`leave_one_cell_out`): each cell is the test set once, the other
    cells are the training pool; no cell is ever in both. Every fold is kept, even when its
    training pool lacks some test classes: those test samples simply count as errors.

Label fractions (`subsample`)
    Of the training pool of a fold, k = ceil(f n) samples, stratified by class, with at least
    `min_per_class` (default 1) sample of every class present in the pool, so the subset can be
    larger than f n: at 1 % of ~250 samples in 8 classes it holds 8 samples (about 3 %), not 3.
    The column `n_train` of the results always gives the number actually used. Per seed and fold
    the subsets are NESTED (1 % within 10 % within 100 %): each is a prefix of one seeded stratified
    order of the pool. The seed (and the fold's cell) picks the subset; the seed is also the
    classifier's random_state. Everything is deterministic for given seeds.

Methods
    - `logreg_emb`: StandardScaler + LogisticRegression (lbfgs, max_iter 5000) on the embeddings;
    - `rf_emb`: RandomForest (200 trees) on the embeddings;
    - `rf_raw`: RandomForest on the raw time series: every S2 band and S1 VV / VH at every date
      of the evaluation year, flattened date-major in time order (monthly or dekadal as the table
      is), values as stored (S2 reflectance x 10 000, S1 amplitude DN: a forest does not care
      about monotone rescaling), nodata (65535) and absent dates = NaN, which scikit-learn's
      forests (>= 1.4) handle natively; columns that are NaN for every sample are dropped;
    - `majority`: the most frequent class of the training subset (a reference: what "no
      information" scores).
    A subset with a single class predicts that class.

Samples without usable features are never dropped silently. The model's flagged samples (no
valid S2 or S1 observation, `tessera.infer.FLAG_*`) still have an embedding and are predicted like
the others (counted in `n_test_flagged`). A sample the embedding function returns no finite vector
for (e.g. no row in the evaluation year) is left out of the training subset (`n_train` counts
what was used) and, in the test cell, predicted as the pseudo-class "<no features>", i.e. counted
as an error (`n_test_no_features`).

Metrics
    Overall accuracy and macro F1 (scikit-learn, over the classes that occur in the test cell or
    in the predictions, "<no features>" excepted; zero_division=0) on the test cell. Aggregation
    (`summarise`): per seed the mean over folds (unweighted by default: each region counts once),
    then the mean and the sample standard deviation (ddof=1) over seeds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from tessera.bands import S1_POLS, S2_BANDS
from tessera.widetable import WORLDCEREAL_OPTIONS  # how tessera.table reads these tables

FRACTIONS: tuple[float, ...] = (0.01, 0.1, 1.0)
SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
METHODS: tuple[str, ...] = ("logreg_emb", "rf_emb", "rf_raw", "majority")
EMBEDDING_METHODS = ("logreg_emb", "rf_emb")
OTHER = "other"
NO_FEATURES = "<no features>"
NODATA = (65535,)
DATE_COLUMNS = ("timestamp", "date", "time")
#: An embedding function: long frame -> (sample ids, (N, D) array) or (ids, array, flags).
EmbedFn = Callable[[pd.DataFrame], tuple]

RESULT_COLUMNS = ["table", "method", "fraction", "seed", "fold", "test_cell", "n_train",
                  "n_test", "accuracy", "macro_f1", "n_train_pool", "n_train_classes",
                  "n_test_unseen", "n_test_flagged", "n_test_no_features"]


# --- tables -----------------------------------------------------------------------------------

@dataclasses.dataclass
class EvalTable:
    """One labelled table: its long rows and, per sample (sorted by id), code, class and cell."""

    name: str
    year: int | None  # evaluation year (None: every row)
    long: pd.DataFrame  # every row of the table, long layout
    sample_ids: np.ndarray
    codes: np.ndarray  # ewoc_code as text
    labels: np.ndarray  # evaluation class: the code, or "other"
    cells: np.ndarray
    id_column: str = "sample_id"
    date_column: str = "timestamp"
    class_names: dict[str, str] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def year_rows(self) -> pd.DataFrame:
        """The rows the embedding sees: those of the evaluation year (all when year is None)."""
        if self.year is None:
            return self.long
        dates = pd.to_datetime(self.long[self.date_column])
        return self.long[(dates.dt.year == self.year).to_numpy()].reset_index(drop=True)

    def info(self) -> dict[str, Any]:
        """JSON-ready description: samples, year, cells and classes with counts and names."""
        counts = pd.Series(self.labels).value_counts()
        merged = sorted(set(self.codes[self.labels == OTHER]))
        return {
            "name": self.name, "samples": len(self), "year": self.year,
            "cells": {str(k): int(v) for k, v in pd.Series(self.cells).value_counts().items()},
            "classes": [{"class": str(c), "name": self.class_names.get(str(c), str(c)),
                         "count": int(n)} for c, n in counts.items()],
            "merged_into_other": merged,
        }


def load_class_names(path: str | os.PathLike | None) -> dict[str, str]:
    """{ewoc_code: label_full} from the WorldCereal legend CSV (`ewoc_code_crop_type_class_
    mappings.csv`, codes like 11-01-07-000-0) or {} when `path` is None or absent."""
    if path is None or not Path(path).exists():
        return {}
    legend = pd.read_csv(path, sep=";", dtype=str, encoding="utf-8-sig")
    codes = legend["ewoc_code"].str.replace("-", "", regex=False).str.strip()
    return dict(zip(codes, legend["label_full"].fillna("").str.strip()))


def merge_rare(codes: Sequence[Any], min_count: int = 10) -> np.ndarray:
    """Classes (as text) with fewer than `min_count` samples become "other"."""
    codes = np.asarray([str(c) for c in codes], dtype=object)
    counts = pd.Series(codes).value_counts()
    keep = set(counts.index[counts >= min_count])
    return np.array([c if c in keep else OTHER for c in codes], dtype=object)


def _date_column(df: pd.DataFrame) -> str | None:
    return next((c for c in DATE_COLUMNS if c in df.columns), None)


def _to_long(df: pd.DataFrame, source: str, id_column: str, keep: Sequence[str]) -> pd.DataFrame:
    """The WIDE WorldCereal layout -> long, by `tessera.widetable.wide_to_long`; per-sample
    columns in `keep` it does not carry over are joined back from the wide table."""
    from tessera.widetable import wide_to_long

    long = wide_to_long(df, source)
    lost = [c for c in keep if c not in long.columns and c in df.columns]
    if lost:
        long = long.merge(df[[id_column, *lost]], on=id_column, how="left", validate="m:1")
    return long


def load_table(source: str | os.PathLike | pd.DataFrame, *, name: str | None = None,
               min_count: int = 10, year: int | str | None = "auto",
               class_names: Mapping[str, str] | None = None, id_column: str = "sample_id",
               label_column: str = "ewoc_code", cell_column: str = "h3_l3_cell") -> EvalTable:
    """Read a labelled long (or WIDE WorldCereal) table for the evaluation.

    year: "auto" (the table's `year` column when single-valued, else the calendar year with most
    rows), an int, or None (every row: only for tables whose dates lie in one year).
    """
    if isinstance(source, pd.DataFrame):
        df, name = source, name or "<table>"
    else:
        path = Path(source)
        df, name = pd.read_parquet(path) if path.suffix != ".csv" else pd.read_csv(path), \
            name or path.name
    for col in (id_column, label_column, cell_column):
        if col not in df.columns:
            raise ValueError(f"{name}: no {col!r} column; the evaluation needs labelled, "
                             "geolocated samples")
    if _date_column(df) is None:
        df = _to_long(df, name, id_column, (label_column, cell_column, "year"))
    date_col = _date_column(df)
    if date_col is None:
        raise ValueError(f"{name}: no date column ({', '.join(DATE_COLUMNS)})")
    per = df.groupby(id_column, sort=True)
    for col in (label_column, cell_column):
        varying = per[col].nunique(dropna=False)
        if (varying > 1).any():
            raise ValueError(f"{name}: sample {varying.index[varying > 1][0]!r} has several "
                             f"{col} values")
    first = per[[label_column, cell_column]].first()
    if first[label_column].isna().any() or first[cell_column].isna().any():
        raise ValueError(f"{name}: samples without {label_column} or {cell_column}")
    dates = pd.to_datetime(df[date_col])
    if year == "auto":
        years = df["year"].dropna().unique() if "year" in df.columns else []
        year = int(years[0]) if len(years) == 1 else int(dates.dt.year.value_counts().idxmax())
    elif year is not None:
        year = int(year)
    codes = np.array([_code_text(c) for c in first[label_column]], dtype=object)
    return EvalTable(name=name, year=year, long=df, sample_ids=first.index.to_numpy(),
                     codes=codes, labels=merge_rare(codes, min_count),
                     cells=first[cell_column].astype(str).to_numpy(dtype=object),
                     id_column=id_column, date_column=date_col,
                     class_names={**(class_names or {}), OTHER: f"other (< {min_count} samples)"})


def _code_text(code: Any) -> str:
    if isinstance(code, (float, np.floating)) and float(code).is_integer():
        return str(int(code))
    return str(code)


# --- splits and label fractions ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Fold:
    index: int
    cell: str  # the test cell
    train: np.ndarray  # sample indices (into the table) of the training pool
    test: np.ndarray


def leave_one_cell_out(cells: Sequence[Any]) -> list[Fold]:
    """One fold per distinct cell (sorted): that cell is the test set, every other cell the
    training pool. A table with a single cell gives no fold."""
    cells = np.asarray([str(c) for c in cells], dtype=object)
    distinct = sorted(set(cells))
    if len(distinct) < 2:
        return []
    return [Fold(i, c, np.flatnonzero(cells != c), np.flatnonzero(cells == c))
            for i, c in enumerate(distinct)]


def subset_size(n: int, fraction: float) -> int:
    """ceil(fraction n), at least 1 (before the per-class minimum of `subsample`)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction}: expected 0 < fraction <= 1")
    return min(n, max(1, math.ceil(round(fraction * n, 9))))


def stratified_order(labels: Sequence[Any], seed: int, *, min_per_class: int = 1,
                     salt: int = 0) -> np.ndarray:
    """A seeded order of the indices of `labels` whose every prefix is a stratified sample.

    First `min_per_class` samples of each class (round by round, classes in random order), then
    the rest ordered by the key (j + u_c) / (n_c - m) for the j-th of the remaining samples of
    class c in a random order (u_c uniform per class): any prefix then holds each class in
    proportion to its count, within one sample (systematic sampling per class).
    """
    labels = np.asarray([str(v) for v in labels], dtype=object)
    rng = np.random.default_rng([int(seed), int(salt) & 0xFFFFFFFF])
    idx_all, keys = [], []
    for cls in sorted(set(labels)):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        m = min(min_per_class, len(idx))
        key = np.empty(len(idx))
        key[:m] = np.arange(m) + rng.random(m) - m  # in [-m, 0): the guaranteed block
        rest = len(idx) - m
        if rest:
            key[m:] = (np.arange(rest) + rng.random()) / rest  # in [0, 1)
        idx_all.append(idx)
        keys.append(key)
    if not idx_all:
        return np.zeros(0, np.int64)
    idx, key = np.concatenate(idx_all), np.concatenate(keys)
    return idx[np.argsort(key, kind="stable")]


def subsample(labels: Sequence[Any], fraction: float, seed: int, *, min_per_class: int = 1,
              salt: int = 0) -> np.ndarray:
    """Sorted indices of the labelled subset: the first max(ceil(f n), guaranteed) samples of
    `stratified_order`, so subsets of one seed and salt are nested across fractions; with
    fraction 1 every index."""
    n = len(labels)
    k = subset_size(n, fraction) if n else 0
    if k >= n:
        return np.arange(n)
    order = stratified_order(labels, seed, min_per_class=min_per_class, salt=salt)
    classes, counts = np.unique(np.asarray([str(v) for v in labels]), return_counts=True)
    guaranteed = int(np.minimum(counts, min_per_class).sum())
    return np.sort(order[:max(k, guaranteed)])


def fold_salt(cell: str) -> int:
    """A stable per-fold salt for the subset draw (so folds draw independently)."""
    return zlib.crc32(str(cell).encode())


# --- features ----------------------------------------------------------------------------------

def default_raw_columns(long: pd.DataFrame) -> list[str]:
    """The S2 band and S1 VV / VH columns of a long table, in model band order (WorldCereal
    names `S2-L2A-B02` / `S1-SIGMA0-VV` or plain `B02` / `VV`)."""
    cols = []
    for band in S2_BANDS:
        cols += [c for c in (f"S2-L2A-{band}", band) if c in long.columns][:1]
    for pol in S1_POLS:
        cols += [c for c in (f"S1-SIGMA0-{pol}", pol) if c in long.columns][:1]
    if not cols:
        raise ValueError("no S2 / S1 band columns (S2-L2A-B02.., S1-SIGMA0-VV.. or B02.., VV..)")
    return cols


def raw_features(long: pd.DataFrame, sample_ids: Sequence[Any], *,
                 columns: Sequence[str] | None = None, id_column: str = "sample_id",
                 date_column: str | None = None, nodata: Iterable[float] = NODATA,
                 drop_empty: bool = True) -> tuple[np.ndarray, list[str]]:
    """(N, dates x bands) float64 matrix of the raw time series, one row per `sample_ids` entry.

    Columns are date-major in time order over the sorted distinct dates of `long` (the bands of
    the first date, then of the second, ...), bands in `columns` order (default
    `default_raw_columns`). Values equal to a `nodata` value, NaN, and dates a sample has no row
    for are NaN; a sample without any row is all NaN. With `drop_empty`, columns that are NaN for
    every sample are dropped. Names are "YYYY-MM-DD:column". Repeated (sample, date) rows are
    an error.
    """
    columns = list(columns) if columns is not None else default_raw_columns(long)
    date_column = date_column or _date_column(long)
    if date_column is None:
        raise ValueError("no date column")
    sample_ids = np.asarray(sample_ids)
    dates = pd.to_datetime(long[date_column]).to_numpy("datetime64[ns]")
    steps = np.unique(dates)
    row = pd.Index(sample_ids).get_indexer(long[id_column].to_numpy())
    ok = row >= 0
    step = np.searchsorted(steps, dates)
    cube = np.full((len(sample_ids), len(steps), len(columns)), np.nan)
    if ok.any():
        pairs = row[ok] * max(1, len(steps)) + step[ok]
        if len(np.unique(pairs)) != len(pairs):
            raise ValueError("repeated (sample, date) rows in the table")
        values = long[columns].to_numpy(dtype=np.float64)[ok]
        for v in nodata:
            values[values == v] = np.nan
        cube[row[ok], step[ok]] = values
    x = cube.reshape(len(sample_ids), -1)
    names = [f"{str(d)[:10]}:{c}" for d in steps for c in columns]
    if drop_empty and x.size:
        keep = ~np.isnan(x).all(axis=0)
        x, names = x[:, keep], [n for n, k in zip(names, keep) if k]
    return x, names


def tessera_embedder(model: Any = None, *, checkpoint: str | os.PathLike | None = None,
                     preset: str | None = None, device: str = "cpu",
                     options: Mapping[str, Any] | None = None, **embed_kwargs: Any) -> EmbedFn:
    """An `EmbedFn` embedding with `tessera.table.embed_table`: the given model, else
    `tessera.infer.resolve_model(checkpoint, preset)` (loaded once, on first use). `options`:
    table options (default `WORLDCEREAL_OPTIONS`). Returns (ids, float32 (N, 128), flags)."""
    from tessera.table import embed_table, embedding_columns

    opts = dict(WORLDCEREAL_OPTIONS if options is None else options)
    state: dict[str, Any] = {"model": model}

    def embed(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if state["model"] is None:
            from tessera.infer import resolve_model
            state["model"], state["meta"] = resolve_model(checkpoint, preset)
        m = state["model"]
        out = embed_table(df, model=m, device=device, **embed_kwargs, **opts)
        x = out[embedding_columns(m.config.latent_dim)].to_numpy(np.float32)
        if "scale" in out.columns:  # int8 output: dequantise
            x = x * out["scale"].to_numpy(np.float32)[:, None]
        return out.iloc[:, 0].to_numpy(), x, out["flags"].to_numpy()

    embed.state = state  # type: ignore[attr-defined]
    return embed


@dataclasses.dataclass
class Embeddings:
    """Embeddings aligned with a table's samples; rows of samples not embedded are NaN."""

    x: np.ndarray  # (N, D) float
    flags: np.ndarray  # (N,) int, FLAG_* bits (0 when the embedding function gives none)
    seconds: float = 0.0

    @property
    def missing(self) -> np.ndarray:
        return ~np.isfinite(self.x).all(axis=1)


def embed_samples(table: EvalTable, embed_fn: EmbedFn) -> Embeddings:
    """Call `embed_fn` on the evaluation-year rows and align its output with `table.sample_ids`.
    Ids it does not know are an error; samples it skips get NaN rows (scored as errors)."""
    t0 = time.perf_counter()
    out = embed_fn(table.year_rows())
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise TypeError("the embedding function must return (sample_ids, array) or "
                        "(sample_ids, array, flags)")
    ids, x = np.asarray(out[0]), np.asarray(out[1], dtype=np.float64)
    flags = np.zeros(len(ids), np.int64) if len(out) == 2 else np.asarray(out[2], np.int64)
    if x.ndim != 2 or len(x) != len(ids) or len(flags) != len(ids):
        raise ValueError(f"embedding function: {len(ids)} ids, array {x.shape}, "
                         f"{len(flags)} flags")
    if len(pd.unique(ids)) != len(ids):
        raise ValueError("embedding function: repeated sample ids")
    pos = pd.Index(table.sample_ids).get_indexer(ids)
    if (pos < 0).any():
        raise ValueError(f"embedding function: unknown sample id {ids[pos < 0][0]!r}")
    aligned = np.full((len(table), x.shape[1]), np.nan)
    aligned[pos] = x
    aligned_flags = np.zeros(len(table), np.int64)
    aligned_flags[pos] = flags
    return Embeddings(aligned, aligned_flags, time.perf_counter() - t0)


# --- classifiers -------------------------------------------------------------------------------

def make_classifier(method: str, seed: int, *, n_estimators: int = 200, n_jobs: int = 2) -> Any:
    """The scikit-learn estimator of a method ("logreg*" or "rf*")."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if method.startswith("logreg"):
        return make_pipeline(StandardScaler(),
                             LogisticRegression(max_iter=5000, random_state=seed))
    if method.startswith("rf"):
        return RandomForestClassifier(n_estimators=n_estimators, n_jobs=n_jobs,
                                      random_state=seed)
    raise ValueError(f"method {method!r}: expected one of {', '.join(METHODS)}")


def fit_predict(method: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                seed: int, **classifier_kwargs: Any) -> np.ndarray:
    """Predictions for `x_test`; a single-class training set (or `majority`) predicts the most
    frequent training class (ties: the first in sorted order)."""
    y_train = np.asarray(y_train, dtype=object)
    if len(y_train) == 0:
        return np.full(len(x_test), NO_FEATURES, dtype=object)
    classes, counts = np.unique(y_train.astype(str), return_counts=True)
    if method == "majority" or len(classes) == 1:
        return np.full(len(x_test), classes[np.argmax(counts)], dtype=object)
    if len(x_test) == 0:
        return np.zeros(0, dtype=object)
    if len(y_train) < 100:  # one core is faster on tiny subsets; forests do not depend on it
        classifier_kwargs = {**classifier_kwargs, "n_jobs": 1}
    clf = make_classifier(method, seed, **classifier_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence / tiny-class warnings of small subsets
        clf.fit(x_train, y_train.astype(str))
        return clf.predict(x_test).astype(object)


def scores(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(accuracy, macro F1); "<no features>" predictions are errors but not a class."""
    from sklearn.metrics import f1_score

    truth, pred = np.asarray(truth, str), np.asarray(pred, str)
    if len(truth) == 0:
        return float("nan"), float("nan")
    labels = sorted((set(truth) | set(pred)) - {NO_FEATURES})
    acc = float(np.mean(truth == pred))
    f1 = float(f1_score(truth, pred, labels=labels, average="macro", zero_division=0))
    return acc, f1


# --- the evaluation ----------------------------------------------------------------------------

def evaluate_table(table: EvalTable, embed_fn: EmbedFn | None = None, *,
                   embeddings: Embeddings | None = None,
                   methods: Sequence[str] = METHODS, fractions: Sequence[float] = FRACTIONS,
                   seeds: Sequence[int] = SEEDS, min_per_class: int = 1,
                   n_estimators: int = 200, n_jobs: int = 2, raw_all_rows: bool = False,
                   log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Score every method on one table: a tidy frame, one row per (method, fraction, seed,
    fold) with the columns of `RESULT_COLUMNS`.

    Embeddings come from `embeddings` or `embed_fn` (needed only for the embedding methods).
    All methods of a (fraction, seed, fold) share one labelled subset.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; expected {', '.join(METHODS)}")
    say = log or (lambda _msg: None)
    folds = leave_one_cell_out(table.cells)
    if not folds:
        raise ValueError(f"{table.name}: one h3 cell only; leave-one-cell-out needs two or more")
    feats: dict[str, np.ndarray] = {}
    no_feat = np.zeros(len(table), bool)
    flags = np.zeros(len(table), np.int64)
    if any(m in EMBEDDING_METHODS for m in methods):
        if embeddings is None:
            if embed_fn is None:
                raise ValueError("embedding methods need embed_fn or embeddings")
            embeddings = embed_samples(table, embed_fn)
            say(f"{table.name}: embedded {len(table)} samples in {embeddings.seconds:.1f} s "
                f"({int((embeddings.flags != 0).sum())} flagged, "
                f"{int(embeddings.missing.sum())} without an embedding)")
        feats["emb"] = embeddings.x
        no_feat = embeddings.missing
        flags = embeddings.flags
    if "rf_raw" in methods:
        long = table.long if raw_all_rows else table.year_rows()
        feats["raw"], names = raw_features(long, table.sample_ids, id_column=table.id_column,
                                           date_column=table.date_column)
        say(f"{table.name}: raw features {feats['raw'].shape[1]} columns "
            f"({names[0]} .. {names[-1]})" if names else f"{table.name}: no raw features")

    rows = []
    cache: dict[tuple, np.ndarray] = {}
    labels = table.labels
    for frac in fractions:
        t0 = time.perf_counter()
        for seed in seeds:
            for fold in folds:
                pick = fold.train[subsample(labels[fold.train], frac, seed,
                                            min_per_class=min_per_class,
                                            salt=fold_salt(fold.cell))]
                truth = labels[fold.test]
                for method in methods:
                    uses_emb = method in EMBEDDING_METHODS
                    train = pick[~no_feat[pick]] if uses_emb else pick
                    test_ok = ~no_feat[fold.test] if uses_emb else np.ones(len(fold.test), bool)
                    key = (method, fold.index, train.tobytes())
                    if method in ("logreg_emb", "majority") and key in cache:
                        pred = cache[key]  # deterministic given the subset: same as another seed
                    else:
                        x = feats.get("emb" if uses_emb else "raw")
                        x_train = x[train] if x is not None else np.zeros((len(train), 0))
                        x_test = x[fold.test[test_ok]] if x is not None else \
                            np.zeros((int(test_ok.sum()), 0))
                        pred = np.full(len(fold.test), NO_FEATURES, dtype=object)
                        pred[test_ok] = fit_predict(method, x_train, labels[train], x_test, seed,
                                                    n_estimators=n_estimators, n_jobs=n_jobs)
                        cache[key] = pred
                    acc, f1 = scores(truth, pred)
                    seen = set(labels[train])
                    rows.append({
                        "table": table.name, "method": method, "fraction": float(frac),
                        "seed": int(seed), "fold": fold.index, "test_cell": fold.cell,
                        "n_train": len(train), "n_test": len(fold.test), "accuracy": acc,
                        "macro_f1": f1, "n_train_pool": len(fold.train),
                        "n_train_classes": len(seen),
                        "n_test_unseen": int(sum(t not in seen for t in truth)),
                        "n_test_flagged": int((flags[fold.test] != 0).sum()) if uses_emb else 0,
                        "n_test_no_features": int((~test_ok).sum()),
                    })
        say(f"{table.name}: fraction {frac:g} done in {time.perf_counter() - t0:.1f} s")
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def evaluate_tables(tables: Sequence[EvalTable], embed_fn: EmbedFn | None = None,
                    **kwargs: Any) -> pd.DataFrame:
    """`evaluate_table` on each table, concatenated."""
    return pd.concat([evaluate_table(t, embed_fn, **kwargs) for t in tables], ignore_index=True)


# --- summaries ---------------------------------------------------------------------------------

def summarise(results: pd.DataFrame, *, weight: str = "fold") -> pd.DataFrame:
    """Per (table, method, fraction): mean and std over seeds of the per-seed mean over folds.

    weight: "fold" (each fold counts once) or "sample" (folds weighted by their test samples,
    i.e. pooled accuracy). std is the sample standard deviation (ddof=1; 0 with one seed).
    """
    if weight not in ("fold", "sample"):
        raise ValueError(f"weight {weight!r}: expected 'fold' or 'sample'")
    keys = ["table", "method", "fraction"]
    r = results.assign(w=results["n_test"] if weight == "sample" else 1.0)

    def per_seed(g: pd.DataFrame) -> pd.Series:
        w = g["w"].to_numpy(float)
        return pd.Series({"accuracy": np.average(g["accuracy"], weights=w),
                          "macro_f1": np.average(g["macro_f1"], weights=w),
                          "n_train": g["n_train"].mean(), "n_folds": len(g)})

    seeds = r.groupby(keys + ["seed"], sort=False)[
        ["accuracy", "macro_f1", "n_train", "w"]].apply(per_seed).reset_index()
    out = seeds.groupby(keys, sort=False).agg(
        acc_mean=("accuracy", "mean"), acc_std=("accuracy", "std"),
        f1_mean=("macro_f1", "mean"), f1_std=("macro_f1", "std"),
        n_train_mean=("n_train", "mean"), n_seeds=("seed", "nunique"),
        n_folds=("n_folds", "max")).reset_index()
    out[["acc_std", "f1_std"]] = out[["acc_std", "f1_std"]].fillna(0.0)
    return out


def fraction_label(f: float) -> str:
    return f"{f * 100:g} %"


def summary_markdown(results: pd.DataFrame, *, weight: str = "fold") -> str:
    """Markdown: rows table x method, columns the label fractions, cells
    "acc 0.xx ± 0.xx (F1 0.xx)" (mean ± std over seeds of the mean over folds); then the mean
    number of labelled training samples per fold."""
    s = summarise(results, weight=weight)
    fr = sorted(s["fraction"].unique())
    lines = ["| table | method | " + " | ".join(fraction_label(f) for f in fr) + " |",
             "|---|---|" + "---|" * len(fr)]
    for (table, method), g in s.groupby(["table", "method"], sort=False):
        cells = []
        for f in fr:
            hit = g[g["fraction"] == f]
            if hit.empty:
                cells.append("-")
                continue
            r = hit.iloc[0]
            cells.append(f"acc {r.acc_mean:.2f} ± {r.acc_std:.2f} (F1 {r.f1_mean:.2f})")
        lines.append(f"| {table} | {method} | " + " | ".join(cells) + " |")
    lines += ["", "Labelled training samples per fold (mean over folds and seeds):", "",
              "| table | folds | " + " | ".join(fraction_label(f) for f in fr) + " |",
              "|---|---|" + "---|" * len(fr)]
    for table, g in s.groupby("table", sort=False):
        g = g[g["method"] == g["method"].iloc[0]]
        cells = [f"{g[g['fraction'] == f]['n_train_mean'].iloc[0]:.1f}"
                 if (g["fraction"] == f).any() else "-" for f in fr]
        lines.append(f"| {table} | {int(g['n_folds'].max())} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_dict(results: pd.DataFrame, *, weight: str = "fold", **meta: Any) -> dict[str, Any]:
    """JSON-ready summary: `meta`, then per table / method / fraction the aggregated scores and
    the totals of flagged / featureless test samples."""
    s = summarise(results, weight=weight)
    counts = results.groupby(["table", "method", "fraction"], sort=False)[
        ["n_test_flagged", "n_test_no_features", "n_test_unseen"]].sum()
    out: dict[str, Any] = {**meta, "weight": weight, "summary": []}
    for r in s.itertuples(index=False):
        c = counts.loc[(r.table, r.method, r.fraction)]
        out["summary"].append({
            "table": r.table, "method": r.method, "fraction": float(r.fraction),
            "accuracy_mean": float(r.acc_mean), "accuracy_std": float(r.acc_std),
            "macro_f1_mean": float(r.f1_mean), "macro_f1_std": float(r.f1_std),
            "n_train_mean": float(r.n_train_mean), "seeds": int(r.n_seeds),
            "folds": int(r.n_folds),
            "test_flagged_total": int(c["n_test_flagged"]),
            "test_no_features_total": int(c["n_test_no_features"]),
            "test_unseen_class_total": int(c["n_test_unseen"]),
        })
    return json.loads(json.dumps(out, default=str))
