"""Exports of a region: one GeoTIFF mosaic in one CRS, the published per-tile GeoTIFFs, or a Zarr
v3 store with one group per UTM zone. All stream window by window (memory does not grow with
the region), are written under temporary names and renamed when complete, and say what is
absent (a MissingTilesWarning and tags / attributes), never skipping it silently.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tessera import geotiff
from tessera.errors import ClientError, ExistsError, WriteError
from tessera.geo import Region, TargetGrid, parse_tile_name
from tessera.geo.crs import crs_key, rio_crs
from tessera.geo.region import RegionLike
from tessera.errors import human_bytes
from tessera.geotiff import INT8_NODATA
from tessera.store import mosaic
from tessera.store.layout import geotiff_relpath
from tessera.store.manifest import TileEntry
from tessera.store.mosaic import Mosaic
from tessera.store.results import TilesExport

if TYPE_CHECKING:
    import zarr

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
    """Model, width and weights of the embeddings (GeoTIFF tags and Zarr attributes)."""
    return {"model": ",".join(sorted({e.model or "unrecorded" for e in present})),
            "dims": ",".join(sorted({str(e.dims) for e in present})),
            "weights": ",".join(sorted({e.weights or "unrecorded" for e in present}))}


# --- GeoTIFF ------------------------------------------------------------------------------------

def tiff_tags(year: int, present: Sequence[TileEntry], absent: Sequence[str], dtype: str
              ) -> dict[str, str]:
    """The TESSERA_* tags of an exported GeoTIFF: versions, year, tiles present and absent."""
    m = model_tags(present)
    tags = {"TESSERA_VERSION": ",".join(sorted({e.version for e in present})),
            "TESSERA_MODEL": m["model"], "TESSERA_DIMS": m["dims"],
            "TESSERA_WEIGHTS": m["weights"], "TESSERA_MODEL_URI": model_uri(present),
            "TESSERA_YEAR": str(int(year)),
            "TESSERA_TILES": ",".join(e.tile for e in present),
            "TESSERA_TILES_ABSENT": ",".join(absent),
            "TESSERA_DTYPE": dtype}
    tags["TESSERA_VALUES"] = ("dequantised embeddings q * s; NaN = no data" if dtype == "float32"
                              else "int8 codes q, e = q * s with s in the _scales.tif file; "
                                   f"{INT8_NODATA} = no data")
    return tags


def _check_dtype(dtype: str, what: str) -> None:
    if dtype not in geotiff.DTYPES:
        raise ClientError(f"{what}: dtype {dtype!r}, expected 'float32' or 'int8'")


def _write_mosaic(path: Path, grid: TargetGrid, mos: Mosaic, dtype: str, tags: dict[str, str],
                  compress: str) -> list[Path]:
    return geotiff.write_embeddings(path, crs=grid.crs, transform=grid.transform,
                                    width=grid.width, height=grid.height, dim=mos.dim,
                                    read=mos.read_if_touched, dtype=dtype, tags=tags,
                                    compress=compress, block=TIFF_BLOCK)


def export_geotiff(client: Client, region: RegionLike, year: int, path: str | os.PathLike,
                   dtype: str = "float32", crs: Any = None, resolution: float | None = None,
                   clip: bool = True, compress: str = "deflate", overwrite: bool = False
                   ) -> Path:
    """One tiled, compressed GeoTIFF of the region in one CRS (as `Client.read_region`), written
    window by window (constant memory) under a temporary name and renamed when complete; see
    `tessera.geotiff` for the bands, nodata and the int8 `_scales.tif` sibling."""
    _check_dtype(dtype, "export_geotiff")
    path = Path(path)
    if path.exists() and not overwrite:
        raise ExistsError(f"{path}: exists (overwrite=True replaces it)")
    one_crs(Region.parse(region))
    r, present, absent = client.present(region, year, "export_geotiff")
    grid = client.output_grid(r, present, crs, resolution)
    mos = Mosaic(client.tile_opener(), present, grid, clip)
    _write_mosaic(path, grid, mos, dtype, tiff_tags(year, present, absent, dtype), compress)
    return path


def export_tiles_geotiff(client: Client, region: RegionLike, year: int, out_dir: str | os.PathLike,
                         dtype: str = "float32", compress: str = "deflate") -> TilesExport:
    """The published per-tile layout `{year}/grid_{lon}_{lat}/grid_{lon}_{lat}_{year}.tiff`
    under `out_dir`, each tile in its own UTM CRS and pixels. Resumable: tiles whose file
    exists are skipped (files appear only when complete)."""
    _check_dtype(dtype, "export_tiles_geotiff")
    r, present, absent = client.present(region, year, "export_tiles_geotiff")
    out_dir = Path(out_dir)
    res = TilesExport([], [], list(absent))
    opener = client.tile_opener()
    for e in present:
        p = out_dir / geotiff_relpath(year, e.tile)
        if p.exists():
            res.skipped.append(p)
            continue
        grid = TargetGrid(rio_crs(e.crs), e.affine, e.width, e.height, None, e.tile)
        mos = Mosaic(opener, [e], grid, clip=False)
        _write_mosaic(p, grid, mos, dtype, tiff_tags(year, [e], [], dtype), compress)
        res.written.append(p)
    return res


# --- Zarr ---------------------------------------------------------------------------------------

def zone_grids(r: Region, present: Sequence[TileEntry], clip: bool
               ) -> list[tuple[str, TargetGrid, list[TileEntry]]]:
    """Per UTM zone of the present tiles: (group name `utm31n`, the zone's grid covering its
    tiles (within the region when `clip`) at the native pixel size, the zone's tiles)."""
    import shapely

    zones: dict[str, list[TileEntry]] = {}
    for e in present:
        zones.setdefault(crs_key(rio_crs(e.crs)), []).append(e)
    out = []
    for key, es in sorted(zones.items()):
        epsg = int(key.split(":")[1]) if key.startswith("EPSG:") else 0
        if not (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
            raise ClientError(f"export_zarr: tiles {es[0].tile} ... in {key}, expected a "
                              "WGS 84 / UTM zone (EPSG 326xx / 327xx)")
        name = f"utm{epsg % 100:02d}{'n' if epsg < 32700 else 's'}"
        geom = shapely.union_all([parse_tile_name(e.tile).polygon() for e in es])
        if clip:
            geom = geom.intersection(r.geometry)
        res = min(abs(e.transform[0]) for e in es)
        grid = TargetGrid.from_lonlat_geometry(geom, name=name, resolution=res, crs=key)
        out.append((name, grid, es))
    return out


def export_zarr(client: Client, region: RegionLike, year: int, path: str | os.PathLike,
                clip: bool = True, chunk: int | None = None, overwrite: bool = False) -> Path:
    """A Zarr v3 store of the region: one group per UTM zone (`utm31n`, ...) in its native
    CRS and pixels (no resampling), arrays `embeddings` int8 (y, x, band) chunked
    (chunk, chunk, D) and `scales` float32 (y, x), NaN = no data, plus `x` / `y` pixel-centre
    coordinates; described with the geoemb:, proj: and spatial: conventions. Written chunk
    window by chunk window into `.<name>.partial` with its progress recorded, renamed when
    complete; a rerun after an interruption continues where it stopped."""
    import zarr

    path = Path(path)
    if path.exists() and not overwrite:
        raise ExistsError(f"{path}: exists (overwrite=True replaces it)")
    chunk = int(chunk or mosaic.WINDOW)
    r, present, absent = client.present(region, year, "export_zarr")
    zones = zone_grids(r, present, clip)
    opener = client.tile_opener()
    mosaics = [Mosaic(opener, es, g, clip) for _, g, es in zones]
    dim = mosaics[0].dim
    plan = hashlib.sha256(json.dumps({
        "year": int(year), "chunk": chunk, "clip": clip, "dim": dim,
        "tiles": [(e.tile, e.files["embeddings"].sha256, e.files["scales"].sha256)
                  for e in present],
        "zones": [(n, list(g.transform)[:6], g.width, g.height) for n, g, _ in zones],
    }).encode()).hexdigest()
    tmp = partial_path(path)
    root: Any = None  # a zarr Group; its members and JSON attributes are used untyped here
    if tmp.exists():
        try:
            root = zarr.open_group(str(tmp), mode="r+", zarr_format=3)
            if root.attrs.get("tessera:plan") != plan:
                root = None
        except Exception:  # unreadable leftovers of another export: start again
            root = None
        if root is None:
            shutil.rmtree(tmp)
    estimate = sum(g.width * g.height * (dim + 4) for _, g, _ in zones)
    try:
        if root is None:
            root = _zarr_create(tmp, zones, present, absent, year, dim, chunk, plan)
        progress = dict(root.attrs.get("tessera:progress", {}))
        for (name, grid, _), mos in zip(zones, mosaics):
            g = root[name]
            emb, sca = g["embeddings"], g["scales"]
            wins = mosaic.windows(grid.height, grid.width, chunk)
            for i in range(int(progress.get(name, 0)), len(wins)):
                win = wins[i]
                got = mos.read_if_touched(win)
                if got is not None:
                    emb[win.slices], sca[win.slices] = got
                    del got
                progress[name] = i + 1
                root.attrs["tessera:progress"] = progress  # after the window's data
        root.attrs["tessera:complete"] = True
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise WriteError(errno.ENOSPC, f"{path}: no space left on device while exporting "
                             f"(about {human_bytes(estimate)} uncompressed needed); the "
                             f"completed part is kept in {tmp} and a rerun continues it") from exc
        raise
    if path.exists():  # overwrite=True: the old store goes just before the new one lands
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    os.replace(tmp, path)
    return path


def _zarr_create(tmp: Path, zones: list[tuple[str, TargetGrid, list[TileEntry]]],
                 present: Sequence[TileEntry], absent: Sequence[str], year: int, dim: int,
                 chunk: int, plan: str) -> zarr.Group:
    import zarr

    res = min(abs(e.transform[0]) for e in present)
    versions = ",".join(sorted({e.version for e in present}))
    m = model_tags(present)
    geoemb: dict[str, Any] = {
        "geoemb:type": "pixel", "geoemb:dimensions": dim,
        "geoemb:model": model_uri(present), "tessera:model": m["model"],
        "tessera:weights": m["weights"],
        "geoemb:source_data": SOURCE_DATA, "geoemb:data_type": "int8", "geoemb:gsd": res,
        "geoemb:spatial_layout": "utm_zones",
        "geoemb:build_version": package_version(), "tessera:version": versions,
        "geoemb:quantization": {
            "method": "per_pixel_scale", "original_dtype": "float32",
            "quantized_dtype": "int8",
            "scale": {"type": "array", "array_name": "scales", "nodata": "NaN"}},
    }
    root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    root.attrs.update({
        "zarr_conventions": [ZARR_CONVENTIONS["geoemb:"]], **geoemb,
        "tessera:year": int(year), "tessera:tiles": [e.tile for e in present],
        "tessera:absent_tiles": list(absent), "tessera:plan": plan,
        "tessera:progress": {}, "tessera:complete": False})
    for name, grid, es in zones:
        t = grid.transform
        epsg = grid.crs.to_epsg()
        attrs = {
            "zarr_conventions": [ZARR_CONVENTIONS[k] for k in ("geoemb:", "proj:", "spatial:")],
            **geoemb,
            "proj:code": f"EPSG:{epsg}", "proj:wkt2": grid.crs.to_wkt(version="WKT2_2019"),
            "spatial:dimensions": ["y", "x"],
            "spatial:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "spatial:shape": [grid.height, grid.width],
            "spatial:bbox": list(grid.bounds), "spatial:registration": "pixel",
            "tessera:year": int(year), "tessera:tiles": [e.tile for e in es],
        }
        g = root.create_group(name, attributes=attrs)
        g.create_array("embeddings", shape=(grid.height, grid.width, dim),
                       chunks=(chunk, chunk, dim), dtype="int8", fill_value=0,
                       dimension_names=("y", "x", "band"))
        g.create_array("scales", shape=(grid.height, grid.width), chunks=(chunk, chunk),
                       dtype="float32", fill_value=np.nan, dimension_names=("y", "x"))
        g.create_array("x", data=t.c + t.a * (np.arange(grid.width) + 0.5),
                       dimension_names=("x",))
        g.create_array("y", data=t.f + t.e * (np.arange(grid.height) + 0.5),
                       dimension_names=("y",))
    return root


__all__ = ["model_uri", "model_tags", "SOURCE_DATA", "TIFF_BLOCK", "ZARR_CONVENTIONS", "export_geotiff",
           "export_tiles_geotiff", "export_zarr", "package_version", "partial_path", "tiff_tags",
           "zone_grids"]
