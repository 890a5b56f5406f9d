"""Scores of one test set: classification (accuracy, macro F1, per-class F1, confusion matrix in
a fixed class order) and regression (RMSE, MAE, R2), one dict per call (`compute_metrics`).

Conventions (the same for every method, so their scores compare):
    - classes are given as names in a fixed order; truth and predictions are class indices
      into that order (`as_indices` turns names into indices); a prediction of -1 (no
      prediction) is an error and no class;
    - macro F1 is the mean F1 over the classes that occur in the test truth or the predictions
      (a class a fold never saw or predicted does not count as 0); per-class F1 is NaN for such a
      class; zero_division = 0 otherwise (scikit-learn's f1_score with labels=those classes);
    - the confusion matrix is C x C over all classes, rows = truth, columns = prediction;
    - R2 of fewer than two test samples, or of a constant truth, is NaN.

Why a module of its own: the evaluation engine and the report read the same dicts, and the
definitions are checked against scikit-learn on their own.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from tessera.errors import InputError

CLASSIFICATION_METRICS: tuple[str, ...] = ("accuracy", "macro_f1")
REGRESSION_METRICS: tuple[str, ...] = ("rmse", "mae", "r2")
TASKS: tuple[str, ...] = ("classification", "regression")


def metric_names(task: str) -> tuple[str, ...]:
    """The scalar metrics of a task (the columns of the results frame)."""
    check_task(task)
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def higher_is_better(metric: str) -> bool:
    return metric not in ("rmse", "mae")


def check_task(task: str) -> None:
    if task not in TASKS:
        raise InputError(f"task {task!r}: expected one of {', '.join(TASKS)}")


def as_indices(y: Sequence[Any] | np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """Class labels as int64 indices into `classes`: integers that all lie in -1 .. C-1 are
    indices already (-1 = no prediction); anything else is matched to the class names as
    text."""
    a = np.asarray(y)
    n_classes = len(classes)
    if a.dtype.kind in "iu" and (len(a) == 0 or (a.min() >= -1 and a.max() < n_classes)):
        return a.astype(np.int64)
    lookup = {str(c): i for i, c in enumerate(classes)}
    out = np.empty(len(a), np.int64)
    for j, v in enumerate(a.tolist()):
        i = lookup.get(str(v))
        if i is None:
            shown = ", ".join(map(str, list(classes)[:10])) + (", ..." if n_classes > 10 else "")
            raise InputError(f"labels: class {str(v)!r} not among the {n_classes} classes "
                             f"({shown or 'none given'})")
        out[j] = i
    return out


def classification_metrics(y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray,
                           classes: Sequence[Any]) -> dict[str, Any]:
    """accuracy, macro_f1, per_class_f1 ({class name: F1 or NaN}), support ({name: count}),
    confusion (C x C int64, rows truth, columns prediction, the order of `classes`), n."""
    from sklearn.metrics import f1_score

    names = [str(c) for c in classes]
    t, p = as_indices(y_true, classes), as_indices(y_pred, classes)
    if len(t) != len(p):
        raise InputError(f"predictions: {len(p)} for {len(t)} test samples; expected one each")
    c = len(names)
    conf = np.zeros((c, c), np.int64)
    hit = p >= 0
    np.add.at(conf, (t[hit], p[hit]), 1)
    support = np.bincount(t[t >= 0], minlength=c) if c else np.zeros(0, np.int64)
    present = sorted((set(t.tolist()) | set(p.tolist())) - {-1})
    per_class = {n: float("nan") for n in names}
    if len(t) == 0:
        acc = f1 = float("nan")
    else:
        acc = float(np.mean(t == p))
        f1s = f1_score(t, p, labels=present, average=None, zero_division=0) if present else []
        for i, v in zip(present, f1s):
            per_class[names[i]] = float(v)
        f1 = float(np.mean(f1s)) if present else float("nan")
    return {"accuracy": acc, "macro_f1": f1, "per_class_f1": per_class,
            "support": {n: int(s) for n, s in zip(names, support)}, "confusion": conf,
            "n": int(len(t))}


def regression_metrics(y_true: Sequence[float] | np.ndarray,
                       y_pred: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """rmse, mae, r2 (NaN with fewer than two samples or a constant truth), n."""
    t, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    if t.shape != p.shape:
        raise InputError(f"predictions: {len(p)} for {len(t)} test samples; expected one each")
    if len(t) == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "r2": float("nan"), "n": 0}
    err = p - t
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err ** 2)) / ss_tot if len(t) > 1 and ss_tot > 0 else float("nan")
    return {"rmse": math.sqrt(float(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err))),
            "r2": r2, "n": int(len(t))}


def compute_metrics(y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray, *,
                    task: str, classes: Sequence[Any] = ()) -> dict[str, Any]:
    """`classification_metrics` or `regression_metrics`, by task."""
    check_task(task)
    if task == "classification":
        return classification_metrics(y_true, y_pred, classes)
    return regression_metrics(y_true, y_pred)


__all__ = ["CLASSIFICATION_METRICS", "REGRESSION_METRICS", "TASKS", "as_indices", "check_task",
           "classification_metrics", "compute_metrics", "higher_is_better", "metric_names",
           "regression_metrics"]
