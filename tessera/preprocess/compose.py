"""The processing rules (SPEC section 1), applied to the granules of one date on one patch.

Sentinel-2, per date and pixel: the *first granule (in id order) with a valid SCL* supplies all
ten bands; where no granule is valid the first granule with data does (mask 0, values kept as
the published tiles keep cloudy values); the mask is `bands.scl_valid(SCL)`. 10 m bands are
resampled nearest (or bilinear, as configured), 20 m bands bilinear, SCL nearest. The BOA offset
is removed exactly once, per granule, where its metadata (or the acquisition date) says the
values still carry it.

Sentinel-1, per orbit, date and pixel: the first granule with VV or VH data supplies both,
encoded to the TESSERA int16 code from linear power, dB or an already-encoded input.

Where two granules of one date are both valid on a pixel and disagree, the first still wins
(the published rule), and the disagreement is reported: how many pixels, which band, which
granules (`on_conflict="error"` makes it an error instead).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
from typing import Any, Literal

import numpy as np

from tessera.bands import (S1_POLS, S2_10M_BANDS, S2_BANDS, needs_boa_offset, remove_boa_offset,
                           s1_code, s1_db_to_int16, s1_linear_to_int16, scl_valid)
from tessera.errors import ConflictError, PreprocessError
from tessera.preprocess.acquisition import Granule
from tessera.geo import TargetGrid

log = logging.getLogger("tessera.preprocess")

BoaMode = Literal["auto", "subtract", "keep"]
ConflictMode = Literal["warn", "error", "ignore"]


@dataclasses.dataclass(frozen=True)
class ComposeOptions:
    resampling_10m: str = "nearest"
    resampling_20m: str = "bilinear"
    resampling_s1: str = "bilinear"
    boa_offset: BoaMode = "auto"       # auto: from metadata (baseline / offset-applied flag) or date
    on_conflict: ConflictMode = "warn"

    def __post_init__(self) -> None:
        from rasterio.enums import Resampling
        for f in ("resampling_10m", "resampling_20m", "resampling_s1"):
            v = getattr(self, f)
            if v not in Resampling.__members__:
                raise PreprocessError(f"{f}={v!r}: expected a rasterio resampling name such as "
                                      "nearest, bilinear, cubic")
        if self.boa_offset not in ("auto", "subtract", "keep"):
            raise PreprocessError(f"boa_offset={self.boa_offset!r}: expected auto, subtract, keep")
        if self.on_conflict not in ("warn", "error", "ignore"):
            raise PreprocessError(f"on_conflict={self.on_conflict!r}: expected warn, error, ignore")

    def resampling_for(self, band: str) -> str:
        return self.resampling_10m if band in S2_10M_BANDS else self.resampling_20m


@dataclasses.dataclass
class DateResult:
    """One date composed on one patch."""

    date: _dt.date
    values: np.ndarray | None   # S2: uint16 (H, W, 10); S1: int16 (H, W, 2); None once stacked
    mask: np.ndarray            # bool (H, W): valid observation
    has_data: np.ndarray | bool  # any pixel with data
    granules: list[str]
    boa_subtracted: list[str] = dataclasses.field(default_factory=list)
    conflicts: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def group_by_date(granules: list[Granule]) -> list[tuple[_dt.date, list[Granule]]]:
    """Granules grouped by date (ascending), each group in id order."""
    groups: dict[_dt.date, list[Granule]] = {}
    for g in granules:
        groups.setdefault(g.date, []).append(g)
    out = []
    for d in sorted(groups):
        gs = sorted(groups[d], key=lambda g: g.id)
        ids = [g.id for g in gs]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            srcs = [g.source for g in gs if g.id in dup]
            raise PreprocessError(f"{d}: granule id(s) {dup} appear more than once "
                                  f"({', '.join(srcs)}); each acquisition must be given once")
        out.append((d, gs))
    return out


def subtract_boa(g: Granule, mode: BoaMode) -> bool:
    """Whether this granule's values still carry the BOA offset (and so must lose it, once)."""
    if mode == "subtract":
        return True
    if mode == "keep":
        return False
    if g.boa_offset_applied is not None:
        return not g.boa_offset_applied
    try:
        return needs_boa_offset(date=g.date, baseline=g.baseline)
    except ValueError as exc:
        raise PreprocessError(f"granule {g.id} ({g.source}): {exc}") from None


def _to_uint16(a: np.ndarray, finite: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.where(finite, a, 0.0)), 0, 65535).astype(np.uint16)


def read_s2_bands(g: Granule, grid: TargetGrid, opts: ComposeOptions,
                  footprint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 (H, W, 10) in model band order, offset removed if needed; bool (H, W): every band
    holds a usable value there). NaN, inf and the file's nodata are not usable: such a pixel is
    not a valid observation (its values are 0). A band with no usable value anywhere in
    `footprint` (where the granule has data) is reported as a warning naming its file."""
    out = np.empty((grid.height, grid.width, len(S2_BANDS)), np.uint16)
    usable = np.ones((grid.height, grid.width), bool)
    sub = subtract_boa(g, opts.boa_offset)
    for i, b in enumerate(S2_BANDS):
        asset = g.asset(b)
        x = asset.read(grid, opts.resampling_for(b))
        finite = np.isfinite(x)
        if footprint is not None and footprint.any() and not finite[footprint].any():
            log.warning("%s: no usable value (NaN, inf or nodata) on the %d pixels where %s has "
                        "data on %s; those observations are marked invalid", asset.description,
                        int(footprint.sum()), g.id, g.date)
        usable &= finite
        v = _to_uint16(x, finite)
        out[..., i] = remove_boa_offset(v) if sub else v
    return out, usable


def read_s1(g: Granule, grid: TargetGrid, opts: ComposeOptions) -> np.ndarray:
    """int16 (H, W, 2) [VV, VH] in the TESSERA code; 0 = no data."""
    out = np.empty((grid.height, grid.width, 2), np.int16)
    for i, pol in enumerate(S1_POLS):
        x = g.asset(pol).read(grid, opts.resampling_s1)
        if g.s1_units == "linear":
            out[..., i] = s1_linear_to_int16(x)
        elif g.s1_units == "db":
            out[..., i] = s1_db_to_int16(x)
        elif g.s1_units == "int16":
            out[..., i] = s1_code(np.where(np.isfinite(x), x / 200.0 - 50.0, np.nan))
        else:
            raise PreprocessError(f"granule {g.id}: unknown S1 units {g.s1_units!r}")
    return out


def _first_choice(valid: list[np.ndarray], data: list[np.ndarray]) -> np.ndarray:
    """Index of the granule supplying each pixel: first valid, else first with data, else -1."""
    shape = valid[0].shape if valid else (0, 0)
    choice = np.full(shape, -1, np.int16)
    for i, v in enumerate(valid):
        choice[(choice < 0) & v] = i
    for i, d in enumerate(data):
        choice[(choice < 0) & d] = i
    return choice


def _check_conflicts(date: _dt.date, granules: list[Granule], valid: list[np.ndarray],
                     choice: np.ndarray, read: Any, cache: dict[int, np.ndarray],
                     band_names: tuple[str, ...], mode: ConflictMode) -> list[dict[str, Any]]:
    if mode == "ignore" or len(granules) < 2:
        return []
    found = []
    for j in range(1, len(granules)):
        for i in range(j):
            both = (choice == i) & valid[i] & valid[j]
            if not both.any():
                continue
            for k in (i, j):
                if k not in cache:
                    cache[k] = read(granules[k])
            a, b = cache[i], cache[j]
            diff = a[both].astype(np.int32) != b[both].astype(np.int32)
            if not diff.any():
                continue
            per_band = diff.sum(axis=0)
            k = int(np.argmax(per_band))
            c = {"date": date.isoformat(), "first": granules[i].id, "other": granules[j].id,
                 "first_source": granules[i].source, "other_source": granules[j].source,
                 "band": band_names[k], "pixels": int(diff.any(axis=1).sum()),
                 "overlap_pixels": int(both.sum()),
                 "max_abs_diff": int(np.abs(a[both].astype(np.int32)
                                            - b[both].astype(np.int32)).max())}
            msg = (f"{c['date']}: overlapping granules {c['first']} ({c['first_source']}) and "
                   f"{c['other']} ({c['other_source']}) differ on {c['pixels']} of "
                   f"{c['overlap_pixels']} pixels valid in both (band {c['band']}, max "
                   f"difference {c['max_abs_diff']}); the first granule's values are kept")
            if mode == "error":
                raise ConflictError(msg.replace("; the first granule's values are kept",
                                                "; refusing to choose (on_conflict=error)"))
            log.warning(msg)
            found.append(c)
    return found


def compose_s2_date(date: _dt.date, granules: list[Granule], grid: TargetGrid,
                    opts: ComposeOptions) -> DateResult:
    scls = []
    for g in granules:
        scl = g.asset("SCL").read(grid, "nearest")
        scls.append(np.nan_to_num(scl, nan=0.0).astype(np.uint8))
    valid = [scl_valid(s) for s in scls]
    data = [s != 0 for s in scls]
    choice = _first_choice(valid, data)
    out = np.zeros((grid.height, grid.width, len(S2_BANDS)), np.uint16)
    unusable = np.zeros((grid.height, grid.width), bool)
    cache: dict[int, np.ndarray] = {}
    used = [i for i in range(len(granules)) if (choice == i).any()]
    for i in used:
        cache[i], usable = read_s2_bands(granules[i], grid, opts, footprint=data[i])
        sel = choice == i
        out[sel] = cache[i][sel]
        unusable[sel] = ~usable[sel]
    conflicts = _check_conflicts(date, granules, valid, choice,
                                 lambda g: read_s2_bands(g, grid, opts)[0], cache, S2_BANDS,
                                 opts.on_conflict)
    mask = np.zeros((grid.height, grid.width), bool)
    for v in valid:
        mask |= v
    mask &= ~unusable  # a band without a usable value: not a valid observation
    return DateResult(date, out, mask, bool((choice >= 0).any()), [granules[i].id for i in used],
                      [granules[i].id for i in used if subtract_boa(granules[i], opts.boa_offset)],
                      conflicts)


def compose_s1_date(date: _dt.date, granules: list[Granule], grid: TargetGrid,
                    opts: ComposeOptions) -> DateResult:
    codes = [read_s1(g, grid, opts) for g in granules]
    valid = [(c[..., 0] != 0) | (c[..., 1] != 0) for c in codes]
    choice = _first_choice(valid, [])
    out = np.zeros((grid.height, grid.width, 2), np.int16)
    for i, c in enumerate(codes):
        sel = choice == i
        out[sel] = c[sel]
    cache = dict(enumerate(codes))
    conflicts = _check_conflicts(date, granules, valid, choice, lambda g: read_s1(g, grid, opts),
                                 cache, S1_POLS, opts.on_conflict)
    mask = choice >= 0
    used = sorted({int(i) for i in np.unique(choice) if i >= 0})
    return DateResult(date, out, mask, bool(mask.any()), [granules[i].id for i in used],
                      conflicts=conflicts)
