"""Tiny synthetic fixtures for the tests (random values, not the scene simulator).

`make_tile_arrays` returns the keyword arguments of `tessera.dpixel.write_tile`; run this file
to write one tile folder for manual inspection: `python tests/fixtures.py OUT_DIR`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import Affine

from tessera.dpixel import DPixelBatch


def one_line_error(result, *fragments):
    """A CLI result that failed as a user error: exit 2, one `error:` line first, no traceback,
    naming every fragment."""
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert out.startswith("error:") and "Traceback" not in out
    for f in fragments:
        assert f in out, out


#: The real data of ../shared/datasets (see its README); tests skip when it is absent.
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def shared_path(*parts: str) -> Path:
    """A file of ../shared/datasets, or skip the test saying what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} (see ../shared/datasets/README.md)")
    return p


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


def shared_dates_batch(seed: int = 0, h: int = 6, w: int = 5, cloud: float = 0.3) -> DPixelBatch:
    """The pixels of `make_tile_arrays` as a DPixelBatch (dates shared by all pixels)."""
    a = make_tile_arrays(h=h, w=w, seed=seed, cloud=cloud)

    def pm(x):
        return np.moveaxis(x, 0, 2).reshape(h * w, x.shape[0], *x.shape[3:])

    b = DPixelBatch.from_shared_dates(
        s2=pm(a["bands"]), s2_valid=pm(a["masks"]).astype(bool), s2_doy=a["doys"],
        s1_asc=pm(a["sar_ascending"]), s1_asc_doy=a["sar_ascending_doy"],
        s1_desc=pm(a["sar_descending"]), s1_desc_doy=a["sar_descending_doy"])
    return b
