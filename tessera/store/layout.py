"""Where things live in a store (SPEC section 5, the published per-year layout).

    {root}/manifest.parquet                                   the GeoParquet manifest
    {root}/{year}/grid_{lon}_{lat}/grid_{lon}_{lat}.npy        int8 (H, W, 128)
    {root}/{year}/grid_{lon}_{lat}/grid_{lon}_{lat}_scales.npy float32 (H, W), NaN = no data
    {root}/{year}/grid_{lon}_{lat}/grid_{lon}_{lat}_mask.tiff  uint8 land/ROI mask with the tile's
                                                              CRS and transform

Paths in the manifest are relative, POSIX, so a store can be copied or served as it is.
"""

from __future__ import annotations

MANIFEST = "manifest.parquet"
FILE_KINDS = ("embeddings", "scales", "mask")
_SUFFIX = {"embeddings": ".npy", "scales": "_scales.npy", "mask": "_mask.tiff"}


def tile_folder(year: int, tile: str) -> str:
    return f"{int(year)}/{tile}"


def relpath(kind: str, year: int, tile: str) -> str:
    """Relative POSIX path of one file of a tile-year (`kind` in FILE_KINDS)."""
    if kind not in _SUFFIX:
        raise ValueError(f"file kind {kind!r}: expected one of {', '.join(FILE_KINDS)}")
    return f"{tile_folder(year, tile)}/{tile}{_SUFFIX[kind]}"


def geotiff_relpath(year: int, tile: str) -> str:
    """The published export name: {year}/grid_{lon}_{lat}/grid_{lon}_{lat}_{year}.tiff."""
    return f"{tile_folder(year, tile)}/{tile}_{int(year)}.tiff"
