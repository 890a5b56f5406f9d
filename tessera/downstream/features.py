"""The features the heads are trained on: the raw time series (`raw_features`) and embeddings
aligned with a table's samples (`embed_samples`, `Embeddings`), made by an embedding function
(`EmbedFn`, e.g. `tessera_embedder`).

Why a module of its own: features are computed once per table and shared by every fold,
fraction and seed; the embedding function is the only place the model enters the evaluation.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from tessera.bands import S1_POLS, S2_BANDS
from tessera.downstream.tables import EvalTable, find_date_column
from tessera.errors import InputError
from tessera.table.wide import WORLDCEREAL_OPTIONS  # how tessera.table reads these tables

if TYPE_CHECKING:
    from tessera.model import TesseraModel

NODATA = (65535,)
#: An embedding function: long frame -> (sample ids, (N, D) array) or (ids, array, flags).
EmbedFn = Callable[[pd.DataFrame], tuple]


def default_raw_columns(long: pd.DataFrame) -> list[str]:
    """The S2 band and S1 VV / VH columns of a long table, in model band order (WorldCereal
    names `S2-L2A-B02` / `S1-SIGMA0-VV` or plain `B02` / `VV`)."""
    cols = []
    for band in S2_BANDS:
        cols += [c for c in (f"S2-L2A-{band}", band) if c in long.columns][:1]
    for pol in S1_POLS:
        cols += [c for c in (f"S1-SIGMA0-{pol}", pol) if c in long.columns][:1]
    if not cols:
        raise InputError("no S2 / S1 band columns (S2-L2A-B02.., S1-SIGMA0-VV.. or B02.., VV..)")
    return cols


def raw_features(long: pd.DataFrame, sample_ids: Sequence[object] | np.ndarray, *,
                 columns: Sequence[str] | None = None, id_column: str = "sample_id",
                 date_column: str | None = None, nodata: Iterable[float] = NODATA,
                 drop_empty: bool = True) -> tuple[np.ndarray, list[str]]:
    """(N, dates x bands) float64 matrix of the raw time series, one row per `sample_ids` entry.

    Columns are date-major in time order over the sorted distinct dates of `long` (the bands of
    the first date, then of the second, ...), bands in `columns` order (default
    `default_raw_columns`). Values equal to a `nodata` value, NaN, and dates a sample has no row
    for are NaN; a sample without any row is all NaN. With `drop_empty`, columns that are NaN for
    every sample are dropped. Names are "YYYY-MM-DD:column". Repeated (sample, date) rows are
    an error.
    """
    columns = list(columns) if columns is not None else default_raw_columns(long)
    date_column = date_column or find_date_column(long)
    if date_column is None:
        raise InputError("no date column")
    sample_ids = np.asarray(sample_ids)
    dates = pd.to_datetime(long[date_column]).to_numpy("datetime64[ns]")
    steps = np.unique(dates)
    row = pd.Index(sample_ids).get_indexer(long[id_column].to_numpy())
    ok = row >= 0
    step = np.searchsorted(steps, dates)
    cube = np.full((len(sample_ids), len(steps), len(columns)), np.nan)
    if ok.any():
        pairs = row[ok] * max(1, len(steps)) + step[ok]
        if len(np.unique(pairs)) != len(pairs):
            raise InputError("repeated (sample, date) rows in the table")
        values = long[columns].to_numpy(dtype=np.float64)[ok]
        for v in nodata:
            values[values == v] = np.nan
        cube[row[ok], step[ok]] = values
    x = cube.reshape(len(sample_ids), -1)
    names = [f"{str(d)[:10]}:{c}" for d in steps for c in columns]
    if drop_empty and x.size:
        keep = ~np.isnan(x).all(axis=0)
        x, names = x[:, keep], [n for n, k in zip(names, keep) if k]
    return x, names


def tessera_embedder(model: TesseraModel | None = None, *,
                     checkpoint: str | os.PathLike | None = None,
                     preset: str | None = None, device: str = "cpu",
                     options: Mapping[str, Any] | None = None, **embed_kwargs: Any) -> EmbedFn:
    """An `EmbedFn` embedding with `tessera.table.embed_table`: the given model, else
    `tessera.infer.resolve_model(checkpoint, preset)` (loaded once, on first use). `options`:
    table options (default `WORLDCEREAL_OPTIONS`). Returns (ids, float32 (N, D), flags), D the
    model's embedding width (128, or a v2 student's `dim=`)."""
    from tessera.table import embed_table, embedding_columns

    opts = dict(WORLDCEREAL_OPTIONS if options is None else options)
    state: dict[str, Any] = {"model": model}

    def embed(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if state["model"] is None:
            from tessera.infer import resolve_model
            state["model"], state["meta"] = resolve_model(checkpoint, preset)
        m = state["model"]
        out = embed_table(df, model=m, device=device, **embed_kwargs, **opts)
        width = int(out.attrs.get("tessera", {}).get("dims") or m.config.output_dim)
        x = out[embedding_columns(width)].to_numpy(np.float32)
        if "scale" in out.columns:  # int8 output: dequantise
            x = x * out["scale"].to_numpy(np.float32)[:, None]
        return out.iloc[:, 0].to_numpy(), x, out["flags"].to_numpy()

    embed.state = state  # type: ignore[attr-defined]  # the lazily loaded model, for callers
    return embed


@dataclasses.dataclass
class Embeddings:
    """Embeddings aligned with a table's samples; rows of samples not embedded are NaN."""

    x: np.ndarray  # (N, D) float
    flags: np.ndarray  # (N,) int, FLAG_* bits (0 when the embedding function gives none)
    seconds: float = 0.0

    @property
    def missing(self) -> np.ndarray:
        return ~np.isfinite(self.x).all(axis=1)


def embed_samples(table: EvalTable, embed_fn: EmbedFn) -> Embeddings:
    """Call `embed_fn` on the evaluation-year rows and align its output with `table.sample_ids`.
    Ids it does not know are an error; samples it skips get NaN rows (scored as errors)."""
    t0 = time.perf_counter()
    out = embed_fn(table.year_rows())
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise TypeError("the embedding function must return (sample_ids, array) or "
                        "(sample_ids, array, flags)")
    ids, x = np.asarray(out[0]), np.asarray(out[1], dtype=np.float64)
    flags = np.zeros(len(ids), np.int64) if len(out) == 2 else np.asarray(out[2], np.int64)
    if x.ndim != 2 or len(x) != len(ids) or len(flags) != len(ids):
        raise ValueError(f"embedding function: {len(ids)} ids, array {x.shape}, "
                         f"{len(flags)} flags")
    if len(pd.unique(ids)) != len(ids):
        raise ValueError("embedding function: repeated sample ids")
    pos = pd.Index(table.sample_ids).get_indexer(ids)
    if (pos < 0).any():
        raise ValueError(f"embedding function: unknown sample id {ids[pos < 0][0]!r}")
    aligned = np.full((len(table), x.shape[1]), np.nan)
    aligned[pos] = x
    aligned_flags = np.zeros(len(table), np.int64)
    aligned_flags[pos] = flags
    return Embeddings(aligned, aligned_flags, time.perf_counter() - t0)


def tile_raw_features(tile_dir: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """The raw-data baseline of a d-pixel tile folder: per pixel and calendar month, the median
    of each S2 band over its valid dates and of each S1 orbit's VV / VH over its dates (0 =
    no observation), month-major: float32 (H, W, 12 x (10 + 4)), NaN where a month has none.
    What a random forest on the raw time series sees, made regular for irregular dates (the
    tile's dates are day-of-year of its year). Computed month by month (memory: one month)."""
    import datetime as _dt
    import warnings

    from tessera.bands import S2_BANDS
    from tessera.dpixel import Tile

    t = Tile.open(tile_dir)
    h, w = t.shape
    year = t.recorded_year() or 2021

    def months(doys: np.ndarray) -> np.ndarray:
        base = _dt.date(int(year), 1, 1).toordinal() - 1
        return np.array([_dt.date.fromordinal(base + int(d)).month for d in doys], np.int64)

    s2m = months(np.asarray(t.doys))
    orbits = [(name, np.asarray(getattr(t, f"sar_{name}")),
               months(np.asarray(getattr(t, f"sar_{name}_doy")))) for name in ("ascending",
                                                                                "descending")]
    feats, names = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN months: NaN, as meant
        for m in range(1, 13):
            idx = np.flatnonzero(s2m == m)
            if idx.size:
                b = np.asarray(t.bands[idx], np.float32)
                b[~np.asarray(t.masks[idx], bool)] = np.nan
                med = np.nanmedian(b, axis=0)
            else:
                med = np.full((h, w, len(S2_BANDS)), np.nan, np.float32)
            feats.append(med)
            names += [f"m{m:02d}_{band}" for band in S2_BANDS]
            for name, arr, mm in orbits:
                idx = np.flatnonzero(mm == m)
                if idx.size:
                    s = np.asarray(arr[idx], np.float32)
                    s[(s == 0).all(axis=-1)] = np.nan
                    med = np.nanmedian(s, axis=0)
                else:
                    med = np.full((h, w, 2), np.nan, np.float32)
                feats.append(med)
                names += [f"m{m:02d}_{name}_VV", f"m{m:02d}_{name}_VH"]
    return np.concatenate(feats, axis=2).astype(np.float32), names
