"""Point tables: embed labelled sample time series given as a long table ("embed-points").

The input is long form, one row per (sample_id, date): CSV or (Geo)Parquet with one column per
band. S2 and S1 may share rows (e.g. the WorldCereal monthly extractions, one row per month with
every band) or sit on separate rows. Columns:

- an id column (`sample_id`, or `id_column`) and a date column (`date`, `timestamp` or `time`,
  or `date_column`);
- Sentinel-2 bands B02 B03 B04 B05 B06 B07 B08 B8A B11 B12 (any column order; B01 B09 B10 are
  recognised and ignored, the model does not use them);
- Sentinel-1 VV and VH, with an optional `orbit` column (ascending / descending; default
  ascending);
- optionally `SCL` (scene classification, SPEC 1) or a boolean `valid` marking usable S2 rows.

Encodings (`TableOptions`): S2 as reflectance x 10 000 (default, BOA offset already removed -
this module never applies it) or float reflectance; S1 as standard backscatter dB (default),
linear power, the TESSERA int16 code, or amplitude DN with an offset (dB = 20 log10(DN) +
offset; WorldCereal uses -83). Values equal to a `nodata` value, or NaN, are missing.

On S1 units: "dB" here is the usual 10 log10(linear power) that GEE, SNAP, openEO and the
WorldCereal extractions give. The published TESSERA code applies 20 log10 to the linear RTC
power (SPEC 1, kept verbatim in `bands.s1_linear_to_int16`), so its int16 code holds twice the
standard dB value; `bands.s1_db_to_int16(d)` encodes a standard dB value d exactly as the
linear-power path encodes 10 ** (d / 10). (The S1 means of SPEC 2, 5484 / 3004, decode
to -22.6 / -35.0 in that doubled unit, i.e. -11.3 / -17.5 dB, typical land VV / VH.)

Per row: an S2 observation exists if any S2 band has a value; it is valid if every band has one
and the SCL class (or the `valid` column) says so. An S1 observation exists if VV or VH has a
value; it is valid iff VV != 0 or VH != 0 in the int16 code (SPEC 1). Observations are sorted by
date; the day of year comes from the date, so the dates must lie in one calendar year (`year`
keeps one). A sample without any S2 row gets one empty, invalid S2 step at day 180 (the rule
SPEC 5 gives for an empty S1 orbit) and is flagged `FLAG_NO_S2`.

The output has one row per sample (sorted by id): the id, `emb_000`.. float32 (or int8 with a
float32 `scale` column), `flags` (FLAG_* bits of `tessera.infer`) and the counts of valid S2 and
S1 observations (`n_s2_valid`, `n_s1_valid`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from tessera import __version__
from tessera.atomic import atomic_path
from tessera.bands import (S1_ORBIT_NAMES, S1_ORBITS, S1_POLS, S2_BANDS, s1_amplitude_dn_to_db,
                           s1_db_to_int16, s1_linear_to_int16, scl_valid)
from tessera.dpixel import DPixelBatch


class TableError(ValueError):
    """The input table cannot be turned into d-pixels; the message names the column or row."""


class TableWarning(UserWarning):
    """Something the user should know about a table (filled bands, dropped samples, random init)."""


S2_SCALES: tuple[str, ...] = ("x10000", "reflectance")
S1_ENCODINGS: tuple[str, ...] = ("db", "linear", "int16", "amplitude")
#: Date column names tried in this order when `date_column` is not given.
DATE_COLUMNS: tuple[str, ...] = ("date", "timestamp", "time")
#: Offset of the WorldCereal amplitude DN: sigma0 [dB] = 20 log10(DN) - 83.
WORLDCEREAL_S1_OFFSET = -83.0
#: Real Sentinel-2 bands that TESSERA does not use: recognised, ignored.
UNUSED_S2_BANDS: tuple[str, ...] = ("B01", "B09", "B10")
#: Real Sentinel-1 polarisations that TESSERA does not use: recognised, ignored.
UNUSED_S1_POLS: tuple[str, ...] = ("HH", "HV")
#: Auxiliary columns a rename may target, besides the bands and the id / date columns.
AUX_COLUMNS: tuple[str, ...] = ("SCL", "valid", "orbit")
#: Output columns besides the embedding.
FLAGS_COLUMN, N_S2_COLUMN, N_S1_COLUMN, SCALE_COLUMN = "flags", "n_s2_valid", "n_s1_valid", "scale"

#: `fill_missing`: a band that is absent (or entirely nodata) is filled, row by row, with the mean
#: of its spectral neighbours (central wavelengths in nm in the comments). Rules are applied
#: repeatedly, so a filled band can feed another (B07 from B06 and a B8A filled from B08). A row
#: where a source is missing gets no value (its S2 observation is then invalid).
FILL_RULES: dict[str, tuple[str, ...]] = {
    "B02": ("B03",),  # 490 <- 560
    "B03": ("B02", "B04"),  # 560 <- 490, 665
    "B04": ("B03", "B05"),  # 665 <- 560, 705
    "B05": ("B04", "B06"),  # 705 <- 665, 740
    "B06": ("B05", "B07"),  # 740 <- 705, 783
    "B07": ("B06", "B8A"),  # 783 <- 740, 865
    "B08": ("B8A",),  # 842 <- 865
    "B8A": ("B08",),  # 865 <- 842
    "B11": ("B12",),  # 1610 <- 2190
    "B12": ("B11",),  # 2190 <- 1610
}

_ORBITS = {k: S1_ORBITS.index(v) for k, v in S1_ORBIT_NAMES.items()}
_S2_NAME = re.compile(r"^B(\d{1,2}|8A)$", re.IGNORECASE)
_S1_NAME = re.compile(r"^(VV|VH|HH|HV)$", re.IGNORECASE)
_BAND_LIKE = re.compile(r"^B\d+[A-Z]?$", re.IGNORECASE)
_VALID_TRUE = {"true", "1", "yes", "y", "t"}
_VALID_FALSE = {"false", "0", "no", "n", "f"}


# --- options ----------------------------------------------------------------------------------

@dataclasses.dataclass
class TableOptions:
    """How to read a point table.

    s2_scale: "x10000" (reflectance x 10 000, default) or "reflectance" (float, 0-1).
    s1_encoding: "db" (standard 10 log10 power, default), "linear" (power), "int16" (the TESSERA
        code, 0 = no data) or "amplitude" (DN; dB = 20 log10(DN) + s1_offset).
    s1_offset: dB offset of the amplitude DN (default -83, the WorldCereal value); only with
        s1_encoding="amplitude".
    nodata: band values meaning "missing" (e.g. 65535), besides NaN.
    rename: {your column: band or auxiliary name}, applied first (e.g. {"red": "B04"}).
    s2_pattern / s1_pattern: column name patterns with `{band}` / `{pol}`, e.g. "S2-L2A-{band}",
        "S1-SIGMA0-{pol}".
    year: keep the rows of this calendar year only (needed when the dates span several years).
    fill_missing: fill absent or entirely-nodata S2 bands by `FILL_RULES` (with a warning).
    id_column: the sample id column. date_column: the date column (default: the first of
        `DATE_COLUMNS` present).
    """

    s2_scale: str = "x10000"
    s1_encoding: str = "db"
    s1_offset: float | None = None
    nodata: Sequence[float] = ()
    rename: Mapping[str, str] = dataclasses.field(default_factory=dict)
    s2_pattern: str | None = None
    s1_pattern: str | None = None
    year: int | None = None
    fill_missing: bool = False
    id_column: str = "sample_id"
    date_column: str | None = None

    def __post_init__(self) -> None:
        if self.s2_scale not in S2_SCALES:
            raise TableError(f"s2_scale {self.s2_scale!r}: expected one of {', '.join(S2_SCALES)}")
        if self.s1_encoding not in S1_ENCODINGS:
            raise TableError(f"s1_encoding {self.s1_encoding!r}: expected one of "
                             f"{', '.join(S1_ENCODINGS)}")
        if self.s1_offset is not None and self.s1_encoding != "amplitude":
            raise TableError(f"s1_offset (--s1-offset) applies to s1_encoding 'amplitude' only, "
                             f"not {self.s1_encoding!r}")
        if isinstance(self.nodata, (int, float, np.number)):
            self.nodata = (self.nodata,)
        try:
            self.nodata = tuple(float(v) for v in (self.nodata or ()))
        except (TypeError, ValueError):
            raise TableError(f"nodata {self.nodata!r}: expected numbers") from None
        self.rename = dict(self.rename or {})
        for name, pattern, key in (("s2_pattern", self.s2_pattern, "{band}"),
                                   ("s1_pattern", self.s1_pattern, "{pol}")):
            if pattern is not None and pattern.count(key) != 1 and not (
                    name == "s1_pattern" and pattern.count("{band}") == 1):
                raise TableError(f"{name} {pattern!r}: expected exactly one {key} placeholder, "
                                 f"e.g. {'S2-L2A-{band}' if key == '{band}' else 'S1-SIGMA0-{pol}'}")
        if self.year is not None:
            self.year = int(self.year)
            if not 1900 <= self.year <= 2200:
                raise TableError(f"year {self.year}: expected a calendar year such as 2022")

    @property
    def amplitude_offset(self) -> float:
        return WORLDCEREAL_S1_OFFSET if self.s1_offset is None else float(self.s1_offset)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["nodata"] = list(self.nodata)
        return d


def _merge_options(options: TableOptions | None, kwargs: Mapping[str, Any]) -> TableOptions:
    known = {f.name for f in dataclasses.fields(TableOptions)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unknown table option(s) {', '.join(unknown)}; expected "
                        f"{', '.join(sorted(known))}")
    if options is None:
        return TableOptions(**kwargs)
    return dataclasses.replace(options, **kwargs) if kwargs else options


# --- reading ----------------------------------------------------------------------------------

_CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt")
_PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV (.csv, .csv.gz, .tsv) or (Geo)Parquet (.parquet, .geoparquet, .pq) table."""
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise TableError(f"{path}: is a directory; expected a CSV or Parquet file")
    try:
        if name.endswith(_PARQUET_SUFFIXES):
            return pd.read_parquet(path)
        if name.endswith(_CSV_SUFFIXES):
            return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
    except Exception as exc:  # unreadable content: name the file
        kind = "Parquet" if name.endswith(_PARQUET_SUFFIXES) else "CSV"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TableError(f"{path}: not a readable {kind} file ({type(exc).__name__}: {first})"
                         ) from None
    raise TableError(f"{path}: unsupported file type; expected "
                     f"{', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}")


# --- columns ----------------------------------------------------------------------------------

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


def _resolve_columns(df: pd.DataFrame, opts: TableOptions) -> tuple[dict[str, str], dict[str, str]]:
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


def _row_ref(df_index: int, ids: np.ndarray) -> str:
    return f"row {df_index + 1} (sample_id {ids[df_index]!r})"


# --- values -----------------------------------------------------------------------------------

def _numeric(df: pd.DataFrame, column: str, nodata: tuple[float, ...], ids: np.ndarray) -> np.ndarray:
    """Column as float64 with NaN for missing / nodata values."""
    s = df[column]
    if s.dtype == bool or str(s.dtype) == "boolean":
        raise TableError(f"column {column!r}: boolean values; expected numbers")
    vals = np.array(pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))
    bad = np.isnan(vals) & s.notna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(f"column {column!r}, {_row_ref(i, ids)}: {s.iloc[i]!r} is not a number")
    for v in nodata:
        vals[vals == v] = np.nan
    return vals


def _parse_dates(df: pd.DataFrame, column: str, ids: np.ndarray) -> np.ndarray:
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


def _s2_codes(raw: np.ndarray, opts: TableOptions) -> np.ndarray:
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


def _s1_codes(raw: np.ndarray, opts: TableOptions) -> np.ndarray:
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
    return s1_db_to_int16(db)  # standard dB; see the module doc on units


def fill_s2_bands(values: dict[str, np.ndarray], missing: list[str]
                  ) -> tuple[dict[str, list[str]], list[str]]:
    """Fill `missing` S2 bands in `values` by FILL_RULES; returns ({band: sources}, unfillable)."""
    filled: dict[str, list[str]] = {}
    todo = [b for b in S2_BANDS if b in missing]
    progress = True
    while todo and progress:
        progress = False
        for band in list(todo):
            sources = FILL_RULES.get(band, ())
            if sources and all(s in values for s in sources):
                values[band] = np.mean(np.stack([values[s] for s in sources]), axis=0)
                filled[band] = list(sources)
                todo.remove(band)
                progress = True
    return filled, todo


# --- the prepared table -----------------------------------------------------------------------

@dataclasses.dataclass
class _Stream:
    """Observations of one sensor / orbit, sorted by (sample index, date)."""

    sample: np.ndarray  # (R,) int64 index into the sample ids
    doy: np.ndarray  # (R,) int16
    values: np.ndarray  # (R, C)
    valid: np.ndarray  # (R,) bool

    def take(self, keep: np.ndarray, sample: np.ndarray, order_key: np.ndarray) -> "_Stream":
        s, d, v, ok = sample[keep], self.doy[keep], self.values[keep], self.valid[keep]
        order = np.lexsort((order_key[keep], s))
        return _Stream(s[order], d[order], v[order], ok[order])

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
    s2: _Stream
    s1_asc: _Stream
    s1_desc: _Stream
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


def prepare_table(df: pd.DataFrame, options: TableOptions | None = None, **kwargs: Any
                  ) -> PreparedTable:
    """Check and parse a long table into observation streams (warnings for filled bands)."""
    opts = _merge_options(options, kwargs)
    if not isinstance(df, pd.DataFrame):
        raise TableError(f"expected a pandas DataFrame, got {type(df).__name__}")
    bands, aux = _resolve_columns(df, opts)
    if not len(df):
        raise TableError("the table has no rows")

    raw_ids = df[aux["id"]]
    if raw_ids.isna().any():
        i = int(np.flatnonzero(raw_ids.isna().to_numpy())[0])
        raise TableError(f"id column {aux['id']!r}, row {i + 1}: missing sample id")
    ids = raw_ids.to_numpy(dtype=object)
    dates = _parse_dates(df, aux["date"], ids)
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
        v = _numeric(df, col, opts.nodata, ids)
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
    s2 = _s2_codes(s2_raw[s2_has], opts)
    s2_full = np.zeros(s2_raw.shape, np.float32)
    s2_full[s2_has] = np.nan_to_num(s2, nan=0.0)

    s2_ok = s2_complete.copy()
    if "SCL" in aux:
        scl = _numeric(df, aux["SCL"], (), ids)
        known = ~np.isnan(scl)
        s2_ok &= np.where(known, scl_valid(np.nan_to_num(scl, nan=0).astype(np.int64)), True)
    if "valid" in aux:
        s2_ok &= _parse_valid(df, aux["valid"], ids)

    s1_raw = np.stack([values[p] for p in S1_POLS], axis=1)  # [VV, VH]
    if opts.s1_encoding == "int16":
        s1_raw[s1_raw == 0] = np.nan  # 0 is the code's no-data value
    s1_has = ~np.isnan(s1_raw).all(axis=1) & keep
    s1 = np.zeros(s1_raw.shape, np.int16)
    if s1_has.any():
        s1[s1_has] = _s1_codes(s1_raw[s1_has], opts)
    s1_ok = (s1[:, 0] != 0) | (s1[:, 1] != 0)

    orbit = np.zeros(len(df), np.int8)
    if "orbit" in aux:
        orbit = _parse_orbit(df, aux["orbit"], ids, s1_has)

    # --- duplicates -----------------------------------------------------------------------
    _check_duplicates(ids, dates, s2_has, None, aux, "S2")
    _check_duplicates(ids, dates, s1_has, orbit, aux, "S1")

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
    base = _Stream(sample, doy.astype(np.int16), s2_full, s2_ok & s2_has)
    key = dates.astype(np.int64)
    s2_stream = base.take(s2_has, sample, key)
    s1_base = _Stream(sample, doy.astype(np.int16), s1, s1_ok)
    asc = s1_base.take(s1_has & (orbit == 0), sample, key)
    desc = s1_base.take(s1_has & (orbit == 1), sample, key)
    # restore a numeric dtype for numeric ids
    if raw_ids.dtype.kind in "iu":
        sample_ids = sample_ids.astype(raw_ids.dtype)
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


def _parse_valid(df: pd.DataFrame, column: str, ids: np.ndarray) -> np.ndarray:
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


def _parse_orbit(df: pd.DataFrame, column: str, ids: np.ndarray, s1_rows: np.ndarray) -> np.ndarray:
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


def _check_duplicates(ids: np.ndarray, dates: np.ndarray, rows: np.ndarray,
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


# --- the public entry points ------------------------------------------------------------------

def table_to_dpixels(df: pd.DataFrame, options: TableOptions | None = None, **kwargs: Any
                     ) -> tuple[np.ndarray, DPixelBatch]:
    """(sorted unique sample ids, their d-pixels as one padded `DPixelBatch`)."""
    prepared = prepare_table(df, options, **kwargs)
    return prepared.sample_ids, prepared.batch()


def embedding_columns(latent: int) -> list[str]:
    return [f"emb_{i:03d}" for i in range(latent)]


def embed_table(df: pd.DataFrame | str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
                preset: str | None = None, options: TableOptions | None = None,
                sampling: str = "all", seed: int = 0, batch_size: int | None = None,
                device: str = "auto", int8: bool = False, chunk_samples: int = 8192,
                model: Any = None, **option_kwargs: Any) -> pd.DataFrame:
    """Embed every sample of a long point table; one output row per sample, sorted by id.

    Table options come from `options` and/or keywords (`s2_scale=`, `s1_encoding=`, `nodata=`,
    `year=`, `fill_missing=`... see `TableOptions`). The model is `model` (a TesseraModel) if
    given, else `tessera.infer.resolve_model(checkpoint, preset)`; a random init is warned about.
    Samples are embedded `chunk_samples` at a time, so memory stays bounded. The result's
    `attrs["tessera"]` holds a summary (rows, observations, filled bands, model).
    """
    from tessera import infer
    from tessera.quantize import quantize

    t0 = time.perf_counter()
    opts = _merge_options(options, option_kwargs)
    if chunk_samples < 1:
        raise ValueError(f"chunk_samples {chunk_samples}: expected a positive number")
    if not isinstance(df, pd.DataFrame):
        df = read_table(df)
    prepared = prepare_table(df, opts)
    if model is None:
        model, meta = infer.resolve_model(checkpoint, preset)
    else:
        meta = {"preset": preset, "given_model": True}
    if meta.get("random_init"):
        warnings.warn(f"{infer.RANDOM_INIT_WARNING} (preset {meta.get('preset')}, init seed "
                      f"{meta.get('init_seed')})", TableWarning, stacklevel=2)
    embedder = infer.Embedder(model, device=device, batch_size=batch_size,
                              sampling=sampling, seed=seed)  # type: ignore[arg-type]
    n = len(prepared)
    latent = embedder.model.config.latent_dim
    emb = np.zeros((n, latent), np.float32)
    flags = np.zeros(n, np.uint8)
    for lo in range(0, n, chunk_samples):
        hi = min(n, lo + chunk_samples)
        res = embedder.embed(prepared.batch(lo, hi), prepared.pixel_ids(lo, hi))
        emb[lo:hi], flags[lo:hi] = res.embeddings, res.flags
    n2, n1 = prepared.counts()

    names = embedding_columns(latent)
    parts = [pd.DataFrame({prepared.id_column: prepared.sample_ids})]
    if int8:
        q, s = quantize(emb)
        parts.append(pd.DataFrame(q, columns=names))
        parts.append(pd.DataFrame({SCALE_COLUMN: s}))
    else:
        parts.append(pd.DataFrame(emb, columns=names))
    parts.append(pd.DataFrame({FLAGS_COLUMN: flags, N_S2_COLUMN: n2, N_S1_COLUMN: n1}))
    out = pd.concat(parts, axis=1)
    n_s2, n_s1 = prepared.n_observations
    out.attrs["tessera"] = {
        "software": f"tessera-eo {__version__}", "samples": n, "rows": prepared.n_rows,
        "s2_observations": n_s2, "s1_observations": n_s1,
        "flagged_samples": int((flags != 0).sum()), "filled_bands": prepared.filled,
        "dropped_samples": len(prepared.dropped_samples), "int8": bool(int8),
        "sampling": sampling, "seed": seed, "preset": meta.get("preset"),
        "checkpoint": str(checkpoint) if checkpoint else str(meta.get("path", "") or ""),
        "random_init": bool(meta.get("random_init", False)), "options": opts.to_dict(),
        "columns": prepared.columns, "seconds": round(time.perf_counter() - t0, 3),
    }
    return out


@dataclasses.dataclass
class PointsSummary:
    output: Path
    samples: int
    rows: int
    s2_observations: int
    s1_observations: int
    flagged_samples: int
    filled_bands: dict[str, list[str]]
    random_init: bool
    seconds: float


def write_parquet(df: pd.DataFrame, output: str | os.PathLike) -> Path:
    """Write `df` as Parquet atomically (temporary sibling, then os.replace); attrs["tessera"]
    goes into the file's key-value metadata under b"tessera"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    info = df.attrs.get("tessera")
    if info:
        meta = dict(table.schema.metadata or {})
        meta[b"tessera"] = json.dumps(info, default=str).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(output) as tmp:
        pq.write_table(table, tmp)
    return output


def embed_points_file(input: str | os.PathLike, output: str | os.PathLike, **kwargs: Any
                      ) -> PointsSummary:
    """Read a point table, embed it (`embed_table` keywords) and write Parquet atomically."""
    output = Path(output)
    if not output.name.lower().endswith(_PARQUET_SUFFIXES):
        raise TableError(f"{output}: the output is Parquet; name it *.parquet")
    if Path(input).exists() and output.exists() and output.resolve() == Path(input).resolve():
        raise TableError(f"{output}: the output would overwrite the input table")
    t0 = time.perf_counter()
    df = read_table(input)
    result = embed_table(df, **kwargs)
    write_parquet(result, output)
    info = result.attrs["tessera"]
    return PointsSummary(output=output, samples=info["samples"], rows=info["rows"],
                         s2_observations=info["s2_observations"],
                         s1_observations=info["s1_observations"],
                         flagged_samples=info["flagged_samples"], filled_bands=info["filled_bands"],
                         random_init=info["random_init"],
                         seconds=round(time.perf_counter() - t0, 3))
