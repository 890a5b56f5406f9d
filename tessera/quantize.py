"""Per-pixel symmetric int8 quantisation of embeddings (SPEC section 5).

s = max_d |e_d| / 127, q = clamp(round(e / s), -128, 127). A NaN scale marks no data.
132 bytes per pixel (128 int8 + one float32) instead of 512.
"""

from __future__ import annotations

import numpy as np


def quantize(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., D) float -> (q int8 (..., D), s float32 (...)). All-zero vectors get s = 0, q = 0."""
    e = np.asarray(e, dtype=np.float32)
    s = np.abs(e).max(axis=-1) / np.float32(127.0)
    safe = np.where(s > 0, s, np.float32(1.0))
    q = np.clip(np.rint(e / safe[..., None]), -128, 127).astype(np.int8)
    return q, s.astype(np.float32)


def dequantize(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """q * s as float32; pixels with a NaN scale come back as NaN vectors."""
    return np.asarray(q, dtype=np.float32) * np.asarray(s, dtype=np.float32)[..., None]

