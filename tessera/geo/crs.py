"""Coordinate reference systems: the UTM zone of a place, lon/lat tests, and reprojection of
coordinates and shapely geometries (pyproj transformers, cached).

Every part of the package that moves between lon/lat and a projected CRS goes through here, so
the axis order (always x = easting / longitude first) and the CRS spellings are decided once.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from tessera.errors import RegionError

LONLAT = "EPSG:4326"


def utm_crs(lon: float, lat: float) -> Any:
    """The WGS 84 / UTM pyproj CRS (EPSG 326xx north, 327xx south) of the zone containing
    (lon, lat). Standard 6-degree zones, as the Sentinel-2 MGRS tiling and the published grid
    use them."""
    from pyproj import CRS

    if not (-180.0 <= lon <= 180.0 and -80.0 <= lat <= 84.0):
        raise RegionError(f"centre ({lon}, {lat}): outside the UTM range "
                          "(lon -180..180, lat -80..84)")
    zone = min(int(math.floor((lon + 180.0) / 6.0)) + 1, 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def is_lonlat(crs: Any) -> bool:
    """Whether `crs` (anything pyproj reads) is WGS 84 longitude / latitude."""
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    return bool(c.is_geographic and c.equals(LONLAT, ignore_axis_order=True))


def rio_crs(crs: Any) -> Any:
    """A rasterio CRS, by EPSG code when it has one (so equal CRSs compare and print alike)."""
    from rasterio.crs import CRS

    c = CRS.from_user_input(crs)
    epsg = c.to_epsg()
    return CRS.from_epsg(epsg) if epsg else c


def crs_key(crs: Any) -> str:
    """`EPSG:nnnn`, or the WKT of a CRS without an EPSG code: a hashable name for grouping."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


@functools.lru_cache(maxsize=256)
def transformer(src: str, dst: str) -> Any:
    """A cached pyproj Transformer from `src` to `dst` (x / longitude first)."""
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def reproject_geometry(geom: Any, tr: Any) -> Any:
    """A shapely geometry through a pyproj Transformer (always_xy)."""
    import shapely

    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def to_lonlat(geom: Any, crs: Any) -> Any:
    """A shapely geometry in `crs` (None = lon/lat already) as EPSG:4326 lon/lat."""
    if crs is None or is_lonlat(crs):
        return geom
    return reproject_geometry(geom, transformer(str(crs), LONLAT))


__all__ = ["LONLAT", "crs_key", "is_lonlat", "reproject_geometry", "rio_crs", "to_lonlat",
           "transformer", "utm_crs"]
