"""The output grid of a run: a north-up raster in a projected CRS (by default the UTM zone of
the region's centre, 10 m pixels, bounds snapped to multiples of the pixel size), cut into
patches, with the region polygon that becomes each patch's ROI.

Snapping to a global lattice (multiples of 10 m in the zone) is what makes two adjacent regions
processed separately put their pixels on the same centres, so their overlap can be identical.
The polygon is kept as a geometry, not a mask, so a 100 x 100 km region never needs a
whole-region array: each patch rasterises only its own window.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from tessera.errors import RegionError
from tessera.geo.crs import LONLAT, reproject_geometry, transformer, utm_crs

DEFAULT_RESOLUTION = 10.0
DEFAULT_PATCH_SIZE = 500


@dataclasses.dataclass(frozen=True)
class Patch:
    """A window of the grid, named `{x0}_{y0}_{x1}_{y1}` (pixel columns and rows of the grid)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def name(self) -> str:
        return f"{self.x0}_{self.y0}_{self.x1}_{self.y1}"

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


@dataclasses.dataclass(frozen=True)
class TargetGrid:
    """A north-up grid in a projected CRS, plus the region geometry (in that CRS) for the ROI."""

    crs: Any                     # rasterio CRS
    transform: Any               # affine.Affine, north-up
    width: int
    height: int
    geometry: Any = None         # shapely geometry in `crs`; None = the whole rectangle
    name: str = "region"

    @property
    def resolution(self) -> float:
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        from rasterio.warp import transform_bounds
        w, s, e, n = transform_bounds(self.crs, LONLAT, *self.bounds, densify_pts=21)
        return (w, s, e, n)

    def patches(self, size: int = DEFAULT_PATCH_SIZE) -> list[Patch]:
        """Row-major windows of `size` x `size` pixels (smaller at the right and bottom edges),
        skipping windows that do not touch the region geometry."""
        if size < 1:
            raise RegionError(f"patch size {size}: expected a positive number of pixels")
        out = []
        for y0 in range(0, self.height, size):
            for x0 in range(0, self.width, size):
                p = Patch(x0, y0, min(x0 + size, self.width), min(y0 + size, self.height))
                if self.geometry is None or self._touches(p):
                    out.append(p)
        return out

    def _touches(self, p: Patch) -> bool:
        from shapely.geometry import box
        b = self.sub(p).bounds
        return bool(self.geometry.intersects(box(*b)))

    def sub(self, p: Patch) -> TargetGrid:
        """The grid of one patch (same CRS and geometry, shifted transform)."""
        from rasterio.windows import Window
        from rasterio.windows import transform as window_transform
        t = window_transform(Window(p.x0, p.y0, p.width, p.height), self.transform)
        return TargetGrid(self.crs, t, p.width, p.height, self.geometry, p.name)

    def roi(self) -> np.ndarray:
        """uint8 (height, width): 1 where the pixel centre lies inside the region geometry."""
        if self.geometry is None:
            return np.ones((self.height, self.width), np.uint8)
        from rasterio.features import geometry_mask
        inside = geometry_mask([self.geometry], out_shape=(self.height, self.width),
                               transform=self.transform, invert=True, all_touched=False)
        return inside.astype(np.uint8)

    def to_json(self) -> dict[str, Any]:
        from shapely.geometry import mapping
        return {"name": self.name, "crs": self.crs.to_string(), "transform": list(self.transform)[:6],
                "width": self.width, "height": self.height, "bounds": list(self.bounds),
                "resolution": self.resolution,
                "geometry": None if self.geometry is None else mapping(self.geometry)}

    def describe(self) -> str:
        w, s, e, n = self.bounds
        return (f"{self.name}: {self.crs.to_string()}, {self.width} x {self.height} px at "
                f"{self.resolution:g} m, bounds ({w:.0f}, {s:.0f}, {e:.0f}, {n:.0f})")

    # --- constructors ---------------------------------------------------------------------------

    @classmethod
    def from_lonlat_geometry(cls, geom: Any, name: str = "region",
                             resolution: float = DEFAULT_RESOLUTION, crs: Any = None
                             ) -> TargetGrid:
        """Grid covering a lon/lat (EPSG:4326) shapely geometry, in the UTM zone of its centre
        (or `crs`), bounds snapped outward to multiples of `resolution`."""
        from rasterio.crs import CRS as RioCRS
        if geom.is_empty or not geom.is_valid:
            raise RegionError(f"{name}: the region geometry is empty or invalid")
        c = geom.envelope.centroid
        crs = RioCRS.from_user_input(crs) if crs is not None else RioCRS.from_wkt(
            utm_crs(c.x, c.y).to_wkt())
        projected = reproject_geometry(geom.segmentize(0.001), transformer(LONLAT, crs.to_wkt()))
        if not projected.is_valid:
            projected = projected.buffer(0)
        return cls.from_projected_geometry(projected, crs, name, resolution)

    @classmethod
    def from_projected_geometry(cls, geom: Any, crs: Any, name: str = "region",
                                resolution: float = DEFAULT_RESOLUTION) -> TargetGrid:
        from rasterio.transform import from_origin
        w, s, e, n = geom.bounds
        r = float(resolution)
        x0, y1 = math.floor(w / r) * r, math.ceil(n / r) * r
        x1, y0 = math.ceil(e / r) * r, math.floor(s / r) * r
        width, height = int(round((x1 - x0) / r)), int(round((y1 - y0) / r))
        if width < 1 or height < 1:
            raise RegionError(f"{name}: region smaller than one {r:g} m pixel")
        return cls(crs, from_origin(x0, y1, r, r), width, height, geom, name)

    @classmethod
    def from_bbox(cls, west: float, south: float, east: float, north: float,
                  resolution: float = DEFAULT_RESOLUTION, name: str | None = None) -> TargetGrid:
        from shapely.geometry import box
        if not (west < east and south < north):
            raise RegionError(f"bbox ({west}, {south}, {east}, {north}): expected west < east "
                              "and south < north, in degrees (lon/lat)")
        if not (-180 <= west and east <= 180 and -90 <= south and north <= 90):
            raise RegionError(f"bbox ({west}, {south}, {east}, {north}): not lon/lat degrees")
        return cls.from_lonlat_geometry(box(west, south, east, north),
                                        name or "bbox", resolution)

    @classmethod
    def from_tile_name(cls, tile: str, resolution: float = DEFAULT_RESOLUTION) -> TargetGrid:
        """A tile of the published 0.1 degree grid, `grid_{lon:.2f}_{lat:.2f}` (its centre): the
        tile's own raster (`GridTile.target_grid`), the one the store holds it on."""
        from tessera.geo.grid import parse_tile_name
        return parse_tile_name(tile).target_grid(resolution)

    @classmethod
    def from_file(cls, path: str | os.PathLike, resolution: float = DEFAULT_RESOLUTION
                  ) -> TargetGrid:
        """Region from a GeoJSON or GeoPackage polygon file (all features, unioned)."""
        from tessera.geo.region import read_polygon
        geom, name = read_polygon(path)
        return cls.from_lonlat_geometry(geom, name, resolution)


__all__ = ["DEFAULT_PATCH_SIZE", "DEFAULT_RESOLUTION", "Patch", "TargetGrid"]
