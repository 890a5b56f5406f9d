"""Reading a point table file (CSV or (Geo)Parquet) into a DataFrame.

Why a module of its own: the file formats and their errors are one concern, separate from what
the columns mean (`tessera.table.columns`) and how the values are parsed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tessera.errors import NotFoundError, TableError

CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV (.csv, .csv.gz, .tsv) or (Geo)Parquet (.parquet, .geoparquet, .pq) table."""
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise NotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise TableError(f"{path}: is a directory; expected a CSV or Parquet file")
    try:
        if name.endswith(PARQUET_SUFFIXES):
            return pd.read_parquet(path)
        if name.endswith(CSV_SUFFIXES):
            return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
    except Exception as exc:  # unreadable content: name the file
        kind = "Parquet" if name.endswith(PARQUET_SUFFIXES) else "CSV"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TableError(f"{path}: not a readable {kind} file ({type(exc).__name__}: {first})"
                         ) from None
    raise TableError(f"{path}: unsupported file type; expected "
                     f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}")
