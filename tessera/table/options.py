"""How to read a point table: `TableOptions`, the encodings and column names it accepts, and
the warning category of the table reader.

Why a module of its own: every step of the reader (columns, values, preparation, embedding)
takes the options, and the command line builds them; none of that needs the reader itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from tessera.errors import TableError


class TableWarning(UserWarning):
    """Something the user should know about a table (filled bands, dropped samples, random init)."""


S2_SCALES: tuple[str, ...] = ("x10000", "reflectance")
S1_ENCODINGS: tuple[str, ...] = ("db", "linear", "int16", "amplitude")
#: Date column names tried in this order when `date_column` is not given.
DATE_COLUMNS: tuple[str, ...] = ("date", "timestamp", "time")
#: Offset of the WorldCereal amplitude DN: sigma0 [dB] = 20 log10(DN) - 83.
WORLDCEREAL_S1_OFFSET = -83.0
#: Real Sentinel-2 bands that TESSERA does not use: recognised, ignored.
UNUSED_S2_BANDS: tuple[str, ...] = ("B01", "B09", "B10")
#: Real Sentinel-1 polarisations that TESSERA does not use: recognised, ignored.
UNUSED_S1_POLS: tuple[str, ...] = ("HH", "HV")
#: Auxiliary columns a rename may target, besides the bands and the id / date columns.
AUX_COLUMNS: tuple[str, ...] = ("SCL", "valid", "orbit")


# --- options ----------------------------------------------------------------------------------

@dataclasses.dataclass
class TableOptions:
    """How to read a point table.

    s2_scale: "x10000" (reflectance x 10 000, default) or "reflectance" (float, 0-1).
    s1_encoding: "db" (standard 10 log10 power, default), "linear" (power), "int16" (the TESSERA
        code, 0 = no data) or "amplitude" (DN; dB = 20 log10(DN) + s1_offset).
    s1_offset: dB offset of the amplitude DN (default -83, the WorldCereal value); only with
        s1_encoding="amplitude".
    nodata: band values meaning "missing" (e.g. 65535), besides NaN.
    rename: {your column: band or auxiliary name}, applied first (e.g. {"red": "B04"}).
    s2_pattern / s1_pattern: column name patterns with `{band}` / `{pol}`, e.g. "S2-L2A-{band}",
        "S1-SIGMA0-{pol}".
    year: keep the rows of this calendar year only (needed when the dates span several years).
    fill_missing: fill absent or entirely-nodata S2 bands by `tessera.bands.FILL_RULES` (with a
        warning).
    id_column: the sample id column. date_column: the date column (default: the first of
        `DATE_COLUMNS` present).
    """

    s2_scale: str = "x10000"
    s1_encoding: str = "db"
    s1_offset: float | None = None
    nodata: Sequence[float] = ()
    rename: Mapping[str, str] = dataclasses.field(default_factory=dict)
    s2_pattern: str | None = None
    s1_pattern: str | None = None
    year: int | None = None
    fill_missing: bool = False
    id_column: str = "sample_id"
    date_column: str | None = None

    def __post_init__(self) -> None:
        if self.s2_scale not in S2_SCALES:
            raise TableError(f"s2_scale {self.s2_scale!r}: expected one of {', '.join(S2_SCALES)}")
        if self.s1_encoding not in S1_ENCODINGS:
            raise TableError(f"s1_encoding {self.s1_encoding!r}: expected one of "
                             f"{', '.join(S1_ENCODINGS)}")
        if self.s1_offset is not None and self.s1_encoding != "amplitude":
            raise TableError(f"s1_offset (--s1-offset) applies to s1_encoding 'amplitude' only, "
                             f"not {self.s1_encoding!r}")
        nodata: float | np.number | Sequence[float | np.number] = self.nodata  # one number too
        if isinstance(nodata, (int, float, np.number)):
            nodata = (nodata,)
        try:
            self.nodata = tuple(float(v) for v in (nodata or ()))
        except (TypeError, ValueError):
            raise TableError(f"nodata {nodata!r}: expected numbers") from None
        self.rename = dict(self.rename or {})
        for name, pattern, key in (("s2_pattern", self.s2_pattern, "{band}"),
                                   ("s1_pattern", self.s1_pattern, "{pol}")):
            if pattern is not None and pattern.count(key) != 1 and not (
                    name == "s1_pattern" and pattern.count("{band}") == 1):
                raise TableError(f"{name} {pattern!r}: expected exactly one {key} placeholder, "
                                 f"e.g. {'S2-L2A-{band}' if key == '{band}' else 'S1-SIGMA0-{pol}'}")
        if self.year is not None:
            self.year = int(self.year)
            if not 1900 <= self.year <= 2200:
                raise TableError(f"year {self.year}: expected a calendar year such as 2022")

    @property
    def amplitude_offset(self) -> float:
        return WORLDCEREAL_S1_OFFSET if self.s1_offset is None else float(self.s1_offset)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["nodata"] = list(self.nodata)
        return d


def merge_options(options: TableOptions | None, kwargs: Mapping[str, Any]) -> TableOptions:
    known = {f.name for f in dataclasses.fields(TableOptions)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unknown table option(s) {', '.join(unknown)}; expected "
                        f"{', '.join(sorted(known))}")
    if options is None:
        return TableOptions(**kwargs)
    return dataclasses.replace(options, **kwargs) if kwargs else options
