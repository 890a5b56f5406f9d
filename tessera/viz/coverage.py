"""Which tiles a store holds: a table per year and a map (one panel per year)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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


__all__ = ["coverage_map", "coverage_table"]
