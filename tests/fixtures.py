"""Tiny synthetic fixtures for the tests (random values, not the scene simulator).

`make_tile_arrays` returns the keyword arguments of `tessera.dpixel.write_tile`; run this file
to write one tile folder for manual inspection: `python tests/fixtures.py OUT_DIR`.
"""

from __future__ import annotations

import sys

import numpy as np
from rasterio.transform import Affine


def make_tile_arrays(h: int = 16, w: int = 12, t2: int = 20, ta: int = 8, td: int = 6,
                     seed: int = 0, cloud: float = 0.3) -> dict:
    rng = np.random.default_rng(seed)

    def dates(n: int) -> np.ndarray:
        return np.sort(rng.choice(np.arange(1, 367), n, replace=False)).astype(np.int16)

    return dict(
        bands=rng.integers(1, 8000, (t2, h, w, 10)).astype(np.uint16),
        masks=(rng.random((t2, h, w)) > cloud).astype(np.uint8),
        doys=dates(t2),
        sar_ascending=rng.integers(2000, 9000, (ta, h, w, 2)).astype(np.int16),
        sar_ascending_doy=dates(ta),
        sar_descending=rng.integers(2000, 9000, (td, h, w, 2)).astype(np.int16),
        sar_descending_doy=dates(td),
        roi=np.ones((h, w), np.uint8),
        crs="EPSG:32631",
        transform=Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5650000.0),
    )


if __name__ == "__main__":
    from tessera.dpixel import write_tile
    print(write_tile(sys.argv[1], **make_tile_arrays()))
