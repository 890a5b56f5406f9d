"""Summaries of evaluation results: per table, method and fraction the mean and std over seeds
of the per-seed mean over folds (`summarise`), as Markdown (`summary_markdown`) and JSON
(`summary_dict`); and the report folder of an `EvalResult` of the evaluation engine
(`write_report`: report.json, results.csv, learning_curve.png, confusion_matrix.png,
summary.md).

Why a module of its own: reporting reads only the tidy results frame of `evaluate_table`, so
results saved earlier (results.csv) can be summarised again without recomputing anything.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from tessera.errors import InputError

if TYPE_CHECKING:
    from tessera.downstream.benchmark import EvalResult


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


def _fraction_cells(g: pd.DataFrame, fractions: Sequence[float],
                    cell: Callable[[Any], str]) -> list[str]:
    """One markdown cell per label fraction: `cell(row)` of the group's row at that fraction,
    "-" where it has none."""
    cells = []
    for f in fractions:
        hit = g[g["fraction"] == f]
        cells.append("-" if hit.empty else cell(hit.iloc[0]))
    return cells


def summary_markdown(results: pd.DataFrame, *, weight: str = "fold") -> str:
    """Markdown: rows table x method, columns the label fractions, cells
    "acc 0.xx ± 0.xx (F1 0.xx)" (mean ± std over seeds of the mean over folds); then the mean
    number of labelled training samples per fold."""
    s = summarise(results, weight=weight)
    fr = sorted(s["fraction"].unique())
    lines = ["| table | method | " + " | ".join(fraction_label(f) for f in fr) + " |",
             "|---|---|" + "---|" * len(fr)]
    for (table, method), g in s.groupby(["table", "method"], sort=False):
        cells = _fraction_cells(g, fr, lambda r: f"acc {r.acc_mean:.2f} ± {r.acc_std:.2f} "
                                                 f"(F1 {r.f1_mean:.2f})")
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


# --- the report of the evaluation engine (tessera.downstream.benchmark) ------------------------

REPORT_FORMAT = "tessera-eval-report"
REPORT_VERSION = 1
METRIC_LABELS = {"accuracy": "accuracy", "macro_f1": "macro F1", "rmse": "RMSE", "mae": "MAE",
                 "r2": "R²"}


def json_safe(v: Any) -> Any:
    """`v` with numpy scalars / arrays as Python values and NaN / inf as None (valid JSON)."""
    if isinstance(v, Mapping):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, np.ndarray):
        return json_safe(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def report_dict(result: EvalResult, *, title: str = "", meta: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    """What report.json holds: the meta (given first; split, seeds and fractions filled in
    when not given), the summary (learning curves), the best method per feature set, per-class
    F1 and confusion matrices at the largest fraction, the folds and the per-fold rows."""
    from tessera.downstream.benchmark import best_method

    lc = result.learning_curve()
    meta_out = {"split": result.split, "seeds": list(result.seeds),
                "fractions": list(result.fractions), **dict(meta or {})}
    feature_sets = list(dict.fromkeys(m["features"] for m in result.methods))
    out: dict[str, Any] = {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "title": title, "meta": meta_out,
        "task": result.task, "classes": list(result.classes), "metrics": list(result.metrics),
        "primary_metric": result.primary_metric, "n_samples": result.n_samples,
        "n_features": result.n_features, "methods": result.methods,
        "seconds": round(result.seconds, 3),
        "best": {f: best_method(result, features=f) for f in feature_sets},
        "summary": lc.to_dict(orient="records"),
        "folds": result.folds,
        "rows": result.rows.to_dict(orient="records"),
    }
    if result.task == "classification":
        pc = result.per_class_f1()
        out["per_class_f1"] = {
            "fraction": result.confusion_fraction,
            "f1": {str(m): dict(zip(g["class"], g["f1_mean"]))
                   for m, g in pc.groupby("method", sort=False)},
            "support": dict(zip(pc["class"], pc["support"])) if len(pc) else {}}
        out["confusion"] = {
            "fraction": result.confusion_fraction, "labels": list(result.classes),
            "rows": "truth", "columns": "prediction",
            "note": "summed over folds, mean over seeds",
            "matrices": {k: np.round(v, 6) for k, v in result.confusion.items()}}
    return json_safe(out)


def _cell(mean: float, std: float) -> str:
    return "-" if not math.isfinite(mean) else f"{mean:.3f} ± {std:.3f}"


def report_markdown(result: EvalResult, *, title: str = "", meta: Mapping[str, Any] | None = None
                    ) -> str:
    """A short Markdown summary: the meta, then one table (methods x label fractions) of the
    primary metric, mean ± std over seeds (with the second metric in brackets), then the mean
    number of labelled training samples per fold."""
    lc = result.learning_curve()
    primary = result.primary_metric
    second = "accuracy" if result.task == "classification" else "r2"
    fr = list(result.fractions)
    lines = [f"# {title or 'Evaluation'}", ""]
    info = {"task": result.task, "split": result.split, "folds": len(result.folds),
            "seeds": ", ".join(map(str, result.seeds)), "samples": result.n_samples,
            **dict(meta or {})}
    lines += [f"- {k}: {v}" for k, v in info.items()] + [""]
    lines += [f"{METRIC_LABELS[primary]} (mean ± std over seeds of the mean over folds; "
              f"{METRIC_LABELS[second]} in brackets):", "",
              "| method | features | " + " | ".join(fraction_label(f) for f in fr) + " |",
              "|---|---|" + "---|" * len(fr)]
    for m in result.methods:
        g = lc[lc["method"] == m["name"]]
        cells = _fraction_cells(g, fr, lambda r: (
            f"{_cell(float(r[primary + '_mean']), float(r[primary + '_std']))} "
            f"({float(r[second + '_mean']):.3f})"))
        lines.append(f"| {m['name']} | {m['features']} | " + " | ".join(cells) + " |")
    n = lc[lc["method"] == result.methods[0]["name"]]
    lines += ["", "Labelled training samples per fold (mean): " + ", ".join(
        f"{fraction_label(f)}: {float(n[n['fraction'] == f]['n_train_mean'].iloc[0]):.1f}"
        for f in fr if (n["fraction"] == f).any())]
    return "\n".join(lines) + "\n"


def _style(result: EvalResult) -> dict[str, dict[str, Any]]:
    """Per method: colour by head (the same head on embeddings and raw features shares a
    colour), solid lines and circles for embeddings, dashed / dash-dotted and squares for
    baselines, grey dotted crosses for the majority / mean reference."""
    from matplotlib import colormaps

    from tessera.downstream.benchmark import EMBEDDING, REFERENCE

    heads = list(dict.fromkeys(m["head"] for m in result.methods if m["features"] != REFERENCE))
    palette = colormaps["tab10"]
    primary = result.methods[0]["features"]  # the engine's X: embeddings, or table columns
    baselines = [f for f in dict.fromkeys(m["features"] for m in result.methods)
                 if f not in (primary, REFERENCE)]
    dashes = ["--", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1))]
    out: dict[str, dict[str, Any]] = {}
    for m in result.methods:
        if m["features"] == REFERENCE:
            out[m["name"]] = {"color": "0.45", "linestyle": ":", "marker": "x", "lw": 1.5,
                              "label": f"{m['name']} (no information)"}
        elif m["features"] == primary:
            what = "embeddings" if primary == EMBEDDING else f"{primary} features"
            out[m["name"]] = {"color": palette(heads.index(m["head"]) % 10), "linestyle": "-",
                              "marker": "o", "lw": 2.2, "label": f"{m['head']} ({what})"}
        else:
            out[m["name"]] = {"color": palette(heads.index(m["head"]) % 10),
                              "linestyle": dashes[baselines.index(m["features"]) % len(dashes)],
                              "marker": "s", "lw": 1.5,
                              "label": f"{m['head']} ({m['features']} features)"}
    return out


def plot_learning_curve(result: EvalResult, path: str | os.PathLike[str], *, title: str = ""
                        ) -> None:
    """PNG: one panel per metric, the metric against the label fraction (log x, ticks with the
    mean number of labelled samples), mean ± std over seeds as a line and a band per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lc = result.learning_curve()
    metrics = list(result.metrics)
    style = _style(result)
    fig = Figure(figsize=(5.2 * len(metrics), 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    first = lc[lc["method"] == result.methods[0]["name"]]
    for ax, metric in zip(axes, metrics):
        for m in result.methods:
            g = lc[lc["method"] == m["name"]].sort_values("fraction")
            x = g["fraction"].to_numpy(float)
            mu = g[f"{metric}_mean"].to_numpy(float)
            sd = g[f"{metric}_std"].to_numpy(float)
            st = style[m["name"]]
            ax.plot(x, mu, color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                    lw=st["lw"], label=st["label"])
            ax.fill_between(x, mu - sd, mu + sd, color=st["color"], alpha=0.15, lw=0)
        ax.set_xscale("log")
        fr = first["fraction"].to_numpy(float)
        ax.set_xticks(fr)
        ax.set_xticklabels([f"{fraction_label(f)}\nn≈{n:.0f}"
                            for f, n in zip(fr, first["n_train_mean"])], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("label fraction (labelled training samples per fold)", fontsize=9)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=9)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3), fontsize=8,
               frameon=False)
    fig.suptitle(f"{title}\n{result.split} folds: {len(result.folds)}, seeds: "
                 f"{len(result.seeds)}, mean ± std over seeds" if title else
                 f"{result.split} folds: {len(result.folds)}, seeds: {len(result.seeds)}",
                 fontsize=10)
    fig.savefig(path, format="png", dpi=110)


def plot_confusion(result: EvalResult, path: str | os.PathLike[str], *,
                   methods: Sequence[str] | None = None, title: str = "") -> None:
    """PNG: row-normalised confusion matrices (rows = truth, summed over folds at the largest
    fraction), class names on both axes, one panel per method (default: the best embedding
    method, the best method of each baseline, and the majority reference)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from tessera.downstream.benchmark import REFERENCE, best_method

    if not result.confusion:
        raise InputError("confusion matrix: none in this result (regression has none)")
    if methods is None:
        sets = [f for f in dict.fromkeys(m["features"] for m in result.methods) if f != REFERENCE]
        chosen = [best_method(result, features=f) for f in sets]
        methods = [m for m in chosen if m] + [m["name"] for m in result.methods
                                             if m["features"] == REFERENCE]
    unknown = [m for m in methods if m not in result.confusion]
    if unknown:
        raise InputError(f"confusion methods {unknown}: expected some of "
                         f"{', '.join(result.confusion)}")
    names = list(result.classes)
    c = len(names)
    side = max(3.6, 0.42 * c + 2.2)
    fig = Figure(figsize=(side * len(methods) + 1.2, side + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    image = None
    for ax, m in zip(axes, methods):
        cm = np.asarray(result.confusion[m], float)
        rows = cm.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = np.where(rows > 0, cm / rows, np.nan)
        image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        fs = 8 if c <= 15 else 6
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=fs)
        ax.set_yticklabels(names, fontsize=fs)
        ax.set_xlabel("predicted", fontsize=9)
        if ax is axes[0]:
            ax.set_ylabel("true", fontsize=9)
        ax.set_title(m, fontsize=9)
        if c <= 15:
            for i in range(c):
                for j in range(c):
                    if np.isfinite(norm[i, j]) and cm[i, j] > 0:
                        ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                                fontsize=7, color="white" if norm[i, j] > 0.6 else "black")
    if image is not None:
        fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.02,
                     label="share of the true class")
    fig.suptitle(f"{title + chr(10) if title else ''}confusion at "
                 f"{fraction_label(result.confusion_fraction)} of the labels, row-normalised",
                 fontsize=10)
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")


def write_report(result: EvalResult, out_dir: str | os.PathLike[str], *,
                 title: str = "TESSERA downstream evaluation",
                 meta: Mapping[str, Any] | None = None,
                 confusion_methods: Sequence[str] | None = None) -> dict[str, Path]:
    """Write the report of `result` into `out_dir` (created; other files there are left
    alone): results.csv (the per-fold rows), learning_curve.png, confusion_matrix.png
    (classification), summary.md and report.json (see `report_dict`; written last, so its
    presence says the set is complete). meta: data source, model id, ... Every file is written
    atomically, all renamed together at the end. Returns {name: path}."""
    from tessera.atomic import atomic_paths

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: not a folder; expected the report folder")
    names = ["results.csv", "learning_curve.png"]
    if result.task == "classification" and result.confusion:
        names.append("confusion_matrix.png")
    names += ["summary.md", "report.json"]
    doc = report_dict(result, title=title, meta=meta)
    text = json.dumps(doc, indent=1, allow_nan=False)
    paths = {n: out / n for n in names}
    with atomic_paths([paths[n] for n in names]) as tmps:
        tmp = dict(zip(names, tmps))
        result.rows.to_csv(tmp["results.csv"], index=False)
        plot_learning_curve(result, tmp["learning_curve.png"], title=title)
        if "confusion_matrix.png" in tmp:
            plot_confusion(result, tmp["confusion_matrix.png"], methods=confusion_methods,
                           title=title)
        tmp["summary.md"].write_text(report_markdown(result, title=title, meta=meta))
        tmp["report.json"].write_text(text + "\n")
    return paths
