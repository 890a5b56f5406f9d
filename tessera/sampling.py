"""Temporal sampling: which observations of each d-pixel go into the encoder.

Two schemes for the v1.0-family models (SPEC section 5):
- `v1`: the published one. 40 S2 and 40 S1 steps per pixel, drawn from the valid observations
  without replacement when there are enough, else with replacement, then sorted. Seeded here
  (the published code was not), and the random numbers are a hash of (seed, pixel id, step), so a
  pixel's draw does not depend on which batch or chunk it is processed in.
- `all` (deterministic, the default): every valid observation, in order. Lengths differ per
  pixel; `buckets` groups pixels of similar length so that little compute goes to padding.

Rules shared by those two: the S1 sequence is the ascending steps followed by the descending steps; a
pixel with no date in an orbit gets one all-zero step at day 180 there; zero steps are invalid;
a pixel with no valid observation of a sensor uses all of its steps of that sensor (and is
flagged by the caller).

And the published schemes of the later models (SPEC section 3b), both deterministic: every valid
observation, the count bucketed to a multiple of 8 (at most 256) and resampled to that length by
fixed index patterns (`v1.1`, `v2`). See `bucket_length` and `resample_pattern`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Literal, TypeVar

import numpy as np

from tessera.bands import s1_valid
from tessera.dpixel import DPixelBatch
from tessera.errors import InputError

Scheme = Literal["all", "v1", "v1.1", "v2"]
SCHEMES: tuple[str, ...] = ("all", "v1", "v1.1", "v2")
#: The bucketed schemes of v1.1 and v2: sequences of a fixed length per bucket, no padding.
BUCKETED: tuple[str, ...] = ("v1.1", "v2")
BUCKET_STEP = 8
BUCKET_MAX = 256
V1_STEPS = 40
EMPTY_ORBIT_DOY = 180


@dataclasses.dataclass
class Candidates:
    """One sensor's observations of N pixels and which of them may be drawn."""

    values: np.ndarray  # (N, T, C)
    doy: np.ndarray  # (N, T)
    candidate: np.ndarray  # (N, T) bool: valid steps, or every present step when none is valid
    any_valid: np.ndarray  # (N,) bool
    orbit: np.ndarray | None = None  # (T,) int8 for S1: 0 ascending, 1 descending

    @property
    def counts(self) -> np.ndarray:
        return self.candidate.sum(axis=1)


def _candidates(values: np.ndarray, doy: np.ndarray, valid: np.ndarray,
                present: np.ndarray) -> Candidates:
    # numpy's stubs allow a scalar for any reduction over an axis; (N, T) -> (N,) is an array
    any_valid: np.ndarray = valid.any(axis=1)  # type: ignore[assignment]
    cand = np.where(any_valid[:, None], valid, present)
    return Candidates(values=values, doy=doy, candidate=cand, any_valid=any_valid)


def s2_candidates(batch: DPixelBatch) -> Candidates:
    valid = batch.s2_valid & batch.s2_present
    return _candidates(batch.s2, batch.s2_doy, valid, batch.s2_present)


def _with_empty_step(values: np.ndarray, doy: np.ndarray, present: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give pixels without any date in this orbit one all-zero step at day 180."""
    none: np.ndarray = ~present.any(axis=1)  # type: ignore[assignment]  # (N,): as any_valid
    if not none.any():
        return values, doy, present
    n = values.shape[0]
    values = np.concatenate([values, np.zeros((n, 1, values.shape[2]), values.dtype)], axis=1)
    doy = np.concatenate([doy, np.where(none, EMPTY_ORBIT_DOY, 0)[:, None].astype(doy.dtype)], 1)
    present = np.concatenate([present, none[:, None]], axis=1)
    return values, doy, present


def s1_candidates(batch: DPixelBatch, empty_orbit_step: bool = True) -> Candidates:
    """Ascending then descending steps (not interleaved by date), with the v1.0 empty-orbit rule
    (one zero step at day 180 for a pixel without any date in an orbit) unless
    `empty_orbit_step` is False (v1.1 and v2 skip empty orbits)."""
    va, da, pa = batch.s1_asc, batch.s1_asc_doy, batch.s1_asc_present
    vd, dd, pd = batch.s1_desc, batch.s1_desc_doy, batch.s1_desc_present
    if empty_orbit_step:
        va, da, pa = _with_empty_step(va, da, pa)
        vd, dd, pd = _with_empty_step(vd, dd, pd)
    values = np.concatenate([va, vd], axis=1)
    doy = np.concatenate([np.asarray(da, np.int16), np.asarray(dd, np.int16)], axis=1)
    present = np.concatenate([pa, pd], axis=1)
    orbit = np.repeat(np.array([0, 1], np.int8), [va.shape[1], vd.shape[1]])
    valid = s1_valid(values) & present
    c = _candidates(values, doy, valid, present)
    c.orbit = orbit
    if not empty_orbit_step:  # no "use every step" fallback either: no valid step = no step
        c.candidate = valid
    return c


def s2_steps(batch: DPixelBatch) -> Candidates:
    """S2 for the bucketed schemes: the candidates are exactly the valid steps."""
    c = s2_candidates(batch)
    c.candidate = batch.s2_valid & batch.s2_present
    return c


# --- the bucketed schemes of v1.1 and v2 (SPEC 3b) --------------------------------------------

def bucket_length(n: np.ndarray, scheme: str) -> np.ndarray:
    """Sequence length for `n` valid observations: the smallest multiple of 8 >= n, at most
    256; a sensor without any valid observation gets 8 zero steps in v1.1 and 1 in v2."""
    n = np.asarray(n, dtype=np.int64)
    b = np.minimum(-(-np.maximum(n, 1) // BUCKET_STEP) * BUCKET_STEP, BUCKET_MAX)
    return np.where(n > 0, b, BUCKET_STEP if scheme == "v1.1" else 1)


def resample_pattern(n: int, length: int, scheme: str) -> np.ndarray:
    """Which of `n` valid observations (in order) fill a sequence of `length` (SPEC 3b).

    Both schemes keep every observation once, in order, when it fits and append the extra
    repeats at the end; they differ in which observations repeat and how a longer history is
    thinned:
    - v1.1: more than `length`: the middle of each of `length` near-equal chunks; fewer: the
      extras at rint(linspace(0, n-1, length-n+2)[1:-1]) (3 -> 8: 0 1 2 0 1 1 1 2).
    - v2: more: linspace(0, n-1, length) truncated; fewer, with r = length - n extras: the middle
      of each of r chunks when r <= n (5 -> 8: 0 1 2 3 4 1 3 4), else 0, 1, ... cycling
      (3 -> 8: 0 1 2 0 1 2 0 1).
    """
    if n <= 0:
        return np.zeros(length, dtype=np.int64)
    if n == length:
        return np.arange(n, dtype=np.int64)
    if scheme == "v1.1":
        if n > length:
            return np.array([c[len(c) // 2] for c in np.array_split(np.arange(n), length)],
                            dtype=np.int64)
        extra = np.rint(np.linspace(0, n - 1, length - n + 2)[1:-1]).astype(np.int64)
        return np.concatenate([np.arange(n, dtype=np.int64), extra])
    if scheme == "v2":
        if n > length:
            return np.linspace(0, n - 1, length).astype(np.int64)
        r = length - n
        if r <= n:
            extra = np.array([c[len(c) // 2] for c in np.array_split(np.arange(n), r)],
                             dtype=np.int64)
        else:
            extra = np.arange(r, dtype=np.int64) % n
        return np.concatenate([np.arange(n, dtype=np.int64), extra])
    raise InputError(f"resample_pattern: scheme {scheme!r} is not bucketed; expected one of "
                     f"{', '.join(BUCKETED)}")


@dataclasses.dataclass
class Bucketed:
    """A bucketed scheme's choice for N pixels of one sensor."""

    idx: np.ndarray  # (N, max length) step indices; row i is meaningful up to length[i]
    length: np.ndarray  # (N,) sequence length (the bucket)
    blank: np.ndarray  # (N,) bool: no valid observation: zero steps (after normalisation), DOY 0


def bucketed(cand: np.ndarray, scheme: str) -> Bucketed:
    """Bucket and resample each pixel's valid steps (`cand` (N, T) bool, in time order)."""
    n_valid = cand.sum(axis=1).astype(np.int64)
    length = bucket_length(n_valid, scheme)
    width = int(length.max(initial=1))
    idx = np.zeros((len(n_valid), width), dtype=np.int64)
    order = np.argsort(~cand, axis=1, kind="stable")  # valid steps first, in time order
    for n in np.unique(n_valid):
        rows = np.flatnonzero(n_valid == n)
        if n == 0:
            continue
        b = int(length[rows[0]])
        idx[rows, :b] = order[rows][:, resample_pattern(int(n), b, scheme)]
    return Bucketed(idx=idx, length=length, blank=n_valid == 0)


# --- counter-based random numbers -------------------------------------------------------------

_U64 = TypeVar("_U64", np.ndarray, np.uint64)


def _splitmix64(x: _U64) -> _U64:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hashed_uniform(seed: int, stream: int, pixel_ids: np.ndarray, n: int) -> np.ndarray:
    """Uniform [0, 1) numbers for (seed, stream, pixel id, step): (N, n), batch-independent."""
    with np.errstate(over="ignore"):
        base = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x100000001B3)
                           + np.uint64(stream))
        pid = _splitmix64(np.asarray(pixel_ids, dtype=np.uint64) ^ base)
        steps = np.arange(n, dtype=np.uint64)
        h = _splitmix64(pid[:, None] * np.uint64(0xD1B54A32D192ED03) + steps[None, :])
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def draw_v1(cand: np.ndarray, k: int, seed: int, stream: int, pixel_ids: np.ndarray) -> np.ndarray:
    """Indices (N, k), sorted per pixel: k of the candidates without replacement when a pixel has
    at least k, else k draws with replacement."""
    n, t = cand.shape
    counts = cand.sum(axis=1)
    if (counts == 0).any():
        raise ValueError("draw_v1: a pixel has no candidate step (no observation at all)")
    keys = hashed_uniform(seed, stream, pixel_ids, t + k)
    order = np.argsort(np.where(cand, keys[:, :t], 2.0), axis=1, kind="stable")
    if t < k:
        order = np.concatenate([order, np.zeros((n, k - t), order.dtype)], axis=1)
    without = order[:, :k]
    # candidates first, in time order: position j of the with-replacement draw picks one of them
    cand_first = np.argsort(~cand, axis=1, kind="stable")
    pick = np.minimum((keys[:, t:] * counts[:, None]).astype(np.int64), counts[:, None] - 1)
    with_rep = np.take_along_axis(cand_first, pick, axis=1)
    idx = np.where((counts >= k)[:, None], without, with_rep)
    return np.sort(idx, axis=1)


def all_valid_indices(cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices (N, L) of the candidate steps first and in time order, lengths (N,))."""
    counts = cand.sum(axis=1)
    order = np.argsort(~cand, axis=1, kind="stable")
    return order[:, : max(int(counts.max(initial=0)), 1)], counts


@dataclasses.dataclass
class Sequences:
    """Model-ready right-padded sequences for one sensor."""

    values: np.ndarray  # (N, L, C)
    doy: np.ndarray  # (N, L)
    mask: np.ndarray | None  # (N, L) bool, valid steps first; None when all steps are valid


def gather(c: Candidates, idx: np.ndarray, lengths: np.ndarray | None,
           rows: np.ndarray | None = None) -> Sequences:
    """The steps `idx` (N, L) of the pixels `rows` (default: all) of `c`, masked past `lengths`."""
    values, doy = (c.values, c.doy) if rows is None else (c.values[rows], c.doy[rows])
    values = np.take_along_axis(values, idx[:, :, None], axis=1)
    doy = np.take_along_axis(doy, idx, axis=1)
    mask = None
    if lengths is not None:  # always a mask, padded or not: one attention path for every batch
        mask = np.arange(idx.shape[1])[None, :] < lengths[:, None]
    return Sequences(values=values, doy=doy, mask=mask)


def select(c: Candidates, scheme: Scheme, seed: int, stream: int, pixel_ids: np.ndarray,
           steps: int = V1_STEPS) -> tuple[np.ndarray, np.ndarray | None]:
    """Step indices and lengths (None = all `steps` long) for a scheme."""
    if scheme == "v1":
        return draw_v1(c.candidate, steps, seed, stream, pixel_ids), None
    if scheme == "all":
        return all_valid_indices(c.candidate)
    raise InputError(f"unknown sampling scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


def buckets(lengths: np.ndarray, tokens_per_batch: int, granularity: int = 16,
            max_length: int | None = None, min_rows: int = 1
            ) -> Iterator[tuple[np.ndarray, int]]:
    """Group pixel indices into batches of similar length.

    Each pixel's length is rounded up to a multiple of `granularity` (capped at `max_length`);
    pixels of the same rounded length form batches of at most `tokens_per_batch` padded tokens
    (but at least `min_rows` pixels), padded to that length. Rounding keeps the number of
    distinct batch shapes small, which bounds the kernels' per-shape caches (oneDNN keeps one
    primitive per shape) at the cost of a few padded steps. Why 16: the CPU attention kernels
    work on blocks of 16 keys, and a pixel's result is the same bits however far its sequence
    is padded once its last block is whole, so a pixel's embedding does not depend on which
    pixels it was batched with (the batch size, the chunking). Yields (pixel indices, padded length).
    """
    def padded(length: int) -> int:
        length = -(-max(length, 1) // granularity) * granularity
        return min(length, max_length) if max_length else length

    order = np.argsort(lengths, kind="stable")
    keys = np.array([padded(int(v)) for v in np.maximum(lengths[order], 1)], dtype=np.int64)
    # one padded length per batch: every pixel is padded only to its own rounded length
    for key in np.unique(keys):
        rows = order[keys == key]
        per_batch = max(min_rows, tokens_per_batch // int(key))
        for i in range(0, len(rows), per_batch):
            yield rows[i:i + per_batch], int(key)
