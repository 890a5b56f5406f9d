"""When the simulated sensors look and under what sky: acquisition days, daily soil moisture,
per-date cloud cover and the sun's shadow offset.

Why a module of its own: these are per-date draws of the dates stream, made once per tile before
any pixel is rendered; the renderers receive their results as plain numbers.
"""

from __future__ import annotations

import math

import numpy as np

from tessera.simulate.config import SimConfig

def acquisition_doys(rng: np.random.Generator, n: int, n_days: int, drop: float,
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


def soil_moisture(rng: np.random.Generator, n_days: int) -> np.ndarray:
    """Daily top-soil moisture index 0-1 (index = doy - 1): rain events, exponential drying."""
    season = 0.5 + 0.25 * np.cos(2 * np.pi * (np.arange(n_days) - 15) / 365.0)
    rain = (rng.random(n_days) < season * 0.5) * rng.exponential(1.0, n_days)
    m = np.zeros(n_days, dtype=np.float32)
    level = 0.5
    for i in range(n_days):
        level = level * 0.85 + 0.35 * rain[i]
        m[i] = level
    return np.clip(m / max(float(np.quantile(m, 0.98)), 1e-6), 0, 1).astype(np.float32)


def cloud_covers(rng: np.random.Generator, doys: np.ndarray, fraction: float,
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


def sun_offset(lat_deg: float, doy: int, height_m: float, res: float) -> tuple[int, int]:
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


def tile_latitude(config: SimConfig) -> float:
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
