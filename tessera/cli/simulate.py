"""`tessera simulate` (a SIMULATED tile folder) and `tessera demo` (simulate, embed, picture,
a head on 1 % of the labels, a class map: the README's demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tessera.cli.common import (Bars, command, fail, need, out, overwrite_option, progress_option,
                                threads_option)


@command
def simulate(
    out_dir: Path = typer.Argument(..., metavar="DIR", help="Tile folder to write."),
    size: int = typer.Option(256, metavar="PX", help="Tile height and width in pixels."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the simulation."),
    year: int = typer.Option(2022, metavar="YEAR", help="Year of the simulated dates."),
    grid_tile: Optional[str] = typer.Option(None, metavar="NAME", help="Place the tile on this "
                                            "grid tile's raster (grid_{lon}_{lat}; --size is "
                                            "ignored)."),
    resolution: float = typer.Option(10.0, metavar="M", help="Pixel size in metres (with "
                                     "--grid-tile, e.g. 100 for a small test tile)."),
    overwrite: bool = overwrite_option(),
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
        from tessera.geo import parse_tile_name

        g = parse_tile_name(grid_tile).target_grid(resolution)
        cfg = SimConfig(height=g.height, width=g.width, seed=seed, year=year,
                        resolution=resolution, crs=g.crs.to_string(),
                        origin=(g.transform.c, g.transform.f))
    path = simulate_tile(out_dir, cfg)
    out.print(f"wrote SIMULATED tile {path} ({cfg.height} x {cfg.width} px at "
              f"{resolution:g} m, {cfg.crs}, seed {seed}, year {year})")


@command
def demo(
    out_dir: Path = typer.Argument(Path("demo_out"), metavar="DIR", help="Folder for the demo "
                                   "outputs."),
    size: int = typer.Option(256, metavar="PX", help="SIMULATED tile height and width in pixels "
                             "(the default runs in well under 3 minutes on 2 CPU cores)."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the simulation, a random init, the "
                             "1 % training split and the head."),
    label_fraction: float = typer.Option(0.01, metavar="F", help="Share of the labelled pixels "
                                         "the head is trained on (stratified); it is scored on "
                                         "the rest."),
    random_init: bool = typer.Option(False, "--random-init", help="Ignore the shipped weights: "
                                     "the control run with a seeded random init."),
    threads: Optional[int] = threads_option(),
    progress: bool = progress_option(),
) -> None:
    """SIMULATED data end to end: simulate, embed, picture, a head on 1 % of the labels, a map.

    Simulates a tile, embeds it (shipped weights, else a random init), writes a PCA
    false-colour PNG, trains a logistic-regression head on 1 % of the labels, scores it on the
    rest and writes a class map PNG + GeoTIFF and a JSON summary (the README's demo)."""
    if size < 8:
        fail(f"--size {size}: expected at least 8 pixels")
    if not 0 < label_fraction < 1:
        fail(f"--label-fraction {label_fraction}: expected a number in (0, 1)")
    need("torch", "model", "tessera demo")
    need("sklearn", "eval", "tessera demo")
    from tessera.demo import run_demo
    from tessera.infer import use_threads

    use_threads(threads)
    with Bars(progress) as bars:
        run_demo(out_dir, size=size, seed=seed, progress=bars, fraction=label_fraction,
                 random_init=random_init, log=lambda m: out.print(m, markup=False))
