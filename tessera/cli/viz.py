"""Picture commands: `tessera visualize` (PCA false colour of a region, one fit for all tiles)
and `tessera coverage` (which tiles a store holds). Light core: no model needed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from tessera.cli.common import (bbox_option, cache_option, command, dataset_version_option, out,
                                region_of,
                                region_option, store_option, tile_option, year_option)

if TYPE_CHECKING:
    from tessera.geo.region import RegionLike


@command
def visualize(
    store: str = store_option(),
    year: int = year_option(),
    output: Path = typer.Option(..., "-o", "--output", metavar="FILE", help="PNG of the region "
                                "mosaic."),
    bbox: Optional[str] = bbox_option(),
    region: Optional[Path] = region_option(),
    tile: Optional[list[str]] = tile_option(),
    geotiff: Optional[Path] = typer.Option(None, metavar="FILE", help="Also a georeferenced RGB "
                                           "GeoTIFF."),
    tiles_dir: Optional[Path] = typer.Option(None, metavar="DIR", help="Also one RGB GeoTIFF "
                                             "per tile, in its native UTM zone."),
    pca_from: Optional[Path] = typer.Option(None, metavar="FILE", help="Reuse a PCA fit (JSON) "
                                            "for the same colours as an earlier picture."),
    pca_out: Optional[Path] = typer.Option(None, metavar="FILE", help="Save the PCA fit as "
                                           "JSON."),
    stretch: str = typer.Option("percentile", metavar="STRETCH", help="percentile (2-98) or "
                                "histogram."),
    max_size: int = typer.Option(4096, metavar="PX", min=1, help="Longest side of the mosaic in "
                                 "pixels."),
    n_sample: int = typer.Option(100_000, metavar="N", help="Pixels sampled for the one PCA "
                                 "fit."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the PCA sample."),
    cache: Optional[Path] = cache_option(),
    dataset: Optional[str] = dataset_version_option(),
) -> None:
    """False colour of a region: PCA to RGB fitted once across all its tiles (no seams).

    A PNG mosaic in one UTM zone (+ a GeoTIFF, + per-tile GeoTIFFs in their own zones)."""
    from tessera import viz
    from tessera.store import open_store

    where: RegionLike = region_of(bbox, region, tile)
    if region is not None:
        from tessera.geo import Region
        where = Region.parse(where)
    st = open_store(store, cache_dir=cache, dataset_version=dataset)
    pca = viz.PcaRgb.load(pca_from) if pca_from else None
    res = viz.render_region(st, where, year, output, geotiff, pca=pca, max_size=max_size,
                            n_sample=n_sample, seed=seed, stretch=stretch)
    out.print(f"wrote {res.png}" + (f" and {res.tif}" if res.tif else "")
              + f" ({len(res.tiles)} tiles, {res.grid.width} x {res.grid.height} px, "
              f"{res.grid.crs.to_string()})")
    if tiles_dir is not None:
        done = viz.render_tiles(st, res.tiles, year, tiles_dir, pca=res.pca)
        out.print(f"wrote {len(done)} tile GeoTIFFs under {tiles_dir}")
    if pca_out is not None:
        out.print(f"wrote {res.pca.save(pca_out)}")


@command
def coverage(
    store: str = store_option(),
    png: Optional[Path] = typer.Option(None, "-o", "--output", metavar="FILE",
                                       help="Coverage map PNG."),
    cache: Optional[Path] = cache_option(),
    dataset: Optional[str] = dataset_version_option(),
) -> None:
    """Which tiles the store holds per year: a table, and a map with -o."""
    from tessera.store import open_store
    from tessera.viz import coverage_map, coverage_table

    man = open_store(store, cache_dir=cache, dataset_version=dataset).manifest()
    table = coverage_table(man)
    out.print(table.to_string(index=False) if len(table) else "the store is empty")
    if png is not None:
        out.print(f"wrote {coverage_map(man, png)}")
