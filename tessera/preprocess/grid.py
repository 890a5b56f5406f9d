"""The output grid of a preprocessing run: UTM zone of the region's centre, 10 m pixels, bounds
snapped to multiples of the pixel size, and the region polygon that becomes each patch's ROI.

Snapping to a global lattice (multiples of 10 m in the zone) is what makes two adjacent regions
processed separately put their pixels on the same centres, so their overlap can be identical.
The polygon is kept as a geometry, not a mask, so a 100 x 100 km region never needs a
whole-region array: each patch rasterises only its own window.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_RESOLUTION = 10.0
DEFAULT_PATCH_SIZE = 500
GRID_TILE_STEP = 0.1  # degrees: the published global grid

_TILE_NAME = re.compile(r"^grid_(-?\d+\.\d+)_(-?\d+\.\d+)$")


class RegionError(ValueError):
    """A region description (bbox, polygon file, grid tile name) that cannot be used."""


def utm_crs(lon: float, lat: float) -> Any:
    """The WGS 84 / UTM CRS (EPSG 326xx north, 327xx south) of the zone containing (lon, lat).

    Standard 6-degree zones, as the Sentinel-2 MGRS tiling and the published grid use them.
    """
    from pyproj import CRS

    if not (-180.0 <= lon <= 180.0 and -80.0 <= lat <= 84.0):
        raise RegionError(f"centre ({lon}, {lat}): outside the UTM range "
                          "(lon -180..180, lat -80..84)")
    zone = min(int(math.floor((lon + 180.0) / 6.0)) + 1, 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


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
        return tuple(transform_bounds(self.crs, "EPSG:4326", *self.bounds, densify_pts=21))

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

    def sub(self, p: Patch) -> "TargetGrid":
        """The grid of one patch (same CRS and geometry, shifted transform)."""
        from rasterio.windows import Window, transform as window_transform
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
                             ) -> "TargetGrid":
        """Grid covering a lon/lat (EPSG:4326) shapely geometry, in the UTM zone of its centre
        (or `crs`), bounds snapped outward to multiples of `resolution`."""
        from pyproj import Transformer
        from rasterio.crs import CRS as RioCRS
        if geom.is_empty or not geom.is_valid:
            raise RegionError(f"{name}: the region geometry is empty or invalid")
        c = geom.envelope.centroid
        crs = RioCRS.from_user_input(crs) if crs is not None else RioCRS.from_wkt(
            utm_crs(c.x, c.y).to_wkt())
        to_utm = Transformer.from_crs("EPSG:4326", crs.to_wkt(), always_xy=True)
        projected = _reproject(geom.segmentize(0.001), to_utm)
        if not projected.is_valid:
            projected = projected.buffer(0)
        return cls.from_projected_geometry(projected, crs, name, resolution)

    @classmethod
    def from_projected_geometry(cls, geom: Any, crs: Any, name: str = "region",
                                resolution: float = DEFAULT_RESOLUTION) -> "TargetGrid":
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
                  resolution: float = DEFAULT_RESOLUTION, name: str | None = None) -> "TargetGrid":
        from shapely.geometry import box
        if not (west < east and south < north):
            raise RegionError(f"bbox ({west}, {south}, {east}, {north}): expected west < east "
                              "and south < north, in degrees (lon/lat)")
        if not (-180 <= west and east <= 180 and -90 <= south and north <= 90):
            raise RegionError(f"bbox ({west}, {south}, {east}, {north}): not lon/lat degrees")
        return cls.from_lonlat_geometry(box(west, south, east, north),
                                        name or "bbox", resolution)

    @classmethod
    def from_tile_name(cls, tile: str, resolution: float = DEFAULT_RESOLUTION) -> "TargetGrid":
        """A tile of the published 0.1 degree grid, `grid_{lon:.2f}_{lat:.2f}` (its centre)."""
        m = _TILE_NAME.match(tile)
        if not m:
            raise RegionError(f"tile {tile!r}: expected grid_{{lon}}_{{lat}}, e.g. grid_0.15_52.05")
        lon, lat = float(m.group(1)), float(m.group(2))
        for v, what in ((lon, "lon"), (lat, "lat")):
            frac = round(abs(v) * 100) % 10
            if frac != 5:
                raise RegionError(f"tile {tile!r}: the {what} of a grid tile centre ends in .x5 "
                                  f"(0.1 degree tiles centred on odd hundredths), got {v}")
        h = GRID_TILE_STEP / 2
        grid = cls.from_bbox(lon - h, lat - h, lon + h, lat + h, resolution, name=tile)
        return grid

    @classmethod
    def from_file(cls, path: str | os.PathLike, resolution: float = DEFAULT_RESOLUTION
                  ) -> "TargetGrid":
        """Region from a GeoJSON or GeoPackage polygon file (all features, unioned)."""
        from shapely import union_all
        path = Path(path)
        if not path.exists():
            raise RegionError(f"{path}: region file not found")
        geoms, crs = _read_vector(path)
        if not geoms:
            raise RegionError(f"{path}: no geometries in the file")
        geom = union_all(geoms)
        if crs is not None and not _is_lonlat(crs):
            from pyproj import Transformer
            geom = _reproject(geom, Transformer.from_crs(crs, "EPSG:4326", always_xy=True))
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise RegionError(f"{path}: the region must be a polygon, got {geom.geom_type}")
        return cls.from_lonlat_geometry(geom, path.stem, resolution)


def _reproject(geom: Any, transformer: Any) -> Any:
    """A shapely geometry through a pyproj Transformer (always_xy)."""
    import shapely
    return shapely.transform(geom, lambda xy: np.column_stack(
        transformer.transform(xy[:, 0], xy[:, 1])))


def _is_lonlat(crs: Any) -> bool:
    from pyproj import CRS
    c = CRS.from_user_input(crs)
    return c.is_geographic and c.equals("EPSG:4326", ignore_axis_order=True)


def _read_vector(path: Path) -> tuple[list[Any], Any]:
    """Geometries and CRS of a vector file. GeoJSON needs nothing extra; other formats
    (GeoPackage, shapefile) are read with pyogrio (`pip install tessera-eo[vector]`)."""
    from shapely.geometry import shape

    if path.suffix.lower() in (".geojson", ".json"):
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegionError(f"{path}: not valid GeoJSON ({exc})") from None
        feats = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
        geoms = []
        for i, f in enumerate(feats):
            g = f.get("geometry", f) if f.get("type") == "Feature" else f
            try:
                geoms.append(shape(g))
            except Exception as exc:  # shapely raises several types for bad geometry dicts
                raise RegionError(f"{path}: feature {i}: not a GeoJSON geometry ({exc})") from None
        crs = (doc.get("crs") or {}).get("properties", {}).get("name")
        return geoms, crs
    try:
        import pyogrio
        from shapely import from_wkb
    except ImportError:
        raise RegionError(f"{path}: reading {path.suffix} files needs pyogrio "
                          "(pip install 'tessera-eo[vector]'); GeoJSON works without it") from None
    try:
        meta, _, wkb, _ = pyogrio.raw.read(path, read_geometry=True)
    except Exception as exc:
        raise RegionError(f"{path}: cannot read vector file ({exc})") from None
    return [g for g in from_wkb(wkb) if g is not None], meta.get("crs")

