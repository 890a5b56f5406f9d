"""The client: embeddings of a tile, a region or points from any store, and exports.

A store is anything with `manifest() -> Manifest` and `open_file(FileEntry) -> Path` (a local,
checked copy of a listed file): `LocalStore`, or `HttpStore` which downloads into a cache.

What users of the published product asked for (SPEC section 7) shapes this module:

- One CRS per mosaic. `read_region` and `export_geotiff` use the UTM zone of the region's centre
  (or a given CRS) at the store's pixel size, on the lattice of multiples of the pixel size, so
  tiles of that zone are pasted pixel for pixel (no seams, no resampling) and only tiles of other
  zones are warped, with nearest neighbour: int8 codes are never averaged, and the codes and the
  scale of an output pixel always come from the same source pixel (the warp moves a source-pixel
  index, then both arrays are gathered with it).
- A pixel's value is that of the tile whose cell (0.1 degree lon/lat box) contains the pixel's
  centre, as the published tiles are cut. Across a zone seam the two lattices do not line up, so a
  location whose nearest source pixel has its centre in the next cell takes the nearest pixel of
  its own cell instead of becoming a gap.
- Constant memory. Exports and point sampling stream: GeoTIFF and Zarr are written window by
  window (each window reads only the tiles touching it, from memory-mapped `.npy` files) and
  points are read tile by tile, one read of each tile. A 100-tile region has the peak memory of a
  4-tile one (see bench/client.py).
- Atomic and resumable. Outputs are written under a temporary name and renamed when complete, so
  an interrupted or failed export (a crash, no space left) never leaves a final file that looks
  complete. A Zarr export records its progress and a rerun continues it; per-tile GeoTIFFs skip
  the tiles already written.
- A dry run says what a request needs (tiles present and absent, bytes to download, bytes an
  export will write) before doing it, and absent tiles are always named (a warning plus the
  `absent` attribute), never silently skipped.

Embeddings are float32 `q * s` with NaN where there is no data, or int8 codes plus float32 scales
(NaN scale = no data) with `dequantize=False`.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera.preprocess.grid import Patch, RegionError, TargetGrid
from tessera.store.grid import (GridError, GridTile, parse_tile_name, tile_of, tiles_in_bbox,
                                tiles_in_geometry, tiles_of_points)
from tessera.store.layout import geotiff_relpath
from tessera.store.local import LocalStore, StoreError
from tessera.store.manifest import FileEntry, Manifest, ManifestError, TileEntry

DIM = 128                  # embedding dimensions of the published model
INT8_NODATA = -128         # never produced by the symmetric quantisation (|q| <= 127)
WINDOW = 256               # pixels: Zarr chunk edge (256 x 256 x 128 int8 = 8 MB) and read window
TIFF_BLOCK = 128           # pixels: GeoTIFF block and export window (128 x 128 x 128 float32 = 8 MB;
                           # with 128 bands per pixel, larger blocks cost readers and exporters RAM)
GDAL_CACHE_MB = 64         # bounds GDAL's block cache so exports do not grow with the region
EXPORT_FORMATS = ("geotiff", "geotiff-int8", "zarr", "tiles", "memory")
POINT_STATUSES = ("valid", "nodata", "outside")

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
MODEL_URL = "https://geotessera.org/model/1.0"
SOURCE_DATA = ["https://sentinel.esa.int/web/sentinel/missions/sentinel-1",
               "https://sentinel.esa.int/web/sentinel/missions/sentinel-2"]


class ClientError(StoreError):
    """A request the client cannot serve: says which tile, year, region or file, and why."""


class MissingTilesWarning(UserWarning):
    """Some tiles of a requested region are not in the store for that year."""


def band_names(dim: int = DIM) -> tuple[str, ...]:
    """`A00`, `A01`, ... `A127`: the band names of exports (GeoTIFF descriptions, xarray)."""
    return tuple(f"A{i:02d}" for i in range(dim))


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f"tessera-eo {version('tessera-eo')}"
    except PackageNotFoundError:
        return "tessera-eo (unknown version)"


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


# --- results ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class EmbeddingRaster:
    """Embeddings on one north-up grid: a stored tile (`fetch_tile`, `iter_tiles`) or a mosaic
    (`read_region`). `embeddings` is float32 (H, W, D), NaN where there is no data, or the int8
    codes when read with dequantize=False; `scales` float32 (H, W), NaN = no data."""

    embeddings: np.ndarray
    scales: np.ndarray
    crs: Any                      # rasterio CRS
    transform: Any                # affine.Affine
    year: int
    tile: str | None = None       # the tile, for a single stored tile
    tiles: tuple[str, ...] = ()   # the stored tiles it was made from
    absent: tuple[str, ...] = ()  # tiles of the region the store does not have for that year
    version: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.scales.shape)  # type: ignore[return-value]

    @property
    def dequantized(self) -> bool:
        return self.embeddings.dtype != np.int8

    @property
    def valid(self) -> np.ndarray:
        """bool (H, W): pixels with data."""
        return np.isfinite(self.scales)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t, (h, w) = self.transform, self.shape
        return (t.c, t.f + t.e * h, t.c + t.a * w, t.f)

    def dequantize(self) -> np.ndarray:
        """float32 (H, W, D) `q * s`, NaN where there is no data."""
        if self.dequantized:
            return self.embeddings
        return _dequantize(self.embeddings, self.scales)

    def to_xarray(self) -> Any:
        """An xarray.DataArray with dims (band, y, x) (rasterio's and rioxarray's order) of the
        float32 embeddings, x/y pixel-centre coordinates, band names in `long_name` and the CRS
        and transform written with rioxarray. With int8 codes: a Dataset of `embeddings` (band,
        y, x) int8 and `scales` (y, x) float32 instead."""
        import rioxarray  # noqa: F401  (registers the .rio accessor)
        import xarray as xr

        h, w = self.shape
        t = self.transform
        d = self.embeddings.shape[-1]
        coords = {"band": np.arange(d), "y": t.f + t.e * (np.arange(h) + 0.5),
                  "x": t.c + t.a * (np.arange(w) + 0.5)}
        attrs = {"year": int(self.year), "tiles": ",".join(self.tiles),
                 "absent_tiles": ",".join(self.absent), "version": self.version,
                 "long_name": band_names(d)}
        emb = self.embeddings.transpose(2, 0, 1)  # a view, no copy
        if self.dequantized:
            da = xr.DataArray(emb, dims=("band", "y", "x"), coords=coords, name="embeddings",
                              attrs=attrs)
            da = da.rio.write_crs(self.crs).rio.write_transform(t)
            return da.rio.write_nodata(np.nan, encoded=False)
        ds = xr.Dataset({"embeddings": (("band", "y", "x"), emb, {"long_name": band_names(d)}),
                         "scales": (("y", "x"), self.scales)}, coords=coords,
                        attrs={k: v for k, v in attrs.items() if k != "long_name"})
        return ds.rio.write_crs(self.crs).rio.write_transform(t)


@dataclasses.dataclass
class DryRun:
    """What a request would need, before doing it (`Client.dry_run`); `str()` is a report."""

    region: str
    year: int
    tiles_present: list[str]
    tiles_absent: list[str]
    files: int                     # files to read (embeddings and scales of the present tiles)
    bytes_total: int               # their size
    bytes_to_download: int         # of which not yet in a local copy or cache
    export_bytes: dict[str, int]   # per format, uncompressed estimate of what would be written
    crs: str = ""
    width: int = 0
    height: int = 0
    resolution: float = 0.0

    @property
    def bytes_local(self) -> int:
        return self.bytes_total - self.bytes_to_download

    def __str__(self) -> str:
        n = len(self.tiles_present) + len(self.tiles_absent)
        lines = [f"{self.region}, year {self.year}: {n} tiles in the region, "
                 f"{len(self.tiles_present)} in the store, {len(self.tiles_absent)} absent"]
        if self.tiles_absent:
            shown = ", ".join(self.tiles_absent[:8])
            more = f" and {len(self.tiles_absent) - 8} more" if len(self.tiles_absent) > 8 else ""
            lines.append(f"absent: {shown}{more}")
        lines.append(f"read {self.files} files, {_human(self.bytes_total)}: "
                     f"{_human(self.bytes_to_download)} to download, "
                     f"{_human(self.bytes_local)} already local")
        if self.width:
            lines.append(f"output grid: {self.crs}, {self.width} x {self.height} px at "
                         f"{self.resolution:g} m")
        for fmt, b in self.export_bytes.items():
            lines.append(f"would write ({fmt}): about {_human(b)} uncompressed")
        return "\n".join(lines)


@dataclasses.dataclass
class TilesExport:
    """What `export_tiles_geotiff` did: files written now, files already there, absent tiles."""

    written: list[Path]
    skipped: list[Path]
    absent: list[str]

    @property
    def paths(self) -> list[Path]:
        return sorted(self.written + self.skipped)


# --- regions ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Region:
    """A request's area: a lon/lat shapely geometry and the grid tiles it touches."""

    geometry: Any
    tiles: tuple[GridTile, ...]
    name: str
    crosses_antimeridian: bool = False

    @classmethod
    def parse(cls, region: Any) -> Region:
        """From a bbox (west, south, east, north) in degrees, a lon/lat shapely geometry, a
        GeoJSON dict or file, a GeoDataFrame-like (`.geometry` + `.crs`), a tile name or a list of
        tile names / GridTiles."""
        import shapely

        if isinstance(region, Region):
            return region
        if isinstance(region, GridTile):
            return cls._from_tiles([region])
        if isinstance(region, str) and region.strip().startswith("grid_"):
            return cls._from_tiles([parse_tile_name(region)])
        if isinstance(region, (str, os.PathLike)):
            return cls._from_file(Path(region))
        if isinstance(region, dict):
            return cls._from_geometry(_geojson_geometry(region, "region GeoJSON"), "GeoJSON region")
        if hasattr(region, "geom_type"):
            return cls._from_geometry(region, f"{region.geom_type} region")
        if hasattr(region, "geometry") and hasattr(region, "crs"):
            geoms = np.asarray(region.geometry, dtype=object)
            geom = _to_lonlat(shapely.union_all(geoms), region.crs)
            return cls._from_geometry(geom, "GeoDataFrame region")
        if isinstance(region, (Sequence, np.ndarray)) and len(region) > 0:
            items = list(region)
            if all(isinstance(t, (str, GridTile)) for t in items):
                return cls._from_tiles([parse_tile_name(t) if isinstance(t, str) else t
                                        for t in items])
            if len(items) == 4 and all(isinstance(v, (int, float, np.number)) for v in items):
                return cls._from_bbox(*map(float, items))
        raise RegionError(f"region {region!r:.80}: expected a bbox (west, south, east, north) in "
                          "degrees, a shapely geometry, a GeoJSON dict or file, a GeoDataFrame, "
                          "or tile names like grid_0.15_52.05")

    @classmethod
    def _from_tiles(cls, tiles: list[GridTile]) -> Region:
        import shapely

        tiles = list(dict.fromkeys(tiles))  # unique, in order
        geom = shapely.union_all([t.polygon() for t in tiles])
        name = tiles[0].name if len(tiles) == 1 else f"{len(tiles)} tiles ({tiles[0].name}, ...)"
        lons = [t.lon for t in tiles]
        return cls(geom, tuple(tiles), name, crosses_antimeridian=max(lons) - min(lons) > 180)

    @classmethod
    def _from_bbox(cls, w: float, s: float, e: float, n: float) -> Region:
        from shapely.geometry import MultiPolygon, box

        tiles = tiles_in_bbox(w, s, e, n)
        name = f"bbox ({w:g}, {s:g}, {e:g}, {n:g})"
        if w > e:  # across the antimeridian: two boxes
            return cls(MultiPolygon([box(w, s, 180.0, n), box(-180.0, s, e, n)]), tuple(tiles),
                       name, crosses_antimeridian=True)
        return cls(box(w, s, e, n), tuple(tiles), name)

    @classmethod
    def _from_geometry(cls, geom: Any, name: str) -> Region:
        if geom is None or geom.is_empty:
            raise RegionError(f"{name}: empty geometry")
        w, s, e, n = geom.bounds
        if not (-180 <= w and e <= 180 and -90 <= s and n <= 90):
            raise RegionError(f"{name}: bounds ({w}, {s}, {e}, {n}) are not lon/lat degrees "
                              "(give a GeoDataFrame with its CRS, or reproject to EPSG:4326)")
        tiles = tiles_in_geometry(geom)
        if not tiles:
            raise RegionError(f"{name}: touches no grid tile")
        return cls(geom, tuple(tiles), name)

    @classmethod
    def _from_file(cls, path: Path) -> Region:
        import shapely

        from tessera.preprocess.grid import _read_vector

        if not path.exists():
            raise RegionError(f"{path}: region file not found (or not a tile name like "
                              "grid_0.15_52.05)")
        geoms, crs = _read_vector(path)
        if not geoms:
            raise RegionError(f"{path}: no geometries in the file")
        return cls._from_geometry(_to_lonlat(shapely.union_all(geoms), crs), str(path))


def _is_lonlat(crs: Any) -> bool:
    from pyproj import CRS
    c = CRS.from_user_input(crs)
    return c.is_geographic and c.equals("EPSG:4326", ignore_axis_order=True)


def _to_lonlat(geom: Any, crs: Any) -> Any:
    """A geometry in `crs` (None = already lon/lat) in EPSG:4326 lon/lat."""
    import shapely

    if crs is None or _is_lonlat(crs):
        return geom
    t = _transformer(str(crs), "EPSG:4326")
    return shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def _geojson_geometry(doc: dict, what: str) -> Any:
    import shapely
    from shapely.geometry import shape

    feats = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
    geoms = []
    for i, f in enumerate(feats or []):
        g = f.get("geometry") if f.get("type") == "Feature" else f
        if g is None:
            raise RegionError(f"{what}: feature {i} has no geometry")
        try:
            geoms.append(shape(g))
        except Exception as exc:  # shapely raises several types for bad geometry dicts
            raise RegionError(f"{what}: feature {i}: not a GeoJSON geometry ({exc})") from None
    if not geoms:
        raise RegionError(f"{what}: no geometries")
    return shapely.union_all(geoms)


# --- points -----------------------------------------------------------------------------------------

def points_lonlat(points: Any) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) float64 arrays from: an (N, 2) array-like of (lon, lat) rows; a tuple of two 1-D
    numpy arrays (lons, lats); a GeoJSON FeatureCollection of Points (dict or file path); or a
    GeoDataFrame-like (`.geometry` of points and `.crs`, reprojected to lon/lat)."""
    import shapely

    if isinstance(points, (str, os.PathLike)):
        path = Path(points)
        try:
            points = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClientError(f"{path}: points file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ClientError(f"{path}: not a GeoJSON file ({exc})") from None
    if isinstance(points, dict):
        feats = points.get("features") if points.get("type") == "FeatureCollection" else [points]
        xy = []
        for i, f in enumerate(feats or []):
            g = f.get("geometry") if f.get("type") == "Feature" else f
            if not g or g.get("type") != "Point":
                raise ClientError(f"points GeoJSON: feature {i} is "
                                  f"{(g or {}).get('type', 'empty')}, expected a Point")
            xy.append(g["coordinates"][:2])
        arr = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]
    if hasattr(points, "geometry") and hasattr(points, "crs"):
        geoms = np.asarray(points.geometry, dtype=object)
        kinds = set(shapely.get_type_id(geoms).tolist())
        if kinds - {0}:
            raise ClientError("points GeoDataFrame: every geometry must be a Point")
        x, y = shapely.get_x(geoms), shapely.get_y(geoms)
        if points.crs is not None and not _is_lonlat(points.crs):
            x, y = _transformer(str(points.crs), "EPSG:4326").transform(x, y)
        return np.asarray(x, np.float64), np.asarray(y, np.float64)
    if (isinstance(points, tuple) and len(points) == 2
            and all(isinstance(p, np.ndarray) and p.ndim == 1 for p in points)):
        if points[0].shape != points[1].shape:
            raise ClientError(f"points: {points[0].size} longitudes but {points[1].size} latitudes")
        return points[0].astype(np.float64), points[1].astype(np.float64)
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ClientError(f"points: array of shape {arr.shape}, expected (N, 2) rows of (lon, lat)")
    return arr[:, 0], arr[:, 1]


# --- geometry helpers ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _transformer(src: str, dst: str) -> Any:
    from pyproj import Transformer
    return Transformer.from_crs(src, dst, always_xy=True)


def _crs_key(crs: Any) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _rio_crs(crs: Any) -> Any:
    from rasterio.crs import CRS
    c = CRS.from_user_input(crs)
    epsg = c.to_epsg()
    return CRS.from_epsg(epsg) if epsg else c


def _apply(t: Any, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """An affine transform applied to coordinate arrays."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def _shift(t: Any, col: float, row: float) -> Any:
    """The transform of a window starting at (col, row) of a grid with transform `t`."""
    from affine import Affine
    x, y = _apply(t, col, row)
    return Affine(t.a, t.b, float(x), t.d, t.e, float(y))


def _dequantize(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    out = q.astype(np.float32)
    out *= s[..., None]
    return out


def _lattice_offset(src: Any, dst: Any) -> tuple[int, int] | None:
    """(row, col) of a source raster's pixel (0, 0) in a destination grid of the same CRS when
    both share a pixel lattice (same size, integer offset), else None."""
    if src.b or src.d or dst.b or dst.d:
        return None
    if not (math.isclose(src.a, dst.a, rel_tol=1e-9) and math.isclose(src.e, dst.e, rel_tol=1e-9)):
        return None
    col, row = (src.c - dst.c) / dst.a, (src.f - dst.f) / dst.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


def _nearest_in_cell(tile: GridTile, affine: Any, crs_key: str, shape: tuple[int, int],
                     cf: np.ndarray, rf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For locations at fractional pixel coords (cf, rf) of a tile's raster, the pixel among the
    3 x 3 around them whose centre is nearest and inside the tile's cell (the pixels the tile
    holds data for); the containing pixel when none is."""
    h, w = shape
    r0, c0 = np.floor(rf).astype(np.int64), np.floor(cf).astype(np.int64)
    dr, dc = np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij")
    rr = r0[:, None] + dr.ravel()[None]
    cc = c0[:, None] + dc.ravel()[None]
    x, y = _apply(affine, cc + 0.5, rr + 0.5)
    lon, lat = _transformer(crs_key, "EPSG:4326").transform(x, y)
    west, south, east, north = tile.bounds
    inside = ((lon >= west) & (lon < east) & (lat >= south) & (lat < north)
              & (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w))
    d2 = np.where(inside, (cc + 0.5 - cf[:, None]) ** 2 + (rr + 0.5 - rf[:, None]) ** 2, np.inf)
    k = np.argmin(d2, axis=1)
    pick = np.isfinite(d2[np.arange(len(k)), k])
    row = np.where(pick, rr[np.arange(len(k)), k], r0)
    col = np.where(pick, cc[np.arange(len(k)), k], c0)
    return row, col


# --- reading windows of an output grid --------------------------------------------------------------

@dataclasses.dataclass
class _Window:
    row: int
    col: int
    height: int
    width: int

    def rio(self) -> Any:
        from rasterio.windows import Window
        return Window(self.col, self.row, self.width, self.height)


def _windows(height: int, width: int, size: int | None = None) -> list[_Window]:
    size = size or WINDOW
    return [_Window(r, c, min(size, height - r), min(size, width - c))
            for r in range(0, height, size) for c in range(0, width, size)]


class _Source:
    """One stored tile as seen from an output grid: its bounds there and, when it shares the
    grid's CRS and lattice, its pixel offset (pasted), else None (warped)."""

    def __init__(self, entry: TileEntry, grid: TargetGrid) -> None:
        from rasterio.warp import transform_bounds

        self.entry = entry
        self.tile = parse_tile_name(entry.tile)
        self.crs = _rio_crs(entry.crs)
        self.crs_key = _crs_key(self.crs)
        self.affine = entry.affine
        self.shape = (entry.height, entry.width)
        same = self.crs_key == _crs_key(grid.crs)
        self.offset = _lattice_offset(self.affine, grid.transform) if same else None
        self.bounds = (entry.bounds if same else
                       transform_bounds(self.crs, grid.crs, *entry.bounds, densify_pts=21))


class _Mosaic:
    """Reads windows of an output grid from the tiles that touch it; memory is one window plus
    the touched part of each tile (memory-mapped, dropped after the window)."""

    def __init__(self, client: Client, entries: Sequence[TileEntry], grid: TargetGrid,
                 clip: bool) -> None:
        self.client, self.grid, self.clip = client, grid, clip
        self.sources = [_Source(e, grid) for e in entries]
        self._paths: dict[str, tuple[Path, Path]] = {}
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self._open(self.sources[0])[0].shape[2] if self.sources else DIM
        return self._dim

    def _open(self, src: _Source) -> tuple[np.ndarray, np.ndarray]:
        e = src.entry
        if e.tile not in self._paths:
            self._paths[e.tile] = self.client._paths(e)
        return self.client._load(e, *self._paths[e.tile], mmap=True)

    def touching(self, win: _Window) -> list[_Source]:
        t = self.grid.transform
        left, top = _apply(t, win.col, win.row)
        right, bottom = _apply(t, win.col + win.width, win.row + win.height)
        return [s for s in self.sources if s.bounds[0] < right and s.bounds[2] > left
                and s.bounds[1] < top and s.bounds[3] > bottom]

    def read(self, win: _Window) -> tuple[np.ndarray, np.ndarray]:
        """(int8 (h, w, D), float32 (h, w) with NaN = no data) of one window."""
        q = np.zeros((win.height, win.width, self.dim), np.int8)
        s = np.full((win.height, win.width), np.nan, np.float32)
        sources = self.touching(win)
        # warped tiles first: a pixel of the grid's own lattice is the aligned tile's exactly
        fallbacks = []
        for src in sorted(sources, key=lambda x: x.offset is not None):
            if src.offset is None:
                fb = self._warp(src, win, q, s)
                if fb is not None:
                    fallbacks.append(fb)
            else:
                self._paste(src, win, q, s)
        for src, rows, cols, sr, sc in fallbacks:  # seam pixels no tile covered
            todo = ~np.isfinite(s[rows, cols])
            if todo.any():
                qm, sm = self._open(src)
                rows, cols, sr, sc = rows[todo], cols[todo], sr[todo], sc[todo]
                sv = np.asarray(sm[sr, sc])
                ok = np.isfinite(sv)
                s[rows[ok], cols[ok]] = sv[ok]
                q[rows[ok], cols[ok]] = np.asarray(qm[sr[ok], sc[ok]])
                del qm, sm
        if self.clip and self.grid.geometry is not None:
            p = Patch(win.col, win.row, win.col + win.width, win.row + win.height)
            out = self.grid.sub(p).roi() == 0
            s[out] = np.nan
            q[out] = 0
        return q, s

    def _paste(self, src: _Source, win: _Window, q: np.ndarray, s: np.ndarray) -> None:
        ro, co = src.offset  # type: ignore[misc]
        h, w = src.shape
        tr0, tr1 = max(win.row - ro, 0), min(win.row + win.height - ro, h)
        tc0, tc1 = max(win.col - co, 0), min(win.col + win.width - co, w)
        if tr0 >= tr1 or tc0 >= tc1:
            return
        qm, sm = self._open(src)
        ss = np.asarray(sm[tr0:tr1, tc0:tc1])
        m = np.isfinite(ss)
        if m.any():
            r0, c0 = tr0 + ro - win.row, tc0 + co - win.col
            sl = (slice(r0, r0 + tr1 - tr0), slice(c0, c0 + tc1 - tc0))
            q[sl][m] = np.asarray(qm[tr0:tr1, tc0:tc1])[m]
            s[sl][m] = ss[m]
        del qm, sm

    def _warp(self, src: _Source, win: _Window, q: np.ndarray, s: np.ndarray) -> tuple | None:
        """Nearest-neighbour warp of a tile of another CRS or lattice into the window: a source
        pixel index is warped (never the codes), then codes and scales are gathered with it.
        Returns the seam pixels to fill afterwards with the nearest pixel of their own cell."""
        from rasterio.warp import Resampling, reproject, transform_bounds

        g = self.grid
        win_t = _shift(g.transform, win.col, win.row)
        left, top = win_t.c, win_t.f
        right, bottom = _apply(win_t, win.width, win.height)
        sb = transform_bounds(g.crs, src.crs, left, bottom, right, top, densify_pts=21)
        inv = ~src.affine
        cs, rs = _apply(inv, [sb[0], sb[0], sb[2], sb[2]], [sb[1], sb[3], sb[1], sb[3]])
        h, w = src.shape
        r0, r1 = max(math.floor(min(rs)) - 2, 0), min(math.ceil(max(rs)) + 2, h)
        c0, c1 = max(math.floor(min(cs)) - 2, 0), min(math.ceil(max(cs)) + 2, w)
        if r0 >= r1 or c0 >= c1:
            return None
        sw = c1 - c0
        idx = np.arange((r1 - r0) * sw, dtype=np.int32).reshape(r1 - r0, sw)
        hit_idx = np.full((win.height, win.width), -1, np.int32)
        reproject(idx, hit_idx, src_transform=_shift(src.affine, c0, r0),
                  src_crs=src.crs, src_nodata=-1, dst_transform=win_t, dst_crs=g.crs,
                  dst_nodata=-1, resampling=Resampling.nearest)
        rows, cols = np.nonzero(hit_idx >= 0)
        if rows.size == 0:
            return None
        qm, sm = self._open(src)
        flat = hit_idx[rows, cols]
        ssub = np.asarray(sm[r0:r1, c0:c1]).reshape(-1)
        sv = ssub[flat]
        ok = np.isfinite(sv)
        if ok.any():
            qsub = np.asarray(qm[r0:r1, c0:c1]).reshape(-1, qm.shape[2])
            q[rows[ok], cols[ok]] = qsub[flat[ok]]
            s[rows[ok], cols[ok]] = sv[ok]
        del qm, sm
        # source pixel with no data: if the output pixel's centre is in this tile's cell, the
        # nearest pixel of the cell may hold it (the source pixel's centre is across the seam)
        rows, cols = rows[~ok], cols[~ok]
        if rows.size == 0:
            return None
        x, y = _apply(win_t, cols + 0.5, rows + 0.5)
        lon, lat = _transformer(_crs_key(g.crs), "EPSG:4326").transform(x, y)
        cells = tiles_of_points(lon, lat)
        mine = (cells[:, 0] == src.tile.ix) & (cells[:, 1] == src.tile.iy)
        if not mine.any():
            return None
        rows, cols = rows[mine], cols[mine]
        sx, sy = _transformer(_crs_key(g.crs), src.crs_key).transform(x[mine], y[mine])
        cf, rf = _apply(inv, sx, sy)
        sr, sc = _nearest_in_cell(src.tile, src.affine, src.crs_key, src.shape, cf, rf)
        moved = (sr != np.floor(rf)) | (sc != np.floor(cf))
        if not moved.any():
            return None
        return src, rows[moved], cols[moved], sr[moved], sc[moved]


# --- atomic outputs ----------------------------------------------------------------------------------

def _partial(path: Path) -> Path:
    """The temporary sibling an output is written to before its rename (one per output path:
    concurrent exports to the same path are not supported)."""
    return path.with_name(f".{path.name}.partial")


def _write_window(dst: Any, data: np.ndarray, win: _Window) -> None:
    """One window of a GeoTIFF export (a seam for tests to interrupt)."""
    dst.write(data, window=win.rio())


def _disk_error(exc: OSError, path: Path, estimate: int) -> OSError:
    if exc.errno != errno.ENOSPC:
        return exc
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = -1
    return OSError(errno.ENOSPC, f"{path}: no space left on device while exporting (about "
                   f"{_human(estimate)} uncompressed needed, {_human(free)} free on "
                   f"{path.parent}); the partial file was removed, no {path.name} was written")


# --- the client ------------------------------------------------------------------------------------

class Client:
    """Reads embeddings from a store (a `LocalStore`, an `HttpStore`, or a path / URL to open
    one) and exports them; see the module docstring for the guarantees."""

    def __init__(self, store: Any, cache_dir: str | os.PathLike | None = None) -> None:
        if isinstance(store, (str, os.PathLike)):
            from tessera.store import open_store
            store = open_store(store, cache_dir=cache_dir)
        if not (hasattr(store, "manifest") and hasattr(store, "open_file")):
            raise TypeError(f"{store!r}: a store needs manifest() and open_file(FileEntry)")
        self.store = store
        self._manifest: Manifest | None = None

    def __repr__(self) -> str:
        return f"Client({self.store!r})"

    # --- the manifest --------------------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        """The store's manifest, read once (see `refresh`)."""
        if self._manifest is None:
            try:
                self._manifest = self.store.manifest()
            except ManifestError as exc:
                raise ClientError(f"{self.store!r}: {exc}") from None
        return self._manifest

    def refresh(self) -> None:
        """Forget the cached manifest (after tiles were added to the store)."""
        self._manifest = None

    def years(self) -> list[int]:
        return self.manifest.years()

    def _check_year(self, year: int) -> None:
        years = self.years()
        if int(year) not in years:
            raise ClientError(f"year {year} is not in the store {self.store!r} (it has "
                              f"{', '.join(map(str, years)) or 'no tiles'})")

    # --- reading tiles --------------------------------------------------------------------------------
    def _paths(self, e: TileEntry) -> tuple[Path, Path]:
        try:
            return (Path(self.store.open_file(e.files["embeddings"])),
                    Path(self.store.open_file(e.files["scales"])))
        except (StoreError, ManifestError, OSError) as exc:
            raise ClientError(f"{e.tile} {e.year}: cannot open its files ({exc})") from None

    @staticmethod
    def _load(e: TileEntry, qpath: Path, spath: Path, mmap: bool) -> tuple[np.ndarray, np.ndarray]:
        """The tile's arrays, shapes checked against the manifest."""
        mode = "r" if mmap else None
        try:
            q = np.load(qpath, mmap_mode=mode, allow_pickle=False)
            s = np.load(spath, mmap_mode=mode, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ClientError(f"{e.tile} {e.year}: {qpath.name} / {spath.name} are not readable "
                              f".npy arrays ({exc})") from None
        hw = (e.height, e.width)
        if q.dtype != np.int8 or q.ndim != 3 or q.shape[:2] != hw:
            raise ClientError(f"{qpath}: {q.dtype} {q.shape}, expected int8 {hw + ('D',)} for "
                              f"{e.tile} {e.year} as the manifest says")
        if s.shape != hw or s.dtype != np.float32:
            raise ClientError(f"{spath}: {s.dtype} {s.shape}, expected float32 {hw} for "
                              f"{e.tile} {e.year} as the manifest says")
        return q, s

    def _raster(self, e: TileEntry, dequantize: bool, absent: Sequence[str] = ()
                ) -> EmbeddingRaster:
        q, s = self._load(e, *self._paths(e), mmap=False)
        emb = _dequantize(q, s) if dequantize else q
        return EmbeddingRaster(emb, s, _rio_crs(e.crs), e.affine, int(e.year), tile=e.tile,
                               tiles=(e.tile,), absent=tuple(absent), version=e.version)

    def fetch_tile(self, lon: float | str | GridTile, lat: float | None = None,
                   year: int | None = None, dequantize: bool = True) -> EmbeddingRaster:
        """One stored tile in its own UTM CRS: `fetch_tile(lon, lat, year)` for the tile
        containing the point, or `fetch_tile("grid_0.15_52.05", year)`."""
        if isinstance(lon, (str, GridTile)):
            if year is None and lat is not None:
                year, lat = int(lat), None
            tile = parse_tile_name(lon) if isinstance(lon, str) else lon
        else:
            if lat is None:
                raise ClientError("fetch_tile: give (lon, lat, year) or (tile name, year)")
            tile = tile_of(float(lon), float(lat))
        if year is None:
            raise ClientError(f"fetch_tile {tile.name}: no year given (the store has "
                              f"{', '.join(map(str, self.years()))})")
        try:
            e = self.manifest.entry(tile.name, int(year))
        except ManifestError as exc:
            raise ClientError(f"cannot fetch {tile.name} for {year}: {exc}") from None
        return self._raster(e, dequantize)

    # --- regions --------------------------------------------------------------------------------------
    def plan(self, region: Any, year: int) -> tuple[Region, list[TileEntry], list[str]]:
        """(the parsed region, its tiles present in the store for `year`, names of the absent)."""
        r = Region.parse(region)
        names = [t.name for t in r.tiles]
        found = {e.tile: e for e in self.manifest.query(year=int(year), tiles=names).entries()}
        present = [found[n] for n in names if n in found]
        absent = [n for n in names if n not in found]
        return r, present, absent

    def _present(self, region: Any, year: int, what: str
                 ) -> tuple[Region, list[TileEntry], list[str]]:
        self._check_year(year)
        r, present, absent = self.plan(region, year)
        if not present:
            raise ClientError(f"{what}: none of the {len(absent)} tiles of {r.name} is in the "
                              f"store for {year} (e.g. {', '.join(absent[:4])})")
        if absent:
            shown = ", ".join(absent[:8]) + (" ..." if len(absent) > 8 else "")
            warnings.warn(f"{what}: {len(absent)} of {len(absent) + len(present)} tiles of "
                          f"{r.name} are not in the store for {year}: {shown} (no data there)",
                          MissingTilesWarning, stacklevel=3)
        return r, present, absent

    def iter_tiles(self, region: Any, year: int, dequantize: bool = True) -> TileIterator:
        """Each stored tile of the region for `year`, in its own CRS, one at a time. Absent tiles
        are named in a MissingTilesWarning and in the iterator's `absent` attribute."""
        self._check_year(year)
        r, present, absent = self.plan(region, year)
        if absent:
            warnings.warn(f"iter_tiles: {len(absent)} of {len(r.tiles)} tiles of {r.name} are "
                          f"not in the store for {year}: {', '.join(absent[:8])}"
                          f"{' ...' if len(absent) > 8 else ''}", MissingTilesWarning,
                          stacklevel=2)
        return TileIterator(self, present, absent, dequantize)

    def _grid(self, r: Region, present: Sequence[TileEntry], crs: Any, resolution: float | None
              ) -> TargetGrid:
        """The output grid: `crs` or the UTM zone of the region's centre, at `resolution` or the
        store's pixel size, bounds snapped outward to multiples of it."""
        if r.crosses_antimeridian:
            raise ClientError(f"{r.name}: crosses the antimeridian; a mosaic needs one CRS, so "
                              "split the region at 180 degrees")
        if crs is not None:
            crs = _rio_crs(crs)
            if crs.is_geographic and resolution is None:
                raise ClientError(f"crs {crs}: geographic, so give `resolution` in degrees (the "
                                  "store's pixel size is in metres)")
        if resolution is None:
            sizes = {abs(e.transform[0]) for e in present}
            resolution = min(sizes) if sizes else 10.0
        return TargetGrid.from_lonlat_geometry(r.geometry, name=r.name, resolution=resolution,
                                               crs=crs)

    def read_region(self, region: Any, year: int, crs: Any = None,
                    resolution: float | None = None, dequantize: bool = True, clip: bool = True
                    ) -> EmbeddingRaster:
        """A mosaic of the region in one CRS (default: UTM zone of its centre at the store's pixel
        size), NaN (scale NaN) where there is no data or outside the region when `clip`. The whole
        mosaic is in memory: for large regions use the exports, which stream."""
        r, present, absent = self._present(region, year, "read_region")
        grid = self._grid(r, present, crs, resolution)
        mos = _Mosaic(self, present, grid, clip)
        q = np.zeros((grid.height, grid.width, mos.dim), np.int8)
        s = np.full((grid.height, grid.width), np.nan, np.float32)
        for win in _windows(grid.height, grid.width):
            if mos.touching(win):
                sl = (slice(win.row, win.row + win.height), slice(win.col, win.col + win.width))
                q[sl], s[sl] = mos.read(win)
        if dequantize:
            q = _dequantize(q, s)
        return EmbeddingRaster(q, s, grid.crs, grid.transform, int(year),
                               tiles=tuple(e.tile for e in present), absent=tuple(absent),
                               version=",".join(sorted({e.version for e in present})))

    def read_region_xarray(self, region: Any, year: int, crs: Any = None,
                           resolution: float | None = None, dequantize: bool = True,
                           clip: bool = True) -> Any:
        """`read_region` as an xarray.DataArray with dims (band, y, x), CRS and transform set
        with rioxarray (`.rio.crs`, `.rio.transform()`); a Dataset of int8 `embeddings` and
        float32 `scales` with dequantize=False."""
        return self.read_region(region, year, crs, resolution, dequantize, clip).to_xarray()

    # --- points ---------------------------------------------------------------------------------------
    def sample_points(self, points: Any, year: int) -> tuple[np.ndarray, np.ndarray]:
        """(float32 (N, D) embeddings, NaN unless valid; status (N,) of "valid", "nodata" (in a
        stored tile, no data there, e.g. sea) or "outside" (no tile of that year in the store, or
        beyond the grid)). Points are grouped by tile and each tile's two arrays are opened once.

        A point's value is that of the pixel containing it, in the tile whose cell contains that
        pixel's centre (as read_region pastes them); next to a zone seam, where that tile's
        lattice differs, the nearest pixel of the point's own cell."""
        lon, lat = points_lonlat(points)
        n = lon.size
        status = np.full(n, "outside", dtype="<U7")
        with np.errstate(invalid="ignore"):  # NaN points: "outside"
            cells = tiles_of_points(lon, lat)
        ok = np.nonzero(cells[:, 0] != -9999)[0]
        own_keys, inv = (np.unique(cells[ok], axis=0, return_inverse=True) if ok.size
                         else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64)))
        inv = inv.reshape(-1)
        names = [GridTile(int(ix), int(iy)).name for ix, iy in own_keys]
        man = self.manifest.query(year=int(year), tiles=names)
        entries = {e.tile: e for e in man.entries()}
        # plan: every point -> (tile, row, col) to read, from manifest geometry only
        read_tile = np.full(n, -1, np.int64)
        read_row = np.zeros(n, np.int64)
        read_col = np.zeros(n, np.int64)
        tiles: list[str] = []
        tile_id: dict[str, int] = {}

        def tid(name: str) -> int:
            if name not in tile_id:
                tile_id[name] = len(tiles)
                tiles.append(name)
            return tile_id[name]

        deferred = []  # (points, pixel rows/cols, their cells, own entry) near a cell edge
        for u, name in enumerate(names):
            e = entries.get(name)
            if e is None:
                continue
            pts = ok[inv == u]
            status[pts] = "nodata"  # in a stored tile; "valid" once a finite scale is read
            key = _crs_key(_rio_crs(e.crs))
            x, y = _transformer("EPSG:4326", key).transform(lon[pts], lat[pts])
            cf, rf = _apply(~e.affine, x, y)
            r0, c0 = np.floor(rf).astype(np.int64), np.floor(cf).astype(np.int64)
            cx, cy = _apply(e.affine, c0 + 0.5, r0 + 0.5)
            clon, clat = _transformer(key, "EPSG:4326").transform(cx, cy)
            ccell = tiles_of_points(clon, clat)
            own = (ccell[:, 0] == own_keys[u, 0]) & (ccell[:, 1] == own_keys[u, 1])
            inside = (r0 >= 0) & (r0 < e.height) & (c0 >= 0) & (c0 < e.width)
            here = own & inside
            read_tile[pts[here]] = tid(name)
            read_row[pts[here]], read_col[pts[here]] = r0[here], c0[here]
            if (~here).any():
                deferred.append((pts[~here], r0[~here], c0[~here], cf[~here], rf[~here],
                                 ccell[~here], e))
        if deferred:  # the pixel's centre is in a neighbour cell: same lattice there?
            nb = {GridTile(int(ix), int(iy)).name
                  for d in deferred for ix, iy in d[5] if ix != -9999}
            nb_entries = {x.tile: x for x in self.manifest.query(year=int(year),
                                                                 tiles=sorted(nb)).entries()}
            for pts, r0, c0, cf, rf, ccell, e in deferred:
                done = np.zeros(pts.size, bool)
                key = _crs_key(_rio_crs(e.crs))
                for ix, iy in np.unique(ccell[ccell[:, 0] != -9999], axis=0):  # <= 8 cells
                    c = nb_entries.get(GridTile(int(ix), int(iy)).name)
                    if c is None or _crs_key(_rio_crs(c.crs)) != key:
                        continue
                    off = _lattice_offset(e.affine, c.affine)
                    if off is None:
                        continue
                    rr, cc = r0 + off[0], c0 + off[1]
                    sel = ((ccell[:, 0] == ix) & (ccell[:, 1] == iy) & (rr >= 0) & (rr < c.height)
                           & (cc >= 0) & (cc < c.width))
                    if sel.any():
                        read_tile[pts[sel]] = tid(c.tile)
                        read_row[pts[sel]], read_col[pts[sel]] = rr[sel], cc[sel]
                        entries.setdefault(c.tile, c)
                        done |= sel
                if (~done).any():  # no same-lattice neighbour: nearest pixel of the own cell
                    rr, cc = _nearest_in_cell(parse_tile_name(e.tile), e.affine, key,
                                              (e.height, e.width), cf[~done], rf[~done])
                    fine = (rr >= 0) & (rr < e.height) & (cc >= 0) & (cc < e.width)
                    sel = pts[~done][fine]
                    read_tile[sel], read_row[sel], read_col[sel] = tid(e.tile), rr[fine], cc[fine]
        # read: one open of each tile, all its points at once
        out: np.ndarray | None = None
        order = np.argsort(read_tile, kind="stable")
        bounds = np.searchsorted(read_tile[order], np.arange(len(tiles) + 1))
        for k, name in enumerate(tiles):
            pts = order[bounds[k]:bounds[k + 1]]
            if pts.size == 0:
                continue
            e = entries[name]
            qm, sm = self._load(e, *self._paths(e), mmap=True)
            if out is None:
                out = np.full((n, qm.shape[2]), np.nan, np.float32)
            sv = np.asarray(sm[read_row[pts], read_col[pts]])
            good = np.isfinite(sv)
            pv = pts[good]
            if pv.size:
                qv = np.asarray(qm[read_row[pv], read_col[pv]])
                out[pv] = _dequantize(qv, sv[good])
                status[pv] = "valid"
            del qm, sm
        if out is None:
            out = np.full((n, DIM), np.nan, np.float32)
        return out, status

    # --- dry run --------------------------------------------------------------------------------------
    def _is_local(self, f: FileEntry) -> bool:
        """Whether reading `f` needs no download: a LocalStore, a store that says so
        (`is_cached`), or a copy of the listed size in the store's cache directory."""
        if isinstance(self.store, LocalStore):
            return True
        is_cached = getattr(self.store, "is_cached", None)
        if callable(is_cached):
            return bool(is_cached(f))
        cache = getattr(self.store, "cache_dir", None)
        if cache is not None:
            p = Path(cache) / f.path
            return p.is_file() and p.stat().st_size == f.size
        return False

    def dry_run(self, region: Any, year: int, formats: Iterable[str] = ("geotiff",),
                crs: Any = None, resolution: float | None = None) -> DryRun:
        """What reading or exporting the region would need: tiles present and absent, files and
        bytes to read and to download, and the uncompressed size each export format would
        write (`geotiff` float32, `geotiff-int8` with its scales, `zarr`, `tiles` per-tile
        float32 GeoTIFFs, `memory` for read_region). Reads the manifest only."""
        formats = [formats] if isinstance(formats, str) else list(formats)
        bad = [f for f in formats if f not in EXPORT_FORMATS]
        if bad:
            raise ClientError(f"dry_run: unknown formats {bad}; expected some of {EXPORT_FORMATS}")
        r, present, absent = self.plan(region, year)
        files = [e.files[k] for e in present for k in ("embeddings", "scales")]
        total = sum(f.size for f in files)
        download = sum(f.size for f in files if not self._is_local(f))
        run = DryRun(r.name, int(year), [e.tile for e in present], absent, len(files), total,
                     download, {})
        if not present:
            return run
        grid = self._grid(r, present, crs, resolution)
        run.crs, run.width, run.height = _crs_key(grid.crs), grid.width, grid.height
        run.resolution = grid.resolution
        px = grid.width * grid.height
        for f in formats:
            if f in ("geotiff", "memory"):
                run.export_bytes[f] = px * DIM * 4 + (px * 4 if f == "memory" else 0)
            elif f == "geotiff-int8":
                run.export_bytes[f] = px * (DIM + 4)
            elif f == "tiles":
                run.export_bytes[f] = sum(e.width * e.height * DIM * 4 for e in present)
            elif f == "zarr":
                run.export_bytes[f] = sum(g.width * g.height * (DIM + 4)
                                          for _, g, _ in self._zone_grids(r, present, True))
        return run

    # --- GeoTIFF --------------------------------------------------------------------------------------
    def export_geotiff(self, region: Any, year: int, path: str | os.PathLike,
                       dtype: str = "float32", crs: Any = None, resolution: float | None = None,
                       clip: bool = True, compress: str = "deflate", overwrite: bool = False
                       ) -> Path:
        """One tiled, compressed GeoTIFF of the region in one CRS (as `read_region`), written
        window by window (constant memory) under a temporary name and renamed when complete.

        float32: 128 bands of `q * s`, nodata NaN. int8: 128 bands of codes, nodata -128, and
        the float32 scales in a sibling `<name>_scales.tif` (a GeoTIFF holds one data type; NaN =
        no data), renamed before the main file so a present main file means both are complete.
        Bands are described `A00`..`A127`; tags name the version, year and tiles."""
        if dtype not in ("float32", "int8"):
            raise ClientError(f"export_geotiff: dtype {dtype!r}, expected 'float32' or 'int8'")
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
        r, present, absent = self._present(region, year, "export_geotiff")
        grid = self._grid(r, present, crs, resolution)
        mos = _Mosaic(self, present, grid, clip)
        tags = self._tags(year, present, absent, dtype)
        scales_path = path.with_name(f"{path.stem}_scales.tif") if dtype == "int8" else None
        self._write_geotiff(path, grid, mos, dtype, tags, compress, scales_path)
        return path

    @staticmethod
    def _tags(year: int, present: Sequence[TileEntry], absent: Sequence[str], dtype: str
              ) -> dict[str, str]:
        tags = {"TESSERA_VERSION": ",".join(sorted({e.version for e in present})),
                "TESSERA_YEAR": str(int(year)),
                "TESSERA_TILES": ",".join(e.tile for e in present),
                "TESSERA_TILES_ABSENT": ",".join(absent),
                "TESSERA_DTYPE": dtype}
        tags["TESSERA_VALUES"] = ("dequantised embeddings q * s; NaN = no data" if dtype == "float32"
                                  else "int8 codes q, e = q * s with s in the _scales.tif file; "
                                       f"{INT8_NODATA} = no data")
        return tags

    def _write_geotiff(self, path: Path, grid: TargetGrid, mos: _Mosaic, dtype: str,
                       tags: dict[str, str], compress: str, scales_path: Path | None) -> None:
        import rasterio

        dim = mos.dim
        px = grid.width * grid.height
        estimate = px * (dim * 4 if dtype == "float32" else dim + 4)
        block = TIFF_BLOCK
        profile = dict(driver="GTiff", width=grid.width, height=grid.height, crs=grid.crs,
                       transform=grid.transform, tiled=True, blockxsize=block,
                       blockysize=block, compress=compress, BIGTIFF="IF_SAFER",
                       interleave="pixel")
        tmp = _partial(path)
        tmp_s = _partial(scales_path) if scales_path else None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
                main = rasterio.open(tmp, "w", count=dim, dtype=dtype,
                                     nodata=np.nan if dtype == "float32" else INT8_NODATA,
                                     predictor=3 if dtype == "float32" else 2, **profile)
                side = (rasterio.open(tmp_s, "w", count=1, dtype="float32", nodata=np.nan,
                                      predictor=3, **profile) if tmp_s else None)
                try:
                    main.update_tags(**tags)
                    for i, name in enumerate(band_names(dim), start=1):
                        main.set_band_description(i, name)
                    if side is not None:
                        side.update_tags(**tags)
                        side.set_band_description(1, "scale")
                    for win in _windows(grid.height, grid.width, block):
                        if not mos.touching(win):
                            continue  # GDAL fills unwritten blocks with nodata
                        q, s = mos.read(win)
                        if dtype == "float32":
                            data = np.empty((dim, win.height, win.width), np.float32)
                            np.multiply(q.transpose(2, 0, 1), s[None], out=data)
                        else:
                            q[~np.isfinite(s)] = INT8_NODATA
                            data = np.ascontiguousarray(q.transpose(2, 0, 1))
                        del q
                        _write_window(main, data, win)
                        del data
                        if side is not None:
                            _write_window(side, s[None], win)
                finally:
                    main.close()
                    if side is not None:
                        side.close()
            if tmp_s is not None:
                os.replace(tmp_s, scales_path)  # type: ignore[arg-type]
            os.replace(tmp, path)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if tmp_s is not None:
                tmp_s.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise _disk_error(exc, path, estimate) from exc
            raise

    def export_tiles_geotiff(self, region: Any, year: int, out_dir: str | os.PathLike,
                             dtype: str = "float32", compress: str = "deflate") -> TilesExport:
        """The published per-tile layout `{year}/grid_{lon}_{lat}/grid_{lon}_{lat}_{year}.tiff`
        under `out_dir`, each tile in its own UTM CRS and pixels. Resumable: tiles whose file
        exists are skipped (files appear only when complete)."""
        if dtype not in ("float32", "int8"):
            raise ClientError(f"export_tiles_geotiff: dtype {dtype!r}, expected float32 or int8")
        r, present, absent = self._present(region, year, "export_tiles_geotiff")
        out_dir = Path(out_dir)
        res = TilesExport([], [], list(absent))
        for e in present:
            p = out_dir / geotiff_relpath(year, e.tile)
            if p.exists():
                res.skipped.append(p)
                continue
            grid = TargetGrid(_rio_crs(e.crs), e.affine, e.width, e.height, None, e.tile)
            mos = _Mosaic(self, [e], grid, clip=False)
            tags = self._tags(year, [e], [], dtype)
            sp = p.with_name(f"{p.stem}_scales.tif") if dtype == "int8" else None
            self._write_geotiff(p, grid, mos, dtype, tags, compress, sp)
            res.written.append(p)
        return res

    # --- Zarr -----------------------------------------------------------------------------------------
    def _zone_grids(self, r: Region, present: Sequence[TileEntry], clip: bool
                    ) -> list[tuple[str, TargetGrid, list[TileEntry]]]:
        """Per UTM zone of the present tiles: (group name `utm31n`, the zone's grid covering its
        tiles (within the region when `clip`) at the native pixel size, the zone's tiles)."""
        import shapely

        zones: dict[str, list[TileEntry]] = {}
        for e in present:
            zones.setdefault(_crs_key(_rio_crs(e.crs)), []).append(e)
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

    def export_zarr(self, region: Any, year: int, path: str | os.PathLike, clip: bool = True,
                    chunk: int | None = None, overwrite: bool = False) -> Path:
        """A Zarr v3 store of the region: one group per UTM zone (`utm31n`, ...) in its native
        CRS and pixels (no resampling), arrays `embeddings` int8 (y, x, band) chunked
        (chunk, chunk, D) and `scales` float32 (y, x), NaN = no data, plus `x` / `y` pixel-centre
        coordinates; described with the geoemb:, proj: and spatial: conventions. Written chunk
        window by chunk window into `.<name>.partial` with its progress recorded, renamed when
        complete; a rerun after an interruption continues where it stopped."""
        import zarr

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
        chunk = int(chunk or WINDOW)
        r, present, absent = self._present(region, year, "export_zarr")
        zones = self._zone_grids(r, present, clip)
        mosaics = [_Mosaic(self, es, g, clip) for _, g, es in zones]
        dim = mosaics[0].dim
        plan = hashlib.sha256(json.dumps({
            "year": int(year), "chunk": chunk, "clip": clip, "dim": dim,
            "tiles": [(e.tile, e.files["embeddings"].sha256, e.files["scales"].sha256)
                      for e in present],
            "zones": [(n, list(g.transform)[:6], g.width, g.height) for n, g, _ in zones],
        }).encode()).hexdigest()
        tmp = _partial(path)
        root = None
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
                root = self._zarr_create(tmp, zones, present, absent, year, dim, chunk, plan)
            progress = dict(root.attrs.get("tessera:progress", {}))
            for (name, grid, _), mos in zip(zones, mosaics):
                g = root[name]
                emb, sca = g["embeddings"], g["scales"]
                wins = _windows(grid.height, grid.width, chunk)
                for i in range(int(progress.get(name, 0)), len(wins)):
                    win = wins[i]
                    if mos.touching(win):
                        q, s = mos.read(win)
                        sl = (slice(win.row, win.row + win.height),
                              slice(win.col, win.col + win.width))
                        emb[sl] = q
                        sca[sl] = s
                        del q, s
                    progress[name] = i + 1
                    root.attrs["tessera:progress"] = progress  # after the window's data
            root.attrs["tessera:complete"] = True
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise OSError(errno.ENOSPC, f"{path}: no space left on device while exporting "
                              f"(about {_human(estimate)} uncompressed needed); the completed "
                              f"part is kept in {tmp} and a rerun continues it") from exc
            raise
        if path.exists():  # overwrite=True: the old store goes just before the new one lands
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        os.replace(tmp, path)
        return path

    def _zarr_create(self, tmp: Path, zones: list, present: Sequence[TileEntry],
                     absent: Sequence[str], year: int, dim: int, chunk: int, plan: str) -> Any:
        import zarr

        res = min(abs(e.transform[0]) for e in present)
        versions = ",".join(sorted({e.version for e in present}))
        simulated = any(e.version.startswith("simulated") for e in present)
        geoemb = {
            "geoemb:type": "pixel", "geoemb:dimensions": dim,
            "geoemb:model": f"urn:tessera:{versions}" if simulated else MODEL_URL,
            "geoemb:source_data": SOURCE_DATA, "geoemb:data_type": "int8", "geoemb:gsd": res,
            "geoemb:spatial_layout": "utm_zones",
            "geoemb:build_version": _package_version(), "tessera:version": versions,
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


class TileIterator(Iterator[EmbeddingRaster]):
    """Iterates the present tiles of a region (one in memory at a time); `present` and `absent`
    name the tiles before any is read."""

    def __init__(self, client: Client, present: list[TileEntry], absent: list[str],
                 dequantize: bool) -> None:
        self._client, self._dequantize = client, dequantize
        self.present = [e.tile for e in present]
        self.absent = list(absent)
        self._entries = iter(present)

    def __len__(self) -> int:
        return len(self.present)

    def __iter__(self) -> TileIterator:
        return self

    def __next__(self) -> EmbeddingRaster:
        return self._client._raster(next(self._entries), self._dequantize, self.absent)


__all__ = ["Client", "ClientError", "DryRun", "EmbeddingRaster", "MissingTilesWarning",
           "Region", "TileIterator", "TilesExport", "band_names", "points_lonlat",
           "GridError", "RegionError"]
