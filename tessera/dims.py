"""Choosing embedding dimensions ("bands") of a store's embeddings: `--bands 0,5,127` or
`--bands 0-15,64` on the command line, a list of indices in the library. (Not to be confused
with `tessera.bands`, the Sentinel band orders of the model's inputs.)

Indices are 0-based, as GeoTessera's `bands=[0, 5, 127]`; the chosen dimensions keep their
original index in names (`emb_005`, band descriptions), and their order is the order given.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from tessera.errors import InputError


def check_bands(bands: Iterable[int], dims: int, what: str = "bands") -> list[int]:
    """The band indices as a list of ints, each in 0..dims-1 and given once, else an
    InputError naming the offending index and the store's width."""
    out: list[int] = []
    for b in bands:
        if isinstance(b, (bool, np.bool_)) or not isinstance(b, (int, np.integer)):
            raise InputError(f"{what}: {b!r} is not a band index (expected integers 0.."
                             f"{dims - 1})")
        i = int(b)
        if not 0 <= i < dims:
            raise InputError(f"{what}: band {i} is beyond the store's {dims} dimensions "
                             f"(0..{dims - 1})")
        if i in out:
            raise InputError(f"{what}: band {i} is given twice")
        out.append(i)
    if not out:
        raise InputError(f"{what}: no band given (expected indices 0..{dims - 1})")
    return out


def parse_bands(text: str, dims: int) -> list[int]:
    """`"0,5,127"` or `"0-15,64"` (inclusive ranges) -> [0, 5, 127] / [0, ..., 15, 64], in the
    order given, each index in 0..dims-1 and given once; an InputError (one line, naming the
    item) otherwise."""
    what = f"--bands {text.strip()!r}"
    items = [t.strip() for t in text.split(",")]
    if not text.strip():
        raise InputError(f"--bands: empty; expected indices like 0,5,127 or ranges like 0-15 "
                         f"(0..{dims - 1})")
    bands: list[int] = []
    for item in items:
        lo, sep, hi = item.partition("-")
        try:
            a = int(lo if sep else item)
            b = int(hi) if sep else a
        except ValueError:
            raise InputError(f"{what}: {item!r} is not a band index or a range like 0-15 "
                             f"(0..{dims - 1})") from None
        if a > b:
            raise InputError(f"{what}: range {item!r} runs backwards (expected low-high, "
                             "e.g. 0-15)")
        if b >= dims:  # before expanding: "0-99999999" must not build a huge list
            raise InputError(f"{what}: band {max(a, dims)} is beyond the store's {dims} "
                             f"dimensions (0..{dims - 1})")
        bands.extend(range(a, b + 1))
    return check_bands(bands, dims, what)


__all__ = ["check_bands", "parse_bands"]
