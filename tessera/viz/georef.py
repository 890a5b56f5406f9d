"""Where a picture lies: reprojecting a finished RGBA picture into another CRS (`--crs`, e.g.
EPSG:3857 so it drops onto web maps) and the sidecars that georeference a PNG.

A PNG holds no georeferencing. Beside `x.png` go a world file `x.pgw` (the six affine numbers,
ESRI / GDAL convention: pixel width, row rotation, column rotation, pixel height (negative),
then the x and y of the CENTRE of the top-left pixel) and `x.png.aux.xml` (GDAL's sidecar,
holding the CRS as WKT): GDAL, QGIS and rasterio then open the PNG in place.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from tessera.atomic import atomic_path
from tessera.errors import VizError

WEB_MERCATOR = "EPSG:3857"


def parse_crs(crs: Any) -> Any:
    """A rasterio CRS from anything it reads (`EPSG:3857`, `3857`, WKT, PROJ), by EPSG code when
    there is one; a VizError naming the input otherwise."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    if isinstance(crs, CRS):
        return crs
    text = str(crs).strip()
    try:
        c = CRS.from_epsg(int(text)) if text.isdigit() else CRS.from_user_input(text)
    except (CRSError, ValueError) as exc:
        raise VizError(f"--crs {crs!r}: not a coordinate reference system ({exc}); expected "
                       "e.g. EPSG:3857") from None
    epsg = c.to_epsg()
    return CRS.from_epsg(epsg) if epsg else c


def reproject_rgba(rgba: np.ndarray, src_crs: Any, src_transform: Any, dst_crs: Any,
                   max_size: int | None = None) -> tuple[np.ndarray, Any, Any]:
    """An RGBA picture in `dst_crs`: (uint8 (h, w, 4), transform, CRS). The grid covers the
    whole source picture at about its pixel count (GDAL's default for a warp), coarsened until
    neither side exceeds `max_size`; nearest neighbour, so colours stay the fit's colours and
    transparent pixels stay transparent (alpha is carried as a band)."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    dst = parse_crs(dst_crs)
    h, w, _ = rgba.shape
    left, top = src_transform * (0, 0)
    right, bottom = src_transform * (w, h)
    bounds = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    try:
        transform, width, height = calculate_default_transform(src_crs, dst, w, h, *bounds)
    except Exception as exc:  # GDAL: the picture's area has no place in the target CRS
        raise VizError(f"--crs {dst.to_string()}: the picture cannot be reprojected there "
                       f"({exc})") from None
    if max_size is not None and max(width, height) > int(max_size):
        f = max(width, height) / int(max_size)
        from affine import Affine
        transform = transform * Affine.scale(f)
        width = max(1, math.ceil(width / f))
        height = max(1, math.ceil(height / f))
        while max(width, height) > int(max_size):  # rounding up can overshoot by a pixel
            f2 = max(width, height) / int(max_size)
            transform = transform * Affine.scale(f2)
            width, height = max(1, math.ceil(width / f2)), max(1, math.ceil(height / f2))
    out = np.zeros((4, height, width), np.uint8)
    reproject(np.ascontiguousarray(np.moveaxis(rgba, 2, 0)), out, src_transform=src_transform,
              src_crs=src_crs, dst_transform=transform, dst_crs=dst,
              resampling=Resampling.nearest, num_threads=1)
    out[:3, out[3] == 0] = 0
    return np.moveaxis(out, 0, 2).copy(), transform, dst


def world_file_path(png: str | os.PathLike) -> Path:
    """`x.png` -> `x.pgw` (other suffixes: first and last letter + `w`, e.g. `.jpg` -> `.jgw`)."""
    p = Path(png)
    suf = p.suffix.lower().lstrip(".")
    ext = f".{suf[0]}{suf[-1]}w" if len(suf) >= 2 else ".wld"
    return p.with_suffix(ext)


def aux_xml_path(png: str | os.PathLike) -> Path:
    p = Path(png)
    return p.with_name(p.name + ".aux.xml")


def write_world_file(png: str | os.PathLike, transform: Any, crs: Any) -> list[Path]:
    """The world file and the GDAL `.aux.xml` (CRS) of a picture, atomically; returns both."""
    t = transform
    cx, cy = t * (0.5, 0.5)  # the centre of the top-left pixel
    lines = [t.a, t.d, t.b, t.e, cx, cy]
    wf = world_file_path(png)
    with atomic_path(wf) as tmp:
        tmp.write_text("".join(f"{v!r}\n" for v in map(float, lines)))
    from xml.sax.saxutils import escape

    aux = aux_xml_path(png)
    with atomic_path(aux) as tmp:
        tmp.write_text(f"<PAMDataset>\n  <SRS dataAxisToSRSAxisMapping=\"1,2\">"
                       f"{escape(parse_crs(crs).to_wkt())}</SRS>\n</PAMDataset>\n")
    return [wf, aux]


__all__ = ["WEB_MERCATOR", "aux_xml_path", "parse_crs", "reproject_rgba", "world_file_path",
           "write_world_file"]
