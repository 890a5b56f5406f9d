"""Monthly WorldCereal / openEO input cubes (netCDF) read directly as d-pixels.

Why: the WorldCereal "preprocessed inputs" cubes (`../shared/datasets/worldcereal/cubes/`) are
already composited and on one grid: one (t, y, x) variable per band, one time step per month.
There is nothing to compose (no granules, no SCL, no resampling), so instead of going through the
preprocessing pipeline `read_cube` turns every pixel of a cube into a d-pixel directly.

What a cube holds and how it is read:
- Format: netCDF4/HDF5 (opened with xarray, engine h5netcdf) or classic netCDF3 (one of the
  cubes is: h5netcdf cannot read it, so the scipy engine is used for files starting with `CDF`).
  Values are read raw (`mask_and_scale=False`); int16 variables flagged `_Unsigned` are uint16.
- Bands: variables are found by name or `long_name`, whichever spelling (`S2-L2A-B02`, `B02`,
  `B2`; `S1-SIGMA0-VV`, `VV`). S2 is reflectance x 10 000 (uint16); 65535 = missing.
  Monthly composites carry no SCL: an S2 step is valid for a pixel iff none of its bands is
  missing. A band the cube lacks (all cubes lack B8A) is filled by `tessera.bands.FILL_RULES`
  (B8A from B08), as the point-table reader does with `fill_missing`; `CubePixels.filled` says so.
- S1: WorldCereal encoded DN, sigma0 [dB] = 20 log10(DN) - 83, 65535 = missing; converted to the
  TESSERA int16 code (`bands.s1_db_to_int16`), missing -> 0 (so a date with both polarisations
  missing is invalid). The orbit comes from an attribute naming it (e.g. `orbit_direction`) or
  the file name (ASCENDING / DESCENDING); the cubes here say neither, so S1 goes into the
  ascending slot (`CubePixels.s1_orbit_source` = "default").
- Dates: the monthly time stamps (first day of each month); day of year from them.
- A d-pixel is ONE year of observations, so the dates are split into annual windows
  (`annual_windows`), `CubePixels.batches[label]` holding every pixel with that window's dates:
  split="year": one window per calendar year (the published model embeds calendar years);
  split="cycle" (default): dates that fit within 12 consecutive months form ONE window even
  across New Year (one full seasonal cycle; labelled by the calendar year holding most of
  them), longer series are split by calendar year as above. Each date keeps its own day of
  year, and within 12 consecutive months the days of year are distinct, so no information is
  lost; what changes is that e.g. Nov 2020 .. Oct 2021 (the 100 x 100 cube) stays one d-pixel
  of 12 months (10 with valid S2) instead of 2 + 10 months (1 + 9 valid), which the >= 10
  valid dates rule of pretraining would reject. The 20-month cubes (2020-08 .. 2022-03) are
  split by calendar year either way. Within a window the steps are ordered by day of year.
- Pixels: all H x W, row-major (row 0 = north); `rows` / `cols` give each pixel's position,
  `crs` / `transform` the grid (from the grid-mapping variable and the x / y pixel centres).
  2-D variables (elevation, slope, the WorldCereal 2021 product maps used as pseudo-labels) are
  returned per pixel in `static`.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tessera.bands import (S1_ORBIT_NAMES, S1_POLS, S2_BANDS, fill_s2_bands,
                           s1_amplitude_dn_to_db, s1_db_to_int16)
from tessera.dpixel import DPixelBatch
from tessera.preprocess.acquisition import PreprocessError

#: WorldCereal nodata value of the integer bands.
NODATA = 65535
#: How dates are grouped into d-pixel years (see `annual_windows`).
SPLITS: tuple[str, ...] = ("cycle", "year")
#: dB offset of the WorldCereal S1 amplitude DN: dB = 20 log10(DN) + offset.
S1_DN_OFFSET = -83.0
_S2_NAME = re.compile(r"B(\d{1,2}|8A)")
_ORBIT = re.compile(r"(ASCENDING|DESCENDING)", re.IGNORECASE)


@dataclasses.dataclass
class CubePixels:
    """Every pixel of one monthly cube as d-pixels, one `DPixelBatch` per calendar year."""

    path: Path
    batches: dict[int, DPixelBatch]  # year label -> all H*W pixels, row-major
    windows: dict[int, np.ndarray]  # year label -> indices into `dates` of its time steps
    dates: np.ndarray  # (T,) datetime64[D], every time step of the cube
    years: np.ndarray  # (T,) calendar year of each date
    rows: np.ndarray  # (H*W,) pixel row (0 = north)
    cols: np.ndarray  # (H*W,) pixel column
    shape: tuple[int, int]  # (H, W)
    crs: Any  # rasterio CRS, or None when the cube has none
    transform: Any  # affine transform of the pixel corners, or None
    variables: dict[str, str]  # model band / polarisation -> cube variable
    filled: dict[str, list[str]]  # band filled -> the bands it was computed from
    s1_orbit: str  # "ascending" or "descending"
    s1_orbit_source: str  # "attribute", "file name" or "default"
    static: dict[str, np.ndarray]  # 2-D variables, (H*W,) each

    @property
    def n_pixels(self) -> int:
        return self.shape[0] * self.shape[1]

    def dates_of(self, year: int) -> np.ndarray:
        """The dates of `batches[year]`."""
        return self.dates[self.windows[year]]

    @property
    def batch(self) -> DPixelBatch:
        """The only batch of a cube within one calendar year (else use `batches`)."""
        if len(self.batches) != 1:
            raise ValueError(f"{self.path}: the cube gives the years {sorted(self.batches)}; a "
                             "d-pixel is one year, take one of CubePixels.batches[year]")
        return next(iter(self.batches.values()))


def annual_windows(dates: np.ndarray, split: str = "cycle") -> list[tuple[int, np.ndarray]]:
    """Group dates into d-pixel years: [(year label, indices into `dates`, in date order)].

    split="year": one group per calendar year. split="cycle": if all dates fall within 12
    consecutive calendar months, ONE group labelled by the calendar year holding most of them
    (a tie goes to the later year); otherwise one group per calendar year. Within a group the
    dates are ordered by day of year (then date), as in a calendar year: a Nov .. Oct cycle
    runs Jan .. Oct, Nov, Dec.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    d = np.asarray(dates).astype("datetime64[D]")
    if d.size == 0:
        return []
    years = d.astype("datetime64[Y]").astype(np.int64) + 1970
    doy = (d - d.astype("datetime64[Y]")).astype(np.int64) + 1
    order = np.lexsort((d.astype(np.int64), doy))
    months = d.astype("datetime64[M]").astype(np.int64)
    if split == "cycle" and months.max() - months.min() <= 11:
        uniq, counts = np.unique(years, return_counts=True)
        label = int(uniq[np.flatnonzero(counts == counts.max())[-1]])
        return [(label, order)]
    return [(int(y), order[years[order] == y]) for y in np.unique(years)]


def _engine(path: Path) -> str:
    with open(path, "rb") as f:
        return "scipy" if f.read(3) == b"CDF" else "h5netcdf"


def open_cube(path: str | Path) -> Any:
    """The xarray Dataset of a cube with raw values (netCDF4 via h5netcdf, netCDF3 via scipy)."""
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise PreprocessError(f"{path}: cube not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return xr.open_dataset(path, engine=_engine(path), mask_and_scale=False)
    except Exception as exc:  # unreadable: name the file
        raise PreprocessError(f"{path}: not a readable netCDF cube ({type(exc).__name__}: "
                              f"{exc})") from None


def _canonical(label: str) -> str | None:
    """'S2-L2A-B02' / 'B02' / 'B2' -> 'B02'; 'S1-SIGMA0-VV' / 'VV' -> 'VV'; None for anything
    else (a Landsat 'L8-B2', 'temperature_mean'...). Only model bands and polarisations."""
    text = label.strip().upper()
    prefix = ""
    if text.startswith(("S2", "S1")) and re.search(r"[-_]", text):
        prefix, text = text[:2], re.split(r"[-_]", text)[-1]
    m = _S2_NAME.fullmatch(text)
    if m and prefix in ("", "S2"):
        num = m.group(1)
        band = "B" + (num if num == "8A" else f"{int(num):02d}")
        return band if band in S2_BANDS else None
    if text in S1_POLS and prefix in ("", "S1"):
        return text
    return None


def _find_variables(ds: Any, path: Path) -> dict[str, str]:
    """Model band / polarisation -> (t, y, x) variable, by variable name, else long_name."""
    found: dict[str, str] = {}
    for var in ds.data_vars:
        da = ds[var]
        if da.ndim != 3:
            continue
        canon = _canonical(str(var)) or _canonical(str(da.attrs.get("long_name", "")))
        if canon is None:
            continue
        if canon in found:
            raise PreprocessError(f"{path}: variables {found[canon]!r} and {var!r} both give "
                                  f"{canon}; expected one variable per band")
        found[canon] = str(var)
    return found


def _raw(ds: Any, var: str, dims: tuple[str, str, str], flip: bool) -> np.ndarray:
    """(T, H, W) values as stored, int16 flagged `_Unsigned` reinterpreted as uint16."""
    da = ds[var].transpose(*dims)
    a = np.asarray(da.values)
    if a.dtype.kind == "i" and str(da.attrs.get("_Unsigned", "")).lower() == "true":
        a = a.view(a.dtype.str.replace("i", "u"))
    return a[:, ::-1] if flip else a


def _orbit(ds: Any, s1_vars: list[str], path: Path) -> tuple[str, str]:
    for attrs in [ds.attrs] + [ds[v].attrs for v in s1_vars]:
        for key, value in attrs.items():
            if "orbit" in str(key).lower():
                name = S1_ORBIT_NAMES.get(str(value).strip().lower())
                m = _ORBIT.search(str(value))
                if name:
                    return name, "attribute"
                if m:
                    return m.group(1).lower(), "attribute"
    m = _ORBIT.search(path.name)
    if m:
        return m.group(1).lower(), "file name"
    return "ascending", "default"


def _grid(ds: Any, path: Path, ref: str, ydim: str, xdim: str) -> tuple[Any, Any, bool]:
    """(crs or None, transform or None, flip rows) from the grid mapping and the x / y centres."""
    from rasterio.transform import from_origin

    from tessera.preprocess.sources.netcdf import _axis, _crs

    try:
        crs = _crs(str(path), ds, ref)
    except PreprocessError:
        crs = None
    if xdim not in ds.coords or ydim not in ds.coords:
        return crs, None, False
    x0, dx = _axis(str(path), ds[xdim].values, xdim, None)
    y0, dy = _axis(str(path), ds[ydim].values, ydim, None)
    flip = dy > 0
    top = (y0 + dy * (ds.sizes[ydim] - 1) if flip else y0) + abs(dy) / 2
    return crs, from_origin(x0 - dx / 2, top, dx, abs(dy)), flip


def read_cube(path: str | Path, split: str = "cycle") -> CubePixels:
    """Every pixel of a monthly cube as d-pixels, one batch per d-pixel year: `split` "cycle"
    (default) or "year", see `annual_windows` and the module docstring."""
    from tessera.preprocess.sources.netcdf import _dims

    path = Path(path)
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    ds = open_cube(path)
    try:
        variables = _find_variables(ds, path)
        s1_missing = [p for p in S1_POLS if p not in variables]
        s2_found = [b for b in S2_BANDS if b in variables]
        if not s2_found or s1_missing:
            raise PreprocessError(
                f"{path}: expected Sentinel-2 bands ({', '.join(S2_BANDS)}) and Sentinel-1 VV, VH "
                f"as (t, y, x) variables (named e.g. S2-L2A-B02 / B02 / B2, S1-SIGMA0-VV / VV); "
                f"found {', '.join(f'{k}={v}' for k, v in variables.items()) or 'none'} among "
                f"{', '.join(map(str, ds.data_vars))}")
        ref = variables[s2_found[0]]
        dims = _dims(str(path), ds[ref], ref)
        tdim, ydim, xdim = dims
        times = np.asarray(ds[tdim].values)
        if not np.issubdtype(times.dtype, np.datetime64):
            raise PreprocessError(f"{path}: the {tdim} coordinate is not a date (dtype "
                                  f"{times.dtype}); expected CF time units")
        crs, transform, flip = _grid(ds, path, ref, ydim, xdim)
        h, w = int(ds.sizes[ydim]), int(ds.sizes[xdim])
        raw = {b: _raw(ds, v, dims, flip).astype(np.int64) for b, v in variables.items()}
        orbit, orbit_source = _orbit(ds, [variables[p] for p in S1_POLS], path)
        static = {}
        for var in ds.data_vars:
            da = ds[var]
            if da.dims == (ydim, xdim):
                a = np.asarray(da.values)
                if a.dtype.kind == "i" and str(da.attrs.get("_Unsigned", "")).lower() == "true":
                    a = a.view(a.dtype.str.replace("i", "u"))
                static[str(var)] = (a[::-1] if flip else a).reshape(-1)
    finally:
        ds.close()

    # --- S2: missing = 65535; absent bands filled like the point tables do ------------------
    s2_vals = {b: np.where(raw[b] == NODATA, np.nan, raw[b]).astype(np.float64)
               for b in s2_found}
    filled, todo = fill_s2_bands(s2_vals, [b for b in S2_BANDS if b not in s2_vals])
    if todo:
        raise PreprocessError(f"{path}: no variable for the S2 band(s) {', '.join(todo)} and "
                              "they cannot be filled from their spectral neighbours")
    s2 = np.stack([s2_vals[b] for b in S2_BANDS], axis=-1)  # (T, H, W, 10)
    # numpy's stubs allow a scalar for any reduction over an axis; (T, H, W, 10) -> (T, H, W)
    s2_valid: np.ndarray = ~np.isnan(s2).any(-1)  # type: ignore[assignment]
    s2 = np.where(s2_valid[..., None], np.clip(np.rint(np.nan_to_num(s2)), 0, 65535), 0)
    s2 = s2.astype(np.uint16)

    # --- S1: DN -> dB -> TESSERA int16 code; missing -> 0 ------------------------------------
    codes = []
    for pol in S1_POLS:
        dn = np.where(raw[pol] == NODATA, 0, raw[pol])
        codes.append(s1_db_to_int16(s1_amplitude_dn_to_db(dn, S1_DN_OFFSET)))
    s1 = np.stack(codes, axis=-1)  # (T, H, W, 2); NaN dB (missing, DN <= 0) -> 0

    dates = times.astype("datetime64[D]")
    years = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    doy = (dates - dates.astype("datetime64[Y]")).astype(np.int64) + 1
    n = h * w

    def pixel_major(a: np.ndarray, sel: np.ndarray) -> np.ndarray:
        a = a[sel]
        return np.ascontiguousarray(np.moveaxis(a, 0, 2)).reshape(n, len(sel), *a.shape[3:])

    empty_s1 = np.zeros((n, 0, 2), np.int16)
    batches, windows = {}, {}
    for year, sel in annual_windows(dates, split):
        windows[year] = sel
        s1_year = pixel_major(s1, sel)
        orbits = {"s1_asc": s1_year, "s1_asc_doy": doy[sel],
                  "s1_desc": empty_s1, "s1_desc_doy": np.zeros(0, np.int16)}
        if orbit == "descending":
            orbits = {"s1_asc": empty_s1, "s1_asc_doy": np.zeros(0, np.int16),
                      "s1_desc": s1_year, "s1_desc_doy": doy[sel]}
        batches[int(year)] = DPixelBatch.from_shared_dates(
            s2=pixel_major(s2, sel), s2_valid=pixel_major(s2_valid, sel), s2_doy=doy[sel],
            **orbits)
    rows, cols = np.divmod(np.arange(n), w)
    return CubePixels(path=path, batches=batches, windows=windows, dates=dates, years=years,
                      rows=rows, cols=cols, shape=(h, w), crs=crs, transform=transform,
                      variables=variables, filled=filled, s1_orbit=orbit,
                      s1_orbit_source=orbit_source, static=static)
