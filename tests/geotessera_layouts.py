"""Writes small stores in GeoTessera's published layouts, for tests (and by hand:
`python tests/geotessera_layouts.py OUT`).

The facts followed (verified against the real geotessera 0.7.5 and 0.11.0 clients, which read
stores written this way offline):
- <= 0.8: `registry.parquet` is GeoParquet (`geo` metadata, WKB points, EPSG:4326) with lat,
  lon, year, hash (sha256 hex of the .npy), scales_hash, mtime, file_size, scales_size, lon_i,
  lat_i, geometry; `landmasks.parquet` lat, lon, hash, file_size, lon_i, lat_i;
- >= 0.10: `manifest.parquet` (plain) with version "1.0", variant, year, lon, lat, directory,
  grid_path, scales_path, grid_mtime, scales_mtime (UTC), grid_size, scales_size, lon_i,
  lat_i; `landmasks.parquet` lon, lat, file_size, mtime, key, lon_i, lat_i;
- tiles under `global_0.1_degree_representation/{year}/grid_X_Y/grid_X_Y{,_scales}.npy` (int8
  (H, W, 128), float32 (H, W), NaN = no data), landmasks `global_0.1_degree_tiff_all/
  grid_X_Y.tiff` (uint8, 0 = water, the tile's UTM CRS and transform); a 0.10 mirror puts them
  under `npy/{dataset}/{year}/...` and `landmasks/{version}/`.
The arrays are `tessera.store.synthetic`'s SIMULATED ones at a coarse resolution.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio

from tessera.geo.grid import parse_tile_name
from tessera.store.synthetic import simulated_tile_arrays

LAYOUTS = ("registry", "manifest", "mirror")
#: the real geotessera clients' venvs (scripts/install_geotessera.sh)
VENVS = Path(__file__).resolve().parents[1] / ".venv-geotessera"


def geotessera_python(version: str) -> Path:
    """The Python of the venv holding geotessera `version`; skips the test when absent."""
    import pytest

    py = VENVS / version / "bin" / "python"
    if not (VENVS / version / ".installed").exists() or not py.exists():
        pytest.skip(f"geotessera {version} is not installed in {VENVS / version} "
                    "(run scripts/install_geotessera.sh; 0.11.0 needs a Python 3.12)")
    return py
MTIME = 1_700_000_000


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _geoparquet(table: pa.Table, path: Path) -> None:
    import shapely

    pts = shapely.points(table["lon"].to_numpy(), table["lat"].to_numpy())
    table = table.append_column("geometry", pa.array(shapely.to_wkb(pts), pa.binary()))
    geo = {"version": "1.0.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"],
                                    "crs": None}}}
    pq.write_table(table.replace_schema_metadata({b"geo": json.dumps(geo).encode()}), path,
                   compression="zstd")


def write_store(root: str | Path, layout: str, tiles: list[str], years: list[int],
                resolution: float = 500.0, dataset: str = "v1",
                landmask: Callable[[str, np.ndarray], np.ndarray] | None = None) -> Path:
    """A store of SIMULATED `tiles` x `years` in `layout` ("registry": geotessera <= 0.8;
    "manifest": >= 0.10 local mode; "mirror": a >= 0.10 mirror with npy/{dataset}/).
    `landmask(tile name, scales)`: the tile's uint8 landmask (0 = water) instead of the default,
    1 where the scale is finite (written once per tile, from its first year's scales)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {LAYOUTS}")
    root = Path(root)
    emb_dir = root / ("global_0.1_degree_representation" if layout != "mirror"
                      else f"npy/{dataset}")
    lm_dir = root / ("global_0.1_degree_tiff_all" if layout != "mirror"
                     else f"landmasks/{dataset.split('-')[0]}")
    rows, lm_rows = [], {}
    for year in years:
        for name in tiles:
            t = parse_tile_name(name)
            q, s, _, g = simulated_tile_arrays(t, year, resolution)
            folder = emb_dir / str(year) / name
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{name}.npy", q)
            np.save(folder / f"{name}_scales.npy", s)
            lm = lm_dir / f"{name}.tiff"
            if name not in lm_rows:
                lm_dir.mkdir(parents=True, exist_ok=True)
                land = (np.isfinite(s).astype(np.uint8) if landmask is None  # 0 = water
                        else np.asarray(landmask(name, s), np.uint8))
                with rasterio.open(lm, "w", driver="GTiff", width=g.width, height=g.height,
                                   count=1, dtype="uint8", crs=g.crs, transform=g.transform,
                                   compress="lzw") as dst:
                    dst.write(land, 1)
                lm_rows[name] = {"lat": t.lat, "lon": t.lon, "hash": _sha(lm),
                                 "file_size": lm.stat().st_size,
                                 "key": f"s3://bucket/landmasks/{lm.name}",
                                 "lon_i": round(t.lon * 100), "lat_i": round(t.lat * 100)}
            npy, sc = folder / f"{name}.npy", folder / f"{name}_scales.npy"
            rows.append({"lat": t.lat, "lon": t.lon, "year": year, "hash": _sha(npy),
                         "scales_hash": _sha(sc), "file_size": npy.stat().st_size,
                         "scales_size": sc.stat().st_size, "lon_i": round(t.lon * 100),
                         "lat_i": round(t.lat * 100),
                         "directory": f"s3://bucket/{dataset}/{year}/{name}"})
    i32 = pa.int32()
    reg_dir = emb_dir if layout == "mirror" else root
    lm_reg = (lm_dir if layout == "mirror" else root) / "landmasks.parquet"
    if layout == "registry":
        _geoparquet(pa.table({
            "lat": [r["lat"] for r in rows], "lon": [r["lon"] for r in rows],
            "year": pa.array([r["year"] for r in rows], pa.int64()),
            "hash": [r["hash"] for r in rows], "scales_hash": [r["scales_hash"] for r in rows],
            "mtime": pa.array([MTIME * 10**9] * len(rows), pa.timestamp("ns")),
            "file_size": pa.array([r["file_size"] for r in rows], pa.int64()),
            "scales_size": pa.array([r["scales_size"] for r in rows], pa.int64()),
            "lon_i": pa.array([r["lon_i"] for r in rows], i32),
            "lat_i": pa.array([r["lat_i"] for r in rows], i32)}), reg_dir / "registry.parquet")
        lms = list(lm_rows.values())
        _geoparquet(pa.table({
            "lat": [r["lat"] for r in lms], "lon": [r["lon"] for r in lms],
            "hash": [r["hash"] for r in lms],
            "file_size": pa.array([r["file_size"] for r in lms], pa.int64()),
            "lon_i": pa.array([r["lon_i"] for r in lms], i32),
            "lat_i": pa.array([r["lat_i"] for r in lms], i32)}), lm_reg)
    else:
        utc = pa.timestamp("us", tz="UTC")
        pq.write_table(pa.table({
            "version": ["1.0"] * len(rows), "variant": ["vultr"] * len(rows),
            "year": pa.array([r["year"] for r in rows], pa.int64()),
            "lon": [r["lon"] for r in rows], "lat": [r["lat"] for r in rows],
            "directory": [r["directory"] for r in rows],
            "grid_path": [r["directory"] + "/x.npy" for r in rows],
            "scales_path": [r["directory"] + "/x_scales.npy" for r in rows],
            "grid_mtime": pa.array([MTIME * 10**6] * len(rows), utc),
            "scales_mtime": pa.array([MTIME * 10**6] * len(rows), utc),
            "grid_size": pa.array([r["file_size"] for r in rows], pa.int64()),
            "scales_size": pa.array([r["scales_size"] for r in rows], pa.int64()),
            "lon_i": pa.array([r["lon_i"] for r in rows], i32),
            "lat_i": pa.array([r["lat_i"] for r in rows], i32)}), reg_dir / "manifest.parquet")
        lms = list(lm_rows.values())
        pq.write_table(pa.table({
            "lon": [r["lon"] for r in lms], "lat": [r["lat"] for r in lms],
            "file_size": pa.array([r["file_size"] for r in lms], pa.int64()),
            "mtime": pa.array([MTIME * 10**6] * len(lms), utc),
            "key": [r["key"] for r in lms],
            "lon_i": pa.array([r["lon_i"] for r in lms], i32),
            "lat_i": pa.array([r["lat_i"] for r in lms], i32)}), lm_reg)
    return root


if __name__ == "__main__":
    out = Path(sys.argv[1])
    for lay in LAYOUTS:
        write_store(out / lay, lay, ["grid_0.15_52.05", "grid_-0.05_52.05"], [2024])
        print(f"wrote {out / lay}")
