"""Between tessera stores and GeoTessera's published layouts, both ways, without copying tiles.

`publish(store, out)` lays a store out so that the real `geotessera` client reads it, locally
(`GeoTessera(embeddings_dir=out, registry_dir=out)`) or served over HTTP (`tessera serve`),
both the <= 0.8 clients and the >= 0.10 ones. The `.npy` files are byte-identical in both
layouts, so they are hard links (copies across file systems or from an HTTP store's cache):

    out/registry.parquet, landmasks.parquet       geotessera <= 0.8 (GeoParquet, sha256 per file)
    out/manifest.parquet                          geotessera >= 0.10 local mode (sizes)
    out/global_0.1_degree_representation/{year}/grid_X_Y/grid_X_Y{,_scales}.npy, SHA256
    out/global_0.1_degree_tiff_all/grid_X_Y.tiff, SHA256SUM     the landmasks (our masks)
    out/npy/{dataset}/manifest.parquet, npy/{dataset}/{year}/grid_X_Y/...   a >= 0.10 mirror
    out/landmasks/{version}/landmasks.parquet, grid_X_Y.tiff              (for HTTP clients)
    out/tessera_provenance.json                   model, width, weights: read back on import
    out/zarr/{dataset}.zarr                       with zarr=True: GeoTessera's Zarr store

Each tile's landmask is its store mask (1 = embedded pixel, 0 = not: GeoTessera reads 0 as
water), carrying the tile's CRS and transform, which is all geotessera takes from it. The
`SHA256` / `SHA256SUM` files are those GeoTessera's producers keep beside the tiles (its
`geotessera-registry` tool builds registries from them).

`import_store(src, out)` is the reverse: a store in any of GeoTessera's layouts (local or
HTTP) becomes a tessera store with a manifest (sha256, valid-pixel counts, the provenance
recorded by `publish` when there is one).

Both build into a temporary sibling of `out` and rename it into place when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera.errors import ExistsError, StoreError
from tessera.store import geotessera as gt
from tessera.store.layout import FILE_KINDS, relpath
from tessera.store.manifest import FileEntry, Manifest, TileEntry, hash_file
from tessera.store.protocol import Store

PROVENANCE = "tessera_provenance.json"
#: tessera model ids published as one of GeoTessera's datasets: (version, variant, npy dir).
DATASETS = {"v1": ("1.0", "vultr", "v1")}

Progress = Callable[[int, int], object]  # (tiles done, tiles in all)


@dataclasses.dataclass
class Published:
    """What `publish` / `import_store` wrote."""

    path: Path
    tiles: int  # tile-years
    linked: int  # files hard-linked
    copied: int  # files copied (another file system, or a download)
    dataset: str

    def __str__(self) -> str:
        return (f"{self.path}: {self.tiles} tile-years of {self.dataset} ({self.linked} files "
                f"hard-linked, {self.copied} copied)")


def _place(src: Path, dst: Path, link: bool) -> bool:
    """Hard-link `src` at `dst` (True), or copy it when linking is impossible (False)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    shutil.copyfile(src, dst)
    return False


@contextlib.contextmanager
def _building(out: Path, overwrite: bool) -> Any:
    """A temporary sibling of `out` to build in, renamed onto `out` when the block succeeds
    (an existing `out` is replaced only then, with `overwrite`)."""
    if out.exists() and not overwrite:
        raise ExistsError(f"{out}: exists (overwrite=True / --overwrite replaces it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _one_model(entries: Sequence[TileEntry], where: str) -> TileEntry:
    if not entries:
        raise StoreError(f"{where}: no tiles to publish (for the years asked)")
    kinds = {e.provenance for e in entries}
    if len(kinds) > 1:
        shown = "; ".join(f"{m or 'unrecorded'} ({d} dims, weights {w or 'unrecorded'}, "
                          f"precision {p})" for m, d, w, p in sorted(kinds))
        raise StoreError(f"{where}: tiles of {len(kinds)} models ({shown}); a GeoTessera "
                         "dataset holds one: publish the years of one model (--year)")
    return entries[0]


def _sha(f: FileEntry, path: Path) -> str:
    """The file's sha256: the manifest's, else hashed (a GeoTessera >= 0.10 source lists none)."""
    return f.sha256 or hash_file(path)[1]


def _geoparquet(df: Any, path: Path) -> None:
    """GeoParquet with WKB points in EPSG:4326 (geotessera <= 0.8 loads its registry with
    geopandas, which needs the `geo` metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    table = pa.Table.from_pandas(df, preserve_index=False)
    pts = shapely.points(df["lon"].to_numpy(), df["lat"].to_numpy())
    table = table.append_column("geometry", pa.array(shapely.to_wkb(pts), pa.binary()))
    geo = {"version": "1.0.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"],
                                    "bbox": [float(df["lon"].min()), float(df["lat"].min()),
                                             float(df["lon"].max()), float(df["lat"].max())]}}}
    meta = dict(table.schema.metadata or {})
    meta[b"geo"] = json.dumps(geo).encode()
    pq.write_table(table.replace_schema_metadata(meta), path, compression="zstd")


def publish(store: Store | str | os.PathLike, out: str | os.PathLike,
            years: Sequence[int] | None = None, dataset: str | None = None, link: bool = True,
            overwrite: bool = False, progress: Progress | None = None,
            zarr: bool = False) -> Published:
    """Lay `store` (any store: local, HTTP, even a GeoTessera layout) out in GeoTessera's
    layouts under `out` (see the module docstring). `dataset`: the mirror's `npy/` folder and
    the dataset recorded (default: `v1` for the v1.0 model, else the model id); `years`: only
    these. One model per output. `zarr`: also GeoTessera's Zarr store of every year, at
    `out/zarr/{dataset}.zarr` (`tessera.store.gtzarr`)."""
    from tessera.store import open_store

    src = open_store(store) if isinstance(store, (str, os.PathLike)) else store
    out = Path(out)
    man = src.manifest()
    if years is not None:
        man = man.query(year=[int(y) for y in years])
    entries = sorted(man.entries(), key=lambda e: (e.year, e.lat, e.lon))
    first = _one_model(entries, src.describe())
    version, variant, npy_dir = DATASETS.get(first.model, ("", "", first.model or "unrecorded"))
    dataset = dataset or npy_dir
    vp = gt._version_path(dataset)
    rows, landmasks = [], {}
    linked = copied = 0
    with _building(out, overwrite) as tmp:
        emb_dirs = (gt.EMBEDDINGS_DIR, f"npy/{dataset}")
        for i, e in enumerate(entries):
            files = {k: Path(src.open_file(e.files[k])) for k in FILE_KINDS}
            shas = {k: _sha(e.files[k], files[k]) for k in ("embeddings", "scales")}
            sums = []
            for kind, name in (("embeddings", f"{e.tile}.npy"),
                               ("scales", f"{e.tile}_scales.npy")):
                for d in emb_dirs:
                    if _place(files[kind], tmp / d / str(e.year) / e.tile / name, link):
                        linked += 1
                    else:
                        copied += 1
                sums.append(f"{shas[kind]}  {name}\n")
            for d in emb_dirs:
                (tmp / d / str(e.year) / e.tile / "SHA256").write_text("".join(sums))
            key = (e.lon, e.lat)
            if key not in landmasks:  # one landmask per tile: the first year's mask
                landmasks[key] = (e, files["mask"])
            elif landmasks[key][0].transform != e.transform or landmasks[key][0].crs != e.crs:
                raise StoreError(f"{src.describe()}: {e.tile} has another CRS or transform in "
                                 f"{e.year} than in {landmasks[key][0].year}; GeoTessera keeps "
                                 "one landmask (georeferencing) per tile")
            st = files["embeddings"].stat()
            rows.append({"lat": e.lat, "lon": e.lon, "year": e.year,
                         "hash": shas["embeddings"], "scales_hash": shas["scales"],
                         "file_size": e.files["embeddings"].size,
                         "scales_size": e.files["scales"].size,
                         "mtime": st.st_mtime, "scales_mtime": files["scales"].stat().st_mtime})
            if progress is not None:
                progress(i + 1, len(entries))
        lm_rows, sums = [], []
        for (lon, lat), (e, path) in sorted(landmasks.items(), key=lambda kv: kv[0][::-1]):
            name = f"{e.tile}.tiff"
            for d in (gt.LANDMASKS_DIR, f"landmasks/{vp}"):
                if _place(path, tmp / d / name, link):
                    linked += 1
                else:
                    copied += 1
            sha = _sha(e.files["mask"], path)
            sums.append(f"{sha}  {name}\n")
            lm_rows.append({"lat": lat, "lon": lon, "hash": sha,
                            "file_size": e.files["mask"].size, "mtime": path.stat().st_mtime,
                            "key": f"landmasks/{vp}/{name}"})
        (tmp / gt.LANDMASKS_DIR / "SHA256SUM").write_text("".join(sums))
        _write_registries(tmp, rows, lm_rows, version, variant, dataset, vp)
        (tmp / PROVENANCE).write_text(json.dumps({
            "model": first.model, "dims": first.dims, "weights": first.weights,
            "precision": first.precision, "version": first.version, "dataset": dataset,
            "source": src.describe(),
            "years": sorted({e.year for e in entries}),
            "published": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
            indent=1) + "\n")
        if zarr:
            from tessera.store.client import Client
            from tessera.store.gtzarr import write_zarr_store

            write_zarr_store(Client(src), tmp / "zarr" / f"{dataset}.zarr",
                             sorted({e.year for e in entries}))
    return Published(out, len(entries), linked, copied, dataset)


def _write_registries(root: Path, rows: list[dict[str, Any]], lm_rows: list[dict[str, Any]],
                      version: str, variant: str, dataset: str, vp: str) -> None:
    import pandas as pd

    df = pd.DataFrame(rows).sort_values(["year", "lat", "lon"], kind="stable")
    df["lon_i"] = (df["lon"] * 100).round().astype("int32")
    df["lat_i"] = (df["lat"] * 100).round().astype("int32")
    # geotessera <= 0.8: sha256 per file, sizes, naive mtimes
    reg = df[["lat", "lon", "year", "hash", "scales_hash", "file_size", "scales_size", "lon_i",
              "lat_i"]].copy()
    reg.insert(5, "mtime", pd.to_datetime(df["mtime"], unit="s"))
    _geoparquet(reg, root / gt.LEGACY_REGISTRY)
    lm = pd.DataFrame(lm_rows)
    lm["lon_i"] = (lm["lon"] * 100).round().astype("int32")
    lm["lat_i"] = (lm["lat"] * 100).round().astype("int32")
    lm["mtime"] = pd.to_datetime(lm["mtime"], unit="s", utc=True)
    lm = lm[["lat", "lon", "hash", "file_size", "mtime", "key", "lon_i", "lat_i"]]
    _geoparquet(lm, root / gt.LANDMASKS)
    (root / "landmasks" / vp).mkdir(parents=True, exist_ok=True)
    _geoparquet(lm, root / "landmasks" / vp / gt.LANDMASKS)
    # geotessera >= 0.10: sizes (no hashes), UTC mtimes, version / variant when it is one of
    # GeoTessera's datasets (its client filters on them; without them it takes every row)
    man = pd.DataFrame({"year": df["year"].astype("int64"), "lon": df["lon"], "lat": df["lat"]})
    folders = [f"{y}/grid_{lo:.2f}_{la:.2f}" for y, lo, la in zip(df["year"], df["lon"],
                                                                    df["lat"])]
    man["directory"] = folders
    man["grid_path"] = [f"{f}/{f.split('/')[1]}.npy" for f in folders]
    man["scales_path"] = [f"{f}/{f.split('/')[1]}_scales.npy" for f in folders]
    man["grid_mtime"] = pd.to_datetime(df["mtime"], unit="s", utc=True)
    man["scales_mtime"] = pd.to_datetime(df["scales_mtime"], unit="s", utc=True)
    man["grid_size"] = df["file_size"].astype("int64")
    man["scales_size"] = df["scales_size"].astype("int64")
    man["lon_i"], man["lat_i"] = df["lon_i"], df["lat_i"]
    if version:
        man.insert(0, "variant", variant)
        man.insert(0, "version", version)
    man = man.reset_index(drop=True)
    man.to_parquet(root / gt.REGISTRY_MANIFEST, index=False)
    man.to_parquet(root / "npy" / dataset / gt.REGISTRY_MANIFEST, index=False)


def import_store(source: Store | str | os.PathLike, out: str | os.PathLike,
                 years: Sequence[int] | None = None, dataset_version: str | None = None,
                 link: bool = True, overwrite: bool = False,
                 progress: Progress | None = None) -> Published:
    """A tessera store at `out` from a store in one of GeoTessera's layouts (local or HTTP):
    the tiles' files hard-linked (or copied), the landmask as each tile-year's mask when it
    matches the embedding grid (else a mask of the pixels with data), sha256 and valid-pixel
    counts computed, and the model recorded by `publish` restored when present."""
    from tessera.store import open_store
    from tessera.store.local import write_mask

    src = (open_store(source, dataset_version=dataset_version)
           if isinstance(source, (str, os.PathLike)) else source)
    out = Path(out)
    man = src.manifest()
    if years is not None:
        man = man.query(year=[int(y) for y in years])
    entries = sorted(man.entries(), key=lambda e: (e.year, e.tile))
    if not entries:
        raise StoreError(f"{src.describe()}: no tiles to import (for the years asked)")
    prov: dict[str, Any] = {}
    root = getattr(src, "root", None)
    if root is not None and (Path(root) / PROVENANCE).is_file():
        prov = json.loads((Path(root) / PROVENANCE).read_text())
    linked = copied = 0
    new: list[TileEntry] = []
    with _building(out, overwrite) as tmp:
        for i, e in enumerate(entries):
            files: dict[str, FileEntry] = {}
            paths = {k: Path(src.open_file(e.files[k])) for k in FILE_KINDS}
            scales = np.load(paths["scales"], mmap_mode="r")
            for k in FILE_KINDS:
                dst = tmp / relpath(k, e.year, e.tile)
                if k == "mask" and not _mask_fits(paths[k], e):
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    write_mask(dst, np.isfinite(scales).astype(np.uint8), e.crs, e.affine)
                    copied += 1
                elif _place(paths[k], dst, link):
                    linked += 1
                else:
                    copied += 1
                size, sha = hash_file(dst)
                if k != "mask" and e.files[k].sha256 and sha != e.files[k].sha256:
                    raise StoreError(f"{paths[k]}: sha256 {sha} differs from the registry's "
                                     f"{e.files[k].sha256} (corrupt or stale)")
                files[k] = FileEntry(relpath(k, e.year, e.tile), size, sha)
            new.append(dataclasses.replace(
                e, files=files, valid_pixels=int(np.isfinite(scales).sum()),
                model=prov.get("model", e.model), weights=prov.get("weights", e.weights),
                precision=prov.get("precision", e.precision),
                version=prov.get("version", e.version), created=""))
            del scales
            if progress is not None:
                progress(i + 1, len(entries))
        Manifest.from_entries(new).write(tmp / "manifest.parquet")
    return Published(out, len(new), linked, copied, prov.get("dataset", new[0].model))


def _mask_fits(path: Path, e: TileEntry) -> bool:
    import rasterio

    with rasterio.open(path) as m:
        return (m.height, m.width) == (e.height, e.width) and m.count == 1 \
            and m.dtypes[0] == "uint8"


__all__ = ["DATASETS", "PROVENANCE", "Published", "import_store", "publish"]
