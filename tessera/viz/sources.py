"""Embedding rasters from files, for pictures (`tessera visualize FILE ...`): what GeoTessera
users have on disk besides a store.

- GeoTIFF (`.tif`, `.tiff`): float embeddings, one band per dimension (tessera's exports:
  bands `A000`.., nodata NaN; GeoTessera's: `Tessera_Band_{i}`, nodata NaN or none); or int8
  codes whose per-pixel scales come from a scale band (tag `TESSERA_SCALE_BAND` naming it, or a
  band described `scale` / `scales`) or from the sibling `<stem>_scales.tif`.
- NumPy tiles (`.npy`): `grid_X_Y.npy` int8 (H, W, D) + `grid_X_Y_scales.npy` float32 (H, W),
  or one float (H, W, D) array; georeferenced by a landmask GeoTIFF (`--landmask`, or found
  where GeoTessera and tessera stores keep it: `grid_X_Y_mask.tiff` / `grid_X_Y.tiff` beside the
  tile, `global_0.1_degree_tiff_all/grid_X_Y.tiff` or `landmasks/*/grid_X_Y.tiff` above it),
  else not georeferenced (a plain picture).
- Zarr (a directory, v2 or v3): GeoTessera's store (zone groups `utm31`.. with `embeddings` int8
  (time, band, y, x), `scales` float32 (time, y, x), +inf = no data and NaN = water, `time` =
  the years, attributes `proj:code` and `spatial:transform`), tessera's export (groups `utm31n`..,
  `embeddings` (y, x, band), `scales` (y, x), NaN = no data) or GeoTessera 0.7's per-tile export
  (`embedding` float32 (y, x, band) with a rioxarray `spatial_ref`). Axes are told apart by the
  arrays' dimension names.

Every raster reads as float32 (h, w, D) embeddings with NaN where there is no data: a
non-finite scale (NaN, +inf) or any non-finite value makes the whole pixel no data, so no-data
pixels never reach a PCA fit. Reads take any rows and columns (sorted index arrays) and keep
memory bounded: a picture of a large raster reads every k-th pixel, never the whole raster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera.errors import VizError
from tessera.geotiff import scales_path

#: Values (pixels x dimensions) read from a GeoTIFF at once (64 MB of float32).
READ_VALUES = 1 << 24
GEOTIFF_SUFFIXES = (".tif", ".tiff")
_TILE = re.compile(r"grid_(-?\d+\.\d+)_(-?\d+\.\d+)")
_YEAR_SUFFIX = re.compile(r"_(\d{4})$")
_SCALE_NAMES = {"scale", "scales", "tessera_scale", "tessera_scales"}
_NOT_EMBEDDINGS_DIRS = {"global_0.1_degree_tiff_all", "landmasks"}


def _tile_of(stem: str) -> str | None:
    m = _TILE.search(stem)
    return f"grid_{m.group(1)}_{m.group(2)}" if m else None


def _year(value: Any) -> int | None:
    try:
        y = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return y if 1900 <= y <= 2200 else None


class EmbeddingRaster:
    """One embedding raster of a file: its size, dimensions, georeferencing (None when the file
    has none) and, when known, its year and grid tile. `read` gives float32 embeddings with NaN
    = no data; `valid` says which pixels hold data (for quantised rasters from the scales alone,
    without reading the codes)."""

    kind = "raster"

    def __init__(self, path: Path, label: str, height: int, width: int, dim: int,
                 crs: Any = None, transform: Any = None, year: int | None = None,
                 tile: str | None = None) -> None:
        self.path, self.label = Path(path), label
        self.height, self.width, self.dim = int(height), int(width), int(dim)
        self.crs, self.transform = crs, transform
        self.year, self.tile = year, tile
        if self.height < 1 or self.width < 1:
            raise VizError(f"{label}: an empty raster ({self.height} x {self.width} px)")
        if self.dim < 3:
            raise VizError(f"{label}: {self.dim} embedding dimension(s); a PCA picture needs at "
                           "least 3")
        if transform is not None and (abs(transform.b) > 0 or abs(transform.d) > 0):
            raise VizError(f"{label}: a rotated pixel grid, which pictures do not support")

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None and self.transform is not None

    def describe(self) -> str:
        where = self.crs.to_string() if self.crs is not None else "not georeferenced"
        return f"{self.label} ({self.height} x {self.width} px, {self.dim}-d, {where})"

    # --- reading ----------------------------------------------------------------------------
    def _read(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(values (h, w, D): codes or floats, scales (h, w) or None) of rows x cols."""
        raise NotImplementedError

    def _scales(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        """Scales (h, w) of rows x cols, None for float rasters."""
        return None

    def read(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 (len(rows), len(cols), D) embeddings, NaN vectors where there is no data."""
        v, s = self._read(_idx(rows), _idx(cols))
        if s is None:
            e = np.asarray(v, np.float32)
            bad = ~np.isfinite(e).all(axis=2)
            if bad.any():
                e = e.copy() if not e.flags.writeable else e
                e[bad] = np.nan
            return e
        s = np.asarray(s, np.float32)
        s = np.where(np.isfinite(s), s, np.float32(np.nan))  # +inf (GeoTessera) = no data
        # as tessera.quantize.dequantize: float32(q) * float32(s), so colours agree with stores
        return np.asarray(v, np.float32) * s[..., None]

    def valid(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """bool (len(rows), len(cols)): which pixels hold data."""
        rows, cols = _idx(rows), _idx(cols)
        s = self._scales(rows, cols)
        if s is not None:
            return np.asarray(np.isfinite(s))
        e = self.read(rows, cols)
        return np.asarray(np.isfinite(e).all(axis=2))


def _idx(a: Any) -> np.ndarray:
    return np.asarray(a, np.int64).reshape(-1)


# --- GeoTIFF ----------------------------------------------------------------------------------

def _scale_bands(tags: dict[str, str], descriptions: Sequence[str | None], count: int,
                 label: str) -> list[int]:
    """1-based bands holding the scales: a tag `TESSERA_SCALE_BAND` (or `*SCALE_BAND*`) naming
    them (1-based numbers, `a-b` ranges, or band descriptions), else bands described `scale`."""
    for key, value in tags.items():
        if "SCALE_BAND" not in key.upper():
            continue
        out: list[int] = []
        for part in str(value).replace(";", ",").split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                out += list(range(int(m.group(1)), int(m.group(2)) + 1))
            elif part.isdigit():
                out.append(int(part))
            elif part in descriptions:
                out.append(list(descriptions).index(part) + 1)
            else:
                raise VizError(f"{label}: tag {key}={value!r}: expected band numbers or "
                               "descriptions")
        if out and min(out) == 0:  # written 0-based
            out = [b + 1 for b in out]
        if not out or max(out) > count:
            raise VizError(f"{label}: tag {key}={value!r} names bands outside 1..{count}")
        return sorted(set(out))
    return [i + 1 for i, d in enumerate(descriptions) if (d or "").strip().lower() in _SCALE_NAMES]


class GeoTiffRaster(EmbeddingRaster):
    kind = "geotiff"

    def __init__(self, path: Path) -> None:
        import rasterio

        path = Path(path)
        try:
            ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise VizError(f"{path}: not a readable GeoTIFF ({' '.join(str(exc).split())})"
                           ) from None
        with ds:
            count, dtypes = ds.count, set(ds.dtypes)
            tags = {str(k): str(v) for k, v in ds.tags().items()}
            desc = list(ds.descriptions)
            crs, transform = ds.crs, ds.transform
            h, w = ds.height, ds.width
            self.nodata = ds.nodata
            interp = [c.name for c in ds.colorinterp]
        label = str(path)
        if len(dtypes) != 1:
            raise VizError(f"{path}: bands of several data types ({', '.join(sorted(dtypes))})")
        dtype = np.dtype(dtypes.pop())
        if dtype == np.uint8 and count in (3, 4) and "red" in interp:
            raise VizError(f"{path}: an RGB picture (uint8 {'RGBA' if count == 4 else 'RGB'}), "
                           "not embeddings (expected float32 bands, or int8 codes with scales)")
        scale_bands = _scale_bands(tags, desc, count, label)
        self.scale_bands = scale_bands
        self.bands = [b for b in range(1, count + 1) if b not in scale_bands]
        self.sidecar: Path | None = None
        if dtype.kind == "f":
            if scale_bands and len(scale_bands) != 1:
                raise VizError(f"{path}: {len(scale_bands)} scale bands in a float raster "
                               "(expected one)")
        elif dtype.kind in "iu" and dtype.itemsize <= 2 and count >= 3 + len(scale_bands):
            if scale_bands and len(scale_bands) != 4:
                raise VizError(f"{path}: {dtype} codes with {len(scale_bands)} scale band(s): "
                               "integer scale bands must be the 4 bytes of a float32 "
                               "(little-endian)")
            if not scale_bands:
                side = next((p for p in (scales_path(path), path.with_name(
                    f"{path.stem}_scales.tiff")) if p.exists()), None)
                if side is None:
                    raise VizError(f"{path}: {dtype} codes without their scales (expected "
                                   f"{scales_path(path).name} beside it, or a scale band "
                                   "named by a TESSERA_SCALE_BAND tag)")
                with rasterio.open(side) as s:
                    if (s.height, s.width) != (h, w) or s.count != 1:
                        raise VizError(f"{side}: {s.count} band(s) of {s.height} x {s.width} "
                                       f"px, expected 1 band of {h} x {w} px (the scales of "
                                       f"{path.name})")
                self.sidecar = side
        else:
            what = ("a mask or landmask" if count == 1 and dtype.kind in "ui" else
                    f"{count} band(s) of {dtype}")
            raise VizError(f"{path}: {what}, not embeddings (expected float32 bands, or int8 "
                           "codes with scales)")
        self.quantised = bool(scale_bands) or self.sidecar is not None
        georef = crs is not None and not transform.is_identity
        year = _year(tags.get("TESSERA_YEAR"))
        if year is None:
            m = _YEAR_SUFFIX.search(path.stem)
            year = _year(m.group(1)) if m else None
        super().__init__(path, label, h, w, len(self.bands),
                         crs if georef else None, transform if georef else None, year,
                         _tile_of(path.stem))

    def _windows(self, rows: np.ndarray, cols: np.ndarray) -> Iterable[tuple[int, int, Any]]:
        """(first, last + 1) positions in `rows` read in one window each, and the window."""
        from rasterio.windows import Window

        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        per_row = max(1, (c1 - c0) * (len(self.bands) + 1))
        budget = max(1, READ_VALUES // per_row)
        i = 0
        while i < len(rows):
            j = i + 1
            while j < len(rows) and rows[j] - rows[i] < budget:
                j += 1
            r0, r1 = int(rows[i]), int(rows[j - 1]) + 1
            yield i, j, Window(c0, r0, c1 - c0, r1 - r0)
            i = j

    def _gather(self, path: Path, bands: list[int], rows: np.ndarray, cols: np.ndarray
                ) -> np.ndarray:
        """(len(bands), h, w) of the picked rows and columns."""
        import rasterio

        out: np.ndarray | None = None
        with rasterio.open(path) as ds:
            for i, j, win in self._windows(rows, cols):
                block = ds.read(bands, window=win)
                picked = block[:, rows[i:j] - int(win.row_off)][:, :, cols - int(win.col_off)]
                if out is None:
                    out = np.empty((len(bands), len(rows), len(cols)), block.dtype)
                out[:, i:j] = picked
        assert out is not None
        return out

    def _scales(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        if self.sidecar is not None:
            return self._gather(self.sidecar, [1], rows, cols)[0].astype(np.float32)
        if not self.scale_bands:
            return None
        raw = self._gather(self.path, self.scale_bands, rows, cols)
        if raw.dtype.kind == "f":
            return raw[0].astype(np.float32)
        # 4 integer bands: the little-endian bytes of float32 scales
        by = np.ascontiguousarray(np.moveaxis(raw.astype(np.uint8), 0, 2))
        return by.view("<f4")[..., 0].astype(np.float32)

    def _read(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        v = np.moveaxis(self._gather(self.path, self.bands, rows, cols), 0, 2)
        if not self.quantised:
            if self.nodata is not None and np.isfinite(self.nodata):
                v = v.astype(np.float32)
                v[(v == np.float32(self.nodata)).all(axis=2)] = np.nan
            return v, None
        return v, self._scales(rows, cols)


# --- NumPy tiles ------------------------------------------------------------------------------

def _landmask_georef(path: Path) -> tuple[Any, Any, tuple[int, int]] | None:
    """(CRS, transform, (height, width)) of a 1-band GeoTIFF, None when it is not one."""
    import rasterio

    try:
        with rasterio.open(path) as ds:
            if ds.count != 1 or ds.crs is None or ds.transform.is_identity:
                return None
            return ds.crs, ds.transform, (ds.height, ds.width)
    except rasterio.errors.RasterioIOError:
        return None


def find_landmask(npy: Path, name: str) -> Path | None:
    """Where GeoTessera and tessera stores keep the tile `name`'s landmask, near `npy`."""
    here = npy.parent
    cands = [here / f"{name}_mask.tiff", here / f"{name}_mask.tif", here / f"{name}.tiff",
             here / f"{name}.tif"]
    for up in list(npy.parents)[1:6]:
        cands.append(up / "global_0.1_degree_tiff_all" / f"{name}.tiff")
        lm = up / "landmasks"
        if lm.is_dir():
            cands += sorted(lm.glob(f"*/{name}.tiff"))
    return next((c for c in cands if c.is_file() and _landmask_georef(c) is not None), None)


class NpyRaster(EmbeddingRaster):
    kind = "npy"

    def __init__(self, path: Path, landmask: Path | None = None) -> None:
        import warnings

        path = Path(path)
        if path.stem.endswith("_scales"):
            path = path.with_name(path.stem[: -len("_scales")] + ".npy")
        try:
            v = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise VizError(f"{path}: no such file (the embeddings of the scales file given)"
                           ) from None
        except (ValueError, OSError) as exc:
            raise VizError(f"{path}: not a readable .npy array ({exc})") from None
        self.values = v
        self.scales: np.ndarray | None = None
        if v.ndim != 3:
            raise VizError(f"{path}: an array of shape {v.shape}, expected (H, W, D) embeddings")
        side = path.with_name(f"{path.stem}_scales.npy")
        if v.dtype.kind in "iu":
            if not side.exists():
                raise VizError(f"{path}: {v.dtype} codes without their scales (expected "
                               f"{side.name} beside it)")
            s = np.load(side, mmap_mode="r")
            if s.shape not in (v.shape[:2], v.shape[:2] + (1,)):
                raise VizError(f"{side}: scales of shape {s.shape}, expected {v.shape[:2]} "
                               f"(the pixels of {path.name})")
            self.scales = s.reshape(v.shape[:2])
        elif v.dtype.kind != "f":
            raise VizError(f"{path}: {v.dtype} values, expected int8 codes (with "
                           f"{side.name}) or float embeddings")
        name = _tile_of(path.stem)
        crs = transform = None
        lm = Path(landmask) if landmask is not None else None
        if lm is not None and lm.is_dir():
            found = [lm / f"{name}{s}" for s in (".tiff", ".tif", "_mask.tiff")] if name else []
            lm = next((c for c in found if c.is_file()), None)
            if lm is None:
                raise VizError(f"{landmask}: no landmask {name}.tiff for {path.name} there")
        elif lm is None and name is not None:
            lm = find_landmask(path, name)
        if lm is not None:
            got = _landmask_georef(lm)
            if got is None:
                raise VizError(f"{lm}: not a georeferenced 1-band GeoTIFF (a landmask gives a "
                               f"tile its CRS and transform)")
            crs, transform, shape = got
            if shape != v.shape[:2]:
                # GeoTessera takes the landmask's transform as it is, whatever its size
                warnings.warn(f"{path.name}: {v.shape[0]} x {v.shape[1]} px but the landmask "
                              f"{lm.name} is {shape[0]} x {shape[1]} px; its transform is used "
                              "as GeoTessera uses it", UserWarning, stacklevel=2)
        self.landmask = lm
        year = _year(path.parent.parent.name) if path.parent.name == name else None
        super().__init__(path, str(path), v.shape[0], v.shape[1], v.shape[2], crs, transform,
                         year, name)

    def _read(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        v = np.asarray(self.values[np.ix_(rows, cols)])
        return v, self._scales(rows, cols)

    def _scales(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        return None if self.scales is None else np.asarray(self.scales[np.ix_(rows, cols)])


# --- Zarr -------------------------------------------------------------------------------------

def is_zarr(path: Path) -> bool:
    return path.is_dir() and (path.suffix.lower() == ".zarr" or any(
        (path / f).is_file() for f in ("zarr.json", ".zgroup", ".zattrs", ".zmetadata")))


def _dims(arr: Any) -> tuple[str, ...] | None:
    names = getattr(getattr(arr, "metadata", None), "dimension_names", None)
    if not names:
        names = arr.attrs.get("_ARRAY_DIMENSIONS")  # zarr v2 written by xarray
    return tuple(str(n) for n in names) if names else None


def _zarr_georef(group: Any, root: Any, label: str) -> tuple[Any, Any]:
    from affine import Affine
    from rasterio.crs import CRS

    attrs = dict(group.attrs)
    crs = transform = None
    code = attrs.get("proj:code") or attrs.get("proj:wkt2") or attrs.get("crs")
    ref = group["spatial_ref"] if "spatial_ref" in group else None
    if code is None and ref is not None:
        code = ref.attrs.get("crs_wkt") or ref.attrs.get("spatial_ref")
    if code is not None:
        try:
            crs = CRS.from_user_input(code)
        except Exception:  # rasterio raises CRSError, and others for odd inputs
            raise VizError(f"{label}: the CRS {str(code)[:60]!r} is not readable") from None
    t = attrs.get("spatial:transform")
    if t is not None and len(t) >= 6:
        transform = Affine(*map(float, list(t)[:6]))
    elif ref is not None and ref.attrs.get("GeoTransform"):
        g = [float(x) for x in str(ref.attrs["GeoTransform"]).split()]
        transform = Affine.from_gdal(*g[:6])
    elif "x" in group and "y" in group:
        x, y = np.asarray(group["x"][:2], np.float64), np.asarray(group["y"][:2], np.float64)
        if len(x) == 2 and len(y) == 2:
            dx, dy = x[1] - x[0], y[1] - y[0]
            transform = Affine(dx, 0.0, x[0] - dx / 2, 0.0, dy, y[0] - dy / 2)
    if crs is None or transform is None:
        return None, None
    return crs, transform


class ZarrRaster(EmbeddingRaster):
    kind = "zarr"

    def __init__(self, path: Path, group: Any, name: str, root: Any, year: int | None) -> None:
        label = f"{path}/{name}" if name else str(path)
        emb = group["embeddings"] if "embeddings" in group else group["embedding"]
        dims = _dims(emb)
        scales = group["scales"] if "scales" in group else None
        if dims is None:
            if emb.ndim == 4:
                dims = ("time", "band", "y", "x")
            elif emb.ndim == 3 and scales is not None and tuple(scales.shape) == emb.shape[1:]:
                dims = ("band", "y", "x")
            elif emb.ndim == 3:
                dims = ("y", "x", "band")
        dims = tuple("band" if d.startswith("band") else d for d in dims or ())
        if sorted(dims) not in (["band", "x", "y"], ["band", "time", "x", "y"]):
            raise VizError(f"{label}: embeddings of shape {emb.shape} with dimensions {dims}: "
                           "expected (time, band, y, x) or (y, x, band)")
        self.emb, self.emb_dims = emb, dims
        shape = dict(zip(dims, emb.shape))
        self.t: int | None = None
        years: list[int] = []
        if "time" in dims:
            tarr = group["time"] if "time" in group else (root["time"] if "time" in root
                                                          else None)
            years = [int(v) for v in np.asarray(tarr[:])] if tarr is not None else []
            if len(years) != shape["time"]:
                years = []
            if year is not None:
                if int(year) not in years:
                    raise VizError(f"{label}: year {year} is not in it (it has "
                                   f"{', '.join(map(str, years)) or 'no time coordinate'})")
                self.t = years.index(int(year))
            elif shape["time"] == 1:
                self.t = 0
            else:
                raise VizError(f"{label}: holds {shape['time']} years "
                               f"({', '.join(map(str, years)) or 'unnamed'}); pass --year")
        got = years[self.t] if years and self.t is not None else _year(
            group.attrs.get("tessera:year", root.attrs.get("tessera:year")))
        if year is not None and got is not None and got != int(year):
            raise VizError(f"{label}: holds year {got}, not {year}")
        self.scales_arr: Any = None
        self.scales_dims: tuple[str, ...] = ()
        if scales is not None:
            sd = _dims(scales) or (("time", "y", "x") if scales.ndim == 3 else ("y", "x"))
            want = tuple(shape[d] for d in sd if d in shape)
            if tuple(scales.shape) != want or set(sd) - set(dims):
                raise VizError(f"{label}: scales of shape {scales.shape} do not fit embeddings "
                               f"of shape {emb.shape} ({', '.join(dims)})")
            self.scales_arr, self.scales_dims = scales, tuple(sd)
        elif np.dtype(emb.dtype).kind != "f":
            raise VizError(f"{label}: {emb.dtype} codes without a 'scales' array")
        crs, transform = _zarr_georef(group, root, label)
        super().__init__(path, label + (f" ({got})" if got is not None else ""), shape["y"],
                         shape["x"], shape["band"], crs, transform, got, None)

    def _key(self, dims: tuple[str, ...], rows: np.ndarray, cols: np.ndarray) -> tuple[Any, ...]:
        parts: dict[str, Any] = {"time": self.t, "band": slice(None), "y": rows, "x": cols}
        return tuple(parts[d] for d in dims)

    def _read(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        v = np.asarray(self.emb.oindex[self._key(self.emb_dims, rows, cols)])
        kept = [d for d in self.emb_dims if d != "time"]
        v = np.transpose(v, [kept.index(d) for d in ("y", "x", "band")])
        return v, self._scales(rows, cols)

    def _scales(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        if self.scales_arr is None:
            return None
        s = np.asarray(self.scales_arr.oindex[self._key(self.scales_dims, rows, cols)])
        kept = [d for d in self.scales_dims if d != "time"]
        return np.transpose(s, [kept.index(d) for d in ("y", "x")]).astype(np.float32)


def open_zarr(path: Path, year: int | None = None) -> list[ZarrRaster]:
    """The embedding rasters of a Zarr: its root, or each of its groups (sorted by name) that
    holds `embeddings` (or `embedding`)."""
    import zarr

    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for what is not a group
        raise VizError(f"{path}: not a readable Zarr group ({' '.join(str(exc).split())})"
                       ) from None
    def holds(g: Any) -> bool:
        return "embeddings" in g or "embedding" in g

    if holds(root):
        return [ZarrRaster(path, root, "", root, year)]
    groups = sorted(((n, g) for n, g in root.groups() if holds(g)), key=lambda x: x[0])
    if not groups:
        raise VizError(f"{path}: a Zarr without embeddings (expected arrays 'embeddings' + "
                       "'scales' or 'embedding', at its root or in zone groups such as utm31)")
    return [ZarrRaster(path, g, n, root, year) for n, g in groups]


# --- finding the inputs -----------------------------------------------------------------------

def _sniff(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "geotiff"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    return None


def _is_embedding_file(p: Path) -> bool:
    """Whether a file found in a folder is embeddings: not scales, masks, landmasks, pictures
    (GeoTIFFs of fewer than 3 bands, or uint8 RGB) or other arrays (.npy not (H, W, D))."""
    stem, suf = p.stem, p.suffix.lower()
    if stem.endswith(("_scales", "_mask")) or stem.startswith("."):
        return False
    if suf == ".npy":  # (H, W, D) arrays only: other .npy files in the folder are not tiles
        try:
            return np.load(p, mmap_mode="r").ndim == 3
        except (ValueError, OSError):
            return False
    if suf not in GEOTIFF_SUFFIXES:
        return False
    import rasterio

    try:
        with rasterio.open(p) as ds:
            rgb = ds.dtypes[0] == "uint8" and "red" in [c.name for c in ds.colorinterp]
            return ds.count >= 3 and not rgb
    except rasterio.errors.RasterioIOError:
        return False


def scan_directory(folder: Path) -> list[Path]:
    """The embedding files and Zarr stores under `folder` (sorted, depth first): GeoTIFFs that
    are not scales, masks, landmasks or pictures, `.npy` tiles that are not scales, and Zarr
    directories (not looked into). Landmask folders and hidden entries are skipped."""
    found: list[Path] = []

    def walk(d: Path) -> None:
        for p in sorted(d.iterdir()):
            if p.name.startswith("."):
                continue
            if p.is_dir():
                if is_zarr(p):
                    found.append(p)
                elif p.name not in _NOT_EMBEDDINGS_DIRS:
                    walk(p)
            elif p.is_file() and _is_embedding_file(p):
                found.append(p)

    walk(folder)
    return found


def open_path(path: Path, *, year: int | None = None, landmask: Path | None = None
              ) -> list[EmbeddingRaster]:
    """The embedding rasters of one input path (a file, a Zarr, or a folder of them)."""
    path = Path(path)
    if not path.exists():
        raise VizError(f"{path}: no such file or directory")
    if is_zarr(path):
        return list(open_zarr(path, year))
    if path.is_dir():
        files = scan_directory(path)
        if not files:
            raise VizError(f"{path}: no embedding files in this folder (expected GeoTIFFs of "
                           "embeddings, grid_X_Y.npy tiles with their _scales.npy, or Zarr "
                           "stores; for a store, use --store)")
        out: list[EmbeddingRaster] = []
        for f in files:
            got = open_path(f, year=year, landmask=landmask)
            out += [r for r in got if year is None or r.year is None or r.year == int(year)]
        if not out:
            raise VizError(f"{path}: no embeddings of year {year} in this folder")
        return out
    kind = {".npy": "npy", ".tif": "geotiff", ".tiff": "geotiff"}.get(path.suffix.lower()) \
        or _sniff(path)
    raster: EmbeddingRaster
    if kind == "geotiff":
        raster = GeoTiffRaster(path)
    elif kind == "npy":
        raster = NpyRaster(path, landmask)
    else:
        raise VizError(f"{path}: not a file of embeddings tessera reads (expected a GeoTIFF "
                       "(.tif, .tiff), a .npy tile with its _scales.npy, or a .zarr directory)")
    return [raster]


def open_inputs(paths: Sequence[str | os.PathLike[str]], *, year: int | None = None,
                landmask: str | os.PathLike[str] | None = None) -> list[EmbeddingRaster]:
    """The embedding rasters of the input paths, in order (duplicates dropped). Explicit files
    of another year than `year` are refused; inside folders they are skipped."""
    if not paths:
        raise VizError("no input files given: expected a GeoTIFF, a .npy tile, a Zarr or a "
                       "folder of them")
    lm = Path(landmask) if landmask is not None else None
    if lm is not None and not lm.exists():
        raise VizError(f"{lm}: no such landmask file or folder")
    out: list[EmbeddingRaster] = []
    seen: set[str] = set()
    for p in map(Path, paths):
        for r in open_path(p, year=year, landmask=lm):
            if year is not None and r.year is not None and r.year != int(year):
                raise VizError(f"{r.label}: holds year {r.year}, not {year}")
            if r.label not in seen:
                seen.add(r.label)
                out.append(r)
    dims = sorted({r.dim for r in out})
    if len(dims) > 1:
        raise VizError(f"inputs of different widths ({', '.join(map(str, dims))} dimensions): "
                       + "; ".join(f"{r.label}: {r.dim}" for r in out[:4]))
    years = sorted({r.year for r in out if r.year is not None})
    if year is None and len(years) > 1:
        raise VizError(f"inputs of several years ({', '.join(map(str, years))}); pass --year")
    return out


__all__ = ["EmbeddingRaster", "GeoTiffRaster", "NpyRaster", "READ_VALUES", "ZarrRaster",
           "find_landmask", "is_zarr", "open_inputs", "open_path", "open_zarr",
           "scan_directory"]
