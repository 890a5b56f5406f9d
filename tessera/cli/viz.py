"""Picture commands: `tessera visualize` (PCA false colour of a store's region, one fit for all
tiles, or of embedding files: GeoTIFFs, .npy tiles, Zarr) and `tessera coverage` (which tiles a
store holds: a table, a map and a JSON document). Light core: no model needed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from tessera.cli.common import (Bars, bbox_option, cache_option, command, dataset_version_option,
                                fail, out, progress_option, region_of, region_option,
                                tile_option)

if TYPE_CHECKING:
    from tessera.geo.region import RegionLike

#: Files that make a folder a store (tessera's, GeoTessera's registries and mirrors).
_STORE_FILES = ("manifest.parquet", "registry.parquet")


def _is_store_dir(path: Path) -> bool:
    from tessera.viz.sources import is_zarr

    return path.is_dir() and not is_zarr(path) and (
        any((path / f).is_file() for f in _STORE_FILES)
        or any((path / "npy").glob("*/manifest.parquet")))


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given on the command line (not by default or environment)."""
    src = ctx.get_parameter_source(name)
    return getattr(src, "name", "") == "COMMANDLINE"


def _crop_of(bbox: str | None, region: Path | None, tiles: list[str] | None
             ) -> tuple[float, float, float, float] | None:
    """The lon/lat box that --bbox, --region (its bounds) or --tile (its cells) give, for
    cropping files."""
    if not (bbox or region or tiles):
        return None
    where = region_of(bbox, region, tiles)
    if isinstance(where, tuple):
        w, s, e, n = map(float, where)
        return (w, s, e, n)
    if isinstance(where, Path):
        from tessera.geo import Region
        w, s, e, n = Region.parse(where).geometry.bounds
        return (float(w), float(s), float(e), float(n))
    from tessera.geo import parse_tile_name
    cells = [parse_tile_name(t).bounds for t in where]
    return (min(c[0] for c in cells), min(c[1] for c in cells), max(c[2] for c in cells),
            max(c[3] for c in cells))


@command
def visualize(
    ctx: typer.Context,
    inputs: Optional[list[Path]] = typer.Argument(
        None, metavar="INPUT...", show_default=False,
        help="Embedding files instead of a store: GeoTIFFs (float, or int8 with scales), "
             "grid_X_Y.npy tiles (with their _scales.npy), Zarr stores (GeoTessera's or "
             "tessera's), or folders of them. A store folder here is read as --store."),
    output: Path = typer.Option(..., "-o", "--output", metavar="FILE", help="PNG of the region "
                                "mosaic (transparent where there is no data)."),
    store: Optional[str] = typer.Option(None, "--store", "-s", envvar="TESSERA_STORE",
                                        metavar="STORE", help="Store: a directory or an "
                                        "http(s):// URL; default $TESSERA_STORE (unless INPUT "
                                        "files are given)."),
    year: Optional[int] = typer.Option(None, "--year", metavar="YEAR", help="Calendar year "
                                       "(needed with a store, and for a Zarr of several "
                                       "years)."),
    bbox: Optional[str] = bbox_option(),
    region: Optional[Path] = region_option(),
    tile: Optional[list[str]] = tile_option(),
    landmask: Optional[Path] = typer.Option(None, metavar="FILE|DIR", help="Landmask GeoTIFF "
                                            "(or a folder of grid_X_Y.tiff) that georeferences "
                                            ".npy tiles; default: found where GeoTessera and "
                                            "tessera keep it, else a plain PNG."),
    geotiff: Optional[Path] = typer.Option(None, metavar="FILE", help="Also a georeferenced RGB "
                                           "GeoTIFF."),
    tiles_dir: Optional[Path] = typer.Option(None, metavar="DIR", help="Also one RGB GeoTIFF "
                                             "per tile, in its native UTM zone (stores only)."),
    pca_from: Optional[Path] = typer.Option(None, metavar="FILE", help="Reuse a PCA fit (JSON) "
                                            "for the same colours as an earlier picture."),
    pca_out: Optional[Path] = typer.Option(None, metavar="FILE", help="Save the PCA fit as "
                                           "JSON."),
    balance: str = typer.Option("percentile", metavar="BALANCE", help="Colour balance: "
                                "percentile (2-98 % stretch per channel), histogram (equalised "
                                "per channel), adaptive (percentile, then local CLAHE-like "
                                "equalisation of the picture)."),
    stretch: Optional[str] = typer.Option(None, hidden=True, help="Old name of --balance."),
    crs: Optional[str] = typer.Option(None, metavar="CRS", help="Reproject the picture, e.g. "
                                      "EPSG:3857 for web maps (the PNG gets a .pgw world file "
                                      "and .aux.xml; the GeoTIFF is in that CRS)."),
    world_file: bool = typer.Option(False, "--world-file", help="A world file (.pgw) and "
                                    ".aux.xml beside the PNG (implied by --crs)."),
    max_size: int = typer.Option(4096, metavar="PX", min=1, help="Longest side of the mosaic in "
                                 "pixels."),
    n_sample: int = typer.Option(100_000, metavar="N", help="Pixels sampled for the one PCA "
                                 "fit."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the PCA sample."),
    cache: Optional[Path] = cache_option(),
    dataset: Optional[str] = dataset_version_option(),
    progress: bool = progress_option(),
) -> None:
    """False colour of embeddings: PCA to RGB fitted once across all tiles or files (no seams).

    From a store (--store, a region and --year): a PNG mosaic in one UTM zone (+ a GeoTIFF,
    + per-tile GeoTIFFs in their own zones). From files (INPUT...): each on its own grid, or
    several mosaicked; --bbox / --region / --tile crop them. No-data pixels (NaN embeddings,
    NaN or infinite scales) are transparent and never enter the fit."""
    from tessera import viz
    from tessera.viz.balance import check_balance

    if stretch is not None:
        if _given(ctx, "balance"):
            fail("give --balance or its old name --stretch, not both")
        balance = stretch
    check_balance(balance)
    files = list(inputs or [])
    if len(files) == 1 and _is_store_dir(files[0]):
        if _given(ctx, "store"):
            fail(f"{files[0]} is a store; give it as INPUT or --store, not both")
        store, files = str(files[0]), []
    from tessera.store.gtzarr import is_zarr_store

    zarr_store = not files and bool(store) and is_zarr_store(str(store))
    if zarr_store:  # GeoTessera's Zarr store, read lazily like a Zarr INPUT
        if year is None:
            fail("--year is needed with a store")
        files = [Path(str(store))]
    if files:
        if _given(ctx, "store") and not zarr_store:
            fail("give INPUT files or --store, not both")
        if tiles_dir is not None:
            fail("--tiles-dir writes a store's tiles; with INPUT files use --geotiff")
        with Bars(enabled=progress) as bars:
            res = viz.render_files(files, output, geotiff, year=year, landmask=landmask,
                                   bbox=_crop_of(bbox, region, tile), pca=pca_from,
                                   balance=balance, crs=crs, world_file=world_file,
                                   max_size=max_size, n_sample=n_sample, seed=seed,
                                   progress=bars)
        where = res.grid.crs.to_string() if res.grid is not None else "not georeferenced"
        out.print(f"wrote {res.png}" + (f" and {res.tif}" if res.tif else "")
                  + "".join(f", {p}" for p in res.sidecars)
                  + f" ({len(res.inputs)} input(s), {res.width} x {res.height} px, {where})")
        if pca_out is not None:
            out.print(f"wrote {res.pca.save(pca_out)}")
        return
    if not store:
        fail("give INPUT files, or --store (or $TESSERA_STORE) with a region and --year")
    if year is None:
        fail("--year is needed with a store")
    if landmask is not None:
        fail("--landmask georeferences .npy INPUT files; a store has its own georeferencing")
    from tessera.store import open_store

    where_: RegionLike = region_of(bbox, region, tile)
    if region is not None:
        from tessera.geo import Region
        where_ = Region.parse(where_)
    st = open_store(store, cache_dir=cache, dataset_version=dataset)
    pca = viz.PcaRgb.load(pca_from) if pca_from else None
    with Bars(enabled=progress) as bars:
        reg = viz.render_region(st, where_, year, output, geotiff, pca=pca, max_size=max_size,
                                n_sample=n_sample, seed=seed, balance=balance, crs=crs,
                                world_file=world_file, progress=bars)
    out.print(f"wrote {reg.png}" + (f" and {reg.tif}" if reg.tif else "")
              + "".join(f", {p}" for p in reg.sidecars)
              + f" ({len(reg.tiles)} tiles, {reg.grid.width} x {reg.grid.height} px, "
              f"{reg.grid.crs.to_string()})")
    if tiles_dir is not None:
        done = viz.render_tiles(st, reg.tiles, year, tiles_dir, pca=reg.pca)
        out.print(f"wrote {len(done)} tile GeoTIFFs under {tiles_dir}")
    if pca_out is not None:
        out.print(f"wrote {reg.pca.save(pca_out)}")


def _years_of(man: Any, years: list[int] | None) -> Any:
    """The manifest restricted to `years` (all when None); absent years are an error."""
    if not years:
        return man
    from tessera.errors import VizError

    absent = sorted({int(y) for y in years} - set(man.years()))
    if absent:
        raise VizError(f"year(s) {', '.join(map(str, absent))} not in the store (it has "
                       f"{', '.join(map(str, man.years())) or 'none'})")
    return man.query(year=sorted({int(y) for y in years}))


@command
def coverage(
    store: str = typer.Option(..., "--store", "-s", envvar="TESSERA_STORE", metavar="STORE",
                              help="Store: a directory or an http(s):// URL (`tessera serve`); "
                                   "default $TESSERA_STORE."),
    png: Optional[Path] = typer.Option(None, "-o", "--output", metavar="FILE",
                                       help="Coverage map PNG; its JSON goes beside it (x.png "
                                            "-> x.json). A .json name writes the JSON only."),
    json_out: Optional[Path] = typer.Option(None, "--json", metavar="FILE", help="Coverage JSON "
                                            "here (tiles per year with lon/lat, counts, models, "
                                            "bbox; schema in tessera.viz.coverage)."),
    year: Optional[list[int]] = typer.Option(None, "--year", metavar="YEAR",
                                             help="Only this year (repeatable)."),
    cache: Optional[Path] = cache_option(),
    dataset: Optional[str] = dataset_version_option(),
) -> None:
    """Which tiles the store holds per year: a table; a map and a JSON document with -o."""
    from tessera.store import open_store
    from tessera.viz import coverage_json_path, coverage_map, coverage_table, write_coverage_json

    st = open_store(store, cache_dir=cache, dataset_version=dataset)
    man = _years_of(st.manifest(), year)
    table = coverage_table(man)
    out.print(table.to_string(index=False) if len(table) else "the store is empty")
    if png is not None and png.suffix.lower() == ".json" and json_out is None:
        png, json_out = None, png
    if png is not None:
        out.print(f"wrote {coverage_map(man, png)}")
        if json_out is None:
            json_out = coverage_json_path(png)
    if json_out is not None:
        out.print(f"wrote {write_coverage_json(man, json_out, store=st.describe())}")
