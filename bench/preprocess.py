#!/usr/bin/env python
"""Preprocessing throughput and peak memory on SIMULATED Sentinel-1/2 COGs of growing regions.

For each region size (square, 10 m pixels) the script

1. writes SIMULATED acquisitions with `tessera.preprocess.synthetic.write_noise_files`: one COG
   per S2 band per date (10 m bands at 10 m, 20 m bands and SCL at 20 m), S1 VV/VH linear
   power per orbit and date. Nothing here was observed by a satellite. This step is timed on
   its own and is not part of the figures;
2. runs the preprocessing (`plan` + `run`, `--patch` x `--patch` patches, `--workers` threads)
   in a FRESH SUBPROCESS, so each peak RSS belongs to one region alone. The child reports
   `getrusage(RUSAGE_SELF).ru_maxrss`; the parent also samples `/proc/<pid>/status` (VmRSS,
   RssAnon, RssFile) while the child runs. The child then checks that the output is complete
   (`Tile.open` on every patch folder, shapes and date counts as planned; not timed);
3. deletes the inputs and outputs of that size (unless `--keep DIR`) before the next one.

The point: throughput figures, and a peak memory that stays flat as the region grows (the
pipeline builds each patch date by date into memory-mapped arrays).

Figures: pixel-dates/s = pixels x (S2 dates + S1 dates) / wall; input MB/s = bytes of all input
COGs / wall (MB = 1e6 bytes). The inputs were just written, so they are read from the page cache
(warm): the figures are CPU-bound, not disk-bound.

    python bench/preprocess.py                      # 1000 and 2000 px (10 and 20 km), 60 + 60 dates
    python bench/preprocess.py --sizes 500 --s2 10 --s1 10     # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIB = 2**20


def _maxrss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return r / 1024.0 if sys.platform != "darwin" else r / MIB


def _vm_hwm_mib() -> float | None:
    """VmHWM of this process image (reset by exec, unlike ru_maxrss, which Linux carries over
    from the parent across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal")) / 2**20
        mem_s = f", {mem:.0f} GiB RAM"
    except (OSError, StopIteration):
        mem_s = ""
    avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{avail} CPUs usable ({os.cpu_count()} online), {model}{mem_s}"


# --- child: one preprocessing run -------------------------------------------------------------

def writer(job: dict[str, Any]) -> dict[str, Any]:
    """Write the SIMULATED inputs (in a child, so the parent stays small: Linux carries the
    parent's RSS high-water mark into a forked child's ru_maxrss)."""
    from tessera.preprocess.synthetic import NoiseScene, write_noise_files
    scene = NoiseScene(job["size"], job["size"], year=job["year"], n_s2=job["s2"],
                       n_s1=job["s1"])
    return write_noise_files(job["root"], scene)


def worker(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from tessera.dpixel import Tile
    from tessera.geo import TargetGrid
    from tessera.preprocess import ComposeOptions, plan, run
    from tessera.preprocess.sources.files import FilesSource
    from tessera.preprocess.synthetic import S1_TEMPLATE, S2_TEMPLATE

    root, out, size = Path(job["root"]), Path(job["out"]), job["size"]
    rss_start = _maxrss_mib()
    grid = TargetGrid(rasterio.crs.CRS.from_string(job["crs"]),
                      from_origin(*job["origin"], 10.0, 10.0), size, size)
    source = FilesSource(s2=str(root / S2_TEMPLATE), s1=str(root / S1_TEMPLATE))
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    p = plan(source, grid, job["year"], patch_size=job["patch"])
    t_plan = time.perf_counter() - t0
    rep = run(p, out, ComposeOptions(), workers=job["workers"])
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    peak, hwm = _maxrss_mib(), _vm_hwm_mib()

    # Completeness check (not timed): every planned patch is a valid tile with every date.
    d = p.dates()
    n2, na, nd = len(d["s2"]), len(d["s1_ascending"]), len(d["s1_descending"])
    assert sorted(rep.written) == sorted(q.name for q in p.patches), (rep.written, p.patches)
    folders = sorted(x.name for x in out.iterdir() if x.is_dir())
    assert folders == sorted(q.name for q in p.patches), f"output folders {folders}"
    pixels = 0
    for q in p.patches:
        tile = Tile.open(out / q.name)
        assert tile.shape == (q.height, q.width), (q.name, tile.shape)
        assert tile.bands.shape[0] == n2, (q.name, tile.bands.shape, n2)
        assert tile.sar_ascending.shape[0] == na and tile.sar_descending.shape[0] == nd, q.name
        assert int(np.asarray(tile.roi).sum()) == q.height * q.width, q.name
        assert np.asarray(tile.bands[0]).any() and np.asarray(tile.sar_ascending[0]).any(), q.name
        pixels += q.height * q.width
    assert pixels == size * size
    return {"patches": len(p.patches), "s2_dates": n2, "s1_asc_dates": na, "s1_desc_dates": nd,
            "pixels": pixels, "plan_s": t_plan, "wall_s": wall, "peak_rss_mib": peak,
            "vm_hwm_mib": hwm, "cpu_s": cpu,
            "rss_after_imports_mib": rss_start, "out_bytes": _dir_bytes(out)}


# --- parent -----------------------------------------------------------------------------------

def _proc_status(pid: int) -> dict[str, float] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) / 1024.0  # kB -> MiB
    return out or None


def _loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def _finished_patches(out: Path) -> int:
    """Published patch folders (in-progress ones are hidden `.name.tmp*` folders)."""
    try:
        return sum(1 for e in os.scandir(out) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return 0


def run_child(job: dict[str, Any], interval: float) -> tuple[dict[str, Any], list[tuple]]:
    """Run the worker in a fresh interpreter, sampling its RSS from /proc while it runs, and
    how many patch folders are finished (so memory can be followed patch by patch without
    hooking the pipeline's internals)."""
    proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(job)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, dict[str, float], int]] = []
    t0 = time.perf_counter()
    out = Path(job["out"])
    while proc.poll() is None:
        s = _proc_status(proc.pid)
        if s:
            samples.append((time.perf_counter() - t0, s, _finished_patches(out)))
        time.sleep(interval)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        sys.stderr.write(stderr)
        raise SystemExit(f"worker for size {job['size']} failed (exit {proc.returncode})")
    return json.loads(stdout.strip().splitlines()[-1]), samples


def estimate_bytes(size: int, n_s2: int, n_s1: int) -> tuple[int, int]:
    """Rough (input, output) bytes: noise compresses little; output is uncompressed .npy."""
    px = size * size
    inp = px * (n_s2 * (4 * 2 + 6 * 2 / 4 + 1 / 4) + n_s1 * 2 * 4)
    out = px * (n_s2 * (2 * 10 + 1) + n_s1 * 2 * 2 + 1)
    return int(inp), int(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000],
                    help="region sides in pixels (10 m), default 1000 2000")
    ap.add_argument("--s2", type=int, default=60, help="S2 dates (default 60)")
    ap.add_argument("--s1", type=int, default=60, help="S1 dates, split over both orbits (60)")
    ap.add_argument("--workers", type=int, default=2, help="threads per run (default 2)")
    ap.add_argument("--patch", type=int, default=500, help="patch side in pixels (500)")
    ap.add_argument("--year", type=int, default=2022)
    ap.add_argument("--keep", default=None,
                    help="write inputs and outputs under this folder and keep them")
    ap.add_argument("--sample", type=float, default=0.2, help="RSS sampling interval, seconds")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--writer", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.writer:
        print(json.dumps(writer(json.loads(args.writer))))
        return

    from tessera.preprocess.synthetic import NoiseScene

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tessera-bench-pre-"))
    base.mkdir(parents=True, exist_ok=True)
    need = max(sum(estimate_bytes(s, args.s2, args.s1)) for s in args.sizes) if not args.keep \
        else sum(sum(estimate_bytes(s, args.s2, args.s1)) for s in args.sizes)
    free = shutil.disk_usage(base).free
    if need * 1.2 > free:
        raise SystemExit(f"{base}: about {need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free")

    print(f"machine   {machine()}")
    print(f"settings  S2 {args.s2} dates, S1 {args.s1} dates ({args.s1 // 2} asc + "
          f"{args.s1 - args.s1 // 2} desc), year {args.year}, patches {args.patch} x "
          f"{args.patch}, workers {args.workers}, ComposeOptions() defaults "
          f"(10 m nearest, 20 m and S1 bilinear)")
    print(f"data      SIMULATED noise COGs (deflate, 256 px blocks) under {base}")
    rows = []
    try:
        for size in args.sizes:
            scene = NoiseScene(size, size, year=args.year, n_s2=args.s2, n_s1=args.s1)
            root, out = base / f"in_{size}", base / f"out_{size}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            if not (root / ".complete").exists():
                shutil.rmtree(root, ignore_errors=True)
                wjob = {"root": str(root), "size": size, "year": args.year, "s2": args.s2,
                        "s1": args.s1}
                res = subprocess.run([sys.executable, __file__, "--writer", json.dumps(wjob)],
                                     check=False, capture_output=True, text=True)
                if res.returncode != 0:
                    sys.stderr.write(res.stderr)
                    raise SystemExit(f"writing the inputs of size {size} failed")
                info = json.loads(res.stdout.strip().splitlines()[-1])
                (root / ".complete").write_text(json.dumps(info))
            info = json.loads((root / ".complete").read_text())
            t_write = time.perf_counter() - t0
            print(f"... {size} x {size}: {info['files']} input files, "
                  f"{info['bytes'] / 1e9:.2f} GB, written in {t_write:.0f} s", flush=True)
            job = {"root": str(root), "out": str(out), "size": size, "year": args.year,
                   "patch": args.patch, "workers": args.workers, "crs": scene.crs,
                   "origin": list(scene.origin)}
            load0 = _loadavg()
            r, samples = run_child(job, args.sample)
            vm = [s["VmRSS"] for _, s, _ in samples]
            anon = [s.get("RssAnon", 0.0) for _, s, _ in samples]
            fil = [s.get("RssFile", 0.0) for _, s, _ in samples]
            # max sampled VmRSS while k patches were finished, k = 0 .. patches - 1
            by_done: dict[int, float] = {}
            for _, s, k in samples:
                by_done[k] = max(by_done.get(k, 0.0), s["VmRSS"])
            r.update(size=size, in_bytes=info["bytes"], write_s=t_write, load_before=load0,
                     sampled_max_mib=max(vm, default=0.0),
                     sampled_anon_max_mib=max(anon, default=0.0),
                     sampled_file_max_mib=max(fil, default=0.0), n_samples=len(vm),
                     by_done=[by_done.get(k) for k in range(r["patches"] + 1)])
            rows.append(r)
            t1 = r["s1_asc_dates"] + r["s1_desc_dates"]
            print(f"... {size} x {size}: {r['wall_s']:.1f} s, "
                  f"{r['pixels'] * (r['s2_dates'] + t1) / r['wall_s'] / 1e6:.2f} M px-dates/s, "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB (VmHWM {r['vm_hwm_mib']:.0f}), "
                  f"output verified "
                  f"({r['patches']} patches)", flush=True)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    print(f"\npreprocess (plan + run) on SIMULATED COGs, {args.workers} workers, "
          f"{args.patch} px patches; one fresh process per size")
    hdr = (f"{'region':>11} {'km':>5} {'patches':>7} {'S2/S1 dates':>11} {'wall s':>7} "
           f"{'Mpx-dates/s':>11} {'in MB':>7} {'in MB/s':>7} {'out MB':>7} "
           f"{'peak RSS MiB':>12} {'anon MiB':>8} {'file MiB':>8} {'CPU s':>6} {'cores':>5}")
    print(hdr)
    for r in rows:
        t1 = r["s1_asc_dates"] + r["s1_desc_dates"]
        rate = r["pixels"] * (r["s2_dates"] + t1) / r["wall_s"] / 1e6
        print(f"{r['size']:>5} x {r['size']:<5} {r['size'] / 100:>5g} {r['patches']:>7} "
              f"{str(r['s2_dates']) + '/' + str(t1):>11} {r['wall_s']:>7.1f} {rate:>11.2f} "
              f"{r['in_bytes'] / 1e6:>7.0f} {r['in_bytes'] / 1e6 / r['wall_s']:>7.1f} "
              f"{r['out_bytes'] / 1e6:>7.0f} {r['peak_rss_mib']:>12.0f} "
              f"{r['sampled_anon_max_mib']:>8.0f} {r['sampled_file_max_mib']:>8.0f} "
              f"{r['cpu_s']:>6.0f} {r['cpu_s'] / r['wall_s']:>5.2f}")
    print("\npeak RSS: getrusage ru_maxrss of the child (includes the resident pages of the "
          "mapped files, e.g. libraries); anon / file: max RssAnon / RssFile sampled from /proc "
          f"every {args.sample:g} s; parent RSS {_maxrss_mib():.0f} MiB (a floor of ru_maxrss). "
          "CPU s: user + system time of the run; cores: CPU s / wall (below --workers = the "
          "run waited, or other processes took the CPUs: see the load average)")
    print("per size: plan time, wall per patch, 1-min load average before the run, RSS after "
          "imports, and the max sampled VmRSS "
          "(MiB) while 0, 1, 2, ... patches were finished (- = no sample in that interval)")
    for r in rows:
        marks = " ".join("-" if m is None else f"{m:.0f}" for m in r["by_done"][:-1])
        print(f"  {r['size']:>5}: plan {r['plan_s']:.1f} s, {r['wall_s'] / r['patches']:.1f} s "
              f"per patch, load avg before {r['load_before']:.2f}, "
              f"RSS after imports {r['rss_after_imports_mib']:.0f}, by patches done: "
              f"{marks}; inputs written in {r['write_s']:.0f} s (not counted)")


if __name__ == "__main__":
    main()
