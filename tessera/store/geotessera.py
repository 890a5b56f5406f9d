"""Reading the embedding stores that the `geotessera` client publishes and mirrors, as tessera
stores (read-only): their registries become a `Manifest`, so the client, sampling, exports and
pictures work on them unchanged.

Layouts recognised in a local directory (facts from geotessera 0.7.5 and 0.11.0):

    registry.parquet + landmasks.parquet                     geotessera <= 0.8 (GeoParquet;
        global_0.1_degree_representation/{year}/grid_X_Y/     sha256 `hash` / `scales_hash`,
            grid_X_Y.npy, grid_X_Y_scales.npy                 `file_size` / `scales_size`)
        global_0.1_degree_tiff_all/grid_X_Y.tiff              the landmask: CRS + transform
    manifest.parquet (`grid_size` column) + landmasks.parquet geotessera >= 0.10 local mode
        global_0.1_degree_representation/..., global_0.1_degree_tiff_all/...   (sizes, no hash)
    npy/{dataset}/manifest.parquet, npy/{dataset}/{year}/grid_X_Y/...        a 0.10 mirror
        landmasks/{version}/landmasks.parquet, landmasks/{version}/grid_X_Y.tiff

A tile is in the store when its embedding file is: a registry lists the whole published
catalogue, a mirror holds the part it downloaded. The tile's georeferencing is its landmask's
(CRS and transform, as geotessera takes it), its size the embedding array's. Valid-pixel counts
are not recorded by these registries (-1 in the manifest).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any

from tessera.errors import StoreError
from tessera.store.manifest import FileEntry, Manifest, TileEntry

LEGACY_REGISTRY = "registry.parquet"
LANDMASKS = "landmasks.parquet"
REGISTRY_MANIFEST = "manifest.parquet"  # geotessera >= 0.10; told apart from ours by columns
EMBEDDINGS_DIR = "global_0.1_degree_representation"
LANDMASKS_DIR = "global_0.1_degree_tiff_all"
#: Columns a registry must have, by layout.
REQUIRED = {"registry": ("lat", "lon", "year", "hash", "file_size"),
            "manifest": ("lat", "lon", "year", "grid_size")}
LANDMASK_REQUIRED = ("lat", "lon", "file_size")
#: geotessera's normalised versions and our model ids (other datasets keep their own names).
_MODELS = {"1.0": "v1"}
_YEAR_DIR = re.compile(r"^\d{4}$")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one GeoTessera dataset lives inside a directory (paths relative to it)."""

    kind: str  # "registry" (geotessera <= 0.8) or "manifest" (geotessera >= 0.10)
    registry: str
    landmasks: str
    embeddings_dir: str
    landmasks_dir: str
    dataset: str  # "v1", "v1.1-cam", ...

    def describe(self) -> str:
        what = ("geotessera <= 0.8 registry" if self.kind == "registry"
                else "geotessera >= 0.10 manifest")
        return f"a GeoTessera store ({what} {self.registry}, dataset {self.dataset})"


def is_own_manifest(path: Path) -> bool:
    """Whether `path` is this project's manifest (not geotessera's `manifest.parquet`)."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception:  # unreadable: let the manifest reader say why
        return True
    return "tile" in names or "grid_size" not in names


def _version_path(dataset: str) -> str:
    return dataset.split("-", 1)[0]  # "v1.1-cam" -> "v1.1"


def detect(root: Path, dataset_version: str | None = None) -> Layout | None:
    """The GeoTessera layout of a local directory, or None when it holds none."""
    if (root / LEGACY_REGISTRY).is_file():
        return registry_layout()
    own = root / REGISTRY_MANIFEST
    if own.is_file() and not is_own_manifest(own):
        return manifest_layout(dataset_version)
    datasets = sorted(p.parent.name for p in (root / "npy").glob(f"*/{REGISTRY_MANIFEST}"))
    if not datasets:
        return None
    if dataset_version is None:
        if len(datasets) > 1:
            raise StoreError(f"{root}: a GeoTessera mirror of {len(datasets)} datasets "
                             f"({', '.join(datasets)}): choose one with --dataset-version")
        dataset_version = datasets[0]
    if dataset_version not in datasets:
        raise StoreError(f"{root}: no dataset {dataset_version!r} in this GeoTessera mirror "
                         f"(it has {', '.join(datasets)})")
    return mirror_layout(dataset_version)


def registry_layout() -> Layout:
    """geotessera <= 0.8: `registry.parquet` + `landmasks.parquet` beside the tile trees."""
    return Layout("registry", LEGACY_REGISTRY, LANDMASKS, EMBEDDINGS_DIR, LANDMASKS_DIR, "v1")


def manifest_layout(dataset_version: str | None = None) -> Layout:
    """geotessera >= 0.10 local mode: `manifest.parquet` + `landmasks.parquet`, same trees."""
    return Layout("manifest", REGISTRY_MANIFEST, LANDMASKS, EMBEDDINGS_DIR, LANDMASKS_DIR,
                  dataset_version or "v1")


def mirror_layout(dataset_version: str) -> Layout:
    """A geotessera >= 0.10 mirror: `npy/{dataset}/` and `landmasks/{version}/`."""
    vp = _version_path(dataset_version)
    return Layout("manifest", f"npy/{dataset_version}/{REGISTRY_MANIFEST}",
                  f"landmasks/{vp}/{LANDMASKS}", f"npy/{dataset_version}", f"landmasks/{vp}",
                  dataset_version)


def _read_table(path: Path, required: tuple[str, ...], what: str) -> Any:
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise StoreError(f"{path}: the {what} is missing") from None
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise StoreError(f"{path}: not a readable Parquet {what} ({exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise StoreError(f"{path}: the {what} lacks the columns {', '.join(missing)} "
                         f"(expected {', '.join(required)})")
    return df


def _sha(value: Any) -> str:
    """A registry's sha256 column value, "" where it has none (missing, NaN)."""
    return value if isinstance(value, str) else ""


def _key(lon: float, lat: float) -> tuple[int, int]:
    return round(float(lon) * 100), round(float(lat) * 100)


def _georef(path: Path) -> tuple[str, tuple[float, ...]]:
    import rasterio

    try:
        with rasterio.open(path) as src:
            if src.crs is None or src.transform is None or src.transform.is_identity:
                raise StoreError(f"{path}: the landmask has no CRS or transform (GeoTessera "
                                 "takes a tile's georeferencing from it)")
            return src.crs.to_string(), tuple(src.transform)[:6]
    except rasterio.errors.RasterioIOError as exc:
        raise StoreError(f"{path}: not a readable landmask GeoTIFF ({exc})") from None


#: Resolves a tile entry's pending georeferencing (see GeoTesseraManifest).
Resolver = Callable[[TileEntry], TileEntry]


class GeoTesseraManifest(Manifest):
    """A manifest whose tiles' georeferencing (CRS, transform, size, width) is resolved on first
    use, once per tile: it is the landmask's and the embedding array's, and reading them for a
    whole published catalogue (or downloading them, over HTTP) to answer for one region would
    cost far more than the request. Queries keep the resolver, so a client's region or point
    query resolves only the tiles it touches."""

    def __init__(self, table: Any = None, resolve: Resolver | None = None,
                 cache: dict[tuple[str, int], TileEntry] | None = None) -> None:
        super().__init__(table)
        self._resolve = resolve
        self._cache: dict[tuple[str, int], TileEntry] = {} if cache is None else cache

    def query(self, bbox: tuple[float, float, float, float] | None = None,
              year: int | Iterable[int] | None = None, tiles: Iterable[str] | None = None
              ) -> Manifest:
        return GeoTesseraManifest(super().query(bbox, year, tiles).table, self._resolve,
                                  self._cache)

    def entries(self) -> list[TileEntry]:
        out = []
        for e in super().entries():
            if e.width > 0 or self._resolve is None:
                out.append(e)
                continue
            key = (e.tile, e.year)
            if key not in self._cache:
                self._cache[key] = self._resolve(e)
            out.append(self._cache[key])
        return out


def npy_shape(head: bytes, where: str) -> tuple[int, int, int]:
    """(height, width, dims) from the first bytes of an int8 `.npy` embedding file."""
    import io

    import numpy as np

    try:
        f = io.BytesIO(head)
        major, _ = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if major == 1
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(f)
    except Exception as exc:
        raise StoreError(f"{where}: not a readable .npy embedding file ({exc})") from None
    return _check_shape(tuple(shape), np.dtype(dtype), where)


def _check_shape(shape: tuple[int, ...], dtype: Any, where: str) -> tuple[int, int, int]:
    if len(shape) != 3 or dtype.kind != "i" or dtype.itemsize != 1:
        raise StoreError(f"{where}: expected an int8 (height, width, dims) array, got {dtype} "
                         f"{shape}")
    return shape[0], shape[1], shape[2]


def resolved(e: TileEntry, landmask: Path, head: bytes, where: str) -> TileEntry:
    """`e` with the georeferencing of its landmask and the shape of its embedding array."""
    crs, transform = _georef(landmask)
    h, w, dims = npy_shape(head, where)
    return dataclasses.replace(e, crs=crs, transform=transform, width=w, height=h, dims=dims)


def read_tables(reg_path: Path, lm_path: Path, layout: Layout) -> tuple[Any, Any]:
    """The registry and landmask tables of `layout`, their columns checked."""
    reg = _read_table(reg_path, REQUIRED[layout.kind],
                      f"GeoTessera {layout.kind} ({layout.describe()})")
    if layout.kind == "manifest" and "version" in reg.columns:
        versions = sorted({str(v) for v in reg["version"].astype(str)})
        if len(versions) > 1:
            raise StoreError(f"{reg_path}: rows of several dataset versions "
                             f"({', '.join(versions)}); expected one per manifest")
    lm = _read_table(lm_path, LANDMASK_REQUIRED, "GeoTessera landmask registry")
    return reg, lm


def entries_of(reg: Any, lm: Any, layout: Layout, where: str, lm_where: str,
               present: set[tuple[int, str]] | None = None,
               scales_size: Callable[[str], int] | None = None) -> list[TileEntry]:
    """One pending entry (georeferencing unresolved) per registry row of a tile in `present`
    (all rows when None: a server cannot be listed, so its registry is taken at its word).
    `scales_size(rel)`: the scales file's size where the registry has none."""
    from tessera.geo.grid import tile_of

    lm_rows = {_key(lon, lat): r for lon, lat, r in zip(lm["lon"], lm["lat"],
                                                        lm.to_dict("records"))}
    version = str(reg["version"].iloc[0]) if "version" in reg.columns and len(reg) else "1.0"
    model = _MODELS.get(version, f"geotessera:{layout.dataset}")
    entries, seen = [], set()
    for r in reg.to_dict("records"):
        tile = tile_of(float(r["lon"]), float(r["lat"]))
        year = int(r["year"])
        if (present is not None and (year, tile.name) not in present) or (year, tile.name) in seen:
            continue
        seen.add((year, tile.name))
        folder = f"{layout.embeddings_dir}/{year}/{tile.name}/{tile.name}"
        emb_rel, sc_rel = f"{folder}.npy", f"{folder}_scales.npy"
        lm_rel = f"{layout.landmasks_dir}/{tile.name}.tiff"
        lrow = lm_rows.get(_key(tile.lon, tile.lat))
        if lrow is None:
            raise StoreError(f"{lm_where}: no row for {tile.name}, whose embeddings {emb_rel} "
                             "are in the store (GeoTessera takes a tile's georeferencing from "
                             "its landmask)")
        sc_size = r.get("scales_size")
        if sc_size is None or sc_size != sc_size:  # absent or NaN
            if scales_size is None:
                raise StoreError(f"{where}: the registry has no scales_size for {tile.name} "
                                 f"{year}; expected the size of {sc_rel}")
            sc_size = scales_size(sc_rel)
        emb_size = int(r["file_size"] if layout.kind == "registry" else r["grid_size"])
        entries.append(TileEntry(
            tile=tile.name, lon=tile.lon, lat=tile.lat, year=year, version=version,
            crs="", transform=(0.0,) * 6, width=0, height=0, valid_pixels=-1,
            files={"embeddings": FileEntry(emb_rel, emb_size, _sha(r.get("hash"))),
                   "scales": FileEntry(sc_rel, int(sc_size), _sha(r.get("scales_hash"))),
                   "mask": FileEntry(lm_rel, int(lrow["file_size"]), _sha(lrow.get("hash")))},
            model=model, dims=128, weights=f"geotessera {layout.dataset}"))
    return entries


def read_manifest(root: Path, layout: Layout) -> Manifest:
    """The tiles of `layout` present under `root` (a tile is present when its embedding file
    is), as a read-only tessera manifest whose georeferencing is read on first use."""
    reg_path, lm_path = root / layout.registry, root / layout.landmasks
    reg, lm = read_tables(reg_path, lm_path, layout)
    present = set()
    emb_root = root / layout.embeddings_dir
    for year_dir in emb_root.iterdir() if emb_root.is_dir() else ():
        if year_dir.is_dir() and _YEAR_DIR.match(year_dir.name):
            for npy in year_dir.glob("grid_*/grid_*.npy"):
                if npy.parent.name == npy.stem:
                    present.add((int(year_dir.name), npy.stem))

    def scales_size(rel: str) -> int:
        p = root / rel
        if not p.is_file():
            raise StoreError(f"{p}: missing (the scales of {p.with_name(p.name[:-11] + '.npy')})")
        return p.stat().st_size

    entries = entries_of(reg, lm, layout, str(reg_path), str(lm_path), present,
                         scales_size)
    for e in entries:
        for kind in ("scales", "mask"):
            p = root / e.files[kind].path
            if not p.is_file():
                raise StoreError(f"{p}: missing (the {kind} of {root / e.files['embeddings'].path}"
                                 ", which is in the store)")

    def resolve(e: TileEntry) -> TileEntry:
        emb = root / e.files["embeddings"].path
        with open(emb, "rb") as f:
            head = f.read(4096)
        return resolved(e, root / e.files["mask"].path, head, str(emb))

    return GeoTesseraManifest(Manifest.from_entries(entries).table, resolve)


__all__ = ["GeoTesseraManifest", "Layout", "detect", "entries_of", "is_own_manifest",
           "manifest_layout", "mirror_layout", "read_manifest",
           "registry_layout", "read_tables", "resolved"]
