#!/usr/bin/env python
"""Pretraining throughput (training samples per second) and peak memory per preset.

For each preset the script runs `tessera.train.loop.pretrain` in a FRESH SUBPROCESS (so each
peak memory belongs to one preset alone) on shards of SIMULATED tiles (`tessera.simulate`),
with the published per-step work: two views of 40 S2 + 40 S1 draws, their mix, three encoder
passes, the projector and the Barlow Twins + mixed loss, backward, AdamW. The first `--warmup`
steps (allocation, kernel selection) are not timed. samples/s = batch x timed steps / wall.
Peak memory: the child's ru_maxrss (CPU) and torch.cuda.max_memory_allocated (GPU).

    python bench/train.py                                  # tiny and small on CPU, batch 256
    python bench/train.py --presets tiny small v1 --device cuda --batch-size 2048
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    import torch

    from tessera.train.loop import TrainConfig, pretrain

    steps = args.warmup + args.steps
    times: list[float] = []

    def tick(step: int, total: int, row: dict) -> None:
        times.append(time.perf_counter())

    cfg = TrainConfig(shards=args.shards, out=args.out, preset=args.presets[0], steps=steps,
                      batch_size=args.batch_size, log_every=1, checkpoint_every=10**9,
                      qat_start=0, device=args.device, workers=args.workers,
                      activation_checkpointing=args.activation_checkpointing)
    pretrain(cfg, progress=tick)
    timed = times[args.warmup:]
    wall = timed[-1] - times[args.warmup - 1]
    cuda = args.device.startswith("cuda")
    print(json.dumps({
        "preset": args.presets[0], "batch_size": args.batch_size, "timed_steps": len(timed),
        "activation_checkpointing": args.activation_checkpointing,
        "samples_per_s": args.batch_size * len(timed) / wall, "s_per_step": wall / len(timed),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "threads": torch.get_num_threads()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--activation-checkpointing", action="store_true",
                    help="recompute the encoder in backward (less memory, more time)")
    ap.add_argument("--tiles", type=int, default=4, help="simulated 64 x 64 px tiles")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--shards", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    from tessera.simulate import SimConfig, simulate_tile
    from tessera.train.shards import TileSource, write_shards

    with tempfile.TemporaryDirectory(prefix="tessera_bench_train_") as tmp:
        tmp = Path(tmp)
        tiles = [simulate_tile(tmp / f"tile{k}", SimConfig(height=64, width=64, seed=k))
                 for k in range(args.tiles)]
        m = write_shards([TileSource(t) for t in tiles], tmp / "shards", shard_size=4096)
        print(f"{m['samples']} SIMULATED training samples in {len(m['shards'])} shards")
        rows = []
        for preset in args.presets:
            cmd = [sys.executable, __file__, "--child", "--presets", preset,
                   "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--device", args.device,
                   "--workers", str(args.workers), "--shards", str(tmp / "shards"),
                   "--out", str(tmp / f"run_{preset}")]
            if args.activation_checkpointing:
                cmd.append("--activation-checkpointing")
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-3000:])
                raise SystemExit(f"{preset}: child failed")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            gpu = f", peak GPU {r['peak_gpu_mib']:.0f} MiB" if r["peak_gpu_mib"] else ""
            ck = " (activation checkpointing)" if r["activation_checkpointing"] else ""
            print(f"{preset:6s} batch {r['batch_size']}{ck}: {r['samples_per_s']:8.1f} samples/s "
                  f"({r['s_per_step']:.2f} s/step), peak RSS {r['peak_rss_mib']:.0f} MiB{gpu} "
                  f"on {r['device']} ({r['threads']} threads)", flush=True)
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
