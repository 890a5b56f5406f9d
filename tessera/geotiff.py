"""GeoTIFFs of embeddings: the one writer behind `tessera embed --geotiff` and the store's
exports, so every GeoTIFF of embeddings this package writes has the same bands, nodata and
layout.

- float32: one file, 128 bands of `q * s`, nodata NaN.
- int8: 128 bands of the codes, nodata -128 (never produced by the symmetric quantisation,
  |q| <= 127), plus the float32 scales in a sibling `<stem>_scales.tif` (a GeoTIFF holds one
  data type; NaN = no data). The scales file is renamed into place before the main file, so a
  present main file means both are complete.
- Bands are described `A000`..`A127` (zero-padded, so they sort), tiled, compressed (predictor
  3 for floats, 2 for integers), BigTIFF when needed, pixel-interleaved.
- Written window by window from a reader callback (constant memory, whatever the raster's
  size), under temporary names renamed only when complete; a failure (a crash, Ctrl-C, no space
  left) leaves no file under the final names, and a full disk is reported with the file and the
  size needed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from tessera.atomic import atomic_path
from tessera.errors import InputError, human_bytes

DTYPES = ("float32", "int8")
INT8_NODATA = -128   # never produced by the symmetric quantisation (|q| <= 127)
BLOCK = 128          # pixels: GeoTIFF block edge (128 x 128 x 128 float32 = 8 MB; with 128 bands
                     # per pixel, larger blocks cost readers and exporters RAM)
GDAL_CACHE_MB = 64   # bounds GDAL's block cache so writes do not grow with the raster


def band_names(dim: int) -> tuple[str, ...]:
    """`A000`, `A001`, ... : the band names of embedding rasters (GeoTIFF descriptions, xarray)."""
    return tuple(f"A{i:03d}" for i in range(dim))


def scales_path(path: str | os.PathLike) -> Path:
    """The sibling file that holds the scales of an int8 GeoTIFF: `<stem>_scales.tif`."""
    p = Path(path)
    return p.with_name(f"{p.stem}_scales.tif")


@dataclasses.dataclass(frozen=True)
class Window:
    """A block of the output raster: rows `row..row+height`, columns `col..col+width`."""

    row: int
    col: int
    height: int
    width: int

    def rio(self) -> Any:
        from rasterio.windows import Window as RioWindow
        return RioWindow(self.col, self.row, self.width, self.height)

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


def windows(height: int, width: int, size: int) -> list[Window]:
    """Row-major `size` x `size` windows covering a raster (smaller at the right and bottom)."""
    return [Window(r, c, min(size, height - r), min(size, width - c))
            for r in range(0, height, size) for c in range(0, width, size)]


#: Reads one window: (int8 (h, w, D) codes, float32 (h, w) scales with NaN = no data), or None
#: when the window holds no data at all (it is then left to the nodata fill).
WindowReader = Callable[[Window], "tuple[np.ndarray, np.ndarray] | None"]


def write_window(dst: Any, data: np.ndarray, win: Window) -> None:
    """One window of a GeoTIFF (a seam for tests to interrupt)."""
    dst.write(data, window=win.rio())


def write_embeddings(path: str | os.PathLike, *, crs: Any, transform: Any, width: int,
                     height: int, dim: int, read: WindowReader, dtype: str = "float32",
                     tags: Mapping[str, str] | None = None, compress: str = "deflate",
                     block: int | None = None, window_size: int | None = None) -> list[Path]:
    """Write the embeddings of a `height` x `width` raster as a GeoTIFF (int8: plus its
    `_scales.tif`), reading `window_size` windows (default: the block size) with `read`.
    Returns the files written (main file first)."""
    import rasterio

    if dtype not in DTYPES:
        raise InputError(f"GeoTIFF dtype {dtype!r}: expected float32 or int8")
    path = Path(path)
    block = int(block or BLOCK)
    size = int(window_size or block)
    side = scales_path(path) if dtype == "int8" else None
    estimate = width * height * (dim * 4 if dtype == "float32" else dim + 4)
    profile = dict(driver="GTiff", width=width, height=height, crs=crs, transform=transform,
                   tiled=True, blockxsize=block, blockysize=block, compress=compress,
                   BIGTIFF="IF_SAFER", interleave="pixel")
    tags = dict(tags or {})
    with ExitStack() as stack:
        # entered main first, so the scales file (exited first) is renamed before it; a full or
        # read-only disk becomes a WriteError naming the file (tessera.atomic)
        tmp = stack.enter_context(atomic_path(path, needed=estimate))
        tmp_s = stack.enter_context(atomic_path(side)) if side is not None else None
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            _write(tmp, tmp_s, profile, dim, dtype, tags, read, windows(height, width, size))
    return [path] if side is None else [path, side]


def _write(tmp: Path, tmp_s: Path | None, profile: dict[str, Any], dim: int, dtype: str,
           tags: dict[str, str], read: WindowReader, wins: Iterable[Window]) -> None:
    import rasterio

    main = rasterio.open(tmp, "w", count=dim, dtype=dtype,
                         nodata=np.nan if dtype == "float32" else INT8_NODATA,
                         predictor=3 if dtype == "float32" else 2, **profile)
    side = (rasterio.open(tmp_s, "w", count=1, dtype="float32", nodata=np.nan, predictor=3,
                          **profile) if tmp_s is not None else None)
    try:
        main.update_tags(**tags)
        for i, name in enumerate(band_names(dim), start=1):
            main.set_band_description(i, name)
        if side is not None:
            side.update_tags(**tags)
            side.set_band_description(1, "scale")
        for win in wins:
            got = read(win)
            if got is None:
                continue  # GDAL fills unwritten blocks with nodata
            q, s = got
            if dtype == "float32":
                data = np.empty((dim, win.height, win.width), np.float32)
                np.multiply(np.asarray(q).transpose(2, 0, 1), s[None], out=data)
            else:
                q = np.array(q, dtype=np.int8)  # a copy: nodata is written into it
                q[~np.isfinite(s)] = INT8_NODATA
                data = np.ascontiguousarray(q.transpose(2, 0, 1))
            del q
            write_window(main, data, win)
            del data
            if side is not None:
                write_window(side, np.asarray(s, np.float32)[None], win)
    finally:
        main.close()
        if side is not None:
            side.close()


__all__ = ["BLOCK", "DTYPES", "INT8_NODATA", "Window", "WindowReader", "band_names",
           "human_bytes", "scales_path", "windows", "write_embeddings", "write_window"]
