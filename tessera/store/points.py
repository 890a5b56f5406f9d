"""Embeddings at points: each point is read from the pixel containing it, one open of each
tile for all its points (grouped by tile with numpy, no loop over points).

Statuses (`tessera.store.results.POINT_STATUSES`): "valid" where the pixel's scale is finite;
"water" where it is not and the tile's landmask says water (0) there, for stores whose mask file
is GeoTessera's landmask (`is_landmask`); "nodata" for other points in a stored tile; "outside"
where no stored tile of that year covers the point (or the point is beyond the grid)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tessera.geo import GridTile, parse_tile_name, tiles_of_points
from tessera.geo.crs import LONLAT, crs_key, rio_crs, transformer
from tessera.store.layout import relpath
from tessera.store.manifest import Manifest, TileEntry
from tessera.store.mosaic import TileOpener, apply, lattice_offset, nearest_in_cell
from tessera.store.results import DIM, PointMetadata, dequantize

#: The local path of a tile's landmask (0 = water), or None when its mask is not one.
MaskOpener = Callable[[TileEntry], "Path | None"]


def is_landmask(e: TileEntry) -> bool:
    """Whether the tile's "mask" file is GeoTessera's landmask (uint8, 0 = water), as in stores
    in GeoTessera's layouts and mirrors of them. A tessera store's own `_mask.tiff` marks the
    pixels that were embedded (the tile's cell), so 0 there says nothing about water."""
    f = e.files.get("mask")
    return f is not None and f.path != relpath("mask", e.year, e.tile)


def water_at(path: Path, e: TileEntry, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """bool (N,): whether the landmask at `path` says water (0) at the pixels (rows, cols) of
    the tile `e`. One windowed read of the smallest window holding them; pixels the landmask
    does not cover are not water."""
    import rasterio
    from rasterio.windows import Window as RioWindow

    out = np.zeros(rows.size, bool)
    if rows.size == 0:
        return out
    with rasterio.open(path) as src:
        x, y = apply(e.affine, cols + 0.5, rows + 0.5)  # the pixels' centres
        if src.crs is not None and crs_key(rio_crs(src.crs)) != crs_key(rio_crs(e.crs)):
            x, y = transformer(crs_key(rio_crs(e.crs)),
                               crs_key(rio_crs(src.crs))).transform(x, y)
        mc, mr = apply(~src.transform, x, y)
        mr, mc = np.floor(mr).astype(np.int64), np.floor(mc).astype(np.int64)
        inside = (mr >= 0) & (mr < src.height) & (mc >= 0) & (mc < src.width)
        if not inside.any():
            return out
        r0, r1 = int(mr[inside].min()), int(mr[inside].max()) + 1
        c0, c1 = int(mc[inside].min()), int(mc[inside].max()) + 1
        band = src.read(1, window=RioWindow(c0, r0, c1 - c0, r1 - r0))
    out[inside] = band[mr[inside] - r0, mc[inside] - c0] == 0
    return out


def sample_points(manifest: Manifest, lon: np.ndarray, lat: np.ndarray, year: int,
                  open_tile: TileOpener) -> tuple[np.ndarray, np.ndarray]:
    """(float32 (N, D) embeddings, NaN unless valid; status (N,) of "valid", "nodata" or
    "outside"); `sample_at_points` without landmasks, band choice or metadata."""
    emb, status, _ = sample_at_points(manifest, lon, lat, year, open_tile)
    return emb, status


def sample_at_points(manifest: Manifest, lon: np.ndarray, lat: np.ndarray, year: int,
                     open_tile: TileOpener, open_mask: MaskOpener | None = None,
                     bands: Sequence[int] | None = None, dims: int = DIM
                     ) -> tuple[np.ndarray, np.ndarray, PointMetadata]:
    """(float32 (N, D) embeddings, NaN unless valid; status (N,) of POINT_STATUSES; where each
    point was read). Points are grouped by tile and each tile's two arrays are opened once, its
    landmask (`open_mask`, for points without data only) at most once.

    A point's value is that of the pixel containing it, in the tile whose cell contains that
    pixel's centre (as read_region pastes them); next to a zone seam, where that tile's
    lattice differs, the nearest pixel of the point's own cell. `bands`: the dimensions to
    return, in that order (default all); `dims`: the width when no tile is read."""
    n = lon.size
    status = np.full(n, "outside", dtype="<U7")
    with np.errstate(invalid="ignore"):  # NaN points: "outside"
        cells = tiles_of_points(lon, lat)
    ok = np.nonzero(cells[:, 0] != -9999)[0]
    own_keys, inv = (np.unique(cells[ok], axis=0, return_inverse=True) if ok.size
                     else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64)))
    inv = inv.reshape(-1)
    names = [GridTile(int(ix), int(iy)).name for ix, iy in own_keys]
    man = manifest.query(year=int(year), tiles=names)
    entries = {e.tile: e for e in man.entries()}
    # plan: every point -> (tile, row, col) to read, from manifest geometry only
    read_tile = np.full(n, -1, np.int64)
    read_row = np.full(n, -1, np.int64)
    read_col = np.full(n, -1, np.int64)
    own_tile = np.full(n, -1, np.int64)  # the point's own stored tile (metadata when unread)
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
        own_tile[pts] = tid(name)
        key = crs_key(rio_crs(e.crs))
        x, y = transformer(LONLAT, key).transform(lon[pts], lat[pts])
        cf, rf = apply(~e.affine, x, y)
        r0, c0 = np.floor(rf).astype(np.int64), np.floor(cf).astype(np.int64)
        cx, cy = apply(e.affine, c0 + 0.5, r0 + 0.5)
        clon, clat = transformer(key, LONLAT).transform(cx, cy)
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
        nb_entries = {x.tile: x for x in manifest.query(year=int(year),
                                                             tiles=sorted(nb)).entries()}
        for pts, r0, c0, cf, rf, ccell, e in deferred:
            done = np.zeros(pts.size, bool)
            key = crs_key(rio_crs(e.crs))
            for ix, iy in np.unique(ccell[ccell[:, 0] != -9999], axis=0):  # <= 8 cells
                c = nb_entries.get(GridTile(int(ix), int(iy)).name)
                if c is None or crs_key(rio_crs(c.crs)) != key:
                    continue
                off = lattice_offset(e.affine, c.affine)
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
                rr, cc = nearest_in_cell(parse_tile_name(e.tile), e.affine, key,
                                          (e.height, e.width), cf[~done], rf[~done])
                fine = (rr >= 0) & (rr < e.height) & (cc >= 0) & (cc < e.width)
                sel = pts[~done][fine]
                read_tile[sel], read_row[sel], read_col[sel] = tid(e.tile), rr[fine], cc[fine]
    # read: one open of each tile, all its points at once
    sel_bands = None if bands is None else np.asarray(list(bands), np.int64)
    width = int(dims) if sel_bands is None else int(sel_bands.size)
    out: np.ndarray | None = None
    unread: dict[int, np.ndarray] = {}  # tile -> its points without data, for the landmask
    order = np.argsort(read_tile, kind="stable")
    bounds = np.searchsorted(read_tile[order], np.arange(len(tiles) + 1))
    for k, name in enumerate(tiles):
        pts = order[bounds[k]:bounds[k + 1]]
        if pts.size == 0:
            continue
        e = entries[name]
        qm, sm = open_tile(e)
        if out is None:
            width = qm.shape[2] if sel_bands is None else width
            out = np.full((n, width), np.nan, np.float32)
        sv = np.asarray(sm[read_row[pts], read_col[pts]])
        good = np.isfinite(sv)
        pv = pts[good]
        if pv.size:
            qv = np.asarray(qm[read_row[pv], read_col[pv]])
            if sel_bands is not None:
                qv = qv[:, sel_bands]
            out[pv] = dequantize(qv, sv[good])
            status[pv] = "valid"
        if not good.all():
            unread[k] = pts[~good]
        del qm, sm
    if open_mask is not None:  # no data: water, where the tile's landmask says so
        for k, pts in unread.items():
            e = entries[tiles[k]]
            path = open_mask(e) if is_landmask(e) else None
            if path is not None:
                wet = water_at(path, e, read_row[pts], read_col[pts])
                status[pts[wet]] = "water"
    if out is None:
        out = np.full((n, width), np.nan, np.float32)
    return out, status, _metadata(tiles, entries, read_tile, read_row, read_col, own_tile)


def _metadata(tiles: list[str], entries: dict[str, TileEntry], read_tile: np.ndarray,
              read_row: np.ndarray, read_col: np.ndarray, own_tile: np.ndarray
              ) -> PointMetadata:
    """Per point: the tile read (else its own stored tile, row and col -1), "" when none."""
    which = np.where(read_tile >= 0, read_tile, own_tile)
    names = np.array([""] + tiles, dtype=object)
    info = [entries[t] for t in tiles]
    lons = np.array([math.nan] + [e.lon for e in info], np.float64)
    lats = np.array([math.nan] + [e.lat for e in info], np.float64)
    crss = np.array([""] + [e.crs for e in info], dtype=object)
    got = read_tile >= 0
    return PointMetadata(tile=names[which + 1], tile_lon=lons[which + 1],
                         tile_lat=lats[which + 1],
                         pixel_row=np.where(got, read_row, -1),
                         pixel_col=np.where(got, read_col, -1), crs=crss[which + 1])


__all__ = ["MaskOpener", "is_landmask", "sample_at_points", "sample_points", "water_at"]
