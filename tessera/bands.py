"""Sensor constants of TESSERA v1.0 (SPEC sections 1-2) and the value encodings around them.

Everything that touches raw Sentinel values goes through here, so the band order, the SCL
classes, the S1 int16 code and the BOA offset rule exist exactly once in the code base.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np

from tessera.errors import InputError

# --- Sentinel-2 -------------------------------------------------------------------------------
#: The model's S2 band order (not wavelength order).
S2_BANDS: tuple[str, ...] = ("B04", "B02", "B03", "B08", "B8A", "B05", "B06", "B07", "B11", "B12")
#: Bands delivered natively at 10 m; the others are 20 m and resampled to the 10 m grid.
S2_10M_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08")

S2_MEAN = np.array(
    [1711.0938, 1308.8511, 1546.4543, 3010.1293, 3106.5083,
     2068.3044, 2685.0845, 2931.5889, 2514.6928, 1899.4922], dtype=np.float32)
S2_STD = np.array(
    [1926.1026, 1862.9751, 1803.1792, 1741.7837, 1677.4543,
     1888.7862, 1736.3090, 1715.8104, 1514.5199, 1398.4779], dtype=np.float32)

#: Scene classification (SCL) classes that mark an observation invalid / valid.
SCL_INVALID: frozenset[int] = frozenset({0, 1, 2, 3, 8, 9})
SCL_VALID: frozenset[int] = frozenset({4, 5, 6, 7, 10, 11})
SCL_NAMES: dict[int, str] = {
    0: "no data", 1: "saturated", 2: "dark", 3: "cloud shadow", 4: "vegetation", 5: "bare",
    6: "water", 7: "unclassified", 8: "cloud medium", 9: "cloud high", 10: "thin cirrus", 11: "snow",
}

#: Processing baseline 04.00 (acquisitions from this date) adds BOA_ADD_OFFSET to L2A values.
BOA_OFFSET = 1000
BOA_OFFSET_FIRST_DATE = _dt.date(2022, 1, 25)
BOA_OFFSET_BASELINE = (4, 0)

# --- Sentinel-1 -------------------------------------------------------------------------------
S1_POLS: tuple[str, ...] = ("VV", "VH")
S1_ORBITS: tuple[str, ...] = ("ascending", "descending")
#: Spellings of the orbit accepted in files and tables (lower case) -> the orbit's name.
S1_ORBIT_NAMES: dict[str, str] = {"ascending": "ascending", "asc": "ascending", "a": "ascending",
                                  "descending": "descending", "desc": "descending",
                                  "d": "descending"}
S1_MEAN = np.array([5484.0407, 3003.7812], dtype=np.float32)
S1_STD = np.array([1871.2334, 1726.0670], dtype=np.float32)

#: Normalisation epsilon: x_norm = (x - mean) / (std + EPS).
NORM_EPS = 1e-9

NORMALISATION_V1 = {
    "s2_mean": S2_MEAN.tolist(), "s2_std": S2_STD.tolist(),
    "s1_mean": S1_MEAN.tolist(), "s1_std": S1_STD.tolist(), "eps": NORM_EPS,
}


def scl_valid(scl: np.ndarray) -> np.ndarray:
    """Boolean validity of SCL codes: True for {4, 5, 6, 7, 10, 11}."""
    scl = np.asarray(scl)
    return np.isin(scl, sorted(SCL_VALID))


def s1_code(x20: np.ndarray) -> np.ndarray:
    """The published int16 code of a value in the published unit u = 20*log10(power):
    clip(round((u + 50) * 200), 0, 32767); NaN (no data) becomes 0."""
    u = np.asarray(x20, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        v = np.clip(np.round((u + 50.0) * 200.0), 0, 32767)
    return np.where(np.isfinite(u), v, 0).astype(np.int16)


def s1_linear_to_int16(x: np.ndarray) -> np.ndarray:
    """Encode linear backscatter power exactly as published: clip((20*log10(x) + 50) * 200,
    0, 32767) for x > 0, 0 (no data) otherwise.

    Note the 20*log10 of a *power*: the code's unit is twice the usual dB. The v1 means decode to
    -22.6 / -35.0 in that unit, i.e. VV -11.3 dB and VH -17.5 dB, typical land backscatter.
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(x > 0, 20.0 * np.log10(np.where(x > 0, x, 1.0)), np.nan)
    return s1_code(u)


def s1_db_to_int16(db: np.ndarray) -> np.ndarray:
    """Encode standard backscatter dB (10*log10 power, as GEE, SNAP and WorldCereal give it):
    the same code as `s1_linear_to_int16(10 ** (db / 10))`. NaN (no data) becomes 0."""
    return s1_code(2.0 * np.asarray(db, dtype=np.float64))


def s1_int16_to_db(v: np.ndarray) -> np.ndarray:
    """Decode the int16 code to standard dB (float32); 0 (no data) becomes NaN."""
    v = np.asarray(v)
    db = (v.astype(np.float32) / 200.0 - 50.0) / 2.0
    return np.where(v == 0, np.float32(np.nan), db).astype(np.float32)


def s1_amplitude_dn_to_db(dn: np.ndarray, offset: float = -83.0) -> np.ndarray:
    """Amplitude DN to dB: 20*log10(DN) + offset (WorldCereal uses -83). DN <= 0 -> NaN."""
    dn = np.asarray(dn, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dn > 0, 20.0 * np.log10(np.where(dn > 0, dn, 1.0)) + offset, np.nan)


def s1_valid(sar: np.ndarray) -> np.ndarray:
    """A S1 date is valid for a pixel iff VV != 0 or VH != 0 (last axis = [VV, VH])."""
    sar = np.asarray(sar)
    return (sar[..., 0] != 0) | (sar[..., 1] != 0)


def parse_baseline(baseline: str | float | None) -> tuple[int, int] | None:
    """Parse a processing baseline such as '04.00', 'N0400', '5.09' or 4.0 into (major, minor)."""
    if baseline is None:
        return None
    s = str(baseline).strip().upper().lstrip("N")
    if "." in s:
        major, minor = s.split(".", 1)
    elif len(s) == 4 and s.isdigit():
        major, minor = s[:2], s[2:]
    else:
        raise InputError(f"processing baseline {baseline!r}: expected a form like '04.00' or 'N0400'")
    return int(major), int(minor[:2] or 0)


def needs_boa_offset(date: _dt.date | None = None, baseline: str | float | None = None) -> bool:
    """Whether L2A values of an acquisition carry BOA_ADD_OFFSET = 1000.

    The processing baseline decides when known (>= 04.00); otherwise the acquisition date
    (from 2022-01-25). One of the two must be given.
    """
    parsed = parse_baseline(baseline)
    if parsed is not None:
        return parsed >= BOA_OFFSET_BASELINE
    if date is None:
        raise InputError("needs_boa_offset: give the acquisition date or the processing baseline")
    if isinstance(date, _dt.datetime):
        date = date.date()
    return date >= BOA_OFFSET_FIRST_DATE


def remove_boa_offset(values: np.ndarray) -> np.ndarray:
    """Subtract the BOA offset once: values >= 1000 lose 1000, values below (incl. 0 = no data)
    become 0. Call only on data that `needs_boa_offset` says still carries it."""
    v = np.asarray(values)
    out = np.where(v >= BOA_OFFSET, v.astype(np.int32) - BOA_OFFSET, 0)
    return out.astype(v.dtype if v.dtype.kind in "ui" else np.int32)


# (a torch tensor works as well and gives a tensor; not in the annotations, as torch is
# optional and this module must not import it, not even for type checking)
def normalise_s2(x: np.ndarray) -> np.ndarray:
    """(x - mean) / (std + eps) over the last axis (10 bands, model order)."""
    return (x - S2_MEAN) / (S2_STD + NORM_EPS)


def normalise_s1(x: np.ndarray) -> np.ndarray:
    """(x - mean) / (std + eps) over the last axis ([VV, VH] int16 code)."""
    return (x - S1_MEAN) / (S1_STD + NORM_EPS)


# --- filling absent S2 bands ------------------------------------------------------------------
#: `fill_missing`: a band that is absent (or entirely nodata) is filled, row by row, with the mean
#: of its spectral neighbours (central wavelengths in nm in the comments). Rules are applied
#: repeatedly, so a filled band can feed another (B07 from B06 and a B8A filled from B08). A row
#: where a source is missing gets no value (its S2 observation is then invalid).
FILL_RULES: dict[str, tuple[str, ...]] = {
    "B02": ("B03",),  # 490 <- 560
    "B03": ("B02", "B04"),  # 560 <- 490, 665
    "B04": ("B03", "B05"),  # 665 <- 560, 705
    "B05": ("B04", "B06"),  # 705 <- 665, 740
    "B06": ("B05", "B07"),  # 740 <- 705, 783
    "B07": ("B06", "B8A"),  # 783 <- 740, 865
    "B08": ("B8A",),  # 842 <- 865
    "B8A": ("B08",),  # 865 <- 842
    "B11": ("B12",),  # 1610 <- 2190
    "B12": ("B11",),  # 2190 <- 1610
}


def fill_s2_bands(values: dict[str, np.ndarray], missing: list[str]
                  ) -> tuple[dict[str, list[str]], list[str]]:
    """Fill `missing` S2 bands in `values` by FILL_RULES; returns ({band: sources}, unfillable)."""
    filled: dict[str, list[str]] = {}
    todo = [b for b in S2_BANDS if b in missing]
    progress = True
    while todo and progress:
        progress = False
        for band in list(todo):
            sources = FILL_RULES.get(band, ())
            if sources and all(s in values for s in sources):
                values[band] = np.mean(np.stack([values[s] for s in sources]), axis=0)
                filled[band] = list(sources)
                todo.remove(band)
                progress = True
    return filled, todo
