"""Reading windows of an output grid from the stored tiles that touch it: the engine behind
`read_region` and the exports.

One CRS per output. Tiles of the output's CRS that share its pixel lattice are pasted pixel for
pixel (no seams, no resampling); other tiles are warped with nearest neighbour, and what is warped
is a source-pixel index, never the codes: the codes and the scale of an output pixel always come
from the same source pixel, and int8 codes are never averaged. A pixel's value is that of the tile
whose cell (0.1 degree lon/lat box) contains the pixel's centre, as the published tiles are cut;
across a zone seam the two lattices do not line up, so a location whose nearest source pixel has
its centre in the next cell takes the nearest pixel of its own cell instead of becoming a gap.

Memory is one window plus the touched part of each tile (read from memory-mapped `.npy` files and
dropped after the window), so exports stream whatever the region's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tessera.geo import GridTile, Patch, TargetGrid, parse_tile_name, tiles_of_points
from tessera.geo.crs import LONLAT, crs_key, rio_crs, transformer
from tessera.geotiff import Window
from tessera.store.manifest import TileEntry
from tessera.store.results import DIM

WINDOW = 256  # pixels: the read window (and the Zarr chunk edge: 256 x 256 x 128 int8 = 8 MB)

#: Opens a stored tile: (int8 (H, W, D), float32 (H, W) scales), memory-mapped.
TileOpener = Callable[[TileEntry], "tuple[np.ndarray, np.ndarray]"]


def windows(height: int, width: int, size: int | None = None) -> list[Window]:
    """Row-major windows of `size` (default WINDOW) pixels covering a `height` x `width` grid."""
    from tessera.geotiff import windows as _w
    return _w(height, width, size or WINDOW)


def apply(t: Any, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """An affine transform applied to coordinate arrays."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def shift(t: Any, col: float, row: float) -> Any:
    """The transform of a window starting at (col, row) of a grid with transform `t`."""
    from affine import Affine
    x, y = apply(t, col, row)
    return Affine(t.a, t.b, float(x), t.d, t.e, float(y))


def lattice_offset(src: Any, dst: Any) -> tuple[int, int] | None:
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


def nearest_in_cell(tile: GridTile, affine: Any, crs_key: str, shape: tuple[int, int],
                     cf: np.ndarray, rf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For locations at fractional pixel coords (cf, rf) of a tile's raster, the pixel among the
    3 x 3 around them whose centre is nearest and inside the tile's cell (the pixels the tile
    holds data for); the containing pixel when none is."""
    h, w = shape
    r0, c0 = np.floor(rf).astype(np.int64), np.floor(cf).astype(np.int64)
    dr, dc = np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij")
    rr = r0[:, None] + dr.ravel()[None]
    cc = c0[:, None] + dc.ravel()[None]
    x, y = apply(affine, cc + 0.5, rr + 0.5)
    lon, lat = transformer(crs_key, LONLAT).transform(x, y)
    west, south, east, north = tile.bounds
    inside = ((lon >= west) & (lon < east) & (lat >= south) & (lat < north)
              & (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w))
    d2 = np.where(inside, (cc + 0.5 - cf[:, None]) ** 2 + (rr + 0.5 - rf[:, None]) ** 2, np.inf)
    k = np.argmin(d2, axis=1)
    pick = np.isfinite(d2[np.arange(len(k)), k])
    row = np.where(pick, rr[np.arange(len(k)), k], r0)
    col = np.where(pick, cc[np.arange(len(k)), k], c0)
    return row, col


class Source:
    """One stored tile as seen from an output grid: its bounds there and, when it shares the
    grid's CRS and lattice, its pixel offset (pasted), else None (warped)."""

    def __init__(self, entry: TileEntry, grid: TargetGrid) -> None:
        from rasterio.warp import transform_bounds

        self.entry = entry
        self.tile = parse_tile_name(entry.tile)
        self.crs = rio_crs(entry.crs)
        self.crs_key = crs_key(self.crs)
        self.affine = entry.affine
        self.shape = (entry.height, entry.width)
        same = self.crs_key == crs_key(grid.crs)
        self.offset = lattice_offset(self.affine, grid.transform) if same else None
        self.bounds = (entry.bounds if same else
                       transform_bounds(self.crs, grid.crs, *entry.bounds, densify_pts=21))


class Mosaic:
    """Reads windows of an output grid from the tiles that touch it; memory is one window plus
    the touched part of each tile (memory-mapped, dropped after the window)."""

    def __init__(self, open_tile: TileOpener, entries: Sequence[TileEntry], grid: TargetGrid,
                 clip: bool) -> None:
        self.open_tile, self.grid, self.clip = open_tile, grid, clip
        self.sources = [Source(e, grid) for e in entries]
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self._open(self.sources[0])[0].shape[2] if self.sources else DIM
        return self._dim

    def _open(self, src: Source) -> tuple[np.ndarray, np.ndarray]:
        return self.open_tile(src.entry)

    def touching(self, win: Window) -> list[Source]:
        t = self.grid.transform
        left, top = apply(t, win.col, win.row)
        right, bottom = apply(t, win.col + win.width, win.row + win.height)
        return [s for s in self.sources if s.bounds[0] < right and s.bounds[2] > left
                and s.bounds[1] < top and s.bounds[3] > bottom]

    def read_if_touched(self, win: Window) -> tuple[np.ndarray, np.ndarray] | None:
        """`read(win)`, or None when no tile touches the window (a `geotiff.WindowReader`)."""
        return self.read(win) if self.touching(win) else None

    def read(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
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

    def _paste(self, src: Source, win: Window, q: np.ndarray, s: np.ndarray) -> None:
        assert src.offset is not None  # only tiles on the grid's lattice are pasted
        ro, co = src.offset
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

    def _warp(self, src: Source, win: Window, q: np.ndarray, s: np.ndarray) -> tuple | None:
        """Nearest-neighbour warp of a tile of another CRS or lattice into the window: a source
        pixel index is warped (never the codes), then codes and scales are gathered with it.
        Returns the seam pixels to fill afterwards with the nearest pixel of their own cell."""
        from rasterio.warp import Resampling, reproject, transform_bounds

        g = self.grid
        win_t = shift(g.transform, win.col, win.row)
        left, top = win_t.c, win_t.f
        right, bottom = apply(win_t, win.width, win.height)
        sb = transform_bounds(g.crs, src.crs, left, bottom, right, top, densify_pts=21)
        inv = ~src.affine
        cs, rs = apply(inv, [sb[0], sb[0], sb[2], sb[2]], [sb[1], sb[3], sb[1], sb[3]])
        h, w = src.shape
        r0, r1 = max(math.floor(min(rs)) - 2, 0), min(math.ceil(max(rs)) + 2, h)
        c0, c1 = max(math.floor(min(cs)) - 2, 0), min(math.ceil(max(cs)) + 2, w)
        if r0 >= r1 or c0 >= c1:
            return None
        sw = c1 - c0
        idx = np.arange((r1 - r0) * sw, dtype=np.int32).reshape(r1 - r0, sw)
        hit_idx = np.full((win.height, win.width), -1, np.int32)
        reproject(idx, hit_idx, src_transform=shift(src.affine, c0, r0),
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
        x, y = apply(win_t, cols + 0.5, rows + 0.5)
        lon, lat = transformer(crs_key(g.crs), LONLAT).transform(x, y)
        cells = tiles_of_points(lon, lat)
        mine = (cells[:, 0] == src.tile.ix) & (cells[:, 1] == src.tile.iy)
        if not mine.any():
            return None
        rows, cols = rows[mine], cols[mine]
        sx, sy = transformer(crs_key(g.crs), src.crs_key).transform(x[mine], y[mine])
        cf, rf = apply(inv, sx, sy)
        sr, sc = nearest_in_cell(src.tile, src.affine, src.crs_key, src.shape, cf, rf)
        moved = (sr != np.floor(rf)) | (sc != np.floor(cf))
        if not moved.any():
            return None
        return src, rows[moved], cols[moved], sr[moved], sc[moved]




__all__ = ["WINDOW", "Mosaic", "Source", "TileOpener", "apply", "lattice_offset", "nearest_in_cell",
           "shift", "windows"]
