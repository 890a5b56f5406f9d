"""Colour balance of a PCA picture (`tessera visualize --balance`).

- "percentile": each PCA component's 2-98 % range (on the fit's sample) stretched to 0..255.
- "histogram": each component's histogram equalised on the fit's sample (global).
- "adaptive": the percentile stretch, then contrast-limited adaptive histogram equalisation
  (CLAHE) of each channel of the finished picture: the picture is cut into a grid of tiles, each
  tile's histogram is clipped at `clip` times its mean bin count (the excess spread evenly over
  all bins) and equalised, and every pixel's level is interpolated bilinearly between the
  mappings of the four nearest tile centres, so no tile edges show.

The first two are properties of the fit (`PcaRgb.stretch`): a colour is a function of the
embedding vector alone, the same in every tile and every call. "adaptive" is local: a vector's
colour depends on its neighbourhood in this picture, which brings out detail in flat areas, but
the same vector can get different colours in two pictures (or two tiles of one). Transparent
pixels (no data) take no part and stay transparent. Pure numpy and deterministic.
"""

from __future__ import annotations

import numpy as np

from tessera.errors import VizError

BALANCES = ("percentile", "histogram", "adaptive")
ADAPTIVE_TILES = 8     # tiles along the longer side of the picture
ADAPTIVE_CLIP = 3.0    # histogram clip: this many times the mean count per level
LEVELS = 256
_STRIP = 512           # picture rows interpolated at once (bounds the temporaries)


def check_balance(balance: str) -> str:
    if balance not in BALANCES:
        raise VizError(f"balance {balance!r}: expected one of {', '.join(BALANCES)}")
    return balance


def stretch_of(balance: str) -> str:
    """The stretch a new PCA fit gets for `balance` (adaptive starts from the percentile one)."""
    return "histogram" if check_balance(balance) == "histogram" else "percentile"


def _edges(n: int, k: int) -> np.ndarray:
    return np.linspace(0, n, k + 1).round().astype(np.int64)


def _lut(hist: np.ndarray, clip: float) -> np.ndarray:
    """(T, 256) counts -> (T, 256) float32 equalising maps to 0..255 (clipped histograms;
    from the lowest level present to the highest); tiles without pixels get the identity."""
    n = hist.sum(axis=1, keepdims=True).astype(np.float64)
    limit = np.maximum(clip * n / LEVELS, 1.0)
    clipped = np.minimum(hist, limit)
    clipped += (hist - clipped).sum(axis=1, keepdims=True) / LEVELS
    cdf = np.cumsum(clipped, axis=1)
    total = cdf[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        # levels below the first used one map to 0, the last used one to 255
        first = np.take_along_axis(cdf, np.argmax(hist > 0, axis=1)[:, None], axis=1)
        lut = (cdf - first) / np.where(total > first, total - first, 1.0) * 255.0
    identity = np.broadcast_to(np.arange(LEVELS, dtype=np.float64), lut.shape)
    lut = np.where(n > 0, np.clip(lut, 0.0, 255.0), identity)
    return lut.astype(np.float32)


def _axis(n: int, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel along one axis: (lower tile, upper tile, weight of the upper) for bilinear
    interpolation between tile centres (clamped at the picture's edges)."""
    centres = (edges[:-1] + edges[1:]) / 2.0
    pos = np.arange(n) + 0.5
    hi = np.clip(np.searchsorted(centres, pos, side="right"), 1, max(len(centres) - 1, 1))
    lo = hi - 1
    if len(centres) == 1:
        return np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.float32)
    w = np.clip((pos - centres[lo]) / (centres[hi] - centres[lo]), 0.0, 1.0)
    return lo.astype(np.int64), hi.astype(np.int64), w.astype(np.float32)


def equalize_adaptive(rgba: np.ndarray, tiles: int = ADAPTIVE_TILES,
                      clip: float = ADAPTIVE_CLIP) -> np.ndarray:
    """CLAHE of the R, G and B channels of a uint8 (H, W, 4) RGBA picture over its opaque
    pixels (alpha > 0); alpha and transparent pixels are left as they are. `tiles` along the
    longer side (the shorter side gets as many as keep the tiles about square), histograms
    clipped at `clip` times the mean count per level (lower: gentler). Returns a new array."""
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise VizError(f"adaptive balance: expected a uint8 (H, W, 4) picture, got {rgba.dtype} "
                       f"{rgba.shape}")
    if int(tiles) < 1 or not float(clip) > 0:
        raise VizError(f"adaptive balance: tiles {tiles} and clip {clip}: expected >= 1 and > 0")
    h, w, _ = rgba.shape
    out = rgba.copy()
    opaque = rgba[..., 3] > 0
    if not opaque.any():
        return out
    side = max(h, w)
    ty = max(1, min(h, round(int(tiles) * h / side)))
    tx = max(1, min(w, round(int(tiles) * w / side)))
    er, ec = _edges(h, ty), _edges(w, tx)
    tile_r = np.searchsorted(er[1:], np.arange(h), side="right")
    tile_c = np.searchsorted(ec[1:], np.arange(w), side="right")
    r0, r1, wr = _axis(h, er)
    c0, c1, wc = _axis(w, ec)
    for ch in range(3):
        v = rgba[..., ch]
        hist = np.zeros((ty * tx, LEVELS), np.int64)
        for s in range(0, h, _STRIP):
            rows = slice(s, min(h, s + _STRIP))
            key = (tile_r[rows, None] * tx + tile_c[None, :]) * LEVELS + v[rows]
            hist += np.bincount(key[opaque[rows]], minlength=ty * tx * LEVELS
                                ).reshape(ty * tx, LEVELS)
        lut = _lut(hist, float(clip))
        empty = hist.sum(axis=1) == 0
        if empty.any():  # tiles without data (sea): the whole picture's map, for their neighbours
            lut[empty] = _lut(hist.sum(axis=0, keepdims=True), float(clip))[0]
        lut = lut.reshape(ty, tx, LEVELS)
        for s in range(0, h, _STRIP):
            rows = slice(s, min(h, s + _STRIP))
            vv = v[rows].astype(np.int64)
            a, b = r0[rows, None], r1[rows, None]
            fy = wr[rows, None]
            top = lut[a, c0[None, :], vv] * (1 - wc) + lut[a, c1[None, :], vv] * wc
            bottom = lut[b, c0[None, :], vv] * (1 - wc) + lut[b, c1[None, :], vv] * wc
            val = np.rint(top * (1 - fy) + bottom * fy).astype(np.uint8)
            m = opaque[rows]
            out[rows, :, ch][m] = val[m]
    return out


__all__ = ["ADAPTIVE_CLIP", "ADAPTIVE_TILES", "BALANCES", "check_balance", "equalize_adaptive",
           "stretch_of"]
