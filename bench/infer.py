#!/usr/bin/env python
"""Inference throughput of the TESSERA presets on SIMULATED inputs.

For each preset (and each device: CPU, plus CUDA when available) one worker process measures:

- `v1` sampling (the published 40 S2 + 40 S1 steps) through `tessera.infer.Embedder` on a
  simulated batch with enough valid dates: pixels per second (median of the repeats, end to
  end: sampling, gathering, model) and the peak memory (RSS high-water mark from
  `resource.getrusage`, and `torch.cuda.max_memory_allocated` on GPU);
- the same 40 + 40 sequences (drawn with `tessera.sampling`, so both see identical steps) through
  the plain eager reference in `bench/reference_v1.py` holding the same weights, under
  `torch.no_grad()` in float32, interleaved with our repeats so that machine noise hits both;
  the speed ratio and the max |ours - reference| of the embeddings, which must stay below 1e-4
  (the script exits with status 1 otherwise);
- the deterministic `all` scheme with length bucketing on a realistic cloudy simulated input
  (70 S2 dates with 40 % clouds, 30 + 30 S1 dates): pixels per second.

Every preset runs in its own process, so each peak RSS belongs to one preset alone.

Run from the repository root: `python bench/infer.py` (about 3 minutes on 2 CPU cores),
`python bench/infer.py --quick` for a smoke run, `--help` for the options.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

TOLERANCE = 1e-4
ORDER = ("tiny", "small", "v1")
#: Default pixel counts per preset (CPU); GPU runs use GPU_PIXEL_FACTOR times more.
PIXELS = {"tiny": 4096, "small": 1024, "v1": 512}
QUICK_PIXELS = {"tiny": 256, "small": 128, "v1": 16}
GPU_PIXEL_FACTOR = 16
#: Default pixels per forward pass: on CPU 32-64 measured fastest for every preset (the
#: activations stay in cache; 1024 was 5-40 % slower), on GPU large batches fill the device.
CPU_BATCH = 64
GPU_BATCH = 1024


# --- inputs -----------------------------------------------------------------------------------

def simulated_batch(n: int, *, n_s2: int, n_asc: int, n_desc: int, cloud: float, seed: int):
    """(DPixelBatch of n SIMULATED pixels, description). Uses `tessera.simulate` when present,
    else a numpy generator of reflectance-like uint16 S2, int16 S1 codes and sorted dates."""
    import numpy as np

    from tessera.dpixel import DPixelBatch

    width = min(64, n)
    height = math.ceil(n / width)
    try:
        from tessera.simulate import SimConfig, simulate_arrays
    except ImportError:
        simulate_arrays = None
    if simulate_arrays is not None:
        a = simulate_arrays(SimConfig(height=height, width=width, seed=seed, n_s2_dates=n_s2,
                                      n_s1_asc=n_asc, n_s1_desc=n_desc, cloud_fraction=cloud))

        def pixels(arr: np.ndarray) -> np.ndarray:  # (T, H, W, ...) -> (n, T, ...)
            t = arr.shape[0]
            flat = arr.reshape(t, height * width, *arr.shape[3:])
            return np.ascontiguousarray(np.swapaxes(flat, 0, 1)[:n])

        batch = DPixelBatch.from_shared_dates(
            pixels(a["bands"]), pixels(a["masks"]).astype(bool), a["doys"],
            pixels(a["sar_ascending"]), a["sar_ascending_doy"],
            pixels(a["sar_descending"]), a["sar_descending_doy"])
        return batch, "simulated (tessera.simulate)"

    rng = np.random.default_rng(seed)

    def dates(k: int) -> np.ndarray:
        return np.sort(rng.choice(np.arange(1, 366), size=k, replace=False)).astype(np.int16)

    d2, da, dd = dates(n_s2), dates(n_asc), dates(n_desc)
    season = np.sin(np.pi * (d2 - 60) / 240.0).clip(0, 1)  # green-up and senescence
    base = rng.uniform(300, 2500, (n, 1, 10))
    nir = np.zeros(10)
    nir[[3, 4, 6, 7]] = 3500.0  # B08, B8A, B06, B07 rise with vegetation
    s2 = base + season[None, :, None] * nir[None, None, :] * rng.uniform(0.2, 1.0, (n, 1, 1))
    s2 = s2 * rng.normal(1.0, 0.03, s2.shape)
    cloudy = rng.random((n, n_s2)) < cloud
    s2[cloudy] = rng.uniform(5000, 9000, (int(cloudy.sum()), 10))
    s2 = s2.clip(1, 10000).astype(np.uint16)

    def sar(k: int) -> np.ndarray:
        vv = rng.normal(5484, 800, (n, 1)) + rng.normal(0, 400, (n, k))
        vh = rng.normal(3004, 800, (n, 1)) + rng.normal(0, 400, (n, k))
        v = np.stack([vv, vh], -1).clip(1, 32767).astype(np.int16)
        v[rng.random((n, k)) < 0.02] = 0  # swath edges: no data
        return v

    batch = DPixelBatch.from_shared_dates(s2, ~cloudy, d2, sar(n_asc), da, sar(n_desc), dd)
    return batch, "simulated (numpy)"


def flops_per_token_layer(cfg: Any, t: int) -> int:
    d, f = cfg.d_model, cfg.ffn_dim
    return 2 * (4 * d * d + 2 * d * f + 2 * t * d)


def gflop_per_pixel(cfg: Any, t2: int = 40, t1: int = 40) -> float:
    """Multiply-adds x 2 of one pixel (matrix products only; elementwise work not counted)."""
    d = cfg.d_model
    total = 0
    for bands, t in ((cfg.s2_bands, t2), (cfg.s1_bands, t1)):
        per_token = 2 * (bands * d + d * d + 6 * d * d + d) + cfg.n_layers * \
            flops_per_token_layer(cfg, t)
        total += t * per_token
    total += 2 * 2 * d * cfg.latent_dim
    return total / 1e9


# --- measurement (worker process) -------------------------------------------------------------

def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20


def gemm_gflops(device) -> dict[str, float]:
    """Best-of-a-few float32 GEMM rates at an FFN-like shape (2560 x 512 x 4096): the ceiling
    a model made of such products can reach. On CPU both the MKL sgemm behind nn.Linear and,
    where this PyTorch has it, oneDNN's linear with pre-packed weights."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(2560, 512, device=device)
    w = torch.randn(4096, 512, device=device)
    kernels = {"sgemm": lambda: F.linear(x, w)}
    if device.type == "cpu":
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(w)
            kernels["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None,
                                                                           "none", [], "")
            kernels["onednn"]()
        except (AttributeError, RuntimeError):
            kernels.pop("onednn", None)
    inner = 2 if device.type == "cpu" else 50
    rates = {}
    with torch.inference_mode():
        for name, fn in kernels.items():
            fn()
            best = math.inf
            for _ in range(6):
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                _sync(device)
                best = min(best, (time.perf_counter() - t0) / inner)
            rates[name] = 2 * 2560 * 512 * 4096 / best / 1e9
    return rates


def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from reference_v1 import ReferenceModel
    from tessera.infer import Embedder
    from tessera.model import TesseraModel, get_preset
    from tessera.sampling import V1_STEPS, buckets, gather, s1_candidates, s2_candidates, select

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    preset, n, bs, reps = job["preset"], job["pixels"], job["batch_size"], job["repeats"]
    out: dict[str, Any] = {"preset": preset, "device": job["device"], "pixels": n,
                           "batch_size": bs, "threads": torch.get_num_threads(),
                           "rss_start_mib": _rss_mib()}
    cuda = device.type == "cuda"

    torch.manual_seed(0)
    model = TesseraModel(get_preset(preset)).eval()
    cfg = model.config
    out["params_m"] = model.num_parameters() / 1e6
    out["gflop_px"] = gflop_per_pixel(cfg)
    ref = None

    # ---- v1 sampling: inputs with enough valid dates
    batch, source = simulated_batch(n, n_s2=100, n_asc=30, n_desc=30, cloud=0.2, seed=1)
    out["source"] = source
    c2, c1 = s2_candidates(batch), s1_candidates(batch)
    out["v1_enough_valid"] = float(((c2.counts >= V1_STEPS) & (c1.counts >= V1_STEPS)).mean())
    embedder = Embedder(model, device=job["device"], batch_size=bs, sampling="v1", seed=0)
    warm = batch.take(slice(0, min(n, max(bs, 2 * job["min_warm"]))))
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    embedder.embed(warm)  # warm-up

    ref_inputs: list[tuple[torch.Tensor, ...]] = []

    def build_reference() -> None:
        """The reference and its inputs, made after our peak RSS has been read."""
        nonlocal ref
        ref = ReferenceModel.from_tessera(model).to(device)
        ids = np.arange(n, dtype=np.int64)
        # the Embedder's streams: 2 for S2, 1 for S1 (same seed), so both see identical steps
        idx2, _ = select(c2, "v1", 0, 2, ids)
        idx1, _ = select(c1, "v1", 0, 1, ids)
        q2, q1 = gather(c2, idx2, None), gather(c1, idx1, None)
        for i in range(0, n, bs):
            ref_inputs.append(tuple(torch.from_numpy(np.ascontiguousarray(a[i:i + bs],
                                                                          dtype=np.float32))
                                    .to(device) for a in (q2.values, q2.doy, q1.values, q1.doy)))

    def run_ref() -> np.ndarray:
        with torch.no_grad():
            outs = [ref(*x) for x in ref_inputs]
            return torch.cat(outs).float().cpu().numpy()

    ours_t, ref_t = [], []
    emb = ref_emb = None
    for r in range(reps):
        t0 = time.perf_counter()
        emb = embedder.embed(batch).embeddings
        ours_t.append(time.perf_counter() - t0)
        if r == 0:
            out["v1_rss_mib"] = _rss_mib()
            if cuda:
                out["v1_cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            if job["reference"]:
                build_reference()
                with torch.no_grad():
                    ref(*[x[: job["min_warm"]] for x in ref_inputs[0]])  # warm-up
        if ref is not None:
            _sync(device)
            t0 = time.perf_counter()
            ref_emb = run_ref()
            ref_t.append(time.perf_counter() - t0)
    out["v1_times"] = ours_t
    out["v1_px_s"] = n / statistics.median(ours_t)
    if ref_t:
        out["ref_times"] = ref_t
        out["ref_px_s"] = n / statistics.median(ref_t)
        out["ratio"] = statistics.median(ref_t) / statistics.median(ours_t)
        out["ratio_best"] = min(ref_t) / min(ours_t)
        out["max_abs_diff"] = float(np.abs(emb - ref_emb).max())
        out["emb_abs_max"] = float(np.abs(ref_emb).max())
    del ref_inputs, ref, emb, ref_emb

    # ---- `all` scheme with bucketing on a realistic cloudy input
    if job["all_pixels"]:
        na = job["all_pixels"]
        cloudy, _ = simulated_batch(na, n_s2=70, n_asc=30, n_desc=30, cloud=0.4, seed=2)
        a2, a1 = s2_candidates(cloudy), s1_candidates(cloudy)
        l2, l1 = a2.counts, a1.counts
        padded = sum(len(rows) * length for lengths in (l2, l1)
                     for rows, length in buckets(lengths, bs * V1_STEPS))
        out["all_tokens_px"] = float((l2 + l1).mean())
        out["all_padding"] = 1.0 - float((l2 + l1).sum()) / padded
        out["all_pixels"] = na
        emb_all = Embedder(model, device=job["device"], batch_size=bs, sampling="all")
        emb_all.embed(cloudy.take(slice(0, min(na, bs))))  # warm-up
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(job["all_repeats"]):
            t0 = time.perf_counter()
            emb_all.embed(cloudy)
            times.append(time.perf_counter() - t0)
        out["all_times"] = times
        out["all_px_s"] = na / statistics.median(times)
        out["all_rss_mib"] = _rss_mib()
        if cuda:
            out["all_cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    out["gemm_gflops"] = gemm_gflops(device)  # last: its buffers stay out of the RSS peaks
    out["sgemm_gflops"] = max(out["gemm_gflops"].values())
    return out


# --- driver -----------------------------------------------------------------------------------

def _jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    devices = ([d.strip() for d in args.device.split(",")] if args.device != "auto"
               else ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    presets = [p.strip() for p in args.presets.split(",")]
    jobs = []
    for dev in devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit(f"--device {dev}: CUDA is not available on this machine")
        gpu = dev.startswith("cuda")
        for p in presets:
            n = args.pixels or (QUICK_PIXELS if args.quick else PIXELS)[p] * (
                GPU_PIXEL_FACTOR if gpu else 1)
            bs = args.batch_size or (GPU_BATCH if gpu else CPU_BATCH)
            bs = min(bs, n)
            jobs.append({
                "preset": p, "device": dev, "pixels": n, "batch_size": bs,
                "threads": args.threads, "repeats": 1 if args.quick else args.repeats,
                "reference": not args.no_reference,
                "all_pixels": 0 if args.no_all else (n // 2 if p == "v1" else n),
                "all_repeats": 1 if args.quick else max(1, args.repeats - 1),
                "min_warm": min(n, 8 if args.quick else 16),
            })
    return jobs


def _run_job(job: dict[str, Any], in_process: bool) -> dict[str, Any]:
    if in_process:
        return run_worker(job)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                           json.dumps(job)], capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    sys.stderr.write(proc.stdout + proc.stderr)
    raise SystemExit(f"benchmark worker for {job['preset']} on {job['device']} failed "
                     f"(exit {proc.returncode})")


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _tables(results: list[dict[str, Any]]) -> list[tuple[str, list[str], list[list[str]]]]:
    v1_cols = ["preset", "device", "params M", "GFLOP/px", "pixels", "batch", "px/s",
               "GFLOP/s", "% GEMM", "peak RSS MiB", "GPU peak MiB", "ref px/s", "ours/ref",
               "best-of ratio", "max |diff|"]
    all_cols = ["preset", "device", "pixels", "batch", "steps/px", "padding %", "px/s",
                "peak RSS MiB", "GPU peak MiB"]
    v1_rows, all_rows = [], []
    for r in results:
        gf = r["v1_px_s"] * r["gflop_px"]
        diff = r.get("max_abs_diff")
        v1_rows.append([
            r["preset"], r["device"], f"{r['params_m']:.2f}", f"{r['gflop_px']:.3f}",
            str(r["pixels"]), str(r["batch_size"]), f"{r['v1_px_s']:.1f}", f"{gf:.0f}",
            f"{100 * gf / r['sgemm_gflops']:.0f}", f"{r['v1_rss_mib']:.0f}",
            _fmt(r.get("v1_cuda_peak_mib"), ".0f"), _fmt(r.get("ref_px_s"), ".1f"),
            _fmt(r.get("ratio"), ".2f"), _fmt(r.get("ratio_best"), ".2f"),
            _fmt(diff, ".1e") + ("" if diff is None or diff < TOLERANCE else " FAIL")])
        if "all_px_s" in r:
            all_rows.append([
                r["preset"], r["device"], str(r["all_pixels"]), str(r["batch_size"]),
                f"{r['all_tokens_px']:.1f}", f"{100 * r['all_padding']:.1f}",
                f"{r['all_px_s']:.1f}", f"{r['all_rss_mib']:.0f}",
                _fmt(r.get("all_cuda_peak_mib"), ".0f")])
    first = results[0]
    tables = [(f"v1 sampling (40 S2 + 40 S1 steps), {first['source']} inputs", v1_cols,
               v1_rows)]
    if all_rows:
        tables.append(("all scheme with bucketing, SIMULATED cloudy input (70 S2 dates, 40 % "
                       "clouds, 30 + 30 S1 dates)", all_cols, all_rows))
    return tables


def report(results: list[dict[str, Any]], wall: float) -> bool:
    import torch

    ok = all(r.get("max_abs_diff", 0.0) < TOLERANCE for r in results)
    first = results[0]
    header = (f"TESSERA inference benchmark on SIMULATED inputs: torch {torch.__version__}, "
              f"{first['threads']} CPU threads of {os.cpu_count()} CPUs")
    gemm = "; ".join(f"{r['device']}: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                    r["gemm_gflops"].items())
                     for r in {r["device"]: r for r in results}.values())
    notes = [
        "px/s: tessera.infer.Embedder end to end (sampling, gathering, model), median of the "
        "repeats.",
        "GFLOP/s = px/s x GFLOP/px (matrix products only); % GEMM = that over the best "
        f"float32 GEMM rate measured at an FFN-like shape (GFLOP/s, {gemm}).",
        "ref: bench/reference_v1.py, plain eager, same weights, same 40 + 40 steps, no_grad, "
        "float32, same batch size, model time only; ours/ref = ratio of the median times, "
        "best-of ratio = ratio of the best times (repeats interleaved).",
        f"max |diff|: max abs difference of the 128-d embeddings, ours vs reference "
        f"(tolerance {TOLERANCE:g}).",
        "steps/px: valid S2 + S1 steps per pixel; padding %: padded share of the tokens run.",
        "peak RSS: getrusage high-water mark of the preset's own process after that run "
        "(cumulative within the process; " + ", ".join(
            f"{r['preset']} {r['rss_start_mib']:.0f}" for r in results) + " MiB at start, "
        "after importing torch).",
        "v1 input: 100 S2 dates at 20 % clouds, 30 + 30 S1 dates; pixels with >= 40 valid S2 "
        "and >= 40 valid S1 dates: " + ", ".join(
            f"{r['preset']} {100 * r['v1_enough_valid']:.0f} %" for r in results) + ".",
        f"wall time of the whole benchmark: {wall:.0f} s.",
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(header)
        for title, cols, rows in _tables(results):
            widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
            print(f"\n{title}")
            print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
            for row in rows:
                print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
        print()
        for note in notes:
            print(note)
    else:
        console = Console(highlight=False)
        if not console.is_terminal:  # piped or captured: do not squeeze the tables
            console = Console(highlight=False, width=max(console.width, 200))
        console.print(header)
        for title, cols, rows in _tables(results):
            table = Table(title=title, title_justify="left")
            for c in cols:
                table.add_column(c, justify="left" if c in ("preset", "device") else "right")
            for row in rows:
                table.add_row(*row)
            console.print(table)
        for note in notes:
            console.print(note, soft_wrap=True)
    for r in results:
        if not r.get("max_abs_diff", 0.0) < TOLERANCE:
            print(f"FAIL: {r['preset']} on {r['device']}: max |ours - reference| = "
                  f"{r['max_abs_diff']:.3e} >= {TOLERANCE:g}", file=sys.stderr)
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default=",".join(ORDER),
                    help="comma-separated presets (default: %(default)s)")
    ap.add_argument("--pixels", type=int, default=None,
                    help="pixels per preset for the v1 run (default: "
                         + ", ".join(f"{k} {v}" for k, v in PIXELS.items())
                         + f" on CPU, x{GPU_PIXEL_FACTOR} on GPU); the all-scheme run uses "
                           "the same (half for v1)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help=f"pixels per forward pass (default: {CPU_BATCH} on CPU, "
                         f"{GPU_BATCH} on GPU)")
    ap.add_argument("--device", default="auto",
                    help="auto (cpu, plus cuda when available), cpu, cuda or a comma list")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch.set_num_threads (default: torch's own choice)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (default: 3)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes and one repeat: a smoke run of well under a minute")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference model")
    ap.add_argument("--no-all", action="store_true", help="skip the all-scheme run")
    ap.add_argument("--in-process", action="store_true",
                    help="run every preset in this process (peak RSS is then cumulative)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker is not None:
        result = run_worker(json.loads(args.worker))
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    t0 = time.perf_counter()
    results = []
    for job in _jobs(args):
        print(f"... {job['preset']} on {job['device']}: {job['pixels']} px, batch "
              f"{job['batch_size']}", file=sys.stderr, flush=True)
        results.append(_run_job(job, args.in_process))
    ok = report(results, time.perf_counter() - t0)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
