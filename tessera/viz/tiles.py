"""Which tiles a picture is made of, and reading them: manifest entries resolved once per
request, tile arrays opened memory-mapped and checked against the manifest."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tessera.errors import VizError
from tessera.geo import GridTile, parse_tile_name
from tessera.store.manifest import Manifest, TileEntry
from tessera.store.protocol import Store

TileLike = str | GridTile | TileEntry


def store_years(manifest: Manifest) -> str:
    years = manifest.years()
    return ", ".join(map(str, years)) if years else "none (empty store)"


def resolve_tiles(store: Store, tiles: Sequence[TileLike], year: int,
                  manifest: Manifest | None = None) -> list[TileEntry]:
    """Manifest entries of `tiles` for `year`, sorted by tile name (so results do not depend on
    the order the caller listed them in) and without duplicates. One manifest query for all
    names; a name the store lacks is reported with the years it does have."""
    if isinstance(tiles, (str, GridTile, TileEntry)):
        tiles = [tiles]
    tiles = list(tiles)
    if not tiles:
        raise VizError(f"no tiles given for year {year}: expected at least one tile name or "
                       "manifest entry")
    manifest = store.manifest() if manifest is None else manifest
    if int(year) not in manifest.years():
        raise VizError(f"year {year} is not in the store {store.describe()} (it has "
                       f"{store_years(manifest)})")
    out: dict[str, TileEntry] = {}
    names: list[str] = []
    for t in tiles:
        if isinstance(t, TileEntry):
            if t.year != int(year):
                raise VizError(f"{t.tile}: manifest entry of year {t.year}, expected year {year}")
            out[t.tile] = t
        else:
            names.append(parse_tile_name(t.name if isinstance(t, GridTile) else str(t)).name)
    wanted = sorted(set(names) - set(out))
    if wanted:
        found = {e.tile: e for e in manifest.query(year=int(year), tiles=wanted).entries()}
        for name in wanted:
            out[name] = found[name] if name in found else manifest.entry(name, int(year))
    return [out[k] for k in sorted(out)]


def open_tile(store: Store, e: TileEntry) -> tuple[np.ndarray, np.ndarray]:
    """(int8 (H*W, D) memory map, float32 (H*W,) scales memory map) of a tile-year, checked
    against the manifest's shape."""
    qpath = store.open_file(e.files["embeddings"])
    spath = store.open_file(e.files["scales"])
    q = np.load(qpath, mmap_mode="r")
    s = np.load(spath, mmap_mode="r")
    if q.dtype != np.int8 or q.ndim != 3 or q.shape[:2] != (e.height, e.width):
        raise VizError(f"{qpath}: {e.tile} {e.year}: expected int8 ({e.height}, {e.width}, D) "
                       f"embeddings, got {q.dtype} {q.shape}")
    if s.shape != (e.height, e.width):
        raise VizError(f"{spath}: {e.tile} {e.year}: expected scales of shape "
                       f"({e.height}, {e.width}), got {s.shape}")
    return q.reshape(-1, q.shape[2]), s.reshape(-1)


__all__ = ["TileLike", "open_tile", "resolve_tiles", "store_years"]
