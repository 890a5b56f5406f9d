"""`tessera shards` (global shuffling) and `tessera pretrain` (self-supervised training)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn

from tessera.cli_errors import console, fail, user_errors


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=console)


def register(app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def shards(
        tiles: List[Path] = typer.Argument(..., help="Tile folders (the published layout)."),
        output: Path = typer.Option(..., "-o", "--output", help="New shard folder."),
        shard_size: int = typer.Option(1_000_000, help="Samples per shard."),
        group_size: int = typer.Option(200, help="Tiles permuted together."),
        seed: int = typer.Option(0),
        min_s2: int = typer.Option(10, help="Keep pixels with at least this many valid S2 dates."),
        min_s1: int = typer.Option(10, help="... and this many valid S1 dates (orbits pooled)."),
        max_pixels_per_tile: Optional[int] = typer.Option(None, help="Random sample of each "
                                                          "tile's kept pixels."),
        batch_size: int = typer.Option(2048, help="Minibatch size for the mixing report."),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Sample pixels from many tiles into globally shuffled training shards."""
        from tessera.train.shards import TileSource, sources_per_batch, write_shards

        missing = [str(t) for t in tiles if not t.is_dir()]
        if missing:
            fail(f"not a tile folder: {', '.join(missing)}")
        with _progress() if progress else contextlib.nullcontext() as bar:
            task = bar.add_task("reading tiles", total=len(tiles), info="") if bar else None

            def step(name: str, kept: int, total: int) -> None:
                if bar is not None:
                    bar.update(task, advance=1, info=f"{Path(name).name}: {kept}/{total} kept")

            m = write_shards([TileSource(t) for t in tiles], output, shard_size=shard_size,
                             group_size=group_size, seed=seed, min_s2=min_s2, min_s1=min_s1,
                             max_pixels_per_source=max_pixels_per_tile, progress=step)
        mixing = sources_per_batch(output, min(batch_size, m["samples"]), n_batches=20, seed=seed)
        console.print(f"wrote {m['samples']} samples from {len(tiles)} tile(s) in "
                      f"{len(m['shards'])} shard(s) to {output}; spatial mixing: "
                      f"{mixing:.1f} distinct tiles per minibatch of {batch_size}")

    @app.command()
    @user_errors
    def pretrain(
        shards: Path = typer.Option(..., help="Shard folder written by `tessera shards`."),
        output: Path = typer.Option(..., "-o", "--output", help="Run folder."),
        preset: str = typer.Option("tiny", help="tiny, small or v1."),
        steps: Optional[int] = typer.Option(None, help="Optimizer steps (or --epochs)."),
        epochs: Optional[float] = typer.Option(None, help="Passes over the shards."),
        batch_size: int = typer.Option(256, help="Pixels per step and per process."),
        lr: float = typer.Option(2e-3, help="Peak learning rate."),
        weight_decay: float = typer.Option(1e-6),
        warmup: float = typer.Option(0.1, help="Warm-up fraction of the steps."),
        clip: float = typer.Option(2.0, help="Gradient-norm clip."),
        lambd: float = typer.Option(5e-3, help="Barlow Twins off-diagonal weight."),
        mu: float = typer.Option(1.0, help="Weight of the mixed term."),
        qat_start: int = typer.Option(5000, help="Step from which the representation is "
                                      "fake-quantised to int8."),
        seed: int = typer.Option(0),
        workers: int = typer.Option(0, help="DataLoader worker processes."),
        buffer: int = typer.Option(20, help="Shards held in memory and shuffled together."),
        checkpoint_every: int = typer.Option(500),
        log_every: int = typer.Option(10),
        probe: Optional[Path] = typer.Option(None, help="Labelled point table for a periodic "
                                             "linear probe (keeps the best checkpoint)."),
        probe_label: str = typer.Option("ewoc_code"),
        probe_group: str = typer.Option("h3_l3_cell", help="Column for geographic folds."),
        probe_every: int = typer.Option(500),
        probe_year: Optional[int] = typer.Option(None, help="Calendar year of the probe table's "
                                                 "rows to use."),
        probe_options: Optional[str] = typer.Option(None, help="Point-table options of the probe "
                                                    "as JSON, e.g. '{\"s1_encoding\": \"amplitude\"}'."),
        device: str = typer.Option("auto"),
        activation_checkpointing: bool = typer.Option(
            False, "--activation-checkpointing", help="Recompute the encoder in backward: "
            "same results, about half the memory for about 40 % more time (CPU, tiny)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --output."),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Self-supervised pretraining (Barlow Twins + mix, QAT); exports model.safetensors.
        Multi-GPU / multi-process: `torchrun --nproc_per_node N $(which tessera) pretrain ...`."""
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
        opts = {}
        if probe_options:
            import json
            try:
                opts = json.loads(probe_options)
            except json.JSONDecodeError as e:
                fail(f"--probe-options: not valid JSON ({e})")
        if probe_year is not None:
            opts["year"] = probe_year
        prober = (TableProbe(probe, label=probe_label, group=probe_group, **opts)
                  if probe else None)
        with _progress() if progress else contextlib.nullcontext() as bar:
            task = bar.add_task("pretraining", total=None, info="") if bar else None

            def step(done: int, total: int, row: dict) -> None:
                if bar is not None:
                    info = f"loss {row['loss']:.2f}" if "loss" in row else ""
                    if "probe" in row:
                        info += f" probe {row['probe']:.3f}"
                    bar.update(task, completed=done, total=total, info=info)

            result = run(cfg, resume=resume, probe=prober, progress=step)
        if result["rank"] == 0:
            console.print(f"trained {result['steps']} steps; weights -> {result['final']}"
                          + (f"; best probe {result['best_probe']:.3f} -> "
                             f"{output / 'best.safetensors'}" if prober else ""))
