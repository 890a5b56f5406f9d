"""A long point table parsed into per-sensor observation streams (`prepare_table`) and padded
d-pixels (`PreparedTable.batch`, `table_to_dpixels`).

Why a module of its own: this is where the rules of the package docstring (`tessera.table`)
are applied: the year, missing and filled bands, validity, duplicates, the per-sample order.
`tessera.train.corpus` builds `PreparedTable`s from `Stream`s of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from typing import Any

import numpy as np
import pandas as pd

from tessera.bands import FILL_RULES, S1_POLS, S2_BANDS, fill_s2_bands, scl_valid
from tessera.dpixel import DPixelBatch
from tessera.errors import TableError
from tessera.table.columns import resolve_columns
from tessera.table.options import TableOptions, TableWarning, merge_options
from tessera.table.values import (check_duplicates, numeric_column, parse_dates, parse_orbit,
                                  parse_valid, s1_codes, s2_codes)

@dataclasses.dataclass
class Stream:
    """Observations of one sensor / orbit, sorted by (sample index, date)."""

    sample: np.ndarray  # (R,) int64 index into the sample ids
    doy: np.ndarray  # (R,) int16
    values: np.ndarray  # (R, C)
    valid: np.ndarray  # (R,) bool

    def take(self, keep: np.ndarray, sample: np.ndarray, order_key: np.ndarray) -> "Stream":
        s, d, v, ok = sample[keep], self.doy[keep], self.values[keep], self.valid[keep]
        order = np.lexsort((order_key[keep], s))
        return Stream(s[order], d[order], v[order], ok[order])

    def pad(self, lo: int, hi: int, empty_step: bool) -> tuple[np.ndarray, ...]:
        """Padded (values (n, T, C), doy (n, T), valid (n, T), present (n, T)) of samples lo..hi.

        empty_step: samples without an observation get one all-zero invalid step at day 180.
        """
        n = hi - lo
        a, b = np.searchsorted(self.sample, [lo, hi])
        s = self.sample[a:b] - lo
        counts = np.bincount(s, minlength=n)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = np.arange(b - a) - starts[s]
        none = counts == 0
        t = max(int(counts.max(initial=0)), 1 if (empty_step and none.any()) else 0)
        c = self.values.shape[1]
        values = np.zeros((n, t, c), self.values.dtype)
        doy = np.zeros((n, t), np.int16)
        valid = np.zeros((n, t), bool)
        present = np.zeros((n, t), bool)
        values[s, pos] = self.values[a:b]
        doy[s, pos] = self.doy[a:b]
        valid[s, pos] = self.valid[a:b]
        present[s, pos] = True
        if empty_step and none.any():
            doy[none, 0] = 180
            present[none, 0] = True
        return values, doy, valid, present


@dataclasses.dataclass
class PreparedTable:
    """A point table parsed into per-sensor observation streams (see `prepare_table`)."""

    sample_ids: np.ndarray  # (N,) sorted unique ids
    id_column: str
    s2: Stream
    s1_asc: Stream
    s1_desc: Stream
    n_rows: int
    filled: dict[str, list[str]]
    dropped_samples: list[Any]
    columns: dict[str, str]

    def __len__(self) -> int:
        return len(self.sample_ids)

    def pixel_ids(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Stable per-sample ids for the v1 draws: a hash of the sample id, so a sample draws the
        same steps whichever table or chunk it comes in."""
        ids = self.sample_ids[lo:hi]
        return np.array([int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(),
                                        "little") >> 1 for v in ids], dtype=np.int64)

    def batch(self, lo: int = 0, hi: int | None = None) -> DPixelBatch:
        hi = len(self) if hi is None else hi
        s2, s2_doy, s2_valid, s2_present = self.s2.pad(lo, hi, empty_step=True)
        a, a_doy, _, a_present = self.s1_asc.pad(lo, hi, empty_step=False)
        d, d_doy, _, d_present = self.s1_desc.pad(lo, hi, empty_step=False)
        return DPixelBatch(s2=s2.astype(np.float32), s2_doy=s2_doy, s2_valid=s2_valid,
                           s2_present=s2_present, s1_asc=a, s1_asc_doy=a_doy,
                           s1_asc_present=a_present, s1_desc=d, s1_desc_doy=d_doy,
                           s1_desc_present=d_present)

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Valid S2 and S1 observations per sample."""
        n = len(self)
        n2 = np.bincount(self.s2.sample[self.s2.valid], minlength=n)
        n1 = sum(np.bincount(st.sample[st.valid], minlength=n) for st in (self.s1_asc, self.s1_desc))
        return n2.astype(np.int32), np.asarray(n1).astype(np.int32)

    @property
    def n_observations(self) -> tuple[int, int]:
        return len(self.s2.sample), len(self.s1_asc.sample) + len(self.s1_desc.sample)


def numpy_dtype(dtype: Any) -> np.dtype[Any]:
    """The numpy dtype of a column's dtype: a pandas extension dtype (nullable Int64,
    int64[pyarrow]) has kind "i" too, but numpy cannot cast to it."""
    return np.dtype(getattr(dtype, "numpy_dtype", dtype))


def prepare_table(df: pd.DataFrame, options: TableOptions | None = None, **kwargs: Any
                  ) -> PreparedTable:
    """Check and parse a long table into observation streams (warnings for filled bands)."""
    opts = merge_options(options, kwargs)
    if not isinstance(df, pd.DataFrame):
        raise TableError(f"expected a pandas DataFrame, got {type(df).__name__}")
    bands, aux = resolve_columns(df, opts)
    if not len(df):
        raise TableError("the table has no rows")

    raw_ids = df[aux["id"]]
    if raw_ids.isna().any():
        i = int(np.flatnonzero(raw_ids.isna().to_numpy())[0])
        raise TableError(f"id column {aux['id']!r}, row {i + 1}: missing sample id")
    ids = raw_ids.to_numpy(dtype=object)
    dates = parse_dates(df, aux["date"], ids)
    years = dates.astype("datetime64[Y]").astype(np.int64) + 1970

    keep = np.ones(len(df), bool)
    dropped: list[Any] = []
    all_ids = pd.unique(ids)
    if opts.year is not None:
        keep = years == opts.year
        if not keep.any():
            raise TableError(f"year {opts.year}: no row of the table is dated in {opts.year} "
                             f"(dates span {_span(dates)})")
        dropped = sorted(set(all_ids) - set(pd.unique(ids[keep])), key=str)
        if dropped:
            warnings.warn(f"year {opts.year}: {len(dropped)} sample(s) have no row in that year "
                          f"and are left out (e.g. {', '.join(map(repr, dropped[:3]))})",
                          TableWarning, stacklevel=3)
    else:
        uniq = np.unique(years)
        if len(uniq) > 1:
            raise TableError(f"dates span {_span(dates)} ({len(uniq)} calendar years: "
                             f"{', '.join(map(str, uniq))}); the day of year would be ambiguous. "
                             "Keep one year with year=... (--year "
                             f"{int(np.bincount(years - uniq[0]).argmax() + uniq[0])})")

    # --- band values ----------------------------------------------------------------------
    present_cols = {b: c for b, c in bands.items()}
    values: dict[str, np.ndarray] = {}
    empty: list[str] = []
    for band, col in present_cols.items():
        v = numeric_column(df, col, opts.nodata, ids)
        if np.isnan(v[keep]).all():
            empty.append(band)
        else:
            values[band] = v
    missing_s2 = [b for b in S2_BANDS if b not in values]
    missing_s1 = [p for p in S1_POLS if p not in values]
    if missing_s1:
        raise TableError(_missing_message(missing_s1, present_cols, opts, fillable=False))
    filled: dict[str, list[str]] = {}
    if missing_s2:
        if not opts.fill_missing:
            raise TableError(_missing_message(missing_s2, present_cols, opts, fillable=True))
        filled, unfillable = fill_s2_bands(values, missing_s2)
        if unfillable:
            raise TableError(_missing_message(unfillable, present_cols, opts, fillable=False)
                             + f" (fill_missing could not fill {', '.join(unfillable)}: its "
                             "neighbours in FILL_RULES are missing too)")
        warnings.warn("fill_missing: filled S2 band(s) " + ", ".join(
            f"{b} from {'/'.join(s)}" + (" (mean)" if len(s) > 1 else "")
            for b, s in filled.items()) + " (absent or entirely nodata in the table)",
            TableWarning, stacklevel=3)

    s2_raw = np.stack([values[b] for b in S2_BANDS], axis=1)  # model band order
    s2_has = ~np.isnan(s2_raw).all(axis=1) & keep
    s2_complete = ~np.isnan(s2_raw).any(axis=1)
    s2 = s2_codes(s2_raw[s2_has], opts)
    s2_full = np.zeros(s2_raw.shape, np.float32)
    s2_full[s2_has] = np.nan_to_num(s2, nan=0.0)

    s2_ok = s2_complete.copy()
    if "SCL" in aux:
        scl = numeric_column(df, aux["SCL"], (), ids)
        known = ~np.isnan(scl)
        s2_ok &= np.where(known, scl_valid(np.nan_to_num(scl, nan=0).astype(np.int64)), True)
    if "valid" in aux:
        s2_ok &= parse_valid(df, aux["valid"], ids)

    s1_raw = np.stack([values[p] for p in S1_POLS], axis=1)  # [VV, VH]
    if opts.s1_encoding == "int16":
        s1_raw[s1_raw == 0] = np.nan  # 0 is the code's no-data value
    s1_has = ~np.isnan(s1_raw).all(axis=1) & keep
    s1 = np.zeros(s1_raw.shape, np.int16)
    if s1_has.any():
        s1[s1_has] = s1_codes(s1_raw[s1_has], opts)
    s1_ok = (s1[:, 0] != 0) | (s1[:, 1] != 0)

    orbit = np.zeros(len(df), np.int8)
    if "orbit" in aux:
        orbit = parse_orbit(df, aux["orbit"], ids, s1_has)

    # --- duplicates -----------------------------------------------------------------------
    check_duplicates(ids, dates, s2_has, None, aux, "S2")
    check_duplicates(ids, dates, s1_has, orbit, aux, "S1")

    # --- samples and streams --------------------------------------------------------------
    kept_ids = pd.unique(ids[keep])
    try:
        sample_ids = np.array(sorted(kept_ids), dtype=object)
    except TypeError:  # mixed types: order by their text
        sample_ids = np.array(sorted(kept_ids, key=str), dtype=object)
    lookup = pd.Index(sample_ids)
    sample = np.full(len(df), -1, np.int64)
    sample[keep] = lookup.get_indexer(ids[keep])
    doy = (dates.astype("datetime64[D]") - dates.astype("datetime64[Y]")).astype(np.int64) + 1
    base = Stream(sample, doy.astype(np.int16), s2_full, s2_ok & s2_has)
    key = dates.astype(np.int64)
    s2_stream = base.take(s2_has, sample, key)
    s1_base = Stream(sample, doy.astype(np.int16), s1, s1_ok)
    asc = s1_base.take(s1_has & (orbit == 0), sample, key)
    desc = s1_base.take(s1_has & (orbit == 1), sample, key)
    # restore a numeric dtype for numeric ids
    if raw_ids.dtype.kind in "iu":
        sample_ids = sample_ids.astype(numpy_dtype(raw_ids.dtype))
    return PreparedTable(sample_ids=sample_ids, id_column=opts.id_column, s2=s2_stream,
                         s1_asc=asc, s1_desc=desc, n_rows=int(keep.sum()),
                         filled=filled, dropped_samples=dropped,
                         columns={**present_cols, **aux})


def _span(dates: np.ndarray) -> str:
    d = dates.astype("datetime64[D]")
    return f"{d.min()} .. {d.max()}"


def _missing_message(missing: list[str], present: dict[str, str], opts: TableOptions,
                     fillable: bool) -> str:
    parts = []
    for band in missing:
        if band in present:
            parts.append(f"{band} (column {present[band]!r} holds only nodata/NaN)")
        else:
            pattern = opts.s1_pattern if band in S1_POLS else opts.s2_pattern
            via = ""
            if pattern:
                via = " or " + repr(pattern.replace("{pol}", band).replace("{band}", band))
            parts.append(f"{band} (no column {band!r}{via})")
    msg = f"missing band{'s' if len(missing) > 1 else ''} " + "; ".join(parts)
    if fillable:
        rules = ", ".join(f"{b} from {'/'.join(FILL_RULES[b])}" for b in missing if b in FILL_RULES)
        msg += f". Pass fill_missing=True (--fill-missing) to fill {rules}, or rename a column"
    elif all(b in S1_POLS for b in missing):
        msg += ". TESSERA needs both S1 polarisations VV and VH"
    return msg


def table_to_dpixels(df: pd.DataFrame, options: TableOptions | None = None, **kwargs: Any
                     ) -> tuple[np.ndarray, DPixelBatch]:
    """(sorted unique sample ids, their d-pixels as one padded `DPixelBatch`)."""
    prepared = prepare_table(df, options, **kwargs)
    return prepared.sample_ids, prepared.batch()
