"""Recipe of the shipped weights: pretrain the `tiny` preset on every real pixel of
../shared/datasets/worldcereal and install the result as tessera/weights/tiny.safetensors.

    .venv/bin/python scripts/pretrain_tiny.py --work /tmp/tessera_pretrain [--steps 600]
        [--datasets ../shared/datasets]

Held out of pretraining (never seen, not even unlabelled):
- 2022_FRA, 2023_FRA and 2017_UGA_SSD extraction tables: the final honest evaluation
  (scripts/eval_worldcereal.py);
- the 2021 Flanders LPIS long table: the periodic linear probe that selects the checkpoint.
Everything is seeded; on the same machine type the run reproduces the shipped file (CPU
float32 kernels are deterministic for a fixed thread count; the thread count is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
#: The datasets root: $TESSERA_SHARED_DATASETS, else ../shared/datasets next to the repository.
DATASETS = Path(os.environ.get("TESSERA_SHARED_DATASETS") or ROOT.parent / "shared" / "datasets")
#: The probe table, relative to the datasets root.
PROBE_TABLE = Path("worldcereal", "extractions", "2021_BEL_LPIS-Flanders_long_named-dummy.parquet")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/tessera_pretrain"))
    ap.add_argument("--datasets", type=Path, default=DATASETS,
                    help="the shared datasets root (default: $TESSERA_SHARED_DATASETS, else "
                         "../shared/datasets next to the repository)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--qat-from", type=float, default=0.6, help="fraction of the steps")
    ap.add_argument("--probe-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--install", action="store_true", help="copy the weights into the package")
    args = ap.parse_args()

    from tessera.table.wide import WORLDCEREAL_OPTIONS
    from tessera.train.corpus import CorpusFiles, corpus_summary, real_corpus
    from tessera.train.loop import TrainConfig, pretrain
    from tessera.train.probe import TableProbe
    from tessera.train.shards import BatchSource, sources_per_batch, write_shards

    work = args.work
    files = CorpusFiles(args.datasets)
    probe_table = files.root / PROBE_TABLE
    shards = work / "shards"
    t0 = time.perf_counter()
    if not shards.exists():
        parts = real_corpus(files, work / "corpus")
        # the probe's table selects the checkpoint: keep it out of the pretraining pixels
        parts = [p for p in parts if probe_table.stem not in p.name]
        summary = corpus_summary(parts)
        print(summary.to_string())
        summary.to_csv(work / "corpus_summary.csv", index=False)
        write_shards([BatchSource(f"{p.name}", p.batch) for p in parts], shards,
                     shard_size=8192, group_size=len(parts), seed=args.seed)
    manifest = json.loads((shards / "manifest.json").read_text())
    mixing = sources_per_batch(shards, args.batch_size, n_batches=50, seed=args.seed)
    print(f"{manifest['samples']} samples in {len(manifest['shards'])} shards; "
          f"{mixing:.1f} distinct sources per minibatch of {args.batch_size}")

    cfg = TrainConfig(shards=str(shards), out=str(work / "run"), preset="tiny", steps=args.steps,
                      batch_size=args.batch_size, qat_start=int(args.qat_from * args.steps),
                      seed=args.seed, checkpoint_every=50, log_every=10,
                      probe_every=args.probe_every, device="cpu")
    probe = TableProbe(probe_table, label="ewoc_code", group="h3_l3_cell", min_count=5,
                       year=2021, **WORLDCEREAL_OPTIONS)

    def show(step: int, total: int, row: dict) -> None:
        extra = f" probe {row['probe']:.3f}" if "probe" in row else ""
        loss = f"loss {row['loss']:.2f} bt {row['bt']:.2f} mix {row['mix']:.3f} " \
               f"rankme_r {row.get('rankme_r', float('nan')):.1f}" if "loss" in row else ""
        print(f"step {step}/{total} {loss}{extra} ({time.perf_counter() - t0:.0f} s)", flush=True)

    result = pretrain(cfg, resume=args.resume, probe=probe, progress=show)
    run = work / "run"
    chosen = run / "best.safetensors" if (run / "best.safetensors").exists() else result["final"]
    provenance = {"seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(),
                  "machine": platform.processor() or platform.machine(),
                  "samples": manifest["samples"], "mixing": mixing,
                  "best_probe": result["best_probe"], "chosen": str(chosen)}
    (run / "provenance.json").write_text(json.dumps(provenance, indent=1))
    print(json.dumps(provenance, indent=1))
    if args.install:
        dest = ROOT / "tessera" / "weights"
        dest.mkdir(exist_ok=True)
        shutil.copyfile(chosen, dest / "tiny.safetensors")
        print(f"installed {dest / 'tiny.safetensors'}")


if __name__ == "__main__":
    main()
