"""Helpers of the picture tests (tests/viz/conftest.py puts this folder on the import path): a
SIMULATED store of two tiles on both sides of the UTM zone 31/32 border (two years), and
writers of the files GeoTessera users hold (GeoTIFFs of embeddings, GeoTessera-layout Zarr
stores), built from the store's tiles."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio

WEST, EAST = "grid_5.95_45.05", "grid_6.05_45.05"  # UTM zones 31 and 32
YEAR = 2022
RES = 200.0
BBOX = (5.9, 45.0, 6.1, 45.1)


def build_store(root):
    from tessera.store.synthetic import build_simulated_store
    return build_simulated_store(root, [WEST, EAST], years=[2021, YEAR], resolution=RES)


def tile_arrays(store, tile, year=YEAR):
    """(int8 (H, W, D), float32 scales, manifest entry) of a stored tile."""
    e = store.manifest().entry(tile, year)
    return (np.load(store.open_file(e.files["embeddings"])),
            np.load(store.open_file(e.files["scales"])), e)


def read_png(path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        return np.asarray(im).copy()


def write_geotiff(path, bands: np.ndarray, crs, transform, *, nodata=None, descriptions=None,
                  tags=None) -> Path:
    """A GeoTIFF of (count, H, W) bands, as other programs write them."""
    count, h, w = bands.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count,
                       dtype=bands.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(bands)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
    return Path(path)


def write_geotessera_zarr(path, store, tile, years=(2021, YEAR), pad=(3, 5),
                          water_row=True) -> tuple[int, int]:
    """A GeoTessera-layout Zarr v3 store (geotessera.zarr, section 1d of
    docs/geotessera_layouts.md) holding `tile` for `years` in its zone group: `embeddings` int8
    (time, band, y, x), `scales` float32 (time, y, x) with +inf = no data (the fill) and NaN =
    water, `time` the years, `proj:code` and `spatial:transform` attributes; the zone grid is
    the tile's padded by `pad` (rows, cols) pixels, one padding row of water. Returns the
    tile's (row, col) offset in the zone grid."""
    import zarr

    q0, _, e = tile_arrays(store, tile, years[0])
    h, w, d = q0.shape
    pr, pc = pad
    t = e.affine
    zh, zw = h + 2 * pr, w + 2 * pc
    epsg = int(str(e.crs).split(":")[1])
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs.update({"geoemb:type": "pixel", "geoemb:dimensions": d,
                       "geoemb:spatial_layout": "utm_zones",
                       "geoemb:quantization": {"method": "per_pixel_scale",
                                               "scale": {"type": "array", "array_name": "scales",
                                                         "nodata": "+inf"}}})
    g = root.create_group(f"utm{epsg % 100:02d}", attributes={
        "proj:code": f"EPSG:{epsg}",
        "spatial:transform": [t.a, 0.0, t.c - pc * t.a, 0.0, t.e, t.f - pr * t.e],
        "spatial:shape": [zh, zw], "spatial:dimensions": ["y", "x"]})
    emb = g.create_array("embeddings", shape=(len(years), d, zh, zw), chunks=(1, d, 16, 16),
                         dtype="int8", fill_value=0, dimension_names=("time", "band", "y", "x"))
    sc = g.create_array("scales", shape=(len(years), zh, zw), chunks=(1, 16, 16),
                        dtype="float32", fill_value=np.inf, dimension_names=("time", "y", "x"))
    g.create_array("time", data=np.asarray(years, np.int32), dimension_names=("time",))
    for i, y in enumerate(years):
        q, s, _ = tile_arrays(store, tile, y)
        emb[i, :, pr:pr + h, pc:pc + w] = np.moveaxis(q, 2, 0)
        sc[i, pr:pr + h, pc:pc + w] = s
        if water_row:
            sc[i, 0, :] = np.nan
    with warnings.catch_warnings():  # "consolidated metadata is not part of Zarr v3": GeoTessera
        warnings.simplefilter("ignore")  # writes it all the same
        zarr.consolidate_metadata(str(path))
    return pr, pc
