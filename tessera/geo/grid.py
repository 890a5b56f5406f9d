"""The published global grid (SPEC section 5): 0.1 degree tiles named by their centre,
`grid_{lon:.2f}_{lat:.2f}` (centres end in .x5), each stored at 10 m in the UTM zone of its
centre. Everything here is computed, nothing downloaded.

Tiles are indexed by integers (ix, iy) = floor(10 lon), floor(10 lat), so names, containment and
bbox enumeration never suffer from decimal rounding. Longitudes wrap (180 is -180); a bbox whose
west edge is east of its east edge crosses the antimeridian. Tiles whose centre is outside UTM's
latitude range (-80..84) are refused with a clear error, as the published product has none.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from tessera.errors import GridError
from tessera.geo.crs import utm_crs
from tessera.geo.target import DEFAULT_RESOLUTION, TargetGrid

STEP = 0.1  # degrees
UTM_LAT_RANGE = (-80.0, 84.0)
_N_LON = 3600  # tiles around the globe
_NAME = re.compile(r"^grid_(-?\d{1,3}\.\d{2})_(-?\d{1,2}\.\d{2})$")


def _index(v: float) -> int:
    # round away float noise first (0.3 * 10 = 2.9999999999999996), then floor
    return math.floor(round(v * 10.0, 9))


@dataclasses.dataclass(frozen=True, order=True)
class GridTile:
    """One 0.1 degree tile, by integer index: lon from ix/10 to (ix+1)/10, lat likewise."""

    ix: int  # -1800 .. 1799
    iy: int  # -800 .. 839 (UTM range)

    def __post_init__(self) -> None:
        if not -_N_LON // 2 <= self.ix < _N_LON // 2:
            raise GridError(f"tile index ix={self.ix}: expected -1800..1799")
        lo, hi = UTM_LAT_RANGE
        if not lo * 10 <= self.iy < hi * 10:
            raise GridError(f"tile at latitude {self.lat:.2f}: outside UTM's range "
                            f"({lo:g}..{hi:g} degrees); the grid has no tiles there")

    # --- identity -------------------------------------------------------------------------------
    @property
    def lon(self) -> float:
        """Centre longitude (ends in .x5)."""
        return round((self.ix + 0.5) / 10.0, 2)

    @property
    def lat(self) -> float:
        return round((self.iy + 0.5) / 10.0, 2)

    @property
    def name(self) -> str:
        return f"grid_{self.lon:.2f}_{self.lat:.2f}"

    def __str__(self) -> str:
        return self.name

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        return (self.ix / 10.0, self.iy / 10.0, (self.ix + 1) / 10.0, (self.iy + 1) / 10.0)

    def polygon(self) -> Any:
        from shapely.geometry import box
        return box(*self.bounds)

    # --- its 10 m UTM raster ----------------------------------------------------------------------
    @property
    def utm_zone(self) -> int:
        return int(utm_crs(self.lon, self.lat).to_epsg()) % 100

    @property
    def epsg(self) -> int:
        return int(utm_crs(self.lon, self.lat).to_epsg())

    def target_grid(self, resolution: float = DEFAULT_RESOLUTION) -> TargetGrid:
        """The tile's raster: its UTM zone, bounds snapped outward to multiples of `resolution`,
        the tile's lon/lat cell as the ROI geometry."""
        return _target_grid(self.ix, self.iy, float(resolution))

    @property
    def crs(self) -> Any:
        return self.target_grid().crs

    @property
    def transform(self) -> Any:
        return self.target_grid().transform

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in 10 m pixels."""
        g = self.target_grid()
        return (g.height, g.width)


@functools.lru_cache(maxsize=4096)
def _target_grid(ix: int, iy: int, resolution: float) -> TargetGrid:
    t = GridTile(ix, iy)
    crs = utm_crs(t.lon, t.lat)
    return TargetGrid.from_lonlat_geometry(t.polygon(), name=t.name, resolution=resolution,
                                           crs=crs.to_wkt())


# --- lookups ------------------------------------------------------------------------------------

def _check_lonlat(lon: float, lat: float, what: str) -> None:
    if not (np.isfinite(lon) and np.isfinite(lat)):
        raise GridError(f"{what} ({lon}, {lat}): not finite")
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise GridError(f"{what} ({lon}, {lat}): expected lon -180..180 and lat -90..90 degrees")


def _wrap(ix: int) -> int:
    return (ix + _N_LON // 2) % _N_LON - _N_LON // 2


def tile_of(lon: float, lat: float) -> GridTile:
    """The tile containing (lon, lat); a point on a tile edge belongs to the tile east / north of
    it (lon 180 is lon -180)."""
    _check_lonlat(lon, lat, "point")
    return GridTile(_wrap(_index(lon)), _index(lat))


def parse_tile_name(name: str) -> GridTile:
    """`grid_{lon:.2f}_{lat:.2f}` -> the tile; the centre must end in .x5."""
    m = _NAME.match(name.strip())
    if not m:
        raise GridError(f"tile {name!r}: expected grid_{{lon:.2f}}_{{lat:.2f}}, e.g. "
                        "grid_0.15_52.05")
    lon, lat = float(m.group(1)), float(m.group(2))
    for v, what in ((lon, "lon"), (lat, "lat")):
        if round(abs(v) * 100) % 10 != 5:
            raise GridError(f"tile {name!r}: the {what} of a tile centre ends in .x5 "
                            f"(0.1 degree tiles centred on odd hundredths), got {v}")
    _check_lonlat(lon, lat, f"tile {name!r} centre")
    tile = tile_of(lon, lat)
    if tile.name != name.strip():  # e.g. grid_180.05_0.05
        raise GridError(f"tile {name!r}: not a tile of the grid (nearest: {tile.name})")
    return tile


def tiles_in_bbox(west: float, south: float, east: float, north: float) -> list[GridTile]:
    """Every tile touching the lon/lat bbox (edges included only when the box has area inside
    the tile), row-major from the north-west. west > east means the box crosses the antimeridian.
    Latitudes beyond UTM's range are refused."""
    _check_lonlat(west, south, "bbox corner")
    _check_lonlat(east, north, "bbox corner")
    if not south < north:
        raise GridError(f"bbox ({west}, {south}, {east}, {north}): expected south < north")
    if west == east:
        raise GridError(f"bbox ({west}, {south}, {east}, {north}): zero width")
    lo, hi = UTM_LAT_RANGE
    if south < lo or north > hi:
        raise GridError(f"bbox ({west}, {south}, {east}, {north}): latitudes outside UTM's range "
                        f"({lo:g}..{hi:g}); the grid has no tiles there")
    iy0, iy1 = _index(south), math.ceil(round(north * 10.0, 9)) - 1
    spans = [(west, east)] if west < east else [(west, 180.0), (-180.0, east)]
    cols: list[int] = []
    for w, e in spans:
        if w < e:
            cols.extend(range(_index(w), math.ceil(round(e * 10.0, 9))))
    ordered = list(dict.fromkeys(_wrap(c) for c in cols))  # unique, in order
    return [GridTile(ix, iy) for iy in range(iy1, iy0 - 1, -1) for ix in ordered]


def tiles_in_geometry(geom: Any) -> list[GridTile]:
    """Tiles whose cell intersects a lon/lat shapely geometry (a polygon across the antimeridian
    must be given as a MultiPolygon split at +-180)."""
    import shapely

    if geom is None or geom.is_empty:
        raise GridError("region: empty geometry")
    candidates = tiles_in_bbox(*geom.bounds)
    boxes = shapely.box(*np.array([t.bounds for t in candidates]).T)
    hit = shapely.intersects(boxes, geom) & ~shapely.touches(boxes, geom)
    return [t for t, h in zip(candidates, hit) if h]


def tiles_of_points(lon: Iterable[float], lat: Iterable[float]) -> np.ndarray:
    """Vectorised `tile_of`: (N, 2) int array of (ix, iy); rows of invalid points are
    (-9999, -9999) (not finite, outside lon/lat or outside UTM's range)."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    lo, hi = UTM_LAT_RANGE
    finite = np.isfinite(lon) & np.isfinite(lat)
    lon, lat = np.where(finite, lon, 0.0), np.where(finite, lat, 0.0)
    ix = np.floor(np.round(lon * 10.0, 9)).astype(np.int64)
    iy = np.floor(np.round(lat * 10.0, 9)).astype(np.int64)
    ix = (ix + _N_LON // 2) % _N_LON - _N_LON // 2
    ok = finite & (np.abs(lon) <= 180) & (lat >= lo) & (lat < hi)
    out = np.stack([ix, iy], axis=1)
    out[~ok] = -9999
    return out


__all__ = ["STEP", "UTM_LAT_RANGE", "GridError", "GridTile", "parse_tile_name", "tile_of",
           "tiles_in_bbox", "tiles_in_geometry", "tiles_of_points"]
