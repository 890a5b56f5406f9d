"""Local GeoTIFF / COG files described by a filename template.

A template is a path with fields in braces, for example::

    /data/s2/{date}/{granule}_{band}.tif        one file per band per date
    /data/s1/S1_{orbit}_{date}_{band}.tif       S1, orbit in the name
    /data/s2/{date}_{granule}.tif               multi-band files (give `s2_band_order`)

Fields: `{date}` (YYYY-MM-DD or YYYYMMDD, optionally followed by a time), `{band}` (B04, B8A,
SCL, VV, VH; B4 means B04; case-insensitive), `{orbit}` (asc/ascending/desc/descending/A/D),
`{granule}` (any text naming the granule: files of one date with different granules are
different footprints), and any other `{name}` matches free text. The template's fields become `*`
for globbing and named groups for parsing. Files of one (date, orbit, granule) are one granule.

Every file is opened once at search time (header only) for its footprint, CRS and metadata tags;
a processing baseline tag (`PROCESSING_BASELINE`) or `BOA_ADD_OFFSET_APPLIED` decides the BOA
offset where present, the acquisition date otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import glob as _glob
import re
from pathlib import Path
from typing import Any

from tessera.bands import S1_ORBIT_NAMES, S1_POLS, S2_BANDS
from tessera.preprocess.acquisition import (Granule, PreprocessError, RasterAsset, S1Units,
                                            Sensor, bbox_intersects)
from tessera.geo import TargetGrid

S2_FILE_BANDS = (*S2_BANDS, "SCL")
_FIELD = re.compile(r"\{(\w+)\}")
_PATTERNS = {
    "date": r"\d{4}-?\d{2}-?\d{2}(?:[T_]?\d{2}:?\d{2}:?\d{2}(?:\.\d+)?Z?)?",
    "band": r"[A-Za-z0-9]+",
    "orbit": r"[A-Za-z]+",
    "granule": r"[^/\\]+?",
}


def template_glob(template: str) -> str:
    return _FIELD.sub("*", template)


def template_regex(template: str) -> re.Pattern[str]:
    out, pos, seen = [], 0, set()
    for m in _FIELD.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        name = m.group(1)
        pat = _PATTERNS.get(name, r"[^/\\]*?")
        out.append(f"(?P={name})" if name in seen else f"(?P<{name}>{pat})")
        seen.add(name)
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out) + "$")


def parse_date(text: str, where: str) -> _dt.date:
    digits = re.sub(r"\D", "", text)[:8]
    try:
        return _dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except (ValueError, IndexError):
        raise PreprocessError(f"{where}: date {text!r} is not a calendar date "
                              "(expected YYYY-MM-DD or YYYYMMDD)") from None


def normalise_band(name: str) -> str:
    b = name.upper()
    m = re.fullmatch(r"B(\d)", b)
    return f"B0{m.group(1)}" if m else b


def _orbit(text: str, where: str) -> str:
    try:
        return S1_ORBIT_NAMES[text.lower()]
    except KeyError:
        raise PreprocessError(f"{where}: orbit {text!r}, expected ascending/asc/A or "
                              "descending/desc/D") from None


@dataclasses.dataclass
class _Header:
    crs: Any
    lonlat_bbox: tuple[float, float, float, float]
    count: int
    tags: dict[str, str]


def _header(path: str) -> _Header:
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.warp import transform_bounds
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise PreprocessError(f"{path}: no CRS in the file; a georeferenced raster "
                                      "(GeoTIFF/COG with a CRS) is expected")
            bbox = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
            return _Header(src.crs, tuple(bbox), src.count, {k.upper(): v
                                                              for k, v in src.tags().items()})
    except PreprocessError:
        raise
    except (RasterioError, OSError) as exc:
        raise PreprocessError(f"{path}: not a readable GeoTIFF/COG ({exc})") from None


@dataclasses.dataclass
class FilesSource:
    """Sentinel-2 and/or Sentinel-1 rasters from filename templates (see the module docstring)."""

    s2: str | None = None
    s1: str | None = None
    s2_band_order: tuple[str, ...] | None = None  # multi-band S2 files: band i+1 is this name
    s1_band_order: tuple[str, ...] | None = None  # multi-band S1 files, e.g. ("VV", "VH")
    s1_units: S1Units = "linear"                  # linear power, db, or int16 (TESSERA code)
    s1_orbit: str | None = None                   # orbit of every S1 file when not in the name
    name: str = "files"

    def __post_init__(self) -> None:
        if not self.s2 and not self.s1:
            raise PreprocessError("files source: give a Sentinel-2 and/or Sentinel-1 filename "
                                  "template (--s2 / --s1)")
        for tpl, order, what in ((self.s2, self.s2_band_order, "S2"),
                                 (self.s1, self.s1_band_order, "S1")):
            if tpl and "{date}" not in tpl:
                raise PreprocessError(f"{what} template {tpl!r}: needs a {{date}} field")
            if tpl and "{band}" not in tpl and not order:
                raise PreprocessError(f"{what} template {tpl!r}: without a {{band}} field the "
                                      f"files are multi-band; give the {what} band order")
        if self.s1 and "{orbit}" not in self.s1 and not self.s1_orbit:
            raise PreprocessError(f"S1 template {self.s1!r}: needs an {{orbit}} field, or give "
                                  "the orbit of all files (--s1-orbit ascending|descending)")
        if self.s1_units not in ("linear", "db", "int16"):
            raise PreprocessError(f"s1_units={self.s1_units!r}: expected linear, db or int16")

    def describe(self) -> dict[str, Any]:
        return {"kind": "files", "location": self.s2 or self.s1, "s2": self.s2, "s1": self.s1,
                "s2_band_order": self.s2_band_order, "s1_band_order": self.s1_band_order,
                "s1_units": self.s1_units, "s1_orbit": self.s1_orbit}

    def search(self, grid: TargetGrid, year: int) -> list[Granule]:
        bounds = grid.lonlat_bounds()
        out: list[Granule] = []
        if self.s2:
            out += self._granules("s2", self.s2, self.s2_band_order, S2_FILE_BANDS, year, bounds)
        if self.s1:
            out += self._granules("s1", self.s1, self.s1_band_order, S1_POLS, year, bounds)
        return out

    def _granules(self, sensor: Sensor, template: str, order: tuple[str, ...] | None,
                  needed: tuple[str, ...], year: int, bounds: tuple[float, float, float, float]
                  ) -> list[Granule]:
        files = sorted(_glob.glob(template_glob(template)))
        if not files:
            raise PreprocessError(f"no files match the {sensor.upper()} template {template!r}")
        rx = template_regex(template)
        groups: dict[tuple, dict[str, tuple[str, int]]] = {}
        for f in files:
            m = rx.match(f)
            if not m:
                raise PreprocessError(f"{f}: matches the glob of {template!r} but not its fields")
            fields = m.groupdict()
            date = parse_date(fields["date"], f)
            if date.year != year:
                continue
            orbit: str | None = None
            if "orbit" in fields:
                orbit = _orbit(fields["orbit"], f)
            elif sensor == "s1":
                assert self.s1_orbit is not None  # __post_init__: no {orbit} field needs it
                orbit = _orbit(self.s1_orbit, "--s1-orbit")
            key = (date, orbit, fields.get("granule") or "")
            bands = groups.setdefault(key, {})
            if "band" in fields:
                b = normalise_band(fields["band"])
                if b not in needed:
                    continue  # other bands (B01, B09, AOT, ...) are not used
                if b in bands:
                    raise PreprocessError(f"{f}: band {b} of {date} given twice (also "
                                          f"{bands[b][0]}); add a {{granule}} field if these are "
                                          "different granules")
                bands[b] = (f, 1)
            else:
                if bands:
                    raise PreprocessError(f"{f}: a second multi-band file for {date} (also "
                                          f"{next(iter(bands.values()))[0]}); add a {{granule}} "
                                          "field if these are different granules")
                for i, b in enumerate(order or ()):
                    bands[normalise_band(b)] = (f, i + 1)
        out = []
        for (date, orbit, gran), bands in sorted(groups.items(), key=lambda kv: str(kv[0])):
            first = next(iter(bands.values()))[0]
            missing = [b for b in needed if b not in bands]
            if missing:
                raise PreprocessError(f"{sensor.upper()} {date}{' ' + orbit if orbit else ''} "
                                      f"(granule {gran or Path(first).name}): missing band(s) "
                                      f"{', '.join(missing)}; found {', '.join(sorted(bands))}")
            headers = {}
            for b in needed:
                path, band_index = bands[b]
                if path not in headers:
                    headers[path] = _header(path)
                hd = headers[path]
                if band_index > hd.count:
                    raise PreprocessError(f"{path}: {hd.count} band(s), but the band order puts "
                                          f"{b} at band {band_index}")
            ref_path, ref = next(iter(headers.items()))
            for p, h in headers.items():
                if h.crs != ref.crs:
                    raise PreprocessError(f"{p}: CRS {h.crs.to_string()} differs from "
                                          f"{ref.crs.to_string()} of {ref_path}, another band of "
                                          f"the same granule ({date}); one granule is one product "
                                          "in one CRS")
            if not bbox_intersects(ref.lonlat_bbox, bounds):
                continue
            tags = ref.tags
            baseline = tags.get("PROCESSING_BASELINE")
            applied = tags.get("BOA_ADD_OFFSET_APPLIED")
            gid = gran or _granule_id(first, bands)
            out.append(Granule(
                sensor=sensor, date=date, id=gid,
                assets={b: RasterAsset(p, i) for b, (p, i) in bands.items() if b in needed},
                orbit=orbit, baseline=baseline,
                boa_offset_applied=None if applied is None else applied.lower() in ("1", "true",
                                                                                  "yes"),
                s1_units=self.s1_units, bbox=ref.lonlat_bbox, source=first))
        return out


def _granule_id(first: str, bands: dict[str, tuple[str, int]]) -> str:
    """The name of the granule's first file, its band part blanked when the granule's bands are
    separate files: stable and unique per granule."""
    band = next(iter(bands))
    stem = Path(first).name
    idx = stem.upper().rfind(band)
    if idx >= 0 and len({p for p, _ in bands.values()}) > 1:
        return stem[:idx] + "*" + stem[idx + len(band):]
    return stem
