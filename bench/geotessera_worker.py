"""One measured run of the REAL geotessera client, for bench/client.py (run with the Python of
a geotessera venv, e.g. .venv-geotessera/0.11.0/bin/python; it does not import tessera).

    python bench/geotessera_worker.py OP STORE OUT --bbox W S E N --year Y [--points N]

OP: sample_points (N random points in the bbox, the same as tessera's worker draws) or
export_tiles (every tile of the year as a float32 LZW GeoTIFF). STORE is a folder made by
`tessera store publish`. Prints one JSON line: the operation's wall time (the client's set-up,
which reads the registries, is timed apart as setup_s)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("op", choices=["sample_points", "export_tiles", "baseline"])
    ap.add_argument("store")
    ap.add_argument("out")
    ap.add_argument("--bbox", type=float, nargs=4, required=True)
    ap.add_argument("--year", type=int, required=True)
    ap.add_argument("--points", type=int, default=10_000)
    args = ap.parse_args()
    import geotessera
    from geotessera import GeoTessera

    t0 = time.perf_counter()
    kw = {"dataset_version": "v1", "cache_dir": tempfile.mkdtemp(),
          "embeddings_dir": args.store, "registry_dir": args.store}
    if not geotessera.__version__.startswith("0.7"):
        kw["dataset_variant"] = "vultr"
    gt = GeoTessera(**kw)
    info: dict = {"version": geotessera.__version__, "setup_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    if args.op == "sample_points":
        rng = np.random.default_rng(0)
        w, s, e, n = args.bbox
        pts = np.column_stack([rng.uniform(w, e, args.points), rng.uniform(s, n, args.points)])
        vals = np.asarray(gt.sample_embeddings_at_points([tuple(p) for p in pts],
                                                         year=args.year, auto_download=False))
        info["valid"] = int(np.isfinite(vals).all(axis=1).sum())
    elif args.op == "export_tiles":
        tiles = [t for t in gt.registry.get_available_embeddings() if int(t[0]) == args.year]
        paths = gt.export_embedding_geotiffs(tiles, args.out, compress="lzw")
        import rasterio

        raster = 0
        for p in paths:
            with rasterio.open(p) as src:
                raster += src.width * src.height * src.count * 4
        info["raster_bytes"] = raster
        info["files"] = len(paths)
    info["wall_s"] = time.perf_counter() - t0
    with open("/proc/self/status") as f:  # peak RSS of this process since exec
        info["vmhwm_mb"] = next(int(x.split()[1]) / 1024.0 for x in f if x.startswith("VmHWM:"))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
