"""Embeddings at points: each point is read from the pixel containing it, one open of each
tile for all its points (grouped by tile with numpy, no loop over points)."""

from __future__ import annotations

import numpy as np

from tessera.geo import GridTile, parse_tile_name, tiles_of_points
from tessera.geo.crs import LONLAT, crs_key, rio_crs, transformer
from tessera.store.manifest import Manifest
from tessera.store.mosaic import TileOpener, apply, lattice_offset, nearest_in_cell
from tessera.store.results import DIM, dequantize


def sample_points(manifest: Manifest, lon: np.ndarray, lat: np.ndarray, year: int,
                  open_tile: TileOpener) -> tuple[np.ndarray, np.ndarray]:
    """(float32 (N, D) embeddings, NaN unless valid; status (N,) of "valid", "nodata" (in a
    stored tile, no data there, e.g. sea) or "outside" (no tile of that year in the store, or
    beyond the grid)). Points are grouped by tile and each tile's two arrays are opened once.

    A point's value is that of the pixel containing it, in the tile whose cell contains that
    pixel's centre (as read_region pastes them); next to a zone seam, where that tile's
    lattice differs, the nearest pixel of the point's own cell."""
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
    out: np.ndarray | None = None
    order = np.argsort(read_tile, kind="stable")
    bounds = np.searchsorted(read_tile[order], np.arange(len(tiles) + 1))
    for k, name in enumerate(tiles):
        pts = order[bounds[k]:bounds[k + 1]]
        if pts.size == 0:
            continue
        e = entries[name]
        qm, sm = open_tile(e)
        if out is None:
            out = np.full((n, qm.shape[2]), np.nan, np.float32)
        sv = np.asarray(sm[read_row[pts], read_col[pts]])
        good = np.isfinite(sv)
        pv = pts[good]
        if pv.size:
            qv = np.asarray(qm[read_row[pv], read_col[pv]])
            out[pv] = dequantize(qv, sv[good])
            status[pv] = "valid"
        del qm, sm
    if out is None:
        out = np.full((n, DIM), np.nan, np.float32)
    return out, status


__all__ = ["sample_points"]
