"""The pretraining loop (SPEC section 4), from a laptop to `torchrun` on many GPUs.

Per step: two views of each pixel (views.py) and their mix x_m = alpha x1 + (1 - alpha) x2[idx]
go through the encoder; from `qat_start` the 128-d representation is fake-quantised to int8
(straight-through) before the projector; the loss is Barlow Twins + the mixed term (losses.py).
AdamW (decay on weight matrices only), linear warm-up over `warmup` of the steps then cosine
to 0, gradient-norm clipping, bf16 autocast on GPU.

Determinism and exact resume: the data order and views are a function of (seed, epoch, batch)
(shards.py), and every other random number of a step (dropout, alpha, the mix permutation) comes
from generators re-seeded from (seed, step), and the rank for dropout. A checkpoint stores model,
optimizer, scheduler, RNG states and the position in the shard stream, so N steps + resume N
steps gives the same weights as 2N steps straight.

DDP: run under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK in the environment); gloo on CPU,
NCCL on GPU. `batch_size` is per rank; the loss is computed on the global batch, and the
projector's BatchNorm normalises with global-batch statistics (SyncBatchNorm on NCCL,
ddp.GlobalBatchNorm1d on gloo) and the fake quantisation's scale is the global batch's, so W
ranks with B samples each compute the loss and gradients of one process with W x B on the same
samples. The data order and the views are functions of the global batch (shards.py), which is
what a checkpoint's position counts in: a run resumes on another number of ranks when the global
batch (batch_size x world size) stays the same, and is refused otherwise. Two things stay per
rank: dropout masks (each rank draws its own) and the mix partners of L_mix (inputs are mixed
within a rank's slice, losses.py), so a W-rank run is the same training as a 1-rank run but not
the same random numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from tessera.atomic import atomic_path
from tessera.errors import ExistsError, InputError, NotFoundError, TrainError
from tessera.model import TesseraModel, get_preset, save_checkpoint
from tessera.train.ddp import distributed
from tessera.train.losses import BarlowTwinsLoss
from tessera.train.qat import fake_quantize_tensor
from tessera.train.shards import Batch, ShardStream, loader, read_manifest
from tessera.train.views import VIEW_STEPS, View

CSV_FIELDS = ("step", "epoch", "loss", "bt", "mix", "lr", "grad_norm", "samples_per_s",
              "sources_per_batch", "rankme_z", "rankme_r", "probe", "qat", "world_size")


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; stored in the run folder so `resume` can check it."""

    shards: str
    out: str
    preset: str = "tiny"
    steps: int | None = None  # total optimizer steps; or give epochs
    epochs: float | None = None
    batch_size: int = 256  # per rank
    lr: float = 2e-3
    weight_decay: float = 1e-6
    warmup: float = 0.1  # fraction of the steps
    clip: float = 2.0
    lambd: float = 5e-3
    mu: float = 1.0
    qat_start: int = 5000
    view_steps: int = VIEW_STEPS
    seed: int = 0
    buffer: int = 20  # shards held at once by the loader
    workers: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    probe_every: int = 0  # 0 = no periodic probe
    device: str = "auto"
    amp: bool = True  # bf16 autocast on GPU (never on CPU)
    # recompute each view's encoder pass in backward instead of keeping its activations: same
    # losses and gradients; on CPU about half the peak memory for about 40 % more time
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        for field, value, least in (("steps", self.steps, 1), ("batch_size", self.batch_size, 1),
                                    ("checkpoint_every", self.checkpoint_every, 1),
                                    ("log_every", self.log_every, 1), ("buffer", self.buffer, 1),
                                    ("workers", self.workers, 0)):
            if value is not None and value < least:
                raise InputError(f"--{field.replace('_', '-')} {value}: expected at least {least}")
        if self.epochs is not None and not self.epochs > 0:
            raise InputError(f"--epochs {self.epochs}: expected a positive number of passes")
        if self.lr <= 0 or not 0 <= self.warmup < 1:
            raise InputError(f"--lr {self.lr} / --warmup {self.warmup}: expected lr > 0 and "
                             "0 <= warmup < 1")

    def total_steps(self, batches_per_epoch: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        if self.epochs is not None:
            return max(1, int(math.ceil(self.epochs * batches_per_epoch)))
        raise InputError("give steps or epochs")


class Pretrainer(nn.Module):
    """Encoder + projector as one module, so DDP sees a single forward per step."""

    def __init__(self, model: TesseraModel, activation_checkpointing: bool = False) -> None:
        super().__init__()
        if model.projector is None:
            raise InputError("Pretrainer needs a model built with_projector=True")
        self.model = model
        self.activation_checkpointing = activation_checkpointing

    def _encode(self, v: View) -> torch.Tensor:
        if self.activation_checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint
            # non-reentrant: works under DDP; the RNG state (dropout) is replayed exactly
            return checkpoint(self.model, *v.inputs(), use_reentrant=False)
        return self.model(*v.inputs())

    def forward(self, views: list[View], quantize: bool
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        reps = [self._encode(v) for v in views]
        if quantize:
            reps = [fake_quantize_tensor(r, global_batch=True) for r in reps]
        projector = self.model.projector
        assert projector is not None  # checked in __init__
        return [projector(r.float()) for r in reps], reps


def lr_lambda(total: int, warmup: float) -> Callable[[int], float]:
    """Linear warm-up over `warmup` x total steps, then cosine to 0."""
    warm = max(1, int(round(warmup * total)))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    return f


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only; none on biases and normalisation parameters."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def rankme(x: torch.Tensor, eps: float = 1e-7) -> float:
    """Effective rank (RankMe, Garrido et al. 2023): exp of the entropy of the normalised
    singular values of the (B, D) matrix."""
    s = torch.linalg.svdvals(x.detach().float())
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919 + 17) & 0x7FFFFFFF


def _atomic_torch_save(obj: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@dataclasses.dataclass
class RunState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # next global batch of `epoch` to train on
    best_probe: float = -math.inf


def _dist_info() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def init_distributed(device: str = "auto") -> tuple[int, int, int]:
    """Join the process group torchrun describes in the environment (no-op when alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        dist.init_process_group("nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return _dist_info()


class MetricsLog:
    """CSV (always) and TensorBoard (when installed) on rank 0."""

    def __init__(self, out: Path, enabled: bool, resume_step: int | None = None,
                 world: int = 1) -> None:
        self.enabled = enabled
        self.world = world  # recorded on every row: a resumed run may change it
        self.path = out / "metrics.csv"
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # rows written after the checkpoint we resume from will be written again
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
                w.writeheader()
                w.writerows(rows)
        new = not self.path.exists()
        self.file = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=CSV_FIELDS)
        if new:
            self.writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # the `train` extra is not installed: CSV only
            self.tb = None

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.writer.writerow({**{k: row.get(k, "") for k in CSV_FIELDS},
                              "world_size": self.world})
        self.file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def pretrain(cfg: TrainConfig, *, resume: bool = False,
             probe: Callable[[TesseraModel], float] | None = None,
             progress: Callable[[int, int, dict], None] | None = None,
             stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume) a run in `cfg.out`; returns a summary. See the module docstring.

    `probe(model) -> score` (higher is better) runs every `cfg.probe_every` steps on rank 0; the
    best-scoring weights are exported to `best.safetensors`. `stop_after` ends the session after
    that many steps of the schedule (checkpointed, resumable): a time-boxed or interrupted run.
    """
    rank, world, local_rank = init_distributed(cfg.device)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    manifest = read_manifest(cfg.shards)  # every shard's files checked: none is truncated
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    probe_stream = ShardStream(cfg.shards, cfg.batch_size, seed=cfg.seed, rank=rank, world=world)
    per_epoch = probe_stream.batches_per_epoch()
    if per_epoch < 1:
        raise InputError(f"{cfg.shards}: {manifest['samples']} samples make no full global batch "
                         f"of {cfg.batch_size} x {world} ranks; lower --batch-size")
    total = cfg.total_steps(per_epoch)
    if resume and not ckpt_path.exists():
        raise NotFoundError(f"{ckpt_path}: nothing to resume (no checkpoint in {out})")
    if not resume and rank == 0 and ckpt_path.exists():
        raise ExistsError(f"{out}: holds a run already (checkpoint.pt); pass --resume to "
                          "continue it or choose a new output folder")
    created = rank == 0 and not out.exists()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            _clear_unfinished_start(out)
    try:
        return _run(cfg, out, ckpt_path, manifest, device, total, rank, world, resume, probe,
                    progress, stop_after)
    except BaseException:
        if created and not ckpt_path.exists():  # nothing to resume: leave no half-started run
            shutil.rmtree(out, ignore_errors=True)
        raise


#: What a run writes besides its checkpoint (a fresh start clears them when no checkpoint exists).
RUN_FILES = ("config.json", "metrics.csv", "tensorboard", "model.safetensors", "model.json",
             "best.safetensors", "best.json")


def _clear_unfinished_start(out: Path) -> None:
    """A run killed before its first checkpoint leaves config, metrics and TensorBoard files
    and nothing to resume from: a fresh start in that folder removes them (only these names),
    so its metrics do not continue a dead run's."""
    for name in RUN_FILES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _run(cfg: TrainConfig, out: Path, ckpt_path: Path, manifest: dict[str, Any],
         device: torch.device, total: int, rank: int, world: int, resume: bool,
         probe: Callable[[TesseraModel], float] | None,
         progress: Callable[[int, int, dict], None] | None, stop_after: int | None
         ) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    model = TesseraModel(get_preset(cfg.preset), with_projector=True).to(device)
    state = RunState()
    if resume:
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        # checkpoints written before the world size was stored: taken as this one's
        _check_same_run(saved["config"], cfg, ckpt_path, int(saved.get("world_size", world)),
                        world)
        model.load_state_dict(saved["model"])
        state = RunState(**saved["state"])
    net: nn.Module = Pretrainer(model, cfg.activation_checkpointing)
    if world > 1:
        net = distributed(net, device)
    opt = torch.optim.AdamW(param_groups(net, cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, cfg.warmup))
    if resume:
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"]["torch"])
        np.random.set_state(saved["rng"]["numpy"])
        random.setstate(saved["rng"]["python"])
    if rank == 0:
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    loss_fn = BarlowTwinsLoss(lambd=cfg.lambd, mu=cfg.mu)
    use_amp = cfg.amp and device.type == "cuda"
    log = MetricsLog(out, rank == 0, resume_step=state.step if resume else None, world=world)

    def checkpoint() -> None:
        if rank != 0:
            return
        _atomic_torch_save({
            "config": dataclasses.asdict(cfg), "world_size": world, "model": model.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "state": dataclasses.asdict(state),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate()},
        }, ckpt_path)

    def export(path: Path, extra: dict[str, Any]) -> Path:
        return save_checkpoint(model, path, preset=cfg.preset, extra={"training": {
            "steps": state.step, "epoch": state.epoch, "samples": state.step * cfg.batch_size * world,
            "world_size": world, "device": str(device), "shards": str(cfg.shards),
            "shard_samples": manifest["samples"], "config": dataclasses.asdict(cfg), **extra}})

    net.train()
    t_last, n_last = time.perf_counter(), 0
    sources_seen: list[int] = []
    last: dict[str, Any] = {}
    end = total if stop_after is None else min(total, stop_after)
    while state.step < end:
        stream = ShardStream(cfg.shards, cfg.batch_size, seed=cfg.seed, epoch=state.epoch,
                             rank=rank, world=world, buffer=cfg.buffer,
                             start_batch=state.batch_in_epoch, drop_last=True,
                             steps=cfg.view_steps)
        for batch in loader(stream, cfg.workers):
            if state.step >= end:
                break
            last = _train_step(net, model, batch, opt, sched, loss_fn, cfg, state.step, device,
                               use_amp, world)
            sources_seen.append(int(torch.unique(batch.source).numel()))
            state.step += 1
            state.batch_in_epoch = batch.index + 1
            n_last += len(batch.source) * world
            row: dict[str, Any] | None = None
            if state.step % cfg.log_every == 0 or state.step == total:
                now = time.perf_counter()
                row = {"step": state.step, "epoch": state.epoch, **last,
                       "lr": sched.get_last_lr()[0], "samples_per_s": n_last / (now - t_last),
                       "sources_per_batch": float(np.mean(sources_seen)),
                       "qat": int(state.step > cfg.qat_start)}
                t_last, n_last, sources_seen = now, 0, []
            if probe is not None and cfg.probe_every and state.step % cfg.probe_every == 0 \
                    and rank == 0:
                score = float(probe(model))
                model.train()
                row = {**(row or {"step": state.step, "epoch": state.epoch}), "probe": score}
                if score > state.best_probe:
                    state.best_probe = score
                    export(out / "best", {"probe": score})
            if row is not None:
                log.write(row)
                if progress is not None:
                    progress(state.step, total, row)
            if state.step % cfg.checkpoint_every == 0 or state.step == total:
                checkpoint()
        else:  # the epoch ran out
            state.epoch += 1
            state.batch_in_epoch = 0
    checkpoint()
    final = export(out / "model", {"final": state.step == total}) if rank == 0 else None
    log.close()
    if world > 1:
        dist.barrier()
    return {"steps": state.step, "epoch": state.epoch, "final": final, "last": last, "model": model,
            "best_probe": state.best_probe, "total_steps": total, "rank": rank, "world": world}


def _check_same_run(saved: dict[str, Any], cfg: TrainConfig, path: Path, saved_world: int = 1,
                    world: int = 1) -> None:
    """Resuming with other settings would silently train something else: refuse.

    The per-rank batch may change with the number of ranks as long as the global batch
    (batch_size x world size) does not: the checkpoint's position, the epoch length and the
    schedule count global batches, and a global batch is the same samples and views whatever
    the number of ranks (shards.py)."""
    now = dataclasses.asdict(cfg)
    free = {"out", "workers", "checkpoint_every", "log_every", "device", "shards", "probe_every",
            "activation_checkpointing",  # change neither the data nor the maths
            "batch_size"}  # checked below as the global batch
    diff = [k for k in now if k not in free and saved.get(k) != now[k]]
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diff)
        raise TrainError(f"{path}: cannot resume with different settings ({detail})")
    was = int(saved["batch_size"]) * saved_world
    if cfg.batch_size * world != was:
        fix = (f"--batch-size {was // world}" if was % world == 0
               else f"a number of processes that divides {was}")
        raise TrainError(f"{path}: cannot resume with a global batch of {cfg.batch_size} x "
                         f"{world} process(es) = {cfg.batch_size * world}: the run was trained "
                         f"with {saved['batch_size']} x {saved_world} = {was}; with {world} "
                         f"process(es) resume with {fix}")


def _train_step(net: nn.Module, model: TesseraModel, batch: Batch, opt: torch.optim.Optimizer,
                sched: torch.optim.lr_scheduler.LRScheduler, loss_fn: BarlowTwinsLoss,
                cfg: TrainConfig, step: int, device: torch.device, use_amp: bool, world: int
                ) -> dict[str, float]:
    seed = _step_seed(cfg.seed, step)
    # dropout: each rank its own masks (rank 0 those of a single process), not copies of rank 0's
    rank = dist.get_rank() if world > 1 else 0
    torch.manual_seed((seed + 104_729 * rank) & 0x7FFFFFFF)
    rng = np.random.default_rng(seed)
    alpha = float(rng.beta(1.0, 1.0))
    v1, v2 = batch.view1.to(device), batch.view2.to(device)
    idx = torch.from_numpy(rng.permutation(len(batch.source))).to(device)
    vm = v1.mix(v2, alpha, idx)
    quantize = step >= cfg.qat_start
    ctx = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if use_amp
           else torch.autocast(device_type="cpu", enabled=False))
    with ctx:
        (z1, z2, zm), (r1, _, _) = net([v1, v2, vm], quantize)
    terms = loss_fn(z1.float(), z2.float(), zm.float(), alpha, idx)
    opt.zero_grad(set_to_none=True)
    terms.total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
    opt.step()
    sched.step()
    out = {"loss": float(terms.total.detach()), "bt": float(terms.bt.detach()),
           "mix": float(terms.mix.detach()), "grad_norm": float(grad_norm)}
    if (step + 1) % cfg.log_every == 0:
        out["rankme_z"] = rankme(z1)
        out["rankme_r"] = rankme(r1)
    return out
