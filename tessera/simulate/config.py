"""`SimConfig`, the parameters of a simulated tile, its geometry (`tile_geometry`) and the seeded
random streams every part of the simulation draws from.

Why a module of its own: the scene, the dates, the sensors and the tile writer all read the
configuration and draw from `stream_rng(seed, stream, index)`; keeping the streams in one place
keeps them independent (changing the number of S1 dates leaves the S2 data unchanged).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tessera.errors import InputError
from tessera.simulate.classes import CLASS_IDS, DEFAULT_CLASS_WEIGHTS

# Independent random streams: default_rng([seed, stream, index]).
SCENE_STREAM, DATES_STREAM, S2_STREAM, S1_ASC_STREAM, S1_DESC_STREAM, TABLE_STREAM = range(6)


def stream_rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, index])


# --- configuration ----------------------------------------------------------------------------
@dataclasses.dataclass
class SimConfig:
    """Parameters of a simulated tile. ``size`` (if given) sets both height and width.

    Distances are in pixels of `resolution` metres. ``origin`` is the (x, y) of the upper-left
    corner in ``crs``. ``cloud_fraction`` is the share of S2 observations under cloud (SCL 8/9)
    over the year; shadows, cirrus and snow come on top. ``roi`` is "all" (ones), "border"
    (a ``roi_border`` pixel frame outside) or "random" (smooth blobs, ``roi_outside_fraction``).
    """

    height: int = 512  # pixels
    width: int = 512
    size: int | None = None  # shortcut: height = width = size
    year: int = 2022  # calendar year of the dates (leap years have 366 days)
    seed: int = 0
    n_s2_dates: int = 70  # S2 acquisitions in the year (about every 5 days)
    n_s1_asc: int = 30  # S1 ascending acquisitions (about every 12 days)
    n_s1_desc: int = 30  # S1 descending acquisitions (own offset)
    cloud_fraction: float = 0.4  # mean share of S2 observations in SCL 8/9
    cloud_seasonality: float = 0.35  # relative winter excess of cloud cover
    cloud_scale: float = 250.0  # cloud correlation length, pixels
    snow_probability: float = 0.15  # chance of snow on a winter date (doy <= 60 or >= 335)
    cirrus_probability: float = 0.15  # chance of thin cirrus (SCL 10, valid) on a date
    nodata_probability: float = 0.05  # chance of a swath edge (no data) on a date, per sensor
    crs: str = "EPSG:32631"  # UTM zone 31 N
    origin: tuple[float, float] = (500000.0, 5500000.0)  # upper-left corner (x, y), metres
    resolution: float = 10.0  # metres per pixel
    field_size: int = 40  # typical parcel side, pixels
    class_weights: dict[str, float] | None = None  # area share per class name (no "water")
    river: bool = True  # draw a meandering river
    lake_fraction: float = 0.01  # area share of lakes
    roi: str = "all"  # "all", "border" or "random"
    roi_border: int = 16  # outside frame width for roi="border"
    roi_outside_fraction: float = 0.25  # outside share for roi="random"
    s2_noise: float = 0.02  # relative per-pixel S2 noise (plus 12 absolute)
    resample_20m: bool = True  # 20 m bands constant over 2 x 2 pixel blocks
    enl: float = 4.4  # equivalent number of looks of the S1 speckle
    write_scl: bool = True  # simulate_tile: also write scl.npy
    write_labels_tiff: bool = True  # simulate_tile: also write labels.tiff

    def __post_init__(self) -> None:
        if self.size is not None:
            self.height = self.width = int(self.size)
        self.origin = (float(self.origin[0]), float(self.origin[1]))
        if self.height < 1 or self.width < 1:
            raise InputError(f"SimConfig: height and width must be >= 1, got {self.height} x "
                             f"{self.width}")
        for name in ("n_s2_dates", "n_s1_asc", "n_s1_desc"):
            if getattr(self, name) < 0:
                raise InputError(f"SimConfig.{name}: must be >= 0")
        if not 0.0 <= self.cloud_fraction <= 1.0:
            raise InputError(f"SimConfig.cloud_fraction: {self.cloud_fraction}, expected 0-1")
        if self.roi not in ("all", "border", "random"):
            raise InputError(f"SimConfig.roi: {self.roi!r}, expected 'all', 'border' or 'random'")
        weights = self.class_weights or DEFAULT_CLASS_WEIGHTS
        unknown = sorted(set(weights) - set(CLASS_IDS))
        if unknown:
            raise InputError(f"SimConfig.class_weights: unknown classes {unknown}; "
                             f"known: {', '.join(CLASS_IDS)}")

    @property
    def n_days(self) -> int:
        return 366 if _is_leap(self.year) else 365

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["origin"] = list(self.origin)
        d["class_weights"] = dict(self.class_weights or DEFAULT_CLASS_WEIGHTS)
        return d


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def tile_geometry(config: SimConfig) -> tuple[str, Any]:
    """The tile's CRS string and north-up affine transform (upper-left origin, square pixels)."""
    from affine import Affine

    x0, y0 = config.origin
    return config.crs, Affine(config.resolution, 0.0, x0, 0.0, -config.resolution, y0)
