"""Training views (SPEC section 4): sparse random temporal sampling of each d-pixel.

A pixel's valid observations are kept as ragged arrays (`Ragged`: only valid S2 dates, and the
valid S1 dates of both orbits pooled and sorted by day of year), which is what shards store.
A view draws `steps` (40) S2 and `steps` S1 observations uniformly WITH replacement from them,
sorted by position; two views of the same pixel are drawn independently. Random numbers come from
a numpy Generator the caller seeds from (seed, epoch, batch), so a batch's views do not depend on
the number of DataLoader workers or on whether training was resumed. Under DDP a rank holds a
slice of the global batch (`part`): it skips the other rows' numbers of the same stream instead of
drawing its own, so a sample's views do not depend on the number of ranks either.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from tessera.dpixel import DPixelBatch
from tessera.errors import InputError

VIEW_STEPS = 40
MIN_VALID = 10


@dataclasses.dataclass
class Ragged:
    """Valid observations of N pixels, concatenated: pixel i owns rows off[i]:off[i + 1]."""

    s2: np.ndarray  # (M2, 10) uint16, reflectance x 10 000
    s2_doy: np.ndarray  # (M2,) int16
    s2_off: np.ndarray  # (N + 1,) int64
    s1: np.ndarray  # (M1, 2) int16 code [VV, VH], both orbits pooled
    s1_doy: np.ndarray  # (M1,) int16
    s1_off: np.ndarray  # (N + 1,) int64

    def __len__(self) -> int:
        return len(self.s2_off) - 1

    @property
    def s2_counts(self) -> np.ndarray:
        return np.diff(self.s2_off)

    @property
    def s1_counts(self) -> np.ndarray:
        return np.diff(self.s1_off)

    def take(self, idx: np.ndarray) -> "Ragged":
        """The pixels `idx`, in that order (works on memory-mapped arrays: reads only them)."""
        s2, s2_doy, s2_off = _take(self.s2_off, idx, self.s2, self.s2_doy)
        s1, s1_doy, s1_off = _take(self.s1_off, idx, self.s1, self.s1_doy)
        return Ragged(s2=s2, s2_doy=s2_doy, s2_off=s2_off, s1=s1, s1_doy=s1_doy, s1_off=s1_off)

    @staticmethod
    def concat(parts: list["Ragged"]) -> "Ragged":
        def offsets(name: str) -> np.ndarray:
            counts = [np.diff(getattr(p, name)) for p in parts]
            return np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)

        def cat(name: str, empty: np.ndarray) -> np.ndarray:
            arrays = [getattr(p, name) for p in parts]
            return np.concatenate(arrays) if arrays else empty

        return Ragged(s2=cat("s2", np.zeros((0, 10), np.uint16)),
                      s2_doy=cat("s2_doy", np.zeros(0, np.int16)), s2_off=offsets("s2_off"),
                      s1=cat("s1", np.zeros((0, 2), np.int16)),
                      s1_doy=cat("s1_doy", np.zeros(0, np.int16)), s1_off=offsets("s1_off"))


def _take(off: np.ndarray, idx: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    idx = np.asarray(idx, np.int64)
    start, stop = off[idx], off[idx + 1]
    counts = stop - start
    new_off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = np.repeat(start - new_off[:-1], counts) + np.arange(new_off[-1])
    return (*(np.asarray(a[rows]) for a in arrays), new_off)


def ragged_from_batch(batch: DPixelBatch, min_s2: int = MIN_VALID, min_s1: int = MIN_VALID
                      ) -> tuple[Ragged, np.ndarray]:
    """Valid observations of the pixels with >= min_s2 valid S2 and >= min_s1 valid S1 dates.

    Returns (Ragged of the kept pixels, their indices in `batch`). S1 orbits are pooled and
    sorted by day of year (stable: ascending before descending on the same day).
    """
    s2_ok = batch.s2_valid & batch.s2_present
    asc_ok, desc_ok = batch.s1_asc_valid, batch.s1_desc_valid
    keep = np.flatnonzero((s2_ok.sum(1) >= min_s2)
                          & (asc_ok.sum(1) + desc_ok.sum(1) >= min_s1))
    s2_ok = s2_ok[keep]
    rows, cols = np.nonzero(s2_ok)  # row-major: pixel by pixel, in date order
    s2 = np.asarray(batch.s2[keep][rows, cols], np.uint16)
    s2_doy = np.asarray(batch.s2_doy[keep][rows, cols], np.int16)
    s2_off = np.concatenate([[0], np.cumsum(s2_ok.sum(1))]).astype(np.int64)

    s1_vals = np.concatenate([batch.s1_asc[keep], batch.s1_desc[keep]], axis=1)
    s1_doys = np.concatenate([np.asarray(batch.s1_asc_doy[keep], np.int16),
                              np.asarray(batch.s1_desc_doy[keep], np.int16)], axis=1)
    s1_ok = np.concatenate([asc_ok[keep], desc_ok[keep]], axis=1)
    order = np.argsort(np.where(s1_ok, s1_doys, 10_000), axis=1, kind="stable")
    s1_vals = np.take_along_axis(s1_vals, order[:, :, None], axis=1)
    s1_doys = np.take_along_axis(s1_doys, order, axis=1)
    s1_ok = np.take_along_axis(s1_ok, order, axis=1)
    rows, cols = np.nonzero(s1_ok)
    s1 = np.asarray(s1_vals[rows, cols], np.int16)
    s1_doy = np.asarray(s1_doys[rows, cols], np.int16)
    s1_off = np.concatenate([[0], np.cumsum(s1_ok.sum(1))]).astype(np.int64)
    return Ragged(s2=s2, s2_doy=s2_doy, s2_off=s2_off, s1=s1, s1_doy=s1_doy, s1_off=s1_off), keep


@dataclasses.dataclass
class View:
    """One view of B pixels: fixed-length, fully valid sequences (no padding mask)."""

    s2: torch.Tensor  # (B, steps, 10) float32, raw reflectance x 10 000
    s2_doy: torch.Tensor  # (B, steps) float32
    s1: torch.Tensor  # (B, steps, 2) float32, int16 code
    s1_doy: torch.Tensor  # (B, steps) float32

    def to(self, device: torch.device | str) -> "View":
        return View(*(t.to(device, non_blocking=True) for t in dataclasses.astuple(self)))

    def inputs(self) -> tuple[torch.Tensor, ...]:
        """Positional arguments of TesseraModel.forward."""
        return self.s2, self.s2_doy, self.s1, self.s1_doy

    def mix(self, other: "View", alpha: float, idx: torch.Tensor) -> "View":
        """alpha * self + (1 - alpha) * other[idx], on every input (values and days of year, as
        the published inputs carry the day of year as a channel of x)."""
        return View(*(alpha * a + (1.0 - alpha) * b[idx]
                      for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


def _uniform(rng: np.random.Generator, n: int, steps: int, part: tuple[int, int] | None
             ) -> np.ndarray:
    """(n, steps) uniforms: rows offset..offset + n of the (total, steps) block that
    `rng.random((total, steps))` would draw, with `part` = (offset, total), leaving `rng` where
    that full draw would; the whole block without `part`.

    Why not draw the block and slice it: each rank would then generate the numbers of every rank
    (world x the work). A PCG64 float64 consumes exactly one 64-bit output, so jumping over the
    other rows (`advance`, O(log n)) lands on the same numbers."""
    if part is None:
        return rng.random((n, steps))
    offset, total = part
    if not 0 <= offset <= offset + n <= total:
        raise ValueError(f"views: rows {offset}..{offset + n} outside a batch of {total}")
    bits = rng.bit_generator
    if not isinstance(bits, np.random.PCG64):
        raise TypeError(f"views: drawing part of a batch needs a PCG64 generator, not "
                        f"{type(bits).__name__}")
    bits.advance(offset * steps)
    u = rng.random((n, steps))
    bits.advance((total - offset - n) * steps)
    return u


def _draw(off: np.ndarray, values: np.ndarray, doy: np.ndarray, steps: int,
          rng: np.random.Generator, sensor: str, part: tuple[int, int] | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    counts = np.diff(off)
    if (counts < 1).any():
        raise InputError(f"views: a pixel has no valid {sensor} observation; filter pixels first "
                         "(ragged_from_batch keeps only pixels with enough valid dates)")
    u = _uniform(rng, len(counts), steps, part)
    pick = np.sort(np.minimum((u * counts[:, None]).astype(np.int64), counts[:, None] - 1), 1)
    rows = off[:-1, None] + pick
    return values[rows], doy[rows]


def draw_view(r: Ragged, rng: np.random.Generator, steps: int = VIEW_STEPS,
              part: tuple[int, int] | None = None) -> View:
    """`steps` S2 and `steps` S1 observations per pixel, uniformly with replacement, sorted.

    `part` = (offset, total): `r` holds rows offset.. of a batch of `total` pixels, and gets the
    views a draw for the whole batch would give those rows (the rng ends where it would)."""
    s2, s2_doy = _draw(r.s2_off, r.s2, r.s2_doy, steps, rng, "S2", part)
    s1, s1_doy = _draw(r.s1_off, r.s1, r.s1_doy, steps, rng, "S1", part)
    f = torch.from_numpy
    return View(s2=f(s2.astype(np.float32)), s2_doy=f(s2_doy.astype(np.float32)),
                s1=f(s1.astype(np.float32)), s1_doy=f(s1_doy.astype(np.float32)))


def draw_views(r: Ragged, rng: np.random.Generator, steps: int = VIEW_STEPS,
               part: tuple[int, int] | None = None) -> tuple[View, View]:
    """Two independent views of the same pixels (`part`: see `draw_view`)."""
    return draw_view(r, rng, steps, part), draw_view(r, rng, steps, part)
