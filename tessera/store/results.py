"""What the client returns: embeddings on a grid (`EmbeddingRaster`), what a request would
need (`DryRun`), and what a per-tile export did (`TilesExport`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from tessera.errors import human_bytes
from tessera.geotiff import band_names

DIM = 128                  # embedding dimensions of the published model
EXPORT_FORMATS = ("geotiff", "geotiff-int8", "zarr", "tiles", "memory")
#: What `Client.sample_points` says of each point: "valid" (data), "water" (no data, and the
#: tile's landmask says water: stores in GeoTessera's layouts), "nodata" (in a stored tile, no
#: data there), "outside" (no tile of the store covers the point for that year).
POINT_STATUSES = ("valid", "water", "nodata", "outside")


class MissingTilesWarning(UserWarning):
    """Some tiles of a requested region are not in the store for that year."""


def dequantize(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """float32 `q * s` (NaN where the scale is NaN) of int8 codes and per-pixel scales."""
    out = q.astype(np.float32)
    out *= s[..., None]
    return out


# --- results ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class EmbeddingRaster:
    """Embeddings on one north-up grid: a stored tile (`fetch_tile`, `iter_tiles`) or a mosaic
    (`read_region`). `embeddings` is float32 (H, W, D), NaN where there is no data, or the int8
    codes when read with dequantize=False; `scales` float32 (H, W), NaN = no data."""

    embeddings: np.ndarray
    scales: np.ndarray
    crs: Any                      # rasterio CRS
    transform: Any                # affine.Affine
    year: int
    tile: str | None = None       # the tile, for a single stored tile
    tiles: tuple[str, ...] = ()   # the stored tiles it was made from
    absent: tuple[str, ...] = ()  # tiles of the region the store does not have for that year
    version: str = ""
    model: str = ""  # the model id of the embeddings (`tessera models`)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.scales.shape)

    @property
    def dequantized(self) -> bool:
        return self.embeddings.dtype != np.int8

    @property
    def valid(self) -> np.ndarray:
        """bool (H, W): pixels with data."""
        return np.isfinite(self.scales)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t, (h, w) = self.transform, self.shape
        return (t.c, t.f + t.e * h, t.c + t.a * w, t.f)

    def dequantize(self) -> np.ndarray:
        """float32 (H, W, D) `q * s`, NaN where there is no data."""
        if self.dequantized:
            return self.embeddings
        return dequantize(self.embeddings, self.scales)

    def to_xarray(self) -> Any:
        """An xarray.DataArray with dims (band, y, x) (rasterio's and rioxarray's order) of the
        float32 embeddings, x/y pixel-centre coordinates, band names in `long_name` and the CRS
        and transform written with rioxarray. With int8 codes: a Dataset of `embeddings` (band,
        y, x) int8 and `scales` (y, x) float32 instead."""
        import rioxarray  # noqa: F401  (registers the .rio accessor)
        import xarray as xr

        h, w = self.shape
        t = self.transform
        d = self.embeddings.shape[-1]
        coords = {"band": np.arange(d), "y": t.f + t.e * (np.arange(h) + 0.5),
                  "x": t.c + t.a * (np.arange(w) + 0.5)}
        attrs = {"year": int(self.year), "tiles": ",".join(self.tiles),
                 "absent_tiles": ",".join(self.absent), "version": self.version,
                 "model": self.model,
                 "long_name": band_names(d)}
        emb = self.embeddings.transpose(2, 0, 1)  # a view, no copy
        if self.dequantized:
            da = xr.DataArray(emb, dims=("band", "y", "x"), coords=coords, name="embeddings",
                              attrs=attrs)
            da = da.rio.write_crs(self.crs).rio.write_transform(t)
            return da.rio.write_nodata(np.nan, encoded=False)
        ds = xr.Dataset({"embeddings": (("band", "y", "x"), emb, {"long_name": band_names(d)}),
                         "scales": (("y", "x"), self.scales)}, coords=coords,
                        attrs={k: v for k, v in attrs.items() if k != "long_name"})
        return ds.rio.write_crs(self.crs).rio.write_transform(t)


@dataclasses.dataclass
class DryRun:
    """What a request would need, before doing it (`Client.dry_run`); `str()` is a report."""

    region: str
    year: int
    tiles_present: list[str]
    tiles_absent: list[str]
    files: int                     # files to read (embeddings and scales of the present tiles)
    bytes_total: int               # their size
    bytes_to_download: int         # of which not yet in a local copy or cache
    export_bytes: dict[str, int]   # per format, uncompressed estimate of what would be written
    crs: str = ""
    width: int = 0
    height: int = 0
    resolution: float = 0.0

    @property
    def bytes_local(self) -> int:
        return self.bytes_total - self.bytes_to_download

    def __str__(self) -> str:
        n = len(self.tiles_present) + len(self.tiles_absent)
        lines = [f"{self.region}, year {self.year}: {n} tiles in the region, "
                 f"{len(self.tiles_present)} in the store, {len(self.tiles_absent)} absent"]
        if self.tiles_absent:
            shown = ", ".join(self.tiles_absent[:8])
            more = f" and {len(self.tiles_absent) - 8} more" if len(self.tiles_absent) > 8 else ""
            lines.append(f"absent: {shown}{more}")
        lines.append(f"read {self.files} files, {human_bytes(self.bytes_total)}: "
                     f"{human_bytes(self.bytes_to_download)} to download, "
                     f"{human_bytes(self.bytes_local)} already local")
        if self.width:
            lines.append(f"output grid: {self.crs}, {self.width} x {self.height} px at "
                         f"{self.resolution:g} m")
        for fmt, b in self.export_bytes.items():
            lines.append(f"would write ({fmt}): about {human_bytes(b)} uncompressed")
        return "\n".join(lines)


@dataclasses.dataclass
class PointMetadata:
    """Where each sampled point was read (`Client.sample_points(..., metadata=True)`), one
    array entry per point, as GeoTessera's `sample_embeddings_at_points(include_metadata=True)`
    reports it: the tile read, its centre, the pixel's row and column in that tile's raster and
    the tile's CRS. Points no stored tile covers ("outside") have tile "", NaN lon/lat, row and
    col -1 and crs ""; a point in a stored tile beyond its raster has row and col -1."""

    tile: np.ndarray       # str, e.g. "grid_0.15_52.05"
    tile_lon: np.ndarray   # float64, the tile's centre
    tile_lat: np.ndarray
    pixel_row: np.ndarray  # int64
    pixel_col: np.ndarray
    crs: np.ndarray        # str, e.g. "EPSG:32631"

    COLUMNS = ("tile", "tile_lon", "tile_lat", "pixel_row", "pixel_col", "crs")

    def __len__(self) -> int:
        return len(self.tile)

    def columns(self) -> dict[str, np.ndarray]:
        """The six arrays by name, in `COLUMNS` order (a table's columns)."""
        return {c: getattr(self, c) for c in self.COLUMNS}

    def records(self) -> list[dict[str, Any] | None]:
        """GeoTessera's per-point dicts {'tile_lon', 'tile_lat', 'pixel_row', 'pixel_col',
        'crs'} (plus 'tile'), None for a point no stored tile covers."""
        return [None if not t else
                {"tile": str(t), "tile_lon": float(lo), "tile_lat": float(la),
                 "pixel_row": int(r), "pixel_col": int(c), "crs": str(k)}
                for t, lo, la, r, c, k in zip(self.tile, self.tile_lon, self.tile_lat,
                                              self.pixel_row, self.pixel_col, self.crs)]


@dataclasses.dataclass
class TilesExport:
    """What `export_tiles_geotiff` did: files written now, files already there, absent tiles."""

    written: list[Path]
    skipped: list[Path]
    absent: list[str]

    @property
    def paths(self) -> list[Path]:
        return sorted(self.written + self.skipped)




__all__ = ["DIM", "EXPORT_FORMATS", "POINT_STATUSES", "DryRun", "EmbeddingRaster",
           "MissingTilesWarning", "PointMetadata", "TilesExport", "dequantize"]
