"""Benchmark of the store client: does memory stay flat as the region grows?

Builds two SIMULATED stores (random int8 embeddings on real grid tiles, see
tessera.store.synthetic) of 4 and 100 tiles, square blocks straddling the UTM zone 31/32 border at
6 degrees E (so half the tiles are warped), at a coarse resolution (default 100 m) so it runs in a
couple of minutes on 2 cores. Then runs export_geotiff, export_zarr and sample_points on each, every
run in a fresh subprocess, and reports its wall time and peak RSS (ru_maxrss of that child), and
the 100/4 ratios. An import-only child gives the baseline RSS of the interpreter and libraries.

    OMP_NUM_THREADS=1 python bench/client.py [--resolution 100] [--points 10000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

YEAR = 2022
OPS = ("baseline", "export_geotiff", "export_zarr", "sample_points")


def block_tiles(n: int, centre_lon: float = 6.0, centre_lat: float = 45.0) -> list[str]:
    """n = k * k tile names in a square block centred on (centre_lon, centre_lat)."""
    k = int(round(math.sqrt(n)))
    if k * k != n:
        raise SystemExit(f"--sizes: {n} is not a square number of tiles")
    lon0, lat0 = centre_lon - k * 0.05, centre_lat - k * 0.05
    return [f"grid_{lon0 + 0.1 * i + 0.05:.2f}_{lat0 + 0.1 * j + 0.05:.2f}"
            for j in range(k) for i in range(k)]


def bbox_of(tiles: list[str]) -> tuple[float, float, float, float]:
    from tessera.geo.grid import parse_tile_name
    b = [parse_tile_name(t).bounds for t in tiles]
    return (min(x[0] for x in b), min(x[1] for x in b), max(x[2] for x in b), max(x[3] for x in b))


def worker(op: str, store: str, out: str, points: int) -> None:
    """One measured run (in its own process): prints a JSON line with the wall time."""
    import numpy as np

    from tessera.store.client import Client
    from tessera.store.local import LocalStore

    t0 = time.perf_counter()
    info: dict = {}
    if op != "baseline":
        import warnings
        warnings.simplefilter("ignore")
        client = Client(LocalStore(store))
        bbox = bbox_of(client.manifest.tiles())
        if op == "export_geotiff":
            p = client.export_geotiff(bbox, YEAR, Path(out) / "region.tif")
            info["bytes"] = p.stat().st_size
        elif op == "export_zarr":
            p = client.export_zarr(bbox, YEAR, Path(out) / "region.zarr")
            info["bytes"] = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        elif op == "sample_points":
            rng = np.random.default_rng(0)
            w, s, e, n = bbox
            pts = np.column_stack([rng.uniform(w, e, points), rng.uniform(s, n, points)])
            _, status = client.sample_points(pts, YEAR)
            info["valid"] = int((status == "valid").sum())
    else:  # what every run pays before any work: interpreter and libraries
        import rasterio  # noqa: F401
        import zarr  # noqa: F401

        import tessera.store.client  # noqa: F401
    info["wall_s"] = time.perf_counter() - t0
    print(json.dumps(info))


def measure(op: str, store: Path, out: Path, points: int) -> dict:
    """Run one op in a fresh subprocess; its wall time and peak RSS (MB)."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker", op, str(store), str(out), "--points", str(points)]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all children)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = p.stdout.read().decode(), p.stderr.read().decode()
    if p.returncode != 0:
        raise SystemExit(f"{op} on {store} failed ({p.returncode}):\n{stderr}")
    info = json.loads(stdout.strip().splitlines()[-1])
    info["process_s"] = time.perf_counter() - t0
    info["peak_rss_mb"] = usage.ru_maxrss / 1024.0  # Linux: kilobytes
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", type=float, default=100.0, help="pixel size of the simulated "
                    "stores in metres (10 = the real product; default 100 for a quick run)")
    ap.add_argument("--sizes", type=int, nargs=2, default=(4, 100), metavar=("SMALL", "LARGE"),
                    help="tiles in the two stores (square numbers)")
    ap.add_argument("--points", type=int, default=10_000, help="points for sample_points")
    ap.add_argument("--ops", nargs="+", default=list(OPS[1:]), choices=OPS[1:])
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    ap.add_argument("--worker", nargs=3, metavar=("OP", "STORE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, points=args.points)
        return

    from tessera.store.synthetic import build_simulated_store

    with tempfile.TemporaryDirectory(prefix="tessera-bench-client-") as tmp:
        work = args.workdir or Path(tmp)
        print(f"SIMULATED stores (random embeddings) at {args.resolution:g} m, year {YEAR}, "
              f"in {work}; {os.cpu_count()} CPUs")
        stores = {}
        for n in args.sizes:
            t0 = time.perf_counter()
            tiles = block_tiles(n)
            root = work / f"store_{n}"
            build_simulated_store(root, tiles, [YEAR], resolution=args.resolution)
            size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
            print(f"  store of {n} tiles ({tiles[0]} .. {tiles[-1]}): {size / 1e6:.1f} MB, "
                  f"built in {time.perf_counter() - t0:.1f} s")
            stores[n] = root
        base = measure("baseline", stores[args.sizes[0]], work / "out_base", args.points)
        print(f"  baseline (imports only): peak RSS {base['peak_rss_mb']:.0f} MB\n")
        print(f"{'op':<16}{'tiles':>6}{'wall s':>9}{'peak RSS MB':>13}{'output MB':>11}")
        results: dict[tuple[str, int], dict] = {}
        for op in args.ops:
            for n in args.sizes:
                r = measure(op, stores[n], work / f"out_{op}_{n}", args.points)
                results[op, n] = r
                extra = f"{r['bytes'] / 1e6:>11.1f}" if "bytes" in r else \
                    f"{'':>3}{r.get('valid', 0):>5} valid pts" if op == "sample_points" else ""
                print(f"{op:<16}{n:>6}{r['wall_s']:>9.2f}{r['peak_rss_mb']:>13.0f}{extra}")
        small, large = args.sizes
        print(f"\nratio {large}/{small} tiles:")
        for op in args.ops:
            a, b = results[op, small], results[op, large]
            print(f"  {op:<16} time x{b['wall_s'] / a['wall_s']:.1f}   peak RSS "
                  f"x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}   (above baseline: "
                  f"{a['peak_rss_mb'] - base['peak_rss_mb']:.0f} -> "
                  f"{b['peak_rss_mb'] - base['peak_rss_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
