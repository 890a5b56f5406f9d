"""The simulated land-cover classes: their labels, crop calendars (`Phenology`), spectra and
Sentinel-1 response, and the mean cover fractions they imply.

Why a module of its own: this is the "truth" of the simulator, the table a reader checks
embeddings and task heads against; the scene and the sensors only look it up.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

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
SPECTRA_F32: dict[str, np.ndarray] = {k: np.array(v, dtype=np.float32) for k, v in _SPECTRA.items()}
#: Green-vegetation spectrum per class where it differs from "green".
GREEN_BY_CLASS: dict[str, list[float]] = {
    "maize": [280, 230, 560, 4300, 4450, 980, 2950, 3900, 1950, 880],
    "sugar_beet": [290, 240, 640, 5000, 5100, 1100, 3400, 4500, 1950, 850],
    "forest": [230, 210, 450, 3300, 3450, 720, 2300, 3000, 1450, 620],
    "rapeseed": [320, 260, 650, 4700, 4800, 1100, 3150, 4150, 2050, 950],
}
#: S1 model per class, dB: VV, VH at zero cover; gain per unit green cover; per unit dry cover;
#: soil-moisture sensitivity (scaled by the bare part of the pixel).
S1_MODEL: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float], float]] = {
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
N_CLASS_IDS = max(CLASSES) + 1


# --- phenology --------------------------------------------------------------------------------
def _sig(x: np.ndarray | float) -> np.ndarray:
    """Overflow-free logistic."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float32)))


_FAR = 1.0e4  # "never" for optional dates


def field_params(names: list[str], rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    """Per-field phenology parameter arrays; with `rng`, jittered (a common sowing shift per
    field plus independent shifts of each date, and a scaled peak cover)."""
    n = len(names)
    ph = [PHENOLOGY[c] for c in names]

    def col(fn: Callable[[Phenology], float]) -> np.ndarray:
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


def field_cover(p: dict[str, np.ndarray], t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    p = field_params([class_name], None)
    out = np.array([np.concatenate(field_cover(p, float(t))) for t in np.asarray(doys)],
                   dtype=np.float32).reshape(-1, 3)
    return {"green": out[:, 0], "dry": out[:, 1], "flower": out[:, 2]}


def peak_doy(class_name: str) -> int:
    """Day of year of a class's maximum mean green cover."""
    days = np.arange(1, 366)
    return int(days[np.argmax(cover_fractions(class_name, days)["green"])])
