"""The labelled tables of the evaluation: `load_table` reads a long (or WIDE WorldCereal) table
into an `EvalTable` (samples, their classes and h3 cells, the evaluation year); rare classes
are merged into "other" (`merge_rare`); `load_class_names` reads the WorldCereal legend.

Why a module of its own: what a sample and its label are is the first rule of the protocol
(`tessera.downstream.evaluate`), shared by the features, the splits and the scores.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from tessera.errors import InputError

OTHER = "other"
DATE_COLUMNS = ("timestamp", "date", "time")


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


def merge_rare(codes: Sequence[object] | np.ndarray, min_count: int = 10) -> np.ndarray:
    """Classes (as text) with fewer than `min_count` samples become "other"."""
    codes = np.asarray([str(c) for c in codes], dtype=object)
    counts = pd.Series(codes).value_counts()
    keep = set(counts.index[counts >= min_count])
    return np.array([c if c in keep else OTHER for c in codes], dtype=object)


def find_date_column(df: pd.DataFrame) -> str | None:
    return next((c for c in DATE_COLUMNS if c in df.columns), None)


def _to_long(df: pd.DataFrame, source: str, id_column: str, keep: Sequence[str]) -> pd.DataFrame:
    """The WIDE WorldCereal layout -> long, by `tessera.table.wide.wide_to_long`; per-sample
    columns in `keep` it does not carry over are joined back from the wide table."""
    from tessera.table.wide import wide_to_long

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
            raise InputError(f"{name}: no {col!r} column; the evaluation needs labelled, "
                             "geolocated samples")
    if find_date_column(df) is None:
        df = _to_long(df, name, id_column, (label_column, cell_column, "year"))
    date_col = find_date_column(df)
    if date_col is None:
        raise InputError(f"{name}: no date column ({', '.join(DATE_COLUMNS)})")
    per = df.groupby(id_column, sort=True)
    for col in (label_column, cell_column):
        varying = per[col].nunique(dropna=False)
        if (varying > 1).any():
            raise InputError(f"{name}: sample {varying.index[varying > 1][0]!r} has several "
                             f"{col} values")
    first = per[[label_column, cell_column]].first()
    if first[label_column].isna().any() or first[cell_column].isna().any():
        raise InputError(f"{name}: samples without {label_column} or {cell_column}")
    dates = pd.to_datetime(df[date_col])
    if year == "auto":
        years: np.ndarray | list[int] = (df["year"].dropna().unique() if "year" in df.columns
                                         else [])
        # pandas-stubs types idxmax as Hashable; the labels of these counts are years (int)
        year = int(years[0]) if len(years) == 1 else int(
            dates.dt.year.value_counts().idxmax())  # type: ignore[call-overload]
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
