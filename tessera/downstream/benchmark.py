"""The evaluation engine: heads on embeddings against the same heads on raw features and a
no-information baseline, over folds, label fractions and seeds (`evaluate` -> `EvalResult`).

Protocol (every method sees exactly the same samples):
    - for each fold (`tessera.downstream.splits.make_folds`, or any list of `Fold`s: no sample
      may be in a fold's training pool and its test set), each seed and each label fraction,
      the labelled subset is a seeded stratified subset of the fold's training pool, nested
      across fractions (1 % within 10 % within 100 %), with at least one sample of every class
      the pool holds (regression: stratified by quantile bins of the target) - `label_subsets`;
    - on that subset every head is fitted on the embeddings `X` (method = the head's kind,
      e.g. "logistic") and, for each baseline feature set given (`baselines={"raw": X_raw}`),
      on those features ("raw:logistic"), and scored on the fold's whole test set;
    - the reference method: "majority" (the most frequent class of the subset, ties to the
      first class) for classification, "mean" (the subset's mean) for regression;
    - a subset holding a single class predicts that class, whatever the head; an empty one
      (a fold whose pool a buffer emptied) predicts nothing: every test sample is an error
      (regression: NaN scores);
    - the seed picks the subset and is the head's seed: results are deterministic for given
      seeds (as far as the heads are).
Scores (`tessera.downstream.metrics`): accuracy, macro F1 (over the classes in the test truth
or the predictions), per-class F1 and confusion matrices; RMSE, MAE, R2. Learning curves: per
method and fraction, the mean over folds per seed, then the mean and std (ddof=1) over seeds.

Heads come from `tessera.downstream.heads.make_head(kind, task, classes=..., seed=...,
**params)` (or any factory passed as `make_head`): objects with fit(X, y) and predict(X), y
given as class indices into `classes` (classification) or floats.

Why a module of its own: `tessera.downstream.evaluate` runs the WorldCereal tables end to end
(embedding, raw series); this engine takes any feature matrices and any folds.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from tessera.downstream.metrics import (as_indices, check_task, classification_metrics,
                                        higher_is_better, metric_names, regression_metrics)
from tessera.downstream.splits import Fold, fold_salt, label_subsets
from tessera.errors import InputError
from tessera.progress import Progress, task as progress_task

HEADS: tuple[str, ...] = ("logistic", "random_forest")
FRACTIONS: tuple[float, ...] = (0.01, 0.1, 1.0)
SEEDS: tuple[int, ...] = (0, 1, 2)
EMBEDDING = "embedding"  # the `features` of the embedding methods
REFERENCE = "-"  # the `features` of the majority / mean baseline

HeadFactory = Callable[..., Any]


@dataclasses.dataclass
class EvalResult:
    """What `evaluate` found. rows: one row per (method, fraction, seed, fold) with the columns
    method, features, head, fraction, seed, fold, fold_name, n_train, n_test, the metrics of the
    task (and, for classification, n_train_classes and n_test_unseen: test samples of a class
    absent from the labelled subset). per_class: classification, one row per row of `rows` and
    class (f1, support). confusion: per method the confusion matrix at `confusion_fraction`
    (the largest fraction): summed over folds, mean over seeds (rows sum to the test support)."""

    task: str
    classes: tuple[str, ...]
    rows: pd.DataFrame
    per_class: pd.DataFrame
    confusion: dict[str, np.ndarray]
    confusion_fraction: float
    methods: list[dict[str, str]]  # name, features, head; in plotting order
    folds: list[dict[str, Any]]  # Fold.info() of each fold
    fractions: tuple[float, ...]
    seeds: tuple[int, ...]
    n_samples: int
    n_features: dict[str, int]  # per feature set ("embedding", "raw", ...)
    seconds: float = 0.0

    @property
    def metrics(self) -> tuple[str, ...]:
        return metric_names(self.task)

    @property
    def primary_metric(self) -> str:
        return "macro_f1" if self.task == "classification" else "rmse"

    @property
    def split(self) -> str:
        """The split method(s) of the folds."""
        return ",".join(sorted({str(f.get("method", "?")) for f in self.folds}))

    def learning_curve(self) -> pd.DataFrame:
        """Per method and fraction: n_train_mean, n_folds, n_seeds and, for each metric,
        <metric>_mean / <metric>_std over seeds of the per-seed mean over folds."""
        return learning_curve(self.rows, self.metrics,
                              order=[m["name"] for m in self.methods])

    def per_class_f1(self, fraction: float | None = None) -> pd.DataFrame:
        """Classification: per method and class the mean F1 over folds and seeds (NaN-aware)
        and the test support per seed, at `fraction` (default: the largest)."""
        f = self.confusion_fraction if fraction is None else float(fraction)
        pc = self.per_class[self.per_class["fraction"] == f]
        if pc.empty:
            return pd.DataFrame(columns=["method", "class", "f1_mean", "support"])
        n_seeds = max(1, pc["seed"].nunique())
        out = pc.groupby(["method", "class"], sort=False).agg(
            f1_mean=("f1", "mean"), support=("support", "sum")).reset_index()
        out["support"] = out["support"] / n_seeds
        return out


def learning_curve(rows: pd.DataFrame, metrics: Sequence[str], *,
                   order: Sequence[str] | None = None) -> pd.DataFrame:
    """Per (method, fraction): the mean over folds for each seed, then mean and sample std
    (0 with one seed) over seeds; NaN scores (an empty test set, R2 of one sample) are left
    out of the means."""
    metrics = list(metrics)
    keys = ["method", "features", "head", "fraction"]
    per_seed = rows.groupby(keys + ["seed"], sort=False).agg(
        **{m: (m, "mean") for m in metrics}, n_train=("n_train", "mean"),
        n_folds=("fold", "nunique")).reset_index()
    agg: dict[str, Any] = {"n_train_mean": ("n_train", "mean"), "n_folds": ("n_folds", "max"),
                           "n_seeds": ("seed", "nunique")}
    for m in metrics:
        agg[f"{m}_mean"] = (m, "mean")
        agg[f"{m}_std"] = (m, "std")
    out = per_seed.groupby(keys, sort=False).agg(**agg).reset_index()
    for m in metrics:
        out[f"{m}_std"] = out[f"{m}_std"].where(out["n_seeds"] > 1, 0.0)
    if order is not None:
        rank = {m: i for i, m in enumerate(order)}
        out = out.sort_values(["method", "fraction"], key=lambda s: s.map(rank)
                              if s.name == "method" else s, kind="stable")
    return out.reset_index(drop=True)


# --- input checks ------------------------------------------------------------------------------

def _matrix(x: Any, field: str, n: int | None) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise InputError(f"{field}: shape {a.shape}; expected (samples, features)")
    if a.dtype.kind not in "biuf":
        raise InputError(f"{field}: dtype {a.dtype}; expected numbers")
    if n is not None and len(a) != n:
        raise InputError(f"{field}: {len(a)} rows for {n} samples; expected one per sample")
    return a


def _check_folds(folds: Sequence[Fold], n: int) -> list[Fold]:
    folds = list(folds)
    if not folds:
        raise InputError("folds: none given; expected at least one (make_folds)")
    for f in folds:
        for part in ("train", "test"):
            idx = np.asarray(getattr(f, part))
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise InputError(f"fold {f.cell}: {part} index {int(idx.max())} outside the "
                                 f"{n} samples")
        both = np.intersect1d(f.train, f.test)
        if both.size:
            raise InputError(f"fold {f.cell}: {both.size} samples in both its training pool "
                             "and its test set; expected disjoint sets")
    return folds


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    fr = tuple(sorted({float(f) for f in fractions}))
    if not fr or not all(0 < f <= 1 for f in fr):
        raise InputError(f"fractions {list(fractions)}: expected label fractions 0 < f <= 1")
    return fr


def _default_factory() -> HeadFactory:
    from tessera.downstream.heads import make_head

    factory: HeadFactory = make_head
    return factory


# --- fitting -----------------------------------------------------------------------------------

def _predict(factory: HeadFactory, kind: str, task: str, classes: tuple[str, ...], seed: int,
             params: Mapping[str, Any], x_train: np.ndarray, y_train: np.ndarray,
             x_test: np.ndarray) -> np.ndarray:
    """Predictions of one head (class indices or floats)."""
    if len(y_train) == 0:  # an empty training pool (a buffer took it all): no prediction
        return _reference(task, y_train, len(x_test), len(classes))
    if task == "classification":
        present = np.unique(y_train)
        if len(present) == 1:
            return np.full(len(x_test), int(present[0]), np.int64)
    if len(x_test) == 0:
        return np.zeros(0, np.int64 if task == "classification" else float)
    head = factory(kind, task, classes=classes, seed=seed, **dict(params))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence / tiny-class warnings of small subsets
        head.fit(x_train, y_train)
        pred = np.asarray(head.predict(x_test))
    if len(pred) != len(x_test):
        raise InputError(f"head {kind!r}: {len(pred)} predictions for {len(x_test)} samples")
    if task == "classification":
        return as_indices(pred, classes)
    return pred.astype(float)


def _reference(task: str, y_train: np.ndarray, n_test: int, n_classes: int) -> np.ndarray:
    """The majority class (ties: the first) or the mean of the subset; without training
    samples -1 (no prediction, an error) or NaN."""
    if task == "classification":
        if len(y_train) == 0:
            return np.full(n_test, -1, np.int64)
        counts = np.bincount(y_train, minlength=n_classes)
        return np.full(n_test, int(np.argmax(counts)), np.int64)
    return np.full(n_test, float(np.mean(y_train)) if len(y_train) else float("nan"))


# --- the engine --------------------------------------------------------------------------------

def evaluate(X: Any, y: Any, *, task: str = "classification", classes: Sequence[Any] = (),
             folds: Sequence[Fold], heads: Sequence[str] = HEADS,
             fractions: Sequence[float] = FRACTIONS, seeds: Sequence[int] = SEEDS,
             baselines: Mapping[str, Any] | None = None, make_head: HeadFactory | None = None,
             head_params: Mapping[str, Mapping[str, Any]] | None = None,
             min_per_class: int = 1, progress: Progress | None = None,
             features: str = EMBEDDING) -> EvalResult:
    """Score every head on the embeddings `X` (and on each baseline feature set) and the
    majority / mean reference, for every fold x fraction x seed (see the module docstring).

    y: class names or indices into `classes` (classification; classes default to the sorted
    distinct labels) or numbers (regression). head_params: extra keyword arguments per head
    kind. progress: one step per fit. features: the name of `X`'s feature set in the results
    (default "embedding"; e.g. "table" for plain table columns, so no report calls them
    embeddings); its methods are named by the head alone.
    """
    t0 = time.perf_counter()
    check_task(task)
    if not features or ":" in features or features == REFERENCE:
        raise InputError(f"features {features!r}: expected a short name without ':'")
    x = _matrix(X, f"X ({features})", None)
    n = len(x)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise InputError(f"X ({features}): {bad} samples with non-finite values; expected "
                         "finite features (leave those samples out)")
    feats: dict[str, np.ndarray] = {features: x}
    for name, xb in (baselines or {}).items():
        if not name or ":" in name or name in (EMBEDDING, REFERENCE, features):
            raise InputError(f"baseline name {name!r}: expected a short name without ':' "
                             f"(e.g. 'raw'), not {EMBEDDING!r}")
        feats[name] = _matrix(xb, f"baseline {name!r}", n)
    heads = tuple(heads)
    if not heads or not all(isinstance(h, str) and h for h in heads):
        raise InputError(f"heads {list(heads)}: expected head kinds such as 'logistic'")
    if len(set(heads)) != len(heads):
        raise InputError(f"heads {list(heads)}: a head kind given twice")
    fracs = _check_fractions(fractions)
    seed_list = tuple(int(s) for s in seeds)
    if not seed_list:
        raise InputError("seeds: none given; expected at least one")
    fold_list = _check_folds(folds, n)

    if task == "classification":
        ya = np.asarray(y)
        if len(classes):
            names = tuple(str(c) for c in classes)
            if len(set(names)) != len(names):
                raise InputError("classes: a class name given twice")
            target = as_indices(ya, names)
        else:  # the distinct labels in their natural order (numbers numerically)
            if ya.dtype.kind == "O":
                ya = ya.astype(str)
            distinct, target = np.unique(ya, return_inverse=True)
            names = tuple(str(v) for v in distinct.tolist())
            target = target.astype(np.int64).ravel()
        if (target < 0).any():
            raise InputError("y: class index -1; expected a class for every sample")
    else:
        names = ()
        target = np.asarray(y, dtype=float)
        if not np.isfinite(target).all():
            raise InputError(f"y: {int((~np.isfinite(target)).sum())} non-finite targets; "
                             "expected a number for every sample")
    if target.ndim != 1 or len(target) != n:
        raise InputError(f"y: {len(np.atleast_1d(target))} labels for {n} samples; expected "
                         "one per sample")
    factory = make_head if make_head is not None else _default_factory()
    params = head_params or {}

    methods: list[dict[str, str]] = []
    for fname in feats:
        for h in heads:
            methods.append({"name": h if fname == features else f"{fname}:{h}",
                            "features": fname, "head": h})
    ref = "majority" if task == "classification" else "mean"
    methods.append({"name": ref, "features": REFERENCE, "head": ref})

    metrics = metric_names(task)
    n_fits = len(fracs) * len(seed_list) * len(fold_list) * len(methods)
    bar = progress_task(progress, "evaluate", total=n_fits, unit="fit")
    rows: list[dict[str, Any]] = []
    per_class: list[dict[str, Any]] = []
    top = fracs[-1]
    c = len(names)
    confusion = {m["name"]: np.zeros((c, c), float) for m in methods}
    for seed in seed_list:
        for fold in fold_list:
            pool = np.asarray(fold.train, np.int64)
            test = np.asarray(fold.test, np.int64)
            subsets = label_subsets(target[pool], fracs, seed, salt=fold_salt(fold.cell),
                                    min_per_class=min_per_class,
                                    regression=task == "regression")
            truth = target[test]
            for frac in fracs:
                train = pool[subsets[frac]]
                y_train = target[train]
                for m in methods:
                    if m["features"] == REFERENCE:
                        pred = _reference(task, y_train, len(test), c)
                    else:
                        xf = feats[m["features"]]
                        pred = _predict(factory, m["head"], task, names, seed,
                                        params.get(m["head"], {}), xf[train], y_train, xf[test])
                    row: dict[str, Any] = {
                        "method": m["name"], "features": m["features"], "head": m["head"],
                        "fraction": frac, "seed": seed, "fold": fold.index,
                        "fold_name": fold.cell, "n_train": int(len(train)),
                        "n_test": int(len(test))}
                    if task == "classification":
                        s = classification_metrics(truth, pred, names)
                        seen = set(y_train.tolist())
                        row["n_train_classes"] = len(seen)
                        row["n_test_unseen"] = int(sum(t not in seen for t in truth.tolist()))
                        for cls in names:
                            per_class.append({"method": m["name"], "fraction": frac,
                                              "seed": seed, "fold": fold.index, "class": cls,
                                              "f1": s["per_class_f1"][cls],
                                              "support": s["support"][cls]})
                        if frac == top:
                            confusion[m["name"]] += s["confusion"]
                    else:
                        s = regression_metrics(truth, pred)
                    row.update({k: s[k] for k in metrics})
                    rows.append(row)
                    bar.advance(1, info=f"{m['name']} {frac:g} seed {seed} {fold.cell}")

    columns = ["method", "features", "head", "fraction", "seed", "fold", "fold_name", "n_train",
               "n_test", *metrics]
    if task == "classification":
        columns += ["n_train_classes", "n_test_unseen"]
    frame = pd.DataFrame(rows, columns=columns)
    order = {m["name"]: i for i, m in enumerate(methods)}
    frame = frame.sort_values(["method", "fraction", "seed", "fold"],
                              key=lambda s: s.map(order) if s.name == "method" else s,
                              kind="stable").reset_index(drop=True)
    pc = pd.DataFrame(per_class, columns=["method", "fraction", "seed", "fold", "class", "f1",
                                          "support"])
    if task == "classification":
        confusion = {k: v / len(seed_list) for k, v in confusion.items()}
    else:
        confusion = {}
    return EvalResult(task=task, classes=names, rows=frame, per_class=pc, confusion=confusion,
                      confusion_fraction=top, methods=methods,
                      folds=[f.info() if hasattr(f, "info") else
                             {"index": f.index, "name": f.cell, "n_train": len(f.train),
                              "n_test": len(f.test)} for f in fold_list],
                      fractions=fracs, seeds=seed_list, n_samples=n,
                      n_features={k: int(v.shape[1]) for k, v in feats.items()},
                      seconds=time.perf_counter() - t0)


def best_method(result: EvalResult, *, features: str = EMBEDDING,
                fraction: float | None = None) -> str | None:
    """The method of `features` with the best primary metric at `fraction` (default the
    largest), or None when there is none."""
    lc = result.learning_curve()
    f = result.fractions[-1] if fraction is None else float(fraction)
    sel = lc[(lc["features"] == features) & (lc["fraction"] == f)]
    col = f"{result.primary_metric}_mean"
    sel = sel[sel[col].notna()]
    if sel.empty:
        return None
    v = sel[col].to_numpy(float)
    j = int(np.argmin(v) if not higher_is_better(result.primary_metric) else np.argmax(v))
    return str(sel["method"].iloc[j])


__all__ = ["EMBEDDING", "FRACTIONS", "HEADS", "REFERENCE", "SEEDS", "EvalResult", "HeadFactory",
           "best_method", "evaluate", "learning_curve"]

