"""PCA pictures of embedding files (GeoTIFFs, .npy tiles, Zarr; see `tessera.viz.sources`):
`tessera visualize FILE ... -o picture.png`.

The same colour model as for stores (`tessera.viz.pca`): one PCA fit for all the inputs, on a
sample drawn exactly as from a store (valid pixels only, the same generator, the same order), so
a tile exported to a GeoTIFF and pictured gets the colours its store gives it. A single input is
drawn on its own pixel grid (every k-th pixel when it exceeds `max_size`); several are mosaicked
into one grid (nearest neighbour): their shared CRS and pixel lattice when they have one, else
the UTM zone of their centre.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera.errors import VizError
from tessera.geo import TargetGrid
from tessera.geo.crs import LONLAT
from tessera.progress import Progress, task
from tessera.viz.balance import check_balance, stretch_of
from tessera.viz.pca import PcaRgb, fit_sample, pick_pixels, sample_plan
from tessera.viz.render import finish_picture, fitted_grid, pca_tags
from tessera.viz.sources import EmbeddingRaster, open_inputs

#: Values (pixels x dimensions) coloured at once (64 MB of float32).
STRIP_VALUES = 1 << 24
#: A single input of at most this many values (512 MB of float32; a 10 m tile of 128
#: dimensions is about 100 M) is read once and held, instead of once for the valid pixels,
#: once for the sample and once for the colours.
CACHE_VALUES = 1 << 27


@dataclasses.dataclass
class View:
    """The pixels of a raster a picture uses: rows x columns of it (a crop, every `step`-th
    pixel, the middle one of each step x step block), with the transform of that grid."""

    raster: EmbeddingRaster
    rows: np.ndarray   # native row of each picture row
    cols: np.ndarray
    row0: int
    col0: int
    step: int
    data: np.ndarray | None = dataclasses.field(default=None, repr=False)  # see `hold`

    @classmethod
    def of(cls, raster: EmbeddingRaster, window: tuple[int, int, int, int] | None = None,
           step: int = 1) -> View:
        r0, r1, c0, c1 = window or (0, raster.height, 0, raster.width)
        step = max(1, int(step))
        rows = np.minimum(np.arange(r0, r1, step) + step // 2, r1 - 1)
        cols = np.minimum(np.arange(c0, c1, step) + step // 2, c1 - 1)
        return cls(raster, rows.astype(np.int64), cols.astype(np.int64), r0, c0, step)

    @property
    def height(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int:
        return len(self.cols)

    @property
    def transform(self) -> Any:
        from affine import Affine

        t = self.raster.transform
        if t is None:
            return None
        return t * Affine.translation(self.col0, self.row0) * Affine.scale(self.step)

    def strips(self) -> Iterator[tuple[int, int]]:
        n = max(1, STRIP_VALUES // max(1, self.width * self.raster.dim))
        for i in range(0, self.height, n):
            yield i, min(self.height, i + n)

    def hold(self, progress_task: Any = None) -> None:
        """Read the whole view once (strip by strip) and keep it: later reads are from memory."""
        data = np.empty((self.height, self.width, self.raster.dim), np.float32)
        for i0, i1 in self.strips():
            data[i0:i1] = self.raster.read(self.rows[i0:i1], self.cols)
            if progress_task is not None:
                progress_task.advance((i1 - i0) * self.width)
        self.data = data

    def read(self, i0: int, i1: int) -> np.ndarray:
        """float32 (i1 - i0, width, D) embeddings of picture rows i0..i1, NaN = no data."""
        if self.data is not None:
            return self.data[i0:i1]
        return self.raster.read(self.rows[i0:i1], self.cols)

    def valid(self, i0: int, i1: int) -> np.ndarray:
        if self.data is not None:
            return np.asarray(np.isfinite(self.data[i0:i1]).all(axis=2))
        return self.raster.valid(self.rows[i0:i1], self.cols)


@dataclasses.dataclass
class RenderedFiles:
    png: Path
    tif: Path | None
    sidecars: list[Path]           # world file and .aux.xml of the PNG (with --crs)
    grid: TargetGrid | None        # of the picture; None when the input is not georeferenced
    width: int
    height: int
    inputs: list[str]              # the rasters drawn
    pca: PcaRgb


# --- which pixels ---------------------------------------------------------------------------

def _window(r: EmbeddingRaster, bbox: tuple[float, float, float, float]
            ) -> tuple[int, int, int, int] | None:
    """The rows and columns of `r` inside a lon/lat bbox, None when it lies outside."""
    from rasterio.warp import transform_bounds

    if not r.georeferenced:
        raise VizError(f"{r.label}: not georeferenced, so a --bbox cannot be placed on it (for "
                       ".npy tiles give --landmask)")
    w, s, e, n = transform_bounds(LONLAT, r.crs, *bbox, densify_pts=21)
    t = r.transform
    xs = sorted(((w - t.c) / t.a, (e - t.c) / t.a))
    ys = sorted(((n - t.f) / t.e, (s - t.f) / t.e))
    c0, c1 = max(0, math.floor(xs[0])), min(r.width, math.ceil(xs[1]))
    r0, r1 = max(0, math.floor(ys[0])), min(r.height, math.ceil(ys[1]))
    return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None


def _res(r: EmbeddingRaster) -> float:
    return float(min(abs(r.transform.a), abs(r.transform.e)))


def _same_lattice(rasters: Sequence[EmbeddingRaster]) -> bool:
    """One CRS, one pixel size, pixel edges on one lattice (so a mosaic needs no resampling)."""
    a = rasters[0]
    for r in rasters[1:]:
        if r.crs != a.crs or not np.allclose([r.transform.a, r.transform.e],
                                             [a.transform.a, a.transform.e], rtol=1e-9):
            return False
        for off, px in ((r.transform.c - a.transform.c, a.transform.a),
                        (r.transform.f - a.transform.f, a.transform.e)):
            k = off / px
            if abs(k - round(k)) > 1e-6:
                return False
    return True


def _lattice_grid(views: Sequence[View], factor: int) -> TargetGrid:
    """The grid covering `views` on the first raster's pixel lattice, `factor` times coarser."""
    from rasterio.transform import from_origin

    t0 = views[0].raster.transform
    res_x, res_y = abs(t0.a) * factor, abs(t0.e) * factor
    lefts, rights, bottoms, tops = [], [], [], []
    for v in views:
        t = v.raster.transform
        x0, y0 = t * (v.col0, v.row0)
        x1, y1 = t * (v.col0 + v.width * v.step, v.row0 + v.height * v.step)
        lefts.append(min(x0, x1))
        rights.append(max(x0, x1))
        bottoms.append(min(y0, y1))
        tops.append(max(y0, y1))
    x0 = t0.c + math.floor(round((min(lefts) - t0.c) / res_x, 6)) * res_x
    y1 = t0.f + math.ceil(round((max(tops) - t0.f) / res_y, 6)) * res_y
    w = max(1, math.ceil(round((max(rights) - x0) / res_x, 6)))
    h = max(1, math.ceil(round((y1 - min(bottoms)) / res_y, 6)))
    return TargetGrid(views[0].raster.crs, from_origin(x0, y1, res_x, res_y), w, h, None,
                      "mosaic")


def _lonlat_union(views: Sequence[View]) -> Any:
    from rasterio.warp import transform_bounds
    from shapely import union_all
    from shapely.geometry import box

    boxes = []
    for v in views:
        t = v.raster.transform
        x0, y0 = t * (v.col0, v.row0)
        x1, y1 = t * (v.col0 + v.width * v.step, v.row0 + v.height * v.step)
        b = transform_bounds(v.raster.crs, LONLAT, min(x0, x1), min(y0, y1), max(x0, x1),
                             max(y0, y1), densify_pts=21)
        boxes.append(box(*b))
    geom = union_all(boxes)
    if geom.bounds[2] - geom.bounds[0] > 180:
        raise VizError("the inputs span more than 180 degrees of longitude; pictures across the "
                       "antimeridian are not supported")
    return geom


def plan_views(rasters: Sequence[EmbeddingRaster], bbox: tuple[float, float, float, float] | None,
               max_size: int) -> tuple[list[View], TargetGrid | None]:
    """The views to read and the grid of the mosaic (None: one raster, drawn on its own grid,
    every k-th pixel so that neither side exceeds `max_size`)."""
    if int(max_size) < 1:
        raise VizError(f"max_size {max_size}: expected a positive number of pixels")
    wins: list[tuple[EmbeddingRaster, tuple[int, int, int, int] | None]] = []
    for r in rasters:
        win = _window(r, bbox) if bbox is not None else None
        if bbox is not None and win is None:
            continue
        wins.append((r, win))
    if not wins:
        raise VizError(f"bbox {tuple(bbox or ())}: none of the inputs covers it ("
                       + ", ".join(r.label for r in rasters[:3])
                       + (" ..." if len(rasters) > 3 else "") + ")")
    if len(wins) == 1:
        r, win = wins[0]
        h = (win[1] - win[0]) if win else r.height
        w = (win[3] - win[2]) if win else r.width
        return [View.of(r, win, math.ceil(max(h, w) / int(max_size)))], None
    bad = [r.label for r, _ in wins if not r.georeferenced]
    if bad:
        raise VizError(f"{bad[0]}: not georeferenced, so it cannot be mosaicked with the other "
                       "inputs (for .npy tiles give --landmask)")
    full = [View.of(r, win) for r, win in wins]
    if _same_lattice([r for r, _ in wins]):
        factor = 1
        while True:
            grid = _lattice_grid(full, factor)
            if max(grid.width, grid.height) <= int(max_size):
                break
            factor = max(factor + 1, math.ceil(factor * max(grid.width, grid.height)
                                               / int(max_size)))
    else:
        geom = _lonlat_union(full)
        grid = fitted_grid(geom, "mosaic", min(_res(r) for r, _ in wins), max_size)
    res = grid.resolution
    views = [View.of(r, win, max(1, math.floor(res / _res(r) + 1e-9))) for r, win in wins]
    return views, grid


# --- the fit -----------------------------------------------------------------------------------

def _describe(views: Sequence[View]) -> str:
    names = ", ".join(v.raster.label for v in views[:3])
    return names + (f" and {len(views) - 3} more" if len(views) > 3 else "")


def fit_views(views: Sequence[View], n_sample: int = 100_000, seed: int = 0,
              stretch: str = "percentile", progress: Progress | None = None) -> PcaRgb:
    """One PCA fit for all `views`, on a sample of their valid pixels drawn as
    `tessera.viz.pca.sample_pixels` draws it from a store's tiles (so one tile gives the same
    fit either way)."""
    if int(n_sample) < 3:
        raise VizError(f"n_sample {n_sample}: expected at least 3 pixels for a 3-component PCA")
    bar = task(progress, "sampling", sum(v.height * v.width for v in views), "px")
    masks: list[np.ndarray] = []
    for v in views:
        m = np.zeros((v.height, v.width), bool)
        for i0, i1 in v.strips():
            m[i0:i1] = v.valid(i0, i1)
            bar.advance((i1 - i0) * v.width)
        masks.append(m.ravel())
    counts = np.array([int(m.sum()) for m in masks], np.int64)
    total = int(counts.sum())
    if total == 0:
        raise VizError(f"{_describe(views)}: no valid pixels (every pixel is no data: NaN "
                       "embeddings or NaN / infinite scales); nothing to picture")
    if total < 3:
        raise VizError(f"{_describe(views)}: {total} valid pixel(s); a PCA needs at least 3")
    rng, per = sample_plan(counts, n_sample, seed)
    parts = []
    for v, m, k in zip(views, masks, per):
        if k == 0:
            continue
        idx = pick_pixels(rng, np.flatnonzero(m), int(k))
        rows = idx // v.width
        got = np.empty((len(idx), v.raster.dim), np.float32)
        for i0, i1 in v.strips():
            sel = np.flatnonzero((rows >= i0) & (rows < i1))
            if len(sel) == 0:
                continue
            e = v.read(i0, i1)
            got[sel] = e[rows[sel] - i0, idx[sel] % v.width]
        parts.append(got)
    x = np.concatenate(parts)
    if not np.isfinite(x).all():  # a pixel valid by its scale with non-finite codes: corrupt
        raise VizError(f"{_describe(views)}: pixels with finite scales but non-finite values")
    years = sorted({v.raster.year for v in views if v.raster.year is not None})
    return fit_sample(x, stretch=stretch, seed=seed, year=years[0] if len(years) == 1 else None,
                      tiles=[v.raster.tile or v.raster.label for v in views])


# --- colouring -------------------------------------------------------------------------------

def view_rgba(view: View, pca: PcaRgb, progress_task: Any = None) -> np.ndarray:
    """uint8 (h, w, 4) RGBA of a view (alpha 0 = no data), strip by strip."""
    pca._check_dim(view.raster.dim, view.raster.label)
    out = np.zeros((view.height, view.width, 4), np.uint8)
    for i0, i1 in view.strips():
        out[i0:i1] = pca.apply(view.read(i0, i1))
        if progress_task is not None:
            progress_task.advance((i1 - i0) * view.width)
    return out


def _mosaic(views: Sequence[View], rgbas: Sequence[np.ndarray], grid: TargetGrid) -> np.ndarray:
    from rasterio.warp import Resampling, reproject

    out = np.zeros((grid.height, grid.width, 4), np.uint8)
    for v, rgba in zip(views, rgbas):
        if not rgba[..., 3].any():
            continue
        tmp = np.zeros((4, grid.height, grid.width), np.uint8)
        reproject(np.ascontiguousarray(np.moveaxis(rgba, 2, 0)), tmp,
                  src_transform=v.transform, src_crs=v.raster.crs,
                  dst_transform=grid.transform, dst_crs=grid.crs,
                  resampling=Resampling.nearest, num_threads=1)
        put = (out[..., 3] == 0) & (tmp[3] > 0)  # first input wins where inputs overlap
        out[put] = np.moveaxis(tmp, 0, 2)[put]
    return out


def render_files(inputs: Sequence[str | os.PathLike[str]], png_path: str | os.PathLike[str],
                 tif_path: str | os.PathLike[str] | None = None, *,
                 year: int | None = None, landmask: str | os.PathLike[str] | None = None,
                 bbox: tuple[float, float, float, float] | None = None,
                 pca: PcaRgb | str | os.PathLike | None = None, balance: str = "percentile",
                 crs: Any = None, world_file: bool = False, max_size: int = 4096,
                 n_sample: int = 100_000, seed: int = 0,
                 progress: Progress | None = None) -> RenderedFiles:
    """A PCA false-colour picture (RGBA PNG, transparent where there is no data) of embedding
    files: GeoTIFFs, .npy tiles, Zarr stores or folders of them (`tessera.viz.sources`).

    `year` picks one year of a multi-year Zarr (and skips other years' files in folders);
    `landmask` georeferences .npy tiles (a GeoTIFF, or a folder of `grid_X_Y.tiff`); `bbox`
    (lon/lat) crops. `pca`: a fit (or its JSON) to reuse, else one is fitted on the inputs with
    the stretch of `balance` ("percentile", "histogram"; "adaptive" adds local equalisation of
    the finished picture). `crs` (e.g. "EPSG:3857") reprojects the picture (nearest neighbour);
    the PNG then gets a world file and a `.aux.xml` (also with `world_file`). `tif_path`: the
    same picture as an RGB + alpha GeoTIFF. Inputs without georeferencing (a .npy tile without
    landmask) give a plain PNG."""
    check_balance(balance)
    rasters = open_inputs([Path(p) for p in inputs], year=year, landmask=landmask)
    views, grid = plan_views(rasters, bbox, max_size)
    if len(views) == 1 and views[0].height * views[0].width * views[0].raster.dim <= \
            CACHE_VALUES:
        views[0].hold(task(progress, "reading", views[0].height * views[0].width, "px"))
    if pca is None:
        fit = fit_views(views, n_sample, seed, stretch_of(balance), progress)
    else:
        fit = pca if isinstance(pca, PcaRgb) else PcaRgb.load(pca)
    bar = task(progress, "colouring", sum(v.height * v.width for v in views), "px")
    rgbas = [view_rgba(v, fit, bar) for v in views]
    for v in views:
        v.data = None
    if grid is None:
        v = views[0]
        rgba, out_crs, out_t = rgbas[0], v.raster.crs, v.transform
    else:
        rgba, out_crs, out_t = _mosaic(views, rgbas, grid), grid.crs, grid.transform
    del rgbas
    label = _describe(views)
    pic = finish_picture(rgba, out_crs, out_t, png_path, tif_path, balance=balance,
                         to_crs=crs, max_size=max_size, world_file=world_file, label=label,
                         tags=pca_tags(fit, balance, inputs=label,
                                       **({"year": fit.year} if fit.year else {})))
    return RenderedFiles(pic.png, pic.tif, pic.sidecars, pic.grid, pic.width, pic.height,
                         [v.raster.label for v in views], fit)


__all__ = ["CACHE_VALUES", "STRIP_VALUES", "RenderedFiles", "View", "fit_views", "plan_views",
           "render_files", "view_rgba"]
