#!/usr/bin/env python
"""End-to-end `embed_tile` on SIMULATED tiles of growing size: throughput and peak memory.

Shows that inference streams: the peak resident memory of the embedding process stays flat as
the tile grows, although the tile's files grow with the square of its side. Each size runs in
its own process (`tessera embed` through the Python API), so each peak RSS belongs to one run.

    python bench/embed_tile.py                    # sizes 128 256 512, preset tiny
    python bench/embed_tile.py --sizes 128 256 --preset small
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(tile: str, out: str, preset: str, sampling: str) -> None:
    from tessera.infer import Embedder, embed_tile, resolve_model

    model, meta = resolve_model(preset=preset)
    t0 = time.perf_counter()
    res = embed_tile(Embedder(model, sampling=sampling), tile, out, progress=False, meta=meta)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"pixels": res.n_pixels, "seconds": seconds, "peak_rss_mib": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--sampling", default="all", choices=["all", "v1"])
    ap.add_argument("--workdir", default=None, help="Keep simulated tiles here (default: temp).")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    from tessera.simulate import SimConfig, simulate_tile

    work = Path(args.workdir or tempfile.mkdtemp(prefix="tessera-bench-"))
    rows = []
    for size in args.sizes:
        tile = work / f"sim_{size}"
        if not (tile / "roi.tiff").exists():
            simulate_tile(tile, SimConfig(height=size, width=size, seed=0))
        tile_mib = sum(f.stat().st_size for f in tile.glob("*.npy")) / 2**20
        out = subprocess.run([sys.executable, __file__, "--worker", str(tile), str(work / "out"),
                              args.preset, args.sampling], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((size, r["pixels"], tile_mib, r["seconds"], r["pixels"] / r["seconds"],
                     r["peak_rss_mib"]))
        print(f"... {size} x {size}: {r['pixels'] / r['seconds']:.0f} px/s, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    print(f"\nembed_tile on SIMULATED tiles (70 S2 dates, 30 + 30 S1), preset {args.preset}, "
          f"sampling {args.sampling}")
    print(f"{'tile':>10} {'pixels':>8} {'tile MiB':>9} {'seconds':>8} {'px/s':>7} {'peak RSS MiB':>13}")
    for size, px, mib, sec, rate, rss in rows:
        print(f"{size:>4} x {size:<4} {px:>8} {mib:>9.0f} {sec:>8.1f} {rate:>7.0f} {rss:>13.0f}")


if __name__ == "__main__":
    main()
