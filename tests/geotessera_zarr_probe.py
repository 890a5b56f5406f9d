"""Run by the REAL geotessera 0.11 (its own venv, see scripts/install_geotessera.sh), offline
(every socket connect refused), for tests/store/test_gtzarr.py:

    .venv-geotessera/0.11.0/bin/python tests/geotessera_zarr_probe.py SPEC.json

SPEC.json: {"mode": "read" | "build", "store": Zarr store path, "out": .npz path,
            "years": [...], "points": [[lon, lat], ...], "bboxes": [[w, s, e, n], ...],
            build only: "work": folder, "tiles": [[lon, lat, [years]], ...], "shard": px}

"read" opens `store` with `GeoTesseraZarr` and samples the points and reads the bboxes of each
year. "build" first writes, under `work`, a GeoTessera 0.11 local store (manifest.parquet,
landmasks.parquet, 10 m .npy tiles shaped by `geotessera.zarr.project_tile`, landmasks with a
water strip along the north edge and a NaN hole in the scales), then builds the Zarr store at
`store` with geotessera's own `init_store` + `fill_store` (SHARD_SIZE patched to `shard` and
the spawn process pool replaced by one thread, as docs/geotessera_layouts.md 1d did), then
reads it as "read" does. Prints one JSON line; arrays go to `out`.
"""

import json
import socket
import sys
import tempfile
from pathlib import Path

ATTEMPTS = []


def _refuse(self, address):  # type: ignore[no-untyped-def]
    ATTEMPTS.append(str(address))
    raise OSError(f"network refused by the test: {address}")


socket.socket.connect = _refuse  # type: ignore[method-assign]

import numpy as np  # noqa: E402

import geotessera  # noqa: E402

MTIME = 1_700_000_000


def build(spec: dict, arrays: dict) -> dict:  # type: ignore[type-arg]
    """The source store, then the Zarr store from it with geotessera's writer."""
    import concurrent.futures

    import pandas as pd
    import rasterio

    import geotessera.remote
    import geotessera.zarr as gz
    from geotessera import GeoTessera

    src = Path(spec["work"]) / "src"
    emb_root = src / "global_0.1_degree_representation"
    lm_root = src / "global_0.1_degree_tiff_all"
    lm_root.mkdir(parents=True, exist_ok=True)
    rows, lm_rows, tiles = [], [], []
    for lon, lat, years in spec["tiles"]:
        ti = gz.project_tile(lon, lat)
        h, w = ti.height, ti.width
        name = f"grid_{lon:.2f}_{lat:.2f}"
        land = np.ones((h, w), np.uint8)
        land[: h // 8] = 0  # a water strip along the north edge
        lm = lm_root / f"{name}.tiff"
        with rasterio.open(lm, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8",
                           crs=f"EPSG:{ti.epsg}", transform=ti.transform) as dst:
            dst.write(land, 1)
        lm_rows.append({"lon": lon, "lat": lat, "file_size": lm.stat().st_size,
                        "mtime": pd.Timestamp(MTIME, unit="s", tz="UTC"),
                        "key": f"s3://bucket/landmasks/{lm.name}",
                        "lon_i": round(lon * 100), "lat_i": round(lat * 100)})
        tiles.append({"name": name, "epsg": ti.epsg, "transform": list(ti.transform)[:6],
                      "height": h, "width": w, "years": list(years)})
        for year in years:
            rng = np.random.default_rng([round(lon * 100) + 20000, round(lat * 100) + 10000, year])
            q = rng.integers(-127, 128, size=(h, w, 128), dtype=np.int8)
            s = rng.uniform(0.005, 0.02, size=(h, w)).astype(np.float32)
            s[h // 2: h // 2 + 20, w // 2: w // 2 + 20] = np.nan  # a hole in the data
            folder = emb_root / str(year) / name
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{name}.npy", q)
            np.save(folder / f"{name}_scales.npy", s)
            rows.append({"version": "1.0", "variant": "vultr", "year": year, "lon": lon,
                         "lat": lat, "directory": f"s3://bucket/v1/{year}/{name}",
                         "grid_path": f"s3://bucket/v1/{year}/{name}/{name}.npy",
                         "scales_path": f"s3://bucket/v1/{year}/{name}/{name}_scales.npy",
                         "grid_mtime": pd.Timestamp(MTIME, unit="s", tz="UTC"),
                         "scales_mtime": pd.Timestamp(MTIME, unit="s", tz="UTC"),
                         "grid_size": (folder / f"{name}.npy").stat().st_size,
                         "scales_size": (folder / f"{name}_scales.npy").stat().st_size,
                         "lon_i": round(lon * 100), "lat_i": round(lat * 100)})
    df = pd.DataFrame(rows)
    df[["lon_i", "lat_i"]] = df[["lon_i", "lat_i"]].astype(np.int32)
    df.to_parquet(src / "manifest.parquet", index=False)
    lmf = pd.DataFrame(lm_rows)
    lmf[["lon_i", "lat_i"]] = lmf[["lon_i", "lat_i"]].astype(np.int32)
    lmf.to_parquet(src / "landmasks.parquet", index=False)

    gt = GeoTessera(dataset_version="v1", dataset_variant="vultr", cache_dir=tempfile.mkdtemp(),
                    embeddings_dir=str(src), registry_dir=str(src))

    class OneThread(concurrent.futures.ThreadPoolExecutor):
        """The spawn process pool of `_write_shards`, as one thread (same work, no spawn)."""

        def __init__(self, max_workers=None, mp_context=None, initializer=None,  # type: ignore[no-untyped-def]
                     initargs=()):
            super().__init__(1, initializer=initializer, initargs=initargs)

    concurrent.futures.ProcessPoolExecutor = OneThread  # type: ignore[misc]
    # process-only hygiene of the pool's workers, meaningless (and unwanted) in a thread
    geotessera.remote.die_with_parent = lambda: None
    geotessera.remote.reset_after_fork = lambda: None
    gz.SHARD_SIZE = int(spec["shard"])
    years = sorted({y for _, _, ys in spec["tiles"] for y in ys})
    gz.init_store(gt.registry, spec["store"], years=years,
                  geotessera_version=geotessera.__version__)
    gz.fill_store(gt.registry, spec["store"], workers=1)
    return {"tiles": tiles, "source": str(emb_root)}


def read(spec: dict, arrays: dict) -> dict:  # type: ignore[type-arg]
    from geotessera.store import GeoTesseraZarr

    z = GeoTesseraZarr(spec["store"])
    points = [tuple(p) for p in spec["points"]]
    out = {"years": [int(y) for y in z.years], "model": z.model_version, "n_bands": z.n_bands,
           "status": {}, "regions": {}}
    for year in spec["years"]:
        arrays[f"samples_{year}"] = np.asarray(
            z.sample_points(points, year, search_px=0, cross_zone=False), np.float32)
        out["status"][str(year)] = [z.probe(lon, lat, year, cross_zone=False, search_px=0)[1]
                                    for lon, lat in points]
        for i, bbox in enumerate(spec["bboxes"]):
            emb, transform, crs = z.read_region(tuple(bbox), year)
            arrays[f"region_{year}_{i}"] = np.asarray(emb, np.float32)
            out["regions"][f"{year}_{i}"] = {"transform": list(transform)[:6], "crs": str(crs)}
    return out


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    arrays: dict = {}  # type: ignore[type-arg]
    result = {"version": geotessera.__version__}
    if spec["mode"] == "build":
        result.update(build(spec, arrays))
    result.update(read(spec, arrays))
    np.savez(spec["out"], **arrays)
    result["network"] = ATTEMPTS
    print(json.dumps(result))
