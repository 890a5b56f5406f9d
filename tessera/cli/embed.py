"""`tessera embed` (tile folders to int8 embeddings, a GeoTIFF, or a store) and `tessera
embed-points` (a long point table to a Parquet table of embeddings). Both need the model extra."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

import typer

from tessera.cli.common import (Bars, command, fail, need, out, progress_option,
                                threads_option, warn)

SAMPLING_HELP = ("Default: the model's. v1.0-family models: all (deterministic, every valid "
                 "observation; default) or v1 (published 40 + 40 seeded draws). v1.1 and v2 "
                 "models use their published schemes (v1.1, v2).")
MODEL_HELP = ("Registered model id (`tessera models`): with --checkpoint it must fit the file "
              "(v1.1-aws selects the AWS statistics); without, the shipped weights or a random "
              "init of that architecture. --preset is its older name.")
DIM_HELP = "Embedding width: v2 students offer their Matryoshka prefixes 16, 32, 64 (default 128)."
BATCH_HELP = "Pixels per forward pass at 40 steps (default: 64 on CPU, 1024 on GPU)."
DEVICE_HELP = "auto, cpu, cuda, cuda:1 ..."
PRECISION_HELP = ("Encoder arithmetic: fp32 (exact, the published model; default), bf16 "
                  "(bfloat16 autocast, CPU or GPU) or int8 (dynamic int8 linear layers, CPU). "
                  "bf16 and int8 keep a per-pixel cosine >= 0.999 to fp32 and are recorded in "
                  "the outputs; a store year never mixes precisions.")
ENGINE_HELP = ("torch (default) or onnx: the encoders exported once per weights (cached in "
               "$TESSERA_ONNX_CACHE, default ~/.cache/tessera/onnx) and run by ONNX Runtime on "
               "CPU, at fp32 or int8; needs the onnx extra.")


def warn_random_init(meta: dict[str, Any]) -> None:
    from tessera.infer import RANDOM_INIT_WARNING
    if meta.get("random_init"):
        warn(f"{RANDOM_INIT_WARNING} (model {meta.get('model_id')}, init seed "
             f"{meta.get('init_seed')})")


def note_model(meta: dict[str, Any]) -> None:
    """Say what was assumed about a checkpoint (e.g. v1.1's MPC statistics) and what a
    published file carried that inference does not use."""
    if meta.get("note"):
        warn(str(meta["note"]))
    skipped = meta.get("skipped") or []
    if skipped:
        out.print(f"checkpoint: skipped {len(skipped)} training-only tensors "
                  f"({', '.join(sorted({k.split('.')[0] for k in skipped}))})")


@command
def embed(
    tile_dirs: list[Path] = typer.Argument(..., metavar="TILE_DIR...", help="Tile folder in "
                                           "the published layout; with --store one or more grid "
                                           "tiles (tile folders on the grid or `tessera "
                                           "preprocess --tile` output folders)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="DIR",
                                          help="Output folder."),
    store: Optional[Path] = typer.Option(None, "--store", metavar="STORE",
                                         help="Write into this store instead (published "
                                              "per-year layout + manifest); needs --year."),
    grid_tile: Optional[str] = typer.Option(None, metavar="NAME", help="With --store: the grid "
                                            "tile grid_{lon}_{lat} (default: the input's)."),
    checkpoint: Optional[Path] = typer.Option(None, metavar="FILE", help="Checkpoint: ours "
                                              "(.safetensors + .json) or the published layout "
                                              "(.pt/.pth)."),
    model: Optional[str] = typer.Option(None, "--model", "--preset", metavar="ID",
                                        help=MODEL_HELP),
    dim: Optional[int] = typer.Option(None, "--dim", metavar="K", help=DIM_HELP),
    name: Optional[str] = typer.Option(None, metavar="NAME", help="Output name (default: the "
                                       "tile folder's)."),
    geotiff: bool = typer.Option(False, "--geotiff", help="Also write a GeoTIFF."),
    geotiff_dtype: str = typer.Option("float32", metavar="DTYPE", help="GeoTIFF encoding: "
                                      "float32 or int8 (the int8 codes + a scale band, one file)."),
    batch_size: Optional[int] = typer.Option(None, metavar="N", help=BATCH_HELP),
    device: str = typer.Option("auto", metavar="DEVICE", help=DEVICE_HELP),
    sampling: Optional[str] = typer.Option(None, metavar="SCHEME", help=SAMPLING_HELP),
    seed: int = typer.Option(0, metavar="N", help="Seed of the v1 draws (and of a random init)."),
    precision: str = typer.Option("fp32", "--precision", metavar="P", help=PRECISION_HELP),
    engine: str = typer.Option("torch", "--engine", metavar="E", help=ENGINE_HELP),
    bf16: bool = typer.Option(False, "--bf16", help="Same as --precision bf16 (older name)."),
    year: Optional[int] = typer.Option(None, metavar="YEAR", help="Year of the data (GeoTIFF "
                                       "tags; the store's year). Default: the year the tile's "
                                       "preprocess.json or simulation.json records."),
    keep_partial: bool = typer.Option(False, "--keep-partial", help="Keep the scale of pixels "
                                      "that lack only one sensor (default: NaN = no data)."),
    threads: Optional[int] = threads_option(),
    progress: bool = progress_option(),
) -> None:
    """Embed tile folders: int8 embeddings + per-pixel scales (+ a GeoTIFF), or into a store.

    With -o: one tile folder to OUT/NAME.npy, NAME_scales.npy and NAME_flags.npy (and NAME.tif
    with --geotiff). With --store: grid tiles written into a store for --year."""
    from tessera.dpixel import Tile

    if geotiff_dtype not in ("float32", "int8"):
        fail(f"--geotiff-dtype {geotiff_dtype!r}: expected float32 or int8")
    if (output is None) == (store is None):
        fail("give exactly one of -o/--output (a folder) and --store (a store)")
    if store is not None and year is None:
        fail("--store needs --year (the store is laid out by year)")
    if store is None and len(tile_dirs) != 1:
        fail(f"{len(tile_dirs)} inputs with -o: give one tile folder (several go with --store)")
    if store is not None and grid_tile is not None and len(tile_dirs) != 1:
        fail("--grid-tile names one tile: give one input with it")
    missing = [str(d) for d in tile_dirs if not d.exists()]
    if missing:
        fail(f"{missing[0]}: not a tile folder (directory not found)"
             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    need("torch", "model", "tessera embed")
    from tessera.infer import (Embedder, embed_tile, model_label, resolve_model,
                               shipped_checkpoint, use_threads)

    tile = Tile.open(tile_dirs[0]) if store is None else None  # bad input before model work
    use_threads(threads)
    net, meta = resolve_model(checkpoint, seed=seed, model=model)
    embedder = Embedder(net, device=device, batch_size=batch_size,
                        sampling=sampling,  # type: ignore[arg-type]  # Embedder checks it
                        seed=seed, bf16=bf16, dim=dim, precision=precision, engine=engine)
    warn_random_init(meta)
    note_model(meta)
    if store is not None:
        from tessera.pipeline.embed_store import embed_to_store, provenance
        from tessera.store.local import LocalStore

        weights = checkpoint if checkpoint is not None else (
            None if meta.get("random_init") else shipped_checkpoint())
        version, model_id, weights_id = provenance(meta, weights)
        for i, src in enumerate(tile_dirs, 1):
            with Bars(progress) as bars:
                entry = embed_to_store(embedder, src, LocalStore(store), int(year or 0),
                                       grid_tile, version=version, progress=bars,
                                       keep_partial=keep_partial, model=model_id,
                                       weights=weights_id)
            out.print(f"[{i}/{len(tile_dirs)}] wrote {entry.tile} {entry.year} into {store} "
                      f"({entry.height} x {entry.width} px, {entry.valid_pixels} with data, "
                      f"{entry.crs}; version {entry.version})")
        return
    assert tile is not None and output is not None
    with Bars(progress) as bars:
        res = embed_tile(embedder, tile, output, name, geotiff=geotiff_dtype if geotiff else None,
                         year=year, keep_partial=keep_partial, progress=bars, meta=meta)
    out.print(f"wrote {res.embeddings} (int8), {res.scales.name}, {res.flags.name}"
              + "".join(f", {p.name}" for p in res.geotiffs))
    out.print(f"{res.n_pixels} pixels, {res.n_flagged} flagged (no valid S2 or S1 "
              f"observation), model {model_label(meta, net.config)}, {embedder.dim} dims, "
              f"sampling {embedder.sampling}, precision {embedder.precision_label}"
              f"{' (engine onnx)' if embedder.engine == 'onnx' else ''}"
              f"{' (RANDOM INIT)' if meta.get('random_init') else ''}")


def _parse_nodata(values: Optional[list[str]]) -> tuple[float, ...]:
    from tessera.errors import InputError

    found: list[float] = []
    for v in values or []:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                found.append(float(part))
            except ValueError:
                raise InputError(f"--nodata {part!r}: expected a number such as 65535") from None
    return tuple(found)


def _parse_rename(values: Optional[list[str]]) -> dict[str, str]:
    from tessera.errors import InputError

    found: dict[str, str] = {}
    for v in values or []:
        old, sep, new = v.partition("=")
        if not (sep and old and new):
            raise InputError(f"--rename {v!r}: expected OLD=NEW, e.g. --rename red=B04")
        found[old] = new
    return found


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    seen = set()
    for w in caught:
        text = " ".join(str(w.message).split())
        if text in seen or not issubclass(w.category, UserWarning):
            continue
        seen.add(text)
        warn(text)


@command
def embed_points(
    input: Path = typer.Argument(..., metavar="TABLE", help="Long table: CSV or (Geo)Parquet, "
                                 "one row per (sample_id, date), one column per band; or the "
                                 "WIDE WorldCereal layout (see --wide)."),
    output: Path = typer.Option(..., "-o", "--output", metavar="FILE",
                                help="Output Parquet file."),
    checkpoint: Optional[Path] = typer.Option(None, metavar="FILE", help="Model checkpoint."),
    model: Optional[str] = typer.Option(None, "--model", "--preset", metavar="ID",
                                        help=MODEL_HELP),
    dim: Optional[int] = typer.Option(None, "--dim", metavar="K", help=DIM_HELP),
    s2_scale: str = typer.Option("x10000", metavar="SCALE", help="S2 values: x10000 "
                                 "(reflectance x 10 000) or reflectance (float 0-1)."),
    s1_encoding: Optional[str] = typer.Option(None, metavar="ENCODING", help="S1 values: db "
                                              "(10 log10 power; the default), linear (power), "
                                              "int16 (TESSERA code) or amplitude (DN; the "
                                              "default of a wide table)."),
    s1_offset: Optional[float] = typer.Option(None, metavar="DB", help="With --s1-encoding "
                                              "amplitude: dB = 20 log10(DN) + offset (default "
                                              "-83, WorldCereal)."),
    nodata: Optional[list[str]] = typer.Option(None, metavar="VALUE", help="Band value meaning "
                                               "missing, e.g. 65535 (repeatable or "
                                               "comma-separated; a wide table's default: "
                                               "65535)."),
    rename: Optional[list[str]] = typer.Option(None, metavar="OLD=NEW", help="Read your column "
                                               "OLD as band NEW (repeatable)."),
    s2_pattern: Optional[str] = typer.Option(None, metavar="PATTERN", help="S2 column name "
                                             "pattern, e.g. 'S2-L2A-{band}' (a wide table's "
                                             "default)."),
    s1_pattern: Optional[str] = typer.Option(None, metavar="PATTERN", help="S1 column name "
                                             "pattern, e.g. 'S1-SIGMA0-{pol}' (a wide table's "
                                             "default)."),
    year: Optional[int] = typer.Option(None, metavar="YEAR", help="Keep the rows of this "
                                       "calendar year (needed when the dates span several "
                                       "years)."),
    fill_missing: Optional[bool] = typer.Option(None, "--fill-missing/--no-fill-missing",
                                                help="Fill absent or all-nodata S2 bands from "
                                                "their spectral neighbours "
                                                "(tessera.bands.FILL_RULES), with a warning "
                                                "(default: on for a wide table, else off)."),
    int8: bool = typer.Option(False, "--int8", help="Write int8 embeddings + a float32 scale "
                              "column instead of float32."),
    sampling: Optional[str] = typer.Option(None, metavar="SCHEME", help=SAMPLING_HELP),
    seed: int = typer.Option(0, metavar="N", help="Seed of the v1 draws."),
    batch_size: Optional[int] = typer.Option(None, metavar="N", help=BATCH_HELP),
    device: str = typer.Option("auto", metavar="DEVICE", help=DEVICE_HELP),
    precision: str = typer.Option("fp32", "--precision", metavar="P", help=PRECISION_HELP),
    engine: str = typer.Option("torch", "--engine", metavar="E", help=ENGINE_HELP),
    id_column: str = typer.Option("sample_id", metavar="COLUMN", help="Sample id column."),
    date_column: Optional[str] = typer.Option(None, metavar="COLUMN", help="Date column "
                                              "(default: date, timestamp or time)."),
    keep: Optional[list[str]] = typer.Option(None, "--keep", metavar="COL,COL,...",
                                             help="Input columns to carry into the output "
                                             "next to the sample id (labels, lon, lat...; "
                                             "repeatable or comma-separated). One value per "
                                             "sample: its FIRST row's (a column that varies "
                                             "within a sample is warned about)."),
    wide: bool = typer.Option(False, "--wide", help="The input is the WIDE WorldCereal "
                              "layout (one row per sample, columns like OPTICAL-B02-ts0-10m, "
                              "a start_date), converted to the long one; its defaults: "
                              "--s2-pattern S2-L2A-{band} --s1-pattern S1-SIGMA0-{pol} "
                              "--s1-encoding amplitude --nodata 65535 --fill-missing. A table "
                              "without a date column and with such columns is detected as "
                              "wide without it."),
    threads: Optional[int] = threads_option(),
) -> None:
    """Embed point samples of a long (or WIDE WorldCereal) table to a Parquet table.

    One row per sample in the output: sample id, the --keep columns, emb_000..emb_127, flags,
    and the counts of valid S2 / S1 observations."""
    need("torch", "model", "tessera embed-points")
    from tessera.infer import use_threads
    from tessera.table import TableOptions, embed_points_file, read_table
    from tessera.table.wide import WORLDCEREAL_OPTIONS, is_wide

    kept = [k.strip() for v in (keep or []) for k in str(v).split(",") if k.strip()]
    table = read_table(input)
    detected = not wide and is_wide(table)
    if detected:
        out.print(f"{input}: read as the WIDE WorldCereal layout (band columns like "
                  "OPTICAL-B02-ts0-10m, no date column), as with --wide")
    as_wide = wide or detected
    wc: dict[str, Any] = dict(WORLDCEREAL_OPTIONS) if as_wide else {}
    use_threads(threads)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opts = TableOptions(
                s2_scale=s2_scale,
                s1_encoding=s1_encoding or wc.get("s1_encoding", "db"),
                s1_offset=s1_offset,
                nodata=_parse_nodata(nodata) if nodata else tuple(wc.get("nodata", ())),
                rename=_parse_rename(rename),
                s2_pattern=s2_pattern or wc.get("s2_pattern"),
                s1_pattern=s1_pattern or wc.get("s1_pattern"), year=year,
                fill_missing=(bool(wc.get("fill_missing", False)) if fill_missing is None
                              else fill_missing),
                id_column=id_column, date_column=date_column)
            summary = embed_points_file(
                input, output, keep=kept, wide=as_wide, table=table, checkpoint=checkpoint,
                model_id=model, options=opts, sampling=sampling, seed=seed,
                batch_size=batch_size, device=device, int8=int8, dim=dim,
                precision=precision, engine=engine)
    finally:
        _print_warnings(caught)
    flagged = summary.flagged_samples
    out.print(f"embed-points: {summary.samples} samples from {summary.rows} rows "
              f"({summary.s2_observations} S2 + {summary.s1_observations} S1 observations); "
              f"{flagged} flagged sample{'s' if flagged != 1 else ''} (no valid S2 or S1); "
              f"{summary.seconds:.1f} s")
    if summary.kept:
        out.print(f"kept {', '.join(summary.kept)} (the first row's value per sample)")
    out.print(f"wrote {summary.output}")
