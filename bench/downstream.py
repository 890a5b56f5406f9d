"""Benchmark of the downstream heads: time and peak memory to FIT each head kind on random
128-d embeddings, and to PREDICT a map (tessera.downstream.predict_map) of 1000 x 1000 and
5000 x 5000 px, with the 5000^2 / 1000^2 memory ratio (target: flat) and whether a 5000 x 5000
map with logistic / MLP takes under 60 s on 2 cores.

- Fit: N random embeddings (float32, values like dequantised codes, about +-1.3) and labels of
  `--classes` classes from a random linear rule plus noise (learnable, not separable); the
  data are made before the clock starts. Random forest with n_jobs = --threads.
- Map: by default (`--source store`) a SIMULATED store (random int8 embeddings on real grid
  tiles, tessera.store.synthetic) at `--resolution` m (default 20: the 5000 px square is 100 km,
  ~140 tiles, ~4 GB, about a minute to build; kept in --workdir for the next run), read
  through the client exactly as a user's map is: a square region in UTM zone 31 centred on
  (3 E, 45 N). `--source synthetic` feeds predict_strips with in-memory strips instead (one
  strip of random codes made once and handed out again for every strip: no store, no disk
  reads; what is left is the head, the batching and the GeoTIFF). The head is fitted (untimed)
  on `--map-train` random samples; the figure is predict_map's wall time. Heads keep their
  default hyper-parameters (random forest: 200 unlimited trees; MLP: 50 epochs) unless
  `--param kind.name=value` says otherwise; MLP threads = --threads.
- Every measurement runs in a fresh subprocess; peak RSS is that process's VmHWM
  (/proc/self/status); "before" is VmRSS when the timed work starts (interpreter, libraries,
  data or fitted head), "extra" the peak above it. An import-only child gives the baseline.

    python bench/downstream.py [--sizes 100000 1000000] [--map-sizes 1000 5000]
        [--kinds ...] [--map-kinds ...] [--source store|synthetic] [--threads 2]
        [--param random_forest.n_estimators=50 ...] [--workdir DIR]
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
from typing import Any

YEAR = 2022
DIM = 128
MODEL = "simulated"   # the model id of the simulated store's tiles
FIT_KINDS = ("logistic", "random_forest", "knn", "gbm", "mlp")
MAP_KINDS = ("logistic", "mlp", "random_forest")
TARGET_S = 60.0       # a 5000 x 5000 map with logistic / MLP on 2 cores
CENTRE = (3.0, 45.0)  # lon, lat: the middle of UTM zone 31


# --- measurements (each in its own process) -------------------------------------------------

def rss_mb(key: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident memory in MB; VmHWM, unlike
    ru_maxrss, does not count the forked parent's image before exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def set_threads(n: int) -> None:
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass


def random_data(n: int, classes: int, seed: int) -> tuple[Any, Any]:
    """float32 (n, DIM) embeddings and int labels 0..classes-1 from a noisy linear rule."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.empty((n, DIM), np.float32)
    for i in range(0, n, 100_000):  # in chunks: no float64 copy of the whole set
        k = min(100_000, n - i)
        x[i:i + k] = rng.uniform(-1.3, 1.3, (k, DIM)).astype(np.float32)
    w = np.random.default_rng(1234).normal(size=(DIM, classes)).astype(np.float32)
    y = np.empty(n, np.int64)
    for i in range(0, n, 100_000):
        z = x[i:i + 100_000] @ w
        z += rng.normal(scale=2.0, size=z.shape).astype(np.float32)
        y[i:i + 100_000] = z.argmax(axis=1)
    return x, y


def make_fitted(kind: str, x: Any, y: Any, classes: int, threads: int,
                params: dict[str, Any], seed: int = 0) -> tuple[Any, float]:
    """A head of `kind` (tessera.downstream.heads.make_head, the store's model id, `threads` as
    n_jobs / threads where the kind has them, `params` over its defaults) fitted on (x, y);
    (the head, the fit's wall seconds)."""
    from tessera.downstream.heads import default_params, make_head

    defaults = default_params(kind, "classification")
    opts: dict[str, Any] = {k: threads for k in ("n_jobs", "threads") if k in defaults}
    opts.update(params)
    head = make_head(kind, "classification", classes=[f"c{i}" for i in range(classes)],
                     seed=seed, model=MODEL, **opts)
    t0 = time.perf_counter()
    head.fit(x, y)
    return head, time.perf_counter() - t0


def parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """`--param random_forest.n_estimators=50 mlp.epochs=5` -> {kind: {name: value}} (values
    read as JSON when they parse, else text)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        kind, dot, name = key.partition(".")
        if not (sep and dot and kind in FIT_KINDS and name):
            raise SystemExit(f"--param {item!r}: expected KIND.NAME=VALUE with KIND one of "
                             f"{', '.join(FIT_KINDS)}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out.setdefault(kind, {})[name] = value
    return out


def square_region(px: int, resolution: float) -> Any:
    """A lon/lat polygon of the `px` x `px` square at `resolution` in UTM zone 31 centred on
    CENTRE (edges densified, so its UTM grid is the square)."""
    import numpy as np
    from shapely.geometry import Polygon

    from tessera.geo.crs import LONLAT, transformer

    to_utm = transformer(LONLAT, "EPSG:32631")
    cx, cy = to_utm.transform(*CENTRE)
    half = px * resolution / 2.0
    x0, y0 = math.floor((cx - half) / resolution) * resolution, \
        math.floor((cy - half) / resolution) * resolution
    x1, y1 = x0 + px * resolution, y0 + px * resolution
    t = np.linspace(0.0, 1.0, 65)[:-1]
    ring_x = np.concatenate([x0 + (x1 - x0) * t, np.full(64, x1), x1 - (x1 - x0) * t,
                             np.full(64, x0)])
    ring_y = np.concatenate([np.full(64, y0), y0 + (y1 - y0) * t, np.full(64, y1),
                             y1 - (y1 - y0) * t])
    # a hair inside, so the snapped grid is exactly px x px
    ring_x = np.clip(ring_x, x0 + resolution * 1e-3, x1 - resolution * 1e-3)
    ring_y = np.clip(ring_y, y0 + resolution * 1e-3, y1 - resolution * 1e-3)
    back = transformer("EPSG:32631", LONLAT)
    lon, lat = back.transform(ring_x, ring_y)
    return Polygon(zip(lon, lat))


def region_tiles(px: int, resolution: float) -> list[str]:
    from tessera.geo import Region

    return [t.name for t in Region.parse(square_region(px, resolution)).tiles]


class SyntheticStrips:
    """In-memory strips of a height x width grid: one strip of random int8 codes and scales
    (a tenth of the pixels without data) made once and handed out for every strip."""

    def __init__(self, height: int, width: int, strip_rows: int, seed: int = 0) -> None:
        import numpy as np
        from affine import Affine
        from rasterio.crs import CRS

        from tessera.store.results import EmbeddingRaster

        self.height, self.width = height, width
        self.crs = CRS.from_epsg(32631)
        self.transform = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)
        rng = np.random.default_rng(seed)
        rows = min(strip_rows, height)
        q = rng.integers(-127, 128, (rows, width, DIM), dtype=np.int8)
        s = rng.uniform(0.005, 0.02, (rows, width)).astype(np.float32)
        s[rng.random((rows, width)) < 0.1] = np.nan
        self._strip = EmbeddingRaster(q, s, self.crs, self.transform, YEAR, model=MODEL)
        self.strip_rows = rows
        self._cls = EmbeddingRaster

    def __iter__(self) -> Any:
        for r in range(0, self.height, self.strip_rows):
            n = min(self.strip_rows, self.height - r)
            st = self._strip
            yield self._cls(st.embeddings[:n], st.scales[:n], self.crs, self.transform, YEAR,
                            model=MODEL)


def import_all() -> None:
    """The libraries the heads and maps use (imported lazily by them)."""
    import sklearn.ensemble  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.neighbors  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    import sklearn.preprocessing  # noqa: F401
    import torch  # noqa: F401

    import tessera.downstream.heads  # noqa: F401
    import tessera.downstream.predict_map  # noqa: F401
    import tessera.store.client  # noqa: F401


def worker(args: argparse.Namespace) -> None:
    """One measured run: prints a JSON line."""
    import warnings
    warnings.simplefilter("ignore")
    set_threads(args.threads)
    what = args.worker[0]
    info: dict[str, Any] = {}
    import_all()  # what every run pays first, outside the clock and in "before"
    if what == "fit":
        kind, n = args.worker[1], int(args.worker[2])
        x, y = random_data(n, args.classes, seed=0)
        info["before_mb"] = rss_mb("VmRSS")
        _, info["wall_s"] = make_fitted(kind, x, y, args.classes, args.threads,
                                        parse_params(args.param).get(kind, {}))
    elif what == "map":
        kind, px = args.worker[1], int(args.worker[2])
        from tessera.downstream.predict_map import predict_map, predict_strips

        x, y = random_data(args.map_train, args.classes, seed=1)
        head, info["fit_s"] = make_fitted(kind, x, y, args.classes, args.threads,
                                          parse_params(args.param).get(kind, {}))
        del x, y
        out = Path(args.worker[4])
        out.mkdir(parents=True, exist_ok=True)
        if args.source == "store":
            from tessera.store.client import Client
            from tessera.store.local import LocalStore

            client = Client(LocalStore(args.worker[3]))
            region = square_region(px, args.resolution)
            info["before_mb"] = rss_mb("VmRSS")
            t0 = time.perf_counter()
            res = predict_map(head, client, region, YEAR, out / f"map_{kind}_{px}.tif")
        else:
            src = SyntheticStrips(px, px, max(1, (64 * 2**20) // (px * (DIM + 4))))
            info["before_mb"] = rss_mb("VmRSS")
            t0 = time.perf_counter()
            res = predict_strips(head, src, crs=src.crs, transform=src.transform, width=px,
                                 height=px, dims=DIM, out_tif=out / f"map_{kind}_{px}.tif")
        info["wall_s"] = time.perf_counter() - t0
        info["shape"] = list(res.shape)
        info["valid"] = res.valid_pixels
        info["bytes"] = res.tif.stat().st_size
        res.tif.unlink()
    info["vmhwm_mb"] = rss_mb("VmHWM")
    print(json.dumps(info))


def measure(argv: list[str], threads: int) -> dict[str, Any]:
    """Run one worker in a fresh subprocess; its JSON report plus the process's wall time."""
    n = str(threads)
    env = dict(os.environ, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n,
               PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                       env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    info: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    info["process_s"] = time.perf_counter() - t0
    return info


def build_store(root: Path, px: int, resolution: float) -> tuple[Path, float]:
    """The SIMULATED store covering the largest map; tiles already in `root` (an earlier run
    with the same --workdir) are kept; (its root, seconds spent building)."""
    from tessera.store.local import LocalStore
    from tessera.store.synthetic import build_simulated_store

    tiles = region_tiles(px, resolution)
    have: set[str] = set()
    if (root / "manifest.parquet").exists():
        have = set(LocalStore(root).manifest().query(year=YEAR).table.column("tile").to_pylist())
    missing = [t for t in tiles if t not in have]
    if not missing:
        return root, 0.0
    t0 = time.perf_counter()
    build_simulated_store(root, missing, [YEAR], resolution=resolution)
    return root, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000],
                    help="training set sizes to fit each head on (none: skip the fits)")
    ap.add_argument("--kinds", nargs="+", default=list(FIT_KINDS), choices=FIT_KINDS)
    ap.add_argument("--map-sizes", type=int, nargs="*", default=[1000, 5000],
                    help="map edges in px (none: skip the maps); the memory ratio is last / first")
    ap.add_argument("--map-kinds", nargs="+", default=list(MAP_KINDS), choices=FIT_KINDS)
    ap.add_argument("--source", choices=("store", "synthetic"), default="store",
                    help="maps read from a simulated store (default) or in-memory strips")
    ap.add_argument("--resolution", type=float, default=20.0,
                    help="pixel size of the simulated store in m (default 20)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--map-train", type=int, default=20_000,
                    help="samples the map heads are fitted on (untimed)")
    ap.add_argument("--threads", type=int, default=2, help="BLAS / torch threads, RF n_jobs")
    ap.add_argument("--param", nargs="*", default=[], metavar="KIND.NAME=VALUE",
                    help="hyper-parameters over the heads' defaults, e.g. "
                         "random_forest.n_estimators=50 mlp.epochs=5 (fits and maps)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keeps the simulated store between runs (default: a temporary folder)")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    common = ["--classes", str(args.classes), "--threads", str(args.threads),
              "--map-train", str(args.map_train), "--source", args.source,
              "--resolution", str(args.resolution),
              *(["--param", *args.param] if args.param else [])]
    with tempfile.TemporaryDirectory(prefix="tessera-bench-downstream-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"downstream heads: {os.cpu_count()} CPUs, {args.threads} threads, "
              f"{args.classes} classes, {DIM}-d random embeddings; head parameters: the "
              f"defaults{' but ' + ' '.join(args.param) if args.param else ''}")
        base = measure(["--worker", "baseline", *common], args.threads)
        print(f"baseline (imports only): peak RSS {base['vmhwm_mb']:.0f} MB\n")

        if args.sizes:
            print("FIT (random embeddings)")
            print(f"{'head':<15}{'N':>10}{'fit s':>10}{'samples/s':>12}{'before MB':>11}"
                  f"{'peak MB':>9}{'extra MB':>10}")
            for kind in args.kinds:
                for n in args.sizes:
                    r = measure(["--worker", "fit", kind, str(n), *common], args.threads)
                    print(f"{kind:<15}{n:>10}{r['wall_s']:>10.2f}{n / r['wall_s']:>12,.0f}"
                          f"{r['before_mb']:>11.0f}{r['vmhwm_mb']:>9.0f}"
                          f"{r['vmhwm_mb'] - r['before_mb']:>10.0f}")
            print()

        if args.map_sizes:
            store = work / "store"
            if args.source == "store":
                big = max(args.map_sizes)
                _, built = build_store(store, big, args.resolution)
                size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
                n_tiles = len(region_tiles(big, args.resolution))
                print(f"MAP source: SIMULATED store of {n_tiles} tiles at {args.resolution:g} m "
                      f"({size / 1e9:.2f} GB, "
                      + (f"built in {built:.0f} s" if built else "reused") + f", in {store}); "
                      "square regions in UTM 31N read through the client")
            else:
                print("MAP source: SYNTHETIC in-memory strips (no store, no disk reads)")
            print(f"{'head':<15}{'px':>12}{'map s':>9}{'Mpx/s':>8}{'before MB':>11}"
                  f"{'peak MB':>9}{'extra MB':>10}{'file MB':>9}")
            maps: dict[tuple[str, int], dict[str, Any]] = {}
            for kind in args.map_kinds:
                for px in args.map_sizes:
                    r = measure(["--worker", "map", kind, str(px), str(store),
                                 str(work / "maps"), *common], args.threads)
                    maps[kind, px] = r
                    h, w = r["shape"]
                    print(f"{kind:<15}{f'{w} x {h}':>12}{r['wall_s']:>9.2f}"
                          f"{h * w / r['wall_s'] / 1e6:>8.2f}{r['before_mb']:>11.0f}"
                          f"{r['vmhwm_mb']:>9.0f}{r['vmhwm_mb'] - r['before_mb']:>10.0f}"
                          f"{r['bytes'] / 1e6:>9.1f}")
            small, large = min(args.map_sizes), max(args.map_sizes)
            if small != large:
                print(f"\nmemory {large}^2 / {small}^2 (target: flat, 1.0):")
                for kind in args.map_kinds:
                    a, b = maps[kind, small], maps[kind, large]
                    extra_a = max(a["vmhwm_mb"] - a["before_mb"], 1.0)
                    extra_b = b["vmhwm_mb"] - b["before_mb"]
                    print(f"  {kind:<15} peak RSS {b['vmhwm_mb'] / a['vmhwm_mb']:.2f}, "
                          f"above 'before' {extra_b / extra_a:.2f}; "
                          f"time {b['wall_s'] / a['wall_s']:.1f} for "
                          f"{(large / small) ** 2:.0f}x the pixels")
            if 5000 in args.map_sizes:
                print(f"\n5000 x 5000 target: under {TARGET_S:.0f} s on {args.threads} cores")
                for kind in [k for k in ("logistic", "mlp") if k in args.map_kinds]:
                    s = maps[kind, 5000]["wall_s"]
                    print(f"  {kind:<15} {s:.1f} s: "
                          f"{'met' if s <= TARGET_S else 'NOT met'}")


if __name__ == "__main__":
    main()
