"""The static scene of a simulated tile: parcels with warped borders, their classes (forest on a
smooth field, a compact village, a river and lakes), per-pixel statics and the region of
interest (`build_scene`), and the smooth random fields it is drawn from (`RandomFields`).

Why a module of its own: everything here is drawn once per tile from the scene stream; the
per-date renderers only read the resulting `Scene`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tessera.simulate.classes import (CLASS_IDS, DEFAULT_CLASS_WEIGHTS, GREEN_BY_CLASS,
                                      N_CLASS_IDS, S1_MODEL, SPECTRA_F32, field_params)
from tessera.simulate.config import SCENE_STREAM, SimConfig, stream_rng

class RandomFields:
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


# --- the static scene -------------------------------------------------------------------------
@dataclasses.dataclass
class Scene:
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


def build_scene(config: SimConfig) -> Scene:
    rng = stream_rng(config.seed, SCENE_STREAM)
    h, w = config.height, config.width
    n = h * w
    noise = RandomFields(h, w)
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

    pheno = field_params(field_class, rng)
    fid = fields.ravel()
    cls_pix = labels.ravel()
    is_cls = {name: cls_pix == cid for name, cid in CLASS_IDS.items()}

    # S2 statics
    texture = 1.0 + 0.07 * noise(rng, 6, 2.0).ravel() + 0.03 * rng.standard_normal(n, dtype=f32)
    soil_gain = rng.uniform(0.8, 1.2, n_fields).astype(f32)[fid] \
        * (1 + 0.05 * noise(rng, 10, 2.0).ravel())
    spec = SPECTRA_F32
    base = np.empty((n, 10), dtype=f32)
    np.multiply(spec["soil"][None, :], soil_gain[:, None], out=base)
    base[is_cls["forest"]] *= 0.6
    turbidity = rng.uniform(0.85, 1.2)
    base[is_cls["water"]] = spec["water"] * turbidity
    urb = is_cls["urban"]
    base[urb] = spec["urban"] * np.clip(1 + 0.25 * noise(rng, 2, 1.0).ravel()[urb, None], 0.4, 2)
    veg_table = np.tile(spec["green"], (N_CLASS_IDS, 1))
    for name, v in GREEN_BY_CLASS.items():
        veg_table[CLASS_IDS[name]] = v
    veg = veg_table[cls_pix]
    moist = np.where(is_cls["water"] | urb, 0.0, 0.18).astype(f32)
    unclassified = (urb & (rng.random(n) < 0.4)) | (rng.random(n) < 0.003)
    snow_gain = np.where(is_cls["water"], 0.0, np.where(is_cls["forest"], 0.45, 0.92)).astype(f32)

    # S1 statics
    tab = np.zeros((4, N_CLASS_IDS, 2), dtype=f32)
    msens = np.zeros(N_CLASS_IDS, dtype=f32)
    for name, (b0, gain, dry, ms) in S1_MODEL.items():
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

    return Scene(labels=labels, fields=fields, field_class=field_class, pheno=pheno, roi=roi,
                  fid=fid, texture=texture.astype(f32), base=np.ascontiguousarray(base.T),
                  veg=np.ascontiguousarray(veg.T, dtype=f32),
                  moist=moist, water=is_cls["water"], unclassified=unclassified,
                  snow_gain=snow_gain, s1_base=s1_base,
                  s1_green=tab[1][cls_pix], s1_dry=tab[2][cls_pix],
                  s1_moist=s1_moist.astype(f32))
