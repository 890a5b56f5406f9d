"""The `tessera` command line (typer + rich).

Bad input ends the command with a one-line `error: ...` on stderr and a non-zero exit code,
never a traceback; `TESSERA_DEBUG=1` shows the traceback for bug reports.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from tessera.cli_errors import console, fail, user_errors

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="TESSERA: pixel-wise Sentinel-1/2 embeddings - simulate, embed, inspect.")


def warn_random_init(meta: dict) -> None:
    from tessera.infer import RANDOM_INIT_WARNING
    if meta.get("random_init"):
        console.print(f"[bold yellow]warning:[/] {RANDOM_INIT_WARNING} "
                      f"(preset {meta.get('preset')}, init seed {meta.get('init_seed')})")


@app.command()
@user_errors
def embed(
    tile_dirs: List[Path] = typer.Argument(..., metavar="TILE_DIR...", help="Tile folder in "
                                           "the published layout; with --store one or more grid "
                                           "tiles (tile folders on the grid or `tessera "
                                           "preprocess --tile` output folders)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output folder."),
    store: Optional[Path] = typer.Option(None, help="Write into this store instead (published "
                                         "per-year layout + manifest); needs --year."),
    grid_tile: Optional[str] = typer.Option(None, help="With --store: the grid tile "
                                            "grid_{lon}_{lat} (default: the input's name)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint: ours (.safetensors + .json) "
                                              "or the published layout (.pt/.pth)."),
    preset: Optional[str] = typer.Option(None, help="Model preset (tiny, small, v1) when no "
                                         "checkpoint is given."),
    name: Optional[str] = typer.Option(None, help="Output name (default: the tile folder's)."),
    geotiff: bool = typer.Option(False, "--geotiff", help="Also write a GeoTIFF."),
    geotiff_dtype: str = typer.Option("float32", help="GeoTIFF encoding: float32 or int8 "
                                      "(int8 bands + a _scales.tif)."),
    batch_size: Optional[int] = typer.Option(None, help="Pixels per forward pass at 40 steps "
                                             "(default: 64 on CPU, 1024 on GPU)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
    sampling: str = typer.Option("all", help="all (deterministic, every valid observation) or "
                                 "v1 (published 40 + 40 seeded draws)."),
    seed: int = typer.Option(0, help="Seed of the v1 draws (and of a random init)."),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 autocast on GPU."),
    year: Optional[int] = typer.Option(None, help="Year recorded in the GeoTIFF tags."),
    keep_partial: bool = typer.Option(False, "--keep-partial", help="Keep the scale of pixels "
                                      "that lack only one sensor (default: NaN = no data)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Embed a tile folder to int8 embeddings + per-pixel scales (and optionally a GeoTIFF),
    or a grid tile into a store (--store)."""
    from tessera.infer import Embedder, embed_tile, resolve_model, shipped_checkpoint

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
        fail(f"{missing[0]}: not a tile folder (directory not found)" + (f" (and {len(missing) - 1} more)"
                                                     if len(missing) > 1 else ""))
    tile_dir = tile_dirs[0]
    if store is None:
        tile = Tile.open(tile_dir)  # bad input is reported before any model work
    model, meta = resolve_model(checkpoint, preset, seed=seed)
    embedder = Embedder(model, device=device, batch_size=batch_size, sampling=sampling,
                        seed=seed, bf16=bf16)
    warn_random_init(meta)
    if store is not None:
        from tessera.store.local import LocalStore
        from tessera.store.writer import embed_to_store, version_label

        weights = checkpoint if checkpoint is not None else (
            None if meta.get("random_init") else shipped_checkpoint())
        version = version_label(meta, weights)
        for i, src in enumerate(tile_dirs, 1):
            entry = embed_to_store(embedder, src, LocalStore(store), year, grid_tile,
                                   version=version, meta=meta, progress=progress,
                                   keep_partial=keep_partial)
            console.print(f"[{i}/{len(tile_dirs)}] wrote {entry.tile} {entry.year} into {store} "
                          f"({entry.height} x {entry.width} px, {entry.valid_pixels} with data, "
                          f"{entry.crs}; version {entry.version})", highlight=False)
        return
    out = embed_tile(embedder, tile, output, name, geotiff=geotiff_dtype if geotiff else None,
                     year=year, keep_partial=keep_partial, progress=progress, meta=meta)
    console.print(f"wrote {out.embeddings} (int8), {out.scales.name}, {out.flags.name}"
                  + "".join(f", {p.name}" for p in out.geotiffs))
    console.print(f"{out.n_pixels} pixels, {out.n_flagged} flagged (no valid S2 or S1 "
                  "observation), model preset "
                  f"{meta.get('preset')}{' (RANDOM INIT)' if meta.get('random_init') else ''}")


@app.command()
@user_errors
def simulate(
    out_dir: Path = typer.Argument(..., help="Tile folder to write."),
    size: int = typer.Option(256, help="Tile height and width in pixels."),
    seed: int = typer.Option(0),
    year: int = typer.Option(2022),
    grid_tile: Optional[str] = typer.Option(None, help="Place the tile on this grid tile's "
                                            "raster (grid_{lon}_{lat}; --size is ignored)."),
    resolution: float = typer.Option(10.0, help="Pixel size in metres (with --grid-tile, e.g. "
                                     "100 for a small test tile)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
) -> None:
    """Write a SIMULATED tile folder (synthetic fields, clouds, S1) in the published layout."""
    from tessera.simulate import SimConfig, simulate_tile

    if size < 1:
        fail(f"--size {size}: expected a positive number of pixels")
    if resolution <= 0:
        fail(f"--resolution {resolution}: expected a positive number of metres")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        fail(f"{out_dir}: exists and is not empty (use --overwrite)")
    cfg = SimConfig(height=size, width=size, seed=seed, year=year, resolution=resolution)
    if grid_tile is not None:
        from tessera.store.grid import parse_tile_name

        g = parse_tile_name(grid_tile).target_grid(resolution)
        cfg = SimConfig(height=g.height, width=g.width, seed=seed, year=year,
                        resolution=resolution, crs=g.crs.to_string(),
                        origin=(g.transform.c, g.transform.f))
    path = simulate_tile(out_dir, cfg)
    console.print(f"wrote SIMULATED tile {path} ({cfg.height} x {cfg.width} px at "
                  f"{resolution:g} m, {cfg.crs}, seed {seed}, year {year})")


@app.command()
@user_errors
def demo(
    out_dir: Path = typer.Argument(Path("demo_out"), help="Folder for the demo outputs."),
    size: int = typer.Option(256, help="SIMULATED tile height and width in pixels (the default "
                             "runs in well under 3 minutes on 2 CPU cores)."),
    seed: int = typer.Option(0, help="Seed of the simulation, a random init, the 1 % training "
                             "split and the head."),
    label_fraction: float = typer.Option(0.01, help="Share of the labelled pixels the head is "
                                         "trained on (stratified); it is scored on the rest."),
    random_init: bool = typer.Option(False, "--random-init", help="Ignore the shipped weights: "
                                     "the control run with a seeded random init."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """SIMULATED data end to end: simulate a tile, embed it (shipped weights, else a random
    init), PCA false-colour PNG, a logistic-regression head on 1 % of the labels, accuracy on
    the rest, class map PNG + GeoTIFF and a JSON summary (the README's demo)."""
    from tessera.demo import run_demo

    if size < 8:
        fail(f"--size {size}: expected at least 8 pixels")
    if not 0 < label_fraction < 1:
        fail(f"--label-fraction {label_fraction}: expected a number in (0, 1)")
    run_demo(out_dir, size=size, seed=seed, progress=progress, fraction=label_fraction,
             random_init=random_init,
             log=lambda m: console.print(m, highlight=False, markup=False))


@app.command()
def info() -> None:
    """Version, model presets and compute devices."""
    import torch
    from rich.table import Table

    from tessera import __version__
    from tessera.infer import shipped_checkpoint
    from tessera.model import PRESETS, TesseraModel

    out = Console()
    out.print(f"tessera-eo {__version__}  (torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads)")
    shipped = shipped_checkpoint()
    out.print(f"shipped weights: {shipped if shipped else 'none (random init until trained)'}")
    table = Table(title="presets")
    for col in ("preset", "d_model", "layers", "heads", "ffn", "parameters (no projector)"):
        table.add_column(col)
    with torch.device("meta"):
        for name, cfg in PRESETS.items():
            n = TesseraModel(cfg).num_parameters()
            table.add_row(name, str(cfg.d_model), str(cfg.n_layers), str(cfg.n_heads),
                          str(cfg.ffn_dim), f"{n / 1e6:.2f} M")
    out.print(table)
    devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                         for i in range(torch.cuda.device_count())]
    out.print("devices: " + ", ".join(devices))


def _register_commands() -> None:
    """Commands that live in their own modules."""
    from tessera import cli_points, cli_preprocess, cli_store, cli_train
    cli_points.register(app)
    cli_preprocess.register(app)
    cli_train.register(app)
    cli_store.register(app)


_register_commands()


def main() -> None:
    app(prog_name="tessera")


if __name__ == "__main__":
    sys.exit(main())
