"""The map preview of an evaluation (`tessera head evaluate` writes it as map_preview.png): a
head fitted on all the labels, applied to the labels' bounding box, drawn as `head predict`
draws its PNG (class colours and a legend, or a colour bar), so a report shows what the scores
mean on the ground: where the classes fall, and whether the map looks like the landscape.

The grid: the UTM zone of the box's centre at the embeddings' pixel size, coarsened by an integer
factor until neither side exceeds `max_px` (PREVIEW_PX); every preview pixel takes the
embedding at its centre from the same store or folder of `tessera embed` outputs the labels were
joined with (so a coarse preview is a subsample, not an average). Work and memory are bounded by
the preview's size, whatever the area: rows of pixels are sampled and predicted in strips.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tessera.errors import InputError
from tessera.progress import Progress
from tessera.store.results import EmbeddingRaster

#: The preview's longest side at most, in pixels.
PREVIEW_PX = 2048
#: Preview pixels sampled from the embeddings at once.
SAMPLE_CHUNK = 1 << 18


@dataclasses.dataclass
class Preview:
    """What `map_preview` drew: the PNG, its grid, the pixel size used and the native one."""

    png: Path
    width: int
    height: int
    resolution: float
    native_resolution: float
    crs: str
    valid_pixels: int
    counts: dict[str, int]

    @property
    def factor(self) -> int:
        return max(1, round(self.resolution / self.native_resolution))

    def describe(self) -> str:
        """One line for a report: what the picture shows."""
        sub = (f", every {self.factor}th pixel of the embeddings' {self.native_resolution:g} m"
               if self.factor > 1 else "")
        return (f"{self.png.name}: {self.width} x {self.height} px of {self.resolution:g} m "
                f"({self.crs}{sub}), {self.valid_pixels:,} with an embedding")


def preview_grid(lon: np.ndarray, lat: np.ndarray, resolution: float,
                 max_px: int = PREVIEW_PX) -> Any:
    """The preview's TargetGrid: the lon/lat points' bounding box (at least one pixel) in the
    UTM zone of its centre, at `resolution` times the smallest integer that keeps both sides
    at most `max_px`."""
    from shapely.geometry import box

    from tessera.geo.target import TargetGrid

    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        raise InputError("map preview: no labelled point has coordinates")
    if max_px < 1 or not resolution > 0:
        raise InputError(f"map preview: max_px {max_px} / resolution {resolution}: expected "
                         "positive values")
    pad = resolution / 2 / 111_000.0  # half a pixel, in degrees: a single point is one pixel
    shape = box(float(lon[ok].min()) - pad, float(lat[ok].min()) - pad,
                float(lon[ok].max()) + pad, float(lat[ok].max()) + pad)
    grid = TargetGrid.from_lonlat_geometry(shape, "labels", resolution)
    k = math.ceil(max(grid.width, grid.height) / max_px)
    if k > 1:
        grid = TargetGrid.from_lonlat_geometry(shape, "labels", resolution * k)
        while max(grid.width, grid.height) > max_px:  # outward snapping can add a pixel
            k += 1
            grid = TargetGrid.from_lonlat_geometry(shape, "labels", resolution * k)
    return grid


def _native_resolution(src: Any) -> float:
    """The pixel size of a labels `_Source` (a store's, or the first output's), in metres."""
    res = getattr(src, "resolution", None)
    if res is None and getattr(src, "outputs", None):
        res = abs(float(src.outputs[0].affine.a))
    return float(res) if res and res > 0 else 10.0


def map_preview(head: Any, source: Any, year: int, lon: np.ndarray, lat: np.ndarray,
                png: str | os.PathLike, *, max_px: int = PREVIEW_PX,
                dataset_version: str | None = None, cache_dir: str | os.PathLike | None = None,
                title: str = "", progress: Progress | None = None) -> Preview:
    """Draw `head` (fitted) over the bounding box of the points (lon, lat) with the embeddings
    of `source` (a store, its path or URL, or a folder of `tessera embed` outputs) for `year`,
    as `head predict`'s PNG, written atomically to `png`. The head must take the source's
    model and width (`check_input`)."""
    from tessera.downstream.labels import _open_source
    from tessera.downstream.predict_map import predict_strips

    src = _open_source(source, int(year), None, dataset_version, cache_dir)
    head.check_input(src.model, src.dims, f"{src.name} for {year}")
    native = _native_resolution(src)
    grid = preview_grid(lon, lat, native, max_px)
    rows = max(1, SAMPLE_CHUNK // grid.width)
    t = grid.transform

    def strips() -> Iterator[EmbeddingRaster]:
        from tessera.geo.crs import LONLAT, crs_key, transformer

        back = transformer(crs_key(grid.crs), LONLAT)
        cols = np.arange(grid.width, dtype=np.float64) + 0.5
        for r0 in range(0, grid.height, rows):
            h = min(rows, grid.height - r0)
            cc, rr = np.meshgrid(cols, np.arange(r0, r0 + h, dtype=np.float64) + 0.5)
            x, y = t * (cc.ravel(), rr.ravel())
            plon, plat = back.transform(x, y)
            emb, why = src.sample(np.asarray(plon, np.float64), np.asarray(plat, np.float64))
            ok = why == "valid"
            emb = np.where(ok[:, None], emb, np.nan).astype(np.float32)
            scales = np.where(ok, np.float32(1), np.float32(np.nan))
            yield EmbeddingRaster(emb.reshape(h, grid.width, -1), scales.reshape(h, grid.width),
                                  grid.crs, t * t.translation(0, r0), int(year))

    out = Path(png)
    with tempfile.TemporaryDirectory(prefix=".map_preview.", dir=out.parent) as tmp:
        res = predict_strips(head, strips(), crs=grid.crs, transform=t, width=grid.width,
                             height=grid.height, dims=src.dims, out_tif=Path(tmp) / "map.tif",
                             png=out, progress=progress,
                             tags={"TESSERA_MODEL": src.model, "TESSERA_YEAR": str(year)},
                             title=title or f"the labels' bounding box, {year}")
    return Preview(out, grid.width, grid.height, float(grid.resolution), native,
                   str(grid.crs), res.valid_pixels, res.counts)


__all__ = ["PREVIEW_PX", "Preview", "map_preview", "preview_grid"]
