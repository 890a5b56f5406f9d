"""The one small interface between sources and processing.

A *source* (local files, STAC, netCDF cubes) turns a grid and a year into `Granule`s: one
acquisition of one sensor on one date over one footprint, with one `Asset` per band. An asset
knows how to read itself *onto any target grid* (reprojected, resampled, windowed), so the
processing rules in `compose.py` never see file formats, URLs or CRSs. A new source is a class
with `search(grid, year) -> list[Granule]` and `describe() -> dict`.
"""

from __future__ import annotations

import dataclasses
import functools
import datetime as _dt
from typing import Any, Callable, Literal, Mapping, Protocol

import numpy as np

from tessera.errors import PreprocessError, error_text
from tessera.geo import TargetGrid

Sensor = Literal["s2", "s1"]
S1Units = Literal["linear", "db", "int16"]


class Asset(Protocol):
    """One band of one granule, readable onto a target grid."""

    @property
    def description(self) -> str:
        """File path or URL, for error messages."""
        ...

    def read(self, grid: TargetGrid, resampling: str) -> np.ndarray:
        """float32 (grid.height, grid.width), NaN where the source has no data."""
        ...


_GDAL_HTTP = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MAX_RETRY": "3",
              "GDAL_HTTP_RETRY_DELAY": "1", "VSI_CACHE": "TRUE",
              # {noext}: also URLs without an extension (signed or API download links)
              "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,{noext}"}


@dataclasses.dataclass(frozen=True)
class RasterAsset:
    """A band of a GeoTIFF/COG (local path or http(s) URL), read through a GDAL warped VRT so
    only the blocks under the target window are fetched."""

    href: str
    band: int = 1
    nodata: float | None = None  # overrides the file's nodata value

    @property
    def description(self) -> str:
        return self.href if self.band == 1 else f"{self.href} (band {self.band})"

    def read(self, grid: TargetGrid, resampling: str) -> np.ndarray:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioError
        from rasterio.vrt import WarpedVRT

        try:
            with rasterio.Env(**_GDAL_HTTP), rasterio.open(self.href) as src:
                if src.crs is None:
                    raise PreprocessError(f"{self.description}: no CRS in the file")
                if not 1 <= self.band <= src.count:
                    raise PreprocessError(f"{self.description}: the file has {src.count} "
                                          f"band(s), band {self.band} was asked for")
                nodata = self.nodata if self.nodata is not None else src.nodatavals[self.band - 1]
                if nodata is None:
                    nodata = 0.0  # Sentinel convention: 0 = no data (S2 L2A, S1 RTC)
                with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width,
                               height=grid.height, resampling=Resampling[resampling],
                               src_nodata=nodata, nodata=np.nan, dtype="float32") as vrt:
                    return vrt.read(self.band, out_dtype="float32")
        except PreprocessError:
            raise
        except (RasterioError, OSError) as exc:
            raise PreprocessError(f"{self.description}: cannot read ({error_text(exc)})") from None


@functools.cache
def _quiet_array_reprojection() -> None:
    """rasterio sometimes warns "Dataset has no geotransform" when warping in-memory arrays from
    several threads at once (odc-geo #131); the output is unaffected, the warning only confuses."""
    import warnings
    from rasterio.errors import NotGeoreferencedWarning
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module=r"rasterio\..*")


@dataclasses.dataclass(frozen=True)
class ArrayAsset:
    """A band held by an in-memory or lazily loaded array with its own CRS and transform
    (netCDF/xarray cubes); reprojected with `rasterio.warp.reproject`."""

    load: Callable[[], np.ndarray]  # returns float32 (h, w), NaN = no data
    crs: Any
    transform: Any
    description: str

    def read(self, grid: TargetGrid, resampling: str) -> np.ndarray:
        from rasterio.enums import Resampling
        from rasterio.warp import reproject

        _quiet_array_reprojection()
        src = np.asarray(self.load(), dtype=np.float32)
        out = np.full((grid.height, grid.width), np.nan, np.float32)
        reproject(src, out, src_transform=self.transform, src_crs=self.crs, src_nodata=np.nan,
                  dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=np.nan,
                  resampling=Resampling[resampling])
        return out


@dataclasses.dataclass(frozen=True)
class Granule:
    """One acquisition of one sensor over one footprint.

    `id` orders granules of the same date ("the first granule with a valid SCL" is the first in
    id order), so the choice never depends on the order a catalogue returned them in.
    """

    sensor: Sensor
    date: _dt.date
    id: str
    assets: Mapping[str, Asset]           # band name (bands.S2_BANDS + "SCL", or "VV"/"VH") -> Asset
    orbit: str | None = None              # S1: "ascending" | "descending"
    baseline: str | None = None           # S2 processing baseline from metadata, e.g. "04.00"
    boa_offset_applied: bool | None = None  # metadata says the BOA offset was already removed
    s1_units: S1Units = "linear"
    bbox: tuple[float, float, float, float] | None = None  # lon/lat footprint bounds
    source: str = ""

    @property
    def doy(self) -> int:
        return self.date.timetuple().tm_yday

    def asset(self, band: str) -> Asset:
        try:
            return self.assets[band]
        except KeyError:
            raise PreprocessError(f"granule {self.id} ({self.source}, {self.date}): no {band} "
                                  f"band; it has {sorted(self.assets)}") from None


class Source(Protocol):
    name: str

    def search(self, grid: TargetGrid, year: int) -> list[Granule]:
        """Every granule of `year` whose footprint intersects the grid. No cloud-cover or
        coverage filtering: the date set must not depend on the region."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able description recorded in each patch's sidecar."""
        ...


def bbox_intersects(a: tuple[float, float, float, float] | None,
                    b: tuple[float, float, float, float]) -> bool:
    if a is None:
        return True
    return not (a[2] < b[0] or a[0] > b[2] or a[3] < b[1] or a[1] > b[3])
