"""Embedding a point table: `embed_table` (one output row per sample), `embed_points_file`
(file in, Parquet out) and `write_parquet`.

Why a module of its own: it is the only part of `tessera.table` that needs the model; it
imports `tessera.infer` (and so torch) inside the functions, so reading and preparing tables
stays light.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tessera import __version__
from tessera.atomic import atomic_path
from tessera.errors import InputError, TableError
from tessera.table.options import TableOptions, TableWarning, merge_options
from tessera.table.prepare import prepare_table
from tessera.table.read import PARQUET_SUFFIXES, read_table

if TYPE_CHECKING:
    from tessera.model import TesseraModel

#: Output columns besides the embedding.
FLAGS_COLUMN, N_S2_COLUMN, N_S1_COLUMN, SCALE_COLUMN = "flags", "n_s2_valid", "n_s1_valid", "scale"


def embedding_columns(latent: int) -> list[str]:
    return [f"emb_{i:03d}" for i in range(latent)]


def embed_table(df: pd.DataFrame | str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
                preset: str | None = None, options: TableOptions | None = None,
                sampling: str | None = None, seed: int = 0, batch_size: int | None = None,
                device: str = "auto", int8: bool = False, chunk_samples: int = 8192,
                model: TesseraModel | None = None, model_id: str | None = None,
                dim: int | None = None, precision: str = "fp32", engine: str = "torch",
                **option_kwargs: Any) -> pd.DataFrame:
    """Embed every sample of a long point table; one output row per sample, sorted by id.

    Table options come from `options` and/or keywords (`s2_scale=`, `s1_encoding=`, `nodata=`,
    `year=`, `fill_missing=`... see `TableOptions`). The model is `model` (a TesseraModel) if
    given, else `tessera.infer.resolve_model(checkpoint, model=model_id or preset)`; a random
    init is warned about. `dim`: a v2 student's Matryoshka width (16, 32, 64; default 128).
    `precision` and `engine`: see `tessera.infer.Embedder` (recorded in the summary).
    Samples are embedded `chunk_samples` at a time, so memory stays bounded. The result's
    `attrs["tessera"]` holds a summary (rows, observations, filled bands, model).
    """
    from tessera import infer
    from tessera.quantize import quantize

    t0 = time.perf_counter()
    opts = merge_options(options, option_kwargs)
    if chunk_samples < 1:
        raise InputError(f"chunk_samples {chunk_samples}: expected a positive number")
    if not isinstance(df, pd.DataFrame):
        df = read_table(df)
    prepared = prepare_table(df, opts)
    if model is None:
        model, meta = infer.resolve_model(checkpoint, model=model_id or preset)
    else:
        meta = {"preset": preset, "model_id": model_id, "given_model": True}
    if meta.get("random_init"):
        warnings.warn(f"{infer.RANDOM_INIT_WARNING} (model {meta.get('model_id')}, init seed "
                      f"{meta.get('init_seed')})", TableWarning, stacklevel=2)
    if meta.get("note"):
        warnings.warn(str(meta["note"]), TableWarning, stacklevel=2)
    embedder = infer.Embedder(model, device=device, batch_size=batch_size,
                              sampling=sampling,  # type: ignore[arg-type]  # Embedder checks it
                              seed=seed, dim=dim, precision=precision, engine=engine)
    n = len(prepared)
    latent = embedder.dim
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
        "model": infer.model_label(meta, model.config), "family": embedder.family,
        "dims": embedder.dim, "sampling": embedder.sampling, "seed": seed,
        "precision": embedder.precision_label, "engine": embedder.engine,
        "preset": meta.get("preset"),
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
    wide: bool = False  # the input was the WIDE WorldCereal layout, converted
    kept: tuple[str, ...] = ()  # input columns kept in the output (first row per sample)
    varying: dict[str, int] = dataclasses.field(default_factory=dict)  # kept column -> samples


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


def _id_column(options: TableOptions | None, kwargs: dict[str, Any]) -> str:
    """The table's sample id column (the one renamed to the id, if any)."""
    opts = merge_options(options, {k: v for k, v in kwargs.items()
                                   if k in {f.name for f in dataclasses.fields(TableOptions)}})
    return next((old for old, new in opts.rename.items() if new == opts.id_column),
                opts.id_column)


def kept_columns(df: pd.DataFrame, id_column: str, keep: Sequence[str], source: str = "<table>"
                 ) -> tuple[pd.DataFrame, dict[str, int]]:
    """(the `keep` columns per sample: the value of the sample's FIRST row, indexed by sample
    id; per kept column whose value varies within a sample, how many samples it varies in).
    A column the table lacks, or named like an output column, is a TableError."""
    reserved = {FLAGS_COLUMN, N_S2_COLUMN, N_S1_COLUMN, SCALE_COLUMN, id_column}
    for k in keep:
        if k in reserved or re.match(r"^emb_\d+$", str(k)):
            raise TableError(f"{source}: keep column {k!r}: the output has a column of that name "
                             "already")
        if k not in df.columns:
            shown = ", ".join(map(str, list(df.columns)[:12])) + (
                ", ..." if len(df.columns) > 12 else "")
            raise TableError(f"{source}: keep column {k!r}: the table has no such column "
                             f"(columns: {shown})")
    if id_column not in df.columns:
        raise TableError(f"{source}: no id column {id_column!r} to keep columns by")
    keep = list(dict.fromkeys(keep))
    first = df.drop_duplicates(id_column, keep="first").set_index(id_column)[keep]
    counts = df.groupby(id_column, sort=False)[keep].nunique(dropna=False)
    varying = {str(k): int((counts[k] > 1).sum()) for k in keep if (counts[k] > 1).any()}
    return first, varying


def embed_points_file(input: str | os.PathLike, output: str | os.PathLike, *,
                      keep: Sequence[str] = (), wide: bool = False,
                      table: pd.DataFrame | None = None, **kwargs: Any) -> PointsSummary:
    """Read a point table, embed it (`embed_table` keywords) and write Parquet atomically.

    `keep`: input columns carried into the output next to the sample id, one value per sample:
    its FIRST row's (a column whose value varies within a sample is warned about, naming how
    many samples). `wide`: the input is the WIDE WorldCereal layout (`tessera.table.wide`),
    converted by `wide_to_long` first (read it with `WORLDCEREAL_OPTIONS`). `table`: the input
    already read (by `read_table(input)`), so it is not read twice."""
    output = Path(output)
    if not output.name.lower().endswith(PARQUET_SUFFIXES):
        raise TableError(f"{output}: the output is Parquet; name it *.parquet")
    if Path(input).exists() and output.exists() and output.resolve() == Path(input).resolve():
        raise TableError(f"{output}: the output would overwrite the input table")
    t0 = time.perf_counter()
    df = read_table(input) if table is None else table
    id_column = _id_column(kwargs.get("options"), kwargs)
    if wide:
        from tessera.table.wide import wide_to_long
        df = wide_to_long(df, str(input), None if id_column == "sample_id" else id_column)
    keep = list(dict.fromkeys(keep))
    first, varying = (kept_columns(df, id_column, keep, str(input)) if keep
                      else (pd.DataFrame(), {}))
    for col, n in varying.items():
        warnings.warn(f"{input}: keep column {col!r} varies within {n} sample"
                      f"{'s' if n != 1 else ''}; the first row's value is kept", TableWarning,
                      stacklevel=2)
    result = embed_table(df, **kwargs)
    if keep:
        ids = result.columns[0]
        values = first.reindex(result[ids].to_numpy()).reset_index(drop=True)
        info = result.attrs.get("tessera")
        result = pd.concat([result[[ids]], values, result.drop(columns=[ids])], axis=1)
        if info is not None:
            result.attrs["tessera"] = {**info, "kept": keep}
    if wide:
        result.attrs.setdefault("tessera", {})["wide"] = True
    write_parquet(result, output)
    info = result.attrs["tessera"]
    return PointsSummary(output=output, samples=info["samples"], rows=info["rows"],
                         s2_observations=info["s2_observations"],
                         s1_observations=info["s1_observations"],
                         flagged_samples=info["flagged_samples"], filled_bands=info["filled_bands"],
                         random_init=info["random_init"],
                         seconds=round(time.perf_counter() - t0, 3), wide=bool(wide),
                         kept=tuple(keep), varying=varying)
