"""GeoTessera's Zarr store (the `zarr/{dataset}` store of the published product, read by
geotessera's `GeoTesseraZarr`): written from any tessera store, and read back lazily.

The layout (docs/geotessera_layouts.md section 1d, verified against geotessera 0.11):

- Zarr v3, consolidated metadata inline in the root `zarr.json`, root attributes `geoemb:*`
  (model, dimensions, quantization ...).
- One group per UTM zone, `utm{zone:02d}`, always in the northern code EPSG:326{zone}: southern
  tiles (EPSG:327zz) sit there with northings shifted by -10,000,000 m. That is the same
  projection with another false northing, so a tile keeps its pixel lattice (for pixel sizes
  dividing 10,000 km, 10 m among them).
- In each zone: `embeddings` int8 (time, band, y, x), `scales` float32 (time, y, x) with
  +inf = no data and NaN = water, `time` int32 years, `x` / `y` float64 pixel centres and `band`
  int32; inner chunks of 32 x 32 px inside shards; zone attributes `proj:code`,
  `spatial:transform`, `spatial:shape`, `spatial:bbox`.

Why the writer works shard by shard: a sharded array is cheapest written one whole shard at a
time (writing part of a shard rewrites all of it), so memory is one shard, (D + 4) bytes a
pixel (132 MB at the default 1024 px and D = 128), whatever the size of the store.

Water: tessera's own stores do not know water (their mask marks the embedded cell), so a pixel
without data is +inf there. Tiles from GeoTessera's layouts carry its landmask, and a pixel
without data that the landmask calls water (0), inside the tile's cell, is written NaN, as
geotessera's own writer does.

Reading (`ZarrStore`) touches only the inner chunks that hold the requested points, or the
window of a region: never whole shards or zones. Local paths only here: zarr reads HTTP through
fsspec with aiohttp, which tessera does not install (a URL says so).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tessera.errors import (ClientError, DependencyError, ExistsError, StoreError, WriteError,
                            human_bytes)
from tessera.geo import (GridTile, Region, TargetGrid, parse_tile_name, points_lonlat,
                         tiles_of_points)
from tessera.geo.crs import LONLAT, reproject_geometry, rio_crs, transformer
from tessera.geo.region import RegionLike
from tessera.geotiff import Window
from tessera.store import mosaic
from tessera.store.manifest import TileEntry
from tessera.store.mosaic import Mosaic, nearest_in_cell

if TYPE_CHECKING:
    from tessera.store.client import Client

INNER = 32           # px: the inner chunk edge (GeoTessera's), the unit of a point read
SHARD = 1024         # px: the default shard edge, the unit of writing (a multiple of INNER)
POINT_BATCH = 4096   # points read per zarr call (bounds the index arrays, D x 32 B a point)
FALSE_NORTHING = 10_000_000.0  # m: EPSG:327zz northing minus EPSG:326zz northing
ZONE_GROUP = re.compile(r"utm(\d{2})")
STATUSES = ("valid", "water", "nodata", "outside")
SCALES_NOTE = ("float32 per-pixel scale s, embedding = int8 code * s; +inf = no data, NaN = "
               "water (only where a tile's GeoTessera landmask says water)")


# --- zones ----------------------------------------------------------------------------------------

def lon_zone(lon: Any) -> np.ndarray:
    """The UTM zone (1..60) of longitudes, as GeoTessera routes points and tiles to zones."""
    z = np.floor((np.asarray(lon, np.float64) + 180.0) / 6.0).astype(np.int64) + 1
    return np.clip(z, 1, 60)


def zone_name(zone: int) -> str:
    return f"utm{int(zone):02d}"


def canonical(e: TileEntry) -> tuple[int, TileEntry]:
    """(the tile's UTM zone, the entry in EPSG:326{zone}): a southern tile's northings shifted by
    -10,000,000 m, as GeoTessera's zone groups hold them."""
    epsg = rio_crs(e.crs).to_epsg() or 0
    if 32601 <= epsg <= 32660:
        zone, out = epsg - 32600, e
    elif 32701 <= epsg <= 32760:
        t = list(e.transform)
        t[5] -= FALSE_NORTHING
        zone = epsg - 32700
        out = dataclasses.replace(e, crs=f"EPSG:{32600 + zone}", transform=tuple(t))
    else:
        raise ClientError(f"{e.tile} {e.year}: in {e.crs}, expected a WGS 84 / UTM zone (EPSG "
                          "326xx / 327xx): GeoTessera's Zarr layout has one group per UTM zone")
    if int(lon_zone(e.lon)) != zone:
        raise ClientError(f"{e.tile} {e.year}: stored in UTM zone {zone} but its centre is in "
                          f"zone {int(lon_zone(e.lon))}; GeoTessera reads a tile from the zone "
                          "of its centre")
    return zone, out


def zone_grids(region: Region | None, entries: Sequence[TileEntry], clip: bool = True
               ) -> list[tuple[str, TargetGrid, list[TileEntry]]]:
    """Per UTM zone of the tiles: (group name `utm31`, the zone's grid in EPSG:326{zone}: the
    union of the tiles' cells (within the region when `clip`), bounds snapped outward to the
    pixel size, the zone's entries in EPSG:326{zone}). Zones the region only grazes (no area)
    are left out."""
    import shapely

    zones: dict[int, list[TileEntry]] = {}
    for e in entries:
        z, c = canonical(e)
        zones.setdefault(z, []).append(c)
    out = []
    for z, es in sorted(zones.items()):
        geom = shapely.union_all([parse_tile_name(t).polygon() for t in sorted({e.tile for e in es})])
        if clip and region is not None:
            geom = geom.intersection(region.geometry)
        if geom.is_empty or geom.area <= 0:
            continue
        res = min(abs(e.transform[0]) for e in es)
        grid = TargetGrid.from_lonlat_geometry(geom, name=zone_name(z), resolution=res,
                                               crs=f"EPSG:{32600 + z}")
        out.append((zone_name(z), grid, es))
    return out


# --- writing --------------------------------------------------------------------------------------

def _shard_edge(shard: int | None) -> int:
    s = SHARD if shard is None else int(shard)
    if s < INNER or s % INNER:
        raise ClientError(f"shard size {shard}: expected a positive multiple of {INNER} pixels "
                          "(the inner chunk edge)")
    return s


def _one_model(by_year: dict[int, list[TileEntry]], what: str) -> None:
    """One store, one model: refuse years whose embeddings come from different models, widths,
    weights or precisions (their values are not comparable, and `geoemb:model` names one)."""
    seen: dict[tuple[str, int, str, str], tuple[int, TileEntry]] = {}
    for y, es in sorted(by_year.items()):
        for e in es:
            seen.setdefault(e.provenance, (y, e))
    if len(seen) > 1:
        (y1, e1), (y2, e2) = list(seen.values())[:2]
        raise ClientError(f"{what}: year {y1} holds {e1.describe_model()} but year {y2} holds "
                          f"{e2.describe_model()}; one Zarr store holds one model (write one "
                          "store per model)")


class _WaterCodes:
    """Opens a tile for a second Mosaic whose 'scale' says, per pixel of the tile's cell, 1.0
    where its GeoTessera landmask says water and 0.0 elsewhere (NaN outside the cell), so the
    Mosaic picks the same tile for a pixel as it does for the data. Cached for one shard."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def clear(self) -> None:
        self.cache.clear()

    def __call__(self, e: TileEntry) -> tuple[np.ndarray, np.ndarray]:
        key = (e.tile, int(e.year))
        if key not in self.cache:
            self.cache[key] = self._load(e)
        return self.cache[key]

    def _load(self, e: TileEntry) -> tuple[np.ndarray, np.ndarray]:
        import rasterio

        f = e.files["mask"]
        try:
            path = Path(self.client.store.open_file(f))
            with rasterio.open(path) as src:
                land = src.read(1)
        except Exception as exc:  # rasterio's errors, the store's, OSError
            raise ClientError(f"{e.tile} {e.year}: its landmask {f.path} is not readable "
                              f"({' '.join(str(exc).split())})") from None
        hw = (e.height, e.width)
        if land.shape != hw:  # cannot be lined up with the tile: no water from it
            land = np.ones(hw, np.uint8)
        crs = rio_crs(e.crs)
        cell = reproject_geometry(parse_tile_name(e.tile).polygon().segmentize(0.001),
                                  transformer(LONLAT, crs.to_wkt()))
        roi = TargetGrid(crs, e.affine, e.width, e.height, cell).roi().astype(bool)
        codes = np.where(roi, (land == 0).astype(np.float32), np.float32(np.nan))
        return np.broadcast_to(np.zeros((1, 1, 1), np.int8), (*hw, 1)), codes


def _read_shard(mos: Mosaic, wet: Mosaic | None, win: Window, dim: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(int8 (D, h, w) codes, float32 (h, w) scales with +inf = no data, NaN = water) of one
    shard window, read from the tiles in Mosaic windows (memory: the shard plus one window)."""
    q = np.zeros((dim, win.height, win.width), np.int8)
    s = np.full((win.height, win.width), np.inf, np.float32)
    for sub in mosaic.windows(win.height, win.width):
        at = Window(win.row + sub.row, win.col + sub.col, sub.height, sub.width)
        got = mos.read_if_touched(at)
        if got is None:
            continue
        qq, ss = got
        if qq.shape[2] != dim:
            raise ClientError(f"{mos.sources[0].entry.tile}: embeddings of width {qq.shape[2]} "
                              f"among tiles of width {dim}")
        rows, cols = sub.slices
        q[:, rows, cols] = qq.transpose(2, 0, 1)
        ok = np.isfinite(ss)
        out = np.where(ok, ss, np.float32(np.inf))
        if wet is not None and not ok.all():
            w = wet.read_if_touched(at)
            if w is not None:
                out[~ok & (w[1] == 1.0)] = np.nan
        s[rows, cols] = out
    return q, s


def write_zarr_store(client: Client, path: str | os.PathLike, years: int | Iterable[int],
                     region: RegionLike | None = None, *, clip: bool = True,
                     shard: int | None = None, overwrite: bool = False,
                     what: str = "write_zarr_store") -> Path:
    """A store in GeoTessera's Zarr layout (module docstring) of `years` of the client's store:
    every tile of those years, or those of `region` (its pixels only when `clip`). Tiles are
    pasted on their zone's lattice (tiles on another lattice are resampled nearest-neighbour by
    `tessera.store.mosaic`), so values equal the source's. Written shard by shard (`shard` px,
    default 1024) into `.<name>.partial` with its progress recorded, consolidated and renamed
    when complete; a rerun after an interruption continues where it stopped."""
    import zarr

    from tessera.store.export import partial_path
    from tessera.store.points import is_landmask

    path = Path(path)
    if path.exists() and not overwrite:
        raise ExistsError(f"{path}: exists (overwrite=True replaces it)")
    edge = _shard_edge(shard)
    ys = sorted({int(y) for y in ([years] if isinstance(years, (int, np.integer)) else years)})
    if not ys:
        raise ClientError(f"{what}: no years given (the store has "
                          f"{', '.join(map(str, client.years())) or 'no tiles'})")
    r = None if region is None else Region.parse(region)
    by_year: dict[int, list[TileEntry]] = {}
    absent: dict[int, list[str]] = {}
    for y in ys:
        if r is None:
            client.check_year(y)
            by_year[y], absent[y] = client.manifest.query(year=y).entries(), []
        else:
            _, by_year[y], absent[y] = client.present(r, y, what)
    _one_model(by_year, what)
    entries = [e for y in ys for e in by_year[y]]
    zones = zone_grids(r, entries, clip)
    if not zones:
        raise ClientError(f"{what}: the tiles of {r.name if r else 'the store'} leave no pixel "
                          "inside the region")
    opener = client.tile_opener()
    dim = Mosaic(opener, zones[0][2][:1], zones[0][1], False).dim
    edges = {n: min(edge, INNER * math.ceil(max(g.height, g.width) / INNER)) for n, g, _ in zones}
    plan = hashlib.sha256(json.dumps({
        "years": ys, "shard": edge, "clip": clip, "dim": dim,
        "tiles": [(e.year, e.tile, e.files["embeddings"].sha256, e.files["scales"].sha256)
                  for e in entries],
        "zones": [(n, list(g.transform)[:6], g.width, g.height) for n, g, _ in zones],
    }).encode()).hexdigest()
    tmp = partial_path(path)
    root: Any = None  # a zarr Group; its members and JSON attributes are used untyped here
    if tmp.exists():
        try:
            root = zarr.open_group(str(tmp), mode="r+", zarr_format=3)
            if root.attrs.get("tessera:plan") != plan:
                root = None
        except Exception:  # unreadable leftovers of another export: start again
            root = None
        if root is None:
            shutil.rmtree(tmp)
    estimate = len(ys) * sum(g.width * g.height * (dim + 4) for _, g, _ in zones)
    try:
        if root is None:
            root = _create(tmp, zones, by_year, absent, ys, dim, edges, plan)
        progress = dict(root.attrs.get("tessera:progress", {}))
        water = _WaterCodes(client)
        for name, grid, es in zones:
            g = root[name]
            emb, sca = g["embeddings"], g["scales"]
            wins = mosaic.windows(grid.height, grid.width, edges[name])
            for t, y in enumerate(ys):
                key = f"{name}/{y}"
                mine = [e for e in es if e.year == y]
                if not mine or int(progress.get(key, 0)) >= len(wins):
                    continue
                mos = Mosaic(opener, mine, grid, clip)
                wet_tiles = [e for e in mine if is_landmask(e)]
                wet = Mosaic(water, wet_tiles, grid, clip) if wet_tiles else None
                for i in range(int(progress.get(key, 0)), len(wins)):
                    win = wins[i]
                    if not mos.touching(win):
                        continue
                    q, s = _read_shard(mos, wet, win, dim)
                    water.clear()
                    rows, cols = win.slices
                    emb[t, :, rows, cols] = q
                    sca[t, rows, cols] = s
                    del q, s
                    progress[key] = i + 1
                    root.attrs["tessera:progress"] = progress  # after the shard's data
                progress[key] = len(wins)
                root.attrs["tessera:progress"] = progress
        attrs = root.attrs.asdict()
        for k in ("tessera:plan", "tessera:progress"):
            attrs.pop(k, None)
        root.attrs.put({**attrs, "tessera:complete": True})
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            zarr.consolidate_metadata(str(tmp))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise WriteError(errno.ENOSPC, f"{path}: no space left on device while exporting "
                             f"(about {human_bytes(estimate)} uncompressed needed); the "
                             f"completed part is kept in {tmp} and a rerun continues it") from exc
        raise
    if path.exists():  # overwrite=True: the old store goes just before the new one lands
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    os.replace(tmp, path)
    return path


def _create(tmp: Path, zones: list[tuple[str, TargetGrid, list[TileEntry]]],
            by_year: dict[int, list[TileEntry]], absent: dict[int, list[str]], ys: list[int],
            dim: int, edges: dict[str, int], plan: str) -> Any:
    import zarr
    from zarr.codecs import BloscCodec

    from tessera.store.export import (SOURCE_DATA, ZARR_CONVENTIONS, model_tags, model_uri,
                                      package_version)

    present = [e for y in ys for e in by_year[y]]
    m = model_tags(present)
    root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    root.attrs.update({
        "zarr_conventions": [ZARR_CONVENTIONS["geoemb:"]],
        "geoemb:type": "pixel", "geoemb:dimensions": dim, "geoemb:model": model_uri(present),
        "geoemb:source_data": SOURCE_DATA, "geoemb:data_type": "int8",
        "geoemb:gsd": min(g.resolution for _, g, _ in zones),
        "geoemb:spatial_layout": "utm_zones", "geoemb:build_version": package_version(),
        "geoemb:quantization": {
            "method": "per_pixel_scale", "original_dtype": "float32", "quantized_dtype": "int8",
            "scale": {"type": "array", "array_name": "scales", "nodata": "+inf"}},
        "tessera:model": m["model"], "tessera:dims": m["dims"], "tessera:weights": m["weights"],
        "tessera:precision": m["precision"],
        "tessera:version": ",".join(sorted({e.version for e in present})),
        "tessera:years": ys, "tessera:scales": SCALES_NOTE,
        "tessera:tiles": {str(y): [e.tile for e in by_year[y]] for y in ys},
        "tessera:absent_tiles": {str(y): list(absent[y]) for y in ys},
        "tessera:plan": plan, "tessera:progress": {}, "tessera:complete": False})
    blosc = BloscCodec(cname="zstd", clevel=3)
    n_t = len(ys)
    for name, grid, es in zones:
        t, h, w, s = grid.transform, grid.height, grid.width, edges[name]
        g = root.create_group(name, attributes={
            "zarr_conventions": [ZARR_CONVENTIONS[k] for k in ("proj:", "spatial:")],
            "proj:code": f"EPSG:{grid.crs.to_epsg()}",
            "proj:wkt2": grid.crs.to_wkt(version="WKT2_2019"),
            "spatial:dimensions": ["y", "x"], "spatial:transform_type": "affine",
            "spatial:registration": "pixel",
            "spatial:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "spatial:shape": [h, w], "spatial:bbox": list(grid.bounds),
            "tessera:tiles": {str(y): sorted({e.tile for e in es if e.year == y}) for y in ys}})
        g.create_array("embeddings", shape=(n_t, dim, h, w), chunks=(1, dim, INNER, INNER),
                       shards=(1, dim, s, s), dtype="int8", fill_value=0, compressors=blosc,
                       dimension_names=("time", "band", "y", "x"))
        g.create_array("scales", shape=(n_t, h, w), chunks=(1, INNER, INNER), shards=(1, s, s),
                       dtype="float32", fill_value=np.float32(np.inf), compressors=blosc,
                       dimension_names=("time", "y", "x"))
        coords = {"time": np.asarray(ys, np.int32), "band": np.arange(dim, dtype=np.int32),
                  "x": t.c + t.a * (np.arange(w) + 0.5), "y": t.f + t.e * (np.arange(h) + 0.5)}
        for k, data in coords.items():
            g.create_array(k, data=data, compressors=blosc, dimension_names=(k,))
    return root


# --- reading --------------------------------------------------------------------------------------

def is_zarr_store(path: str | os.PathLike) -> bool:
    """Whether the directory holds a GeoTessera Zarr store: a root `zarr.json` (a v3 group)
    with `geoemb:` attributes and at least one `utm{NN}` group. Never raises."""
    p = Path(path)
    try:
        meta = json.loads((p / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        return False
    if not any(str(k).startswith("geoemb:") for k in (meta.get("attributes") or {})):
        return False
    consolidated = ((meta.get("consolidated_metadata") or {}).get("metadata") or {})
    names = set(consolidated) | {c.name for c in p.iterdir() if (c / "zarr.json").is_file()}
    return any(ZONE_GROUP.fullmatch(n) for n in names)


@dataclasses.dataclass(frozen=True)
class ZarrRegion:
    """A region read from one zone of a Zarr store, on that zone's own grid (no resampling)."""

    embeddings: np.ndarray  # float32 (H, W, D), NaN unless valid
    scales: np.ndarray      # float32 (H, W) as stored: finite = valid, +inf no data, NaN water
    crs: Any                # rasterio CRS, EPSG:326{zone} (southern northings negative)
    transform: Any          # affine.Affine of the window
    year: int
    zone: int


def _cell_keys(cells: np.ndarray) -> np.ndarray:
    """int64 keys of 0.1 degree cells (ix, iy) from `tiles_of_points`, for np.isin."""
    return (cells[:, 0].astype(np.int64) + 1800) * 2000 + (cells[:, 1].astype(np.int64) + 900)


@dataclasses.dataclass
class _Zone:
    num: int
    group: Any
    epsg: int
    transform: Any   # affine.Affine
    height: int
    width: int
    years: list[int]
    nan_is_nodata: bool
    cells: dict[int, np.ndarray]  # year -> cell keys of its tiles, when the store lists them

    def index(self, year: int) -> int:
        return self.years.index(int(year))


def _listed_cells(listed: Any, location: str, name: str) -> dict[int, np.ndarray]:
    """The zone's tiles per year from tessera's `tessera:tiles` attribute ({} when absent)."""
    if not isinstance(listed, dict):
        return {}
    try:
        out = {}
        for y, names in listed.items():
            cells = np.array([[t.ix, t.iy] for t in map(parse_tile_name, names)], np.int64)
            out[int(y)] = _cell_keys(cells.reshape(-1, 2))
        return out
    except (TypeError, ValueError) as exc:  # GridError is a ValueError
        raise StoreError(f"{location}/{name}: attribute tessera:tiles is not "
                         f"{{year: [tile names]}} ({exc})") from None


class ZarrStore:
    """A GeoTessera Zarr store opened lazily (metadata first; arrays are read per request, only
    the chunks a request needs). `location`: a local directory, or a zarr `Store`."""

    def __init__(self, location: str | os.PathLike | Any) -> None:
        import zarr
        from zarr.abc.store import Store as ZStore

        if isinstance(location, ZStore):
            store: Any = location
            self.location = repr(location)
        else:
            loc = os.fspath(location)
            self.location = str(loc)
            if self.location.startswith(("http://", "https://", "s3://", "gs://")):
                try:
                    from zarr.storage import FsspecStore
                    store = FsspecStore.from_url(self.location, read_only=True)
                except ImportError as exc:
                    raise DependencyError(f"{self.location}: reading a Zarr store from a URL "
                                          f"needs fsspec's {exc.name or 'aiohttp'} "
                                          f"({' '.join(str(exc).split())}); tessera reads "
                                          "local Zarr stores only") from None
            else:
                if not (Path(loc) / "zarr.json").is_file():
                    raise StoreError(f"{self.location}: not a GeoTessera Zarr store (no "
                                     "zarr.json: expected a Zarr v3 group with geoemb: "
                                     "attributes and utm{NN} zone groups)")
                store = str(loc)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Consolidated metadata")
                root = zarr.open_group(store, mode="r", zarr_format=3)
                self.attrs: dict[str, Any] = dict(root.attrs.asdict())
                names = sorted(n for n in root.group_keys() if ZONE_GROUP.fullmatch(n))
        except Exception as exc:  # zarr's errors for what is not a v3 group
            raise StoreError(f"{self.location}: not a readable Zarr v3 group "
                             f"({' '.join(str(exc).split())})") from None
        if not any(k.startswith("geoemb:") for k in self.attrs) or not names:
            raise StoreError(f"{self.location}: a Zarr group but not a GeoTessera store (expected "
                             "geoemb: attributes and utm{NN} zone groups; it has "
                             f"{len(names)} zone groups)")
        q = self.attrs.get("geoemb:quantization") or {}
        scale = q.get("scale") or {}
        if (q.get("method", "per_pixel_scale") != "per_pixel_scale"
                or scale.get("array_name", "scales") != "scales"):
            raise StoreError(f"{self.location}: geoemb:quantization {q}, expected method "
                             "per_pixel_scale with its scale in the array 'scales'")
        self._root: Any = root  # a zarr Group, used untyped
        self.zones: list[int] = [int(n[3:]) for n in names]
        self.dims = int(self.attrs.get("geoemb:dimensions", 128))
        self.model = str(self.attrs.get("geoemb:model", ""))
        self._zones: dict[int, _Zone] = {}
        self._years: list[int] | None = None

    def __repr__(self) -> str:
        return f"ZarrStore({self.location!r})"

    def describe(self) -> str:
        return (f"GeoTessera Zarr store {self.location}: zones "
                f"{', '.join(map(str, self.zones))}, years "
                f"{', '.join(map(str, self.years()))}, {self.dims} dims, model {self.model}")

    # --- metadata -----------------------------------------------------------------------------------
    def zone(self, num: int) -> _Zone | None:
        """Zone `num`'s group and grid (read once), or None when the store does not hold it."""
        from affine import Affine

        num = int(num)
        if num not in self.zones:
            return None
        if num not in self._zones:
            name = zone_name(num)
            g: Any = self._root[name]
            a: dict[str, Any] = dict(g.attrs.asdict())
            try:
                epsg = int(str(a["proj:code"]).split(":")[1])
                t = [float(v) for v in a["spatial:transform"]]
                _, h, w = g["scales"].shape
                years = [int(v) for v in np.asarray(g["time"][:]).tolist()]
            except (KeyError, IndexError, ValueError, TypeError) as exc:
                raise StoreError(f"{self.location}/{name}: zone group without a readable "
                                 f"proj:code, spatial:transform, scales or time ({exc!r}); "
                                 "expected GeoTessera's Zarr layout") from None
            if t[1] or t[3] or t[0] <= 0 or t[4] >= 0:
                raise StoreError(f"{self.location}/{name}: spatial:transform {t}, expected a "
                                 "north-up grid [res, 0, x0, 0, -res, y0]")
            self._zones[num] = _Zone(num, g, epsg, Affine(*t[:6]), int(h), int(w), years,
                                     a.get("geotessera:mask_source") == "source_nodata",
                                     _listed_cells(a.get("tessera:tiles"), self.location, name))
        return self._zones[num]

    def years(self) -> list[int]:
        """The years any zone holds (each zone's `time` array)."""
        if self._years is None:
            ys: set[int] = set()
            for z in self.zones:
                zn = self.zone(z)
                if zn is not None:
                    ys.update(zn.years)
            self._years = sorted(ys)
        return list(self._years)

    def check_year(self, year: int) -> None:
        """Refuse a year the store does not hold, naming the years it does."""
        if int(year) not in self.years():
            raise StoreError(f"year {year} is not in the Zarr store {self.location} (it has "
                             f"{', '.join(map(str, self.years())) or 'no years'})")

    # --- points -------------------------------------------------------------------------------------
    def sample_points(self, points: Any, year: int) -> tuple[np.ndarray, np.ndarray]:
        """(float32 (N, D) embeddings, NaN unless valid; status (N,) of "valid", "water" (NaN
        scale), "nodata" (+inf scale: not embedded) or "outside" (no zone of the store holds
        the point's zone or year, or it is beyond the zone's grid)). `points`: anything
        `tessera.geo.points_lonlat` reads, e.g. a tuple of (lon, lat) arrays.

        A point's value is the pixel containing it in the zone of its longitude, as tessera's
        client reads a store: when that pixel has no data and its centre lies outside the
        point's own 0.1 degree cell (a pixel straddling a zone border, whose centre is in the
        other zone), the nearest pixel whose centre is in the point's cell. Only the inner
        chunks holding the points are read."""
        lon, lat = points_lonlat(points)
        self.check_year(year)
        n = lon.size
        out = np.full((n, self.dims), np.nan, np.float32)
        status = np.full(n, "outside", dtype="<U7")
        with np.errstate(invalid="ignore"):
            ok = (np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180)
                  & (np.abs(lat) <= 90))
        zones = np.where(ok, lon_zone(np.where(ok, lon, 0.0)), -1)
        for z in np.unique(zones[ok]):
            zn = self.zone(int(z))
            if zn is None or int(year) not in zn.years:
                continue
            idx = np.nonzero(zones == z)[0]
            x, y = transformer(LONLAT, f"EPSG:{zn.epsg}").transform(lon[idx], lat[idx])
            cf, rf = mosaic.apply(~zn.transform, x, y)
            with np.errstate(invalid="ignore"):
                inside = ((np.floor(rf) >= 0) & (np.floor(rf) < zn.height)
                          & (np.floor(cf) >= 0) & (np.floor(cf) < zn.width))
            idx, cf, rf = idx[inside], cf[inside], rf[inside]
            for b in range(0, idx.size, POINT_BATCH):
                sl = slice(b, b + POINT_BATCH)
                self._read_points(zn, year, idx[sl], lon[idx[sl]], lat[idx[sl]], cf[sl], rf[sl],
                                  out, status)
        return out, status

    def _read_points(self, zn: _Zone, year: int, idx: np.ndarray, lon: np.ndarray,
                     lat: np.ndarray, cf: np.ndarray, rf: np.ndarray, out: np.ndarray,
                     status: np.ndarray) -> None:
        t = zn.index(year)
        own = _cell_keys(tiles_of_points(lon, lat))
        held = zn.cells.get(int(year))
        if held is not None:  # the store lists its tiles (tessera's writer): others are outside
            listed = np.isin(own, held)
            idx, own, cf, rf = idx[listed], own[listed], cf[listed], rf[listed]
        row, col = np.floor(rf).astype(np.int64), np.floor(cf).astype(np.int64)
        scales = zn.group["scales"]
        s = np.asarray(scales.vindex[np.full(idx.size, t), row, col], np.float32)
        seam = np.nonzero(np.isposinf(s))[0]
        if seam.size:  # no data: is the pixel's centre in a cell this zone has no tile of?
            key = f"EPSG:{zn.epsg}"
            cx, cy = mosaic.apply(zn.transform, col[seam] + 0.5, row[seam] + 0.5)
            clon, clat = transformer(key, LONLAT).transform(cx, cy)
            centre = _cell_keys(tiles_of_points(clon, clat))
            away = ((centre != own[seam]) & ~np.isin(centre, held) if held is not None
                    else lon_zone(clon) != zn.num)
            seam = seam[away]
            for cell in np.unique(own[seam]):
                k = seam[own[seam] == cell]
                rr, cc = nearest_in_cell(GridTile(int(cell) // 2000 - 1800, int(cell) % 2000 - 900),
                                         zn.transform, key, (zn.height, zn.width), cf[k], rf[k])
                fine = ((rr >= 0) & (rr < zn.height) & (cc >= 0) & (cc < zn.width)
                        & ((rr != row[k]) | (cc != col[k])))
                k, rr, cc = k[fine], rr[fine], cc[fine]
                if k.size:
                    row[k], col[k] = rr, cc
                    s[k] = np.asarray(scales.vindex[np.full(k.size, t), rr, cc], np.float32)
        good = np.isfinite(s)
        status[idx] = np.where(good, "valid",
                               np.where(np.isnan(s) & (not zn.nan_is_nodata), "water", "nodata"))
        if not good.any():
            return
        emb = zn.group["embeddings"]
        d = int(emb.shape[1])
        tt, bb, rr, cc = np.broadcast_arrays(np.full((int(good.sum()), 1), t),
                                             np.arange(d)[None, :], row[good][:, None],
                                             col[good][:, None])
        vals = np.asarray(emb.vindex[tt, bb, rr, cc]).astype(np.float32)
        vals *= s[good][:, None]
        out[idx[good], :d] = vals

    def probe(self, lon: float, lat: float, year: int) -> tuple[np.ndarray, str]:
        """(float32 (D,) embedding, NaN unless valid; its status) at one point."""
        emb, status = self.sample_points((np.array([float(lon)]), np.array([float(lat)])), year)
        return emb[0], str(status[0])

    # --- regions ------------------------------------------------------------------------------------
    def read_region(self, region: RegionLike, year: int, zone: int | None = None) -> ZarrRegion:
        """The pixels of one zone whose centres lie in the region's bounding rectangle projected
        to the zone's CRS (edges densified; geotessera's `read_region` window), on the zone's
        own grid. A region spanning zones the store holds needs `zone=` (one grid per read)."""
        r = Region.parse(region)
        self.check_year(year)
        spanned = sorted({int(z) for z in lon_zone([t.lon for t in r.tiles])})
        held = [z for z in spanned if z in self.zones]
        if zone is not None:
            if int(zone) not in self.zones:
                raise StoreError(f"zone {zone}: not in the Zarr store {self.location} (it has "
                                 f"zones {', '.join(map(str, self.zones))})")
            held = [int(zone)]
        if not held:
            raise StoreError(f"{r.name}: in UTM zone(s) {', '.join(map(str, spanned))}, which the "
                             f"Zarr store {self.location} does not hold (it has zones "
                             f"{', '.join(map(str, self.zones))})")
        if len(held) > 1:
            raise StoreError(f"{r.name}: spans UTM zones {', '.join(map(str, held))} of the Zarr "
                             f"store {self.location}, and a read is one zone's grid: pass zone="
                             f"{held[0]} (or another), or split the region at the zone border")
        zn = self.zone(held[0])
        assert zn is not None
        if int(year) not in zn.years:
            raise StoreError(f"year {year}: not in zone {zn.num} of the Zarr store "
                             f"{self.location} (it has {', '.join(map(str, zn.years))})")
        w, s, e, n = r.geometry.bounds
        xmin, ymin, xmax, ymax = transformer(LONLAT, f"EPSG:{zn.epsg}").transform_bounds(
            w, s, e, n, densify_pts=21)
        t = zn.transform
        res = t.a
        xs = t.c + res * (np.arange(zn.width) + 0.5)
        ys = -(t.f - res * (np.arange(zn.height) + 0.5))  # ascending, for searchsorted
        c0, c1 = int(np.searchsorted(xs, xmin, "left")), int(np.searchsorted(xs, xmax, "right"))
        r0, r1 = int(np.searchsorted(ys, -ymax, "left")), int(np.searchsorted(ys, -ymin, "right"))
        if c1 <= c0 or r1 <= r0:
            raise StoreError(f"{r.name}: outside the grid of zone {zn.num} of the Zarr store "
                             f"{self.location}")
        i = zn.index(year)
        q = np.asarray(zn.group["embeddings"][i, :, r0:r1, c0:c1])
        sc = np.asarray(zn.group["scales"][i, r0:r1, c0:c1], np.float32)
        emb = q.transpose(1, 2, 0).astype(np.float32)
        emb *= np.where(np.isfinite(sc), sc, np.float32(np.nan))[..., None]
        from affine import Affine
        return ZarrRegion(emb, sc, rio_crs(f"EPSG:{zn.epsg}"),
                          Affine(res, 0.0, t.c + res * c0, 0.0, -res, t.f - res * r0),
                          int(year), zn.num)


__all__ = ["INNER", "SHARD", "STATUSES", "ZarrRegion", "ZarrStore", "canonical", "is_zarr_store",
           "lon_zone", "write_zarr_store", "zone_grids", "zone_name"]
