"""Plain feature tables for the evaluation engine: numeric columns of a CSV / Parquet table as
the feature vector instead of embeddings (`tessera head evaluate TABLE --features COLS`).

Why: the heads, splits, metrics and reports are checked on public tables whose published
numbers are known (UCR Crop, the eo-learn test patch: NDVI only, so no TESSERA embedding can be
made from them), and any table of features can be scored with the same protocol as embeddings.

COLS (`feature_columns`): comma-separated items, each an exact column name, a glob (`ndvi_*`,
`b?_mean`) or a range of columns in file order (`ndvi_000..ndvi_045`, both ends included).
Rows without a label are left out with a LabelWarning; a feature column that is missing, not
numeric, holds an infinite value or has no value at all is a one-line InputError naming the
file and the column. Gaps (NaN) are filled with the column median of the training table (the
features only, never the labels), and counted.

A second table (`test=`, `--test-table`) is a fixed held-out test set, e.g. the canonical
TRAIN / TEST files of a UCR archive data set: `FeatureTable.holdout()` is its one fold.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from tessera.downstream.labels import (TASKS, LabelError, LabelWarning, _class_names,
                                       _infer_task)
from tessera.downstream.splits import Fold
from tessera.errors import InputError

#: The feature set name of table columns in the engine's results (methods, report, legend).
FEATURES = "table"
#: The model id a head trained on table columns records (so no store's embeddings fit it).
MODEL = "table-columns"
#: Coordinate columns (degrees) a spatial split may use, tried in order (case-insensitive).
LONLAT = (("lon", "lat"), ("longitude", "latitude"), ("lng", "lat"))
_GLOB = set("*?[")


@dataclasses.dataclass
class FeatureTable:
    """Features, labels and (optional) groups / coordinates of one table, or of a training
    table followed by a test table (`test`: True for the test table's rows)."""

    X: np.ndarray  # float32 (n, d), finite
    y: np.ndarray  # int64 class indices into `classes`, or float targets
    task: str
    classes: list[str]
    columns: list[str]
    groups: np.ndarray | None
    lon: np.ndarray | None
    lat: np.ndarray | None
    test: np.ndarray | None
    sources: list[str]
    filled: dict[str, int]  # per column: missing values filled with the training median
    unlabelled: int  # rows left out for having no label

    def __len__(self) -> int:
        return len(self.y)

    def holdout(self) -> list[Fold]:
        """The fixed split: the training table is the pool, the test table the test set."""
        if self.test is None:
            raise InputError("holdout: no test table was read")
        return [Fold(0, "test-table", np.flatnonzero(~self.test), np.flatnonzero(self.test),
                     "holdout", (Path(self.sources[-1]).name,))]

    def info(self) -> dict[str, Any]:
        """JSON-ready description for a report's meta."""
        cols = self.columns
        shown = ", ".join(cols) if len(cols) <= 12 else f"{cols[0]}, {cols[1]} .. {cols[-1]}"
        n_test = int(self.test.sum()) if self.test is not None else 0
        return {"features": f"{len(cols)} table columns ({shown}); plain features, not "
                            "embeddings", "tables": self.sources,
                "rows": {"train": len(self) - n_test, "test": n_test} if n_test else len(self),
                "rows_without_label": self.unlabelled,
                "filled_with_median": {k: v for k, v in self.filled.items() if v}}


def feature_columns(spec: str, columns: Sequence[Any], source: str) -> list[str]:
    """The columns named by `spec` (see the module docstring), in the order given, each once."""
    names = [str(c) for c in columns]
    where = {c: i for i, c in enumerate(names)}
    chosen: dict[str, None] = {}
    items = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not items:
        raise InputError(f"--features {spec!r}: empty; expected column names, a glob such as "
                         "'ndvi_*' or a range such as 'ndvi_000..ndvi_045'")
    for item in items:
        if ".." in item:
            ends = [e.strip() for e in item.split("..", 1)]
            for e in ends:
                if e not in where:
                    raise InputError(f"{source}: --features range {item!r}: no column {e!r}; "
                                     f"columns are {_preview(names)}")
            i, j = where[ends[0]], where[ends[1]]
            if i > j:
                raise InputError(f"{source}: --features range {item!r}: {ends[1]!r} comes "
                                 f"before {ends[0]!r} in the file")
            hit = names[i:j + 1]
        elif _GLOB & set(item):
            hit = [c for c in names if fnmatch.fnmatchcase(c, item)]
            if not hit:
                raise InputError(f"{source}: --features {item!r} matches no column; columns "
                                 f"are {_preview(names)}")
        else:
            if item not in where:
                raise InputError(f"{source}: feature column {item!r} is missing; columns are "
                                 f"{_preview(names)}")
            hit = [item]
        chosen.update(dict.fromkeys(hit))
    return list(chosen)


def _preview(names: Sequence[str], n: int = 12) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _numeric(df: pd.DataFrame, cols: Sequence[str], source: str) -> np.ndarray:
    """float64 (rows, cols); InputError naming the file and column for text or infinities."""
    out = np.empty((len(df), len(cols)), np.float64)
    for j, c in enumerate(cols):
        v = df[c]
        num = pd.to_numeric(v, errors="coerce") if v.dtype.kind not in "biuf" else v
        a = np.asarray(num, dtype=np.float64)
        bad = np.isnan(a) & v.notna().to_numpy()
        if bad.any():
            i = int(bad.argmax())
            raise InputError(f"{source}: feature column {c!r} is not numeric (row {i + 1}: "
                             f"{v.iloc[i]!r})")
        if np.isinf(a).any():
            i = int(np.isinf(a).argmax())
            raise InputError(f"{source}: feature column {c!r}, row {i + 1}: {a[i]} is not a "
                             "finite number")
        out[:, j] = a
    return out


def _lonlat(df: pd.DataFrame) -> tuple[Any, Any] | None:
    cols = {str(c).lower(): c for c in df.columns}
    for a, b in LONLAT:
        if a in cols and b in cols:
            return cols[a], cols[b]
    return None


def _read(path: Path) -> pd.DataFrame:
    from tessera.table.read import read_table

    return read_table(path)


def read_feature_table(path: str | os.PathLike, features: str, *, label: str = "label",
                       group: str | None = None, task: str | None = None,
                       test: str | os.PathLike | None = None) -> FeatureTable:
    """Read the `features` columns (see `feature_columns`) and the `label` column of a CSV /
    Parquet table, and of a test table with the same columns when given. `group`: a column of
    the training table grouping rows for a grouped split. `task`: classification or regression
    (default: inferred from the labels, as for label files)."""
    if task is not None and task not in TASKS:
        raise LabelError(f"{path}: task {task!r}: expected one of {', '.join(TASKS)}")
    paths = [Path(path)] + ([Path(test)] if test is not None else [])
    frames = [_read(p) for p in paths]
    cols = feature_columns(features, list(frames[0].columns), str(paths[0]))
    for c in (label, group):
        if c is not None and c in cols:
            raise InputError(f"{paths[0]}: column {c!r} is both a feature and the "
                             f"{'label' if c == label else 'group'}; name the features "
                             "without it")
    if test is not None and group is not None:
        raise InputError(f"{paths[1]}: a test table is a fixed split; --group is for the "
                         "k-fold splits of one table")
    parts: list[tuple[np.ndarray, pd.Series]] = []
    kept: list[np.ndarray] = []
    unlabelled = 0
    for p, df in zip(paths, frames):
        names = [str(c) for c in df.columns]
        for c in [*cols, label]:
            if c not in names:
                what = "label" if c == label else "feature"
                raise InputError(f"{p}: {what} column {c!r} is missing; columns are "
                                 f"{_preview(names)}")
        values = df[label]
        if values.dtype == object:  # empty text is a missing label too
            values = values.where(values.astype(str).str.strip() != "", None)
        missing = values.isna().to_numpy()
        if missing.all():
            raise LabelError(f"{p}: label column {label!r} is empty (no row has a value)")
        if missing.any():
            warnings.warn(f"{p}: {int(missing.sum())} of {len(values)} rows have no label in "
                          f"column {label!r} (e.g. row {int(missing.argmax()) + 1}); left out",
                          LabelWarning, stacklevel=2)
            unlabelled += int(missing.sum())
        x = _numeric(df, cols, str(p))[~missing]
        empty = np.isnan(x).all(axis=0)
        if empty.any():
            raise InputError(f"{p}: feature column {cols[int(empty.argmax())]!r} has no value "
                             "(every labelled row is empty)")
        parts.append((x, values[~missing].reset_index(drop=True)))
        kept.append(~missing)
    train_x = parts[0][0]
    med = np.nanmedian(train_x, axis=0)
    filled: dict[str, int] = {}
    xs = []
    for x, _ in parts:
        gap = np.isnan(x)
        for j in np.flatnonzero(gap.any(axis=0)):
            filled[cols[j]] = filled.get(cols[j], 0) + int(gap[:, j].sum())
        xs.append(np.where(gap, med[None, :], x).astype(np.float32))
    labels = pd.concat([v for _, v in parts], ignore_index=True)
    if task is None:
        task = _infer_task(labels)
    if task == "regression":
        num = pd.to_numeric(labels, errors="coerce")
        if num.isna().any():
            i = int(num.isna().to_numpy().argmax())
            raise LabelError(f"{paths[0]}: label column {label!r}: {labels.iloc[i]!r} is not a "
                             "number (a regression needs numeric labels)")
        y: np.ndarray = num.to_numpy(np.float64)
        classes: list[str] = []
    else:
        names_of, classes = _class_names(labels)
        if len(classes) < 2:
            raise LabelError(f"{paths[0]}: label column {label!r} has one class only "
                             f"({classes[0]!r}); a classification needs two or more")
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[n] for n in names_of], np.int64)
    first, keep = frames[0], kept[0]
    groups = None
    if group is not None:
        if group not in first.columns:
            raise InputError(f"{paths[0]}: group column {group!r} is missing; columns are "
                             f"{_preview([str(c) for c in first.columns])}")
        g = first[group][keep].reset_index(drop=True)
        if g.isna().any():
            raise InputError(f"{paths[0]}: group column {group!r}, row "
                             f"{int(np.flatnonzero(keep)[int(g.isna().to_numpy().argmax())]) + 1}"
                             ": no value")
        groups = g.to_numpy()
    lon = lat = None
    ll = _lonlat(first)
    if ll is not None and test is None:
        lon = pd.to_numeric(first[ll[0]], errors="coerce").to_numpy(np.float64)[keep]
        lat = pd.to_numeric(first[ll[1]], errors="coerce").to_numpy(np.float64)[keep]
    n_train = len(xs[0])
    is_test = None
    if test is not None:
        is_test = np.zeros(n_train + len(xs[1]), bool)
        is_test[n_train:] = True
    return FeatureTable(X=np.concatenate(xs), y=y, task=task, classes=classes, columns=cols,
                        groups=groups, lon=lon, lat=lat, test=is_test,
                        sources=[str(p) for p in paths], filled=filled, unlabelled=unlabelled)


__all__ = ["FEATURES", "MODEL", "FeatureTable", "feature_columns", "read_feature_table"]
