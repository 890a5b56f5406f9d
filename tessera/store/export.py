"""Exports of a region: one GeoTIFF mosaic in one CRS, the published per-tile GeoTIFFs, or a Zarr
v3 store with one group per UTM zone. All stream window by window (memory does not grow with
the region), are written under temporary names and renamed when complete, and say what is
absent (a MissingTilesWarning and tags / attributes), never skipping it silently.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tessera import geotiff
from tessera.errors import ClientError, ExistsError
from tessera.geo import Region, TargetGrid
from tessera.geo.crs import rio_crs
from tessera.geo.region import RegionLike
from tessera.store.layout import geotiff_relpath
from tessera.store.manifest import TileEntry
from tessera.store.mosaic import Mosaic
from tessera.store.results import DIM, TilesExport

if TYPE_CHECKING:
    from tessera.store.client import Client


def one_crs(r: Region) -> None:
    """Refuse a region that cannot be one mosaic in one CRS (one across the antimeridian)."""
    if r.crosses_antimeridian:
        raise ClientError(f"{r.name}: crosses the antimeridian; a mosaic needs one CRS, so "
                          "split the region at 180 degrees")

TIFF_BLOCK = geotiff.BLOCK  # pixels: GeoTIFF block and export window

# Zarr conventions followed by `export_zarr` (checked against the published texts):
#   geoemb: https://github.com/geo-embeddings/embeddings-zarr-convention (README.md and
#           examples/tessera_example.json: geoemb:type/dimensions/model/source_data/data_type/gsd/
#           spatial_layout "utm_zones" with groups named utm{NN}, geoemb:quantization
#           {method "per_pixel_scale", scale {type "array", array_name, nodata}})
#   proj:   https://github.com/zarr-experimental/geo-proj (proj:code, proj:wkt2)
#   spatial: https://github.com/zarr-conventions/spatial (spatial:dimensions, spatial:transform in
#           rasterio/GDAL affine order a b c d e f, spatial:shape, spatial:bbox
#           [xmin, ymin, xmax, ymax], spatial:registration)
ZARR_CONVENTIONS = {
    "geoemb:": {
        "schema_url": "https://raw.githubusercontent.com/geo-embeddings/embeddings-zarr-convention/"
                      "refs/tags/v1/schema.json",
        "spec_url": "https://github.com/geo-embeddings/embeddings-zarr-convention/blob/v1/README.md",
        "uuid": "61c12cc5-0e28-4056-999a-480cf3fb7e4c", "name": "geoemb:",
        "description": "Geoembeddings convention for geospatial embedding arrays with model "
                       "provenance"},
    "spatial:": {
        "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/"
                      "schema.json",
        "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
        "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4", "name": "spatial:",
        "description": "Spatial coordinate information"},
    "proj:": {
        "schema_url": "https://raw.githubusercontent.com/zarr-experimental/geo-proj/refs/tags/v1/"
                      "schema.json",
        "spec_url": "https://github.com/zarr-experimental/geo-proj/blob/v1/README.md",
        "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f", "name": "proj:",
        "description": "Coordinate reference system information for geospatial data"},
}
SOURCE_DATA = ["https://sentinel.esa.int/web/sentinel/missions/sentinel-1",
               "https://sentinel.esa.int/web/sentinel/missions/sentinel-2"]


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f"tessera-eo {version('tessera-eo')}"
    except PackageNotFoundError:
        return "tessera-eo (unknown version)"


def partial_path(path: Path) -> Path:
    """The resumable partial copy of a Zarr export, renamed onto `path` when complete (one per
    output path: concurrent exports to the same path are not supported)."""
    return path.with_name(f".{path.name}.partial")


def model_uri(present: Sequence[TileEntry]) -> str:
    """The `geoemb:model` of embeddings from these tiles (one model: clients refuse a year that
    mixes them): `urn:tessera:model:<id>` for a registered id (`tessera models`), e.g.
    urn:tessera:model:v1.1-mpc; a store written before models were recorded says so."""
    models = sorted({e.model for e in present})
    if models == [""]:
        versions = ",".join(sorted({e.version for e in present}))
        return f"urn:tessera:unrecorded:{versions}"
    return ",".join(f"urn:tessera:model:{m or 'unrecorded'}" for m in models)


def model_tags(present: Sequence[TileEntry]) -> dict[str, str]:
    """Model, width, weights and precision of the embeddings (GeoTIFF tags and Zarr
    attributes)."""
    return {"model": ",".join(sorted({e.model or "unrecorded" for e in present})),
            "dims": ",".join(sorted({str(e.dims) for e in present})),
            "weights": ",".join(sorted({e.weights or "unrecorded" for e in present})),
            "precision": ",".join(sorted({e.precision or "fp32" for e in present}))}


# --- GeoTIFF ------------------------------------------------------------------------------------

#: Folder layouts of the per-tile export; every file is `grid_{lon}_{lat}_{year}.tiff`, the name
#: torchgeo's `TesseraEmbeddings` (recursive glob `grid_*.tiff`, regex
#: `^grid_{lon}_{lat}_{YYYY}.tiff$`) and GeoTessera's tile reader (`tiles._parse_geotiff_filename`)
#: parse (docs/geotessera_layouts.md sections 4 and 5):
#:   tessera     {year}/grid_X_Y/grid_X_Y_{year}.tiff (the published layout)
#:   geotessera  global_0.1_degree_representation/{year}/grid_X_Y/grid_X_Y_{year}.tiff, as
#:               GeoTessera's region export writes it (its `tiles.tile_for_coord(out, ...)`
#:               then finds each tile)
#:   flat        grid_X_Y_{year}.tiff, all in the output folder
TILE_LAYOUTS = ("tessera", "geotessera", "flat")
#: GeoTessera's TESSERA_DESCRIPTION of a per-tile export.
GEOTESSERA_DESCRIPTION = "GeoTessera satellite embedding tile"


def tile_relpath(layout: str, year: int, tile: str) -> str:
    """The relative path of a tile's GeoTIFF in a per-tile export of `layout`."""
    from tessera.store.geotessera import EMBEDDINGS_DIR

    if layout == "tessera":
        return geotiff_relpath(year, tile)
    if layout == "geotessera":
        return f"{EMBEDDINGS_DIR}/{geotiff_relpath(year, tile)}"
    if layout == "flat":
        return f"{tile}_{int(year)}.tiff"
    raise ClientError(f"layout {layout!r}: expected one of {', '.join(TILE_LAYOUTS)}")


def tiff_tags(year: int, present: Sequence[TileEntry], absent: Sequence[str], dtype: str,
              bands: Sequence[int] | None = None, tile: TileEntry | None = None
              ) -> dict[str, str]:
    """The tags of an exported GeoTIFF: ours (TESSERA_VERSION, _MODEL, ..., the tiles present
    and absent), GeoTessera's (TESSERA_DATASET_VERSION, TESSERA_YEAR, TESSERA_DESCRIPTION,
    GEOTESSERA_VERSION naming this package as the writer, and for one `tile` its centre in
    TESSERA_TILE_LAT / _LON, "%.2f") and the band layout's (`geotiff.layout_tags`)."""
    m = model_tags(present)
    versions = ",".join(sorted({e.version for e in present}))
    dims = present[0].dims if present else DIM
    what = "tile" if tile is not None else "mosaic"
    description = (GEOTESSERA_DESCRIPTION if what == "tile" and dtype == "float32" else
                   f"TESSERA satellite embedding {what}" +
                   ("" if dtype == "float32" else ": int8 codes and a scale band, embedding "
                    "= codes * scale"))
    tags = {"TESSERA_VERSION": versions,
            "TESSERA_MODEL": m["model"], "TESSERA_DIMS": m["dims"],
            "TESSERA_WEIGHTS": m["weights"], "TESSERA_PRECISION": m["precision"],
            "TESSERA_MODEL_URI": model_uri(present),
            "TESSERA_YEAR": str(int(year)),
            "TESSERA_TILES": ",".join(e.tile for e in present),
            "TESSERA_TILES_ABSENT": ",".join(absent),
            "TESSERA_DATASET_VERSION": versions,
            "TESSERA_DESCRIPTION": description,
            "GEOTESSERA_VERSION": package_version()}
    if tile is not None:
        tags["TESSERA_TILE_LAT"] = f"{tile.lat:.2f}"
        tags["TESSERA_TILE_LON"] = f"{tile.lon:.2f}"
    tags.update(geotiff.layout_tags(dtype, range(dims) if bands is None else bands))
    return tags


def _check_dtype(dtype: str, what: str) -> None:
    if dtype not in geotiff.DTYPES:
        raise ClientError(f"{what}: dtype {dtype!r}, expected 'float32' or 'int8'")


def _bands(bands: str | Sequence[int] | None, present: Sequence[TileEntry]
           ) -> tuple[int, ...] | None:
    """`bands` checked against the width of the stored embeddings (before any tile is read)."""
    return geotiff.parse_bands(bands, min((int(e.dims) for e in present), default=DIM))


def _write_mosaic(path: Path, grid: TargetGrid, mos: Mosaic, dtype: str, tags: dict[str, str],
                  compress: str, bands: Sequence[int] | None = None) -> list[Path]:
    return geotiff.write_embeddings(path, crs=grid.crs, transform=grid.transform,
                                    width=grid.width, height=grid.height, dim=mos.dim,
                                    read=mos.read_if_touched, dtype=dtype, tags=tags,
                                    compress=compress, block=TIFF_BLOCK, bands=bands)


def export_geotiff(client: Client, region: RegionLike, year: int, path: str | os.PathLike,
                   dtype: str = "float32", crs: Any = None, resolution: float | None = None,
                   clip: bool = True, compress: str = geotiff.DEFAULT_COMPRESS,
                   overwrite: bool = False, bands: str | Sequence[int] | None = None) -> Path:
    """One tiled, compressed GeoTIFF of the region in one CRS (as `Client.read_region`), written
    window by window (constant memory) under a temporary name and renamed when complete.
    `bands`: embedding dimensions to write (default all; e.g. [0, 5, 127] or "0-15");
    `compress`: deflate, zstd, lzw or none. See `tessera.geotiff` for the bands, tags, nodata
    and the int8 layout (codes + a scale band in one file)."""
    _check_dtype(dtype, "export_geotiff")
    compress = geotiff.check_compress(compress)
    path = Path(path)
    if path.exists() and not overwrite:
        raise ExistsError(f"{path}: exists (overwrite=True replaces it)")
    one_crs(Region.parse(region))
    r, present, absent = client.present(region, year, "export_geotiff")
    sel = _bands(bands, present)
    grid = client.output_grid(r, present, crs, resolution)
    mos = Mosaic(client.tile_opener(), present, grid, clip)
    _write_mosaic(path, grid, mos, dtype, tiff_tags(year, present, absent, dtype, sel),
                  compress, sel)
    return path


def check_tiles_export(dtype: str, layout: str) -> None:
    """Refuse what a per-tile export cannot write: an unknown layout, and int8 files in the
    layouts made for GeoTessera and torchgeo (they read every band as an embedding value)."""
    _check_dtype(dtype, "export_tiles_geotiff")
    tile_relpath(layout, 2000, "grid_0.05_0.05")
    if dtype == "int8" and layout != "tessera":
        raise ClientError(f"int8 per-tile GeoTIFFs in the {layout} layout: GeoTessera and "
                          "torchgeo would read their codes and scale band as embeddings; "
                          "export float32 for them (int8 goes with layout 'tessera')")


def _existing_matches(p: Path, dtype: str, dims: int, sel: Sequence[int] | None) -> bool:
    """Whether the GeoTIFF at `p`, left by an earlier export, holds what this one would write
    (the same dtype and bands; files of earlier versions hold all the bands)."""
    import rasterio

    try:
        with rasterio.open(p) as src:
            tags, file_dtype = src.tags(), src.dtypes[0]
    except rasterio.errors.RasterioIOError as exc:
        raise ExistsError(f"{p}: exists but is not a readable GeoTIFF ({exc}); overwrite "
                          "(overwrite=True, --overwrite) replaces it") from None
    want = ",".join(map(str, range(dims) if sel is None else sel))
    have = tags.get("TESSERA_BANDS") or ",".join(map(str, range(dims)))
    return (tags.get("TESSERA_DTYPE") == dtype and have == want and file_dtype == "float32")


def export_tiles_geotiff(client: Client, region: RegionLike, year: int, out_dir: str | os.PathLike,
                         dtype: str = "float32", compress: str = geotiff.DEFAULT_COMPRESS,
                         bands: str | Sequence[int] | None = None, layout: str = "tessera",
                         overwrite: bool = False) -> TilesExport:
    """One GeoTIFF per tile under `out_dir`, each in its own UTM CRS and pixels, named
    `grid_{lon}_{lat}_{year}.tiff` in the folders of `layout` (`TILE_LAYOUTS`: "tessera", the
    published `{year}/grid_X_Y/`; "geotessera", the same under
    `global_0.1_degree_representation/`; "flat"), which torchgeo's `TesseraEmbeddings` and
    GeoTessera's tile reader load. Resumable: a tile whose file exists with the same dtype and
    bands is skipped (files appear only when complete), one with other settings is an
    ExistsError; `overwrite=True` rewrites them all."""
    check_tiles_export(dtype, layout)
    compress = geotiff.check_compress(compress)
    r, present, absent = client.present(region, year, "export_tiles_geotiff")
    sel = _bands(bands, present)
    out_dir = Path(out_dir)
    res = TilesExport([], [], list(absent))
    opener = client.tile_opener()
    for e in present:
        p = out_dir / tile_relpath(layout, year, e.tile)
        if p.exists() and not overwrite:
            if not _existing_matches(p, dtype, int(e.dims), sel):
                raise ExistsError(f"{p}: exists with another dtype or other bands than this "
                                  "export writes; choose another folder, or overwrite "
                                  "(overwrite=True, --overwrite)")
            res.skipped.append(p)
            continue
        grid = TargetGrid(rio_crs(e.crs), e.affine, e.width, e.height, None, e.tile)
        mos = Mosaic(opener, [e], grid, clip=False)
        _write_mosaic(p, grid, mos, dtype, tiff_tags(year, [e], [], dtype, sel, tile=e),
                      compress, sel)
        res.written.append(p)
    return res


# --- Zarr ---------------------------------------------------------------------------------------

def zone_grids(r: Region | None, present: Sequence[TileEntry], clip: bool
               ) -> list[tuple[str, TargetGrid, list[TileEntry]]]:
    """Per UTM zone of the tiles: (group name `utm31`, the zone's grid in EPSG:326{zone},
    its tiles); see `tessera.store.gtzarr.zone_grids`."""
    from tessera.store import gtzarr
    return gtzarr.zone_grids(r, present, clip)


def export_zarr(client: Client, region: RegionLike, year: int, path: str | os.PathLike,
                clip: bool = True, chunk: int | None = None, overwrite: bool = False) -> Path:
    """A Zarr store of the region in GeoTessera's Zarr layout (readable by geotessera's
    `GeoTesseraZarr`): one group per UTM zone (`utm31`, EPSG:326{zone}), `embeddings` int8
    (time, band, y, x) and `scales` float32 (time, y, x) with +inf = no data; `chunk` is the
    shard edge in pixels (a multiple of 32, default 1024). Resumable; see
    `tessera.store.gtzarr.write_zarr_store`."""
    from tessera.store import gtzarr
    return gtzarr.write_zarr_store(client, path, [year], region, clip=clip, shard=chunk,
                                   overwrite=overwrite, what="export_zarr")


__all__ = ["model_uri", "model_tags", "SOURCE_DATA", "TIFF_BLOCK", "ZARR_CONVENTIONS", "export_geotiff",
           "export_tiles_geotiff", "export_zarr", "package_version", "partial_path", "tiff_tags",
           "zone_grids", "TILE_LAYOUTS", "check_tiles_export", "tile_relpath"]
