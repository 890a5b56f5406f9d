"""Geometry, in one place: regions and points as users give them (`region`), the published
0.1 degree grid and its tiles' UTM rasters (`grid`), the 10 m target grid and its patches
(`target`), and CRS helpers (`crs`). Nothing here imports the rest of the package but errors."""

from tessera.errors import GridError, RegionError
from tessera.geo.crs import is_lonlat, to_lonlat, utm_crs
from tessera.geo.grid import (STEP, GridTile, parse_tile_name, tile_of, tiles_in_bbox,
                              tiles_in_geometry, tiles_of_points)
from tessera.geo.region import Region, parse_bbox, points_lonlat, read_polygon, read_vector
from tessera.geo.target import DEFAULT_PATCH_SIZE, DEFAULT_RESOLUTION, Patch, TargetGrid

__all__ = ["DEFAULT_PATCH_SIZE", "DEFAULT_RESOLUTION", "STEP", "GridError", "GridTile", "Patch",
           "Region", "RegionError", "TargetGrid", "is_lonlat", "parse_bbox", "parse_tile_name",
           "points_lonlat", "read_polygon", "read_vector", "tile_of", "tiles_in_bbox",
           "tiles_in_geometry", "tiles_of_points", "to_lonlat", "utm_crs"]
