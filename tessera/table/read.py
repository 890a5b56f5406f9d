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


def check_rows(path: Path, sep: str) -> None:
    """Refuse a CSV whose rows have fewer fields than its header: pandas would silently read
    the missing fields as empty, e.g. the last row of a file cut off mid-row by an interrupted
    copy. Streams the file once (constant memory)."""
    import csv
    import gzip

    gz = path.name.lower().endswith(".gz")
    with (gzip.open(path, "rt", newline="") if gz else open(path, newline="")) as f:
        rows = csv.reader(f, delimiter=sep)
        header = next(rows, None)
        if not header:
            return
        for i, row in enumerate(rows, start=1):
            if row and len(row) < len(header):
                raise TableError(f"{path}: row {i} has {len(row)} of the header's {len(header)} "
                                 "fields (the file is cut short, or the row is malformed)")


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
            sep = "\t" if name.endswith(".tsv") else ","
            check_rows(path, sep)
            return pd.read_csv(path, sep=sep)
    except TableError:
        raise
    except Exception as exc:  # unreadable content: name the file
        kind = "Parquet" if name.endswith(PARQUET_SUFFIXES) else "CSV"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TableError(f"{path}: not a readable {kind} file ({type(exc).__name__}: {first})"
                         ) from None
    raise TableError(f"{path}: unsupported file type; expected "
                     f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}")
