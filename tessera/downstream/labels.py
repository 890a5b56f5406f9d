"""Labels as users have them, read (`read_labels`) and joined with embeddings
(`join_embeddings`) into the matrices a head is trained on.

What users have, and what each becomes:

- points: a CSV (lon / lat, longitude / latitude or x / y columns), GeoJSON, GeoParquet,
  GeoPackage / shapefile / FlatGeobuf (pyogrio, `pip install 'tessera-eo[vector]'`), or a plain
  Parquet table with coordinate columns. Any CRS the file records is reprojected to lon/lat;
  a file without one (a CSV) is lon/lat unless `crs` says otherwise, and coordinates out of the
  lon/lat range are then an error, not a guess.
- polygons (fields, parcels): kept as lon/lat shapely polygons (invalid ones repaired with
  `shapely.make_valid` and a warning, refused when nothing polygonal is left) and expanded by
  the join to every pixel of the embeddings whose CENTRE is inside, each pixel a labelled
  sample whose `group` is the polygon's id (its row in the file, or a column given as `group`),
  so a grouped split keeps a field's pixels together. A polygon too small to hold any pixel
  centre gives the one pixel containing its representative point.
- a label raster (GeoTIFF): every pixel with a label (not the file's nodata, not NaN) becomes a
  point at its centre; `group` is the connected component (4-connected, `scipy.ndimage.label`)
  of equal label, so two fields of the same class are two groups.
- an embedded point table (`tessera embed-points --keep LABEL` or `tessera sample` output,
  columns `emb_000`..): the embeddings are in the file; no join with a store is needed.

The join (`join_embeddings`) reads the embeddings at the labels from a store (a `Client`, a
store path or URL) or from a folder of `tessera embed` outputs (`<name>.npy` int8 codes +
`<name>_scales.npy`, georeferenced by the `<name>.tif` that `--geotiff` writes beside them).
Labels without an embedding are COUNTED by reason, "outside the store" (no tile of any year
there), "not in year Y" (tiles of other years only), "no data", "water", and reported in
`Joined.dropped` and a `LabelWarning` naming the file; none is dropped silently, and a join that
keeps nothing is an error.
"""

from __future__ import annotations

import contextlib

import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from tessera.errors import InputError, NotFoundError

Task = Literal["classification", "regression"]
Kind = Literal["points", "polygons", "embedded"]
TASKS: tuple[str, ...] = ("classification", "regression")
#: A numeric label with non-integer values and more distinct values than this is a regression
#: target (unless `task` says otherwise); anything else is a class.
REGRESSION_MIN_DISTINCT = 20
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")
GEOJSON_SUFFIXES = (".geojson", ".json")
VECTOR_SUFFIXES = (".gpkg", ".shp", ".fgb", ".gml", ".kml", ".sqlite", ".gdb")
RASTER_SUFFIXES = (".tif", ".tiff")
NETCDF_SUFFIXES = (".nc",)  # a label variable of a netCDF cube (`layer`: its name)
#: The columns every `Labels.table` has, before the kept ones.
BASE_COLUMNS = ("lon", "lat", "label", "group")
#: Coordinate column names tried, in order (case-insensitive): (x, y) pairs.
COORDINATE_COLUMNS = (("lon", "lat"), ("longitude", "latitude"), ("lng", "lat"), ("x", "y"))
EMB_COLUMN = re.compile(r"^emb_(\d{3,})$")
#: Points read from the embeddings at once (their embeddings: 128 MB of float32 at 128 dims).
POINT_CHUNK = 1 << 18
#: Candidate pixel centres tested against a polygon at once.
CANDIDATE_CHUNK = 1 << 20

#: `tessera.infer`'s flags of an embedded sample without any valid S2 / S1 observation (not
#: imported from there: that imports torch).
FLAG_NO_S2, FLAG_NO_S1 = 1, 2

OUTSIDE = "outside the store"
NODATA = "no data"
WATER = "water"


def not_in_year(year: int) -> str:
    return f"not in year {int(year)}"


class LabelError(InputError):
    """Labels that cannot be used: the message names the file, the field and what was expected."""


class LabelWarning(UserWarning):
    """Something about labels the user should know: rows without a label, repaired polygons,
    labels without an embedding (counted by reason)."""


# --- the labels -------------------------------------------------------------------------------

@dataclasses.dataclass
class Labels:
    """Labels read from a file (`read_labels`).

    `table`: one row per label, columns lon, lat (degrees; for polygons a representative point
    inside, for an embedded table NaN when it has no coordinates), label (the class name as
    text for classification, a float for regression), group (the polygon id, the connected
    component of a raster, a user column, or None) and the kept columns. `classes`: the class
    names in a stable (sorted) order, `y` indexes them; empty for regression. `geometry`: the
    lon/lat shapely polygons of polygon labels, one per row. `embeddings`: float32 (N, D) of an
    embedded table (`bands` their original dimensions), with `status` per row ("valid" or why
    the row has none) and `info` the file's tessera metadata (model, dims, year...)."""

    table: pd.DataFrame
    task: Task
    classes: list[str]
    source: str
    label_column: str
    kind: Kind = "points"
    geometry: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    bands: tuple[int, ...] | None = None
    status: np.ndarray | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    keep: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        what = (f"{len(self.classes)} classes" if self.task == "classification"
                else "regression")
        return f"Labels({self.source!r}: {len(self)} {self.kind}, {what})"

    @property
    def y(self) -> np.ndarray:
        """Class indices (int64, into `classes`) or float32 regression targets, per row."""
        return _targets(self.table["label"], self.task, self.classes)

    @property
    def groups(self) -> np.ndarray | None:
        g = self.table["group"]
        return None if g.isna().all() else g.to_numpy()


def _targets(values: pd.Series, task: str, classes: Sequence[str]) -> np.ndarray:
    if task == "regression":
        return values.to_numpy(np.float32)
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in values], np.int64)


# --- reading ----------------------------------------------------------------------------------

@dataclasses.dataclass
class _Raw:
    """What a file gives before the labels are checked."""

    attrs: pd.DataFrame  # attribute columns, one row per feature / point / pixel
    lon: np.ndarray
    lat: np.ndarray
    kind: Kind
    geometry: np.ndarray | None = None  # lon/lat polygons
    group: np.ndarray | None = None  # default groups (polygon row, raster component)
    label_column: str | None = None  # the raster's label "column"


def read_labels(path: str | os.PathLike, *, label: str = "label", group: str | None = None,
                task: str | None = None, keep: Iterable[str] | str = (),
                layer: str | int | None = None, crs: Any = None,
                nodata: float | None = None) -> Labels:
    """Read labels from a point file, a polygon file, a label raster or an embedded point table
    (see the module docstring for what each becomes).

    `label`: the label column (ignored for a raster: its band is the label). `group`: a column
    whose value groups labels for a grouped split (default: the polygon, the raster component,
    none for points). `task`: "classification" or "regression" (default: inferred, a numeric
    label with non-integer values and more than REGRESSION_MIN_DISTINCT distinct values is
    regression). `keep`: more columns to carry along (names, or one comma-separated string).
    `layer`: the layer of a multi-layer vector file (GeoPackage), or the band (1-based) of a
    raster. `crs`: the CRS of coordinates in a file that records none (a CSV's x / y, a raster
    without one). `nodata`: raster values meaning "no label" besides the file's nodata and NaN.

    Rows without a label are left out with a LabelWarning; a missing or all-empty label column,
    a single class, an unknown file type or an empty geometry is a one-line LabelError naming
    the file and the field."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"{p}: labels file not found")
    if task is not None and task not in TASKS:
        raise LabelError(f"{p}: task {task!r}: expected one of {', '.join(TASKS)}")
    keep = _keep_list(keep, p)
    name = p.name.lower()
    if p.is_dir() and not name.endswith(".gdb"):
        raise LabelError(f"{p}: a directory; expected a labels file ({_known_types()})")
    embedded: tuple[np.ndarray, tuple[int, ...], np.ndarray, dict[str, Any]] | None = None
    if name.endswith(NETCDF_SUFFIXES + RASTER_SUFFIXES):
        if keep:
            raise LabelError(f"{p}: keep {', '.join(keep)}: a label raster has no columns to "
                             "keep")
        if name.endswith(NETCDF_SUFFIXES):
            with netcdf_layer(p, layer) as tif:
                raw = _read_raster(tif, None, crs, nodata, task)
        else:
            raw = _read_raster(p, layer, crs, nodata, task)
        label = raw.label_column or label
    elif name.endswith(CSV_SUFFIXES):
        from tessera.table.read import read_table
        df = read_table(p)
        raw, embedded = _from_table(df, p, crs, label)
    elif name.endswith(PARQUET_SUFFIXES):
        raw, embedded = _read_parquet(p, crs, label)
    elif name.endswith(GEOJSON_SUFFIXES):
        raw = _read_geojson(p, crs)
    elif name.endswith(VECTOR_SUFFIXES):
        raw = _read_vector(p, layer, crs)
    else:
        raise LabelError(f"{p}: unknown labels file type {''.join(p.suffixes) or '(none)'!r}; "
                         f"expected {_known_types()}")
    return _labels(raw, p, label, group, task, keep, embedded)


def _known_types() -> str:
    return ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES + GEOJSON_SUFFIXES + VECTOR_SUFFIXES
                     + RASTER_SUFFIXES + NETCDF_SUFFIXES)


@contextlib.contextmanager
def netcdf_layer(path: Path, layer: str | int | None) -> Iterator[Any]:
    """One 2-D variable of a netCDF cube (e.g. WorldCereal's OUTPUT_POLY-110 `CT` / `LC`) as
    an in-memory GeoTIFF: its grid from the x / y pixel-centre coordinates, its CRS from the
    `spatial_ref` / `crs_wkt` or `epsg` attributes, nodata from `_FillValue` / `NoData`."""
    import rasterio
    import xarray as xr
    from rasterio.io import MemoryFile

    try:
        ds = xr.open_dataset(path, mask_and_scale=False)
    except Exception as exc:  # xarray / the netCDF engines raise several kinds
        raise LabelError(f"{path}: not a readable netCDF file ({' '.join(str(exc).split())[:160]})"
                         ) from None
    with ds:
        names = [str(v) for v in ds.data_vars if ds[v].ndim == 2]
        if not isinstance(layer, str) or layer not in names:
            raise LabelError(f"{path}: layer {layer!r}: expected the name of a 2-D label "
                             f"variable ({', '.join(names) or 'none'})")
        da = ds[layer]
        if tuple(da.dims) != ("y", "x"):
            raise LabelError(f"{path}: {layer} has dimensions {da.dims}; expected (y, x)")
        x, y = da["x"].to_numpy().astype(float), da["y"].to_numpy().astype(float)
        if len(x) < 2 or len(y) < 2:
            raise LabelError(f"{path}: {layer} is smaller than 2 x 2 pixels")
        dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
        wkt = next((str(ds[v].attrs.get(k)) for v in ds.variables
                    for k in ("crs_wkt", "spatial_ref") if ds[v].attrs.get(k)), None)
        epsg = da.attrs.get("epsg") or ds.attrs.get("epsg")
        crs = wkt or (f"EPSG:{int(epsg)}" if epsg else None)
        if crs is None:
            raise LabelError(f"{path}: no CRS (expected a spatial_ref variable or an epsg "
                             "attribute)")
        fill = da.attrs.get("_FillValue", da.attrs.get("NoData", ds.attrs.get("NoData")))
        data = da.to_numpy()
    transform = rasterio.transform.from_origin(x[0] - dx / 2, y[0] - dy / 2, dx, -dy) \
        if dy < 0 else None
    if transform is None:
        raise LabelError(f"{path}: {layer}: y increases downwards; expected a north-up grid")
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                      dtype=data.dtype, crs=crs, transform=transform,
                      nodata=None if fill is None else float(fill)) as dst:
            dst.write(data, 1)
            dst.set_band_description(1, layer)
        yield mem.name


def _keep_list(keep: Iterable[str] | str, path: Path) -> tuple[str, ...]:
    items = keep.split(",") if isinstance(keep, str) else list(keep)
    out: list[str] = []
    for k in items:
        k = str(k).strip()
        if not k:
            continue
        if k in out:
            raise LabelError(f"{path}: keep column {k!r} is given twice")
        out.append(k)
    return tuple(out)


def _preview(columns: Iterable[Any], n: int = 12) -> str:
    cols = [str(c) for c in columns]
    return ", ".join(cols[:n]) + (", ..." if len(cols) > n else "") if cols else "(none)"


# --- CRS -------------------------------------------------------------------------------------

def _crs_text(crs: Any, path: Path, what: str = "crs") -> str | None:
    """A CRS as text pyproj reads ("EPSG:n" or WKT); None for None."""
    if crs is None:
        return None
    from pyproj import CRS

    try:
        c = CRS.from_json_dict(crs) if isinstance(crs, dict) else CRS.from_user_input(crs)
    except Exception as exc:  # pyproj's CRSError and friends
        raise LabelError(f"{path}: {what} {str(crs)[:80]!r}: not a coordinate reference "
                         f"system ({' '.join(str(exc).split())[:120]})") from None
    epsg = c.to_epsg()
    return f"EPSG:{epsg}" if epsg else c.to_wkt()


def _file_crs(found: Any, given: Any, path: Path) -> str | None:
    """The CRS to use: the file's, else the one given; both and different is an error."""
    f, g = _crs_text(found, path, "the file's CRS"), _crs_text(given, path)
    if f is not None and g is not None:
        from pyproj import CRS
        if not CRS.from_user_input(f).equals(CRS.from_user_input(g), ignore_axis_order=True):
            raise LabelError(f"{path}: crs {given!r} given, but the file records {f[:60]}; "
                             "leave crs out (the file's CRS is used)")
    return f if f is not None else g


def _is_lonlat(crs: str | None) -> bool:
    from tessera.geo.crs import is_lonlat
    return crs is None or is_lonlat(crs)


def _check_lonlat(path: Path, x: np.ndarray, y: np.ndarray, crs: str | None,
                  what: str = "coordinates") -> None:
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        i = int(bad.argmax())
        raise LabelError(f"{path}: row {i + 1}: {what} ({x[i]}, {y[i]}) are not finite")
    out = (np.abs(x) > 180) | (np.abs(y) > 90)
    if out.any():
        i = int(out.argmax())
        if crs is None:
            raise LabelError(f"{path}: row {i + 1}: {what} ({x[i]:g}, {y[i]:g}) are not lon/lat "
                             "degrees and the file records no CRS: give the CRS of its "
                             "coordinates (crs='EPSG:32631' ...)")
        raise LabelError(f"{path}: row {i + 1}: {what} ({x[i]:g}, {y[i]:g}) in {crs[:40]} are "
                         "beyond lon -180..180 / lat -90..90 degrees")


def _points_to_lonlat(x: np.ndarray, y: np.ndarray, crs: str | None, path: Path
                      ) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if _is_lonlat(crs):
        _check_lonlat(path, x, y, crs)
        return x, y
    from tessera.geo.crs import LONLAT, transformer

    _check_finite(path, x, y)
    lon, lat = transformer(str(crs), LONLAT).transform(x, y)
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    _check_lonlat(path, lon, lat, crs, "coordinates (reprojected)")
    return lon, lat


def _check_finite(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        i = int(bad.argmax())
        raise LabelError(f"{path}: row {i + 1}: coordinates ({x[i]}, {y[i]}) are not finite")


# --- tables (CSV, Parquet) ----------------------------------------------------------------------

def _read_parquet(path: Path, crs: Any, label: str
                  ) -> tuple[_Raw, tuple[np.ndarray, tuple[int, ...], np.ndarray, dict[str, Any]]
                             | None]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several kinds for a bad file
        raise LabelError(f"{path}: not a readable Parquet file "
                         f"({' '.join(str(exc).split())[:160]})") from None
    meta = table.schema.metadata or {}
    df = table.to_pandas()
    info: dict[str, Any] = {}
    if b"tessera" in meta:
        try:
            info = dict(json.loads(meta[b"tessera"]))
        except (ValueError, TypeError):
            info = {}
    geo = None
    if b"geo" in meta:
        try:
            geo = json.loads(meta[b"geo"])
        except ValueError:
            raise LabelError(f"{path}: its GeoParquet 'geo' metadata is not JSON") from None
    if geo and not any(EMB_COLUMN.match(str(c)) for c in df.columns):
        col = str(geo.get("primary_column", "geometry"))
        spec = (geo.get("columns") or {}).get(col) or {}
        if col not in df.columns:
            raise LabelError(f"{path}: GeoParquet geometry column {col!r} is missing")
        if str(spec.get("encoding", "WKB")).upper() != "WKB":
            raise LabelError(f"{path}: GeoParquet column {col!r} is encoded "
                             f"{spec.get('encoding')!r}; WKB expected")
        import shapely

        try:
            geoms = shapely.from_wkb(df[col].to_numpy())
        except Exception as exc:  # shapely's GEOSException
            raise LabelError(f"{path}: column {col!r}: not WKB geometries ({exc})") from None
        # GeoParquet: a missing "crs" is OGC:CRS84 (lon/lat); null means unknown
        file_crs = spec["crs"] if "crs" in spec else "OGC:CRS84"
        return _from_geometries(geoms, df.drop(columns=[col]), file_crs, crs, path), None
    raw, emb = _from_table(df, path, crs, label, info)
    return raw, emb


def _from_table(df: pd.DataFrame, path: Path, crs: Any, label: str,
                info: dict[str, Any] | None = None
                ) -> tuple[_Raw, tuple[np.ndarray, tuple[int, ...], np.ndarray, dict[str, Any]]
                           | None]:
    """A table with coordinate columns, or an embedded one (emb_### columns)."""
    emb_cols = [c for c in df.columns if EMB_COLUMN.match(str(c))]
    if emb_cols:
        return _embedded(df, path, emb_cols, info or {})
    xy = _coordinate_columns(df)
    if xy is None:
        raise LabelError(f"{path}: no coordinate columns: expected lon and lat (or longitude / "
                         f"latitude, or x and y with crs=); columns are {_preview(df.columns)}")
    x, y = (_numeric(df[c], path, str(c)) for c in xy)
    given = _crs_text(crs, path)
    lon, lat = _points_to_lonlat(x, y, given, path)
    attrs = df.drop(columns=list(xy)).reset_index(drop=True)
    return _Raw(attrs, lon, lat, "points"), None


def _coordinate_columns(df: pd.DataFrame) -> tuple[Any, Any] | None:
    cols = {str(c).lower(): c for c in df.columns}
    for a, b in COORDINATE_COLUMNS:
        if a in cols and b in cols:
            return cols[a], cols[b]
    return None


def _numeric(values: pd.Series, path: Path, name: str) -> np.ndarray:
    num = pd.to_numeric(values, errors="coerce")
    bad = (num.isna() & values.notna()).to_numpy()
    if bad.any():
        i = int(bad.argmax())
        raise LabelError(f"{path}: column {name!r}, row {i + 1}: {values.iloc[i]!r} is not a "
                         "number")
    return num.to_numpy(np.float64)


def _embedded(df: pd.DataFrame, path: Path, emb_cols: list[Any], info: dict[str, Any]
              ) -> tuple[_Raw, tuple[np.ndarray, tuple[int, ...], np.ndarray, dict[str, Any]]]:
    """An embedded table: `tessera embed-points` (sample_id, emb_*, flags, n_s2_valid...) or
    `tessera sample` (lon, lat, status, emb_*) output."""
    bands = tuple(int(EMB_COLUMN.match(str(c)).group(1)) for c in emb_cols)  # type: ignore[union-attr]
    x = df[emb_cols].to_numpy()
    if "scale" in df.columns and x.dtype.kind in "iu":  # --int8: codes + a scale column
        emb = x.astype(np.float32) * df["scale"].to_numpy(np.float32)[:, None]
    else:
        try:
            emb = x.astype(np.float32)
        except (TypeError, ValueError):
            raise LabelError(f"{path}: columns {emb_cols[0]}..: not numeric embeddings"
                             ) from None
    status = np.full(len(df), "valid", dtype=object)
    if "status" in df.columns:  # tessera sample: valid / water / nodata / outside
        st = df["status"].astype(str).to_numpy()
        status[st == "outside"] = OUTSIDE
        status[st == "nodata"] = NODATA
        status[st == "water"] = WATER
    if "flags" in df.columns:  # embed-points: no valid observation of either sensor
        flags = pd.to_numeric(df["flags"], errors="coerce").fillna(0).to_numpy(np.int64)
        none = (flags & FLAG_NO_S2).astype(bool) & (flags & FLAG_NO_S1).astype(bool)
        status[none & (status == "valid")] = NODATA
    status[~np.isfinite(emb).all(axis=1) & (status == "valid")] = NODATA
    xy = _coordinate_columns(df)
    if xy is not None:
        lon, lat = (_numeric(df[c], path, str(c)) for c in xy)
        drop = [*emb_cols, *xy]
    else:
        lon = lat = np.full(len(df), np.nan)
        drop = list(emb_cols)
    extra = [c for c in ("scale", "status") if c in df.columns and c not in drop]
    attrs = df.drop(columns=drop + extra).reset_index(drop=True)
    raw = _Raw(attrs, np.asarray(lon, np.float64), np.asarray(lat, np.float64), "embedded")
    return raw, (emb, bands, status, info)


# --- vector files -------------------------------------------------------------------------------

def _read_geojson(path: Path, crs: Any) -> _Raw:
    """GeoJSON: features' properties and geometries; the old-style `crs` member is honoured
    (RFC 7946 files are lon/lat)."""
    from tessera.errors import RegionError
    from tessera.geo.region import geojson_crs, read_json

    try:
        doc = read_json(path)
    except RegionError as exc:
        raise LabelError(str(exc)) from None
    if not isinstance(doc, dict):
        raise LabelError(f"{path}: expected a GeoJSON object, got {type(doc).__name__}")
    feats = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
    if not isinstance(feats, list):
        raise LabelError(f"{path}: 'features' is not a list")
    from shapely.geometry import shape

    geoms, props = [], []
    for i, f in enumerate(feats):
        if not isinstance(f, dict):
            raise LabelError(f"{path}: feature {i + 1} is not a GeoJSON object")
        g = f.get("geometry") if f.get("type") == "Feature" else f
        if not g:
            raise LabelError(f"{path}: feature {i + 1}: empty geometry (no coordinates)")
        try:
            geoms.append(shape(g))
        except Exception as exc:  # shapely raises several types for bad geometry dicts
            raise LabelError(f"{path}: feature {i + 1}: not a GeoJSON geometry ({exc})"
                             ) from None
        props.append(f.get("properties") or {} if f.get("type") == "Feature" else {})
    if not geoms:
        raise LabelError(f"{path}: no features")
    return _from_geometries(np.array(geoms, dtype=object), pd.DataFrame(props), geojson_crs(doc),
                            crs, path, lonlat_default=True)


def _read_vector(path: Path, layer: str | int | None, crs: Any) -> _Raw:
    from tessera.errors import require

    require("pyogrio", "vector", f"reading {path.suffix} labels")
    import pyogrio
    import shapely

    try:
        if layer is None:
            layers = pyogrio.list_layers(path)
            if len(layers) > 1:
                raise LabelError(f"{path}: {len(layers)} layers ({_preview(layers[:, 0])}); "
                                 "choose one with layer=")
        meta, _, wkb, fields = pyogrio.raw.read(path, layer=layer)
    except LabelError:
        raise
    except Exception as exc:  # pyogrio's DataSourceError / DataLayerError
        raise LabelError(f"{path}: cannot read the vector file "
                         f"({' '.join(str(exc).split())[:160]})") from None
    if wkb is None or len(wkb) == 0:
        raise LabelError(f"{path}: no features")
    names = [str(n) for n in meta["fields"]]
    attrs = pd.DataFrame({n: v for n, v in zip(names, fields)})
    geoms = np.array([None if b is None else shapely.from_wkb(b) for b in wkb], dtype=object)
    return _from_geometries(geoms, attrs, meta.get("crs"), crs, path)


def _from_geometries(geoms: np.ndarray, attrs: pd.DataFrame, file_crs: Any, crs: Any,
                     path: Path, lonlat_default: bool = False) -> _Raw:
    """Points or polygons (all of one kind) of a vector file, to lon/lat."""
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    attrs = attrs.reset_index(drop=True)
    if len(geoms) == 0:
        raise LabelError(f"{path}: no features")
    use = _file_crs(file_crs, crs, path)
    empty = np.array([g is None or g.is_empty for g in geoms])
    if empty.any():
        i = int(empty.argmax())
        raise LabelError(f"{path}: feature {i + 1}: empty geometry")
    types = shapely.get_type_id(geoms)
    if (types == 0).all():  # Points
        lon, lat = _points_to_lonlat(shapely.get_x(geoms), shapely.get_y(geoms), use, path)
        return _Raw(attrs, lon, lat, "points")
    polygonal = np.isin(types, (3, 6))
    if not polygonal.all():
        i = int((~polygonal).argmax())
        kinds = sorted({shapely.get_type_id(g) for g in geoms})
        what = "mixes points and polygons" if 0 in kinds and polygonal.any() else (
            f"feature {i + 1} is a {geoms[i].geom_type}")
        raise LabelError(f"{path}: geometry {what}; expected all Points or all (Multi)Polygons")
    geoms = _repaired(geoms, path, "")
    if not _is_lonlat(use):
        from tessera.geo.crs import LONLAT, reproject_geometry, transformer
        tr = transformer(str(use), LONLAT)
        geoms = np.array([reproject_geometry(g, tr) for g in geoms], dtype=object)
        geoms = _repaired(geoms, path, " after reprojection to lon/lat")
    b = shapely.bounds(geoms)
    _check_lonlat(path, np.concatenate([b[:, 0], b[:, 2]]), np.concatenate([b[:, 1], b[:, 3]]),
                  use, "polygon bounds")
    pts = shapely.point_on_surface(geoms)
    return _Raw(attrs, shapely.get_x(pts), shapely.get_y(pts), "polygons", geometry=geoms,
                group=np.arange(len(geoms), dtype=np.int64))


def _repaired(geoms: np.ndarray, path: Path, when: str) -> np.ndarray:
    """Invalid polygons made valid (their polygonal part), with one warning; a polygon with no
    area left is an error."""
    import shapely

    valid = shapely.is_valid(geoms)
    if valid.all():
        return geoms
    bad = np.flatnonzero(~valid)
    reason = shapely.is_valid_reason(geoms[bad[0]])
    out = geoms.copy()
    for i in bad:
        fixed = shapely.make_valid(geoms[i])
        parts = [p for p in shapely.get_parts(fixed)
                 if p.geom_type in ("Polygon", "MultiPolygon") and not p.is_empty]
        poly = shapely.union_all(parts) if parts else None
        if poly is None or poly.is_empty or poly.area == 0:
            raise LabelError(f"{path}: feature {i + 1}: invalid polygon{when} ({reason}) with "
                             "no area once repaired")
        out[i] = poly
    warnings.warn(f"{path}: {len(bad)} invalid polygon{'s' if len(bad) > 1 else ''}{when} "
                  f"repaired with shapely.make_valid (feature {bad[0] + 1}: {reason})",
                  LabelWarning, stacklevel=4)
    return out


# --- label rasters --------------------------------------------------------------------------

def _read_raster(path: Path, layer: str | int | None, crs: Any, nodata: float | None,
                 task: str | None) -> _Raw:
    import rasterio
    import rasterio.errors
    from scipy import ndimage

    try:
        with warnings.catch_warnings():  # no georeferencing: refused below, in our words
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            src = rasterio.open(path)
    except Exception as exc:  # rasterio's RasterioIOError
        raise LabelError(f"{path}: not a readable GeoTIFF ({' '.join(str(exc).split())[:160]})"
                         ) from None
    with src:
        band = 1 if layer is None else layer
        if isinstance(band, str):
            desc = list(src.descriptions)
            if band not in desc:
                raise LabelError(f"{path}: no band described {band!r} (bands: "
                                 f"{_preview(d or str(i + 1) for i, d in enumerate(desc))})")
            band = desc.index(band) + 1
        if not 1 <= int(band) <= src.count:
            raise LabelError(f"{path}: band {band}: the raster has bands 1..{src.count}")
        data = src.read(int(band))
        file_nodata, transform = src.nodata, src.transform
        file_crs = src.crs.to_wkt() if src.crs is not None else None
        if file_crs is None and crs is None and transform.is_identity:
            raise LabelError(f"{path}: not georeferenced (no CRS, no transform); expected a "
                             "GeoTIFF whose pixels lie on the ground")
        desc_name = src.descriptions[int(band) - 1]
    use = _file_crs(file_crs, crs, path)
    labelled = np.ones(data.shape, bool)
    if data.dtype.kind == "f":
        labelled &= np.isfinite(data)
    for v in (file_nodata, nodata):
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            labelled &= data != v
    rows, cols = np.nonzero(labelled)
    if rows.size == 0:
        raise LabelError(f"{path}: band {band}: no labelled pixel (every pixel is nodata "
                         f"{file_nodata if nodata is None else nodata})")
    x = transform.a * (cols + 0.5) + transform.b * (rows + 0.5) + transform.c
    y = transform.d * (cols + 0.5) + transform.e * (rows + 0.5) + transform.f
    lon, lat = _points_to_lonlat(x, y, use, path)
    values = data[rows, cols]
    # fields: connected components of equal label (of labelled pixels for a regression)
    regression = task == "regression" or (task is None and _infer_task(pd.Series(values))
                                          == "regression")
    comp = np.zeros(data.shape, np.int64)
    offset = 0
    if regression:
        comp, offset = ndimage.label(labelled)
    else:
        for v in np.unique(values):
            lab, n = ndimage.label(labelled & (data == v))
            comp[lab > 0] = lab[lab > 0] + offset
            offset += n
    group = comp[rows, cols] - 1
    column = desc_name or f"band {band}"
    return _Raw(pd.DataFrame({column: values}), lon, lat, "points", group=group,
                label_column=column)


# --- labels, groups, kept columns -------------------------------------------------------------

def _infer_task(values: pd.Series) -> Task:
    v = values.dropna()
    if v.empty or v.dtype.kind not in "fiu":
        return "classification"
    arr = v.to_numpy(np.float64)
    if v.dtype.kind in "iu" or np.all(arr == np.round(arr)):
        return "classification"
    return "regression" if np.unique(arr).size > REGRESSION_MIN_DISTINCT else "classification"


def _class_names(values: pd.Series) -> tuple[list[str], list[str]]:
    """(the class name of each value, the classes sorted: numerically for numbers)."""
    if values.dtype.kind in "fiu":
        arr = values.to_numpy(np.float64)
        if np.all(arr == np.round(arr)):
            names = [str(int(a)) for a in arr]
        else:
            names = [repr(float(a)) for a in arr]
        order = sorted(set(zip(arr.tolist(), names)))
        return names, list(dict.fromkeys(n for _, n in order))
    names = [str(v) for v in values]
    return names, sorted(set(names))


def _labels(raw: _Raw, path: Path, label: str, group: str | None, task: str | None,
            keep: tuple[str, ...],
            embedded: tuple[np.ndarray, tuple[int, ...], np.ndarray, dict[str, Any]] | None
            ) -> Labels:
    attrs = raw.attrs
    if label not in attrs.columns:
        raise LabelError(f"{path}: no label column {label!r}; columns are "
                         f"{_preview(attrs.columns)} (choose one with label=)")
    values = attrs[label]
    if values.dtype == object:  # empty strings are missing labels too
        values = values.where(values.astype(str).str.strip() != "", None)
    missing = values.isna().to_numpy()
    if missing.all():
        raise LabelError(f"{path}: label column {label!r} is empty (no row has a value)")
    for k in keep:
        if k not in attrs.columns:
            raise LabelError(f"{path}: keep column {k!r} is not in the file; columns are "
                             f"{_preview(attrs.columns)}")
        if k in BASE_COLUMNS:
            raise LabelError(f"{path}: keep column {k!r}: the labels have a column {k!r} of "
                             "their own; rename it in the file")
    if group is not None and group not in attrs.columns:
        raise LabelError(f"{path}: no group column {group!r}; columns are "
                         f"{_preview(attrs.columns)}")
    keep_rows = ~missing
    if missing.any():
        i = int(missing.argmax())
        warnings.warn(f"{path}: {int(missing.sum())} of {len(values)} rows have no label in "
                      f"column {label!r} (e.g. row {i + 1}); left out", LabelWarning,
                      stacklevel=3)
    values = values[keep_rows].reset_index(drop=True)
    if task is None:
        task = _infer_task(values)
    if task == "regression":
        if values.dtype.kind not in "fiu":
            num = pd.to_numeric(values, errors="coerce")
            bad = num.isna().to_numpy()
            if bad.any():
                i = int(bad.argmax())
                raise LabelError(f"{path}: label column {label!r}: {values.iloc[i]!r} is not a "
                                 "number (a regression needs numeric labels)")
            values = num
        target: Any = values.to_numpy(np.float64)
        classes: list[str] = []
    else:
        target, classes = _class_names(values)
        if len(classes) < 2:
            raise LabelError(f"{path}: label column {label!r} has one class only "
                             f"({classes[0]!r}); a classification needs two or more "
                             "(task='regression' for a numeric target)")
    sel = np.flatnonzero(keep_rows)
    if group is not None:
        g = attrs[group].iloc[sel].reset_index(drop=True)
        if g.isna().any():
            i = int(sel[int(g.isna().to_numpy().argmax())])
            raise LabelError(f"{path}: group column {group!r}, row {i + 1}: no value")
        groups: Any = g.to_numpy()
    elif raw.group is not None:
        groups = raw.group[sel]
    else:
        groups = np.full(sel.size, None, dtype=object)
    table = pd.DataFrame({"lon": raw.lon[sel], "lat": raw.lat[sel], "label": target,
                          "group": groups})
    for k in keep:
        table[k] = attrs[k].iloc[sel].reset_index(drop=True)
    out = Labels(table=table, task=task, classes=classes,  # type: ignore[arg-type]
                 source=str(path), label_column=label, kind=raw.kind, keep=keep)
    if raw.geometry is not None:
        out.geometry = raw.geometry[sel]
    if embedded is not None:
        emb, bands, status, info = embedded
        out.embeddings, out.bands, out.status, out.info = emb[sel], bands, status[sel], info
    return out


# --- the join ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Joined:
    """Labels with their embeddings: one row per labelled point or pixel that has one.

    `X` float32 (N, D) (D: the `bands` asked for, else every dimension), `y` class indices
    (int64, into `classes`) or float32 targets, `groups` (the labels' groups, None when they
    have none), `lon` / `lat` of each row (the pixel centre for polygons), `table` (per row:
    label, group, `label_row` = the row of `Labels.table` it comes from, and the kept columns),
    the model that made the embeddings (`model`, `dims`, `weights`) and `dropped`: how many
    labels (points, or pixels of polygons) had no embedding, by reason."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None
    lon: np.ndarray
    lat: np.ndarray
    table: pd.DataFrame
    model: str
    dims: int
    weights: str
    dropped: dict[str, int]
    task: Task = "classification"
    classes: list[str] = dataclasses.field(default_factory=list)
    year: int | None = None
    bands: tuple[int, ...] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        gone = sum(self.dropped.values())
        return (f"Joined({len(self)} rows x {self.X.shape[1]} dims of {self.model or 'a model'}"
                f", {gone} dropped)")


class _Source:
    """Where embeddings are read: `sample` gives (float32 (n, k), per point "valid" or the
    reason it has none); `grids` the pixel grids (for polygons) near a lon/lat geometry."""

    model: str = ""
    dims: int = 0
    weights: str = ""
    name: str = ""

    def sample(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def grids(self, geom: Any) -> list[_Grid]:
        raise NotImplementedError


@dataclasses.dataclass
class _Grid:
    """A pixel grid (north-up or not) and which of its pixel centres (lon, lat) it owns."""

    key: str  # its CRS, as transformer() takes it
    affine: Any
    height: int
    width: int
    owns: Callable[[np.ndarray, np.ndarray], np.ndarray]


def join_embeddings(labels: Labels, source: Any = None, year: int | None = None, *,
                    bands: Sequence[int] | None = None, dataset_version: str | None = None,
                    max_pixels_per_polygon: int | None = None, seed: int = 0,
                    cache_dir: str | os.PathLike | None = None) -> Joined:
    """The embeddings at the labels: see the module docstring.

    `source`: a `Client`, a store (object, path or URL), or a folder of `tessera embed` outputs
    (or one `<name>.npy` of them); not needed for an embedded table. `year`: the embeddings'
    year. `bands`: the dimensions to keep (0-based, in that order). `dataset_version`: one
    dataset of a GeoTessera mirror. Polygons: `max_pixels_per_polygon` caps the pixels taken
    from one polygon by a seeded (`seed`), hence repeatable, subsample (default: all).

    Labels without an embedding are counted by reason in `dropped` and a LabelWarning; if none
    has one, a LabelError."""
    if max_pixels_per_polygon is not None and (
            isinstance(max_pixels_per_polygon, bool) or int(max_pixels_per_polygon) < 1):
        raise LabelError(f"max_pixels_per_polygon {max_pixels_per_polygon!r}: expected a "
                         "positive number of pixels (or None for all)")
    if labels.kind == "embedded":
        return _join_embedded(labels, source, year, bands)
    if source is None or year is None:
        raise LabelError(f"{labels.source}: join_embeddings needs a source of embeddings (a "
                         "store or a folder of `tessera embed` outputs) and a year")
    src = _open_source(source, int(year), bands, dataset_version, cache_dir)
    if labels.kind == "polygons":
        assert labels.geometry is not None
        lon, lat, rows = _polygon_pixels(labels.geometry, src, max_pixels_per_polygon, seed)
        unit = f"pixels of {len(labels)} polygons"
    else:
        lon = labels.table["lon"].to_numpy(np.float64)
        lat = labels.table["lat"].to_numpy(np.float64)
        rows = np.arange(len(labels), dtype=np.int64)
        unit = "points"
    emb_parts: list[np.ndarray] = []
    kept_parts: list[np.ndarray] = []
    reasons: dict[str, int] = {}
    for lo in range(0, lon.size, POINT_CHUNK):
        hi = min(lon.size, lo + POINT_CHUNK)
        emb, why = src.sample(lon[lo:hi], lat[lo:hi])
        ok = why == "valid"
        emb_parts.append(emb[ok])
        kept_parts.append(np.flatnonzero(ok) + lo)
        for r, n in zip(*np.unique(why[~ok], return_counts=True)):
            reasons[str(r)] = reasons.get(str(r), 0) + int(n)
    kept = np.concatenate(kept_parts) if kept_parts else np.zeros(0, np.int64)
    width = len(bands) if bands is not None else src.dims
    X = np.concatenate(emb_parts) if emb_parts else np.zeros((0, width), np.float32)
    _report(reasons, lon.size, kept.size, labels.source, unit, src.name, int(year))
    return _joined(labels, X, rows[kept], lon[kept], lat[kept], reasons, src.model, src.dims,
                   src.weights, int(year), None if bands is None else tuple(bands), src.name)


def _joined(labels: Labels, X: np.ndarray, rows: np.ndarray, lon: np.ndarray, lat: np.ndarray,
            dropped: dict[str, int], model: str, dims: int, weights: str, year: int | None,
            bands: tuple[int, ...] | None, name: str) -> Joined:
    t = labels.table.iloc[rows].reset_index(drop=True)
    table = pd.DataFrame({"label": t["label"], "group": t["group"], "label_row": rows})
    for k in labels.keep:
        table[k] = t[k]
    y = _targets(t["label"], labels.task, labels.classes)
    if labels.task == "classification":
        absent = [c for i, c in enumerate(labels.classes) if not (y == i).any()]
        if absent:
            warnings.warn(f"{labels.source}: no embedding for any label of class"
                          f"{'es' if len(absent) > 1 else ''} {', '.join(map(repr, absent))}",
                          LabelWarning, stacklevel=3)
    groups = None if t["group"].isna().all() else t["group"].to_numpy()
    return Joined(X=np.ascontiguousarray(X, np.float32), y=y, groups=groups,
                  lon=np.asarray(lon, np.float64), lat=np.asarray(lat, np.float64), table=table,
                  model=model, dims=int(dims), weights=weights, dropped=_ordered(dropped),
                  task=labels.task, classes=list(labels.classes), year=year, bands=bands,
                  source=name)


def _ordered(reasons: dict[str, int]) -> dict[str, int]:
    """Reasons in a fixed order: outside the store, not in the year, no data, water, others."""
    rank = {OUTSIDE: 0, NODATA: 2, WATER: 3}

    def key(r: str) -> tuple[int, str]:
        return (1 if r.startswith("not in year") else rank.get(r, 4), r)
    return {r: reasons[r] for r in sorted(reasons, key=key)}


def _report(reasons: dict[str, int], total: int, kept: int, labels: str, unit: str,
            source: str, year: int | None) -> None:
    """Warn with the counts of labels without an embedding; none left is an error."""
    gone = sum(reasons.values())
    counts = ", ".join(f"{n} {r}" for r, n in _ordered(reasons).items())
    where = f"{source} for {year}" if year is not None else source
    if kept == 0:
        raise LabelError(f"{labels}: none of the {total} {unit} has an embedding in {where} "
                         f"({counts or 'nothing to join'})")
    if gone:
        warnings.warn(f"{labels}: {gone} of {total} {unit} have no embedding in {where} and are "
                      f"left out: {counts}", LabelWarning, stacklevel=3)


def _join_embedded(labels: Labels, source: Any, year: int | None,
                   bands: Sequence[int] | None) -> Joined:
    assert labels.embeddings is not None and labels.status is not None
    info = labels.info
    if source is not None:
        warnings.warn(f"{labels.source}: an embedded table; source {source!r} is not read",
                      LabelWarning, stacklevel=3)
    recorded = info.get("year")
    if year is not None and recorded is not None and int(recorded) != int(year):
        raise LabelError(f"{labels.source}: its embeddings are of year {recorded}, not {year}")
    have = labels.bands or ()
    X = labels.embeddings
    if bands is not None:
        missing = [b for b in bands if b not in have]
        if missing:
            raise LabelError(f"{labels.source}: bands {missing}: not among its embedding "
                             f"columns (emb_{have[0]:03d}..emb_{have[-1]:03d})")
        X = X[:, [have.index(b) for b in bands]]
    ok = labels.status == "valid"
    reasons: dict[str, int] = {}
    for r, n in zip(*np.unique(labels.status[~ok].astype(str), return_counts=True)):
        reasons[str(r)] = int(n)
    yr = int(year) if year is not None else (int(recorded) if recorded is not None else None)
    _report(reasons, len(labels), int(ok.sum()), labels.source, "points", "the table", yr)
    rows = np.flatnonzero(ok)
    dims = int(info.get("dims") or len(have))
    weights = str(info.get("weights") or info.get("checkpoint") or "")
    return _joined(labels, X[ok], rows, labels.table["lon"].to_numpy(np.float64)[ok],
                   labels.table["lat"].to_numpy(np.float64)[ok], reasons,
                   str(info.get("model") or ""), dims, weights, yr,
                   None if bands is None else tuple(bands), labels.source)


# --- polygons to pixels ------------------------------------------------------------------------

def _polygon_pixels(geoms: np.ndarray, src: _Source, cap: int | None, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lon, lat, polygon row) of every pixel centre inside each polygon, on the grids the
    source has there (at most `cap` per polygon, a seeded subsample)."""
    import shapely

    lons: list[np.ndarray] = []
    lats: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    for i, g in enumerate(geoms):
        shapely.prepare(g)
        got = [_centres_inside(g, grid) for grid in src.grids(g)]
        lon = np.concatenate([a for a, _ in got]) if got else np.zeros(0)
        lat = np.concatenate([b for _, b in got]) if got else np.zeros(0)
        if lon.size == 0:  # smaller than a pixel, or on no grid: its representative point
            p = shapely.point_on_surface(g)
            lon, lat = np.array([p.x]), np.array([p.y])
        if cap is not None and lon.size > cap:
            rng = np.random.default_rng([int(seed), i])
            pick = np.sort(rng.choice(lon.size, int(cap), replace=False))
            lon, lat = lon[pick], lat[pick]
        lons.append(lon)
        lats.append(lat)
        rows.append(np.full(lon.size, i, np.int64))
    if not lons:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    return np.concatenate(lons), np.concatenate(lats), np.concatenate(rows)


def _centres_inside(geom: Any, grid: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) of the grid's pixel centres inside the lon/lat polygon and owned by the grid,
    tested CANDIDATE_CHUNK candidates (of the polygon's bounding window) at a time."""
    import shapely

    from tessera.geo.crs import LONLAT, transformer

    w, s, e, n = geom.bounds
    try:
        x0, y0, x1, y1 = transformer(LONLAT, grid.key).transform_bounds(w, s, e, n,
                                                                        densify_pts=21)
    except Exception:  # pyproj cannot project the box (far outside the zone)
        return np.zeros(0), np.zeros(0)
    inv = ~grid.affine
    cx = [inv.a * x + inv.b * y + inv.c for x, y in ((x0, y0), (x0, y1), (x1, y0), (x1, y1))]
    cy = [inv.d * x + inv.e * y + inv.f for x, y in ((x0, y0), (x0, y1), (x1, y0), (x1, y1))]
    if not all(map(math.isfinite, cx + cy)):
        return np.zeros(0), np.zeros(0)
    c0, c1 = max(0, math.floor(min(cx)) - 1), min(grid.width, math.ceil(max(cx)) + 1)
    r0, r1 = max(0, math.floor(min(cy)) - 1), min(grid.height, math.ceil(max(cy)) + 1)
    if c0 >= c1 or r0 >= r1:
        return np.zeros(0), np.zeros(0)
    back = transformer(grid.key, LONLAT)
    a = grid.affine
    cols = np.arange(c0, c1, dtype=np.float64) + 0.5
    step = max(1, CANDIDATE_CHUNK // (c1 - c0))
    lons: list[np.ndarray] = []
    lats: list[np.ndarray] = []
    for ra in range(r0, r1, step):
        cc, rr = np.meshgrid(cols, np.arange(ra, min(r1, ra + step), dtype=np.float64) + 0.5)
        x = a.a * cc.ravel() + a.b * rr.ravel() + a.c
        y = a.d * cc.ravel() + a.e * rr.ravel() + a.f
        lon, lat = back.transform(x, y)
        lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
        inside = shapely.contains_xy(geom, lon, lat)
        if inside.any():
            lon, lat = lon[inside], lat[inside]
            mine = grid.owns(lon, lat)
            lons.append(lon[mine])
            lats.append(lat[mine])
    if not lons:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(lons), np.concatenate(lats)


# --- sources: a store, a folder of `tessera embed` outputs -------------------------------------

def _open_source(source: Any, year: int, bands: Sequence[int] | None,
                 dataset_version: str | None, cache_dir: str | os.PathLike | None) -> _Source:
    from tessera.store.client import Client

    if isinstance(source, Client):
        if dataset_version is not None:
            raise LabelError(f"dataset_version {dataset_version!r}: give the store's path or "
                             "URL (a Client is opened already)")
        return _StoreSource(source, year, bands)
    if isinstance(source, (str, os.PathLike)) and not str(source).startswith(("http://",
                                                                                "https://")):
        p = Path(source)
        if not p.exists():
            raise NotFoundError(f"{p}: no such store or folder of embeddings")
        if _embed_outputs(p):
            if dataset_version is not None:
                raise LabelError(f"{p}: dataset_version is for GeoTessera mirrors, not a folder "
                                 "of `tessera embed` outputs")
            return _FolderSource(p, year, bands)
    if isinstance(source, (str, os.PathLike)):
        from tessera.store import open_store
        store = open_store(source, cache_dir=cache_dir, dataset_version=dataset_version)
        return _StoreSource(Client(store), year, bands)
    return _StoreSource(Client(source, cache_dir=cache_dir), year, bands)


def _embed_outputs(p: Path) -> list[Path]:
    """The `<name>.npy` embeddings of `tessera embed` outputs at `p` (a folder, or one file)."""
    if p.is_file():
        if p.suffix == ".npy":
            stem = p.stem[:-len("_scales")] if p.stem.endswith("_scales") else p.stem
            return [p.with_name(stem + ".npy")]
        return []
    if (p / "manifest.parquet").exists():
        return []
    return sorted(q.with_name(q.name[: -len("_scales.npy")] + ".npy")
                  for q in p.glob("*_scales.npy"))


class _StoreSource(_Source):
    def __init__(self, client: Any, year: int, bands: Sequence[int] | None) -> None:
        from tessera.dims import check_bands

        client.check_year(year)
        self.client, self.year = client, int(year)
        held = client.model(year)
        self.model = held.model if held is not None else ""
        self.weights = held.weights if held is not None else ""
        self.dims = client.dims(year)
        self.resolution = abs(float(held.transform[0])) if held is not None else 10.0
        self.bands = None if bands is None else check_bands(bands, self.dims)
        self.name = client.store.describe() if hasattr(client.store, "describe") else str(
            client.store)
        self._open_tile = client.tile_opener()
        self._open_mask = client.mask_opener()
        self._any_year: dict[str, bool] = {}

    def sample(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from tessera.geo import GridTile, tiles_of_points
        from tessera.store.points import sample_at_points

        emb, status, _ = sample_at_points(self.client.manifest, lon, lat, self.year,
                                          self._open_tile, open_mask=self._open_mask,
                                          bands=self.bands, dims=self.dims)
        why = np.asarray(status, dtype=object)
        why[status == "nodata"] = NODATA
        why[status == "water"] = WATER
        out = np.flatnonzero(status == "outside")
        if out.size:
            with np.errstate(invalid="ignore"):
                cells = tiles_of_points(lon[out], lat[out])
            why[out] = OUTSIDE
            on_grid = cells[:, 0] != -9999
            keys, inv = np.unique(cells[on_grid], axis=0, return_inverse=True)
            names = [GridTile(int(ix), int(iy)).name for ix, iy in keys]
            todo = [n for n in names if n not in self._any_year]
            if todo:
                held = set(self.client.manifest.query(tiles=todo).tiles())
                self._any_year.update({n: n in held for n in todo})
            other = np.array([self._any_year[n] for n in names], bool)
            idx = out[on_grid][other[inv.reshape(-1)]] if names else np.zeros(0, np.int64)
            why[idx] = not_in_year(self.year)
        return emb, why

    def grids(self, geom: Any) -> list[_Grid]:
        from tessera.errors import GridError
        from tessera.geo import tiles_in_geometry, tiles_of_points
        from tessera.geo.crs import crs_key, rio_crs

        try:
            tiles = tiles_in_geometry(geom)
        except GridError:
            return []
        names = [t.name for t in tiles]
        entries = {e.tile: e for e in self.client.manifest.query(year=self.year,
                                                                 tiles=names).entries()}
        out = []
        for t in tiles:
            e = entries.get(t.name)
            if e is not None:
                key, affine, h, w = crs_key(rio_crs(e.crs)), e.affine, int(e.height), int(e.width)
            else:  # not stored that year: its nominal grid, so its pixels are counted
                g = t.target_grid(self.resolution)
                key, affine, h, w = crs_key(rio_crs(g.crs)), g.transform, g.height, g.width

            def owns(lon: np.ndarray, lat: np.ndarray, ix: int = t.ix, iy: int = t.iy
                     ) -> np.ndarray:
                cells = tiles_of_points(lon, lat)
                return (cells[:, 0] == ix) & (cells[:, 1] == iy)
            out.append(_Grid(key, affine, h, w, owns))
        return out


@dataclasses.dataclass
class _Output:
    """One `tessera embed` output: codes, scales and where they lie."""

    npy: Path
    scales: Path
    key: str
    affine: Any
    height: int
    width: int
    year: int | None
    model: str
    weights: str
    dims: int
    bounds: tuple[float, float, float, float]  # lon/lat


class _FolderSource(_Source):
    """`tessera embed` outputs: `<name>.npy` int8 (H, W, D) + `<name>_scales.npy`, georeferenced
    by `<name>.tif` (written with --geotiff: its CRS, transform and tags year / model) or, for
    one output, by a `roi.tiff` (the tile folder's) beside it."""

    def __init__(self, path: Path, year: int, bands: Sequence[int] | None) -> None:
        from tessera.dims import check_bands

        self.path, self.year = path, int(year)
        self.name = str(path)
        outs = [self._output(p) for p in _embed_outputs(path)]
        if not outs:
            raise LabelError(f"{path}: no `tessera embed` outputs (<name>.npy + "
                             "<name>_scales.npy)")
        models = {(o.model, o.dims) for o in outs}
        if len(models) > 1:
            seen = ", ".join(f"{m or 'unrecorded'} {d} dims" for m, d in sorted(models))
            raise LabelError(f"{path}: outputs of different models or widths ({seen}); their "
                             "embeddings are not comparable")
        unknown = [o for o in outs if o.year is None]
        if unknown:
            warnings.warn(f"{path}: {len(unknown)} output(s) record no year (e.g. "
                          f"{unknown[0].npy.name}); taken as {year}", LabelWarning, stacklevel=4)
        self.outputs = [o for o in outs if o.year in (None, self.year)]
        self.others = [o for o in outs if o.year not in (None, self.year)]
        if not self.outputs:
            years = sorted({o.year for o in outs if o.year is not None})
            raise LabelError(f"{path}: no outputs of year {year} (they are of "
                             f"{', '.join(map(str, years))})")
        self.model, self.dims, self.weights = outs[0].model, outs[0].dims, outs[0].weights
        self.bands = None if bands is None else check_bands(bands, self.dims)

    def _output(self, npy: Path) -> _Output:
        import rasterio

        from tessera.geo.crs import LONLAT, crs_key, rio_crs, transformer

        scales = npy.with_name(npy.stem + "_scales.npy")
        for f in (npy, scales):
            if not f.exists():
                raise LabelError(f"{f}: missing (a `tessera embed` output is <name>.npy + "
                                 "<name>_scales.npy)")
        try:
            q = np.load(npy, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise LabelError(f"{npy}: not a readable .npy array ({exc})") from None
        if q.ndim != 3 or q.dtype != np.int8:
            raise LabelError(f"{npy}: {q.dtype} {q.shape}; expected int8 (H, W, D) codes")
        h, w, d = q.shape
        tags: dict[str, str] = {}
        ref = next((c for c in (npy.with_suffix(".tif"), npy.with_suffix(".tiff"))
                    if c.exists()), None)
        if ref is None and len(list(npy.parent.glob("*_scales.npy"))) == 1 and (
                npy.parent / "roi.tiff").exists():
            ref = npy.parent / "roi.tiff"
        if ref is None:
            raise LabelError(f"{npy}: not georeferenced: a `tessera embed` output needs the "
                             f"{npy.stem}.tif beside it (embed with --geotiff) to place labels")
        with rasterio.open(ref) as src:
            if src.crs is None:
                raise LabelError(f"{ref}: no CRS; it cannot place {npy.name}")
            if (src.height, src.width) != (h, w):
                raise LabelError(f"{ref}: {src.height} x {src.width} px but {npy.name} is "
                                 f"{h} x {w}")
            crs, affine = rio_crs(src.crs), src.transform
            tags = src.tags()
        year = None
        if str(tags.get("year", "")).strip():
            try:
                year = int(str(tags["year"]).strip())
            except ValueError:
                year = None
        key = crs_key(crs)
        xs = [affine.c, affine.c + affine.a * w]
        ys = [affine.f, affine.f + affine.e * h]
        x0, y0, x1, y1 = transformer(key, LONLAT).transform_bounds(
            min(xs), min(ys), max(xs), max(ys), densify_pts=21)
        if str(tags.get("random_init", "")) == "True":
            weights = f"random init seed {tags.get('seed', '')}".strip()
        else:
            weights = Path(str(tags.get("checkpoint", ""))).name
        return _Output(npy, scales, key, affine, h, w, year, str(tags.get("model", "")),
                       weights, int(d), (x0, y0, x1, y1))

    def _pixels(self, o: _Output, lon: np.ndarray, lat: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from tessera.geo.crs import LONLAT, transformer

        x, y = transformer(LONLAT, o.key).transform(lon, lat)
        inv = ~o.affine
        cf = inv.a * np.asarray(x) + inv.b * np.asarray(y) + inv.c
        rf = inv.d * np.asarray(x) + inv.e * np.asarray(y) + inv.f
        with np.errstate(invalid="ignore"):
            r, c = np.floor(rf), np.floor(cf)
            inside = np.isfinite(r) & np.isfinite(c) & (r >= 0) & (r < o.height) & (c >= 0) & (
                c < o.width)
        return inside, np.where(inside, r, 0).astype(np.int64), np.where(inside, c, 0).astype(
            np.int64)

    def _assign(self, lon: np.ndarray, lat: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per point (the index into outputs + others of the output it is read from, -1 for
        none; its row; its column): the first output of the year with data at the point, else
        the first of the year holding it (no data), else the first of another year."""
        n = lon.size
        owner = np.full(n, -1, np.int64)
        row = np.zeros(n, np.int64)
        col = np.zeros(n, np.int64)
        final = np.zeros(n, bool)
        for k, o in enumerate(self.outputs + self.others):
            todo = np.flatnonzero(~final)
            if todo.size == 0:
                break
            inside, r, c = self._pixels(o, lon[todo], lat[todo])
            if k >= len(self.outputs):  # another year: only where nothing of the year is
                hit = todo[inside & (owner[todo] < 0)]
                owner[hit], final[hit] = k, True
                continue
            pts, r, c = todo[inside], r[inside], c[inside]
            good = np.isfinite(np.asarray(np.load(o.scales, mmap_mode="r")[r, c]))
            first = owner[pts] < 0
            take = good | first
            owner[pts[take]], row[pts[take]], col[pts[take]] = k, r[take], c[take]
            final[pts[good]] = True
        return owner, row, col

    def sample(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        width = self.dims if self.bands is None else len(self.bands)
        emb = np.full((lon.size, width), np.nan, np.float32)
        why = np.full(lon.size, OUTSIDE, dtype=object)
        owner, row, col = self._assign(lon, lat)
        why[owner >= len(self.outputs)] = not_in_year(self.year)
        for k, o in enumerate(self.outputs):
            pts = np.flatnonzero(owner == k)
            if pts.size == 0:
                continue
            r, c = row[pts], col[pts]
            q = np.load(o.npy, mmap_mode="r")
            s = np.asarray(np.load(o.scales, mmap_mode="r")[r, c], np.float32)
            good = np.isfinite(s)
            why[pts] = NODATA
            if good.any():
                codes = np.asarray(q[r[good], c[good]], np.float32)
                if self.bands is not None:
                    codes = codes[:, self.bands]
                emb[pts[good]] = codes * s[good][:, None]
                why[pts[good]] = "valid"
        return emb, why

    def grids(self, geom: Any) -> list[_Grid]:
        w, s, e, n = geom.bounds
        out = []
        for k, o in enumerate(self.outputs + self.others):
            x0, y0, x1, y1 = o.bounds
            if x0 > e or x1 < w or y0 > n or y1 < s:
                continue

            def owns(lon: np.ndarray, lat: np.ndarray, k: int = k) -> np.ndarray:
                return self._assign(lon, lat)[0] == k
            out.append(_Grid(o.key, o.affine, o.height, o.width, owns))
        return out


__all__ = ["BASE_COLUMNS", "NODATA", "OUTSIDE", "REGRESSION_MIN_DISTINCT", "TASKS", "WATER",
           "Joined", "LabelError", "LabelWarning", "Labels", "join_embeddings", "not_in_year",
           "read_labels"]
