#!/usr/bin/env python
"""Inference throughput of every registered TESSERA model on SIMULATED inputs.

For each model (`tessera models`; those whose sizes come only from a checkpoint are skipped
unless given with --checkpoint) and each device (CPU, plus CUDA when available) one worker
process measures, with random weights:

- the model's published sampling through `tessera.infer.Embedder`, end to end (sampling,
  gathering, model): v1.0-family models with `v1` sampling (40 S2 + 40 S1 steps) on a batch
  with enough valid dates; v1.1 and v2 with their bucketed schemes on a realistic cloudy input
  (70 S2 dates with 40 % clouds, 30 + 30 S1 dates): pixels per second (median of the repeats)
  and the peak memory (RSS high-water mark from `resource.getrusage`, and
  `torch.cuda.max_memory_allocated` on GPU);
- the same sequences (built with `tessera.sampling`, so both see identical steps) through the
  plain eager reference of the same architecture in `bench/reference.py` holding the same
  weights, under `torch.no_grad()` in float32, interleaved with our repeats so that machine noise
  hits both: the speed ratio and the max |ours - reference| of the float embeddings, which must
  stay below 1e-5 of their scale (the script exits with status 1 otherwise);
- the share of this machine's float32 matrix-product rate that achieves (matrix products only);
- v1.0 family also: the deterministic `all` scheme with length bucketing on the cloudy input.

Every model runs in its own process, so each peak RSS belongs to one model alone.

Run from the repository root: `python bench/infer.py` (about 8 minutes on 2 CPU cores),
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

#: max |ours - reference| over max |reference| of the float embeddings.
TOLERANCE = 1e-5
ORDER = ("tiny", "small", "v1", "v1.1-mpc", "v1.1-aws", "v2-nano", "v2-small", "v2-medium",
         "v2-large")
#: Default pixel counts per model (CPU); GPU runs use GPU_PIXEL_FACTOR times more.
PIXELS = {"tiny": 4096, "small": 1024, "v1": 512, "v1.1-mpc": 512, "v1.1-aws": 512,
          "v2-nano": 4096, "v2-small": 1024, "v2-medium": 512, "v2-large": 256}
QUICK_PIXELS = {"tiny": 256, "small": 128, "v1": 16, "v1.1-mpc": 16, "v1.1-aws": 16,
                "v2-nano": 128, "v2-small": 64, "v2-medium": 32, "v2-large": 16}
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


def gflop_per_pixel(cfg: Any, t2: float = 40, t1: float = 40) -> float:
    """Multiply-adds x 2 of one pixel with t2 + t1 steps (matrix products only; elementwise work
    not counted): input MLP, encoder layers, pooling (the GRU's six d x d products per step
    where the model has one, and the scores), fusion."""
    d = cfg.d_model
    pool = (6 * d * d if cfg.pooling == "gru" else 0) + d
    total = 0.0
    for bands, t in ((cfg.s2_bands, t2), (cfg.s1_bands, t1)):
        per_token = 2 * (bands * d + d * d + pool) + cfg.n_layers * flops_per_token_layer(cfg, t)
        total += t * per_token
    if cfg.fusion == "linear":
        total += 2 * 2 * d * cfg.latent_dim
    else:
        total += 2 * (2 * d * 4 * d + 4 * d * cfg.latent_dim)
    return total / 1e9


# --- measurement (worker process) -------------------------------------------------------------

def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20


def gemm_kernels(device) -> dict[str, Any]:
    """Float32 GEMMs at an FFN-like shape (2560 x 512 x 4096): the ceiling a model made of such
    products can reach. On CPU both the MKL sgemm behind nn.Linear and, where this PyTorch has
    it, oneDNN's linear with pre-packed weights."""
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
    return kernels


def gemm_gflops(device, kernels: dict[str, Any], tries: int = 3) -> dict[str, float]:
    """Best-of-`tries` rate of each GEMM kernel now (GFLOP/s). Sampled once per repeat,
    between the model's runs, so the ceiling sees the same machine noise as the model."""
    import torch

    inner = 2 if device.type == "cpu" else 50
    rates = {}
    with torch.inference_mode():
        for name, fn in kernels.items():
            fn()
            best = math.inf
            for _ in range(tries):
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                _sync(device)
                best = min(best, (time.perf_counter() - t0) / inner)
            rates[name] = 2 * 2560 * 512 * 4096 / best / 1e9
    return rates


#: The profiler's names of the operators that run matrix products on CPU.
MATMUL_OPS = ("mkldnn::_linear_pointwise", "aten::addmm", "aten::mm", "aten::bmm",
              "aten::baddbmm", "aten::addbmm")


def matmul_share(embedder, batch) -> float:  # type: ignore[no-untyped-def]
    """Share of one profiled `embed` call's wall time spent inside matrix-product kernels: how
    close the pipeline comes to its own matrix-product limit (the products running at whatever
    rate their shapes allow), independent of the GEMM ceiling's run-to-run noise."""
    from torch.profiler import ProfilerActivity, profile

    embedder.embed(batch)  # warm at these sizes
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        embedder.embed(batch)
        wall = time.perf_counter() - t0
    inside = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS)
    return inside / 1e6 / wall


def _normalised(values, stats_mean, stats_std):  # type: ignore[no-untyped-def]
    """(x - mean) / (std + 1e-9) in float32, as the published datasets normalise."""
    import numpy as np
    return (values.astype(np.float32) - stats_mean) / (stats_std + np.float32(1e-9))


def _reference_groups(model, batch, scheme: str, bs: int, pixel_ids, device):  # type: ignore[no-untyped-def]
    """The reference's inputs: the sequences our Embedder builds for `scheme`, normalised with
    the model's statistics, in batches of at most `bs` pixels of one shape. Returns
    [(rows, x2, doy2, x1, doy1)] and the mean steps per pixel (S2 + S1)."""
    import numpy as np
    import torch

    from tessera.model.stats import get_stats
    from tessera.sampling import (bucketed, gather, s1_candidates, s2_candidates, s2_steps,
                                  select)

    st = get_stats(model.config.stats)
    s1_mean, s1_std = st.s1_by_orbit()
    n = len(batch)
    if scheme == "v1":
        c2, c1 = s2_candidates(batch), s1_candidates(batch)
        idx2, _ = select(c2, "v1", 0, 2, pixel_ids)
        idx1, _ = select(c1, "v1", 0, 1, pixel_ids)
        len2 = np.full(n, idx2.shape[1])
        len1 = np.full(n, idx1.shape[1])
        blank2 = blank1 = np.zeros(n, bool)
    else:
        c2, c1 = s2_steps(batch), s1_candidates(batch, empty_orbit_step=False)
        b2, b1 = bucketed(c2.candidate, scheme), bucketed(c1.candidate, scheme)
        idx2, idx1, len2, len1, blank2, blank1 = b2.idx, b1.idx, b2.length, b1.length, \
            b2.blank, b1.blank
    keys = len2.astype(np.int64) * 100000 + len1
    groups = []
    for key in np.unique(keys):
        rows_all = np.flatnonzero(keys == key)
        l2, l1 = divmod(int(key), 100000)
        for i in range(0, len(rows_all), bs):
            rows = rows_all[i:i + bs]
            q2 = gather(c2, idx2[rows, :l2], None, rows)
            q1 = gather(c1, idx1[rows, :l1], None, rows)
            orbit = c1.orbit[idx1[rows, :l1]]
            x2 = _normalised(q2.values, st.s2_mean, st.s2_std)
            x1 = _normalised(q1.values, s1_mean[orbit], s1_std[orbit])
            d2, d1 = q2.doy.astype(np.float32), q1.doy.astype(np.float32)
            for x, d, blank in ((x2, d2, blank2[rows]), (x1, d1, blank1[rows])):
                x[blank], d[blank] = 0.0, 0.0  # a sensor without observations: zero steps
            groups.append((rows, *(torch.from_numpy(np.ascontiguousarray(a)).to(device)
                                   for a in (x2, d2, x1, d1))))
    return groups, float((len2 + len1).mean()), len2, len1


def _build_model(job: dict[str, Any]):  # type: ignore[no-untyped-def]
    import torch

    from tessera.model import TesseraModel, load_checkpoint
    from tessera.model.registry import get_model

    if job.get("checkpoint"):
        model, _ = load_checkpoint(job["checkpoint"], job["model"])
        return model.eval()
    torch.manual_seed(0)
    return TesseraModel(get_model(job["model"]).config).eval()


def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from reference import ReferenceModel
    from tessera.infer import Embedder
    from tessera.sampling import V1_STEPS, buckets, s1_candidates, s2_candidates

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    name, n, bs, reps = job["model"], job["pixels"], job["batch_size"], job["repeats"]
    out: dict[str, Any] = {"model": name, "device": job["device"], "pixels": n,
                           "batch_size": bs, "threads": torch.get_num_threads(),
                           "rss_start_mib": _rss_mib()}
    cuda = device.type == "cuda"

    model = _build_model(job)
    cfg = model.config
    embedder = Embedder(model, device=job["device"], batch_size=bs, sampling=job["scheme"],
                        seed=0)
    out["family"], out["scheme"] = embedder.family, embedder.sampling
    out["params_m"] = model.num_parameters() / 1e6
    ref = None

    if embedder.sampling == "v1":  # inputs with enough valid dates for 40 + 40 draws
        batch, source = simulated_batch(n, n_s2=100, n_asc=30, n_desc=30, cloud=0.2, seed=1)
        c2, c1 = s2_candidates(batch), s1_candidates(batch)
        out["enough_valid"] = float(((c2.counts >= V1_STEPS) & (c1.counts >= V1_STEPS)).mean())
    else:
        batch, source = simulated_batch(n, n_s2=70, n_asc=30, n_desc=30, cloud=0.4, seed=2)
    out["source"] = source
    warm = batch.take(slice(0, min(n, max(bs, 2 * job["min_warm"]))))
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    embedder.embed(warm)  # warm-up
    ids = np.arange(n, dtype=np.int64)
    groups, steps, len2, len1 = _reference_groups(model, batch, embedder.sampling, bs, ids,
                                                  device)
    out["steps_px"] = steps
    out["gflop_px"] = float(np.mean([gflop_per_pixel(cfg, a, b) for a, b in
                                     zip(len2.tolist(), len1.tolist())]))
    keep = embedder.dim

    def run_ref() -> np.ndarray:
        res = np.zeros((n, keep), np.float32)
        with torch.no_grad():
            for rows, *x in groups:
                res[rows] = ref(*x)[:, :keep].float().cpu().numpy()
        return res

    ours_t, ref_t, ceiling = [], [], []
    emb = ref_emb = None
    kernels: dict[str, Any] = {}
    for r in range(reps):
        t0 = time.perf_counter()
        emb = embedder.embed(batch, ids).embeddings
        ours_t.append(time.perf_counter() - t0)
        if r == 0:
            out["rss_mib"] = _rss_mib()
            if cuda:
                out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            if job["reference"]:
                ref = ReferenceModel.from_tessera(model).to(device)
                with torch.no_grad():
                    ref(*[x[: job["min_warm"]] for x in groups[0][1:]])  # warm-up
        if ref is not None:
            _sync(device)
            t0 = time.perf_counter()
            ref_emb = run_ref()
            ref_t.append(time.perf_counter() - t0)
        if not kernels:  # after the first run's RSS reading: its buffers stay out of it
            kernels = gemm_kernels(device)
        ceiling.append(gemm_gflops(device, kernels))
    out["times"] = ours_t
    out["px_s"] = n / statistics.median(ours_t)
    if ref_t:
        out["ref_times"] = ref_t
        out["ref_px_s"] = n / statistics.median(ref_t)
        out["ratio"] = statistics.median(ref_t) / statistics.median(ours_t)
        out["ratio_best"] = min(ref_t) / min(ours_t)
        out["emb_abs_max"] = float(np.abs(ref_emb).max())
        out["max_abs_diff"] = float(np.abs(emb - ref_emb).max())
        out["rel_diff"] = out["max_abs_diff"] / max(out["emb_abs_max"], 1e-12)
    out["gemm_gflops"] = {k: statistics.median(c[k] for c in ceiling) for k in kernels}
    out["sgemm_gflops"] = max(out["gemm_gflops"].values())
    out["gemm_best_gflops"] = max(max(c.values()) for c in ceiling)
    del groups, ref, emb, ref_emb, kernels

    # ---- v1.0 family: the deterministic `all` scheme with bucketing on a cloudy input
    if job["all_pixels"] and embedder.family == "v1.0":
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
    if not cuda:  # last: the profiler's memory stays out of the RSS peaks
        out["matmul_share"] = matmul_share(embedder, batch.take(slice(0, min(n, 8 * bs))))
    return out


# --- driver -----------------------------------------------------------------------------------

def _jobs(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """The jobs, and the models skipped with why."""
    import torch

    from tessera.model.registry import get_model

    devices = ([d.strip() for d in args.device.split(",")] if args.device != "auto"
               else ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    names = [p.strip() for p in args.models.split(",")]
    checkpoints = dict(c.split("=", 1) for c in args.checkpoint)
    jobs, skipped = [], []
    for dev in devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit(f"--device {dev}: CUDA is not available on this machine")
        gpu = dev.startswith("cuda")
        for name in names:
            spec = get_model(name)
            if spec.config is None and name not in checkpoints:
                if dev == devices[0]:
                    skipped.append(f"{name}: its sizes come from its checkpoint "
                                   f"({spec.upstream_file}); pass --checkpoint {name}=FILE")
                continue
            n = args.pixels or (QUICK_PIXELS if args.quick else PIXELS).get(name, 256) * (
                GPU_PIXEL_FACTOR if gpu else 1)
            bs = min(args.batch_size or (GPU_BATCH if gpu else CPU_BATCH), n)
            jobs.append({
                "model": name, "checkpoint": checkpoints.get(name), "device": dev,
                "pixels": n, "batch_size": bs, "threads": args.threads,
                "scheme": "v1" if spec.family == "v1.0" else None,
                "repeats": 1 if args.quick else args.repeats,
                "reference": not args.no_reference,
                "all_pixels": 0 if args.no_all else (n // 2 if name == "v1" else n),
                "all_repeats": 1 if args.quick else max(1, args.repeats - 1),
                "min_warm": min(n, 8 if args.quick else 16),
            })
    return jobs, skipped


def _run_job(job: dict[str, Any], in_process: bool) -> dict[str, Any]:
    if in_process:
        return run_worker(job)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                           json.dumps(job)], capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    sys.stderr.write(proc.stdout + proc.stderr)
    raise SystemExit(f"benchmark worker for {job['model']} on {job['device']} failed "
                     f"(exit {proc.returncode})")


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _tables(results: list[dict[str, Any]]) -> list[tuple[str, list[str], list[list[str]]]]:
    cols = ["model", "device", "scheme", "params M", "steps/px", "GFLOP/px", "pixels", "batch",
            "px/s", "GFLOP/s", "GEMM GFLOP/s", "% GEMM", "% time in GEMM", "peak RSS MiB",
            "GPU peak MiB", "ref px/s", "ours/ref", "best-of ratio", "max |diff| rel"]
    all_cols = ["model", "device", "pixels", "batch", "steps/px", "padding %", "px/s",
                "peak RSS MiB", "GPU peak MiB"]
    rows, all_rows = [], []
    for r in results:
        gf = r["px_s"] * r["gflop_px"]
        diff = r.get("rel_diff")
        rows.append([
            r["model"], r["device"], r["scheme"], f"{r['params_m']:.2f}", f"{r['steps_px']:.0f}",
            f"{r['gflop_px']:.3f}", str(r["pixels"]), str(r["batch_size"]), f"{r['px_s']:.1f}",
            f"{gf:.0f}", f"{r['sgemm_gflops']:.0f}", f"{100 * gf / r['sgemm_gflops']:.0f}",
            _fmt(None if "matmul_share" not in r else 100 * r["matmul_share"], ".0f"),
            f"{r['rss_mib']:.0f}",
            _fmt(r.get("cuda_peak_mib"), ".0f"), _fmt(r.get("ref_px_s"), ".1f"),
            _fmt(r.get("ratio"), ".2f"), _fmt(r.get("ratio_best"), ".2f"),
            _fmt(diff, ".1e") + ("" if diff is None or diff < TOLERANCE else " FAIL")])
        if "all_px_s" in r:
            all_rows.append([
                r["model"], r["device"], str(r["all_pixels"]), str(r["batch_size"]),
                f"{r['all_tokens_px']:.1f}", f"{100 * r['all_padding']:.1f}",
                f"{r['all_px_s']:.1f}", f"{r['all_rss_mib']:.0f}",
                _fmt(r.get("all_cuda_peak_mib"), ".0f")])
    tables = [("each model's published sampling: v1 = 40 S2 + 40 S1 draws (inputs with enough "
               "valid dates); v1.1 / v2 = every valid observation, bucketed (cloudy input)",
               cols, rows)]
    if all_rows:
        tables.append(("v1.0 family, all scheme with bucketing, SIMULATED cloudy input (70 S2 "
                       "dates, 40 % clouds, 30 + 30 S1 dates)", all_cols, all_rows))
    return tables


def report(results: list[dict[str, Any]], wall: float, skipped: list[str]) -> bool:
    import torch

    ok = all(r.get("rel_diff", 0.0) < TOLERANCE for r in results)
    first = results[0]
    header = (f"TESSERA inference benchmark on SIMULATED inputs: torch {torch.__version__}, "
              f"{first['threads']} CPU threads of {os.cpu_count()} CPUs")
    gemm = "; ".join(f"{r['device']}: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                    r["gemm_gflops"].items())
                     for r in {r["device"]: r for r in results}.values())
    enough = [r for r in results if "enough_valid" in r]
    notes = [
        "px/s: tessera.infer.Embedder end to end (sampling, gathering, model), median of the "
        "repeats; random weights.",
        "GFLOP/s = px/s x GFLOP/px (matrix products only, at each pixel's own sequence "
        "lengths); % GEMM = that over the float32 GEMM rate at an FFN-like shape (2560 x 512 "
        "x 4096), sampled after every repeat (best of 3 there, median over the repeats: the "
        f"ceiling sees the same machine noise as the model; GFLOP/s, {gemm}).",
        "% time in GEMM: share of a profiled embed call's wall time (up to 8 batches of "
        "pixels) inside matrix-product kernels (CPU; the rest is attention softmax, "
        "LayerNorm, the GRU's gates, gathering and Python).",
        "ref: bench/reference.py, plain eager, same weights, same sequences, no_grad, float32, "
        "same batch size, model time only; ours/ref = ratio of the median times, best-of "
        "ratio = ratio of the best times (repeats interleaved).",
        "max |diff| rel: max |ours - reference| of the float embeddings over their max "
        f"|reference| (tolerance {TOLERANCE:g}).",
        "steps/px: S2 + S1 steps run per pixel; padding %: padded share of the tokens run.",
        "peak RSS: getrusage high-water mark of the model's own process after that run "
        "(cumulative within the process; " + ", ".join(
            f"{r['model']} {r['rss_start_mib']:.0f}" for r in results) + " MiB at start, "
        "after importing torch).",
    ]
    if enough:
        notes.append("v1 input: 100 S2 dates at 20 % clouds, 30 + 30 S1 dates; pixels with "
                     ">= 40 valid S2 and >= 40 valid S1 dates: " + ", ".join(
                         f"{r['model']} {100 * r['enough_valid']:.0f} %" for r in enough) + ".")
    notes += [f"skipped {s}" for s in skipped]
    notes.append(f"wall time of the whole benchmark: {wall:.0f} s.")
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
            console = Console(highlight=False, width=max(console.width, 220))
        console.print(header)
        for title, cols, rows in _tables(results):
            table = Table(title=title, title_justify="left")
            for c in cols:
                table.add_column(c, justify="left" if c in ("model", "device", "scheme")
                                 else "right")
            for row in rows:
                table.add_row(*row)
            console.print(table)
        for note in notes:
            console.print(note, soft_wrap=True)
    for r in results:
        if not r.get("rel_diff", 0.0) < TOLERANCE:
            print(f"FAIL: {r['model']} on {r['device']}: max |ours - reference| / max |ref| = "
                  f"{r['rel_diff']:.3e} >= {TOLERANCE:g}", file=sys.stderr)
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", "--presets", default=",".join(ORDER),
                    help="comma-separated model ids (default: %(default)s)")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="ID=FILE",
                    help="weights for a model (repeatable); needed for the v2 students whose "
                         "sizes only their checkpoints give")
    ap.add_argument("--pixels", type=int, default=None,
                    help="pixels per model (default: "
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
                    help="run every model in this process (peak RSS is then cumulative)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker is not None:
        result = run_worker(json.loads(args.worker))
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    t0 = time.perf_counter()
    results = []
    jobs, skipped = _jobs(args)
    for job in jobs:
        print(f"... {job['model']} on {job['device']}: {job['pixels']} px, batch "
              f"{job['batch_size']}", file=sys.stderr, flush=True)
        results.append(_run_job(job, args.in_process))
    ok = report(results, time.perf_counter() - t0, skipped)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
