"""The client: embeddings of a tile, a region or points from any store, and exports.

A store is anything that implements `tessera.store.Store` (`LocalStore`, `HttpStore`), or a path
or URL to open one. What users of the published product asked for (SPEC section 7) shapes it:

- One CRS per mosaic: `read_region` and the GeoTIFF export use the UTM zone of the region's centre
  (or a given CRS) at the store's pixel size; how tiles are pasted and warped without seams or
  averaged codes is `tessera.store.mosaic`'s job.
- Constant memory: exports (`tessera.store.export`) and point sampling (`tessera.store.points`)
  stream window by window, tile by tile.
- Absent tiles are always named (a MissingTilesWarning plus the `absent` attribute), never
  silently skipped, and a dry run says what a request needs before doing it.

Embeddings are float32 `q * s` with NaN where there is no data, or int8 codes plus float32 scales
(NaN scale = no data) with `dequantize=False`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from tessera.errors import ClientError, ManifestError, RegionError, StoreError
from tessera.geo import GridTile, Region, TargetGrid, parse_tile_name, points_lonlat, tile_of
from tessera.geo.crs import crs_key, rio_crs, utm_crs
from tessera.geotiff import Window
from tessera.geo.region import RegionLike
from tessera.geotiff import parse_bands
from tessera.store import export, mosaic
from tessera.store.export import one_crs
from tessera.store.manifest import Manifest, TileEntry
from tessera.store.mosaic import Mosaic, TileOpener
from tessera.store.points import MaskOpener, is_landmask, sample_at_points
from tessera.store.protocol import Store
from tessera.store.results import (DIM, EXPORT_FORMATS, POINT_STATUSES, DryRun, EmbeddingRaster,
                                   MissingTilesWarning, PointMetadata, TilesExport)
from tessera.store.results import dequantize as dequantize_codes
from tessera.dims import check_bands

#: The default `iter_region` strip holds about this many bytes (codes, scales and floats).
STRIP_BYTES = 256 * 2**20


def _requested_crs(crs: Any, resolution: float | None) -> Any:
    """A user's output CRS as rasterio's, refusing unknown ones and a geographic CRS without a
    resolution in degrees (the store's pixel size is in metres)."""
    try:
        out = rio_crs(crs)
    except Exception as exc:  # rasterio's CRSError: an unknown code or bad WKT
        raise ClientError(f"crs {crs!r}: not a coordinate reference system rasterio knows "
                          f"({' '.join(str(exc).split())})") from None
    if out.is_geographic and resolution is None:
        raise ClientError(f"crs {out}: geographic, so give a resolution in degrees (the store's "
                          "pixel size is in metres)")
    return out


class Client:
    """Reads embeddings from a store (a `Store`, or a path / URL to open one) and exports them;
    see the module docstring for the guarantees."""

    def __init__(self, store: Store | str | os.PathLike, cache_dir: str | os.PathLike | None = None
                 ) -> None:
        if isinstance(store, (str, os.PathLike)):
            from tessera.store import open_store
            store = open_store(store, cache_dir=cache_dir)
        if not isinstance(store, Store):
            raise TypeError(f"{store!r}: not a store (needs manifest(), open_file(), is_local() "
                            "and describe(); see tessera.store.Store)")
        self.store: Store = store
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

    def check_year(self, year: int) -> None:
        """Refuse a year the store has no tile of, naming the years it has, and a year whose
        tiles come from different models (their embeddings are not comparable)."""
        years = self.years()
        if int(year) not in years:
            raise ClientError(f"year {year} is not in the store {self.store!r} (it has "
                              f"{', '.join(map(str, years)) or 'no tiles'})")
        try:
            self.manifest.check_one_model(int(year))
        except ManifestError as exc:
            raise ClientError(f"{self.store!r}: {exc}") from None

    def model(self, year: int) -> TileEntry | None:
        """A tile entry of the year, for its model, dims and weights (one model per year); only
        that entry is built (a GeoTessera store resolves a tile's georeferencing on use)."""
        tiles = self.manifest.query(year=int(year)).table.column("tile")
        if len(tiles) == 0:
            return None
        entries = self.manifest.query(year=int(year), tiles=[tiles[0].as_py()]).entries()
        return entries[0] if entries else None

    def dims(self, year: int) -> int:
        """The embedding width of the year's tiles (128 for the published model)."""
        held = self.model(year)
        return int(held.dims) if held is not None else DIM

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
        try:
            if mmap:
                q = np.load(qpath, mmap_mode="r", allow_pickle=False)
                s = np.load(spath, mmap_mode="r", allow_pickle=False)
            else:
                q = np.load(qpath, allow_pickle=False)
                s = np.load(spath, allow_pickle=False)
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

    def tile_opener(self) -> TileOpener:
        """A function opening stored tiles memory-mapped, each tile's files fetched from the
        store once however often it is called (one per mosaic or export)."""
        paths: dict[tuple[str, int], tuple[Path, Path]] = {}

        def open_tile(e: TileEntry) -> tuple[np.ndarray, np.ndarray]:
            key = (e.tile, int(e.year))
            if key not in paths:
                paths[key] = self._paths(e)
            return self._load(e, *paths[key], mmap=True)
        return open_tile

    def mask_opener(self) -> MaskOpener:
        """A function giving the local path of a tile's landmask (0 = water) where its mask
        file is one (stores in GeoTessera's layouts, `tessera.store.points.is_landmask`), else
        None; fetched from the store when first asked for."""
        def open_mask(e: TileEntry) -> Path | None:
            if not is_landmask(e):
                return None
            try:
                return Path(self.store.open_file(e.files["mask"]))
            except (StoreError, ManifestError, OSError) as exc:
                raise ClientError(f"{e.tile} {e.year}: cannot open its landmask "
                                  f"({exc})") from None
        return open_mask

    def _raster(self, e: TileEntry, dequantize: bool, absent: Sequence[str] = ()
                ) -> EmbeddingRaster:
        q, s = self._load(e, *self._paths(e), mmap=False)
        emb = dequantize_codes(q, s) if dequantize else q
        return EmbeddingRaster(emb, s, rio_crs(e.crs), e.affine, int(e.year), tile=e.tile,
                               tiles=(e.tile,), absent=tuple(absent), version=e.version,
                               model=e.model)

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
    def plan(self, region: RegionLike, year: int) -> tuple[Region, list[TileEntry], list[str]]:
        """(the parsed region, its tiles present in the store for `year`, names of the absent)."""
        r = Region.parse(region)
        names = [t.name for t in r.tiles]
        found = {e.tile: e for e in self.manifest.query(year=int(year), tiles=names).entries()}
        present = [found[n] for n in names if n in found]
        absent = [n for n in names if n not in found]
        return r, present, absent

    def present(self, region: RegionLike, year: int, what: str
                ) -> tuple[Region, list[TileEntry], list[str]]:
        """`plan`, for a request that needs data: an absent year or a region without any tile
        of that year is an error, absent tiles a MissingTilesWarning naming them."""
        self.check_year(year)
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

    def iter_tiles(self, region: RegionLike, year: int, dequantize: bool = True) -> TileIterator:
        """Each stored tile of the region for `year`, in its own CRS, one at a time. Absent tiles
        are named in a MissingTilesWarning and in the iterator's `absent` attribute."""
        self.check_year(year)
        r, present, absent = self.plan(region, year)
        if absent:
            warnings.warn(f"iter_tiles: {len(absent)} of {len(r.tiles)} tiles of {r.name} are "
                          f"not in the store for {year}: {', '.join(absent[:8])}"
                          f"{' ...' if len(absent) > 8 else ''}", MissingTilesWarning,
                          stacklevel=2)
        return TileIterator(self, present, absent, dequantize)

    def output_grid(self, r: Region, present: Sequence[TileEntry], crs: Any,
                    resolution: float | None) -> TargetGrid:
        """The output grid of a mosaic: `crs` or the UTM zone of the region's centre, at
        `resolution` or the store's pixel size, bounds snapped outward to multiples of it."""
        one_crs(r)
        if crs is not None:
            crs = _requested_crs(crs, resolution)
        if resolution is None:
            sizes = {abs(e.transform[0]) for e in present}
            resolution = min(sizes) if sizes else 10.0
        return TargetGrid.from_lonlat_geometry(r.geometry, name=r.name, resolution=resolution,
                                               crs=crs)

    def read_region(self, region: RegionLike, year: int, crs: Any = None,
                    resolution: float | None = None, dequantize: bool = True, clip: bool = True
                    ) -> EmbeddingRaster:
        """A mosaic of the region in one CRS (default: UTM zone of its centre at the store's pixel
        size), NaN (scale NaN) where there is no data or outside the region when `clip`. The whole
        mosaic is in memory: for large regions use the exports, which stream."""
        one_crs(Region.parse(region))
        r, present, absent = self.present(region, year, "read_region")
        grid = self.output_grid(r, present, crs, resolution)
        mos = Mosaic(self.tile_opener(), present, grid, clip)
        q = np.zeros((grid.height, grid.width, mos.dim), np.int8)
        s = np.full((grid.height, grid.width), np.nan, np.float32)
        for win in mosaic.windows(grid.height, grid.width):
            got = mos.read_if_touched(win)
            if got is not None:
                q[win.slices], s[win.slices] = got
        emb = dequantize_codes(q, s) if dequantize else q
        return EmbeddingRaster(emb, s, grid.crs, grid.transform, int(year),
                               tiles=tuple(e.tile for e in present), absent=tuple(absent),
                               version=",".join(sorted({e.version for e in present})),
                               model=",".join(sorted({e.model for e in present})))

    def read_region_xarray(self, region: RegionLike, year: int, crs: Any = None,
                           resolution: float | None = None, dequantize: bool = True,
                           clip: bool = True) -> Any:
        """`read_region` as an xarray.DataArray with dims (band, y, x), CRS and transform set
        with rioxarray (`.rio.crs`, `.rio.transform()`); a Dataset of int8 `embeddings` and
        float32 `scales` with dequantize=False. Needs `pip install 'tessera-eo[xarray]'`."""
        from tessera.errors import require

        require("rioxarray", "xarray", "read_region_xarray")
        return self.read_region(region, year, crs, resolution, dequantize, clip).to_xarray()

    # --- points ---------------------------------------------------------------------------------------
    @overload
    def sample_points(self, points: Any, year: int, metadata: Literal[False] = ...,
                      bands: Sequence[int] | None = ...) -> tuple[np.ndarray, np.ndarray]: ...

    @overload
    def sample_points(self, points: Any, year: int, metadata: Literal[True],
                      bands: Sequence[int] | None = ...
                      ) -> tuple[np.ndarray, np.ndarray, PointMetadata]: ...

    @overload
    def sample_points(self, points: Any, year: int, metadata: bool = ...,
                      bands: Sequence[int] | None = ...
                      ) -> (tuple[np.ndarray, np.ndarray]
                            | tuple[np.ndarray, np.ndarray, PointMetadata]): ...

    def sample_points(self, points: Any, year: int, metadata: bool = False,
                      bands: Sequence[int] | None = None
                      ) -> (tuple[np.ndarray, np.ndarray]
                            | tuple[np.ndarray, np.ndarray, PointMetadata]):
        """(float32 (N, D) embeddings, NaN unless valid; status (N,) of POINT_STATUSES: "valid",
        "water" (no data, and the tile's landmask says water: stores in GeoTessera's layouts),
        "nodata" (in a stored tile, no data there) or "outside" (no tile of that year in the
        store, or beyond the grid)); see `tessera.store.points.sample_at_points`. `points`:
        anything `tessera.geo.points_lonlat` reads. A year the store does not hold is an error.

        `metadata=True` adds a third item, `PointMetadata`: per point the tile read, its centre,
        the pixel's row and column and the tile's CRS (GeoTessera's `include_metadata`).
        `bands`: the dimensions to return (0-based, in that order; `tessera.dims`)."""
        try:
            lon, lat = points_lonlat(points)
        except RegionError as exc:
            raise ClientError(str(exc)) from None
        self.check_year(year)
        dims = self.dims(year)
        chosen = None if bands is None else check_bands(bands, dims)
        emb, status, meta = sample_at_points(self.manifest, lon, lat, year, self.tile_opener(),
                                             open_mask=self.mask_opener(), bands=chosen,
                                             dims=dims)
        return (emb, status, meta) if metadata else (emb, status)

    def probe(self, lon: float, lat: float, year: int) -> tuple[np.ndarray, str]:
        """(float32 (D,) embedding, NaN unless valid; its status: "valid", "water", "nodata" or
        "outside") at one point, as GeoTessera's Zarr reader's `probe(lon, lat, year)`."""
        emb, status = self.sample_points((np.array([float(lon)]), np.array([float(lat)])),
                                         year)
        return emb[0], str(status[0])

    # --- patches and strips -----------------------------------------------------------------------
    def read_patch(self, lon: float, lat: float, year: int, size: int = 256, crs: Any = None,
                   resolution: float | None = None, dequantize: bool = True
                   ) -> EmbeddingRaster:
        """A `size` x `size` pixel window centred on the point: the pixel containing it is at
        row and column `size // 2`. In the point's UTM zone (or `crs`) at the store's pixel size
        (or `resolution`), on the pixel lattice of the point's tile where it shares that CRS
        (its pixels are then the stored ones, unresampled), else on multiples of the pixel size;
        mosaicked across tiles and UTM zones as `read_region` does (tiles of other zones warped
        with nearest neighbour), NaN (scale NaN) where there is no data."""
        self.check_year(year)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ClientError(f"read_patch: size {size!r}: expected a positive number of "
                              "pixels")
        try:
            tile = tile_of(float(lon), float(lat))
        except RegionError as exc:
            raise ClientError(f"read_patch: {exc}") from None
        own = self.manifest.query(year=int(year), tiles=[tile.name]).entries()
        ref = own[0] if own else self.model(year)
        assert ref is not None  # check_year: the year has tiles
        if crs is not None:
            target = _requested_crs(crs, resolution)
        elif own:
            target = rio_crs(own[0].crs)
        else:
            try:
                target = rio_crs(utm_crs(float(lon), float(lat)).to_wkt())
            except RegionError as exc:
                raise ClientError(f"read_patch: {exc}") from None
        res = float(resolution) if resolution is not None else abs(float(ref.transform[0]))
        if not (math.isfinite(res) and res > 0):
            raise ClientError(f"read_patch: resolution {resolution!r}: expected a positive "
                              "pixel size")
        grid = self._patch_grid(float(lon), float(lat), target, res, int(size),
                                own[0] if own else None)
        w, s, e, n = grid.lonlat_bounds()
        bbox = (max(w, -180.0), max(s, -90.0), min(e, 180.0), min(n, 90.0))
        _, present, absent = self.present(bbox, year, "read_patch")
        mos = Mosaic(self.tile_opener(), present, grid, clip=False)
        return self._read_rows(mos, 0, grid.height, year, present, absent, dequantize)

    @staticmethod
    def _patch_grid(lon: float, lat: float, crs: Any, res: float, size: int,
                    own: TileEntry | None) -> TargetGrid:
        """The patch's grid: `size` x `size` pixels of `res`, the one containing the point at
        (size // 2, size // 2); on the own tile's lattice where it is in `crs` at `res`."""
        from affine import Affine

        from tessera.geo.crs import LONLAT, transformer

        x, y = transformer(LONLAT, crs_key(crs)).transform(lon, lat)
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ClientError(f"read_patch: ({lon}, {lat}) has no coordinates in {crs}")
        half = size // 2
        a = own.affine if own is not None else None
        if (a is not None and own is not None and crs_key(rio_crs(own.crs)) == crs_key(crs)
                and not a.b and not a.d and a.e < 0
                and math.isclose(a.a, res, rel_tol=1e-9) and math.isclose(-a.e, res, rel_tol=1e-9)):
            col, row = math.floor((x - a.c) / a.a), math.floor((y - a.f) / a.e)
            left, top = a.c + (col - half) * a.a, a.f + (row - half) * a.e
        else:
            left = (math.floor(x / res) - half) * res
            top = (math.floor(y / res) + 1 + half) * res
        return TargetGrid(crs, Affine(res, 0.0, left, 0.0, -res, top), size, size, None,
                          f"patch at ({lon:g}, {lat:g})")

    def iter_region(self, region: RegionLike, year: int, strip_rows: int | None = None,
                    crs: Any = None, resolution: float | None = None, dequantize: bool = True,
                    clip: bool = True) -> RegionStrips:
        """The region's mosaic (the grid of `read_region`, same arguments) as horizontal strips
        of `strip_rows` rows (the last one shorter), top to bottom, each an `EmbeddingRaster`
        with its own transform; concatenated along rows they are `read_region`'s result. Memory
        is one strip, so a region far larger than memory can be processed strip by strip. The
        default strip holds about STRIP_BYTES (whole windows of rows where it can). Checks and
        absent-tile warnings happen here, before the first strip is read."""
        one_crs(Region.parse(region))
        r, present, absent = self.present(region, year, "iter_region")
        grid = self.output_grid(r, present, crs, resolution)
        mos = Mosaic(self.tile_opener(), present, grid, clip)
        if strip_rows is None:
            per_row = grid.width * (mos.dim * (5 if dequantize else 1) + 4)
            strip_rows = max(1, STRIP_BYTES // max(per_row, 1))
            if strip_rows >= mosaic.WINDOW:
                strip_rows -= strip_rows % mosaic.WINDOW
        elif (isinstance(strip_rows, bool) or not isinstance(strip_rows, (int, np.integer))
              or strip_rows < 1):
            raise ClientError(f"iter_region: strip_rows {strip_rows!r}: expected a positive "
                              "number of rows")
        return RegionStrips(self, mos, int(year), present, absent, min(int(strip_rows),
                                                                       grid.height), dequantize)

    def _read_rows(self, mos: Mosaic, row0: int, rows: int, year: int,
                   present: Sequence[TileEntry], absent: Sequence[str], dequantize: bool
                   ) -> EmbeddingRaster:
        """Rows `row0 .. row0 + rows` of a mosaic's grid, read window by window."""
        g = mos.grid
        q = np.zeros((rows, g.width, mos.dim), np.int8)
        s = np.full((rows, g.width), np.nan, np.float32)
        for win in mosaic.windows(rows, g.width):
            got = mos.read_if_touched(Window(row0 + win.row, win.col, win.height, win.width))
            if got is not None:
                q[win.slices], s[win.slices] = got
        emb = dequantize_codes(q, s) if dequantize else q
        return EmbeddingRaster(emb, s, g.crs, mosaic.shift(g.transform, 0, row0), int(year),
                               tiles=tuple(e.tile for e in present), absent=tuple(absent),
                               version=",".join(sorted({e.version for e in present})),
                               model=",".join(sorted({e.model for e in present})))

    # --- dry run --------------------------------------------------------------------------------------
    def dry_run(self, region: RegionLike, year: int, formats: Iterable[str] = ("geotiff",),
                crs: Any = None, resolution: float | None = None,
                bands: str | Sequence[int] | None = None) -> DryRun:
        """What reading or exporting the region would need: tiles present and absent, files and
        bytes to read and to download, and the uncompressed size each export format would
        write (`geotiff` float32, `geotiff-int8` codes plus the scale band, `zarr`, `tiles`
        per-tile float32 GeoTIFFs, `memory` for read_region); the GeoTIFF formats of `bands`
        only when given. Reads the manifest only."""
        formats = [formats] if isinstance(formats, str) else list(formats)
        bad = [f for f in formats if f not in EXPORT_FORMATS]
        if bad:
            raise ClientError(f"dry_run: unknown formats {bad}; expected some of {EXPORT_FORMATS}")
        r, present, absent = self.plan(region, year)
        files = [e.files[k] for e in present for k in ("embeddings", "scales")]
        total = sum(f.size for f in files)
        download = sum(f.size for f in files if not self.store.is_local(f))
        run = DryRun(r.name, int(year), [e.tile for e in present], absent, len(files), total,
                     download, {})
        if not present:
            return run
        grid = self.output_grid(r, present, crs, resolution)
        run.crs, run.width, run.height = crs_key(grid.crs), grid.width, grid.height
        run.resolution = grid.resolution
        px = grid.width * grid.height
        sel = parse_bands(bands, min(int(e.dims) for e in present))
        nb = DIM if sel is None else len(sel)  # bands of the GeoTIFF formats
        for f in formats:
            if f == "memory":
                run.export_bytes[f] = px * DIM * 4 + px * 4
            elif f == "geotiff":
                run.export_bytes[f] = px * nb * 4
            elif f == "geotiff-int8":
                run.export_bytes[f] = px * (nb + 1) * 4  # float32 codes + the scale band
            elif f == "tiles":
                run.export_bytes[f] = sum(e.width * e.height * nb * 4 for e in present)
            elif f == "zarr":
                run.export_bytes[f] = sum(g.width * g.height * (DIM + 4)
                                          for _, g, _ in export.zone_grids(r, present, True))
        return run

    # --- exports (tessera.store.export) --------------------------------------------------------------
    def export_geotiff(self, region: RegionLike, year: int, path: str | os.PathLike,
                       dtype: str = "float32", crs: Any = None, resolution: float | None = None,
                       clip: bool = True, compress: str = "deflate", overwrite: bool = False,
                       bands: str | Sequence[int] | None = None) -> Path:
        """One tiled, compressed GeoTIFF of the region in one CRS, streamed window by window;
        `bands` a subset of the embedding dimensions (e.g. [0, 5, 127] or "0-15"), `compress`
        deflate, zstd, lzw or none; see `tessera.store.export.export_geotiff`."""
        return export.export_geotiff(self, region, year, path, dtype, crs, resolution, clip,
                                     compress, overwrite, bands=bands)

    def export_tiles_geotiff(self, region: RegionLike, year: int, out_dir: str | os.PathLike,
                             dtype: str = "float32", compress: str = "deflate",
                             bands: str | Sequence[int] | None = None, layout: str = "tessera",
                             overwrite: bool = False) -> TilesExport:
        """One GeoTIFF per tile named grid_{lon}_{lat}_{year}.tiff (torchgeo and GeoTessera read
        them) in the folders of `layout` ("tessera", "geotessera" or "flat"); see
        `tessera.store.export.export_tiles_geotiff`."""
        return export.export_tiles_geotiff(self, region, year, out_dir, dtype, compress,
                                           bands=bands, layout=layout, overwrite=overwrite)

    def export_zarr(self, region: RegionLike, year: int, path: str | os.PathLike, clip: bool = True,
                    chunk: int | None = None, overwrite: bool = False) -> Path:
        """A resumable Zarr v3 store, one group per UTM zone; see `tessera.store.export`."""
        return export.export_zarr(self, region, year, path, clip, chunk, overwrite)


class RegionStrips(Iterator[EmbeddingRaster]):
    """Iterates a region's mosaic strip by strip (`Client.iter_region`), one strip in memory at a
    time. `grid` is the whole mosaic's grid, `strip_rows` the rows per strip, `present` and
    `absent` name the tiles before any is read; `len()` is the number of strips."""

    def __init__(self, client: Client, mos: Mosaic, year: int, present: list[TileEntry],
                 absent: list[str], strip_rows: int, dequantize: bool) -> None:
        self._client, self._mos, self._year = client, mos, year
        self._entries, self._dequantize = present, dequantize
        self.grid: TargetGrid = mos.grid
        self.strip_rows = strip_rows
        self.present = [e.tile for e in present]
        self.absent = list(absent)
        self._row = 0

    def __len__(self) -> int:
        return -(-self.grid.height // self.strip_rows)

    def __iter__(self) -> RegionStrips:
        return self

    def __next__(self) -> EmbeddingRaster:
        if self._row >= self.grid.height:
            raise StopIteration
        row0, rows = self._row, min(self.strip_rows, self.grid.height - self._row)
        self._row += rows
        return self._client._read_rows(self._mos, row0, rows, self._year, self._entries,
                                       self.absent, self._dequantize)


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


__all__ = ["POINT_STATUSES", "STRIP_BYTES", "Client", "ClientError", "DryRun", "EmbeddingRaster",
           "MissingTilesWarning", "PointMetadata", "RegionStrips", "TileIterator", "TilesExport"]
