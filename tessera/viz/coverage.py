"""Which tiles a store holds: a table per year, a map (one panel per year) and a JSON document
(`coverage_doc`, schema below) that programs read instead of the picture.

Coverage JSON (`"format": "tessera-coverage"`, `"format_version": 1`); lon/lat in degrees
(EPSG:4326), boxes as [west, south, east, north]:

    format, format_version
    store            where the store is (as `Store.describe()`), or null
    created          UTC time of writing, ISO 8601
    bbox             the union of all listed tiles' 0.1 degree cells, or null when none
    totals           {tile_years, tiles (distinct), years (how many)}
    models           [{model, dims, weights, version, years: [..], tile_years}] per distinct
                     embedding model ("" = not recorded by the store)
    years            [{year, tiles (count), valid_pixels (-1: some tile's count is unknown,
                     as in GeoTessera's registries), bytes (all files), bbox,
                     tile_list: [{tile, lon, lat (the cell's centre), bbox, crs, width, height,
                                  valid_pixels (-1 = unknown), version, model}] sorted by tile}]
                     sorted by year
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tessera.atomic import atomic_path
from tessera.errors import VizError
from tessera.store.layout import FILE_KINDS
from tessera.store.manifest import Manifest

if TYPE_CHECKING:
    import pandas as pd


def coverage_table(manifest: Manifest) -> pd.DataFrame:
    """pandas DataFrame, one row per year: year, tiles, valid_pixels, bytes (all files)."""
    import pandas as pd

    cols = ["year", "tiles", "valid_pixels", "bytes"]
    if not len(manifest):
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    df = manifest.to_pandas()
    df["bytes"] = sum(df[f"{k}_size"].astype("int64") for k in FILE_KINDS)
    g = df.groupby("year", sort=True).agg(tiles=("tile", "nunique"),
                                          valid_pixels=("valid_pixels", "sum"),
                                          unknown=("valid_pixels", "min"),
                                          bytes=("bytes", "sum")).reset_index()
    # -1: a store that does not record counts (GeoTessera's registries) for some tile
    g.loc[g["unknown"] < 0, "valid_pixels"] = -1
    return g[cols].astype("int64")


def coverage_map(manifest: Manifest, png_path: str | os.PathLike,
                 years: Sequence[int] | None = None) -> Path:
    """A PNG with one panel per year showing which 0.1 degree tiles the store holds (lon/lat
    axes, each tile cell a filled rectangle, counts in the titles). Matplotlib without pyplot, so
    it works headless and leaves global state alone."""
    from matplotlib.collections import PatchCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from tessera.store.synthetic import SIMULATED_VERSION

    have = manifest.years()
    if not have:
        raise VizError("coverage map: the manifest has no tiles")
    years = have if years is None else sorted({int(y) for y in years})
    absent = [y for y in years if y not in have]
    if not years or absent:
        raise VizError(f"coverage map: year(s) {', '.join(map(str, absent)) or '(none given)'} "
                       f"not in the manifest (it has {', '.join(map(str, have))})")
    m = manifest.query(year=years)
    df = m.to_pandas()
    b = m.table.column("bbox").combine_chunks()
    xmin, ymin = np.asarray(b.field("xmin")), np.asarray(b.field("ymin"))
    xmax, ymax = np.asarray(b.field("xmax")), np.asarray(b.field("ymax"))
    pad = max(0.05, 0.05 * max(xmax.max() - xmin.min(), ymax.max() - ymin.min()))
    lim_x = (xmin.min() - pad, xmax.max() + pad)
    lim_y = (ymin.min() - pad, ymax.max() + pad)
    aspect = 1.0 / max(math.cos(math.radians(float((ymin.min() + ymax.max()) / 2))), 0.1)

    ncols = min(len(years), 3)
    nrows = math.ceil(len(years) / ncols)
    fig = Figure(figsize=(4.5 * ncols, 4.2 * nrows + 0.5), dpi=100)
    yr = df["year"].to_numpy()
    for i, y in enumerate(years):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        sel = yr == y
        rects = [Rectangle((x0, y0), x1 - x0, y1_ - y0) for x0, y0, x1, y1_ in
                 zip(xmin[sel], ymin[sel], xmax[sel], ymax[sel])]
        ax.add_collection(PatchCollection(rects, facecolor=f"C{i % 10}", edgecolor="black",
                                          linewidth=0.3, alpha=0.8))
        ax.set_xlim(*lim_x)
        ax.set_ylim(*lim_y)
        ax.set_aspect(aspect)
        ax.set_xlabel("longitude (deg)")
        ax.set_ylabel("latitude (deg)")
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.set_title(f"{y}: {int(sel.sum())} tiles, {int(df['valid_pixels'][sel].sum()):,} "
                     "valid px", fontsize=9)
    simulated = " (SIMULATED)" if (df["version"] == SIMULATED_VERSION).any() else ""
    fig.suptitle(f"Store coverage{simulated}: {len(df)} tile-years, {df['tile'].nunique()} "
                 f"tiles, {len(years)} year(s)", fontsize=10)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(png_path)


COVERAGE_FORMAT = "tessera-coverage"
COVERAGE_FORMAT_VERSION = 1


def _box(b: Sequence[float]) -> list[float]:
    return [round(float(v), 6) for v in b]


def coverage_doc(manifest: Manifest, store: str | None = None,
                 years: Sequence[int] | None = None) -> dict[str, Any]:
    """The coverage of a manifest (of `years`, default all) as a JSON-able dict; the schema is
    in the module docstring."""
    from tessera.geo import parse_tile_name

    have = manifest.years()
    if years is not None:
        want = sorted({int(y) for y in years})
        absent = [y for y in want if y not in have]
        if absent:
            raise VizError(f"coverage: year(s) {', '.join(map(str, absent))} not in the "
                           f"manifest (it has {', '.join(map(str, have)) or 'none'})")
        manifest = manifest.query(year=want)
    entries = sorted(manifest.entries(), key=lambda e: (e.year, e.tile))
    sizes = {(e.tile, e.year): sum(f.size for f in e.files.values()) for e in entries}
    cells = {e.tile: parse_tile_name(e.tile).bounds for e in entries}

    def union(names: Sequence[str]) -> list[float] | None:
        if not names:
            return None
        bs = np.array([cells[n] for n in names], np.float64)
        return _box((bs[:, 0].min(), bs[:, 1].min(), bs[:, 2].max(), bs[:, 3].max()))

    out_years = []
    for y in sorted({e.year for e in entries}):
        es = [e for e in entries if e.year == y]
        valid = [int(e.valid_pixels) for e in es]
        out_years.append({
            "year": int(y), "tiles": len(es),
            "valid_pixels": -1 if min(valid) < 0 else int(sum(valid)),
            "bytes": int(sum(sizes[(e.tile, e.year)] for e in es)),
            "bbox": union([e.tile for e in es]),
            "tile_list": [{"tile": e.tile, "lon": round(float(e.lon), 6),
                           "lat": round(float(e.lat), 6), "bbox": _box(cells[e.tile]),
                           "crs": e.crs, "width": int(e.width), "height": int(e.height),
                           "valid_pixels": int(e.valid_pixels), "version": e.version,
                           "model": e.model} for e in es]})
    models: dict[tuple[str, int, str, str], list[int]] = {}
    for e in entries:
        models.setdefault((e.model, int(e.dims), e.weights, e.version), []).append(e.year)
    return {
        "format": COVERAGE_FORMAT, "format_version": COVERAGE_FORMAT_VERSION,
        "store": store,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "bbox": union(sorted(cells)),
        "totals": {"tile_years": len(entries), "tiles": len(cells), "years": len(out_years)},
        "models": [{"model": m, "dims": d, "weights": w, "version": v,
                    "years": sorted(set(ys)), "tile_years": len(ys)}
                   for (m, d, w, v), ys in sorted(models.items())],
        "years": out_years,
    }


def write_coverage_json(manifest: Manifest, path: str | os.PathLike, store: str | None = None,
                        years: Sequence[int] | None = None) -> Path:
    """`coverage_doc` written as JSON, atomically."""
    doc = coverage_doc(manifest, store, years)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return Path(path)


def coverage_json_path(png: str | os.PathLike) -> Path:
    """Where the coverage JSON goes beside a coverage map: `x.png` -> `x.json`."""
    return Path(png).with_suffix(".json")


__all__ = ["COVERAGE_FORMAT", "COVERAGE_FORMAT_VERSION", "coverage_doc", "coverage_json_path",
           "coverage_map", "coverage_table", "write_coverage_json"]
