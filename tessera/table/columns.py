"""Which column of a point table holds which band, the sample id, the date and the auxiliary
fields (SCL, valid, orbit): `resolve_columns`.

Why a module of its own: band names come in many spellings (`B2`, `b8a`, `S2-L2A-B02` via a
pattern, renames), and the errors for ambiguous or unknown columns are the reader's most
common user-facing messages.
"""

from __future__ import annotations

import re
from typing import Sequence

import pandas as pd

from tessera.bands import S1_POLS, S2_BANDS
from tessera.errors import TableError
from tessera.table.options import (AUX_COLUMNS, DATE_COLUMNS, UNUSED_S1_POLS, UNUSED_S2_BANDS,
                                   TableOptions)

_S2_NAME = re.compile(r"^B(\d{1,2}|8A)$", re.IGNORECASE)
_S1_NAME = re.compile(r"^(VV|VH|HH|HV)$", re.IGNORECASE)
_BAND_LIKE = re.compile(r"^B\d+[A-Z]?$", re.IGNORECASE)


def _pattern_regex(pattern: str, key: str) -> re.Pattern:
    before, after = pattern.split(key, 1)
    return re.compile("^" + re.escape(before) + r"([A-Za-z0-9]+)" + re.escape(after) + "$")


def _canonical_band(name: str) -> str | None:
    """'b8a' -> 'B8A', 'B2' -> 'B02', 'vv' -> 'VV'; None when not band-shaped."""
    m = _S2_NAME.match(name)
    if m:
        num = m.group(1).upper()
        return "B" + (num if num == "8A" else f"{int(num):02d}")
    m = _S1_NAME.match(name)
    if m:
        return m.group(1).upper()
    return None


def resolve_columns(df: pd.DataFrame, opts: TableOptions) -> tuple[dict[str, str], dict[str, str]]:
    """Map band / auxiliary names to the table's columns.

    Returns (bands: {band: column}, aux: {"id"|"date"|"SCL"|"valid"|"orbit": column}).
    """
    columns = [str(c) for c in df.columns]
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise TableError(f"column {dup[0]!r} appears more than once in the table")
    model_bands = set(S2_BANDS) | set(S1_POLS)
    renamed: dict[str, str] = {}  # table column -> target name
    targets_ok = model_bands | set(AUX_COLUMNS) | {opts.id_column, *DATE_COLUMNS}
    if opts.date_column:
        targets_ok.add(opts.date_column)
    for old, new in opts.rename.items():
        if old not in columns:
            raise TableError(f"rename {old}={new}: the table has no column {old!r}")
        canon = _canonical_band(new)
        target = canon if canon in model_bands else new
        if target not in targets_ok:
            raise TableError(f"rename {old}={new}: {new!r} is not a band; expected one of "
                             f"{', '.join(S2_BANDS + S1_POLS)} or {', '.join(AUX_COLUMNS)}")
        renamed[old] = target

    bands: dict[str, str] = {}
    aux: dict[str, str] = {}

    def claim(target: str, column: str, how: str) -> None:
        book = bands if target in model_bands else aux
        if target in book and book[target] != column:
            raise TableError(f"columns {book[target]!r} and {column!r} both give {target} ({how}); "
                             "rename or drop one")
        book[target] = column

    s2_re = _pattern_regex(opts.s2_pattern, "{band}") if opts.s2_pattern else None
    s1_key = "{pol}" if opts.s1_pattern and "{pol}" in opts.s1_pattern else "{band}"
    s1_re = _pattern_regex(opts.s1_pattern, s1_key) if opts.s1_pattern else None
    for col in columns:
        if col in renamed:
            if renamed[col] in model_bands or renamed[col] in AUX_COLUMNS:
                claim(renamed[col], col, f"rename {col}={renamed[col]}")
            continue
        if col in (opts.id_column, opts.date_column):
            continue
        for regex, kind in ((s2_re, "s2"), (s1_re, "s1")):
            m = regex.match(col) if regex is not None else None
            if m is None:
                continue
            canon = _canonical_band(m.group(1))
            if (kind == "s2" and canon in S1_POLS + UNUSED_S1_POLS) or (
                    kind == "s1" and canon in S2_BANDS + UNUSED_S2_BANDS):
                continue  # e.g. "{band}_mean" and "{pol}_mean": the other pattern's column
            if kind == "s2":
                if canon in S2_BANDS:
                    claim(canon, col, f"s2_pattern {opts.s2_pattern!r}")
                elif canon not in UNUSED_S2_BANDS:
                    raise TableError(f"column {col!r}: {m.group(1)!r} is not a Sentinel-2 band "
                                     f"(expected {', '.join(S2_BANDS)})")
            else:
                if canon in S1_POLS:
                    claim(canon, col, f"s1_pattern {opts.s1_pattern!r}")
                elif canon not in UNUSED_S1_POLS:
                    raise TableError(f"column {col!r}: {m.group(1)!r} is not a Sentinel-1 "
                                     "polarisation (expected VV, VH)")
            break
        else:
            canon = _canonical_band(col)
            if canon in model_bands:
                claim(canon, col, "column name")
            elif canon in UNUSED_S2_BANDS or canon in UNUSED_S1_POLS:
                pass
            elif _BAND_LIKE.match(col):
                raise TableError(f"column {col!r}: not a Sentinel-2 band used by TESSERA "
                                 f"(expected {', '.join(S2_BANDS)}); rename or drop it")
            elif col in AUX_COLUMNS or col.lower() == "scl":
                claim("SCL" if col.lower() == "scl" else col, col, "column name")

    id_col = next((c for c, t in renamed.items() if t == opts.id_column), opts.id_column)
    if id_col not in columns:
        raise TableError(f"no id column {opts.id_column!r}; the table has "
                         f"{_preview(columns)} (set id_column / --id-column)")
    aux["id"] = id_col
    if opts.date_column:
        if opts.date_column not in columns:
            raise TableError(f"no date column {opts.date_column!r}; the table has {_preview(columns)}")
        aux["date"] = opts.date_column
    else:
        found = [c for c, t in renamed.items() if t in DATE_COLUMNS]
        found += [c for c in DATE_COLUMNS if c in columns and c not in renamed]
        if not found:
            raise TableError(f"no date column: expected one of {', '.join(DATE_COLUMNS)} "
                             f"(or set date_column / --date-column); the table has {_preview(columns)}")
        if len(found) > 1:
            raise TableError(f"several date columns ({', '.join(found)}): choose one with "
                             "date_column / --date-column")
        aux["date"] = found[0]
    return bands, aux


def _preview(columns: Sequence[str], n: int = 12) -> str:
    shown = ", ".join(columns[:n])
    return f"columns {shown}{', ...' if len(columns) > n else ''}"

