"""`tessera preprocess`: Sentinel-1/2 rasters (files, STAC, netCDF) to d-pixel tile folders."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from tessera.cli.common import (Bars, bbox_option, command, err, fail, need, out,
                                progress_option, region_option, warn)

if TYPE_CHECKING:
    from tessera.geo import TargetGrid
    from tessera.preprocess.acquisition import Source


class _ConsoleWarnings(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        warn(record.getMessage())


def _grid(bbox: Optional[str], region: Optional[Path], tile: Optional[str], source: Source
          ) -> TargetGrid:
    from tessera.geo import TargetGrid, parse_bbox

    given = [x is not None for x in (bbox, region, tile)]
    if sum(given) > 1:
        fail("give only one of --bbox, --region and --tile")
    if bbox is not None:
        return TargetGrid.from_bbox(*parse_bbox(bbox))
    if region is not None:
        return TargetGrid.from_file(region)
    if tile is not None:
        return TargetGrid.from_tile_name(tile)
    if hasattr(source, "native_grid"):
        return source.native_grid()
    fail("give the region: --bbox west,south,east,north, --region polygon.geojson|.gpkg or "
         "--tile grid_{lon}_{lat}")


def _bands(text: Optional[str]) -> Optional[tuple[str, ...]]:
    return tuple(b.strip() for b in text.split(",") if b.strip()) if text else None


# --- the source options, shared with `tessera run` ---

def s2_option() -> Any:
    return typer.Option(None, metavar="TEMPLATE", help="files: S2 filename "
                        "template, e.g. 'data/S2_{granule}_{date}_{band}.tif'.")


def s1_option() -> Any:
    return typer.Option(None, metavar="TEMPLATE", help="files: S1 filename "
                        "template, e.g. 'data/S1_{orbit}_{date}_{band}.tif'.")


def s2_band_order_option() -> Any:
    return typer.Option(None, metavar="BANDS", help="files: band names "
                        "of multi-band S2 files, comma-separated.")


def s1_band_order_option() -> Any:
    return typer.Option(None, metavar="BANDS", help="files: band names "
                        "of multi-band S1 files, e.g. VV,VH.")


def s1_units_option() -> Any:
    return typer.Option("linear", metavar="UNITS", help="files: S1 values as linear "
                        "(power), db or int16 (TESSERA code).")


def s1_orbit_option() -> Any:
    return typer.Option(None, metavar="ORBIT", help="files: orbit of all S1 "
                        "files when the template has no {orbit}.")


def stac_url_option() -> Any:
    return typer.Option(None, metavar="URL", help="stac: STAC API root or "
                        "static catalog.json (path or URL).")


def s2_collection_option() -> Any:
    return typer.Option("sentinel-2-l2a", metavar="NAME", help="stac: S2 L2A "
                        "collection.")


def s1_collection_option() -> Any:
    return typer.Option("sentinel-1-rtc", metavar="NAME", help="stac: S1 RTC "
                        "collection ('' for none).")


def netcdf_option() -> Any:
    return typer.Option(None, metavar="DIR", help="netcdf: a patch folder of "
                        ".nc cubes (the region defaults to the cube's grid).")


def build_source(source: str, s2: Optional[str], s1: Optional[str], s2_band_order: Optional[str],
                 s1_band_order: Optional[str], s1_units: str, s1_orbit: Optional[str],
                 stac_url: Optional[str], s2_collection: str, s1_collection: str,
                 netcdf: Optional[Path], command: str = "tessera preprocess") -> Source:
    """The acquisitions' source from the source options (shared by `preprocess` and `run`)."""
    src: Source
    if source == "files":
        from tessera.preprocess.sources.files import FilesSource
        src = FilesSource(s2=s2, s1=s1, s2_band_order=_bands(s2_band_order),
                          s1_band_order=_bands(s1_band_order),
                          s1_units=s1_units,  # type: ignore[arg-type]
                          s1_orbit=s1_orbit)
    elif source == "stac":
        if not stac_url:
            fail("--source stac needs --stac-url (a STAC API root or a catalog.json)")
        need("pystac_client", "preprocess", f"{command} --source stac")
        from tessera.preprocess.sources.stac import StacSource
        src = StacSource(stac_url, s2_collection=s2_collection or None,
                         s1_collection=s1_collection or None)
    elif source == "netcdf":
        if netcdf is None:
            fail("--source netcdf needs --netcdf FOLDER (a patch folder of .nc cubes)")
        need("xarray", "preprocess", f"{command} --source netcdf")
        from tessera.preprocess.sources.netcdf import NetcdfSource
        src = NetcdfSource(netcdf)
    else:
        fail(f"--source {source!r}: expected files, stac or netcdf")
    return src


@command
def preprocess(
    source: str = typer.Option(..., metavar="SOURCE", help="files, stac or netcdf."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="DIR",
                                          help="Output folder (one tile folder per patch)."),
    year: int = typer.Option(..., metavar="YEAR", help="Calendar year of the acquisitions."),
    bbox: Optional[str] = bbox_option(),
    region: Optional[Path] = region_option(),
    tile: Optional[str] = typer.Option(None, "--tile", metavar="NAME",
                                       help="Region: a 0.1 degree grid tile grid_{lon}_{lat}."),
    s2: Optional[str] = s2_option(),
    s1: Optional[str] = s1_option(),
    s2_band_order: Optional[str] = s2_band_order_option(),
    s1_band_order: Optional[str] = s1_band_order_option(),
    s1_units: str = s1_units_option(),
    s1_orbit: Optional[str] = s1_orbit_option(),
    stac_url: Optional[str] = stac_url_option(),
    s2_collection: str = s2_collection_option(),
    s1_collection: str = s1_collection_option(),
    netcdf: Optional[Path] = netcdf_option(),
    patch_size: int = typer.Option(500, metavar="PX", help="Patch side in pixels."),
    resampling_10m: str = typer.Option("nearest", metavar="METHOD", help="10 m bands: nearest "
                                       "or bilinear."),
    resampling_20m: str = typer.Option("bilinear", metavar="METHOD", help="20 m bands."),
    resampling_s1: str = typer.Option("bilinear", metavar="METHOD", help="Sentinel-1."),
    boa_offset: str = typer.Option("auto", metavar="RULE", help="auto (from metadata or date), "
                                   "subtract, keep."),
    on_conflict: str = typer.Option("warn", metavar="RULE", help="Overlapping granules of one "
                                    "date that disagree: warn (first wins), error, ignore."),
    workers: Optional[int] = typer.Option(None, metavar="N", min=1, help="Threads (default: "
                                          "the CPUs this process may use)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo finished patches."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and stop."),
    progress: bool = progress_option(),
) -> None:
    """Turn Sentinel-1/2 acquisitions into d-pixel tile folders (one per patch)."""
    need("dask", "preprocess", "tessera preprocess")
    from tessera.cpus import available_cpus
    from tessera.preprocess import ComposeOptions, plan as make_plan, run

    log = logging.getLogger("tessera.preprocess")
    if not any(isinstance(h, _ConsoleWarnings) for h in log.handlers):
        log.addHandler(_ConsoleWarnings(logging.WARNING))
        log.propagate = False
    # boa_offset / on_conflict / s1_units: any text here; the constructors check it and name
    # the choices in their error
    opts = ComposeOptions(resampling_10m, resampling_20m, resampling_s1,
                          boa_offset,  # type: ignore[arg-type]
                          on_conflict)  # type: ignore[arg-type]
    src = build_source(source, s2, s1, s2_band_order, s1_band_order, s1_units, s1_orbit, stac_url,
                       s2_collection, s1_collection, netcdf)
    grid = _grid(bbox, region, tile, src)
    if output is None and not dry_run:
        fail("give the output folder: -o DIR (or --dry-run)")
    with err.status("searching acquisitions") if progress else contextlib.nullcontext():
        p = make_plan(src, grid, year, patch_size)
    for line in p.describe():
        out.print(line)
    if dry_run:
        return
    assert output is not None
    with Bars(progress) as bars:
        report = run(p, output, opts, workers=workers or available_cpus(), overwrite=overwrite,
                     progress=bars)
    out.print(f"wrote {len(report.written)} patch(es), skipped {len(report.skipped)} already "
              f"finished, to {report.out_dir}"
              + (f"; {report.conflicts} overlap conflict(s), see the sidecars"
                 if report.conflicts else ""))
