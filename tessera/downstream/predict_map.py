"""Prediction maps: a fitted downstream head applied to every pixel of a region (or a tile) of a
store, written as one GeoTIFF (and optionally a PNG preview with a legend).

Memory is bounded and the same for a 100 km region as for a tile: the region's mosaic is read
strip by strip (`Client.iter_region`, int8 codes, dequantised per batch exactly as `read_region`
does), each strip's valid pixels are predicted in batches of `batch`, and the predictions are
buffered one row of GeoTIFF blocks at a time and written block by block. What is held at once:
one strip of codes (about MAP_STRIP_BYTES), one batch of float32 embeddings and the head's
work on it, one row of output blocks, and the PNG preview (at most PREVIEW_MAX px a side). The
file is written under a temporary name and renamed when complete (with the PNG, together): a
failure (an error, Ctrl-C, a full disk) leaves nothing under the final names.

A head that sees neighbourhoods (one with `predict_dense` and `context`: the UNet) is given
windows instead of pixels: output tiles of DENSE_TILE px, each predicted from a window with
`context` px more on each side (cropped at the grid's edges) and stitched. With the UNet's
context the stitched map equals a prediction of the whole raster at once; what is held is the
strips covering DENSE_TILE + 2 x context rows and one window.

The GeoTIFF (tiled BLOCK x BLOCK, deflate, the mosaic's CRS and transform):

- classification: 2 bands of one integer type (a GeoTIFF has one data type and one nodata
  value for all its bands): uint8 with nodata 255 when the head has at most 254 classes, else
  uint16 with nodata 65535.
  - band 1, described "class": the class index (0-based, into the head's classes) that the
    head predicts (the argmax of `predict_proba`: what `Head.predict` returns, in one pass),
    with a colour table (distinct colours: matplotlib's tab20, its ten dark shades first, then
    tab20b / tab20c, then evenly spaced hues; or the `colors` given; no data transparent) and
    the class names in the tags: CLASS_NAMES (a JSON list) and CLASS_<i> = name per class,
    also set on band 1.
  - band 2, described "confidence": the largest class probability in percent, rounded to an
    integer 0..100 (an integer band keeps the file small and shares the class band's type;
    1 % is finer than any calibration of these heads).
  - nodata (255 / 65535) in both bands where the store has no embedding.
- regression: 1 float32 band described "value", NaN where there is no embedding.
- tags (both): TESSERA_PRODUCT, TESSERA_HEAD (the head kind), TESSERA_TASK, TESSERA_MODEL (the
  embedding model id), TESSERA_YEAR, TESSERA_REGION, TESSERA_EMBEDDING_BANDS (the dimensions
  the head reads, "all" or "0,5,127"), TESSERA_VALUES (how to read the bands).

The PNG preview (`png`): the map downsampled by an integer factor (nearest, every k-th pixel)
to at most PREVIEW_MAX px on the long side, with a legend of class colours and names (at most
LEGEND_MAX entries; the most frequent first when there are more) or a colour bar (viridis over
the 2nd..98th percentile of the previewed values) for regression; matplotlib without pyplot.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tessera import geotiff
from tessera.atomic import atomic_paths
from tessera.dims import check_bands
from tessera.errors import HeadError, InputError
from tessera.geotiff import Window
from tessera.progress import Progress, task
from tessera.store.results import EmbeddingRaster

if TYPE_CHECKING:
    from tessera.store.client import Client

#: Bytes of int8 codes (+ scales) per strip read from the store: memory does not grow with the
#: region (the client's own default strip, STRIP_BYTES, is larger).
MAP_STRIP_BYTES = 64 * 2**20
BLOCK = 256          # GeoTIFF block edge of the maps (2 small bands: 128 KB a block)
PREVIEW_MAX = 2048   # px: the PNG preview's long side at most
LEGEND_MAX = 40      # classes named in the PNG legend at most
DEFAULT_BATCH = 65536
#: Heads that see neighbourhoods (the UNet): output tiles of this edge, each predicted from a
#: window with the head's `context` more pixels on each side (a multiple of 4: the pooling grid)
DENSE_TILE = 192
GDAL_CACHE_MB = 64


class Head(Protocol):
    """What `predict_map` needs of a fitted head (`tessera.downstream.heads.Head`): `info` with
    `task` ("classification" | "regression"), `classes` (names in index order), `model` (the
    embedding model id), `bands` (dimensions used, None = all) and optionally `kind`; `predict`
    / `predict_proba` on full-width float32 (N, D) embeddings; `check_input`. A head that sees
    neighbourhoods has instead `predict_dense` on (N, H, W, D) windows (NaN = no embedding)
    giving (N, C, H, W) probabilities or (N, 1, H, W) values, and `context` (pixels)."""

    @property
    def info(self) -> Any: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def check_input(self, model: str, dims: int, where: str) -> None: ...


@dataclasses.dataclass
class MapResult:
    """What `predict_map` wrote: the files, the map's grid, what it holds, and how long it took.
    `counts` maps each class name to its pixel count (classification) and is empty for
    regression, whose `stats` hold min / max / mean of the predicted values."""

    tif: Path
    png: Path | None
    task: str
    shape: tuple[int, int]         # (height, width) in pixels
    crs: Any                       # rasterio CRS
    transform: Any                 # affine.Affine
    dtype: str                     # the GeoTIFF's data type
    nodata: float
    classes: list[str]
    counts: dict[str, int]
    valid_pixels: int              # pixels with an embedding (and a prediction)
    seconds: float
    stats: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def pixels(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nodata_pixels(self) -> int:
        return self.pixels - self.valid_pixels

    @property
    def pixels_per_second(self) -> float:
        return self.pixels / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        h, w = self.shape
        head = (f"{self.tif}: {self.task} map {w} x {h} px, {self.valid_pixels:,} predicted, "
                f"{self.nodata_pixels:,} without data, {self.seconds:.1f} s")
        if self.counts:
            top = sorted(self.counts.items(), key=lambda kv: -kv[1])[:8]
            head += "; " + ", ".join(f"{k}: {v:,}" for k, v in top)
        elif self.stats:
            head += "; " + ", ".join(f"{k} {v:.4g}" for k, v in self.stats.items())
        return head + (f"; preview {self.png}" if self.png else "")


def write_window(dst: Any, data: np.ndarray, win: Window) -> None:
    """One window of the map's GeoTIFF (a seam for tests to interrupt)."""
    geotiff.write_window(dst, data, win)


# --- colours -------------------------------------------------------------------------------------

def class_colors(classes: Sequence[str], colors: Mapping[Any, Any] | Sequence[Any] | None = None
                 ) -> np.ndarray:
    """uint8 (C, 3) distinct RGB colours, one per class: matplotlib's tab20 (the ten dark
    shades, then their light pairs), then tab20b and
    tab20c (60 in all), then evenly spaced hues. `colors` overrides some or all: a mapping from
    class name or index to any matplotlib colour ("red", "#1f77b4", (r, g, b) in 0..1 or 0..255),
    or a sequence with one colour per class."""
    import matplotlib
    from matplotlib.colors import hsv_to_rgb, to_rgb

    n = len(classes)
    base: list[tuple[float, float, float]] = []
    for name in ("tab20", "tab20b", "tab20c"):  # dark shades first, then their light pairs
        cmap = matplotlib.colormaps[name]
        order = [*range(0, cmap.N, 2), *range(1, cmap.N, 2)] if name == "tab20" else \
            range(cmap.N)
        base += [(float(c[0]), float(c[1]), float(c[2])) for c in map(cmap, order)]
    if n > len(base):
        extra = n - len(base)
        hsv = np.column_stack([np.arange(extra) / extra, np.full(extra, 0.75),
                               np.where(np.arange(extra) % 2, 0.7, 0.95)])
        base += [(float(c[0]), float(c[1]), float(c[2])) for c in hsv_to_rgb(hsv)]
    out = np.array(base[:n], dtype=np.float64).reshape(n, 3)
    if colors is not None:
        if isinstance(colors, Mapping):
            items = list(colors.items())
        else:
            seq = list(colors)
            if len(seq) != n:
                raise InputError(f"colors: {len(seq)} given for {n} classes (give one per "
                                 "class, or a mapping from class name to colour)")
            items = list(enumerate(seq))
        index = {str(c): i for i, c in enumerate(classes)}
        for key, value in items:
            if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < n:
                i = int(key)
            elif str(key) in index:
                i = index[str(key)]
            else:
                raise InputError(f"colors: {key!r} is not a class of the head (it has "
                                 f"{', '.join(map(str, classes[:10]))}"
                                 f"{' ...' if n > 10 else ''})")
            out[i] = _rgb(value, to_rgb)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def _rgb(value: Any, to_rgb: Any) -> tuple[float, float, float]:
    """A colour as RGB in 0..1; (r, g, b[, a]) with any value above 1 is read as 0..255."""
    if isinstance(value, (tuple, list, np.ndarray)) and len(value) in (3, 4) and \
            all(isinstance(v, (int, float, np.number)) for v in value):
        v = np.asarray(value, float)[:3]
        if (v > 1).any():
            v = v / 255.0
        if not ((v >= 0) & (v <= 1)).all():
            raise InputError(f"colors: {value!r} is not an RGB colour")
        return float(v[0]), float(v[1]), float(v[2])
    try:
        r, g, b = to_rgb(value)
    except ValueError:
        raise InputError(f"colors: {value!r} is not a colour matplotlib knows") from None
    return float(r), float(g), float(b)


# --- the map -------------------------------------------------------------------------------------

def predict_map(head: Head, client: Client, region: Any, year: int, out_tif: str | os.PathLike,
                *, png: str | os.PathLike | None = None, crs: Any = None,
                resolution: float | None = None, strip_rows: int | None = None,
                batch: int = DEFAULT_BATCH, colors: Mapping[Any, Any] | Sequence[Any] | None = None,
                progress: Progress | None = None) -> MapResult:
    """Apply a fitted head to every pixel of `region` (anything `Client.iter_region` takes: a
    bbox, a geometry, a GeoJSON file, a tile name) in `year` of the client's store, and write the
    map to `out_tif` (and a preview to `png`); see the module docstring for the layout. The grid
    is `read_region`'s (UTM zone of the region's centre or `crs`, the store's pixel size or
    `resolution`); `strip_rows` rows are read at a time (default: about MAP_STRIP_BYTES of
    codes); `batch` pixels go to the head at a time. An existing file under either name is
    replaced (atomically). The head must come from the store's embedding model
    (`head.check_input`). The head is given every embedding dimension of the store and picks
    its own `head.info.bands` (as `tessera.downstream.heads` heads do: their input is the full
    width); the bands are checked against the store's width first."""
    from tessera.geo import Region
    from tessera.store.mosaic import WINDOW

    year = int(year)
    client.check_year(year)
    entry = client.model(year)
    dims = int(entry.dims) if entry is not None else client.dims(year)
    model = str(entry.model) if entry is not None else ""
    head.check_input(model, dims, f"the store {client.store.describe()} for {year}")
    name = Region.parse(region).name
    if strip_rows is None:  # about MAP_STRIP_BYTES of codes, whole read windows where it can
        r, present, _ = client.plan(region, year)
        width = client.output_grid(r, present, crs, resolution).width if present else 1
        strip_rows = max(1, MAP_STRIP_BYTES // max(width * (dims + 4), 1))
        if strip_rows >= WINDOW:
            strip_rows -= strip_rows % WINDOW
    strips = client.iter_region(region, year, strip_rows=strip_rows, crs=crs,
                                resolution=resolution, dequantize=False)
    g = strips.grid
    return predict_strips(head, strips, crs=g.crs, transform=g.transform, width=g.width,
                          height=g.height, dims=dims, out_tif=out_tif, png=png, batch=batch,
                          colors=colors, progress=progress,
                          tags={"TESSERA_MODEL": model, "TESSERA_YEAR": str(year),
                                "TESSERA_REGION": name}, title=f"{name}, {year}")


def predict_strips(head: Head, strips: Iterable[EmbeddingRaster], *, crs: Any, transform: Any,
                   width: int, height: int, dims: int, out_tif: str | os.PathLike,
                   png: str | os.PathLike | None = None, batch: int = DEFAULT_BATCH,
                   colors: Mapping[Any, Any] | Sequence[Any] | None = None,
                   progress: Progress | None = None, tags: Mapping[str, str] | None = None,
                   title: str = "") -> MapResult:
    """`predict_map`'s work on any source of strips: consecutive full-width horizontal strips
    (top to bottom, `height` rows in all) of a `height` x `width` grid, each an EmbeddingRaster
    of int8 codes or float32 embeddings with `dims` dimensions and scales (NaN = no data). The
    head is not checked against a model here (`predict_map` does that)."""
    import rasterio

    t0 = time.perf_counter()
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise InputError(f"predict map: batch {batch!r}: expected a positive number of pixels")
    info = head.info
    kind = str(getattr(info, "kind", None) or type(head).__name__)
    task_name = str(info.task)
    if task_name not in ("classification", "regression"):
        raise HeadError(f"predict map: head task {task_name!r}: expected classification or "
                         "regression")
    bands = getattr(info, "bands", None)
    try:
        sel = None if bands is None else np.asarray(check_bands(bands, dims, "head bands"))
    except InputError as exc:
        raise HeadError(str(exc)) from None
    classes = [str(c) for c in (info.classes or [])] if task_name == "classification" else []
    if task_name == "classification" and not classes:
        raise HeadError("predict map: the classification head names no classes")
    width, height = int(width), int(height)
    nodata: float
    descriptions: tuple[str, ...]
    if task_name == "classification":
        dtype, nodata = ("uint8", 255) if len(classes) <= 254 else ("uint16", 65535)
        if len(classes) > 65534:
            raise InputError(f"predict map: {len(classes)} classes; at most 65534 fit a map")
        count, descriptions = 2, ("class", "confidence")
    else:
        dtype, nodata, count, descriptions = "float32", math.nan, 1, ("value",)
    rgb = class_colors(classes, colors) if classes else None

    all_tags: dict[str, str] = {
        "TESSERA_PRODUCT": f"{task_name} map of a downstream head on TESSERA embeddings",
        "TESSERA_HEAD": kind, "TESSERA_TASK": task_name,
        **{k: str(v) for k, v in (tags or {}).items()},
        "TESSERA_EMBEDDING_BANDS": "all" if sel is None else ",".join(map(str, sel.tolist())),
    }
    band_tags: dict[str, str] = {}
    if classes:
        all_tags["TESSERA_VALUES"] = (
            f"band 1 'class': class index into CLASS_NAMES (0-based); band 2 'confidence': "
            f"largest class probability in percent (0..100); {nodata} = no data")
        all_tags["CLASS_NAMES"] = json.dumps(classes)
        band_tags = {f"CLASS_{i}": c for i, c in enumerate(classes)}
        all_tags.update(band_tags)
    else:
        all_tags["TESSERA_VALUES"] = "band 1 'value': the predicted value; NaN = no data"
    if hasattr(info, "target") and getattr(info, "target", None):
        all_tags["TESSERA_TARGET"] = str(info.target)

    profile: dict[str, Any] = dict(
        driver="GTiff", width=width, height=height, count=count, dtype=dtype, nodata=nodata,
        crs=crs, transform=transform, tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
        compress="deflate", interleave="pixel", BIGTIFF="IF_SAFER")
    itemsize = np.dtype(dtype).itemsize
    finals = [Path(out_tif)] + ([Path(png)] if png is not None else [])
    state = _State(task_name, classes, dtype, nodata, count, width, height)
    bar = task(progress, f"predict {task_name} map", total=width * height, unit="px")

    with atomic_paths(finals, needed=width * height * count * itemsize) as tmps, \
            rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        with rasterio.open(tmps[0], "w", **profile) as dst:
            dst.update_tags(**all_tags)
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
            if rgb is not None:
                dst.update_tags(1, **band_tags)
                cmap = {i: (int(r), int(g), int(b), 255) for i, (r, g, b) in enumerate(rgb)}
                if dtype == "uint8":
                    cmap[255] = (0, 0, 0, 0)
                dst.write_colormap(1, cmap)
            row = 0
            outs: Iterable[np.ndarray] = (
                _dense_outputs(head, strips, dims, width, height, state, bar)
                if callable(getattr(head, "predict_dense", None)) else
                (_predict_strip(head, strip, dims, width, batch, state, bar) for strip in strips))
            for out in outs:
                state.add(dst, out, row)
                row += out.shape[1]
                bar.advance(out.shape[1] * width)
            if row != height:
                raise InputError(f"predict map: the strips hold {row} rows, the grid {height}")
            state.flush(dst)
        if png is not None:
            _write_preview(tmps[1], state, rgb, title or kind, kind)
    seconds = time.perf_counter() - t0
    counts = ({c: int(n) for c, n in zip(classes, state.counts)} if classes else {})
    stats: dict[str, float] = {}
    if not classes and state.valid:
        stats = {"min": state.vmin, "max": state.vmax, "mean": state.vsum / state.valid}
    return MapResult(Path(out_tif), Path(png) if png is not None else None, task_name,
                     (height, width), crs, transform, dtype, float(nodata), classes, counts,
                     int(state.valid), seconds, stats)


class _State:
    """The output side: one row of GeoTIFF blocks buffered and written block by block, the
    preview (every k-th row and column) and the running counts."""

    def __init__(self, task_name: str, classes: list[str], dtype: str, nodata: float,
                 count: int, width: int, height: int) -> None:
        self.task, self.classes, self.dtype, self.nodata = task_name, classes, dtype, nodata
        self.count, self.width, self.height = count, width, height
        self.buf = np.full((count, BLOCK, width), nodata, dtype)
        self.buf_row0 = 0      # grid row of the buffer's first row
        self.filled = 0        # rows of the buffer filled
        self.k = max(1, math.ceil(max(width, height) / PREVIEW_MAX))
        self.preview = np.full((-(-height // self.k), -(-width // self.k)), nodata, dtype)
        self.counts = np.zeros(max(len(classes), 1), np.int64)
        self.valid = 0
        self.vmin, self.vmax, self.vsum = math.inf, -math.inf, 0.0

    def add(self, dst: Any, out: np.ndarray, row0: int) -> None:
        """A strip's predictions (count, h, width), its first row `row0` of the grid."""
        h = out.shape[1]
        rows = np.arange((-row0) % self.k, h, self.k)
        if rows.size:
            self.preview[(row0 + rows) // self.k] = out[0][rows][:, ::self.k]
        done = 0
        while done < h:
            n = min(BLOCK - self.filled, h - done)
            self.buf[:, self.filled:self.filled + n] = out[:, done:done + n]
            self.filled += n
            done += n
            if self.filled == BLOCK:
                self.flush(dst)

    def flush(self, dst: Any) -> None:
        """Write the buffered rows block by block (windows holding no data are left to GDAL's
        nodata fill) and start the next row of blocks."""
        rows = self.filled
        if rows == 0:
            return
        for c in range(0, self.width, BLOCK):
            w = min(BLOCK, self.width - c)
            data = self.buf[:, :rows, c:c + w]
            empty = (np.isnan(data[0]).all() if self.dtype == "float32"
                     else bool((data[0] == self.nodata).all()))
            if not empty:
                write_window(dst, np.ascontiguousarray(data), Window(self.buf_row0, c, rows, w))
        self.buf_row0 += rows
        self.filled = 0
        self.buf.fill(self.nodata)


def _predict_strip(head: Head, strip: EmbeddingRaster, dims: int,
                   width: int, batch: int, state: _State, bar: Any) -> np.ndarray:
    """(count, h, width) predictions of one strip, nodata where it has no embedding."""
    s = np.asarray(strip.scales)
    h = s.shape[0]
    emb = np.asarray(strip.embeddings)
    if s.shape != (h, width) or emb.shape != (h, width, dims):
        raise InputError(f"predict map: a strip of {emb.shape} embeddings and {s.shape} scales "
                         f"in a grid {width} px wide of {dims}-dimensional embeddings")
    codes = emb.dtype == np.int8
    flat = emb.reshape(h * width, dims)
    sflat = s.reshape(-1)
    idx = np.flatnonzero(np.isfinite(sflat))
    out = np.full((state.count, h * width), state.nodata, state.dtype)
    for b0 in range(0, idx.size, batch):
        j = idx[b0:b0 + batch]
        x = flat[j]  # full width: the head takes its own `bands` (tessera.downstream.heads)
        if codes:  # exactly `dequantize` (read_region): float32 codes times the scale
            x = x.astype(np.float32)
            x *= sflat[j, None]
        else:
            x = np.ascontiguousarray(x, dtype=np.float32)
        if state.task == "classification":
            p = np.asarray(head.predict_proba(x))
            if p.ndim != 2 or p.shape != (j.size, len(state.classes)):
                raise HeadError(f"predict map: the head's predict_proba gave {p.shape} for "
                                 f"{j.size} pixels and {len(state.classes)} classes")
            label = p.argmax(axis=1)
            conf = np.rint(p[np.arange(j.size), label] * 100.0)
            out[0, j] = label
            out[1, j] = np.clip(conf, 0, 100)
            state.counts += np.bincount(label, minlength=len(state.classes))
        else:
            v = np.asarray(head.predict(x), dtype=np.float32)
            if v.ndim == 2 and v.shape[1] == 1:
                v = v[:, 0]
            if v.shape != (j.size,):
                raise HeadError(f"predict map: the head's predict gave {v.shape} for "
                                 f"{j.size} pixels; a map holds one value per pixel")
            out[0, j] = v
            fin = v[np.isfinite(v)]
            if fin.size:
                state.vmin = min(state.vmin, float(fin.min()))
                state.vmax = max(state.vmax, float(fin.max()))
                state.vsum += float(fin.astype(np.float64).sum())
        state.valid += j.size
        bar.update(info=f"{state.valid:,} px predicted")
    return out.reshape(state.count, h, width)


def _dense_outputs(head: Any, strips: Iterable[EmbeddingRaster], dims: int, width: int,
                   height: int, state: _State, bar: Any) -> Iterator[np.ndarray]:
    """Predictions (count, rows, width) of a head that sees neighbourhoods (`predict_dense`, the
    UNet), band by band of DENSE_TILE rows, top to bottom: each DENSE_TILE x DENSE_TILE output
    tile is predicted from a window with `head.context` more pixels on each side (clipped at the
    grid's edges) and cropped, so the stitched map equals a prediction of the whole raster.
    Held at once: the strips covering one band and its context rows, and one window."""
    m = int(getattr(head, "context", 0))
    if m < 0 or m % 4 or DENSE_TILE % 4:
        raise HeadError(f"predict map: head context {m}: expected a multiple of 4 pixels")
    buf_e: np.ndarray | None = None  # the rows read and still needed (codes or floats)
    buf_s = np.zeros((0, width), np.float32)
    buf0 = end = a = 0  # grid rows: the buffer's first, the first not read, the next band's
    it = iter(strips)
    exhausted = False
    while a < height:
        while end < min(height, a + DENSE_TILE + m) and not exhausted:
            strip = next(it, None)
            if strip is None:
                exhausted = True
                break
            s = np.asarray(strip.scales, np.float32)
            e = np.asarray(strip.embeddings)
            h = s.shape[0]
            if s.shape != (h, width) or e.shape != (h, width, dims):
                raise InputError(f"predict map: a strip of {e.shape} embeddings and {s.shape} "
                                 f"scales in a grid {width} px wide of {dims}-dimensional "
                                 "embeddings")
            buf_e = e if buf_e is None else np.concatenate([buf_e, e])
            buf_s = np.concatenate([buf_s, s])
            end += h
        if end <= a or buf_e is None:
            return  # the strips ran out: predict_strips reports the missing rows
        b = min(a + DENSE_TILE, end)
        yield _dense_band(head, buf_e, buf_s, buf0, a, b, min(end, b + m) - buf0, m, state, bar)
        a = b
        drop = max(0, a - m) - buf0
        buf_e, buf_s, buf0 = buf_e[drop:], buf_s[drop:], buf0 + drop
    if next(it, None) is not None:
        raise InputError(f"predict map: the strips hold more rows than the grid ({height})")


def _dense_band(head: Any, emb: np.ndarray, scales: np.ndarray, buf0: int, a: int, b: int,
                stop: int, m: int, state: _State, bar: Any) -> np.ndarray:
    """Output rows a..b (grid rows) of `_dense_outputs`: `emb` / `scales` hold grid rows
    buf0..buf0 + stop of the context needed (and maybe more)."""
    width = scales.shape[1]
    start = max(0, a - m) - buf0  # the windows' rows in the buffer: start..stop
    out = np.full((state.count, b - a, width), state.nodata, state.dtype)
    valid = np.isfinite(scales[a - buf0:b - buf0])
    for c in range(0, width, DENSE_TILE):
        c1 = min(width, c + DENSE_TILE)
        ok = valid[:, c:c1]
        if not ok.any():
            continue
        w0, w1 = max(0, c - m), min(width, c1 + m)
        s = scales[start:stop, w0:w1]
        x = np.asarray(emb[start:stop, w0:w1], dtype=np.float32)
        if emb.dtype == np.int8:  # exactly `dequantize`: float32 codes times the scale
            x = x * s[..., None]
        x[~np.isfinite(s)] = np.nan
        r0, c0 = a - buf0 - start, c - w0  # the output tile inside the window
        p = np.asarray(head.predict_dense(x[None]))[0][:, r0:r0 + b - a, c0:c0 + c1 - c]
        part = out[:, :, c:c1]
        if state.task == "classification":
            if p.shape[0] != len(state.classes):
                raise HeadError(f"predict map: the head's predict_dense gave {p.shape[0]} "
                                f"outputs for {len(state.classes)} classes")
            label = p.argmax(axis=0)
            conf = np.clip(np.rint(np.take_along_axis(p, label[None], 0)[0] * 100.0), 0, 100)
            part[0][ok] = label[ok]
            part[1][ok] = conf[ok]
            state.counts += np.bincount(label[ok], minlength=len(state.classes))
        else:
            v = p[0].astype(np.float32)
            part[0][ok] = v[ok]
            fin = v[ok & np.isfinite(v)]
            if fin.size:
                state.vmin = min(state.vmin, float(fin.min()))
                state.vmax = max(state.vmax, float(fin.max()))
                state.vsum += float(fin.astype(np.float64).sum())
        state.valid += int(ok.sum())
        bar.update(info=f"{state.valid:,} px predicted")
    return out


# --- the preview ---------------------------------------------------------------------------------

def _write_preview(path: Path, state: _State, rgb: np.ndarray | None, title: str,
                   kind: str) -> None:
    """The PNG preview with its legend or colour bar, written to `path` (a temporary name): the
    image at about one figure pixel per preview pixel, the legend beside it."""
    from matplotlib.figure import Figure

    pv = state.preview
    ph, pw = pv.shape
    dpi, head_h = 100, 0.5  # inches above the image for the title
    img_w, img_h = max(pw / dpi, 3.0), max(ph / dpi, 3.0)
    order = np.arange(0)
    ncol = 1
    if rgb is not None:
        order = (np.arange(len(state.classes)) if len(state.classes) <= LEGEND_MAX
                 else np.argsort(-state.counts, kind="stable")[:LEGEND_MAX])
        ncol = 1 if len(order) <= 20 else 2
        legend_w, legend_h = 2.4 * ncol, 0.19 * math.ceil(len(order) / ncol) + 0.6
    else:
        legend_w, legend_h = 1.4, 0.0
    fig_w, body_h = img_w + legend_w, max(img_h, legend_h)
    fig_h = body_h + head_h
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    bottom = (body_h - img_h) / 2 / fig_h
    ax = fig.add_axes((0.0, bottom, img_w / fig_w, img_h / fig_h))
    ax.set_axis_off()
    k = f" (every {state.k}th px)" if state.k > 1 else ""
    fig.suptitle(f"{kind} {state.task}: {title}{k}", fontsize=9, y=1 - 0.1 / fig_h, va="top")
    if rgb is not None:
        from matplotlib.patches import Patch

        n = len(rgb)
        table = np.zeros((n + 1, 4), np.uint8)  # the last entry: no data, transparent
        table[:n, :3] = rgb
        table[:n, 3] = 255
        lab = np.where(pv == state.nodata, n, pv).astype(np.int64)
        ax.imshow(table[lab], interpolation="nearest")
        total = max(int(state.counts.sum()), 1)
        handles = [Patch(facecolor=rgb[i] / 255.0, edgecolor="black", linewidth=0.3,
                         label=f"{state.classes[i][:24]} "
                               f"({100.0 * state.counts[i] / total:.1f} %)")
                   for i in order]
        more = len(state.classes) - len(order)
        fig.legend(handles=handles, loc="center left", ncol=ncol, fontsize=7,
                   bbox_to_anchor=(img_w / fig_w, body_h / 2 / fig_h), frameon=False,
                   title=f"classes ({more} more not shown)" if more > 0 else "classes",
                   title_fontsize=8)
    else:
        fin = pv[np.isfinite(pv)]
        lo, hi = (np.percentile(fin, [2, 98]) if fin.size else (0.0, 1.0))
        if not hi > lo:
            hi = lo + 1.0
        im = ax.imshow(np.ma.masked_invalid(pv), cmap="viridis", vmin=float(lo), vmax=float(hi),
                       interpolation="nearest")
        cax = fig.add_axes(((img_w + 0.25) / fig_w, bottom + 0.1 * img_h / fig_h,
                            0.25 / fig_w, 0.8 * img_h / fig_h))
        fig.colorbar(im, cax=cax, label="predicted value (2-98 % range)")
    fig.savefig(path, format="png", dpi=dpi)


__all__ = ["BLOCK", "DEFAULT_BATCH", "LEGEND_MAX", "MAP_STRIP_BYTES", "PREVIEW_MAX", "Head",
           "MapResult", "class_colors", "predict_map", "predict_strips", "write_window"]
