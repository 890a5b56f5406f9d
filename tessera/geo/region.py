"""Regions and points as users give them: bbox strings, GeoJSON (dicts or files), GeoPackage and
other vector files, shapely geometries, GeoDataFrames, grid tile names; and point sets.

`Region.parse` turns any of these into one lon/lat geometry plus the 0.1 degree grid tiles it
touches, which is what every region request (read, export, download, picture) starts from.
Vector files are read here and nowhere else; GeoJSON needs nothing extra, other formats are read
with pyogrio (`pip install 'tessera-eo[vector]'`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from tessera.errors import RegionError
from tessera.geo.crs import LONLAT, is_lonlat, to_lonlat, transformer
from tessera.geo.grid import GridTile, parse_tile_name, tiles_in_bbox, tiles_in_geometry

BBox = tuple[float, float, float, float]

#: A region as a caller gives it, i.e. what `Region.parse` reads: a `Region`, a bbox (west,
#: south, east, north) in degrees, a lon/lat shapely geometry, a GeoJSON dict or file path, a
#: GeoDataFrame-like (`.geometry` + `.crs`), a tile name, or a list of tile names / GridTiles.
#: Any to the type checker: shapely and geopandas objects are untyped.
RegionLike: TypeAlias = Any


def parse_bbox(text: str, what: str = "--bbox") -> BBox:
    """`"west,south,east,north"` in degrees -> a tuple of four floats (spaces allowed)."""
    try:
        parts = [float(v) for v in str(text).replace(" ", "").split(",")]
    except ValueError:
        parts = []
    if len(parts) != 4 or not all(np.isfinite(parts)):
        raise RegionError(f"{what} {text!r}: expected four numbers west,south,east,north in "
                          "degrees")
    w, s, e, n = parts
    return (w, s, e, n)


# --- vector files and GeoJSON ------------------------------------------------------------------

def geojson_geometries(doc: Any, what: str) -> list[Any]:
    """The shapely geometries of a GeoJSON object: a FeatureCollection, a Feature or a bare
    geometry. `what` names the source in errors."""
    from shapely.geometry import shape

    if not isinstance(doc, dict):
        raise RegionError(f"{what}: expected a GeoJSON object, got {type(doc).__name__}")
    feats = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
    geoms = []
    for i, f in enumerate(feats or []):
        g = f.get("geometry") if isinstance(f, dict) and f.get("type") == "Feature" else f
        if g is None:
            raise RegionError(f"{what}: feature {i} has no geometry")
        try:
            geoms.append(shape(g))
        except Exception as exc:  # shapely raises several types for bad geometry dicts
            raise RegionError(f"{what}: feature {i}: not a GeoJSON geometry ({exc})") from None
    return geoms


def geojson_crs(doc: dict[str, Any]) -> str | None:
    """The (old-style, pre-RFC 7946) `crs` member's name, if any; None means lon/lat."""
    crs = doc.get("crs") if isinstance(doc, dict) else None
    if isinstance(crs, dict):
        name = (crs.get("properties") or {}).get("name")
        return str(name) if name else None
    return None


def read_json(path: Path, what: str = "GeoJSON") -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RegionError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegionError(f"{path}: not valid {what} ({exc})") from None


def read_vector(path: Path) -> tuple[list[Any], Any]:
    """Geometries and CRS (None = lon/lat) of a vector file. GeoJSON needs nothing extra; other
    formats (GeoPackage, shapefile) are read with pyogrio."""
    if path.suffix.lower() in (".geojson", ".json"):
        doc = read_json(path)
        return geojson_geometries(doc, str(path)), geojson_crs(doc)
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


def read_polygon(path: str | os.PathLike) -> tuple[Any, str]:
    """(lon/lat polygon or multipolygon: all features of the file unioned, its name = the file
    stem) from a GeoJSON or GeoPackage file."""
    from shapely import union_all

    path = Path(path)
    if not path.exists():
        raise RegionError(f"{path}: region file not found")
    geoms, crs = read_vector(path)
    if not geoms:
        raise RegionError(f"{path}: no geometries in the file")
    geom = to_lonlat(union_all(geoms), crs)
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise RegionError(f"{path}: the region must be a polygon, got {geom.geom_type}")
    return geom, path.stem


# --- a request's region ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Region:
    """A request's area: a lon/lat shapely geometry and the grid tiles it touches."""

    geometry: Any
    tiles: tuple[GridTile, ...]
    name: str
    crosses_antimeridian: bool = False

    @classmethod
    def parse(cls, region: RegionLike) -> Region:
        """From a bbox (west, south, east, north) in degrees, a lon/lat shapely geometry, a
        GeoJSON dict or file, a GeoDataFrame-like (`.geometry` + `.crs`), a tile name or a list of
        tile names / GridTiles."""
        import shapely

        if isinstance(region, Region):
            return region
        if isinstance(region, GridTile):
            return cls._from_tiles([region])
        if isinstance(region, str) and region.strip().startswith("grid_"):
            return cls._from_tiles([parse_tile_name(region)])
        if isinstance(region, (str, os.PathLike)):
            return cls._from_file(Path(region))
        if isinstance(region, dict):
            return cls._from_geometry(_union(geojson_geometries(region, "region GeoJSON"),
                                             "region GeoJSON"), "GeoJSON region")
        if hasattr(region, "geom_type"):
            return cls._from_geometry(region, f"{region.geom_type} region")
        if hasattr(region, "geometry") and hasattr(region, "crs"):
            geoms = np.asarray(region.geometry, dtype=object)
            geom = to_lonlat(shapely.union_all(geoms), region.crs)
            return cls._from_geometry(geom, "GeoDataFrame region")
        if isinstance(region, (Sequence, np.ndarray)) and len(region) > 0:
            items = list(region)
            if all(isinstance(t, (str, GridTile)) for t in items):
                return cls._from_tiles([parse_tile_name(t) if isinstance(t, str) else t
                                        for t in items])
            if len(items) == 4 and all(isinstance(v, (int, float, np.number)) for v in items):
                w, s, e, n = map(float, items)
                return cls._from_bbox(w, s, e, n)
        raise RegionError(f"region {region!r:.80}: expected a bbox (west, south, east, north) in "
                          "degrees, a shapely geometry, a GeoJSON dict or file, a GeoDataFrame, "
                          "or tile names like grid_0.15_52.05")

    @classmethod
    def _from_tiles(cls, tiles: list[GridTile]) -> Region:
        import shapely

        tiles = list(dict.fromkeys(tiles))  # unique, in order
        geom = shapely.union_all([t.polygon() for t in tiles])
        name = tiles[0].name if len(tiles) == 1 else f"{len(tiles)} tiles ({tiles[0].name}, ...)"
        lons = [t.lon for t in tiles]
        return cls(geom, tuple(tiles), name, crosses_antimeridian=max(lons) - min(lons) > 180)

    @classmethod
    def _from_bbox(cls, w: float, s: float, e: float, n: float) -> Region:
        from shapely.geometry import MultiPolygon, box

        tiles = tiles_in_bbox(w, s, e, n)
        name = f"bbox ({w:g}, {s:g}, {e:g}, {n:g})"
        if w > e:  # across the antimeridian: two boxes
            return cls(MultiPolygon([box(w, s, 180.0, n), box(-180.0, s, e, n)]), tuple(tiles),
                       name, crosses_antimeridian=True)
        return cls(box(w, s, e, n), tuple(tiles), name)

    @classmethod
    def _from_geometry(cls, geom: Any, name: str) -> Region:
        if geom is None or geom.is_empty:
            raise RegionError(f"{name}: empty geometry")
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise RegionError(f"{name}: a region must be a polygon, got {geom.geom_type} "
                              "(points go to `sample`)")
        w, s, e, n = geom.bounds
        if not (-180 <= w and e <= 180 and -90 <= s and n <= 90):
            raise RegionError(f"{name}: bounds ({w}, {s}, {e}, {n}) are not lon/lat degrees "
                              "(give a GeoDataFrame with its CRS, or reproject to EPSG:4326)")
        tiles = tiles_in_geometry(geom)
        if not tiles:
            raise RegionError(f"{name}: touches no grid tile")
        return cls(geom, tuple(tiles), name)

    @classmethod
    def _from_file(cls, path: Path) -> Region:
        import shapely

        if not path.exists():
            raise RegionError(f"{path}: region file not found (or not a tile name like "
                              "grid_0.15_52.05)")
        geoms, crs = read_vector(path)
        if not geoms:
            raise RegionError(f"{path}: no geometries in the file")
        return cls._from_geometry(to_lonlat(shapely.union_all(geoms), crs), str(path))


def _union(geoms: list[Any], what: str) -> Any:
    import shapely

    if not geoms:
        raise RegionError(f"{what}: no geometries")
    return shapely.union_all(geoms)


# --- points ------------------------------------------------------------------------------------

def points_lonlat(points: Any) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) float64 arrays from: an (N, 2) array-like of (lon, lat) rows; a tuple of two 1-D
    numpy arrays (lons, lats); a GeoJSON FeatureCollection of Points (dict or file path); or a
    GeoDataFrame-like (`.geometry` of points and `.crs`, reprojected to lon/lat)."""
    import shapely

    if isinstance(points, (str, os.PathLike)):
        path = Path(points)
        if not path.exists():
            raise RegionError(f"{path}: points file not found")
        points = read_json(path, "GeoJSON file")
    if isinstance(points, dict):
        feats = points.get("features") if points.get("type") == "FeatureCollection" else [points]
        xy = []
        for i, f in enumerate(feats or []):
            g = f.get("geometry") if f.get("type") == "Feature" else f
            if not g or g.get("type") != "Point":
                raise RegionError(f"points GeoJSON: feature {i} is "
                                  f"{(g or {}).get('type', 'empty')}, expected a Point")
            xy.append(g["coordinates"][:2])
        arr = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        crs = geojson_crs(points)
        if crs is not None and not is_lonlat(crs):  # an old-style `crs` member, e.g. UTM
            x, y = transformer(crs, LONLAT).transform(arr[:, 0], arr[:, 1])
            return np.asarray(x, np.float64), np.asarray(y, np.float64)
        return arr[:, 0], arr[:, 1]
    if hasattr(points, "geometry") and hasattr(points, "crs"):
        geoms = np.asarray(points.geometry, dtype=object)
        kinds = set(shapely.get_type_id(geoms).tolist())
        if kinds - {0}:
            raise RegionError("points GeoDataFrame: every geometry must be a Point")
        x, y = shapely.get_x(geoms), shapely.get_y(geoms)
        if points.crs is not None and not is_lonlat(points.crs):
            x, y = transformer(str(points.crs), LONLAT).transform(x, y)
        return np.asarray(x, np.float64), np.asarray(y, np.float64)
    if (isinstance(points, tuple) and len(points) == 2
            and all(isinstance(p, np.ndarray) and p.ndim == 1 for p in points)):
        if points[0].shape != points[1].shape:
            raise RegionError(f"points: {points[0].size} longitudes but {points[1].size} latitudes")
        return points[0].astype(np.float64), points[1].astype(np.float64)
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise RegionError(f"points: array of shape {arr.shape}, expected (N, 2) rows of (lon, lat)")
    return arr[:, 0], arr[:, 1]


__all__ = ["BBox", "Region", "geojson_crs", "geojson_geometries", "parse_bbox",
           "points_lonlat", "read_json", "read_polygon", "read_vector"]
