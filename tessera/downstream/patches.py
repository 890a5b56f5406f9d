"""Training patches for the `unet` head: a label raster and the embeddings under it, cut into
aligned `patch` x `patch` tiles (`raster_patches`), so that `tessera head train --head unet`
trains dense segmentation (or regression) from what users have.

- The labels (`read_label_raster`): a GeoTIFF band or a netCDF variable (`layer`), read with
  `read_labels` (the same checks, classes and task as the pixel heads get), kept as a raster of
  class indices (-1 = no label) or float targets (NaN = no label) on its own grid.
- The embeddings (`embedding_grids`): a store (the label raster's bounding box, strip by strip
  through `Client.iter_region`, in the label raster's CRS when it is projected, at the store's
  pixel size), a folder of `tessera embed` outputs (each output of the year whose grid the
  labels touch), or one GeoTIFF of embeddings (`tessera embed --geotiff`, an export).
- The labels are resampled (nearest) onto each embedding grid, which is cut into tiles of
  `patch` rows and columns from its top-left corner (the last ones padded with pixels that have
  neither embedding nor label); a tile holding a labelled pixel with an embedding is kept.
  Pixels without an embedding take the mean embedding of the kept tiles (so the head's
  standardisation, whose mean it is, makes them 0, as `UNetHead.predict_dense` does when it
  maps) and their labels are ignored.

Memory: the label raster, its resampled copy on one embedding grid at a time, one strip of
`patch` rows of embeddings, and the kept patches (float32: patches x dims x patch^2 x 4 bytes).
Labels that get no embedding are counted by reason ("outside the embeddings", "no data").
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera.errors import InputError, NotFoundError
from tessera.progress import Progress, task
from tessera.store.results import EmbeddingRaster

#: The smallest patch edge: below it the UNet's two pooling levels see almost no context.
MIN_PATCH = 8
OUTSIDE = "outside the embeddings"
NODATA = "no data"


@dataclasses.dataclass
class LabelRaster:
    """A label raster on its own grid: `values` int32 class indices into `classes` (-1 = no
    label) or float32 targets (NaN = no label); `labelled` counts the labelled pixels."""

    values: np.ndarray
    crs: Any
    transform: Any
    task: str
    classes: list[str]
    source: str
    column: str
    labelled: int

    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        from rasterio.transform import array_bounds
        from rasterio.warp import transform_bounds

        h, w = self.values.shape
        west, south, east, north = array_bounds(h, w, self.transform)
        x0, y0, x1, y1 = transform_bounds(self.crs, "EPSG:4326", west, south, east, north,
                                          densify_pts=21)
        return float(x0), float(y0), float(x1), float(y1)

    def on_grid(self, crs: Any, transform: Any, height: int, width: int) -> np.ndarray:
        """The labels resampled (nearest) onto another grid, -1 / NaN where there is none."""
        from rasterio.warp import Resampling, reproject

        classify = self.task == "classification"
        dst = np.full((height, width), -1 if classify else np.nan,
                      np.int32 if classify else np.float32)
        reproject(self.values, dst, src_transform=self.transform, src_crs=self.crs,
                  src_nodata=-1 if classify else np.nan, dst_transform=transform, dst_crs=crs,
                  dst_nodata=-1 if classify else np.nan, resampling=Resampling.nearest)
        return dst


def read_label_raster(path: str | os.PathLike, *, layer: str | int | None = None,
                      task: str | None = None) -> LabelRaster:
    """A GeoTIFF band (`layer`: 1-based number or description; default 1) or a netCDF variable
    (`layer`: its name) as a `LabelRaster`, classes and task as `read_labels` gives them."""
    import rasterio
    import pandas as pd

    from tessera.downstream.labels import (NETCDF_SUFFIXES, RASTER_SUFFIXES, LabelError,
                                           _class_names, netcdf_layer, read_labels)

    p = Path(path)
    name = p.name.lower()
    if not name.endswith(RASTER_SUFFIXES + NETCDF_SUFFIXES):
        raise LabelError(f"{p}: a unet head trains on a label raster; expected a GeoTIFF "
                         f"(.tif/.tiff) or a netCDF cube (.nc, with a layer), not "
                         f"{''.join(p.suffixes) or 'a file without suffix'}")
    nc = name.endswith(NETCDF_SUFFIXES)
    band: str | int | None = layer
    if isinstance(layer, str) and layer.isdigit() and not nc:
        band = int(layer)
    labels = read_labels(p, task=task, layer=band)  # the checks, classes and task
    opener = netcdf_layer(p, band) if nc else contextlib.nullcontext(str(p))
    with opener as ref, rasterio.open(ref) as src:
        if nc or band is None:
            b = 1
        elif isinstance(band, int):
            b = band
        else:
            b = list(src.descriptions).index(band) + 1
        data = src.read(b)
        nodata, crs, transform = src.nodata, src.crs, src.transform
    if crs is None:
        raise LabelError(f"{p}: no CRS; a unet head needs a label raster that says where its "
                         "pixels lie")
    labelled = np.ones(data.shape, bool)
    if data.dtype.kind == "f":
        labelled &= np.isfinite(data)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        labelled &= data != nodata
    if labels.task == "classification":
        uniq, inv = np.unique(data[labelled], return_inverse=True)
        names, _ = _class_names(pd.Series(uniq))
        index = {c: i for i, c in enumerate(labels.classes)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise LabelError(f"{p}: label values {', '.join(unknown[:5])} are not among the "
                             f"classes read ({', '.join(labels.classes[:10])})")
        values = np.full(data.shape, -1, np.int32)
        values[labelled] = np.array([index[n] for n in names], np.int32)[inv.reshape(-1)]
    else:
        values = np.where(labelled, data, np.nan).astype(np.float32)
    return LabelRaster(values, crs, transform, labels.task, list(labels.classes), str(p),
                       labels.label_column, int(labelled.sum()))


# --- embedding rasters --------------------------------------------------------------------------

@dataclasses.dataclass
class EmbeddingGrid:
    """One raster of embeddings read in strips: its grid, the model that made it, and
    `strips(rows)`: EmbeddingRasters (int8 codes or float32, scales NaN = no data) of `rows`
    rows, top to bottom (the last shorter)."""

    name: str
    crs: Any
    transform: Any
    height: int
    width: int
    dims: int
    model: str
    weights: str
    year: int | None
    strips: Callable[[int], Iterator[EmbeddingRaster]]


def geotiff_grid(path: str | os.PathLike, year: int | None = None) -> EmbeddingGrid:
    """A GeoTIFF of embeddings (`tessera embed --geotiff`, an export) as an EmbeddingGrid; its
    model from its TESSERA_MODEL / model tag, its year from its `year` tag (a different `year`
    asked for is an InputError)."""
    import rasterio

    from tessera.geotiff import Window, read_embeddings

    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"{p}: no such GeoTIFF of embeddings")
    try:
        with rasterio.open(p) as src:
            tags, h, w, crs, transform = src.tags(), src.height, src.width, src.crs, src.transform
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{p}: not a readable GeoTIFF ({' '.join(str(exc).split())[:160]})"
                         ) from None
    if crs is None:
        raise InputError(f"{p}: no CRS; expected a georeferenced GeoTIFF of embeddings")
    _, dims = read_embeddings(p, Window(0, 0, min(h, 1), min(w, 1)))
    recorded = int(tags["year"]) if str(tags.get("year", "")).strip().isdigit() else None
    if year is not None and recorded is not None and int(year) != recorded:
        raise InputError(f"{p}: embeddings of {recorded}, not of the year asked for ({year})")

    def strips(rows: int) -> Iterator[EmbeddingRaster]:
        for r in range(0, h, rows):
            e, _ = read_embeddings(p, Window(r, 0, min(rows, h - r), w))
            ok = np.isfinite(e).all(axis=2)
            yield EmbeddingRaster(np.where(ok[..., None], e, np.nan).astype(np.float32),
                                  np.where(ok, np.float32(1), np.float32(np.nan)), crs,
                                  transform * transform.translation(0, r),
                                  recorded or int(year or 0))

    return EmbeddingGrid(str(p), crs, transform, h, w, len(dims),
                         str(tags.get("TESSERA_MODEL") or tags.get("model") or ""),
                         Path(str(tags.get("checkpoint", ""))).name, recorded or year, strips)


def folder_grids(path: str | os.PathLike, year: int) -> list[EmbeddingGrid]:
    """The `tessera embed` outputs of `year` in a folder (`<name>.npy` int8 codes +
    `<name>_scales.npy`, georeferenced by `<name>.tif`), each an EmbeddingGrid."""
    from tessera.downstream.labels import _FolderSource
    from tessera.geo.crs import rio_crs

    src = _FolderSource(Path(path), int(year), None)
    out = []
    for o in src.outputs:
        crs = rio_crs(o.key)

        def strips(rows: int, o: Any = o, crs: Any = crs) -> Iterator[EmbeddingRaster]:
            q = np.load(o.npy, mmap_mode="r")
            s = np.load(o.scales, mmap_mode="r")
            for r in range(0, o.height, rows):
                yield EmbeddingRaster(np.asarray(q[r:r + rows]),
                                      np.asarray(s[r:r + rows], np.float32), crs,
                                      o.affine * o.affine.translation(0, r), int(year))
        out.append(EmbeddingGrid(str(o.npy), crs, o.affine, o.height, o.width, o.dims, o.model,
                                 o.weights, o.year or int(year), strips))
    return out


def store_grid(client: Any, year: int, bounds: tuple[float, float, float, float],
               crs: Any = None) -> EmbeddingGrid:
    """The mosaic of a store (a `Client`) over a lon/lat bounding box for `year`, in `crs`
    (default: the UTM zone of its centre) at the store's pixel size, as an EmbeddingGrid."""
    from tessera.errors import ClientError

    year = int(year)
    name = client.store.describe() if hasattr(client.store, "describe") else str(client.store)
    r, present, _ = client.plan(bounds, year)  # iter_region warns of absent tiles, once
    if not present:
        raise ClientError(f"{name}: no tile of {year} under the labels ({r.name})")
    grid = client.output_grid(r, present, crs, None)
    held = client.model(year)

    def strips(rows: int) -> Iterator[EmbeddingRaster]:
        return client.iter_region(bounds, year, strip_rows=rows, crs=crs, dequantize=False)

    return EmbeddingGrid(name, grid.crs, grid.transform, grid.height, grid.width,
                         client.dims(year), held.model if held is not None else "",
                         held.weights if held is not None else "", year, strips)


def embedding_grids(source: Any, year: int | None, labels: LabelRaster, *,
                    cache_dir: str | os.PathLike | None = None,
                    dataset_version: str | None = None) -> list[EmbeddingGrid]:
    """The embedding rasters under `labels`: `source` a GeoTIFF of embeddings, a folder of
    `tessera embed` outputs, or a store (a `Client`, a path or URL; `year` needed)."""
    from tessera.downstream.labels import _embed_outputs
    from tessera.store.client import Client

    local = isinstance(source, (str, os.PathLike)) and not str(source).startswith(
        ("http://", "https://"))
    if local and Path(source).suffix.lower() in (".tif", ".tiff"):
        return [geotiff_grid(source, year)]
    if year is None:
        raise InputError(f"{source}: the embeddings' year is needed with a store or a folder of "
                         "`tessera embed` outputs")
    if local and Path(source).exists() and _embed_outputs(Path(source)):
        return folder_grids(source, int(year))
    if local and not Path(source).exists():
        raise NotFoundError(f"{source}: no such store, folder or GeoTIFF of embeddings")
    if isinstance(source, Client):
        client = source
    else:
        from tessera.store import open_store

        client = Client(open_store(source, cache_dir=cache_dir, dataset_version=dataset_version))
    client.check_year(int(year))
    from rasterio.crs import CRS

    crs = CRS.from_user_input(labels.crs)
    return [store_grid(client, int(year), labels.bounds_lonlat(),
                       None if crs.is_geographic else crs)]


# --- patches ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Patches:
    """Training patches: X float32 (N, D, patch, patch) (no NaN), Y (N, patch, patch) int64
    class indices (-1 = no label) or float32 targets (NaN = no label), with what the head must
    record: task, classes, the embeddings' model / width / weights / year, the grids used,
    `labelled` (pixels with a label and an embedding) and `dropped` (labelled pixels without an
    embedding, by reason)."""

    X: np.ndarray
    Y: np.ndarray
    task: str
    classes: list[str]
    patch: int
    model: str
    dims: int
    weights: str
    year: int | None
    sources: list[str]
    labelled: int
    dropped: dict[str, int]

    def __len__(self) -> int:
        return len(self.X)


def raster_patches(labels: LabelRaster, grids: Sequence[EmbeddingGrid], patch: int = 64, *,
                   progress: Progress | None = None) -> Patches:
    """The `patch` x `patch` tiles of the embedding grids that hold a labelled pixel with an
    embedding (see the module docstring); a LabelError when there is none."""
    from tessera.downstream.labels import LabelError

    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < MIN_PATCH:
        raise InputError(f"patch {patch!r}: expected a patch edge of at least {MIN_PATCH} px")
    if not grids:
        raise LabelError(f"{labels.source}: no embeddings under the labels")
    kinds = {(g.model, g.dims) for g in grids}
    if len(kinds) > 1:
        seen = ", ".join(f"{m or 'unrecorded'} {d} dims" for m, d in sorted(kinds))
        raise LabelError(f"{labels.source}: the embeddings come from different models or "
                         f"widths ({seen}); a head takes one")
    classify = labels.task == "classification"
    dims = grids[0].dims
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    total = np.zeros(dims, np.float64)
    count = 0
    covered = nodata = used = 0
    names: list[str] = []
    bar = task(progress, "cutting label patches", total=sum(g.height for g in grids),
               unit="rows")
    for g in grids:
        lab = labels.on_grid(g.crs, g.transform, g.height, g.width)
        has = lab >= 0 if classify else np.isfinite(lab)
        n_lab = int(has.sum())
        if n_lab == 0:
            bar.advance(g.height)
            continue
        covered += n_lab
        names.append(g.name)
        row = 0
        for strip in g.strips(patch):
            s = np.asarray(strip.scales, np.float32)
            e = np.asarray(strip.embeddings)
            h = s.shape[0]
            if e.shape != (h, g.width, dims):
                raise InputError(f"{g.name}: a strip of {e.shape} embeddings in a grid "
                                 f"{g.width} px wide of {dims}-dimensional embeddings")
            band_has = has[row:row + h]
            for c in range(0, g.width, patch):
                want = band_has[:, c:c + patch]
                if not want.any():
                    continue
                ok = np.isfinite(s[:, c:c + patch])
                nodata += int((want & ~ok).sum())
                keep = want & ok
                if not keep.any():
                    continue
                th, tw = ok.shape
                x = np.full((patch, patch, dims), np.nan, np.float32)
                v = np.asarray(e[:, c:c + patch], np.float32)
                if e.dtype == np.int8:
                    v = v * s[:, c:c + patch, None]
                v[~ok] = np.nan
                x[:th, :tw] = v
                total += v[ok].sum(axis=0, dtype=np.float64)
                count += int(ok.sum())
                y = np.full((patch, patch), -1 if classify else np.nan,
                            np.int64 if classify else np.float32)
                y[:th, :tw] = np.where(keep, lab[row:row + h, c:c + patch], y[:th, :tw])
                xs.append(np.moveaxis(x, 2, 0))
                ys.append(y)
                used += int(keep.sum())
            row += h
            bar.advance(h, f"{len(xs)} patches")
    dropped = {OUTSIDE: max(0, labels.labelled - covered), NODATA: nodata}
    if not xs:
        where = ", ".join(g.name for g in grids[:3]) + (" ..." if len(grids) > 3 else "")
        raise LabelError(f"{labels.source}: no labelled pixel has an embedding in {where} "
                         f"({dropped[OUTSIDE]} outside them, {nodata} without data)")
    X = np.stack(xs)
    del xs
    mean = (total / max(count, 1)).astype(np.float32)
    np.copyto(X, mean[None, :, None, None], where=np.isnan(X))
    g0 = grids[0]
    return Patches(X, np.stack(ys), labels.task, list(labels.classes), int(patch), g0.model,
                   dims, g0.weights, g0.year, names, used, dropped)


__all__ = ["MIN_PATCH", "EmbeddingGrid", "LabelRaster", "Patches", "embedding_grids",
           "folder_grids", "geotiff_grid", "raster_patches", "read_label_raster", "store_grid"]
