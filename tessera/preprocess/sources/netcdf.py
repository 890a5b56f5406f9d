"""netCDF data cubes of one location (WorldCereal-style patch folders) as a source.

A patch folder holds one cube per product, each `(time, y, x)` on a regular projected grid::

    S2_L2A_10m_<location>_<epsg>_<start>_<end>.nc      B02 B03 B04 B08 (uint16, 0 = no data)
    S2_L2A_20m_<location>_<epsg>_<start>_<end>.nc      B05 B06 B07 B8A B11 B12, SCL
    S1_GRD-ASCENDING_20m_<location>_...nc              VV, VH (dB x 10 000 as int32, 0 = no data)
    S1_GRD-DESCENDING_20m_<location>_...nc             likewise, the other orbit

Every timestamp of a cube is one granule (id `<location>_<YYYYMMDDTHHMMSS>`). Each band of a
granule is an `ArrayAsset` that reads only its own date slice when the pipeline asks for it; the
opened datasets are cached per process. Values are taken as the files store them: S2 integers
are reflectance x 10 000 (a `scale_factor` of 1e-4 says exactly that, so they are used raw), S1
is decoded with its `scale_factor` / `add_offset` to dB. `_FillValue` (and `missing_value`)
become no data.

Sentinel-2 needs both cubes: the 10 m bands B02 B03 B04 B08 cannot be derived from the 20 m
ones, so a folder with a 20 m cube but no 10 m cube is an error, never a silent resampling.
The 10 m and 20 m cubes must share their timestamps. `native_grid()` is the cube's own 10 m
grid, so a patch can be converted without giving a region.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tessera.bands import S1_POLS, S2_10M_BANDS, S2_BANDS
from tessera.preprocess.acquisition import ArrayAsset, Granule, PreprocessError, bbox_intersects
from tessera.geo import DEFAULT_RESOLUTION, TargetGrid

log = logging.getLogger("tessera.preprocess")

S2_20M_FILE_BANDS: tuple[str, ...] = (*(b for b in S2_BANDS if b not in S2_10M_BANDS), "SCL")
_TIME_DIMS = ("timestamp", "time", "t", "date")
_Y_DIMS = ("y", "Y", "northing")
_X_DIMS = ("x", "X", "easting")
_ORBIT_RX = re.compile(r"(ASCENDING|DESCENDING)", re.IGNORECASE)
_CACHE_SIZE = 32


# --- opened datasets, cached per process ------------------------------------------------------

_cache: collections.OrderedDict[tuple[str, int, int], Any] = collections.OrderedDict()
_cache_lock = threading.Lock()
_cache_pid = os.getpid()


def _open(path: str) -> Any:
    """The xarray Dataset of `path` (raw values: mask_and_scale=False), opened once per process
    and file version; a PreprocessError naming the file if it cannot be read."""
    global _cache_pid
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PreprocessError(f"{path}: cannot read ({exc.strerror or exc})") from None
    key = (path, st.st_mtime_ns, st.st_size)
    with _cache_lock:
        if _cache_pid != os.getpid():  # a forked worker: do not share the parent's handles
            _cache.clear()
            _cache_pid = os.getpid()
        ds = _cache.get(key)
        if ds is not None:
            _cache.move_to_end(key)
            return ds
        try:
            import xarray as xr
        except ImportError:
            raise PreprocessError("reading netCDF cubes needs xarray and h5netcdf "
                                  "(pip install 'tessera-eo[netcdf]')") from None
        try:
            ds = xr.open_dataset(path, mask_and_scale=False, cache=False)
        except Exception as exc:  # noqa: BLE001 - h5py/netCDF/xarray raise many types
            raise PreprocessError(f"{path}: not a readable netCDF file "
                                  f"({type(exc).__name__}: {exc})") from None
        _cache[key] = ds
        while len(_cache) > _CACHE_SIZE:
            _, old = _cache.popitem(last=False)
            old.close()
        return ds


def clear_cache() -> None:
    """Close every cached dataset (tests, or before files are rewritten in place)."""
    with _cache_lock:
        while _cache:
            _cache.popitem()[1].close()


# --- one cube ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _SliceLoader:
    """Loads one date of one variable as float32 (h, w), NaN = no data. Picklable (a path and
    numbers), so plans can travel to other processes."""

    path: str
    var: str
    tdim: str
    index: int
    fill: tuple[float, ...]
    scale: float
    offset: float
    flip_y: bool
    when: str

    def __call__(self) -> np.ndarray:
        ds = _open(self.path)
        try:
            raw = np.asarray(ds[self.var].isel({self.tdim: self.index}).values)
        except Exception as exc:  # noqa: BLE001 - any read failure names the file and date
            raise PreprocessError(f"{self.path}: cannot read {self.var} at {self.when} "
                                  f"({type(exc).__name__}: {exc})") from None
        if raw.ndim != 2:
            raise PreprocessError(f"{self.path}: {self.var} at {self.when} has shape "
                                  f"{raw.shape}, expected (y, x)")
        bad = np.zeros(raw.shape, bool)
        for f in self.fill:
            bad |= raw == f if not np.isnan(f) else np.isnan(raw)
        if raw.dtype.kind == "f":
            bad |= ~np.isfinite(raw)
        out = raw.astype(np.float64)
        if self.scale != 1.0 or self.offset != 0.0:
            out = out * self.scale + self.offset
        out = out.astype(np.float32)
        out[bad] = np.nan
        return out[::-1] if self.flip_y else out


@dataclasses.dataclass
class _Cube:
    path: str
    location_id: str
    crs: Any
    transform: Any
    width: int
    height: int
    flip_y: bool
    tdim: str
    times: np.ndarray            # datetime64[s]
    lonlat_bbox: tuple[float, float, float, float]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)

    def stamp(self, i: int) -> str:
        return str(self.times[i].astype("datetime64[s]")).replace("-", "").replace(":", "")

    def date(self, i: int) -> _dt.date:
        return self.times[i].astype("datetime64[D]").astype(_dt.date)

    def asset(self, var: str, i: int, kind: str) -> ArrayAsset:
        """kind: 's2' (reflectance x 10 000), 'scl' (class codes) or 's1' (dB)."""
        ds = _open(self.path)
        if var not in ds.variables:
            raise PreprocessError(f"{self.path}: no variable {var}")
        attrs = ds[var].attrs
        fill = tuple(float(np.asarray(attrs[k]).ravel()[0]) for k in ("_FillValue", "missing_value")
                     if k in attrs)
        scale = float(np.asarray(attrs.get("scale_factor", 1.0)).ravel()[0])
        offset = float(np.asarray(attrs.get("add_offset", 0.0)).ravel()[0])
        if kind == "scl":
            scale, offset = 1.0, 0.0
        elif kind == "s2":
            # stored reflectance = raw * scale + offset; the model wants reflectance x 10 000
            if "scale_factor" not in attrs and "add_offset" not in attrs:
                scale, offset = 1.0, 0.0  # already reflectance x 10 000 (digital numbers)
            else:
                scale, offset = scale * 1e4, offset * 1e4
                if abs(scale - 1.0) < 1e-9:
                    scale = 1.0  # the usual 1e-4: the raw integers are used as they are
        when = str(self.times[i].astype("datetime64[s]"))
        return ArrayAsset(load=_SliceLoader(self.path, var, self.tdim, i, fill, scale, offset,
                                            self.flip_y, when),
                          crs=self.crs, transform=self.transform,
                          description=f"{self.path}:{var}[{when}]")


def _dims(path: str, da: Any, var: str) -> tuple[str, str, str]:
    dims = tuple(da.dims)
    t = [d for d in dims if d in _TIME_DIMS]
    y = [d for d in dims if d in _Y_DIMS]
    x = [d for d in dims if d in _X_DIMS]
    if len(dims) != 3 or not (t and y and x):
        raise PreprocessError(f"{path}: variable {var} has dimensions {dims}; expected (time, y, "
                              "x) with time one of timestamp/time/t and projected x/y coordinates")
    return t[0], y[0], x[0]


def _crs(path: str, ds: Any, var: str) -> Any:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    candidates: list[Any] = []
    gm = ds[var].attrs.get("grid_mapping") or ds.attrs.get("grid_mapping")
    for name in (gm, "spatial_ref", "crs"):
        if name and name in ds.variables:
            a = ds[name].attrs
            candidates += [a.get("crs_wkt"), a.get("spatial_ref")]
    epsg = ds.attrs.get("epsg") or ds[var].attrs.get("epsg")
    if epsg is not None:
        candidates.append(f"EPSG:{int(np.asarray(epsg).ravel()[0])}")
    candidates.append(ds.attrs.get("crs") if isinstance(ds.attrs.get("crs"), str) else None)
    for c in candidates:
        if not c:
            continue
        try:
            return CRS.from_user_input(c)
        except (CRSError, ValueError, TypeError):
            continue
    raise PreprocessError(f"{path}: no coordinate reference system found (looked for a "
                          "grid-mapping variable with crs_wkt/spatial_ref and epsg/crs attributes)")


def _axis(path: str, coord: np.ndarray, name: str, fallback: float | None) -> tuple[float, float]:
    """(first pixel centre, signed step) of a regular 1-D coordinate."""
    c = np.asarray(coord, dtype=np.float64)
    if c.size == 0:
        raise PreprocessError(f"{path}: empty {name} coordinate")
    if c.size == 1:
        if not fallback:
            raise PreprocessError(f"{path}: one-pixel {name} axis and no resolution attribute")
        return float(c[0]), float(fallback)
    d = np.diff(c)
    if not np.allclose(d, d[0], rtol=0, atol=abs(d[0]) * 1e-6) or d[0] == 0:
        raise PreprocessError(f"{path}: the {name} coordinate is not regularly spaced "
                              f"(steps {d.min():g} .. {d.max():g}); a regular grid is expected")
    return float(c[0]), float(d[0])


def _read_cube(path: str, needed: tuple[str, ...], folder: Path) -> _Cube:
    from rasterio.transform import from_origin
    from rasterio.warp import transform_bounds

    ds = _open(path)
    missing = [b for b in needed if b not in ds.variables]
    if missing:
        raise PreprocessError(f"{path}: no variable(s) {', '.join(missing)}; the file has "
                              f"{', '.join(sorted(map(str, ds.data_vars)))}")
    ref = needed[0]
    tdim, ydim, xdim = _dims(path, ds[ref], ref)
    for b in needed[1:]:
        if _dims(path, ds[b], b) != (tdim, ydim, xdim):
            raise PreprocessError(f"{path}: {b} has dimensions {ds[b].dims}, {ref} has "
                                  f"{ds[ref].dims}; all bands must share one grid")
    if tdim not in ds.coords or xdim not in ds.coords or ydim not in ds.coords:
        raise PreprocessError(f"{path}: no coordinate values for {tdim}/{ydim}/{xdim}")
    times = np.asarray(ds[tdim].values)
    if not np.issubdtype(times.dtype, np.datetime64):
        raise PreprocessError(f"{path}: the {tdim} coordinate is not a date/time "
                              f"(dtype {times.dtype}); expected CF time units")
    res = ds.attrs.get("resolution")
    res = float(np.asarray(res).ravel()[0]) if res is not None else None
    x0, dx = _axis(path, ds[xdim].values, xdim, res)
    y0, dy = _axis(path, ds[ydim].values, ydim, -res if res else None)
    if dx < 0:
        raise PreprocessError(f"{path}: x decreases along the {xdim} axis; expected west to east")
    crs = _crs(path, ds, ref)
    flip = dy > 0  # south-up: rows are flipped on reading
    top = (y0 + dy * (ds.sizes[ydim] - 1) if flip else y0) + abs(dy) / 2
    transform = from_origin(x0 - dx / 2, top, dx, abs(dy))
    w, h = int(ds.sizes[xdim]), int(ds.sizes[ydim])
    edges = (transform.c, transform.f - abs(dy) * h, transform.c + dx * w, transform.f)
    bbox = tuple(transform_bounds(crs, "EPSG:4326", *edges, densify_pts=21))
    loc = str(ds.attrs.get("location_id") or folder.name)
    return _Cube(path, loc, crs, transform, w, h, flip, tdim,
                 times.astype("datetime64[s]"), bbox)


# --- the source -------------------------------------------------------------------------------

@dataclasses.dataclass
class _Inventory:
    s2: list[tuple[_Cube, _Cube]]       # (10 m cube, 20 m cube)
    s1: list[tuple[_Cube, str]]         # (cube, orbit)


@dataclasses.dataclass
class NetcdfSource:
    """A patch folder of netCDF cubes (see the module docstring). `path` may also be one .nc
    file of the folder."""

    path: str | os.PathLike
    name: str = "netcdf"

    def __post_init__(self) -> None:
        p = Path(self.path)
        if p.is_file() or p.suffix.lower() == ".nc":
            if not p.exists():
                raise PreprocessError(f"{p}: netCDF file not found")
            p = p.parent
        if not p.is_dir():
            raise PreprocessError(f"{p}: not a folder of netCDF cubes (not found)")
        self.folder = p
        self._inv: _Inventory | None = None

    # -- discovery --

    def _files(self) -> dict[str, list[Path]]:
        nc = sorted(f for f in self.folder.iterdir() if f.suffix.lower() == ".nc" and f.is_file())
        s2 = [f for f in nc if f.name.upper().startswith("S2_")]
        return {"s2_10m": [f for f in s2 if "_10M" in f.name.upper()],
                "s2_20m": [f for f in s2 if "_20M" in f.name.upper()],
                "s1": [f for f in nc if f.name.upper().startswith("S1_")]}

    def inventory(self) -> _Inventory:
        if self._inv is not None:
            return self._inv
        files = self._files()
        ten = {f.name.upper().replace("_10M", "_20M", 1): f for f in files["s2_10m"]}
        twenty = {f.name.upper(): f for f in files["s2_20m"]}
        s2: list[tuple[_Cube, _Cube]] = []
        f20: Path | None  # each 20 m cube here; its match (if any) in the loop below
        for key, f20 in twenty.items():
            f10 = ten.get(key)
            if f10 is None:
                raise PreprocessError(
                    f"{self.folder}: Sentinel-2 20 m cube {f20.name} has no matching 10 m cube "
                    f"(S2_L2A_10m_*.nc): the 10 m bands {' '.join(S2_10M_BANDS)} are missing and "
                    "cannot be derived from the 20 m bands; this folder cannot be converted "
                    "(only its Sentinel-1 would remain)")
        for key, f10 in ten.items():
            f20 = twenty.get(key)
            if f20 is None:
                raise PreprocessError(
                    f"{self.folder}: Sentinel-2 10 m cube {f10.name} has no matching 20 m cube: "
                    f"the bands {' '.join(S2_20M_FILE_BANDS)} (including the SCL cloud mask) "
                    "are missing")
            c10 = _read_cube(str(f10), S2_10M_BANDS, self.folder)
            c20 = _read_cube(str(f20), S2_20M_FILE_BANDS, self.folder)
            _check_same_times(c10, c20)
            if c10.crs != c20.crs:
                raise PreprocessError(f"{f10}: CRS {c10.crs.to_string()} differs from "
                                      f"{c20.crs.to_string()} of {f20}")
            s2.append((c10, c20))
        s1: list[tuple[_Cube, str]] = []
        for f in files["s1"]:
            cube = _read_cube(str(f), S1_POLS, self.folder)
            m = _ORBIT_RX.search(f.name)
            orbit = m.group(1).lower() if m else None
            if orbit is None:
                attr = str(_open(str(f)).attrs.get("orbit_direction", "")).lower()
                orbit = attr if attr in ("ascending", "descending") else None
            if orbit is None:
                raise PreprocessError(f"{f}: cannot tell the Sentinel-1 orbit; the file name "
                                      "must contain ASCENDING or DESCENDING")
            s1.append((cube, orbit))
        if not s2 and not s1:
            raise PreprocessError(f"{self.folder}: no Sentinel-2 (S2_L2A_10m_*.nc + "
                                  "S2_L2A_20m_*.nc) or Sentinel-1 (S1_GRD-*.nc) cubes found")
        self._inv = _Inventory(s2, s1)
        return self._inv

    # -- the Source interface --

    def describe(self) -> dict[str, Any]:
        files = self._files()
        inv = self.inventory()
        loc = (inv.s2[0][0] if inv.s2 else inv.s1[0][0]).location_id
        return {"kind": "netcdf", "location": str(self.folder), "location_id": loc,
                "files": sorted(f.name for fs in files.values() for f in fs)}

    def search(self, grid: TargetGrid, year: int) -> list[Granule]:
        inv = self.inventory()
        bounds = grid.lonlat_bounds()
        out: list[Granule] = []
        seen: set[tuple[str, str]] = set()
        for c10, c20 in inv.s2:
            if not bbox_intersects(c10.lonlat_bbox, bounds):
                continue
            for i in range(len(c10.times)):
                d = c10.date(i)
                gid = f"{c10.location_id}_{c10.stamp(i)}"
                if d.year != year or ("s2", gid) in seen:
                    continue  # the same acquisition in two overlapping cubes: kept once
                seen.add(("s2", gid))
                assets = {b: c10.asset(b, i, "s2") for b in S2_10M_BANDS}
                assets.update({b: c20.asset(b, i, "scl" if b == "SCL" else "s2")
                               for b in S2_20M_FILE_BANDS})
                out.append(Granule(sensor="s2", date=d, id=gid, assets=assets, baseline=None,
                                   bbox=c10.lonlat_bbox, source=c10.path))
        for cube, orbit in inv.s1:
            if not bbox_intersects(cube.lonlat_bbox, bounds):
                continue
            for i in range(len(cube.times)):
                d = cube.date(i)
                gid = f"{cube.location_id}_{cube.stamp(i)}"
                if d.year != year or (orbit, gid) in seen:
                    continue
                seen.add((orbit, gid))
                out.append(Granule(sensor="s1", date=d, id=gid,
                                   assets={p: cube.asset(p, i, "s1") for p in S1_POLS},
                                   orbit=orbit, s1_units="db", bbox=cube.lonlat_bbox,
                                   source=cube.path))
        return out

    def native_grid(self, resolution: float = DEFAULT_RESOLUTION) -> TargetGrid:
        """The cube's own grid at 10 m: its bounds (S2 cube, else S1), pixels of `resolution`."""
        import math

        from rasterio.transform import from_origin

        inv = self.inventory()
        cube = inv.s2[0][0] if inv.s2 else inv.s1[0][0]
        w, s, e, n = cube.bounds
        r = float(resolution)
        x0, y1 = math.floor(w / r + 1e-9) * r, math.ceil(n / r - 1e-9) * r
        x1, y0 = math.ceil(e / r - 1e-9) * r, math.floor(s / r + 1e-9) * r
        return TargetGrid(cube.crs, from_origin(x0, y1, r, r), round((x1 - x0) / r),
                          round((y1 - y0) / r), None, cube.location_id)


def _check_same_times(c10: _Cube, c20: _Cube) -> None:
    a, b = c10.times, c20.times
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    if len(diff) or len(a) != len(b):
        if len(diff):
            i = int(diff[0])
            what = (f"timestamp {i} is {a[i]} in {Path(c10.path).name} but {b[i]} in "
                    f"{Path(c20.path).name}")
        else:
            longer, extra = (c10, a[n]) if len(a) > n else (c20, b[n])
            what = f"{Path(longer.path).name} has an extra timestamp {extra}"
        raise PreprocessError(f"Sentinel-2 10 m cube {c10.path} ({len(a)} timestamps) and 20 m "
                              f"cube {c20.path} ({len(b)} timestamps) do not share their "
                              f"timestamps: {what}; the bands of one date must come from one "
                              "acquisition")
