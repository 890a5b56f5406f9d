"""Rendering one date of a simulated tile: Sentinel-2 reflectance with its SCL classes and
masks (`render_s2`: surface mix, noise, 20 m blocks, snow, cirrus, clouds and shadows, swath
edges) and Sentinel-1 backscatter (`render_s1`: class response, moisture, wind, speckle).

Why a module of its own: each date draws from its own stream and writes into its slice of the
output, so dates can be rendered by threads in any order with the same result.
"""

from __future__ import annotations

import math

import numpy as np

from tessera.bands import S2_BANDS, s1_db_to_int16, scl_valid
from tessera.simulate.classes import SPECTRA_F32, field_cover
from tessera.simulate.config import S2_STREAM, SimConfig, stream_rng
from tessera.simulate.dates import sun_offset
from tessera.simulate.scene import RandomFields, Scene

_I20 = [S2_BANDS.index(b) for b in ("B8A", "B05", "B06", "B07", "B11", "B12")]
_I10 = [S2_BANDS.index(b) for b in ("B04", "B02", "B03", "B08")]
_IB02, _IB04, _IB08 = S2_BANDS.index("B02"), S2_BANDS.index("B04"), S2_BANDS.index("B08")


def _swath_edge(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A straight, slightly slanted swath edge: True on the no-data side (10-60 % of the tile)."""
    angle = math.radians(rng.uniform(8, 16)) * rng.choice([-1, 1])
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    u = cols * math.cos(angle) + rows * math.sin(angle)
    if rng.random() < 0.5:
        u = -u
    return u < np.quantile(u, rng.uniform(0.1, 0.6))


# --- per-date rendering -----------------------------------------------------------------------
def _pixel_cover(scene: Scene, doy: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gf, df, ff = field_cover(scene.pheno, float(doy))
    g = gf[scene.fid] * scene.texture
    np.clip(g, 0.0, 0.99, out=g)
    return g, df[scene.fid], ff[scene.fid]


def _upsample2(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour 2 x 2 upsampling of (h2, w2) to (h, w)."""
    return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)[:h, :w]


def render_s2(scene: Scene, config: SimConfig, noise: RandomFields, t: int, doy: int,
               cover: float, moisture: float, lat: float, out: np.ndarray,
               scl_out: np.ndarray, mask_out: np.ndarray) -> None:
    """Write date `t` into out (H, W, 10) uint16, scl_out and mask_out (H, W) uint8.

    Works band-major, (10, N) float32, so that every operation runs on one contiguous band.
    """
    rng = stream_rng(config.seed, S2_STREAM, t)
    h, w = config.height, config.width
    n = h * w
    f32 = np.float32
    spec = SPECTRA_F32
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
        dr, dc = sun_offset(lat, doy, rng.uniform(800, 3000), config.resolution)
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


def render_s1(scene: Scene, config: SimConfig, orbit: int, stream: int, t: int, doy: int,
               moisture: float, out: np.ndarray) -> None:
    """Write one S1 date into out (H, W, 2) int16 [VV, VH] code."""
    rng = stream_rng(config.seed, stream, t)
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
