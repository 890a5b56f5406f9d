"""Benchmark of the store client against the real geotessera client, and of its memory as the
region grows.

Builds two SIMULATED stores (random int8 embeddings on real grid tiles, see
tessera.store.synthetic) of 4 and 100 tiles, square blocks straddling the UTM zone 31/32 border at
6 degrees E (so half the tiles are warped), at a coarse resolution (default 100 m) so it runs in a
couple of minutes on 2 cores, and publishes each for geotessera (`tessera store publish`: the
same files, hard-linked). Then runs, every run in a fresh subprocess, tessera's export_geotiff,
export_zarr, export_tiles (per-tile float32 LZW GeoTIFFs) and sample_points (10 000 random
points), and geotessera's export_embedding_geotiffs and sample_embeddings_at_points on the same
files with its own Python (each installed geotessera: .venv-geotessera/*), and reports wall time
(of the operation; the clients' set-up apart), throughput, peak RSS (ru_maxrss of that child),
the ratios geotessera / tessera, and the 100/4 growth. An import-only child gives the baseline
RSS of the interpreter and libraries.

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
OPS = ("baseline", "export_geotiff", "export_zarr", "export_tiles", "sample_points")
GT_OPS = ("export_tiles", "sample_points")  # what geotessera's client does too
ROOT = Path(__file__).resolve().parents[1]
GT_WORKER = ROOT / "bench" / "geotessera_worker.py"


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
        info["setup_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if op == "export_geotiff":
            p = client.export_geotiff(bbox, YEAR, Path(out) / "region.tif")
            info["bytes"] = p.stat().st_size
        elif op == "export_zarr":
            p = client.export_zarr(bbox, YEAR, Path(out) / "region.zarr")
            info["bytes"] = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        elif op == "export_tiles":
            res = client.export_tiles_geotiff(bbox, YEAR, Path(out), compress="lzw")
            info["files"] = len(res.written)
            info["raster_bytes"] = sum(e.width * e.height * e.dims * 4
                                       for e in client.manifest.query(year=YEAR).entries())
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
    info["vmhwm_mb"] = vmhwm_mb()
    print(json.dumps(info))


def vmhwm_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does not count the
    forked parent's image before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def measure(op: str, store: Path, out: Path, points: int, python: Path | None = None) -> dict:
    """Run one op in a fresh subprocess (tessera's, or with `python` geotessera's worker on a
    published copy); its wall time and peak RSS (MB)."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    if python is None:
        cmd = [sys.executable, __file__, "--worker", op, str(store), str(out), "--points",
               str(points)]
    else:
        bbox = bbox_of(sorted(p.name for p in store.glob(
            f"global_0.1_degree_representation/{YEAR}/grid_*")))
        cmd = [str(python), str(GT_WORKER), op, str(store), str(out), "--points", str(points),
               "--year", str(YEAR), "--bbox", *map(str, bbox)]
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
    info["peak_rss_mb"] = info.get("vmhwm_mb", usage.ru_maxrss / 1024.0)
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
    ap.add_argument("--geotessera", nargs="*", default=None, metavar="VERSION",
                    help="geotessera versions to compare with (default: every one installed "
                         "in .venv-geotessera/; none: --geotessera with no value)")
    ap.add_argument("--worker", nargs=3, metavar=("OP", "STORE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, points=args.points)
        return

    from tessera.store.publish import publish
    from tessera.store.synthetic import build_simulated_store

    venvs = ROOT / ".venv-geotessera"
    versions = (args.geotessera if args.geotessera is not None else
                sorted(p.name for p in venvs.glob("*") if (p / ".installed").exists()))
    pythons = {v: venvs / v / "bin" / "python" for v in versions}

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
            if pythons:
                publish(root, work / f"published_{n}")
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
        gt: dict[tuple[str, str, int], dict] = {}
        for v, py in pythons.items():
            for op in [o for o in args.ops if o in GT_OPS]:
                for n in args.sizes:
                    r = measure(op, work / f"published_{n}", work / f"gt_{v}_{op}_{n}",
                                args.points, python=py)
                    gt[v, op, n] = r
                    print(f"{'gt ' + v + ' ' + op:<28}{n:>4}{r['wall_s']:>9.2f}"
                          f"{r['peak_rss_mb']:>13.0f}   (set-up {r['setup_s']:.2f} s)")
        small, large = args.sizes
        if gt:
            print(f"\nagainst geotessera ({large} tiles; throughput, and geotessera's time / "
                  "tessera's: above 1 = tessera faster):")
        for (v, op, n), r in sorted(gt.items()):
            if n != large:
                continue
            ours = results[op, n]
            if op == "sample_points":
                what = (f"tessera {args.points / ours['wall_s']:,.0f} points/s, geotessera "
                        f"{args.points / r['wall_s']:,.0f} points/s")
            else:
                what = (f"tessera {ours['raster_bytes'] / 1e6 / ours['wall_s']:,.1f} MB/s, "
                        f"geotessera {r['raster_bytes'] / 1e6 / r['wall_s']:,.1f} MB/s")
            print(f"  {op:<14} geotessera {v:<7} {what}   ratio x{r['wall_s'] / ours['wall_s']:.2f}"
                  f"   peak RSS {ours['peak_rss_mb']:.0f} vs {r['peak_rss_mb']:.0f} MB")
        print(f"\nratio {large}/{small} tiles:")
        for op in args.ops:
            a, b = results[op, small], results[op, large]
            print(f"  {op:<16} time x{b['wall_s'] / a['wall_s']:.1f}   peak RSS "
                  f"x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}   (above baseline: "
                  f"{a['peak_rss_mb'] - base['peak_rss_mb']:.0f} -> "
                  f"{b['peak_rss_mb'] - base['peak_rss_mb']:.0f} MB)")
        for (v, op, n), r in sorted(gt.items()):
            if n == large:
                a = gt[v, op, small]
                print(f"  gt {v} {op:<12} time x{r['wall_s'] / a['wall_s']:.1f}   peak RSS "
                      f"x{r['peak_rss_mb'] / a['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
