"""`tessera run` on a LocalCluster: tiles per hour, peak memory per worker and scratch disk, for
1, 4 and 16 grid tiles and 1 and 2 workers, on SIMULATED COG acquisitions at a reduced
resolution (`tessera.preprocess.synthetic.write_noise_region`).

    python bench/pipeline.py [--resolution 200] [--tiles 1,4,16] [--workers 1,2] [--model tiny]

Each (tiles, workers) cell runs on a fresh cluster and store. The workers load the model before
the clock starts (a long run loads it once per worker). Peak memory is each worker process's
maximum resident set (ru_maxrss), the largest over the workers; scratch is the largest size of
the scratch folder seen (polled every 0.1 s). The speed-up is against 1 worker in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _du(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass  # renamed or removed while walking
    return total


class ScratchWatch(threading.Thread):
    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.peak, self.stop = path, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.path.exists():
                self.peak = max(self.peak, _du(self.path))
            time.sleep(0.1)


def _warm(choice: object, threads: int) -> bool:
    from tessera.pipeline.run import _embedder
    _embedder(choice, threads)  # type: ignore[arg-type]
    return True


def cell(source: object, tiles: list, workers: int, resolution: float, model: str | None,
         meta: dict, tmp: Path) -> dict:
    from distributed import Client

    from tessera.pipeline.run import ModelChoice, RunConfig, local_cluster, plan_run, \
        run_distributed

    store = tmp / f"store_{len(tiles)}_{workers}"
    cfg = RunConfig(str(store), 2022, ModelChoice(model=model), resolution, 10_000, retries=0)
    plan = plan_run(source, tiles, cfg, meta)  # type: ignore[arg-type]
    with local_cluster(workers, 1) as cluster, Client(cluster) as client:
        client.run(_warm, plan.config.model, 1)
        watch = ScratchWatch(plan.config.scratch_dir)
        watch.start()
        report = run_distributed(plan, client)
        watch.stop.set()
        watch.join()
        rss = client.run(_peak_rss_mb)
    assert report.ok, report.failed
    return {"tiles": len(tiles), "workers": workers, "pixels": plan.pixels,
            "seconds": report.seconds, "tiles_per_hour": len(tiles) / report.seconds * 3600,
            "px_per_s": plan.pixels / report.seconds,
            "peak_rss_mb_per_worker": max(rss.values()), "scratch_peak_mb": watch.peak / 2**20,
            "scratch_per_tile_mb": plan.scratch_per_tile() / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", type=float, default=200.0)
    ap.add_argument("--tiles", default="1,4,16")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--model", default=None)
    ap.add_argument("--dates", type=int, default=20, help="S2 and S1 acquisitions each")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from tessera.geo import tiles_in_bbox
    from tessera.infer import resolve_model
    from tessera.preprocess.sources.files import FilesSource
    from tessera.preprocess.synthetic import write_noise_region

    block = tiles_in_bbox(3.01, 50.01, 3.39, 50.39)  # 4 x 4 tiles in UTM zone 31
    counts = [int(v) for v in args.tiles.split(",")]
    meta = resolve_model(None, model=args.model)[1]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tessera-bench-pipeline-") as d:
        tmp = Path(d)
        info = write_noise_region(tmp / "acq", block[:max(counts)], args.resolution,
                                  args.dates, args.dates)
        source = FilesSource(s2=info["s2"], s1=info["s1"])
        print(f"simulated acquisitions: {info['files']} COGs, {info['bytes'] / 2**20:.1f} MB, "
              f"{args.dates} S2 + {args.dates} S1 dates, {args.resolution:g} m", flush=True)
        for n in counts:
            for w in (int(v) for v in args.workers.split(",")):
                r = cell(source, block[:n], w, args.resolution, args.model, meta, tmp)
                rows.append(r)
                print(json.dumps({k: round(v, 2) if isinstance(v, float) else v
                                  for k, v in r.items()}), flush=True)
    print("\n| tiles | workers | px | s | tiles/h | px/s | speed-up | peak RSS/worker | "
          "scratch peak (per tile) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(x for x in rows if x["tiles"] == r["tiles"] and x["workers"] == 1)
        print(f"| {r['tiles']} | {r['workers']} | {r['pixels']:,} | {r['seconds']:.1f} | "
              f"{r['tiles_per_hour']:.0f} | {r['px_per_s']:.0f} | "
              f"x{base['seconds'] / r['seconds']:.2f} | {r['peak_rss_mb_per_worker']:.0f} MB | "
              f"{r['scratch_peak_mb']:.1f} MB ({r['scratch_per_tile_mb']:.1f} MB) |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    sys.exit(0)


if __name__ == "__main__":
    main()
