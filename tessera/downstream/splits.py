"""Folds and nested label fractions: which samples a head may see.

Folds (`make_folds`, one entry for every split method; `leave_one_cell_out` is the WorldCereal
protocol's own):
    - "random": stratified k-fold (scikit-learn's StratifiedKFold, shuffled by `seed`);
    - "grouped": k-fold by a group id (field, polygon), StratifiedGroupKFold: no group in two
      test folds, classes balanced across folds as far as the groups allow;
    - "spatial": blocks of `block_size_m` metres (lon/lat projected to the centre's UTM zone, or
      to a Lambert azimuthal equal-area projection centred on the data when it spans more than
      one zone's width; block = floor(x / size), floor(y / size)), then grouped k-fold by block;
      `buffer_m` also drops from each fold's training pool every sample within that distance of
      a test sample;
    - "column": a user's grouping column (e.g. an H3 cell): leave-one-group-out when it has at
      most `logo_max` groups, else grouped k-fold.
Stratification needs class labels; where it cannot hold (a class with fewer samples than
folds, stratify=False with labels, a regression target) the folds say so: a `SplitWarning`
for classes too small, and float targets with many values are stratified by quantile bins.
No sample is ever in the training pool and the test set of one fold.

Label fractions (`subsample`, `label_subsets`): seeded, stratified subsets of a fold's training
pool, nested across fractions (1 % within 10 % within 100 %), at least `min_per_class` samples
of each class.

Why a module of its own: these depend only on labels, groups, coordinates and seeds, never on
features, so they are checked on their own.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
import zlib
from typing import Any, Mapping, Sequence

import numpy as np

from tessera.errors import InputError

METHODS: tuple[str, ...] = ("random", "grouped", "spatial", "column")


class SplitWarning(UserWarning):
    """The folds could not be made as asked (a class too small to stratify, empty folds)."""


@dataclasses.dataclass(frozen=True)
class Fold:
    index: int
    cell: str  # the fold's name: the test cell / group, or "fold<i>" for k-fold splits
    train: np.ndarray  # sample indices (into the table) of the training pool
    test: np.ndarray
    method: str = "cell"  # the split method that made it
    groups: tuple[str, ...] = ()  # the groups (cells, fields, blocks) of the test set
    n_buffered: int = 0  # samples left out of the training pool for being near the test set

    def info(self) -> dict[str, Any]:
        """JSON-ready description (without the index arrays)."""
        return {"index": self.index, "name": self.cell, "method": self.method,
                "n_train": int(len(self.train)), "n_test": int(len(self.test)),
                "n_buffered": int(self.n_buffered), "n_test_groups": len(self.groups),
                "test_groups": list(self.groups[:50])}


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


# --- strata and nested label fractions of any task ---------------------------------------------

def label_strata(labels: Sequence[object] | np.ndarray, *, regression: bool = False,
                 bins: int = 5, max_distinct: int = 20) -> np.ndarray:
    """The strata of `labels` as text: class labels as they are; a regression target (or, with
    regression=False, a float target of more than `max_distinct` values) as its quantile bin
    "q0" .. "q<bins-1>" (missing values: "nan")."""
    a = np.asarray(labels)
    if a.dtype.kind in "biuf" and (regression or (
            a.dtype.kind == "f" and len(np.unique(a[np.isfinite(a)])) > max_distinct)):
        v = a.astype(float)
        ok = np.isfinite(v)
        out = np.full(len(v), "nan", dtype=object)
        if ok.any():
            edges = np.unique(np.quantile(v[ok], np.linspace(0, 1, bins + 1)[1:-1]))
            out[ok] = [f"q{int(i)}" for i in np.searchsorted(edges, v[ok], side="right")]
        return out
    return np.asarray([str(v) for v in a], dtype=object)


def label_subsets(labels: Sequence[object] | np.ndarray, fractions: Sequence[float], seed: int,
                  *, salt: int = 0, min_per_class: int = 1, regression: bool = False
                  ) -> dict[float, np.ndarray]:
    """Per fraction the sorted positions (into `labels`) of the labelled subset: `subsample`
    of one seed and salt, so nested across fractions, with at least `min_per_class` samples of
    every class. A regression target is stratified by its quantile bins, with no per-bin
    minimum."""
    strata = label_strata(labels, regression=regression)
    mpc = 0 if regression else min_per_class
    return {float(f): subsample(strata, f, seed, min_per_class=mpc, salt=salt) for f in fractions}


# --- coordinates and spatial blocks ------------------------------------------------------------

def projection_for(lon: np.ndarray, lat: np.ndarray, crs: str = "auto") -> str:
    """The projected CRS of spatial blocks: `crs` itself unless "auto"; "auto" = the UTM zone
    of the data's centre when every point is within 6 degrees of longitude of that zone's
    central meridian (and within the UTM latitudes), else a Lambert azimuthal equal-area
    projection centred on the data."""
    if crs != "auto":
        return crs
    rad = np.radians(lon)
    clon = float(np.degrees(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())))
    clat = float(np.mean(lat))
    if -80.0 <= float(np.min(lat)) and float(np.max(lat)) <= 84.0:
        zone = min(int(math.floor((clon + 180.0) / 6.0)) + 1, 60)
        meridian = -183.0 + 6.0 * zone
        if float(np.max(np.abs((lon - meridian + 180.0) % 360.0 - 180.0))) <= 6.0:
            return f"EPSG:{(32600 if clat >= 0 else 32700) + zone}"
    return f"+proj=laea +lat_0={clat:.6f} +lon_0={clon:.6f} +datum=WGS84 +units=m +no_defs"


def project_lonlat(lon: Sequence[float] | np.ndarray, lat: Sequence[float] | np.ndarray,
                   crs: str = "auto") -> tuple[np.ndarray, str]:
    """(n, 2) projected x, y in metres and the CRS used (see `projection_for`)."""
    from tessera.geo.crs import transformer

    lo, la = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    bad = ~(np.isfinite(lo) & np.isfinite(la) & (np.abs(lo) <= 180) & (np.abs(la) <= 90))
    if bad.any():
        raise InputError(f"lon/lat: {int(bad.sum())} samples with missing or out-of-range "
                         "coordinates; expected lon -180..180 and lat -90..90 (degrees)")
    used = projection_for(lo, la, crs)
    try:
        tr = transformer("EPSG:4326", used)
    except Exception as exc:  # pyproj's CRSError: an unknown CRS spelling
        raise InputError(f"crs {crs!r}: not a CRS pyproj knows ({exc})") from None
    x, y = tr.transform(lo, la)
    return np.column_stack([np.asarray(x, float), np.asarray(y, float)]), used


def spatial_blocks(lon: Sequence[float] | np.ndarray, lat: Sequence[float] | np.ndarray,
                   block_size_m: float, *, crs: str = "auto") -> np.ndarray:
    """The block of each point: "b<i>_<j>" with i = floor(x / size), j = floor(y / size) in the
    projected CRS (`project_lonlat`)."""
    size = _block_size(block_size_m)
    xy, _ = project_lonlat(lon, lat, crs)
    ij = np.floor(xy / size).astype(np.int64)
    return np.asarray([f"b{i}_{j}" for i, j in ij], dtype=object)


def _block_size(block_size_m: float | None) -> float:
    if block_size_m is None:
        raise InputError("block_size_m: the spatial split needs a block size (metres, > 0)")
    try:
        size = float(block_size_m)
    except (TypeError, ValueError):
        size = float("nan")
    if not (math.isfinite(size) and size > 0):
        raise InputError(f"block_size_m {block_size_m!r}: expected a block size in metres > 0")
    return size


# --- folds of every split method ---------------------------------------------------------------

def _n_samples(data: Any) -> int:
    if isinstance(data, (bool, np.bool_)):
        raise InputError(f"data {data!r}: expected a sample count or a table")
    if isinstance(data, (int, np.integer)):
        if data < 0:
            raise InputError(f"data {data}: expected a sample count >= 0")
        return int(data)
    if hasattr(data, "columns"):  # a pandas DataFrame
        return len(data)
    if isinstance(data, Mapping):
        lengths = {len(np.asarray(v)) for v in data.values()}
        if len(lengths) > 1:
            raise InputError(f"data: columns of different lengths {sorted(lengths)}; expected "
                             "one value per sample in every column")
        return lengths.pop() if lengths else 0
    raise InputError(f"data {type(data).__name__}: expected a sample count, a DataFrame or a "
                     "mapping of columns")


def _values(data: Any, spec: Any, field: str, n: int) -> np.ndarray:
    """The per-sample values of `spec`: a column name of `data`, or the values themselves."""
    if isinstance(spec, str):
        if isinstance(data, (int, np.integer)):
            raise InputError(f"{field} {spec!r}: a column name needs a table as data; pass "
                             "one value per sample instead")
        cols = [str(c) for c in (data.columns if hasattr(data, "columns") else data.keys())]
        if spec not in cols:
            shown = ", ".join(cols[:12]) + (", ..." if len(cols) > 12 else "")
            raise InputError(f"{field} column {spec!r} missing: the table has {shown or 'none'}")
        values = np.asarray(data[spec])
    else:
        values = np.asarray(spec)
    if values.ndim != 1 or len(values) != n:
        raise InputError(f"{field}: {values.shape[0] if values.ndim else 0} values for {n} "
                         "samples; expected one per sample")
    return values


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return ~np.isfinite(values)
    if values.dtype.kind == "O":
        return np.asarray([v is None or (isinstance(v, float) and not math.isfinite(v))
                           for v in values], bool)
    return np.zeros(len(values), bool)


def _kfold(n: int, strata: np.ndarray | None, k: int, seed: int
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    idx = np.arange(n)
    if strata is not None:
        _, counts = np.unique(strata, return_counts=True)
        if len(counts) > 1 and counts.max() >= k:  # what StratifiedKFold needs
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its small-class warning: ours says it
                return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(idx, strata))
    return list(KFold(k, shuffle=True, random_state=seed).split(idx))


def _group_kfold(groups: np.ndarray, strata: np.ndarray | None, k: int, seed: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """StratifiedGroupKFold with strata; else the groups, shuffled by `seed` and then largest
    first, each to the fold with the fewest samples so far."""
    from sklearn.model_selection import StratifiedGroupKFold

    idx = np.arange(len(groups))
    if strata is not None and len(np.unique(strata)) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cv = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
            return list(cv.split(idx, strata, groups))
    names, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]
    fold_of = np.empty(len(names), np.int64)
    load = np.zeros(k, np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of[g] = f
        load[f] += sizes[g]
    sample_fold = fold_of[inverse]
    return [(np.flatnonzero(sample_fold != f), np.flatnonzero(sample_fold == f))
            for f in range(k)]


def _warn_unstratified(strata: np.ndarray, groups: np.ndarray | None, k: int) -> None:
    names, counts = np.unique(strata, return_counts=True)
    if groups is not None:
        counts = np.asarray([len(np.unique(groups[strata == c])) for c in names])
    small = [(str(c), int(m)) for c, m in zip(names, counts) if m < k]
    if small:
        what = "groups" if groups is not None else "samples"
        listed = ", ".join(f"{c!r} ({m})" for c, m in small[:10])
        warnings.warn(f"stratification is approximate: {len(small)} classes have fewer {what} "
                      f"than the {k} folds, so they cannot be in every test fold: {listed}",
                      SplitWarning, stacklevel=3)


def make_folds(data: Any, method: str = "random", *, k: int = 5, seed: int = 0,
               labels: Any = None, group: Any = None, lon: Any = "lon", lat: Any = "lat",
               block_size_m: float | None = None, buffer_m: float = 0.0, crs: str = "auto",
               stratify: bool = True, logo_max: int = 10) -> list[Fold]:
    """Cross-validation folds of `data` (a sample count, a DataFrame or a mapping of columns).

    labels / group / lon / lat: a column name of `data` or one value per sample. labels (the
    classes, or a regression target: quantile bins) stratify the folds unless stratify=False.
    method: "random" (stratified k-fold), "grouped" (k-fold by `group`, no group split),
    "spatial" (k-fold by blocks of `block_size_m` metres, see `spatial_blocks`; crs picks the
    projection), "column" (leave-one-group-out of `group` when it has at most `logo_max` groups,
    else grouped k-fold). buffer_m > 0 (needs lon/lat): each fold's training pool loses every
    sample within buffer_m metres of one of its test samples. Deterministic for a given seed.
    """
    if method not in METHODS:
        raise InputError(f"split method {method!r}: expected one of {', '.join(METHODS)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise InputError(f"k {k!r}: expected a number of folds >= 2")
    n = _n_samples(data)
    try:
        buffer = float(buffer_m)
    except (TypeError, ValueError):
        buffer = float("nan")
    if not (math.isfinite(buffer) and buffer >= 0):
        raise InputError(f"buffer_m {buffer_m!r}: expected a distance in metres >= 0")
    y = _values(data, labels, "labels", n) if labels is not None else None
    strata = label_strata(y) if y is not None and stratify else None

    groups: np.ndarray | None = None
    what = ""
    if method in ("grouped", "column"):
        if group is None:
            raise InputError(f"group: split method {method!r} needs a group column (a column "
                             "name or one group id per sample)")
        g = _values(data, group, "group", n)
        name = f"{group!r}" if isinstance(group, str) else "group"
        if _missing(g).any():
            raise InputError(f"group column {name}: {int(_missing(g).sum())} samples without a "
                             "group; expected a group id for every sample")
        groups = np.asarray([str(v) for v in g], dtype=object)
        what = f"groups in {name}"
    xy: np.ndarray | None = None
    if method == "spatial" or buffer > 0:
        size = _block_size(block_size_m) if method == "spatial" else 0.0
        xy, _ = project_lonlat(_values(data, lon, "lon", n), _values(data, lat, "lat", n), crs)
        if method == "spatial":
            ij = np.floor(xy / size).astype(np.int64)
            groups = np.asarray([f"b{i}_{j}" for i, j in ij], dtype=object)
            what = f"blocks of {size:g} m (use smaller blocks or fewer folds)"

    named: list[tuple[str, np.ndarray, np.ndarray]] = []
    if groups is None:
        if k > n:
            raise InputError(f"k={k} folds but only {n} samples; expected k <= {n}")
        if strata is not None:
            _warn_unstratified(strata, None, k)
        named = [(f"fold{i}", tr, te) for i, (tr, te) in enumerate(_kfold(n, strata, k, seed))]
    else:
        distinct = sorted(set(groups))
        if method == "column" and len(distinct) <= logo_max:
            if len(distinct) < 2:
                raise InputError(f"group: one group only ({distinct[0] if distinct else 'none'}); "
                                 "leave-one-group-out needs two or more")
            named = [(c, np.flatnonzero(groups != c), np.flatnonzero(groups == c))
                     for c in distinct]
        else:
            if k > len(distinct):
                raise InputError(f"k={k} folds but only {len(distinct)} {what}; expected "
                                 f"k <= {len(distinct)}")
            if strata is not None:
                _warn_unstratified(strata, groups, k)
            named = [(f"fold{i}", tr, te)
                     for i, (tr, te) in enumerate(_group_kfold(groups, strata, k, seed))]

    folds: list[Fold] = []
    for name, train, test in named:
        if len(test) == 0:
            warnings.warn(f"split {method}: fold {name} has no test sample; left out",
                          SplitWarning, stacklevel=2)
            continue
        n_buffered = 0
        if buffer > 0 and xy is not None and len(train):
            from scipy.spatial import cKDTree

            dist, _ = cKDTree(xy[test]).query(xy[train], k=1, distance_upper_bound=buffer)
            near = dist <= buffer
            n_buffered = int(near.sum())
            train = train[~near]
            if not len(train):
                warnings.warn(f"split {method}: fold {name} has no training sample left outside "
                              f"the {buffer:g} m buffer", SplitWarning, stacklevel=2)
        test_groups = tuple(sorted(set(groups[test]))) if groups is not None else ()
        folds.append(Fold(len(folds), name, np.sort(train).astype(np.int64),
                          np.sort(test).astype(np.int64), method, test_groups, n_buffered))
    return folds
