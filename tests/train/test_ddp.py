"""Training at scale: DDP with 2 CPU ranks (gloo), the way CI can run it.

- the real `torchrun` running `tessera pretrain` (the command line) on 2 processes;
- 2 ranks with B samples each give the loss and gradients of one process with 2B on the same
  global batch (global BatchNorm; plain per-rank BatchNorm does not, which the test shows);
- a global batch of 2 ranks is, rank slices concatenated, the same samples AND views as the
  batch of one process with twice the per-rank batch;
- a run resumes across a changed world size at the same global batch (2 -> 1 and 1 -> 2
  ranks), on the same steps and samples as a straight run, and is refused when the global batch
  would change.

Every spawned rank runs one torch thread: the CI machine has 2 cores.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fixtures import make_tile_arrays
from tessera.dpixel import write_tile
from tessera.errors import TrainError
from tessera.model import TesseraModel, get_preset
from tessera.train import loop
from tessera.train.ddp import GlobalBatchNorm1d, distributed, global_batchnorm
from tessera.train.losses import BarlowTwinsLoss
from tessera.train.shards import Batch, ShardStream, TileSource, write_shards
from tessera.train.views import _uniform

B = 8  # per rank; the global batch of 2 ranks is 16
ALPHA = 0.3
_TRAIN_STEP = loop._train_step  # the real one (the resume test records the steps)


@pytest.fixture(autouse=True)
def one_thread():
    """This process trains too (the one-process references): one thread, as the ranks, so
    the CI machine's 2 cores are not oversubscribed (torch's thread pool slows down 10x then)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    tiles = [write_tile(root / f"t{k}", **make_tile_arrays(h=8, w=8, seed=10 + k))
             for k in range(3)]
    out = root / "shards"
    write_shards([TileSource(t) for t in tiles], out, shard_size=64, seed=0)
    return out


@pytest.fixture(scope="module")
def small_shards(shard_dir):
    """48 samples: 3 global batches of 16 per epoch, so a few steps cross epochs."""
    tiles = sorted(p for p in shard_dir.parent.iterdir() if p.name.startswith("t"))
    out = shard_dir.parent / "small"
    write_shards([TileSource(t) for t in tiles], out, shard_size=20, seed=0,
                 max_pixels_per_source=16)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int) -> None:
    """What torchrun gives a rank: the environment of the process group, one thread."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    loop.init_distributed("cpu")


def _no_dropout_preset(name: str):
    """The preset without dropout: dropout masks are drawn per rank (documented), the one
    difference left between 2 ranks and 1 process on the same samples."""
    return dataclasses.replace(get_preset(name), dropout=0.0)


# --- the data: a global batch does not depend on the number of ranks -----------------------------

def test_a_slice_of_the_uniforms_is_that_of_the_whole_draw():
    whole = np.random.default_rng(7).random((10, 3))
    rng = np.random.default_rng(7)
    np.testing.assert_array_equal(_uniform(rng, 4, 3, (5, 10)), whole[5:9])
    after = np.random.default_rng(7)  # the generator ends where the whole draw leaves it
    after.random((10, 3))
    assert rng.random() == after.random()
    with pytest.raises(ValueError, match="outside a batch"):
        _uniform(np.random.default_rng(0), 4, 3, (8, 10))


def _batches(shard_dir, batch_size: int, rank: int, world: int, drop_last: bool) -> list[Batch]:
    return list(ShardStream(shard_dir, batch_size, seed=1, epoch=1, rank=rank, world=world,
                            drop_last=drop_last, steps=12))


def _fields(b: Batch) -> list[torch.Tensor]:
    return [b.source, b.pixel, *dataclasses.astuple(b.view1), *dataclasses.astuple(b.view2)]


@pytest.mark.parametrize("world", [2, 3])
def test_global_batch_is_the_same_samples_and_views_on_any_number_of_ranks(shard_dir, world):
    for drop_last in (True, False):
        one = _batches(shard_dir, 5 * world, 0, 1, drop_last)
        ranks = [_batches(shard_dir, 5, r, world, drop_last) for r in range(world)]
        assert len(one) >= 3 and all(len(r) == len(one) for r in ranks)
        for k, whole in enumerate(one):
            assert {r[k].index for r in ranks} == {whole.index}
            for got, want in zip(zip(*(_fields(r[k]) for r in ranks)), _fields(whole)):
                torch.testing.assert_close(torch.cat(got), want, rtol=0, atol=0)


# --- the maths: 2 ranks x B = 1 process x 2B -----------------------------------------------------

def _one_step(batch: Batch, idx: torch.Tensor, wrap: str | None
              ) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Loss terms and parameter gradients of one training forward/backward (QAT on), with the
    network wrapped as the loop wraps it ("global"), in plain DDP ("per_rank": BatchNorm on each
    rank's slice, what gloo runs had before) or alone (None)."""
    torch.manual_seed(0)
    model = TesseraModel(_no_dropout_preset("tiny"), with_projector=True)
    net: torch.nn.Module = loop.Pretrainer(model)
    if wrap == "global":
        net = distributed(net, torch.device("cpu"))
    elif wrap == "per_rank":
        net = torch.nn.parallel.DistributedDataParallel(net)
    net.train()
    v1, v2 = batch.view1, batch.view2
    (z1, z2, zm), _ = net([v1, v2, v1.mix(v2, ALPHA, idx)], True)
    terms = BarlowTwinsLoss()(z1, z2, zm, ALPHA, idx)
    terms.total.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    return [float(t.detach()) for t in terms], grads


def _local_idx(rank: int) -> torch.Tensor:
    """Each rank's own mix permutation (the loop's are equal on all ranks; these are not, the
    more general case)."""
    return torch.randperm(B, generator=torch.Generator().manual_seed(100 + rank))


def _same_batch_worker(rank: int, world: int, port: int, shard_dir: str, out: str) -> None:
    _join(rank, world, port)
    batch = _batches(shard_dir, B, rank, world, True)[0]
    result = {wrap: _one_step(batch, _local_idx(rank), wrap) for wrap in ("global", "per_rank")}
    torch.save(result, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_give_the_loss_and_gradients_of_one_process(shard_dir, tmp_path):
    mp.spawn(_same_batch_worker, args=(2, _free_port(), str(shard_dir), str(tmp_path)),
             nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # one process on the concatenated batch, with the global block-diagonal mix permutation
    whole = _batches(shard_dir, 2 * B, 0, 1, True)[0]
    gidx = torch.cat([_local_idx(0), _local_idx(1) + B])
    terms, grads = _one_step(whole, gidx, None)
    # gradients that are 0 in exact arithmetic (a bias before BatchNorm or a softmax) are
    # rounding noise on both sides: absolute tolerance on the scale of the largest gradient
    scale = max(float(g.abs().max()) for g in grads.values())
    for r in ranks:
        got_terms, got_grads = r["global"]
        np.testing.assert_allclose(got_terms, terms, rtol=2e-5)
        assert got_grads.keys() == grads.keys()
        for k, g in grads.items():  # DDP averaged: every rank holds the global gradient
            torch.testing.assert_close(got_grads[k], g, rtol=1e-3, atol=2e-6 * scale)
    total = torch.cat([g.flatten() for g in grads.values()])
    got = torch.cat([ranks[0]["global"][1][k].flatten() for k in grads])
    assert float((got - total).norm() / total.norm()) < 1e-5
    # per-rank BatchNorm trains something else: the comparison above can fail
    per_rank_terms = ranks[0]["per_rank"][0]
    assert abs(per_rank_terms[0] - terms[0]) > 1e-3 * abs(terms[0])


def _gbn_worker(rank: int, world: int, port: int, out: str) -> None:
    _join(rank, world, port)
    x = torch.randn(2 * 6, 5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    net = global_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm1d(5, momentum=None)).double())
    bn = net.get_submodule("0")
    assert isinstance(bn, GlobalBatchNorm1d)
    mine = x[rank * 6:(rank + 1) * 6].clone().requires_grad_(True)
    y = net(mine)
    (y * torch.arange(1.0, 16.0, dtype=torch.float64).reshape(1, 5, 3)).pow(2).sum().backward()
    torch.save({"y": y.detach(), "grad": mine.grad, "w": bn.weight.grad,
                "mean": bn.running_mean, "var": bn.running_var}, f"{out}/gbn{rank}.pt")
    dist.destroy_process_group()


def test_global_batchnorm_is_batchnorm_of_the_global_batch(tmp_path):
    """(N, C, L) input, float64, cumulative running statistics: outputs, input and weight
    gradients and running statistics of 2 ranks equal BatchNorm1d on the whole batch. The
    input gradient needs the all-reduce's backward: without it a rank would miss the other
    rank's part of d(loss)/d(mean, var)."""
    mp.spawn(_gbn_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    x = torch.randn(2 * 6, 5, 3, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64).requires_grad_(True)
    bn = torch.nn.BatchNorm1d(5, momentum=None).double()
    y = bn(x)
    # each rank's loss is its rows' share; the sum over ranks is this one
    (y * torch.arange(1.0, 16.0, dtype=torch.float64).reshape(1, 5, 3)).pow(2).sum().backward()
    w_grad = torch.zeros(5, dtype=torch.float64)
    for r in range(2):
        got = torch.load(tmp_path / f"gbn{r}.pt")
        torch.testing.assert_close(got["y"], y.detach()[r * 6:(r + 1) * 6])
        assert x.grad is not None
        torch.testing.assert_close(got["grad"], x.grad[r * 6:(r + 1) * 6])
        torch.testing.assert_close(got["mean"], bn.running_mean)
        torch.testing.assert_close(got["var"], bn.running_var)
        w_grad += got["w"]  # DDP would sum (average) these over ranks
    torch.testing.assert_close(w_grad, bn.weight.grad)


# --- torchrun and the command line ---------------------------------------------------------------

def test_torchrun_runs_tessera_pretrain_on_two_cpu_processes(shard_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tessera", "pretrain", "--shards", str(shard_dir), "-o", str(out),
           "--steps", "3", "--batch-size", str(B), "--qat-start", "2", "--log-every", "1",
           "--checkpoint-every", "2", "--device", "cpu", "--threads", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("trained 3 steps") == 1  # rank 0 reports, once
    assert sorted(p.name for p in out.glob("*.pt")) == ["checkpoint.pt"]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert {r["world_size"] for r in rows} == {"2"}
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["state"]["step"] == 3
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["world_size"] == 2 and meta["training"]["samples"] == 3 * 2 * B


# --- resuming on another number of ranks ---------------------------------------------------------

def _cfg(shard_dir, out, batch_size: int, **kw: Any) -> loop.TrainConfig:
    base: dict[str, Any] = dict(shards=str(shard_dir), out=str(out), preset="tiny", steps=6,
                                batch_size=batch_size, qat_start=100, checkpoint_every=3,
                                log_every=1, view_steps=12, seed=1, mu=0.0)
    base.update(kw)
    return loop.TrainConfig(**base)


def _recorded(calls: list[tuple[int, list[int], list[int]]]):
    """loop._train_step that also records the global batch number and samples of each step."""
    def step(net, model, batch, *args, **kwargs):
        calls.append((batch.index, batch.source.tolist(), batch.pixel.tolist()))
        return _TRAIN_STEP(net, model, batch, *args, **kwargs)
    return step


def _resume_worker(rank: int, world: int, port: int, shard_dir: str, root: str) -> None:
    """2 ranks: start run "a" (4 of 6 steps), run "c" straight (6 steps), and finish run "b"
    started by 1 process."""
    _join(rank, world, port)
    loop.get_preset = _no_dropout_preset
    for name, resume, stop in (("a", False, 4), ("c", False, None), ("b", True, None)):
        calls: list = []
        loop._train_step = _recorded(calls)
        loop.pretrain(_cfg(shard_dir, f"{root}/{name}", B), resume=resume, stop_after=stop)
        torch.save(calls, f"{root}/{name}_w2_rank{rank}.pt")
    dist.destroy_process_group()


def _global_steps(per_rank: list[list[tuple]]) -> list[tuple[int, list[int], list[int]]]:
    """The ranks' records, step by step, as one process would see them (rank order)."""
    return [(parts[0][0], sum((p[1] for p in parts), []), sum((p[2] for p in parts), []))
            for parts in zip(*per_rank)]


def _run_here(monkeypatch, cfg: loop.TrainConfig, **kw: Any) -> tuple[dict, list]:
    calls: list = []
    monkeypatch.setattr(loop, "_train_step", _recorded(calls))
    return loop.pretrain(cfg, **kw), calls


def test_resume_across_a_changed_world_size(small_shards, tmp_path, monkeypatch):
    shard_dir = small_shards
    monkeypatch.setattr(loop, "get_preset", _no_dropout_preset)
    straight, want = _run_here(monkeypatch, _cfg(shard_dir, tmp_path / "ref", 2 * B))
    # "b": 4 steps on 1 process, then 2 ranks; "a": 4 steps on 2 ranks, then 1 process. Step 4
    # is the first of epoch 1: both cross an epoch boundary and resume in mid-epoch
    _, b_first = _run_here(monkeypatch, _cfg(shard_dir, tmp_path / "b", 2 * B), stop_after=4)
    mp.spawn(_resume_worker, args=(2, _free_port(), str(shard_dir), str(tmp_path)), nprocs=2,
             join=True)
    # the global batch may not change: refused, saying which --batch-size fits
    with pytest.raises(TrainError, match=r"global batch of 8 x 1 process\(es\) = 8: the run "
                       r"was trained with 8 x 2 = 16; .* resume with --batch-size 16"):
        loop.pretrain(_cfg(shard_dir, tmp_path / "a", B), resume=True)
    done, a_last = _run_here(monkeypatch, _cfg(shard_dir, tmp_path / "a", 2 * B), resume=True)
    assert done["steps"] == 6 and done["epoch"] == straight["epoch"] == 2

    def load(name: str) -> list:
        return _global_steps([torch.load(tmp_path / f"{name}_w2_rank{r}.pt") for r in range(2)])
    # the same global batches, step by step, as the straight run: positions carried over
    assert load("a") + a_last == want
    assert b_first + load("b") == want
    assert [w[0] for w in want] == [0, 1, 2, 0, 1, 2]  # global batch numbers: 2 epochs
    assert load("c") == want  # 2 ranks straight: the same global batches as 1 process

    def losses(name: str, worlds: list[str]) -> list[float]:
        rows = list(csv.DictReader(open(tmp_path / name / "metrics.csv")))
        assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
        assert [r["world_size"] for r in rows] == worlds
        assert [r["lr"] for r in rows] == lr  # the schedule continues
        return [float(r["loss"]) for r in rows]
    ref_rows = list(csv.DictReader(open(tmp_path / "ref" / "metrics.csv")))
    lr = [r["lr"] for r in ref_rows]
    ref, c = [float(r["loss"]) for r in ref_rows], losses("c", ["2"] * 6)
    a, b = losses("a", ["2"] * 4 + ["1"] * 2), losses("b", ["1"] * 4 + ["2"] * 2)
    # The same training (no dropout, and mu 0: the mix partners are per rank): the same loss.
    # Within rounding at first; Adam's g / sqrt(v) then turns the rounding of near-0 gradients
    # into whole lr-sized steps (measured: 1e-7 at steps 1-2, 7e-4 by step 5), so a resumed run
    # is compared with the run it continues, on the same number of ranks before the switch
    np.testing.assert_allclose(c[:2], ref[:2], rtol=1e-5)
    np.testing.assert_allclose(c, ref, rtol=5e-3)
    assert a[:4] == c[:4] and b[:4] == ref[:4]  # the same processes: bit for bit
    np.testing.assert_allclose(a[4:], c[4:], rtol=1e-5)  # 2 ranks -> 1 process
    np.testing.assert_allclose(b[4:], ref[4:], rtol=1e-5)  # 1 process -> 2 ranks


def test_resume_refusal_names_a_batch_size_that_fits(tmp_path):
    saved = dataclasses.asdict(_cfg("s", tmp_path, 16))
    loop._check_same_run(saved, _cfg("s", tmp_path, 4), tmp_path, 1, 4)  # 16 x 1 = 4 x 4
    with pytest.raises(TrainError, match="with 3 process.es. resume with a number of processes "
                       "that divides 16"):
        loop._check_same_run(saved, _cfg("s", tmp_path, 5), tmp_path, 1, 3)
    with pytest.raises(TrainError, match="resume with --batch-size 8"):
        loop._check_same_run(saved, _cfg("s", tmp_path, 16), tmp_path, 1, 2)
    with pytest.raises(TrainError, match=r"lr: 0.002 -> 0.1"):
        loop._check_same_run(saved, _cfg("s", tmp_path, 8, lr=0.1), tmp_path, 1, 2)

