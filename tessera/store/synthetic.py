"""SIMULATED stores for tests, benchmarks and the client demo: seeded random int8 embeddings on
real grid tiles (at a coarser resolution than 10 m if asked, so they stay small), with a no-data
hole and a 'sea' strip so nodata statuses are exercised. Not embeddings of anything."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from tessera.geo import TargetGrid
from tessera.geo.grid import GridTile, parse_tile_name
from tessera.store.local import LocalStore

SIMULATED_VERSION = "simulated-random"


def simulated_tile_arrays(tile: GridTile, year: int, resolution: float = 200.0, seed: int = 0,
                          dim: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray, TargetGrid]:
    """(int8 (H, W, dim), float32 scales with NaN = no data, uint8 mask, TargetGrid)."""
    g = tile.target_grid(resolution)
    rng = np.random.default_rng([seed, int(year), tile.ix + 1800, tile.iy + 900])
    q = rng.integers(-127, 128, size=(g.height, g.width, dim), dtype=np.int8)
    scales = rng.uniform(0.005, 0.02, size=(g.height, g.width)).astype(np.float32)
    roi = g.roi().astype(bool)
    scales[~roi] = np.nan
    scales[: max(1, g.height // 10), :] = np.nan  # a strip of 'sea' along the north edge
    q[~np.isfinite(scales)] = 0
    return q, scales, np.isfinite(scales).astype(np.uint8), g


def build_simulated_store(root: str | os.PathLike, tiles: Iterable[str | GridTile],
                          years: Iterable[int] = (2022,), resolution: float = 200.0,
                          seed: int = 0) -> LocalStore:
    store = LocalStore(root)
    for y in years:
        for t in tiles:
            t = parse_tile_name(t) if isinstance(t, str) else t
            q, s, m, g = simulated_tile_arrays(t, y, resolution, seed)
            store.write_tile(t, y, q, s, m, version=SIMULATED_VERSION, model="simulated",
                             weights="simulated", crs=g.crs,
                             transform=g.transform)
    return store
