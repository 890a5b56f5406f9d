"""The WorldCereal WIDE extraction layout, converted to the long layout `tessera.table` reads.

Why: several WorldCereal / Presto / prometheo tables store one row per sample and one column per
(band, timestep), e.g. `OPTICAL-B02-ts0-10m`, `SAR-VV-ts3-20m`, `METEO-temperature_mean-ts5-100m`,
with a per-sample `start_date`. The point-table reader (`tessera.table.prepare_table`) and the
rest of the code base read the LONG layout of the newer WorldCereal extractions
(`2022_FRA_LPIS_POLY_110.geoparquet`): one row per (sample_id, timestamp) and one column per band,
`S2-L2A-B02`, `S1-SIGMA0-VV`, `AGERA5-TMEAN`... `wide_to_long` converts the first into the second,
so both kinds of table are read by the same code with the same options (`WORLDCEREAL_OPTIONS`).

Column mapping (kind-band-tsK-resolution -> long column, one row per timestep K):
  OPTICAL-<band>  -> S2-L2A-<band>          SAR-<pol>                  -> S1-SIGMA0-<pol>
  METEO-temperature_mean -> AGERA5-TMEAN    METEO-precipitation_flux  -> AGERA5-PRECIP
  DEM-alt-20m (no timestep) -> elevation    DEM-slo-20m (no timestep) -> slope
  any other <KIND>-<name>-tsK-<res> (e.g. OPTICAL-ndvi) -> <KIND>-<name>
Every other column (lat, lon, h3_l3_cell, ewoc_code, CROPTYPE_LABEL, start_date...) is per-sample
metadata and is repeated on each of the sample's rows. Values are copied unchanged, with their
dtype: S2 reflectance x 10 000 (uint16), S1 WorldCereal amplitude DN (dB = 20 log10(DN) - 83),
AgERA5 scaled by 100, and 65535 = missing, exactly as in the long WorldCereal tables. (Read them
with `s1_encoding="amplitude"`, `s1_offset=-83` and `nodata=[65535]`: `WORLDCEREAL_OPTIONS`.) A
(band, timestep) cell the table has no column for becomes NaN.

Timestamps: timestep K is the calendar month M0 + K, stamped on its first day (as the long
tables and the monthly cubes stamp their monthly composites), where M0 is the month containing
`start_date + 15 days`, i.e. (about) the middle of the first one-month compositing window that
starts at `start_date`. Reading of the producing / consuming code and of the data:
- Presto's WorldCereal reader (WorldCereal/presto-worldcereal, presto/dataset.py,
  `WorldCerealBase.row_to_arrays`) takes `month = start_date.month - 1` as the first month;
- prometheo's reader (WorldCereal/prometheo, datasets/worldcereal.py, `_get_timestamps`) uses
  `pd.date_range(start_date, end_date, freq="MS")`, i.e. the first month start ON OR AFTER
  start_date.
Both agree when start_date is the first of a month (UGA/SSD 2017 and Flanders prometheo: all on
the 1st, where the rule above agrees too). They disagree on the Presto test table, whose start
dates fall anywhere in the month. Its monthly AgERA5 temperature decides: fitting the seasonal
cycle of its northern samples (lat > 35) to that of its samples starting on the 1st, start days
2-10 (84 samples) match "same month" (mean squared error 9.0 vs 23.9 K^2) and
start days 21-31 (202 samples) match "next month" (7.4-15.1 vs 19.5-24.9); days 11-20 (10
samples) hardly discriminate. So neither reader is right for every row; the month containing
the middle of the compositing window is.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from tessera.errors import WideTableError

#: `tessera.table.TableOptions` keywords that read the WorldCereal extraction tables (long ones
#: and `wide_to_long` output): S2 reflectance x 10 000, S1 amplitude DN (dB = 20 log10(DN) - 83),
#: 65535 = missing; B8A, entirely missing in several tables, is filled from B08.
WORLDCEREAL_OPTIONS: dict[str, Any] = dict(
    s2_pattern="S2-L2A-{band}", s1_pattern="S1-SIGMA0-{pol}", s1_encoding="amplitude",
    s1_offset=-83.0, nodata=[65535], fill_missing=True)

#: WorldCereal nodata value of the integer bands.
NODATA = 65535
#: Candidate sample id columns, in this order (a column, or the index of that name).
ID_COLUMNS: tuple[str, ...] = ("sample_id", "location_id")
#: <KIND>-<name>-ts<K>-<resolution>; name may contain '_' (METEO-temperature_mean-ts0-100m).
_WIDE = re.compile(r"^([A-Za-z0-9]+)-([A-Za-z0-9_]+)-ts(\d+)-(\d+m)$")
#: static per-sample bands of the wide layout -> long column
_STATIC = {"DEM-alt-20m": "elevation", "DEM-slo-20m": "slope"}
#: wide features-only layout (percentiles etc., no time series): OPTICAL-B02-p10-10m
_FEATURE = re.compile(r"^(OPTICAL|SAR|METEO)-[A-Za-z0-9_]+-(p\d+|iqr|std|skew|mean|median)-\d+m$")
#: a Sentinel-2 band or Sentinel-1 polarisation series (not an index such as OPTICAL-ndvi)
_SENSOR_BAND = re.compile(r"^(OPTICAL-B(\d{1,2}|8A)|SAR-(VV|VH|HH|HV))$", re.IGNORECASE)
_KIND_PREFIX = {"OPTICAL": "S2-L2A-", "SAR": "S1-SIGMA0-"}
_METEO = {"temperature_mean": "AGERA5-TMEAN", "precipitation_flux": "AGERA5-PRECIP"}


def long_column(kind: str, name: str) -> str:
    """The long-layout column of a wide (kind, name): OPTICAL/B02 -> S2-L2A-B02, SAR/VV ->
    S1-SIGMA0-VV, METEO/temperature_mean -> AGERA5-TMEAN, else '<kind>-<name>' (so an index
    series such as OPTICAL-ndvi never poses as a band)."""
    kind_u = kind.upper()
    if kind_u in _KIND_PREFIX and _SENSOR_BAND.match(f"{kind_u}-{name}"):
        return _KIND_PREFIX[kind_u] + name.upper()
    if kind_u == "METEO" and name in _METEO:
        return _METEO[name]
    return f"{kind}-{name}"


def is_wide(df: pd.DataFrame) -> bool:
    """Whether a table is in the WIDE layout: band time-series columns such as
    OPTICAL-B02-ts0-10m or SAR-VV-ts0-20m and no date / timestamp column (`wide_to_long`)."""
    cols = [str(c) for c in df.columns]
    if any(c in ("timestamp", "date", "time") for c in cols):
        return False
    for c in cols:
        m = _WIDE.match(c)
        if m is not None and _SENSOR_BAND.match(f"{m.group(1)}-{m.group(2)}"):
            return True
    return False


def first_month(start_date: pd.Series) -> pd.Series:
    """Monthly period of timestep 0: the month containing start_date + 15 days (module doc)."""
    return (start_date + pd.Timedelta(days=15)).dt.to_period("M")


def _source(source: str) -> str:
    return source or "<table>"


def _ids(df: pd.DataFrame, id_column: str | None, source: str) -> tuple[str, pd.Series]:
    """(name of the id column in the output, the ids in row order, with their dtype)."""
    def col(name: str) -> pd.Series | None:
        if name in df.columns:
            return df[name].reset_index(drop=True)
        if df.index.name == name:
            return df.index.to_series().reset_index(drop=True)
        return None

    if id_column is not None:
        ids = col(id_column)
        if ids is None:
            raise WideTableError(f"{_source(source)}: no id column {id_column!r} (neither a "
                                 f"column nor the index); columns are {_preview(df.columns)}")
        return id_column, ids
    for name in ID_COLUMNS:
        ids = col(name)
        if ids is not None:
            return "sample_id", ids
    # no id at all (e.g. the Presto test table): the frame's row labels
    return "sample_id", df.index.to_series().reset_index(drop=True)


def _preview(columns: Any, n: int = 10) -> str:
    cols = [str(c) for c in columns]
    return ", ".join(cols[:n]) + (", ..." if len(cols) > n else "")


def wide_to_long(df: pd.DataFrame, source: str = "<table>", id_column: str | None = None
                 ) -> pd.DataFrame:
    """Convert a WorldCereal WIDE table into the long layout (see the module docstring).

    The output has `sample_id` (from `id_column`; by default the `sample_id` column or index,
    else `location_id`, else the frame's row labels), `timestamp` (datetime64, first day of the
    month of each timestep), one column per band and the per-sample metadata columns; rows are
    grouped by sample in the input order, timesteps ascending. `source` names the table in
    errors. Raises WideTableError when the table is not in the wide layout.
    """
    if not isinstance(df, pd.DataFrame):
        raise WideTableError(f"{_source(source)}: expected a pandas DataFrame, got "
                             f"{type(df).__name__}")
    if df.columns.duplicated().any():
        dup = df.columns[df.columns.duplicated()][0]
        raise WideTableError(f"{_source(source)}: column {dup!r} appears more than once")
    cols = [str(c) for c in df.columns]
    matches = {c: _WIDE.match(c) for c in cols}
    series = {c: m for c, m in matches.items() if m is not None}
    sensors = [c for c, m in series.items() if _SENSOR_BAND.match(f"{m.group(1)}-{m.group(2)}")]
    if not sensors:
        if "timestamp" in cols or "date" in cols:
            why = "it already looks long (it has a timestamp/date column): read it directly"
        elif any(_FEATURE.match(c) for c in cols):
            why = ("it holds per-sample features (e.g. percentiles such as OPTICAL-B02-p10-10m), "
                   "not band time series, so it cannot give d-pixels")
        else:
            why = f"its columns are {_preview(cols)}"
        if series:
            why += f" (its only time series are {_preview(list(series), 3)})"
        raise WideTableError(f"{_source(source)}: not the WorldCereal wide layout: no band "
                             "time-series column like OPTICAL-B02-ts0-10m or SAR-VV-ts0-20m; "
                             f"{why}")
    if "start_date" not in cols:
        raise WideTableError(f"{_source(source)}: wide layout without a 'start_date' column; the "
                             "month of each timestep tsK is counted from start_date")
    if "timestamp" in cols:
        raise WideTableError(f"{_source(source)}: has both time-series columns (e.g. "
                             f"{next(iter(series))!r}) and a 'timestamp' column; expected one "
                             "layout, wide or long")

    # (long column, timestep) -> wide column
    cells: dict[tuple[str, int], str] = {}
    bands: list[str] = []
    for col, m in series.items():
        band = long_column(m.group(1), m.group(2))
        key = (band, int(m.group(3)))
        if key in cells:
            raise WideTableError(f"{_source(source)}: columns {cells[key]!r} and {col!r} both give "
                                 f"{band} at timestep {key[1]} (two resolutions?); drop one")
        cells[key] = col
        if band not in bands:
            bands.append(band)
    steps = sorted({k for _, k in cells})
    static = {c: _STATIC[c] for c in cols if c in _STATIC}
    id_name, ids = _ids(df, id_column, source)
    if ids.isna().any():
        i = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise WideTableError(f"{_source(source)}: row {i + 1} has no sample id")
    if not ids.is_unique:
        dup = ids[ids.duplicated()].iloc[0]
        raise WideTableError(f"{_source(source)}: sample id {dup!r} appears on several rows; the "
                             "wide layout has one row per sample")

    raw_start = df["start_date"]
    start = pd.to_datetime(raw_start, errors="coerce", format="mixed")
    if isinstance(start.dtype, pd.DatetimeTZDtype):
        start = start.dt.tz_localize(None)
    bad = start.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise WideTableError(f"{_source(source)}: column 'start_date', row {i + 1} (sample_id "
                             f"{ids.iloc[i]!r}): cannot read {raw_start.iloc[i]!r} as a date")
    month0 = first_month(start)

    n, t = len(df), len(steps)
    meta = [c for c in cols if c not in series and c not in static and c != id_name]
    out: dict[str, Any] = {id_name: ids.repeat(t).reset_index(drop=True)}
    stamps = np.stack([(month0 + k).dt.to_timestamp().to_numpy() for k in steps], axis=1)
    out["timestamp"] = stamps.reshape(-1).astype("datetime64[ns]")
    for band in bands:
        present = [cells.get((band, k)) for k in steps]
        if all(c is not None for c in present):
            values = np.stack([df[c].to_numpy() for c in present], axis=1)
        else:  # a timestep without a column for this band: NaN
            values = np.full((n, t), np.nan)
            for j, c in enumerate(present):
                if c is not None:
                    values[:, j] = df[c].to_numpy(dtype=np.float64, na_value=np.nan)
        out[band] = values.reshape(-1)
    for col, name in static.items():
        out[name] = np.repeat(df[col].to_numpy(), t)
    long = pd.DataFrame(out)
    for col in meta:  # Series.repeat keeps the column's dtype (string, categorical...)
        long[col] = df[col].repeat(t).reset_index(drop=True)
    return long
