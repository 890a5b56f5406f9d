"""`tessera shards` (global shuffling of pixels into training shards) and `tessera pretrain`
(self-supervised pretraining, one process or many with torchrun). Both need the train extra."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from tessera.cli.common import (Bars, command, fail, need, out, progress_option,
                                threads_option)


@command
def shards(
    tiles: list[Path] = typer.Argument(..., metavar="TILE_DIR...", help="Tile folders (the "
                                       "published layout)."),
    output: Path = typer.Option(..., "-o", "--output", metavar="DIR", help="New shard folder."),
    shard_size: int = typer.Option(1_000_000, metavar="N", help="Samples per shard."),
    group_size: int = typer.Option(200, metavar="N", help="Tiles permuted together."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the permutations."),
    min_s2: int = typer.Option(10, metavar="N", help="Keep pixels with at least this many "
                               "valid S2 dates."),
    min_s1: int = typer.Option(10, metavar="N", help="... and this many valid S1 dates (orbits "
                               "pooled)."),
    max_pixels_per_tile: Optional[int] = typer.Option(None, metavar="N", help="Random sample of "
                                                      "each tile's kept pixels."),
    batch_size: int = typer.Option(2048, metavar="N", help="Minibatch size for the mixing "
                                   "report."),
    progress: bool = progress_option(),
) -> None:
    """Sample pixels from many tiles into globally shuffled training shards."""
    need("torch", "train", "tessera shards")
    from tessera.train.shards import TileSource, sources_per_batch, write_shards

    missing = [str(t) for t in tiles if not t.is_dir()]
    if missing:
        fail(f"not a tile folder: {', '.join(missing)}")
    with Bars(progress) as bars:
        bar = bars.task("reading tiles", total=len(tiles), unit="tiles")

        def step(name: str, kept: int, total: int) -> None:
            bar.advance(1, info=f"{Path(name).name}: {kept}/{total} kept")

        m = write_shards([TileSource(t) for t in tiles], output, shard_size=shard_size,
                         group_size=group_size, seed=seed, min_s2=min_s2, min_s1=min_s1,
                         max_pixels_per_source=max_pixels_per_tile, progress=step)
    mixing = sources_per_batch(output, min(batch_size, m["samples"]), n_batches=20, seed=seed)
    out.print(f"wrote {m['samples']} samples from {len(tiles)} tile(s) in "
              f"{len(m['shards'])} shard(s) to {output}; spatial mixing: "
              f"{mixing:.1f} distinct tiles per minibatch of {batch_size}")


@command
def pretrain(
    shards: Path = typer.Option(..., metavar="DIR", help="Shard folder written by `tessera "
                                "shards`."),
    output: Path = typer.Option(..., "-o", "--output", metavar="DIR", help="Run folder."),
    preset: str = typer.Option("tiny", metavar="NAME", help="tiny, small or v1."),
    steps: Optional[int] = typer.Option(None, metavar="N", help="Optimizer steps (or "
                                        "--epochs)."),
    epochs: Optional[float] = typer.Option(None, metavar="N", help="Passes over the shards."),
    batch_size: int = typer.Option(256, metavar="N", help="Pixels per step and per process."),
    lr: float = typer.Option(2e-3, metavar="LR", help="Peak learning rate."),
    weight_decay: float = typer.Option(1e-6, metavar="W", help="AdamW weight decay (weight "
                                       "matrices only)."),
    warmup: float = typer.Option(0.1, metavar="F", help="Warm-up fraction of the steps."),
    clip: float = typer.Option(2.0, metavar="NORM", help="Gradient-norm clip."),
    lambd: float = typer.Option(5e-3, metavar="W", help="Barlow Twins off-diagonal weight."),
    mu: float = typer.Option(1.0, metavar="W", help="Weight of the mixed term."),
    qat_start: int = typer.Option(5000, metavar="STEP", help="Step from which the "
                                  "representation is fake-quantised to int8."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the data order, views and init."),
    workers: int = typer.Option(0, metavar="N", help="DataLoader worker processes."),
    buffer: int = typer.Option(20, metavar="N", help="Shards held in memory and shuffled "
                               "together."),
    checkpoint_every: int = typer.Option(500, metavar="STEPS", help="Steps between "
                                         "checkpoints (a resume restarts from the last)."),
    log_every: int = typer.Option(10, metavar="STEPS", help="Steps between metrics rows."),
    probe: Optional[Path] = typer.Option(None, metavar="TABLE", help="Labelled point table for "
                                         "a periodic linear probe (keeps the best checkpoint)."),
    probe_label: str = typer.Option("ewoc_code", metavar="COLUMN", help="Label column of the "
                                    "probe table."),
    probe_group: str = typer.Option("h3_l3_cell", metavar="COLUMN", help="Column for "
                                    "geographic folds."),
    probe_every: int = typer.Option(500, metavar="STEPS", help="Steps between probes."),
    probe_year: Optional[int] = typer.Option(None, metavar="YEAR", help="Calendar year of the "
                                             "probe table's rows to use."),
    probe_options: Optional[str] = typer.Option(None, metavar="JSON", help="Point-table options "
                                                "of the probe as JSON, e.g. "
                                                "'{\"s1_encoding\": \"amplitude\"}'."),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto, cpu, cuda, cuda:1 ..."),
    activation_checkpointing: bool = typer.Option(
        False, "--activation-checkpointing", help="Recompute the encoder in backward: "
        "same results, about half the memory for about 40 % more time (CPU, tiny)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output."),
    threads: Optional[int] = threads_option(),
    progress: bool = progress_option(),
) -> None:
    """Self-supervised pretraining (Barlow Twins + mix, QAT); exports model.safetensors.

    Multi-GPU / multi-process: `torchrun --nproc_per_node N $(which tessera) pretrain ...`."""
    need("torch", "train", "tessera pretrain")
    from tessera.infer import use_threads
    from tessera.model import get_preset
    from tessera.train.loop import TrainConfig, pretrain as run
    from tessera.train.probe import TableProbe

    get_preset(preset)
    if (steps is None) == (epochs is None):
        fail("give exactly one of --steps and --epochs")
    cfg = TrainConfig(shards=str(shards), out=str(output), preset=preset, steps=steps,
                      epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      warmup=warmup, clip=clip, lambd=lambd, mu=mu, qat_start=qat_start,
                      seed=seed, buffer=buffer, workers=workers,
                      checkpoint_every=checkpoint_every, log_every=log_every,
                      probe_every=probe_every if probe else 0, device=device,
                      activation_checkpointing=activation_checkpointing)
    opts: dict[str, Any] = {}
    if probe_options:
        try:
            opts = json.loads(probe_options)
        except json.JSONDecodeError as e:
            fail(f"--probe-options: not valid JSON ({e})")
    if probe_year is not None:
        opts["year"] = probe_year
    prober = (TableProbe(probe, label=probe_label, group=probe_group, **opts)
              if probe else None)
    use_threads(threads)
    with Bars(progress) as bars:
        bar = bars.task("pretraining", total=None, unit="steps")

        def step(done: int, total: int, row: dict[str, Any]) -> None:
            info = f"loss {row['loss']:.2f}" if "loss" in row else ""
            if "probe" in row:
                info += f" probe {row['probe']:.3f}"
            bar.update(completed=done, total=total, info=info)

        result = run(cfg, resume=resume, probe=prober, progress=step)
    if result["rank"] == 0:
        out.print(f"trained {result['steps']} steps; weights -> {result['final']}"
                  + (f"; best probe {result['best_probe']:.3f} -> "
                     f"{output / 'best.safetensors'}" if prober else ""))
