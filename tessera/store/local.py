"""A store in a local directory: writing tile-years into it, reading and checking it.

Writes are atomic per file (temporary name, then rename) and the manifest is updated under an
exclusive lock after the tile's three files are in place, so parallel writers (Dask workers,
several processes) never lose each other's rows, and an interrupted write leaves at most some
`.tmp` files, never a manifest row pointing at a partial file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tessera.atomic import is_temporary, tmp_sibling, write_error
from tessera.errors import StoreError
from tessera.geo.grid import GridTile, parse_tile_name
from tessera.store.layout import FILE_KINDS, MANIFEST, relpath
from tessera.store.manifest import FileEntry, Manifest, ManifestError, TileEntry, hash_file


def write_mask(path: Path, mask: np.ndarray, crs: Any, transform: Any) -> None:
    """uint8 land/ROI mask GeoTIFF (1 = embedded pixel) carrying the tile's CRS and transform."""
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0],
                       count=1, dtype="uint8", crs=crs, transform=transform, compress="deflate",
                       tiled=mask.shape[0] >= 256 and mask.shape[1] >= 256) as dst:
        dst.write(mask.astype(np.uint8), 1)


@dataclasses.dataclass
class CheckReport:
    """What `LocalStore.check` found: problems per file and files the manifest does not know."""

    checked: int = 0
    missing: list[str] = dataclasses.field(default_factory=list)
    size_mismatch: list[str] = dataclasses.field(default_factory=list)
    hash_mismatch: list[str] = dataclasses.field(default_factory=list)
    unlisted: list[str] = dataclasses.field(default_factory=list)  # on disk, not in the manifest
    temporary: list[str] = dataclasses.field(default_factory=list)  # writers' temporaries (not a
    # problem of the store: left by an interrupted write, cleaned by the next write of that file)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.size_mismatch or self.hash_mismatch or self.unlisted)


class LocalStore:
    """A store rooted at a directory (created on the first write)."""

    def __init__(self, root: str | os.PathLike, dataset_version: str | None = None) -> None:
        self.root = Path(root)
        self.dataset_version = dataset_version

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def describe(self) -> str:
        return repr(self)

    def geotessera_layout(self) -> Any:
        """The GeoTessera layout this directory holds (`tessera.store.geotessera.Layout`), or
        None for a tessera store (or an empty directory)."""
        from tessera.store import geotessera

        if self.manifest_path.is_file() and geotessera.is_own_manifest(self.manifest_path):
            return None
        return geotessera.detect(self.root, self.dataset_version)

    def is_local(self, f: FileEntry) -> bool:
        return True

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> Manifest:
        """The store's manifest; a directory in one of GeoTessera's layouts is read as a store
        (read-only, `tessera.store.geotessera`). A directory in no known layout is an error:
        reading it must not look like reading an empty store."""
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: no such store directory")
        layout = self.geotessera_layout()
        if layout is not None:
            from tessera.store.geotessera import read_manifest
            return read_manifest(self.root, layout)
        if self.dataset_version is not None:
            raise StoreError(f"{self.root}: --dataset-version {self.dataset_version}: not a "
                             "GeoTessera mirror (a tessera store holds one dataset)")
        if not self.manifest_path.exists():
            from tessera.store.gtzarr import is_zarr_store
            if is_zarr_store(self.root):
                raise StoreError(f"{self.root}: a GeoTessera Zarr store, not a tile store: "
                                 "`tessera sample`, `export` (GeoTIFF) and `visualize` read it "
                                 "(Python: tessera.store.gtzarr.ZarrStore)")
            raise StoreError(f"{self.root}: not a store: no {MANIFEST} (a tessera store), nor "
                             "registry.parquet / manifest.parquet + landmasks.parquet or "
                             "npy/*/manifest.parquet (GeoTessera's layouts)")
        return Manifest.read(self.manifest_path)

    def manifest_for_writing(self) -> Manifest:
        """For writing: this store's manifest, empty before the first tile; a directory holding
        a GeoTessera layout is refused (its registries are not ours to rewrite)."""
        layout = self.geotessera_layout()
        if layout is not None:
            raise StoreError(f"{self.root}: {layout.describe()}, read-only here: write "
                             "into a tessera store (another directory)")
        if not self.manifest_path.exists():
            return Manifest()
        return Manifest.read(self.manifest_path)

    def path(self, f: FileEntry | str) -> Path:
        rel = f.path if isinstance(f, FileEntry) else f
        root = Path(os.path.abspath(self.root))
        p = Path(os.path.normpath(root / rel))  # lexical: symlinked folders inside are fine
        if root not in p.parents:
            raise StoreError(f"{rel}: path escapes the store {self.root}")
        return p

    def open_file(self, f: FileEntry, verify: bool = False) -> Path:
        """The local path of a listed file; checks it exists with the listed size (and sha256
        when `verify`)."""
        p = self.path(f)
        if not p.exists():
            raise StoreError(f"{p}: listed in the manifest but missing")
        if p.stat().st_size != f.size:
            raise StoreError(f"{p}: {p.stat().st_size} bytes, the manifest says {f.size}")
        if verify and f.sha256 and hash_file(p)[1] != f.sha256:
            raise StoreError(f"{p}: sha256 differs from the manifest (corrupt or stale)")
        return p

    # --- writing ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".manifest.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def record(self, entries: Iterable[TileEntry]) -> None:
        """Add (or replace) manifest rows for tile-years whose files are already in place,
        under the store's lock, so concurrent writers never lose each other's rows."""
        with self._locked():
            self.manifest_for_writing().upsert(list(entries)).write(self.manifest_path)

    def write_tile(self, tile: GridTile | str, year: int, embeddings: np.ndarray,
                   scales: np.ndarray, mask: np.ndarray | None = None, *, version: str,
                   crs: Any = None, transform: Any = None, model: str = "",
                   weights: str = "", precision: str = "fp32") -> TileEntry:
        """Write one tile-year (int8 (H, W, D), float32 (H, W) with NaN = no data, uint8 mask,
        default: finite scales) and record it in the manifest, replacing an older entry.
        CRS and transform default to the grid tile's own; a different shape than the tile's 10 m
        raster needs both given (e.g. coarser test stores). `model` (registered id), `weights`
        (their identity) and `precision` (`tessera.infer.precision_label`) are recorded with the
        width D; a write that would mix models, widths, weights or precisions within the year is
        refused before any file is touched."""
        tile = parse_tile_name(tile) if isinstance(tile, str) else tile
        embeddings, scales = np.asarray(embeddings), np.asarray(scales)
        if embeddings.dtype != np.int8 or embeddings.ndim != 3:
            raise StoreError(f"{tile.name} {year}: embeddings must be int8 (H, W, D), got "
                             f"{embeddings.dtype} {embeddings.shape}")
        h, w = embeddings.shape[:2]
        if scales.shape != (h, w):
            raise StoreError(f"{tile.name} {year}: scales of shape {scales.shape}, expected "
                             f"{(h, w)}")
        if crs is None or transform is None:
            g = tile.target_grid()
            if (g.height, g.width) != (h, w):
                raise StoreError(f"{tile.name} {year}: arrays of {h} x {w} px but the tile's "
                                 f"10 m raster is {g.height} x {g.width}; give crs and transform")
            crs, transform = crs or g.crs, transform or g.transform
        if mask is None:
            mask = np.isfinite(scales).astype(np.uint8)
        if mask.shape != (h, w):
            raise StoreError(f"{tile.name} {year}: mask of shape {mask.shape}, expected {(h, w)}")
        from rasterio.crs import CRS

        crs = CRS.from_user_input(crs)
        probe = TileEntry(tile.name, tile.lon, tile.lat, int(year), version, "", (), w, h, 0, {},
                          model=model, dims=int(embeddings.shape[2]), weights=weights,
                          precision=precision)
        self._refuse_mixing(probe)
        finals = {k: self.root / relpath(k, year, tile.name) for k in FILE_KINDS}
        tmps: dict[str, Path] = {}
        try:
            tmps = {k: tmp_sibling(p) for k, p in finals.items()}
            for k, arr in (("embeddings", embeddings), ("scales", scales.astype(np.float32))):
                with open(tmps[k], "wb") as f:  # a file object: np.save would append ".npy"
                    np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            write_mask(tmps["mask"], mask, crs, transform)
            files = {}
            for k in FILE_KINDS:
                size, sha = hash_file(tmps[k])
                files[k] = FileEntry(relpath(k, year, tile.name), size, sha)
            entry = TileEntry(tile.name, tile.lon, tile.lat, int(year), version,
                              crs.to_string(), tuple(transform)[:6], w, h,
                              int(np.isfinite(scales).sum()), files, model=model,
                              dims=int(embeddings.shape[2]), weights=weights,
                              precision=precision)
            with self._locked():
                current = self.manifest_for_writing()
                self._refuse_mixing(entry, current)  # again: another writer may have been first
                for k in FILE_KINDS:
                    os.replace(tmps[k], finals[k])
                current.upsert([entry]).write(self.manifest_path)
        except BaseException as exc:
            for t in tmps.values():
                t.unlink(missing_ok=True)
            err = write_error(finals["embeddings"].parent, exc, embeddings.nbytes)
            if err is not None:  # a full or read-only store: say so, naming the tile's folder
                raise err from exc
            raise
        return entry

    def _refuse_mixing(self, entry: TileEntry, manifest: Manifest | None = None) -> None:
        if manifest is None:
            manifest = self.manifest_for_writing()
        try:
            manifest.check_one_model(entry.year, adding=entry)
        except ManifestError as exc:
            raise StoreError(f"{self.root}: {exc}") from None

    # --- checking ---------------------------------------------------------------------------------
    def check(self, verify_hashes: bool = True, progress: Callable[[int], object] | None = None,
              manifest: Manifest | None = None) -> CheckReport:
        """Every listed file against the manifest (existence, size, sha256), and the files of the
        layout that no manifest row lists (stale leftovers). `manifest`: one already read."""
        try:
            man = self.manifest() if manifest is None else manifest
        except ManifestError as exc:
            raise StoreError(str(exc)) from None
        rep = CheckReport()
        listed: set[str] = set()
        for e in man.entries():
            for f in e.files.values():
                listed.add(f.path)
                p = self.root / f.path
                rep.checked += 1
                if not p.exists():
                    rep.missing.append(f.path)
                elif p.stat().st_size != f.size:
                    rep.size_mismatch.append(f.path)
                elif verify_hashes and f.sha256 and hash_file(p)[1] != f.sha256:
                    rep.hash_mismatch.append(f.path)
                if progress is not None:
                    progress(f.size)
        for p in sorted(self.root.glob("[0-9]*/grid_*/*")):
            rel = p.relative_to(self.root).as_posix()
            if is_temporary(p.name):
                rep.temporary.append(rel)
            elif p.is_file() and rel not in listed:
                rep.unlisted.append(rel)
        rep.temporary += sorted(p.name for p in self.root.glob(".*") if is_temporary(p.name))
        return rep
