"""Label-efficiency evaluation of embeddings on labelled point tables (WorldCereal extractions).

The question answered: with 1 %, 10 % or 100 % of the labels of some regions, how well do simple
heads on the embeddings classify the crops / land cover of a region never seen in training, and
how does that compare with a random forest on the raw time series? Protocol:

Samples and labels
    One sample = one `sample_id` of a long table (one row per sample and date; the WIDE
    WorldCereal layout is converted by `tessera.table.wide.wide_to_long`). Its class is its
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

The protocol's parts: `tessera.downstream.tables` (samples and labels), `.splits` (folds and
label fractions), `.features` (raw series, embeddings) and `.report` (summaries); this module
holds the methods, the scores and the loop over them (`evaluate_table`).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from tessera.downstream.features import EmbedFn, Embeddings, embed_samples, raw_features
from tessera.downstream.splits import fold_salt, leave_one_cell_out, subsample
from tessera.downstream.tables import EvalTable
from tessera.errors import InputError

FRACTIONS: tuple[float, ...] = (0.01, 0.1, 1.0)
SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
METHODS: tuple[str, ...] = ("logreg_emb", "rf_emb", "rf_raw", "majority")
EMBEDDING_METHODS = ("logreg_emb", "rf_emb")
NO_FEATURES = "<no features>"

RESULT_COLUMNS = ["table", "method", "fraction", "seed", "fold", "test_cell", "n_train",
                  "n_test", "accuracy", "macro_f1", "n_train_pool", "n_train_classes",
                  "n_test_unseen", "n_test_flagged", "n_test_no_features"]


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
    raise InputError(f"method {method!r}: expected one of {', '.join(METHODS)}")


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
        raise InputError(f"unknown method(s) {', '.join(unknown)}; expected {', '.join(METHODS)}")
    say = log or (lambda _msg: None)
    folds = leave_one_cell_out(table.cells)
    if not folds:
        raise InputError(f"{table.name}: one h3 cell only; leave-one-cell-out needs two or more")
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
