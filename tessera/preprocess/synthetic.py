"""SIMULATED Sentinel-1/2 acquisitions written as real rasters (COGs), for tests and benchmarks.

Nothing here was observed by a satellite. It writes what a user would download - one COG per
band per date, 10 m bands at 10 m, 20 m bands and SCL at 20 m, S2 values carrying the BOA
offset (with a `PROCESSING_BASELINE` tag) from 2022-01-25, S1 as linear power per orbit - so
the preprocessing can be exercised on files without network access:

    s2/S2_{granule}_{date}_{band}.tif      template "s2/S2_{granule}_{date}_{band}.tif"
    s1/S1_{orbit}_{date}_{band}.tif        template "s1/S1_{orbit}_{date}_{band}.tif"

`write_scene_files` renders a `tessera.simulate` scene (realistic, small regions);
`write_noise_files` writes cheap seeded fields date by date (any size, bounded memory) for the
throughput benchmark.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from tessera.atomic import atomic_path
from tessera.bands import (BOA_OFFSET, S2_10M_BANDS, S2_BANDS, needs_boa_offset,
                           s1_int16_to_db)
from tessera.errors import InputError

if TYPE_CHECKING:
    from tessera.simulate import SimConfig

S2_TEMPLATE = "s2/S2_{granule}_{date}_{band}.tif"
S1_TEMPLATE = "s1/S1_{orbit}_{date}_{band}.tif"


def doy_to_date(year: int, doy: int) -> _dt.date:
    return _dt.date(year, 1, 1) + _dt.timedelta(days=int(doy) - 1)


def _write(path: Path, a: np.ndarray, crs: Any, transform: Any, nodata: float | None,
           tags: dict[str, str] | None = None) -> None:
    import rasterio
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", driver="COG", width=a.shape[1], height=a.shape[0], count=1,
                           dtype=a.dtype, crs=crs, transform=transform, nodata=nodata,
                           compress="deflate", blocksize=256, overviews="NONE") as dst:
            dst.write(a, 1)
            if tags:
                dst.update_tags(**tags)


def write_s2_date(root: Path, granule: str, date: _dt.date, bands: np.ndarray, scl: np.ndarray,
                  crs: Any, transform: Any, offset: bool | None = None) -> list[Path]:
    """One S2 L2A acquisition: `bands` (H, W, 10) offset-free reflectance x 1e4 in model order,
    `scl` (H, W) at 10 m. 20 m bands and SCL are written at 20 m (top-left pixel of each 2 x 2
    block, which is what `simulate` renders). The BOA offset is added where the date requires
    it (`offset=None`) or as told."""
    from affine import Affine
    offset = needs_boa_offset(date=date) if offset is None else offset
    baseline = "04.00" if offset else "02.09"
    t20 = transform @ Affine.scale(2)
    out = []
    for i, b in enumerate(S2_BANDS):
        v = bands[..., i]
        if offset:
            v = np.where(v > 0, v.astype(np.int32) + BOA_OFFSET, 0).clip(0, 65535).astype(np.uint16)
        tr = transform
        if b not in S2_10M_BANDS:
            v, tr = v[::2, ::2], t20
        p = root / S2_TEMPLATE.format(granule=granule, date=date.isoformat(), band=b)
        _write(p, np.ascontiguousarray(v), crs, tr, 0, {"PROCESSING_BASELINE": baseline})
        out.append(p)
    p = root / S2_TEMPLATE.format(granule=granule, date=date.isoformat(), band="SCL")
    _write(p, np.ascontiguousarray(scl[::2, ::2]), crs, t20, 0, {"PROCESSING_BASELINE": baseline})
    return out + [p]


def write_s1_date(root: Path, orbit: str, date: _dt.date, code: np.ndarray, crs: Any,
                  transform: Any) -> list[Path]:
    """One S1 acquisition from TESSERA int16 codes (H, W, 2), written as linear power float32
    (0 = no data)."""
    db = s1_int16_to_db(code)  # standard dB, NaN where code 0
    lin = np.where(np.isfinite(db), 10.0 ** (db / 10.0), 0).astype(np.float32)
    out = []
    for i, pol in enumerate(("VV", "VH")):
        p = root / S1_TEMPLATE.format(orbit=orbit, date=date.isoformat(), band=pol)
        _write(p, np.ascontiguousarray(lin[..., i]), crs, transform, 0)
        out.append(p)
    return out


def write_scene_files(root: str | os.PathLike, config: SimConfig | None = None,
                      granule: str = "T31UDS") -> dict[str, Any]:
    """Simulate a scene (`tessera.simulate.SimConfig`, even height and width) and write it as
    COGs under `root`. Returns the simulated arrays plus `crs`, `transform`, `s2_dates`,
    `asc_dates`, `desc_dates` for checks."""
    from tessera.simulate import SimConfig, simulate_arrays, tile_geometry
    config = config or SimConfig(size=64, n_s2_dates=12, n_s1_asc=6, n_s1_desc=6)
    if config.height % 2 or config.width % 2:
        raise InputError("write_scene_files: height and width must be even (20 m bands)")
    root = Path(root)
    arrays = simulate_arrays(config)
    crs, transform = tile_geometry(config)
    s2_dates = [doy_to_date(config.year, d) for d in arrays["doys"]]
    for t, d in enumerate(s2_dates):
        write_s2_date(root, granule, d, arrays["bands"][t], arrays["scl"][t], crs, transform)
    dates = {}
    for orbit in ("ascending", "descending"):
        dates[orbit] = [doy_to_date(config.year, d) for d in arrays[f"sar_{orbit}_doy"]]
        for t, d in enumerate(dates[orbit]):
            write_s1_date(root, orbit, d, arrays[f"sar_{orbit}"][t], crs, transform)
    return {**arrays, "crs": crs, "transform": transform, "s2_dates": s2_dates,
            "asc_dates": dates["ascending"], "desc_dates": dates["descending"]}


@dataclasses.dataclass
class NoiseScene:
    """A cheap seeded scene for benchmarks: smooth random fields per date, any size."""

    height: int
    width: int
    year: int = 2022
    n_s2: int = 60
    n_s1: int = 60          # split evenly over ascending and descending
    crs: str = "EPSG:32631"
    origin: tuple[float, float] = (500000.0, 5600000.0)
    seed: int = 0
    pixel_size: float = 10.0  # of the "10 m" bands; larger for reduced-resolution pipelines
    granule: str = "T31UDS"

    def dates(self, n: int, offset: int) -> list[_dt.date]:
        step = 365 / max(n, 1)
        return [doy_to_date(self.year, 1 + int(offset + k * step) % 365) for k in range(n)]


def _noise_dates(scene: NoiseScene) -> Iterator[tuple[str, str, _dt.date, int]]:
    for t, d in enumerate(scene.dates(scene.n_s2, 2)):
        yield "s2", "", d, t
    half = scene.n_s1 // 2
    for t, d in enumerate(scene.dates(half, 3)):
        yield "s1", "ascending", d, t
    for t, d in enumerate(scene.dates(scene.n_s1 - half, 9)):
        yield "s1", "descending", d, t


def write_noise_files(root: str | os.PathLike, scene: NoiseScene) -> dict[str, Any]:
    """Write `scene` date by date (memory: one date). Returns file count and bytes written."""
    from rasterio.transform import from_origin
    root = Path(root)
    h, w = scene.height, scene.width
    transform = from_origin(*scene.origin, scene.pixel_size, scene.pixel_size)
    n_files = 0
    for sensor, orbit, d, t in _noise_dates(scene):
        rng = np.random.default_rng([scene.seed, t, 0 if sensor == "s2" else 1 + len(orbit)])
        if sensor == "s2":
            base = rng.integers(200, 4000, size=(1, 1, 10))
            bands = (base + rng.integers(0, 300, size=(h, w, 10))).astype(np.uint16)
            scl = rng.choice(np.array([4, 5, 6, 8, 9, 3], np.uint8), size=(h, w),
                             p=[.45, .15, .05, .2, .1, .05])
            n_files += len(write_s2_date(root, scene.granule, d, bands, scl, scene.crs, transform))
        else:
            code = rng.integers(2000, 9000, size=(h, w, 2)).astype(np.int16)
            n_files += len(write_s1_date(root, orbit, d, code, scene.crs, transform))
    size = sum(p.stat().st_size for p in root.rglob("*.tif"))
    return {"files": n_files, "bytes": size}


def write_noise_region(root: str | os.PathLike, tiles: list[Any], resolution: float = 100.0,
                       n_s2: int = 12, n_s1: int = 12, seed: int = 0, year: int = 2022
                       ) -> dict[str, Any]:
    """SIMULATED noise acquisitions covering grid `tiles` (`tessera.geo.GridTile`) at a
    reduced `resolution`: one scene per UTM zone, under `root/utm{EPSG}/`, for the region
    pipeline's tests and benchmark. Returns the files source's templates (`s2`, `s1`),
    the file count and bytes."""
    import math

    root = Path(root)
    by_zone: dict[int, list[Any]] = {}
    for t in tiles:
        by_zone.setdefault(int(t.epsg), []).append(t)
    files = size = 0
    for epsg, zone_tiles in by_zone.items():
        grids = [t.target_grid(resolution) for t in zone_tiles]
        x0 = min(g.bounds[0] for g in grids) - 2 * resolution
        y0 = min(g.bounds[1] for g in grids) - 2 * resolution
        x1 = max(g.bounds[2] for g in grids) + 2 * resolution
        y1 = max(g.bounds[3] for g in grids) + 2 * resolution
        w, h = (2 * math.ceil((v1 - v0) / resolution / 2) for v0, v1 in ((x0, x1), (y0, y1)))
        scene = NoiseScene(h, w, year=year, n_s2=n_s2, n_s1=n_s1, crs=f"EPSG:{epsg}",
                           origin=(x0, y1), seed=seed, pixel_size=resolution,
                           granule=f"utm{epsg}")
        got = write_noise_files(root / f"utm{epsg}", scene)
        files, size = files + got["files"], size + got["bytes"]
    # the folder is the S1 granule (one footprint per zone); S2 names carry it already
    return {"s2": str(root / "{zone}" / S2_TEMPLATE), "s1": str(root / "{granule}" / S1_TEMPLATE),
            "files": files, "bytes": size}
