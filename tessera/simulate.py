"""SIMULATED Sentinel-1/2 tiles: a seeded, deterministic generator of synthetic d-pixel data.

Nothing this module produces was observed by a satellite. It writes *simulated* tiles in the
published tile folder layout (SPEC section 1) so that the pipeline, tests and benchmarks can run
without downloads, and so that embeddings and task heads can be checked against a known truth
(the per-pixel class labels). Every folder written here carries a ``simulation.json`` sidecar
with ``"simulated": true``, the seed and the full configuration.

The scene
    A parcel map (rectangles split recursively, their borders warped into irregular polygons)
    whose fields get one class each from `CLASSES`: five crops, grassland, forest, bare soil and a
    village (urban), plus a meandering river and small lakes (water). Forests cluster on a
    smooth low-frequency field, the village is one compact cluster of parcels.

Sentinel-2 (`bands`, `masks`, `scl`, `doys`)
    Each field follows its class's crop calendar (`PHENOLOGY`: double-logistic green-up and
    senescence, dry matter until harvest, stubble, autumn emergence of the next winter crop,
    rapeseed flowering, grassland mowing), with per-field jitter of dates and peak cover. Each
    pixel is a linear mix of green vegetation, dry vegetation, flowers and a background (soil,
    water, urban) spectrum, in the model band order `bands.S2_BANDS`, as reflectance x 10 000
    (offset-free, as stored in tiles). A static within-field texture, soil moisture from a daily
    rain series, per-date atmospheric gain, per-pixel noise and 2 x 2 block resampling of the
    20 m bands follow. Dates are irregular (about every 5 days, some dropped). Clouds are
    thresholded smooth random fields with a seasonal cover (cloudier in winter, bimodal per
    date), cloud shadows are the cloud field shifted away from the sun (sun elevation from the
    tile's latitude and the day), with dark rims, thin cirrus (valid), rare winter snow (valid)
    and swath edges (no data, values 0). A scene classification (SCL, classes 0-11, see
    `bands.SCL_NAMES`) is produced per date and the masks are ``bands.scl_valid(scl)``. Cloudy
    pixels hold bright cloud spectra, not zeros. The cloud cover over all dates matches
    ``SimConfig.cloud_fraction`` (fraction of observations in SCL 8/9), whatever the ROI:
    like the published pipeline, no date is dropped for being cloudy.

Sentinel-1 (`sar_ascending`, `sar_descending`)
    VV/VH backscatter in dB from class, green and dry cover (VH rises with biomass), soil
    moisture (bare soil) and wind (water, about -24 dB VV when calm), with a static per-field
    roughness and per-orbit look-direction offsets (strong for urban), multiplicative gamma
    speckle (``SimConfig.enl`` looks), occasional swath edges; encoded with
    `bands.s1_db_to_int16` (standard dB; the published code's unit is twice that, see bands).
    Each orbit has its own regular revisit (about 12 days), its own
    offset and a few missing acquisitions.

Everything is a function of ``SimConfig.seed``: the static scene and each date draw from their
own `numpy.random.default_rng` streams, so changing e.g. the number of S1 dates leaves the S2
data unchanged. Generation runs date by date in float32, vectorised over pixels; a 512 x 512
tile with 70 S2 and 30 + 30 S1 dates takes a few seconds.

Public API: `SimConfig`, `simulate_arrays`, `simulate_tile`, `simulate_table`, `CLASSES`,
`CLASS_IDS`, `PHENOLOGY`, `Phenology`, `cover_fractions`, `peak_doy`, `tile_geometry`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tessera.bands import S2_BANDS, SCL_NAMES, s1_db_to_int16, s1_int16_to_db, scl_valid

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CLASSES", "CLASS_IDS", "CROP_CLASSES", "DEFAULT_CLASS_WEIGHTS", "PHENOLOGY", "Phenology",
    "SimConfig", "TABLE_COLUMNS",
    "cover_fractions", "peak_doy", "simulate_arrays", "simulate_table", "simulate_tile",
    "tile_geometry",
]

# --- class table ------------------------------------------------------------------------------
#: Label raster classes (``labels.npy``, uint8). 0 is reserved for "no label" and never produced.
CLASSES: dict[int, str] = {
    1: "winter_wheat",
    2: "winter_barley",
    3: "maize",
    4: "rapeseed",
    5: "sugar_beet",
    6: "grassland",
    7: "forest",
    8: "water",
    9: "bare_soil",
    10: "urban",
}
CLASS_IDS: dict[str, int] = {name: cid for cid, name in CLASSES.items()}
CROP_CLASSES: tuple[str, ...] = ("winter_wheat", "winter_barley", "maize", "rapeseed", "sugar_beet")

#: Default share of the scene area per class (water comes from the river and lakes instead).
DEFAULT_CLASS_WEIGHTS: dict[str, float] = {
    "winter_wheat": 0.22, "winter_barley": 0.10, "maize": 0.15, "rapeseed": 0.10,
    "sugar_beet": 0.08, "grassland": 0.14, "forest": 0.12, "bare_soil": 0.04, "urban": 0.05,
}


@dataclasses.dataclass(frozen=True)
class Phenology:
    """A class's mean crop calendar, as cover fractions over the day of year.

    Green cover rises from `winter` to `gmax` around `sos` and falls around `eos` (double
    logistic, widths `r_up` / `r_down` days); annual crops fall to 0, perennials back to `winter`.
    Senescent (dry) cover reaches `dry` after `eos` until `harvest`, then stubble until tillage
    30 days later; `autumn` is the emergence of the next autumn-sown crop; `flower` the rapeseed
    flowering peak; `mowing` the grass cuts.
    """

    winter: float = 0.0
    gmax: float = 0.0
    sos: float = 120.0
    eos: float = 250.0
    r_up: float = 8.0
    r_down: float = 8.0
    annual: bool = True
    dry: float = 0.0
    harvest: float | None = None
    autumn: float | None = None
    autumn_cover: float = 0.0
    flower: float | None = None
    flower_cover: float = 0.0
    mowing: tuple[float, ...] = ()


PHENOLOGY: dict[str, Phenology] = {
    "winter_wheat": Phenology(winter=0.25, gmax=0.95, sos=88, eos=182, r_up=9, r_down=7, dry=0.75,
                              harvest=210, autumn=295, autumn_cover=0.22),
    "winter_barley": Phenology(winter=0.28, gmax=0.93, sos=78, eos=168, r_up=8, r_down=6, dry=0.7,
                               harvest=192, autumn=285, autumn_cover=0.25),
    "maize": Phenology(winter=0.0, gmax=0.96, sos=160, eos=255, r_up=7, r_down=8, dry=0.7,
                       harvest=285),
    "rapeseed": Phenology(winter=0.35, gmax=0.93, sos=72, eos=170, r_up=8, r_down=6, dry=0.7,
                          harvest=200, autumn=248, autumn_cover=0.45, flower=118,
                          flower_cover=0.45),
    "sugar_beet": Phenology(winter=0.0, gmax=0.97, sos=145, eos=285, r_up=9, r_down=10, dry=0.2,
                            harvest=295),
    "grassland": Phenology(winter=0.5, gmax=0.88, sos=90, eos=300, r_up=10, r_down=12,
                           annual=False, dry=0.05, mowing=(145.0, 195.0, 250.0)),
    "forest": Phenology(winter=0.42, gmax=0.85, sos=115, eos=290, r_up=7, r_down=9,
                        annual=False, dry=0.15),
    "water": Phenology(),
    "bare_soil": Phenology(winter=0.02, gmax=0.06, sos=120, eos=250, annual=False),
    "urban": Phenology(winter=0.08, gmax=0.2, sos=110, eos=290, annual=False),
}

# --- spectra (reflectance x 10 000, model band order B04 B02 B03 B08 B8A B05 B06 B07 B11 B12) --
_SPECTRA: dict[str, list[float]] = {
    "green": [220, 210, 580, 4500, 4650, 1050, 3050, 4050, 2000, 900],
    "dry": [1550, 950, 1250, 2800, 3000, 1950, 2450, 2750, 3600, 2600],
    "flower": [1500, 620, 1750, 4200, 4300, 2300, 3300, 3900, 2400, 1400],
    "soil": [1750, 1080, 1380, 2350, 2550, 1980, 2150, 2280, 3150, 2550],
    "water": [260, 520, 580, 160, 130, 260, 190, 170, 90, 60],
    "urban": [1500, 1320, 1420, 2050, 2150, 1600, 1850, 1980, 2500, 2150],
    "cloud": [6300, 6600, 6400, 6600, 6500, 6350, 6500, 6600, 4300, 3100],
    "cirrus": [1200, 1500, 1350, 1100, 1100, 1200, 1100, 1100, 800, 550],
    "snow": [8500, 9000, 8800, 7800, 7600, 8500, 8200, 8000, 900, 650],
    "shadow_gain": [0.35, 0.5, 0.42, 0.3, 0.3, 0.34, 0.31, 0.3, 0.26, 0.26],
}
_SPEC32: dict[str, np.ndarray] = {k: np.array(v, dtype=np.float32) for k, v in _SPECTRA.items()}
#: Green-vegetation spectrum per class where it differs from "green".
_GREEN_BY_CLASS: dict[str, list[float]] = {
    "maize": [280, 230, 560, 4300, 4450, 980, 2950, 3900, 1950, 880],
    "sugar_beet": [290, 240, 640, 5000, 5100, 1100, 3400, 4500, 1950, 850],
    "forest": [230, 210, 450, 3300, 3450, 720, 2300, 3000, 1450, 620],
    "rapeseed": [320, 260, 650, 4700, 4800, 1100, 3150, 4150, 2050, 950],
}
#: S1 model per class, dB: VV, VH at zero cover; gain per unit green cover; per unit dry cover;
#: soil-moisture sensitivity (scaled by the bare part of the pixel).
_S1: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float], float]] = {
    "winter_wheat": ((-11.0, -19.5), (-1.5, 6.0), (1.0, 2.5), 3.0),
    "winter_barley": ((-11.0, -19.5), (-1.0, 5.5), (1.0, 2.5), 3.0),
    "maize": ((-12.0, -20.5), (3.5, 8.5), (2.0, 3.5), 3.0),
    "rapeseed": ((-12.0, -20.5), (4.0, 9.0), (1.5, 3.0), 3.0),
    "sugar_beet": ((-13.0, -21.5), (4.5, 9.5), (0.0, 0.5), 3.0),
    "grassland": ((-11.5, -18.5), (1.0, 3.5), (0.5, 1.0), 2.0),
    "forest": ((-8.0, -14.5), (0.5, 1.2), (0.0, 0.0), 0.5),
    "water": ((-24.0, -30.0), (0.0, 0.0), (0.0, 0.0), 0.0),
    "bare_soil": ((-11.5, -19.0), (0.0, 0.0), (0.0, 0.0), 3.5),
    "urban": ((-2.0, -10.0), (0.0, 0.0), (0.0, 0.0), 0.0),
}
_I20 = [S2_BANDS.index(b) for b in ("B8A", "B05", "B06", "B07", "B11", "B12")]
_I10 = [S2_BANDS.index(b) for b in ("B04", "B02", "B03", "B08")]
_IB02, _IB04, _IB08 = S2_BANDS.index("B02"), S2_BANDS.index("B04"), S2_BANDS.index("B08")
_N_CLASS_IDS = max(CLASSES) + 1

# Independent random streams: default_rng([seed, stream, index]).
_SCENE, _DATES, _S2, _S1_ASC, _S1_DESC, _TABLE = range(6)


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
            raise ValueError(f"SimConfig: height and width must be >= 1, got {self.height} x "
                             f"{self.width}")
        for name in ("n_s2_dates", "n_s1_asc", "n_s1_desc"):
            if getattr(self, name) < 0:
                raise ValueError(f"SimConfig.{name}: must be >= 0")
        if not 0.0 <= self.cloud_fraction <= 1.0:
            raise ValueError(f"SimConfig.cloud_fraction: {self.cloud_fraction}, expected 0-1")
        if self.roi not in ("all", "border", "random"):
            raise ValueError(f"SimConfig.roi: {self.roi!r}, expected 'all', 'border' or 'random'")
        weights = self.class_weights or DEFAULT_CLASS_WEIGHTS
        unknown = sorted(set(weights) - set(CLASS_IDS))
        if unknown:
            raise ValueError(f"SimConfig.class_weights: unknown classes {unknown}; "
                             f"known: {', '.join(CLASS_IDS)}")

    @property
    def n_days(self) -> int:
        return 366 if _is_leap(self.year) else 365

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["origin"] = list(self.origin)
        d["class_weights"] = dict(self.class_weights or DEFAULT_CLASS_WEIGHTS)
        return d


def tile_geometry(config: SimConfig) -> tuple[str, Any]:
    """The tile's CRS string and north-up affine transform (upper-left origin, square pixels)."""
    from affine import Affine

    x0, y0 = config.origin
    return config.crs, Affine(config.resolution, 0.0, x0, 0.0, -config.resolution, y0)


# --- phenology --------------------------------------------------------------------------------
def _sig(x: np.ndarray | float) -> np.ndarray:
    """Overflow-free logistic."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float32)))


_FAR = 1.0e4  # "never" for optional dates


def _field_params(names: list[str], rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    """Per-field phenology parameter arrays; with `rng`, jittered (a common sowing shift per
    field plus independent shifts of each date, and a scaled peak cover)."""
    n = len(names)
    ph = [PHENOLOGY[c] for c in names]

    def col(fn: Any) -> np.ndarray:
        return np.array([fn(p) for p in ph], dtype=np.float32)

    p = {
        "winter": col(lambda q: q.winter), "gmax": col(lambda q: q.gmax),
        "sos": col(lambda q: q.sos), "eos": col(lambda q: q.eos),
        "r_up": col(lambda q: q.r_up), "r_down": col(lambda q: q.r_down),
        "annual": col(lambda q: float(q.annual)), "dry": col(lambda q: q.dry),
        "harvest": col(lambda q: _FAR if q.harvest is None else q.harvest),
        "autumn": col(lambda q: _FAR if q.autumn is None else q.autumn),
        "autumn_cover": col(lambda q: q.autumn_cover),
        "flower": col(lambda q: -_FAR if q.flower is None else q.flower),
        "flower_cover": col(lambda q: q.flower_cover),
        "mowing": np.array([[*q.mowing, *([_FAR] * (3 - len(q.mowing)))][:3] for q in ph],
                           dtype=np.float32).reshape(n, 3),
    }
    if rng is not None and n:
        f32 = np.float32
        shift = rng.normal(0.0, 6.0, n).astype(f32)
        for k in ("sos", "eos", "harvest", "autumn", "flower"):
            p[k] = p[k] + shift + rng.normal(0.0, 4.0, n).astype(f32)
        p["harvest"] = np.maximum(p["harvest"], p["eos"] + 10)
        p["mowing"] = p["mowing"] + rng.normal(0.0, 8.0, (n, 3)).astype(f32)
        scale = rng.uniform(0.92, 1.04, n).astype(f32)
        p["gmax"] = np.minimum(p["gmax"] * scale, 0.97)
        p["winter"] = p["winter"] * rng.uniform(0.7, 1.3, n).astype(f32)
        p["r_up"] = p["r_up"] * rng.uniform(0.85, 1.15, n).astype(f32)
        p["r_down"] = p["r_down"] * rng.uniform(0.85, 1.15, n).astype(f32)
    return p


def _cover(p: dict[str, np.ndarray], t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Green, dry and flower cover fractions of each field on day `t` (sum <= 0.98)."""
    up = _sig((t - p["sos"]) / p["r_up"])
    down = _sig((t - p["eos"]) / p["r_down"])
    annual = p["annual"]
    amp = (p["gmax"] - p["winter"]) * up
    g = annual * (p["winter"] + amp) * (1 - down) + (1 - annual) * (p["winter"] + amp * (1 - down))
    harvested = _sig((t - p["harvest"]) / 2.0)
    d = p["dry"] * down * (1 - harvested)
    d = d + annual * 0.3 * harvested * (1 - _sig((t - p["harvest"] - 30.0) / 4.0))
    g = g + p["autumn_cover"] * _sig((t - p["autumn"]) / 8.0)
    for k in range(3):
        since = t - p["mowing"][:, k]
        cut = since >= 0
        g = g * (1 - 0.6 * cut * np.exp(-np.maximum(since, 0) / 18.0))
        d = d + 0.3 * cut * np.exp(-np.maximum(since, 0) / 6.0)
    f = p["flower_cover"] * np.exp(-0.5 * ((t - p["flower"]) / 9.0) ** 2)
    g = np.maximum(g - 0.5 * f, 0)
    total = g + d + f
    scale = np.where(total > 0.98, 0.98 / np.maximum(total, 1e-6), 1.0)
    return ((g * scale).astype(np.float32), (d * scale).astype(np.float32),
            (f * scale).astype(np.float32))


def cover_fractions(class_name: str, doys: np.ndarray | list[int]) -> dict[str, np.ndarray]:
    """Mean (unjittered) green / dry / flower cover of a class on the given days of year."""
    if class_name not in PHENOLOGY:
        raise KeyError(f"cover_fractions: unknown class {class_name!r}; known: "
                       f"{', '.join(PHENOLOGY)}")
    p = _field_params([class_name], None)
    out = np.array([np.concatenate(_cover(p, float(t))) for t in np.asarray(doys)],
                   dtype=np.float32).reshape(-1, 3)
    return {"green": out[:, 0], "dry": out[:, 1], "flower": out[:, 2]}


def peak_doy(class_name: str) -> int:
    """Day of year of a class's maximum mean green cover."""
    days = np.arange(1, 366)
    return int(days[np.argmax(cover_fractions(class_name, days)["green"])])


# --- random fields and dates ------------------------------------------------------------------
def _rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, index])


class _Fields:
    """Smooth periodic random fields (zero mean, unit std) by spectral synthesis."""

    def __init__(self, h: int, w: int) -> None:
        self.shape = (h, w)
        fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
        fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
        self._f2 = fy * fy + fx * fx
        self._filters: dict[tuple[float, float], np.ndarray] = {}

    def filter(self, scale: float, beta: float) -> np.ndarray:
        """Spectral amplitudes (f^2 + 1/scale^2)^(-beta/4), zero at f = 0 (cached)."""
        key = (float(scale), float(beta))
        amp = self._filters.get(key)
        if amp is None:
            amp = (self._f2 + np.float32(1.0 / max(scale, 1.0)) ** 2) ** np.float32(-beta / 4)
            amp[0, 0] = 0.0
            self._filters[key] = amp = amp.astype(np.float32)
        return amp

    def __call__(self, rng: np.random.Generator, scale: float, beta: float = 3.0) -> np.ndarray:
        """A field with power spectrum (f^2 + 1/scale^2)^(-beta/2); `scale` in pixels."""
        amp = self.filter(scale, beta)
        coef = np.empty(amp.shape, dtype=np.complex64)
        coef.real = rng.standard_normal(amp.shape, dtype=np.float32)
        coef.imag = rng.standard_normal(amp.shape, dtype=np.float32)
        coef *= amp
        f = np.fft.irfft2(coef, s=self.shape).astype(np.float32, copy=False)
        f -= f.mean()
        std = float(f.std())
        if std > 0:
            f /= std
        return f


def _acquisition_doys(rng: np.random.Generator, n: int, n_days: int, drop: float,
                      jitter: int, offset: float | None = None) -> tuple[np.ndarray, float, float]:
    """`n` sorted days of year on a regular grid with ``drop`` extra candidates removed at
    random and +-`jitter` days of jitter. Returns (doys, step, offset)."""
    if n <= 0:
        return np.zeros(0, np.int16), float(n_days), 0.0
    n = min(n, n_days)
    n_cand = min(n_days, int(math.ceil(n * (1 + drop))) + (1 if drop > 0 else 0))
    step = n_days / n_cand
    if offset is None:
        offset = float(rng.uniform(0, step))
    cand = np.floor((offset % step) + step * np.arange(n_cand)).astype(np.int64)
    if jitter:
        cand = cand + rng.integers(-jitter, jitter + 1, n_cand)
    cand = np.unique(np.clip(cand, 0, n_days - 1)) + 1
    if len(cand) > n:
        cand = np.sort(rng.choice(cand, n, replace=False))
    elif len(cand) < n:
        rest = np.setdiff1d(np.arange(1, n_days + 1), cand)
        cand = np.sort(np.concatenate([cand, rng.choice(rest, n - len(cand), replace=False)]))
    return cand.astype(np.int16), step, float(offset)


def _moisture(rng: np.random.Generator, n_days: int) -> np.ndarray:
    """Daily top-soil moisture index 0-1 (index = doy - 1): rain events, exponential drying."""
    season = 0.5 + 0.25 * np.cos(2 * np.pi * (np.arange(n_days) - 15) / 365.0)
    rain = (rng.random(n_days) < season * 0.5) * rng.exponential(1.0, n_days)
    m = np.zeros(n_days, dtype=np.float32)
    level = 0.5
    for i in range(n_days):
        level = level * 0.85 + 0.35 * rain[i]
        m[i] = level
    return np.clip(m / max(float(np.quantile(m, 0.98)), 1e-6), 0, 1).astype(np.float32)


def _cloud_covers(rng: np.random.Generator, doys: np.ndarray, fraction: float,
                  seasonality: float) -> np.ndarray:
    """Per-date cloud cover: bimodal (beta) around a seasonal mean, rescaled so that the mean
    over all dates equals `fraction`."""
    if len(doys) == 0 or fraction <= 0:
        return np.zeros(len(doys))
    if fraction >= 1:
        return np.ones(len(doys))
    p = fraction * (1 + seasonality * np.cos(2 * np.pi * (doys.astype(float) - 15) / 365.0))
    p = np.clip(p, 0.02, 0.98)
    k = 1.2
    c = rng.beta(p * k, (1 - p) * k)
    for _ in range(50):
        m = c.mean()
        if m <= 0 or abs(m - fraction) < 1e-6:
            break
        c = np.clip(c * fraction / m, 0, 1)
    return c


def _sun_offset(lat_deg: float, doy: int, height_m: float, res: float) -> tuple[int, int]:
    """(rows, cols) shift from a cloud to its shadow at the ~10:30 local overpass."""
    lat = math.radians(lat_deg)
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365.0)
    hour = math.radians(-22.5)
    sin_e = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour)
    elev = math.asin(max(min(sin_e, 1.0), 0.1))
    cos_a = (math.sin(decl) - math.sin(elev) * math.sin(lat)) / (math.cos(elev) * math.cos(lat))
    az_sun = math.acos(max(min(cos_a, 1.0), -1.0))  # morning: east of the meridian
    az_shadow = az_sun + math.pi
    length = height_m / math.tan(elev) / res
    return (int(round(-math.cos(az_shadow) * length)), int(round(math.sin(az_shadow) * length)))


def _latitude(config: SimConfig) -> float:
    """Latitude of the tile centre (for sun angles); 50 if the CRS cannot be transformed."""
    try:
        from rasterio.warp import transform

        x0, y0 = config.origin
        x = x0 + config.width * config.resolution / 2
        y = y0 - config.height * config.resolution / 2
        _, lat = transform(config.crs, "EPSG:4326", [x], [y])
        return float(lat[0])
    except Exception:  # pragma: no cover - exotic CRS
        return 50.0


def _swath_edge(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A straight, slightly slanted swath edge: True on the no-data side (10-60 % of the tile)."""
    angle = math.radians(rng.uniform(8, 16)) * rng.choice([-1, 1])
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    u = cols * math.cos(angle) + rows * math.sin(angle)
    if rng.random() < 0.5:
        u = -u
    return u < np.quantile(u, rng.uniform(0.1, 0.6))


# --- the static scene -------------------------------------------------------------------------
@dataclasses.dataclass
class _Scene:
    labels: np.ndarray  # (H, W) uint8
    fields: np.ndarray  # (H, W) int32, parcel id
    field_class: list[str]
    pheno: dict[str, np.ndarray]
    roi: np.ndarray  # (H, W) uint8
    # flat per-pixel statics (N = H * W)
    fid: np.ndarray
    texture: np.ndarray  # (N,) multiplies green cover
    base: np.ndarray  # (10, N) background spectrum (soil / water / urban), band-major
    veg: np.ndarray  # (10, N) green-vegetation spectrum, band-major
    moist: np.ndarray  # (N,) darkening of the background per unit soil moisture
    water: np.ndarray  # (N,) bool
    unclassified: np.ndarray  # (N,) bool, SCL 7 when clear
    snow_gain: np.ndarray  # (N,) how much snow shows (0 on water, low in forest)
    s1_base: tuple[np.ndarray, np.ndarray]  # per orbit (N, 2) dB at zero cover
    s1_green: np.ndarray  # (N, 2)
    s1_dry: np.ndarray  # (N, 2)
    s1_moist: np.ndarray  # (N, 2)


def _parcels(rng: np.random.Generator, h: int, w: int, fs: int) -> np.ndarray:
    """Recursive splits of the tile into rectangles of about `fs` pixels a side."""
    ids = np.zeros((h, w), dtype=np.int32)
    stack = [(0, 0, h, w)]
    n = 0
    while stack:
        r0, c0, r1, c1 = stack.pop()
        hh, ww = r1 - r0, c1 - c0
        long_side = max(hh, ww)
        split = long_side >= 8 and (long_side > 1.6 * fs or (hh * ww > fs * fs
                                                              and rng.random() < 0.85))
        if split:
            if hh >= ww:
                cut = r0 + int(round(hh * rng.uniform(0.3, 0.7)))
                stack += [(r0, c0, cut, c1), (cut, c0, r1, c1)]
            else:
                cut = c0 + int(round(ww * rng.uniform(0.3, 0.7)))
                stack += [(r0, c0, r1, cut), (r0, cut, r1, c1)]
        else:
            ids[r0:r1, c0:c1] = n
            n += 1
    return ids


def _build_scene(config: SimConfig) -> _Scene:
    rng = _rng(config.seed, _SCENE)
    h, w = config.height, config.width
    n = h * w
    noise = _Fields(h, w)
    f32 = np.float32

    # parcels with warped borders
    rect = _parcels(rng, h, w, max(int(config.field_size), 4))
    amp = max(1.0, 0.1 * config.field_size)
    rows, cols = np.mgrid[0:h, 0:w]
    warp_scale = 1.5 * config.field_size
    wr = np.clip(rows + np.rint(amp * noise(rng, warp_scale, 4.5)).astype(int), 0, h - 1)
    wc = np.clip(cols + np.rint(amp * noise(rng, warp_scale, 4.5)).astype(int), 0, w - 1)
    fields = rect[wr, wc]
    _, fields = np.unique(fields, return_inverse=True)
    fields = fields.reshape(h, w).astype(np.int32)
    n_fields = int(fields.max()) + 1
    area = np.bincount(fields.ravel(), minlength=n_fields).astype(float)

    # classes: forest on a smooth field, a compact village, the rest at random by area share
    weights = dict(config.class_weights or DEFAULT_CLASS_WEIGHTS)
    weights.pop("water", None)  # water comes from the river and lakes
    total = sum(weights.values()) or 1.0
    share = {k: v / total for k, v in weights.items() if v > 0}
    cls = np.array([""] * n_fields, dtype=object)

    def claim(order: np.ndarray, target: float, name: str) -> None:
        """Give fields, in `order`, to class `name` while at least half of each fits."""
        got = 0.0
        for i in order:
            if got >= target * n:
                break
            if cls[i] == "" and got + area[i] / 2 <= target * n:
                cls[i] = name
                got += area[i]

    forest_field = noise(rng, max(h, w) / 2, 3.5).ravel()
    forest_score = np.bincount(fields.ravel(), weights=forest_field, minlength=n_fields) / area
    if share.get("forest", 0) > 0:
        claim(np.argsort(-forest_score), share["forest"], "forest")
    if share.get("urban", 0) > 0:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        fy = np.bincount(fields.ravel(), weights=rows.ravel(), minlength=n_fields) / area
        fx = np.bincount(fields.ravel(), weights=cols.ravel(), minlength=n_fields) / area
        claim(np.argsort((fy - cy) ** 2 + (fx - cx) ** 2), share["urban"], "urban")
    rest = [k for k in share if k not in ("forest", "urban")]
    if rest:
        prob = np.array([share[k] for k in rest])
        picks = rng.choice(len(rest), n_fields, p=prob / prob.sum())
    else:
        picks = np.zeros(n_fields, dtype=int)
    for i in range(n_fields):
        if cls[i] == "":
            cls[i] = rest[picks[i]] if rest else "bare_soil"

    # water: a meandering river and small lakes, as one extra "field"
    water = np.zeros((h, w), dtype=bool)
    if config.river:
        vertical = rng.random() < 0.5
        along, across = (rows, cols) if vertical else (cols, rows)
        span_along, span_across = (h, w) if vertical else (w, h)
        centre = (rng.uniform(0.2, 0.8) * span_across
                  + rng.uniform(0.05, 0.15) * span_across
                  * np.sin(2 * np.pi * along / rng.uniform(0.6, 1.5) / max(span_along, 1)
                           + rng.uniform(0, 2 * np.pi))
                  + 3 * np.sin(2 * np.pi * along / rng.uniform(40, 90) + rng.uniform(0, 6.3)))
        width = rng.uniform(3.0, 6.0)
        water |= np.abs(across - centre) < width
    if config.lake_fraction > 0:
        lake = noise(rng, max(h, w) / 3, 4.5)
        water |= lake > np.quantile(lake, 1 - config.lake_fraction)
    if water.any():
        fields = np.where(water, n_fields, fields).astype(np.int32)
        cls = np.append(cls, "water")
        n_fields += 1
    field_class = [str(c) for c in cls]
    labels = np.array([CLASS_IDS[c] for c in field_class], dtype=np.uint8)[fields]

    pheno = _field_params(field_class, rng)
    fid = fields.ravel()
    cls_pix = labels.ravel()
    is_cls = {name: cls_pix == cid for name, cid in CLASS_IDS.items()}

    # S2 statics
    texture = 1.0 + 0.07 * noise(rng, 6, 2.0).ravel() + 0.03 * rng.standard_normal(n, dtype=f32)
    soil_gain = rng.uniform(0.8, 1.2, n_fields).astype(f32)[fid] \
        * (1 + 0.05 * noise(rng, 10, 2.0).ravel())
    spec = _SPEC32
    base = np.empty((n, 10), dtype=f32)
    np.multiply(spec["soil"][None, :], soil_gain[:, None], out=base)
    base[is_cls["forest"]] *= 0.6
    turbidity = rng.uniform(0.85, 1.2)
    base[is_cls["water"]] = spec["water"] * turbidity
    urb = is_cls["urban"]
    base[urb] = spec["urban"] * np.clip(1 + 0.25 * noise(rng, 2, 1.0).ravel()[urb, None], 0.4, 2)
    veg_table = np.tile(spec["green"], (_N_CLASS_IDS, 1))
    for name, v in _GREEN_BY_CLASS.items():
        veg_table[CLASS_IDS[name]] = v
    veg = veg_table[cls_pix]
    moist = np.where(is_cls["water"] | urb, 0.0, 0.18).astype(f32)
    unclassified = (urb & (rng.random(n) < 0.4)) | (rng.random(n) < 0.003)
    snow_gain = np.where(is_cls["water"], 0.0, np.where(is_cls["forest"], 0.45, 0.92)).astype(f32)

    # S1 statics
    tab = np.zeros((4, _N_CLASS_IDS, 2), dtype=f32)
    msens = np.zeros(_N_CLASS_IDS, dtype=f32)
    for name, (b0, gain, dry, ms) in _S1.items():
        tab[0, CLASS_IDS[name]], tab[1, CLASS_IDS[name]], tab[2, CLASS_IDS[name]] = b0, gain, dry
        msens[CLASS_IDS[name]] = ms
    rough = np.stack([rng.normal(0, 1.0, n_fields), rng.normal(0, 0.7, n_fields)], 1).astype(f32)
    pix_tex = 0.4 * np.stack([noise(rng, 3, 1.5).ravel(), noise(rng, 3, 1.5).ravel()], 1)
    common = tab[0][cls_pix] + rough[fid] + pix_tex
    look_sd = np.where(urb, 3.0, 0.4).astype(f32)[:, None]
    s1_base = tuple(
        (common + rng.normal(0, 0.3, (1, 2)).astype(f32)
         + look_sd * np.stack([noise(rng, 2, 1.0).ravel()] * 2, 1)).astype(f32)
        for _ in range(2))
    s1_moist = np.repeat(msens[cls_pix][:, None], 2, 1) * np.array([1.0, 0.8], f32)

    # region of interest
    roi = np.ones((h, w), dtype=np.uint8)
    if config.roi == "border":
        b = max(0, int(config.roi_border))
        roi[:] = 0
        if 2 * b < h and 2 * b < w:
            roi[b:h - b, b:w - b] = 1
    elif config.roi == "random":
        blob = noise(rng, max(h, w) / 4, 3.0)
        roi = (blob <= np.quantile(blob, config.roi_outside_fraction)).astype(np.uint8) ^ 1

    return _Scene(labels=labels, fields=fields, field_class=field_class, pheno=pheno, roi=roi,
                  fid=fid, texture=texture.astype(f32), base=np.ascontiguousarray(base.T),
                  veg=np.ascontiguousarray(veg.T, dtype=f32),
                  moist=moist, water=is_cls["water"], unclassified=unclassified,
                  snow_gain=snow_gain, s1_base=s1_base,  # type: ignore[arg-type]
                  s1_green=tab[1][cls_pix], s1_dry=tab[2][cls_pix],
                  s1_moist=s1_moist.astype(f32))


# --- per-date rendering -----------------------------------------------------------------------
def _pixel_cover(scene: _Scene, doy: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gf, df, ff = _cover(scene.pheno, float(doy))
    g = gf[scene.fid] * scene.texture
    np.clip(g, 0.0, 0.99, out=g)
    return g, df[scene.fid], ff[scene.fid]


def _upsample2(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour 2 x 2 upsampling of (h2, w2) to (h, w)."""
    return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)[:h, :w]


def _render_s2(scene: _Scene, config: SimConfig, noise: _Fields, t: int, doy: int,
               cover: float, moisture: float, lat: float, out: np.ndarray,
               scl_out: np.ndarray, mask_out: np.ndarray) -> None:
    """Write date `t` into out (H, W, 10) uint16, scl_out and mask_out (H, W) uint8.

    Works band-major, (10, N) float32, so that every operation runs on one contiguous band.
    """
    rng = _rng(config.seed, _S2, t)
    h, w = config.height, config.width
    n = h * w
    f32 = np.float32
    spec = _SPEC32
    sigma = f32(config.s2_noise)

    # surface: background, green, dry and flower cover, atmosphere
    g, d, fl = _pixel_cover(scene, doy)
    s = 1.0 - g - d - fl
    np.clip(s, 0.0, 1.0, out=s)
    s *= 1.0 - scene.moist * f32(moisture)
    atm = (1.0 + rng.normal(0, 0.02, 10)).astype(f32)
    refl = np.empty((10, n), dtype=f32)
    tmp = np.empty(n, dtype=f32)
    has_flowers = bool(fl.any())
    for b in range(10):
        r = refl[b]
        np.multiply(scene.base[b], s, out=r)
        np.multiply(scene.veg[b], g, out=tmp)
        r += tmp
        np.multiply(d, spec["dry"][b], out=tmp)
        r += tmp
        if has_flowers:
            np.multiply(fl, spec["flower"][b], out=tmp)
            r += tmp
        r *= atm[b]
    refl[_IB02] += f32(rng.uniform(0, 120))  # haze

    b4, b8 = refl[_IB04], refl[_IB08]
    ndvi = (b8 - b4) / (b8 + b4 + 1.0)
    scl = np.where(ndvi > 0.4, 4, 5).astype(np.uint8)
    scl[scene.water] = 6
    scl[scene.unclassified] = 7

    # sensor noise; 20 m bands averaged over 2 x 2 blocks, their noise drawn per block
    img = refl.reshape(10, h, w)
    resample = config.resample_20m and h >= 2 and w >= 2
    ten_m = _I10 if resample else list(range(10))
    eps = rng.standard_normal((len(ten_m), n), dtype=f32)
    for i, b in enumerate(ten_m):
        np.multiply(refl[b], sigma, out=tmp)
        tmp += 12.0
        tmp *= eps[i]
        refl[b] += tmp
    if resample:
        h2, w2 = h // 2 * 2, w // 2 * 2
        eps20 = rng.standard_normal((len(_I20), (h + 1) // 2, (w + 1) // 2), dtype=f32)
        for i, b in enumerate(_I20):
            v = img[b, :h2, :w2]
            blk = v[0::2, 0::2] + v[1::2, 0::2]
            blk += v[0::2, 1::2]
            blk += v[1::2, 1::2]
            blk *= 0.25
            for dr in (0, 1):
                for dc in (0, 1):
                    v[dr::2, dc::2] = blk
            e = _upsample2(eps20[i], h, w)
            img[b] += e * (img[b] * sigma + 12.0)

    # snow (valid, winter only)
    if (doy <= 60 or doy >= 335) and rng.random() < config.snow_probability:
        sf = noise(rng, max(h, w), 3.0).ravel()
        snowy = sf > np.quantile(sf, 1 - rng.uniform(0.2, 1.0))
        idx = np.flatnonzero(snowy & (scene.snow_gain > 0))
        a = scene.snow_gain[idx]
        for b in range(10):
            r = refl[b]
            r[idx] += a * (spec["snow"][b] - r[idx])
        scl[snowy & (scene.snow_gain > 0.5)] = 11

    # thin cirrus (valid)
    if rng.random() < config.cirrus_probability:
        cf = noise(rng, config.cloud_scale, 2.5).ravel()
        thin = np.clip(cf - np.quantile(cf, 1 - rng.uniform(0.2, 0.7)), 0, 1)
        thin *= f32(rng.uniform(0.4, 1.0))
        for b in range(10):
            refl[b] += thin * spec["cirrus"][b]
        scl[(thin > 0.1) & (scl != 11)] = 10

    # clouds, shadows (the cloud field shifted away from the sun) and dark rims
    if cover > 0:
        field = noise(rng, config.cloud_scale, 3.2)
        flat = field.ravel()
        if cover >= 1:
            thr = -np.inf
        else:
            k = min(n - 1, max(0, int(round((1 - cover) * n))))
            thr = float(np.partition(flat, k)[k])
        dr, dc = _sun_offset(lat, doy, rng.uniform(800, 3000), config.resolution)
        moved = np.roll(field, (dr, dc), axis=(0, 1)).ravel()
        cloud = flat >= thr
        shadow = np.flatnonzero((moved >= thr + 0.5) & ~cloud)  # thick parts cast shadows
        dark = np.flatnonzero((moved >= thr + 0.42) & (moved < thr + 0.5) & ~cloud)
        haze = np.flatnonzero((flat >= thr - 0.1) & ~cloud)  # undetected cloud edges
        cl = np.flatnonzero(cloud)
        gain = spec["shadow_gain"] * f32(rng.uniform(0.85, 1.15))
        bright = f32(rng.uniform(0.8, 1.25))
        depth = (flat[cl] - thr) if cover < 1 else np.full(cl.size, 3.0, f32)
        alpha = np.clip(depth, 0, 1).astype(f32)
        a_cloud = 0.55 + 0.45 * alpha
        shade = 0.9 + 0.2 * alpha
        a_haze = (0.08 * (1 - (thr - flat[haze]) / 0.1)).astype(f32)
        for b in range(10):
            r = refl[b]
            r[shadow] *= gain[b]
            r[dark] *= np.sqrt(gain[b])
            target = spec["cloud"][b] * bright
            r[haze] += a_haze * (target - r[haze])
            r[cl] += a_cloud * (target * shade - r[cl])
        scl[dark] = 2
        scl[shadow] = 3
        scl[cl] = np.where(alpha >= 0.5, 9, 8)
        if bright > 1.22:  # rare saturated cores of bright clouds
            sat = cl[depth > 2.6]
            refl[:3, sat] = 65535
            scl[sat] = 1

    np.clip(refl, 1.0, 65535.0, out=refl)
    refl += 0.5
    out[...] = img.transpose(1, 2, 0)
    scl_out[...] = scl.reshape(h, w)

    # swath edge: no data
    if rng.random() < config.nodata_probability:
        edge = _swath_edge(rng, h, w)
        out[edge] = 0
        scl_out[edge] = 0
    mask_out[...] = scl_valid(scl_out)


def _render_s1(scene: _Scene, config: SimConfig, orbit: int, stream: int, t: int, doy: int,
               moisture: float, out: np.ndarray) -> None:
    """Write one S1 date into out (H, W, 2) int16 [VV, VH] code."""
    rng = _rng(config.seed, stream, t)
    h, w = config.height, config.width
    n = h * w
    g, d, _ = _pixel_cover(scene, doy)
    bare = (1.0 - g) * np.float32(moisture)
    db = scene.s1_base[orbit] + scene.s1_green * g[:, None]
    db += scene.s1_dry * d[:, None]
    db += scene.s1_moist * bare[:, None]
    wind = float(min(rng.exponential(2.0), 9.0))
    db[scene.water] += np.array([wind, 0.4 * wind], dtype=np.float32)
    enl = float(config.enl)
    speckle = rng.standard_gamma(enl, (n, 2), dtype=np.float32)
    speckle *= np.float32(1.0 / enl)
    np.maximum(speckle, np.float32(1e-6), out=speckle)
    db += 10.0 * np.log10(speckle)
    # no floor: like real data, values under -25 dB reach the code's clip at 0 (SPEC 1)
    if rng.random() < config.nodata_probability:
        db[_swath_edge(rng, h, w).ravel()] = np.nan
    out.reshape(n, 2)[...] = s1_db_to_int16(db)


# --- public API -------------------------------------------------------------------------------
def simulate_arrays(config: SimConfig | None = None, workers: int | None = None
                    ) -> dict[str, np.ndarray]:
    """Simulate one tile in memory.

    Returns the `write_tile` arrays (``bands`` (T2, H, W, 10) uint16, ``masks`` (T2, H, W)
    uint8, ``doys``, ``sar_ascending`` (Ta, H, W, 2) int16, ``sar_ascending_doy``,
    ``sar_descending``, ``sar_descending_doy``, ``roi`` (H, W) uint8) plus ``scl``
    (T2, H, W) uint8, ``labels`` (H, W) uint8 (see `CLASSES`) and ``fields`` (H, W) int32
    (parcel ids, e.g. for spatial hold-out). All of it is SIMULATED. The CRS and transform
    are `tile_geometry(config)`. Dates are rendered by `workers` threads (default: up to 4
    CPUs); the result does not depend on it.
    """
    config = config or SimConfig()
    h, w = config.height, config.width
    scene = _build_scene(config)
    noise = _Fields(h, w)
    lat = _latitude(config)
    n_days = config.n_days

    drng = _rng(config.seed, _DATES)
    moisture = _moisture(drng, n_days)
    s2_doys, _, _ = _acquisition_doys(drng, config.n_s2_dates, n_days, drop=0.08, jitter=1)
    asc_doys, step, off = _acquisition_doys(drng, config.n_s1_asc, n_days, drop=0.08, jitter=0)
    desc_off = off + step / 2 + float(drng.uniform(-1, 1))
    desc_doys, _, _ = _acquisition_doys(drng, config.n_s1_desc, n_days, drop=0.08, jitter=0,
                                        offset=desc_off if config.n_s1_asc else None)
    covers = _cloud_covers(drng, s2_doys, config.cloud_fraction, config.cloud_seasonality)

    bands = np.empty((len(s2_doys), h, w, 10), dtype=np.uint16)
    scl = np.empty((len(s2_doys), h, w), dtype=np.uint8)
    masks = np.empty((len(s2_doys), h, w), dtype=np.uint8)
    sar = {"ascending": np.empty((len(asc_doys), h, w, 2), dtype=np.int16),
           "descending": np.empty((len(desc_doys), h, w, 2), dtype=np.int16)}
    jobs: list[Any] = []
    for t, doy in enumerate(s2_doys):
        jobs.append((_render_s2, scene, config, noise, t, int(doy), float(covers[t]),
                     float(moisture[doy - 1]), lat, bands[t], scl[t], masks[t]))
    for orbit, (name, doys, stream) in enumerate((("ascending", asc_doys, _S1_ASC),
                                                  ("descending", desc_doys, _S1_DESC))):
        for t, doy in enumerate(doys):
            jobs.append((_render_s1, scene, config, orbit, stream, t, int(doy),
                         float(moisture[doy - 1]), sar[name][t]))
    for key in {(config.cloud_scale, 3.2), (config.cloud_scale, 2.5), (max(h, w), 3.0)}:
        noise.filter(*key)  # fill the cache before threads share it
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for f in [pool.submit(job[0], *job[1:]) for job in jobs]:
                f.result()
    else:
        for job in jobs:
            job[0](*job[1:])
    return {
        "bands": bands, "masks": masks, "scl": scl, "doys": s2_doys.astype(np.int16),
        "sar_ascending": sar["ascending"], "sar_ascending_doy": asc_doys.astype(np.int16),
        "sar_descending": sar["descending"], "sar_descending_doy": desc_doys.astype(np.int16),
        "roi": scene.roi, "labels": scene.labels, "fields": scene.fields,
    }


def _sidecar(config: SimConfig) -> dict[str, Any]:
    return {
        "simulated": True,
        "generator": "tessera.simulate",
        "note": "SIMULATED data: synthetic scene, not satellite observations.",
        "seed": config.seed,
        "config": config.to_json(),
        "classes": {str(k): v for k, v in CLASSES.items()},
        "s2_band_order": list(S2_BANDS),
        "scl_names": {str(k): v for k, v in SCL_NAMES.items()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def simulate_tile(out_dir: str | os.PathLike, config: SimConfig | None = None,
                  workers: int | None = None) -> Path:
    """Simulate a tile and write it atomically as a tile folder at `out_dir`.

    Besides the published layout it holds ``labels.npy`` (and ``labels.tiff`` when
    ``config.write_labels_tiff``), ``fields.npy``, ``scl.npy`` (when ``config.write_scl``) and
    ``simulation.json`` (``"simulated": true``, seed, config, class table). An existing folder
    is replaced.
    """
    from tessera.dpixel import replace_dir, write_tile

    config = config or SimConfig()
    arrays = simulate_arrays(config, workers=workers)
    crs, transform = tile_geometry(config)
    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.sim-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    extra = {"labels": arrays["labels"], "fields": arrays["fields"]}
    if config.write_scl:
        extra["scl"] = arrays["scl"]
    try:
        write_tile(staging, bands=arrays["bands"], masks=arrays["masks"], doys=arrays["doys"],
                   sar_ascending=arrays["sar_ascending"],
                   sar_ascending_doy=arrays["sar_ascending_doy"],
                   sar_descending=arrays["sar_descending"],
                   sar_descending_doy=arrays["sar_descending_doy"],
                   roi=arrays["roi"], crs=crs, transform=transform, extra=extra)
        if config.write_labels_tiff:
            _write_labels_tiff(staging / "labels.tiff", arrays["labels"], crs, transform)
        (staging / "simulation.json").write_text(json.dumps(_sidecar(config), indent=2))
        replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _write_labels_tiff(path: Path, labels: np.ndarray, crs: str, transform: Any) -> None:
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", height=labels.shape[0], width=labels.shape[1],
                       count=1, dtype="uint8", crs=crs, transform=transform, nodata=0,
                       compress="deflate") as dst:
        dst.write(labels, 1)
        dst.update_tags(simulated="true", **{f"class_{k}": v for k, v in CLASSES.items()})


#: Column order of `simulate_table`.
TABLE_COLUMNS: tuple[str, ...] = (
    "sample_id", "row", "col", "x", "y", "label", "class_id", "sensor", "orbit", "date", "doy",
    "SCL", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "VV", "VH",
)


def simulate_table(n_samples: int, config: SimConfig | None = None) -> pd.DataFrame:
    """A long-form point table of SIMULATED observations of `n_samples` random ROI pixels.

    The scene of `config` (default: a 128 x 128 tile, seed 0) is simulated with
    `simulate_arrays`, so the values equal the tile's at the sampled pixels. One row per
    (sample_id, date) for S2 and per (sample_id, date, orbit) for S1, sorted by sample, date,
    sensor. Columns (`TABLE_COLUMNS`): ``sample_id``, ``row``/``col`` (pixel), ``x``/``y``
    (pixel centre in the tile CRS), ``label`` (class name), ``class_id``, ``sensor`` ("S2"
    or "S1"), ``orbit`` ("ascending" / "descending"; missing on S2 rows), ``date``
    (datetime64 in ``config.year``), ``doy``, ``SCL`` (nullable integer; missing on S1 rows),
    the S2 bands B02 ... B12 (reflectance x 10 000, integer values in float32; NaN on S1
    rows) and ``VV``/``VH`` (dB, float32; NaN on S2 rows). Cloudy S2 rows are kept (filter on
    ``SCL``); rows where the sensor had no data at the pixel (SCL 0, S1 code 0) are left out.
    """
    import pandas as pd

    config = config or SimConfig(height=128, width=128)
    arrays = simulate_arrays(config)
    h, w = config.height, config.width
    inside = np.flatnonzero(arrays["roi"].ravel())
    if n_samples < 0 or n_samples > inside.size:
        raise ValueError(f"simulate_table: n_samples={n_samples}, but the simulated "
                         f"{h} x {w} scene has {inside.size} ROI pixels; use a larger config")
    rng = _rng(config.seed, _TABLE)
    pix = rng.choice(inside, n_samples, replace=False)
    rows, cols = pix // w, pix % w
    _, transform = tile_geometry(config)
    xs = transform.c + (cols + 0.5) * transform.a
    ys = transform.f + (rows + 0.5) * transform.e
    class_id = arrays["labels"][rows, cols]
    start = np.datetime64(f"{config.year}-01-01", "D")
    f32 = np.float32
    parts: list[pd.DataFrame] = []

    def frame(t: np.ndarray, s: np.ndarray, doys: np.ndarray, sensor: str,
              orbit: str | None) -> dict[str, Any]:
        return {
            "sample_id": s.astype(np.int64), "row": rows[s].astype(np.int32),
            "col": cols[s].astype(np.int32), "x": xs[s], "y": ys[s],
            "label": np.array([CLASSES[int(c)] for c in class_id[s]], dtype=object),
            "class_id": class_id[s].astype(np.int16), "sensor": sensor,
            "orbit": orbit, "date": (start + (doys[t].astype(np.int64) - 1)).astype(
                "datetime64[ns]"), "doy": doys[t].astype(np.int16),
        }

    # S2 rows
    doys = arrays["doys"]
    vals = arrays["bands"][:, rows, cols, :]  # (T2, n, 10)
    scl = arrays["scl"][:, rows, cols]
    t, s = np.nonzero(scl != 0)
    d2 = frame(t, s, doys, "S2", None)
    d2["SCL"] = pd.array(scl[t, s], dtype="UInt8")
    for i, band in enumerate(S2_BANDS):
        d2[band] = vals[t, s, i].astype(f32)
    d2["VV"] = d2["VH"] = np.full(t.size, np.nan, f32)
    parts.append(pd.DataFrame(d2))
    # S1 rows
    for orbit in ("ascending", "descending"):
        sar = arrays[f"sar_{orbit}"][:, rows, cols, :]  # (T, n, 2)
        t, s = np.nonzero((sar[..., 0] != 0) | (sar[..., 1] != 0))
        d1 = frame(t, s, arrays[f"sar_{orbit}_doy"], "S1", orbit)
        d1["SCL"] = pd.array([None] * t.size, dtype="UInt8")
        for band in S2_BANDS:
            d1[band] = np.full(t.size, np.nan, f32)
        db = s1_int16_to_db(sar[t, s])
        d1["VV"], d1["VH"] = db[:, 0], db[:, 1]
        parts.append(pd.DataFrame(d1))
    df = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    df["orbit"] = df["orbit"].astype(object).where(df["sensor"] == "S1", None)
    df = df.sort_values(["sample_id", "date", "sensor", "orbit"], kind="stable",
                        na_position="first", ignore_index=True)
    return df[list(TABLE_COLUMNS)]


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
