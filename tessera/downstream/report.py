"""Summaries of evaluation results: per table, method and fraction the mean and std over seeds
of the per-seed mean over folds (`summarise`), as Markdown (`summary_markdown`) and JSON
(`summary_dict`).

Why a module of its own: reporting reads only the tidy results frame of `evaluate_table`, so
results saved earlier (results.csv) can be summarised again without recomputing anything.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from tessera.errors import InputError


def summarise(results: pd.DataFrame, *, weight: str = "fold") -> pd.DataFrame:
    """Per (table, method, fraction): mean and std over seeds of the per-seed mean over folds.

    weight: "fold" (each fold counts once) or "sample" (folds weighted by their test samples,
    i.e. pooled accuracy). std is the sample standard deviation (ddof=1; 0 with one seed).
    """
    if weight not in ("fold", "sample"):
        raise InputError(f"weight {weight!r}: expected 'fold' or 'sample'")
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
        # pandas-stubs types a groupby key as any Scalar (bytes included); here it is the table name
        lines.append(f"| {table} | {int(g['n_folds'].max())} | "  # type: ignore[str-bytes-safe]
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_dict(results: pd.DataFrame, *, weight: str = "fold", **meta: Any) -> dict[str, Any]:
    """JSON-ready summary: `meta`, then per table / method / fraction the aggregated scores and
    the totals of flagged / featureless test samples."""
    s = summarise(results, weight=weight)
    counts = results.groupby(["table", "method", "fraction"], sort=False)[
        ["n_test_flagged", "n_test_no_features", "n_test_unseen"]].sum()
    out: dict[str, Any] = {**meta, "weight": weight, "summary": []}
    r: Any  # pandas-stubs types every itertuples field as any Scalar (str, bytes, date, ...)
    for r in s.itertuples(index=False):
        # a full MultiIndex key; pandas-stubs reads a 3-tuple as (rows, columns) and rejects it
        c = counts.loc[(r.table, r.method, r.fraction)]  # type: ignore[index]
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
