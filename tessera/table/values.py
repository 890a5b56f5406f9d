"""Parsing the values of a point table: numbers with nodata, dates, the S2 / S1 encodings, the
`valid` and `orbit` columns, and the duplicate-observation check.

Why a module of its own: each parser turns one column into arrays and names the first bad row
in its error; `tessera.table.prepare` only puts the arrays together.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tessera.bands import (S1_ORBIT_NAMES, S1_ORBITS, S1_POLS, s1_amplitude_dn_to_db,
                           s1_db_to_int16, s1_linear_to_int16)
from tessera.errors import TableError
from tessera.table.options import TableOptions, TableWarning

_ORBITS = {k: S1_ORBITS.index(v) for k, v in S1_ORBIT_NAMES.items()}
_VALID_TRUE = {"true", "1", "yes", "y", "t"}
_VALID_FALSE = {"false", "0", "no", "n", "f"}


def _row_ref(df_index: int, ids: np.ndarray) -> str:
    return f"row {df_index + 1} (sample_id {ids[df_index]!r})"


# --- values -----------------------------------------------------------------------------------

def numeric_column(df: pd.DataFrame, column: str, nodata: Sequence[float], ids: np.ndarray
                   ) -> np.ndarray:
    """Column as float64 with NaN for missing / nodata values. Infinite values are no
    observation either: read as missing, with a TableWarning naming the column and a row."""
    s = df[column]
    if s.dtype == bool or str(s.dtype) == "boolean":
        raise TableError(f"column {column!r}: boolean values; expected numbers")
    vals = np.array(pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))
    bad = np.isnan(vals) & s.notna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(f"column {column!r}, {_row_ref(i, ids)}: {s.iloc[i]!r} is not a number")
    inf = np.isinf(vals)
    if inf.any():
        i = int(np.flatnonzero(inf)[0])
        warnings.warn(f"column {column!r}: {int(inf.sum())} infinite value(s), e.g. at "
                      f"{_row_ref(i, ids)}, read as missing (not a valid observation)",
                      TableWarning, stacklevel=3)
        vals[inf] = np.nan
    for v in nodata:
        vals[vals == v] = np.nan
    return vals


def parse_dates(df: pd.DataFrame, column: str, ids: np.ndarray) -> np.ndarray:
    """datetime64[ns] (naive, UTC for tz-aware input); errors name the first bad row."""
    s = df[column]
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        parsed = s.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_any_dtype(s.dtype):
        parsed = s
    else:
        raw = s.astype("string") if pd.api.types.is_numeric_dtype(s.dtype) else s
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                parsed = pd.to_datetime(raw, errors="coerce", format="mixed", utc=True)
            except (TypeError, ValueError):
                parsed = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
        parsed = parsed.dt.tz_localize(None)
    parsed = parsed.astype("datetime64[ns]")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(f"date column {column!r}, {_row_ref(i, ids)}: cannot parse "
                         f"{s.iloc[i]!r} as a date")
    return parsed.to_numpy()


def s2_codes(raw: np.ndarray, opts: TableOptions) -> np.ndarray:
    """Reflectance x 10 000, rounded, clipped to the uint16 range; NaN stays NaN."""
    finite = raw[np.isfinite(raw)]
    if finite.size:
        q = float(np.nanpercentile(finite, 99))
        med = float(np.median(finite))
        if opts.s2_scale == "x10000" and q <= 2.0:
            raise TableError(f"S2 values look like float reflectance (99th percentile {q:.3g}); "
                             "use s2_scale='reflectance' (--s2-scale reflectance)")
        if opts.s2_scale == "reflectance" and med > 20.0:
            raise TableError(f"S2 values look like reflectance x 10 000 (median {med:.4g}); "
                             "use s2_scale='x10000' (--s2-scale x10000)")
    x = raw * 10000.0 if opts.s2_scale == "reflectance" else raw
    with np.errstate(invalid="ignore"):
        return np.clip(np.rint(x), 0, 65535)


def s1_codes(raw: np.ndarray, opts: TableOptions) -> np.ndarray:
    """TESSERA int16 code (0 = no data) from the table's S1 encoding; NaN -> 0."""
    enc = opts.s1_encoding
    for k, pol in enumerate(S1_POLS):  # catch a wrong encoding before it silently embeds
        finite = raw[:, k][np.isfinite(raw[:, k])]
        if not finite.size:
            continue
        med = float(np.median(finite))
        hint = None
        if enc == "db" and (med > 20.0 or med < -80.0):
            hint = "amplitude DN or the int16 code" if med > 20 else "something other than dB"
        elif enc == "linear" and (med > 50.0 or med < 0.0):
            hint = "amplitude DN or the int16 code" if med > 50 else "dB"
        elif enc == "amplitude" and med < 1.0:
            hint = "dB or linear power"
        elif enc == "int16" and (finite.min() < 0 or finite.max() > 32767):
            raise TableError(f"S1 {pol} values outside 0-32767 (min {finite.min():.4g}, max "
                             f"{finite.max():.4g}): not the TESSERA int16 code; choose "
                             "s1_encoding (--s1-encoding) db, linear or amplitude")
        if hint:
            raise TableError(f"S1 values look like {hint} ({pol} median {med:.4g}), not "
                             f"{enc!r}; choose s1_encoding (--s1-encoding) db, linear, int16 "
                             "or amplitude")
    if enc == "int16":
        return np.where(np.isfinite(raw), np.rint(raw), 0).astype(np.int16)
    if enc == "linear":
        return s1_linear_to_int16(raw)
    db = raw if enc == "db" else s1_amplitude_dn_to_db(raw, opts.amplitude_offset)
    return s1_db_to_int16(db)  # standard dB; see the `tessera.table` doc on units


def parse_valid(df: pd.DataFrame, column: str, ids: np.ndarray) -> np.ndarray:
    s = df[column]
    out = np.ones(len(s), bool)
    for i, v in enumerate(s.to_numpy(dtype=object)):
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            continue  # unknown: the band-completeness rule decides
        if isinstance(v, (bool, np.bool_)):
            out[i] = bool(v)
            continue
        if isinstance(v, (int, np.integer, float, np.floating)) and v in (0, 1):
            out[i] = bool(v)
            continue
        t = str(v).strip().lower()
        if t in _VALID_TRUE or t in _VALID_FALSE:
            out[i] = t in _VALID_TRUE
            continue
        raise TableError(f"column {column!r}, {_row_ref(i, ids)}: {v!r} is not a boolean "
                         "(expected true/false or 1/0)")
    return out


def parse_orbit(df: pd.DataFrame, column: str, ids: np.ndarray, s1_rows: np.ndarray) -> np.ndarray:
    s = df[column]
    text = s.astype("string").str.strip().str.lower()
    codes = text.map(_ORBITS)
    out = codes.fillna(0).to_numpy(dtype=np.int8)
    bad = (codes.isna() & s.notna()).to_numpy() & s1_rows
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(f"column {column!r}, {_row_ref(i, ids)}: orbit {s.iloc[i]!r}; "
                         "expected ascending or descending")
    return out


def check_duplicates(ids: np.ndarray, dates: np.ndarray, rows: np.ndarray,
                      orbit: np.ndarray | None, aux: dict[str, str], sensor: str) -> None:
    idx = np.flatnonzero(rows)
    if len(idx) < 2:
        return
    frame = pd.DataFrame({"id": ids[idx], "date": dates[idx]})
    if orbit is not None:
        frame["orbit"] = orbit[idx]
    dup = frame.duplicated(keep="first").to_numpy()
    if dup.any():
        j = int(np.flatnonzero(dup)[0])
        i = int(idx[j])
        same = np.ones(len(frame), bool)
        for c in frame.columns:
            same &= (frame[c] == frame[c].iloc[j]).to_numpy()
        first = int(idx[np.flatnonzero(same)[0]])
        what = f"(sample_id, {aux['date']}{', orbit' if orbit is not None else ''})"
        orbit_txt = "" if orbit is None else f", {('ascending', 'descending')[int(orbit[i])]}"
        raise TableError(f"duplicate {sensor} observation {what}: {_row_ref(i, ids)} repeats "
                         f"row {first + 1} ({str(dates[i].astype('datetime64[s]'))}{orbit_txt})")
