"""Geographic folds and nested label fractions: `leave_one_cell_out` and the seeded, stratified,
nested subsets of a fold's training pool (`stratified_order`, `subsample`, `fold_salt`).

Why a module of its own: these decide which samples a head may see; they depend only on labels,
cells and seeds, never on features, so they are checked on their own.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Sequence

import numpy as np

from tessera.errors import InputError


@dataclasses.dataclass(frozen=True)
class Fold:
    index: int
    cell: str  # the test cell
    train: np.ndarray  # sample indices (into the table) of the training pool
    test: np.ndarray


def leave_one_cell_out(cells: Sequence[object] | np.ndarray) -> list[Fold]:
    """One fold per distinct cell (sorted): that cell is the test set, every other cell the
    training pool. A table with a single cell gives no fold."""
    cells = np.asarray([str(c) for c in cells], dtype=object)
    distinct = sorted(set(cells))
    if len(distinct) < 2:
        return []
    return [Fold(i, c, np.flatnonzero(cells != c), np.flatnonzero(cells == c))
            for i, c in enumerate(distinct)]


def subset_size(n: int, fraction: float) -> int:
    """ceil(fraction n), at least 1 (before the per-class minimum of `subsample`)."""
    if not 0 < fraction <= 1:
        raise InputError(f"fraction {fraction}: expected 0 < fraction <= 1")
    return min(n, max(1, math.ceil(round(fraction * n, 9))))


def stratified_order(labels: Sequence[object] | np.ndarray, seed: int, *, min_per_class: int = 1,
                     salt: int = 0) -> np.ndarray:
    """A seeded order of the indices of `labels` whose every prefix is a stratified sample.

    First `min_per_class` samples of each class (round by round, classes in random order), then
    the rest ordered by the key (j + u_c) / (n_c - m) for the j-th of the remaining samples of
    class c in a random order (u_c uniform per class): any prefix then holds each class in
    proportion to its count, within one sample (systematic sampling per class).
    """
    labels = np.asarray([str(v) for v in labels], dtype=object)
    rng = np.random.default_rng([int(seed), int(salt) & 0xFFFFFFFF])
    idx_all, keys = [], []
    for cls in sorted(set(labels)):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        m = min(min_per_class, len(idx))
        key = np.empty(len(idx))
        key[:m] = np.arange(m) + rng.random(m) - m  # in [-m, 0): the guaranteed block
        rest = len(idx) - m
        if rest:
            key[m:] = (np.arange(rest) + rng.random()) / rest  # in [0, 1)
        idx_all.append(idx)
        keys.append(key)
    if not idx_all:
        return np.zeros(0, np.int64)
    idx, key = np.concatenate(idx_all), np.concatenate(keys)
    return idx[np.argsort(key, kind="stable")]


def subsample(labels: Sequence[object] | np.ndarray, fraction: float, seed: int, *,
              min_per_class: int = 1, salt: int = 0) -> np.ndarray:
    """Sorted indices of the labelled subset: the first max(ceil(f n), guaranteed) samples of
    `stratified_order`, so subsets of one seed and salt are nested across fractions; with
    fraction 1 every index."""
    n = len(labels)
    k = subset_size(n, fraction) if n else 0
    if k >= n:
        return np.arange(n)
    order = stratified_order(labels, seed, min_per_class=min_per_class, salt=salt)
    classes, counts = np.unique(np.asarray([str(v) for v in labels]), return_counts=True)
    guaranteed = int(np.minimum(counts, min_per_class).sum())
    return np.sort(order[:max(k, guaranteed)])


def fold_salt(cell: str) -> int:
    """A stable per-fold salt for the subset draw (so folds draw independently)."""
    return zlib.crc32(str(cell).encode())
