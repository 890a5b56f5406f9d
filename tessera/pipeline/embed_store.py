"""Embedding a grid tile into a store: `tessera embed INPUT --store STORE --year Y`. It joins
inference (`tessera.infer`) and the store (`tessera.store`), which know nothing of each other.

INPUT is either one tile folder covering the grid tile (e.g. `tessera simulate --grid-tile`;
the tile is recognised from its raster when the folder is not named after it) or
the output folder of `tessera preprocess --tile grid_{lon}_{lat}` (a `region.json` and its patch
folders `{x0}_{y0}_{x1}_{y1}`), whose patches are embedded one by one and pasted at their
offsets. The input's grid must be the grid tile's own raster (UTM zone of the centre, bounds
snapped to the pixel size): that is checked, so a store never holds a tile on the wrong grid.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tessera.dpixel import Tile
from tessera.errors import GridError, StoreError
from tessera.geo import GridTile, parse_tile_name, tile_of
from tessera.geo.crs import LONLAT, transformer
from tessera.progress import Progress
from tessera.store.local import LocalStore
from tessera.store.manifest import ManifestError, TileEntry, hash_file

if TYPE_CHECKING:
    from tessera.infer import Embedder

_PATCH = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)$")


def _same_grid(crs: Any, transform: Any, shape: tuple[int, int], tile: GridTile) -> str | None:
    """None when (crs, transform, shape) is the tile's raster at that pixel size, else why not."""
    from rasterio.crs import CRS

    g = tile.target_grid(abs(float(transform.a)))
    if CRS.from_user_input(crs) != g.crs:
        return f"CRS {CRS.from_user_input(crs).to_string()} but the tile is in {g.crs.to_string()}"
    if not np.allclose(list(transform)[:6], list(g.transform)[:6], atol=1e-6):
        return f"transform {tuple(transform)[:6]} but the tile's is {tuple(g.transform)[:6]}"
    if tuple(shape) != (g.height, g.width):
        return f"{shape[0]} x {shape[1]} px but the tile is {g.height} x {g.width}"
    return None


def _tile_at_centre(crs: Any, transform: Any, shape: tuple[int, int]) -> GridTile | None:
    """The grid tile whose raster this is, found from the raster's centre (None if none)."""
    t, col, row = transform, shape[1] / 2, shape[0] / 2
    x, y = t.c + t.a * col + t.b * row, t.f + t.d * col + t.e * row
    src = crs.to_wkt() if hasattr(crs, "to_wkt") else crs
    lon, lat = transformer(src, LONLAT).transform(x, y)
    try:
        tile = tile_of(lon, lat)
    except GridError:
        return None
    return tile if _same_grid(crs, transform, shape, tile) is None else None


def _inputs(source: Path) -> tuple[list[tuple[Path, int, int]], Any, Any, tuple[int, int], str]:
    """[(patch folder, x0, y0)], crs, transform, (height, width), region name."""
    region_file = source / "region.json"
    if region_file.exists():
        from affine import Affine
        from rasterio.crs import CRS

        try:
            doc = json.loads(region_file.read_text())
            grid = doc["grid"]
            crs, transform = CRS.from_user_input(grid["crs"]), Affine(*grid["transform"][:6])
            shape, name = (int(grid["height"]), int(grid["width"])), str(grid.get("name", ""))
            names = list(doc["patches"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{region_file}: not a preprocessing region file ({exc})") from None
        patches = []
        for n in names:
            m = _PATCH.match(n)
            if not m:
                raise StoreError(f"{region_file}: patch name {n!r}: expected x0_y0_x1_y1")
            if not (source / n / "bands.npy").exists():
                raise StoreError(f"{source / n}: patch listed in {region_file.name} is missing "
                                 "(rerun tessera preprocess, it resumes)")
            patches.append((source / n, int(m.group(1)), int(m.group(2))))
        return patches, crs, transform, shape, name
    tile = Tile.open(source)
    return [(source, 0, 0)], tile.crs, tile.transform, tile.shape, source.name


def embed_to_store(embedder: Embedder, source: str | Path, store: LocalStore, year: int,
                   grid_tile: str | None = None, version: str = "",
                   progress: Progress | None = None, keep_partial: bool = False,
                   model: str = "", weights: str = "") -> TileEntry:
    """Embed INPUT (see the module docstring) and write it as tile-year `year` of `store`,
    recording `model` (registered id), `weights` (see `provenance`) and the embedder's precision
    (`Embedder.precision_label`: a year never mixes precisions). The input and the store
    are checked before any pixel is embedded (a year of the store holding another model's
    embeddings is refused); the whole tile is held in memory (int8 codes + scales: 132 bytes per
    pixel) and written once."""
    from tessera.infer import embed_tile_arrays

    source = Path(source)
    if not source.exists():
        raise StoreError(f"{source}: no such tile or preprocessing folder")
    patches, crs, transform, (h, w), region_name = _inputs(source)
    if grid_tile is not None:
        tile = parse_tile_name(grid_tile)
    else:
        try:
            tile = parse_tile_name(region_name)
        except GridError:
            found = _tile_at_centre(crs, transform, (h, w))
            if found is None:
                raise StoreError(f"{source}: not on a grid tile's raster and its name "
                                 f"{region_name!r} is not a grid tile; give --grid-tile "
                                 "grid_{lon}_{lat}") from None
            tile = found
    why = _same_grid(crs, transform, (h, w), tile)
    if why:
        raise StoreError(f"{source}: not on the grid of {tile.name}: {why} (preprocess with "
                         f"--tile {tile.name}, or simulate with --grid-tile {tile.name})")
    if store.root.exists():
        # a store whose manifest is unreadable, a GeoTessera layout (read-only), or a year that
        # holds another model, is refused before the work
        probe = TileEntry(tile.name, tile.lon, tile.lat, int(year), version, "", (), w, h, 0, {},
                          model=model, dims=embedder.dim, weights=weights,
                          precision=embedder.precision_label)
        try:
            store.manifest_for_writing().check_one_model(int(year), adding=probe)
        except ManifestError as exc:
            raise StoreError(f"{store.root}: {exc}") from None
    tiles = []
    for folder, x0, y0 in patches:
        t = Tile.open(folder)
        ph, pw = t.shape
        if y0 + ph > h or x0 + pw > w:
            raise StoreError(f"{folder}: patch of {ph} x {pw} px at ({x0}, {y0}) overruns "
                             f"the {h} x {w} region")
        tiles.append((t, x0, y0))
    q = np.zeros((h, w, embedder.dim), np.int8)
    scales = np.full((h, w), np.nan, np.float32)
    for i, (t, x0, y0) in enumerate(tiles, 1):
        ph, pw = t.shape
        what = f"embedding {tile.name}" + (f" patch {i}/{len(tiles)}" if len(tiles) > 1 else "")
        qp, sp, _ = embed_tile_arrays(embedder, t, keep_partial=keep_partial, progress=progress,
                                      description=what)
        q[y0:y0 + ph, x0:x0 + pw] = qp
        scales[y0:y0 + ph, x0:x0 + pw] = sp
        del qp, sp
    roi = tile.target_grid(abs(float(transform.a))).roi()
    scales[roi == 0] = np.nan
    q[roi == 0] = 0
    return store.write_tile(tile, year, q, scales, roi, version=version, crs=crs,
                            transform=transform, model=model, weights=weights,
                            precision=embedder.precision_label)


def provenance(meta: dict, weights: str | Path | None = None) -> tuple[str, str, str]:
    """(version, model, weights) for the manifest: `version` describes what produced the
    embeddings (software version, model, weights), `model` is the registered model id (or
    `<family>-custom`), `weights` the first 12 hex digits of the weights file's sha256, or
    "random init seed N"."""
    from tessera import __version__
    from tessera.infer import model_label

    model = model_label(meta)
    if meta.get("random_init"):
        ident = f"random init seed {meta.get('init_seed', 0)}"
        return f"tessera-eo {__version__}, {model} RANDOM INIT", model, ident
    ident = f"sha256:{hash_file(weights)[1][:12]}" if weights else ""
    return (f"tessera-eo {__version__}, {model}" + (f" weights {ident[7:]}" if ident else ""),
            model, ident)


def version_label(meta: dict, weights: str | Path | None = None) -> str:
    """The `version` of `provenance` alone."""
    return provenance(meta, weights)[0]
