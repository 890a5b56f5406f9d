"""GeoTIFFs of embeddings: the one writer behind `tessera embed --geotiff` and the store's
exports, so every GeoTIFF of embeddings this package writes has the same bands, nodata and
layout, and GeoTessera's clients, torchgeo and plain rasterio / GDAL read it.

- float32 (the default): one band per embedding dimension holding `q * s`, nodata NaN. This
  is what GeoTessera's `export_embedding_geotiff(s)` writes and what torchgeo's
  `TesseraEmbeddings` and GeoTessera's `tiles.Tile` read (every band a dequantised value).
- int8 (exact codes, one file): a GeoTIFF holds one data type, so the codes cannot share an
  Int8 file with their float32 per-pixel scales. The file is therefore Float32 with N + 1
  bands: bands 1..N hold the int8 codes q exactly (integers -127..127; float32 holds every
  one of them exactly), band N + 1, described `scale`, holds the per-pixel scale s, and
  `embedding = band[1..N] * band[N + 1]` (bit for bit the float32 export). No data is NaN in
  every band. One open of one file is enough (rasterio, GDAL, a raster calculator's
  `band 1 * band 129`); the tags say so: TESSERA_DTYPE=int8, TESSERA_SCALE_BAND=<N + 1>
  (1-based), TESSERA_VALUES. Integer-valued floats compress well with the floating-point
  predictor: on the demo tile's 256 x 256 model output (deflate) 10.3 MB, against 20.9 MB
  for float32 and 6.9 MB for the Int8 file + `_scales.tif` pair of earlier versions, whose
  files (codes, nodata -128, scales in the sibling) `read_embeddings` still reads.
  GeoTessera and torchgeo read every band as an embedding value, so int8 files are not for
  them (the per-tile exports in their layouts refuse int8).
- Bands are described `Tessera_Band_{i}` as GeoTessera names them, i the ORIGINAL embedding
  dimension (a subset `bands=[0, 5, 127]` gives Tessera_Band_0, _5, _127), and listed in the
  TESSERA_BANDS tag ("0,5,127", as GeoTessera's Zarr exports record them).
- Tiled 128 x 128 (GeoTessera uses 256: any block size reads the same; with 128 bands per
  pixel-interleaved block, a 256 block is 32 MB to decompress for any read touching it, a
  128 block 8 MB, and the file sizes differ by 1-2 %), compressed (`COMPRESSIONS`; deflate by
  default: on the demo tile a float32 file is 62 % of its uncompressed size with deflate,
  87 % with LZW (GeoTessera's default), 86 % with zstd, and every GDAL reads deflate), with
  no predictor for float32 values (the floating-point predictor made them 36 % larger) and
  the floating-point predictor for int8 codes (10 % smaller), BigTIFF when needed,
  pixel-interleaved.
- Written window by window from a reader callback (constant memory, whatever the raster's
  size), under a temporary name renamed only when complete; a failure (a crash, Ctrl-C, no
  space left) leaves no file under the final name, and a full disk is reported with the file
  and the size needed.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera.atomic import atomic_path
from tessera.errors import InputError, human_bytes

DTYPES = ("float32", "int8")
#: GeoTIFF compressions offered (GDAL names; "none" writes uncompressed).
COMPRESSIONS = ("deflate", "zstd", "lzw", "none")
DEFAULT_COMPRESS = "deflate"
INT8_NODATA = -128   # no data in the Int8 files of earlier versions (never a code: |q| <= 127)
SCALE_BAND = "scale"  # description of the scale band of an int8 file
BLOCK = 128          # pixels: GeoTIFF block edge (128 x 128 x 128 float32 = 8 MB; with 128 bands
                     # per pixel, larger blocks cost readers and exporters RAM)
GDAL_CACHE_MB = 64   # bounds GDAL's block cache so writes do not grow with the raster
_DESCRIPTION = re.compile(r"^(?:Tessera_Band_|A)(\d+)$")


def band_names(dim: int) -> tuple[str, ...]:
    """`A000`, `A001`, ... : the band names of embedding rasters in xarray (`to_xarray`)."""
    return tuple(f"A{i:03d}" for i in range(dim))


def band_description(i: int) -> str:
    """GeoTessera's GeoTIFF band description of embedding dimension `i`: `Tessera_Band_{i}`."""
    return f"Tessera_Band_{int(i)}"


def scales_path(path: str | os.PathLike) -> Path:
    """The sibling `<stem>_scales.tif` that held the scales of an int8 GeoTIFF written by
    earlier versions (read by `read_embeddings`; no longer written)."""
    p = Path(path)
    return p.with_name(f"{p.stem}_scales.tif")


def parse_bands(spec: str | Sequence[int] | None, dim: int) -> tuple[int, ...] | None:
    """Embedding dimensions to write: None (all), a sequence of ints, or a text like "0,5,127"
    or "0-15,64" (ranges inclusive); in the given order, each once and in 0..dim-1, else an
    InputError (the rules and messages of `tessera.dims`, shared with sampling)."""
    from tessera import dims as dims_

    if spec is None:
        return None
    if isinstance(spec, str):
        return tuple(dims_.parse_bands(spec, dim))
    return tuple(dims_.check_bands(spec, dim))


def check_compress(compress: str | None) -> str:
    """The compression's canonical name (one of COMPRESSIONS), or an InputError."""
    name = DEFAULT_COMPRESS if compress is None else str(compress).strip().lower()
    if name not in COMPRESSIONS:
        raise InputError(f"compression {compress!r}: expected one of {', '.join(COMPRESSIONS)}")
    return name


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


def layout_tags(dtype: str, bands: Sequence[int]) -> dict[str, str]:
    """The tags that say how to read a file's bands (set by `write_embeddings`)."""
    tags = {"TESSERA_BANDS": ",".join(map(str, bands)), "TESSERA_DTYPE": dtype}
    if dtype == "int8":
        tags["TESSERA_SCALE_BAND"] = str(len(bands) + 1)
        tags["TESSERA_VALUES"] = (f"int8 codes q (exact, stored as float32) in bands "
                                  f"1..{len(bands)}, per-pixel scale s in band "
                                  f"{len(bands) + 1} ('{SCALE_BAND}'); embedding = q * s; "
                                  "NaN = no data")
    else:
        tags["TESSERA_VALUES"] = "dequantised embeddings q * s; NaN = no data"
    return tags


def write_embeddings(path: str | os.PathLike, *, crs: Any, transform: Any, width: int,
                     height: int, dim: int, read: WindowReader, dtype: str = "float32",
                     tags: Mapping[str, str] | None = None, compress: str = DEFAULT_COMPRESS,
                     block: int | None = None, window_size: int | None = None,
                     bands: str | Sequence[int] | None = None) -> list[Path]:
    """Write the embeddings of a `height` x `width` raster as one GeoTIFF, reading
    `window_size` windows (default: the block size) of `dim`-dimensional codes and scales with
    `read`; `bands` (default all) selects embedding dimensions. `tags` come first, then the
    layout's (`layout_tags`). Returns [the file written]."""
    import rasterio

    if dtype not in DTYPES:
        raise InputError(f"GeoTIFF dtype {dtype!r}: expected float32 or int8")
    compress = check_compress(compress)
    sel = parse_bands(bands, dim)
    idx = tuple(range(dim)) if sel is None else sel
    path = Path(path)
    block = int(block or BLOCK)
    size = int(window_size or block)
    count = len(idx) + (dtype == "int8")
    estimate = width * height * count * 4
    profile: dict[str, Any] = dict(
        driver="GTiff", width=width, height=height, crs=crs, transform=transform, count=count,
        dtype="float32", nodata=np.nan, tiled=True, blockxsize=block, blockysize=block,
        BIGTIFF="IF_SAFER", interleave="pixel")
    if compress != "none":  # predictors measured: see the module docstring
        profile.update(compress=compress, predictor=3 if dtype == "int8" else 1)
    all_tags = {**dict(tags or {}), **layout_tags(dtype, idx)}
    # a full or read-only disk becomes a WriteError naming the file (tessera.atomic)
    with atomic_path(path, needed=estimate) as tmp, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        _write(tmp, profile, dtype, None if sel is None else np.asarray(sel), idx, all_tags,
               read, windows(height, width, size))
    return [path]


def _write(tmp: Path, profile: dict[str, Any], dtype: str, sel: np.ndarray | None,
           idx: Sequence[int], tags: dict[str, str], read: WindowReader,
           wins: Iterable[Window]) -> None:
    import rasterio

    n = len(idx)
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.update_tags(**tags)
        for i, k in enumerate(idx, start=1):
            dst.set_band_description(i, band_description(k))
        if dtype == "int8":
            dst.set_band_description(n + 1, SCALE_BAND)
        for win in wins:
            got = read(win)
            if got is None:
                continue  # GDAL fills unwritten blocks with nodata
            q, s = got
            q = np.asarray(q)
            if sel is not None:
                q = np.take(q, sel, axis=2)
            data = np.empty((profile["count"], win.height, win.width), np.float32)
            codes = q.transpose(2, 0, 1)
            if dtype == "float32":
                np.multiply(codes, s[None], out=data)
            else:
                s = np.asarray(s, np.float32)
                data[:n] = codes
                data[n] = s
                data[:, ~np.isfinite(s)] = np.nan
            del q, codes
            write_window(dst, data, win)
            del data


def read_embeddings(path: str | os.PathLike, window: Window | None = None
                    ) -> tuple[np.ndarray, tuple[int, ...]]:
    """(float32 (H, W, N) embeddings, NaN = no data; their original dimensions) of a GeoTIFF of
    embeddings (or of `window` of it): this package's float32 and int8 files, int8 files of
    earlier versions with their sibling `_scales.tif`, and GeoTessera's exports."""
    import rasterio

    rw = None if window is None else window.rio()
    with rasterio.open(path) as src:
        tags, desc = src.tags(), list(src.descriptions)
        data = src.read(window=rw)
        dtype, nodata = src.dtypes[0], src.nodata
    scale_band = int(tags.get("TESSERA_SCALE_BAND", 0) or 0)
    if scale_band:
        codes = np.delete(data, scale_band - 1, axis=0)
        emb = codes * data[scale_band - 1][None]
        desc = desc[:scale_band - 1] + desc[scale_band:]
    elif dtype == "int8":  # earlier versions: Int8 codes + the sibling `_scales.tif`
        side = scales_path(path)
        if not side.exists():
            raise InputError(f"{path}: int8 codes without their scales ({side.name} is "
                             "missing)")
        with rasterio.open(side) as sc:
            s = sc.read(1, window=rw).astype(np.float32)
        s[data[0] == (INT8_NODATA if nodata is None else nodata)] = np.nan
        emb = data.astype(np.float32) * s[None]
    else:
        emb = data.astype(np.float32, copy=False)
        if nodata is not None and not np.isnan(nodata):
            emb[data == nodata] = np.nan
    n = emb.shape[0]
    listed = tags.get("TESSERA_BANDS")
    if listed and len(listed.split(",")) == n:
        dims = tuple(int(i) for i in listed.split(","))
    else:
        found = [_DESCRIPTION.match(d or "") for d in desc]
        dims = (tuple(int(m.group(1)) for m in found if m) if all(found) and len(found) == n
                else tuple(range(n)))
    return np.ascontiguousarray(np.moveaxis(emb, 0, -1), dtype=np.float32), dims


__all__ = ["BLOCK", "COMPRESSIONS", "DEFAULT_COMPRESS", "DTYPES", "INT8_NODATA", "SCALE_BAND",
           "Window", "WindowReader", "band_description", "band_names", "check_compress",
           "human_bytes", "layout_tags", "parse_bands", "read_embeddings", "scales_path",
           "windows", "write_embeddings", "write_window"]
