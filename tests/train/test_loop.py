"""The pretraining loop: schedule, decay groups, QAT, exact resume, exports, DDP on CPU."""

from __future__ import annotations

import csv
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from fixtures import make_tile_arrays
from tessera.dpixel import write_tile
from tessera.model import TesseraModel, get_preset, load_checkpoint
from tessera.quantize import dequantize, quantize
from tessera.train.qat import fake_quantize_tensor
from tessera.train.loop import TrainConfig, lr_lambda, param_groups, pretrain, rankme
from tessera.train.shards import TileSource, write_shards


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    tiles = [write_tile(root / f"t{k}", **make_tile_arrays(h=8, w=8, seed=10 + k))
             for k in range(3)]
    out = root / "shards"
    write_shards([TileSource(t) for t in tiles], out, shard_size=64, seed=0)
    return out


def _cfg(shard_dir, out, **kw):
    base = dict(shards=str(shard_dir), out=str(out), preset="tiny", steps=6, batch_size=16,
                qat_start=3, checkpoint_every=3, log_every=2, view_steps=12, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_schedule_warmup_then_cosine():
    f = lr_lambda(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0, abs=1e-12)
    assert all(f(i) >= f(i + 1) for i in range(10, 100))


def test_weight_decay_on_weights_only():
    model = TesseraModel(get_preset("tiny"), with_projector=True)
    decay, no_decay = param_groups(model, 1e-6)
    assert decay["weight_decay"] == 1e-6 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("weight" in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {
        n for n, _ in model.named_parameters() if n.endswith("bias")}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_fake_quantisation_forward_is_int8_round_trip_and_gradient_passes():
    r = torch.randn(32, 128, requires_grad=True)
    fq = fake_quantize_tensor(r)
    scale = r.detach().abs().max() / 127
    expect = torch.clamp(torch.round(r.detach() / scale), -128, 127) * scale
    assert torch.allclose(fq, expect)
    assert len(torch.unique(torch.round(fq.detach() / scale))) <= 256
    (fq * torch.arange(128.0)).sum().backward()
    assert torch.equal(r.grad, torch.arange(128.0).expand(32, 128))  # straight through
    # per-tensor: the same grid as the product's per-pixel int8 for the max-|r| pixel
    q, s = quantize(r.detach().numpy())
    i = int(r.detach().abs().max(dim=1).values.argmax())
    assert np.allclose(dequantize(q, s)[i], fq.detach().numpy()[i], atol=1e-6)


def test_rankme_counts_directions():
    g = torch.Generator().manual_seed(0)
    full = torch.randn(512, 16, generator=g)
    low = torch.randn(512, 2, generator=g) @ torch.randn(2, 16, generator=g)
    assert rankme(full) > 12 and rankme(low) < 2.5


def test_training_run_writes_metrics_and_exports(shard_dir, tmp_path):
    out = tmp_path / "run"
    result = pretrain(_cfg(shard_dir, out))
    assert result["steps"] == 6 and math.isfinite(result["last"]["loss"])
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert [r["qat"] for r in rows] == ["0", "1", "1"]  # fake-quantised from step 3
    for key in ("loss", "bt", "mix", "lr", "rankme_z", "rankme_r", "samples_per_s",
                "sources_per_batch"):
        assert all(math.isfinite(float(r[key])) for r in rows), key
    assert float(rows[-1]["sources_per_batch"]) > 1.5
    assert any((out / "tensorboard").iterdir())
    model, meta = load_checkpoint(out / "model.safetensors")
    assert meta["preset"] == "tiny" and meta["training"]["steps"] == 6
    assert model.projector is None  # the export is the encoder only
    # the export carries the trained weights
    trained = result["model"].state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, trained[k])


def test_resume_is_exact(shard_dir, tmp_path):
    straight = pretrain(_cfg(shard_dir, tmp_path / "a"))["model"].state_dict()
    first = pretrain(_cfg(shard_dir, tmp_path / "b"), stop_after=3)
    assert first["steps"] == 3
    resumed = pretrain(_cfg(shard_dir, tmp_path / "b"), resume=True)["model"].state_dict()
    assert resumed.keys() == straight.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]


def test_resume_and_restart_refusals(shard_dir, tmp_path):
    pretrain(_cfg(shard_dir, tmp_path / "r", steps=2), stop_after=1)
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(_cfg(shard_dir, tmp_path / "r", steps=2))
    with pytest.raises(ValueError, match="lr: 0.002 -> 0.1"):
        pretrain(_cfg(shard_dir, tmp_path / "r", steps=2, lr=0.1), resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        pretrain(_cfg(shard_dir, tmp_path / "none"), resume=True)
    with pytest.raises(ValueError, match="lower --batch-size"):
        pretrain(_cfg(shard_dir, tmp_path / "big", batch_size=100_000))


def test_epochs_cover_the_shards(shard_dir, tmp_path):
    result = pretrain(_cfg(shard_dir, tmp_path / "e", steps=None, epochs=2.0, batch_size=32))
    from tessera.train.shards import ShardStream
    per_epoch = ShardStream(shard_dir, 32).batches_per_epoch()
    assert result["steps"] == 2 * per_epoch and result["epoch"] == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, shard_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = TrainConfig(shards=shard_dir, out=out, preset="tiny", steps=3, batch_size=8,
                      qat_start=2, checkpoint_every=3, log_every=1, view_steps=8, seed=0)
    result = pretrain(cfg)
    torch.save(result["model"].state_dict(), f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes(shard_dir, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(shard_dir), str(out)), nprocs=2, join=True)
    a, b = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert any("running_var" in k for k in a)
    for k in a:  # DDP keeps the replicas identical, BatchNorm statistics included (global BN)
        assert torch.equal(a[k], b[k]), k
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert {r["world_size"] for r in rows} == {"2"}
    model, meta = load_checkpoint(out / "model.safetensors")
    assert meta["training"]["world_size"] == 2 and meta["training"]["samples"] == 3 * 16


def test_activation_checkpointing_gives_the_same_run(shard_dir, tmp_path):
    """Recomputing the encoder in backward (dropout RNG replayed) changes memory, not maths:
    the same weights after a few steps, and a run may switch it on at resume."""
    plain = pretrain(_cfg(shard_dir, tmp_path / "p"))["model"].state_dict()
    ck = pretrain(_cfg(shard_dir, tmp_path / "c", activation_checkpointing=True))
    for k, v in ck["model"].state_dict().items():
        torch.testing.assert_close(v, plain[k], rtol=1e-5, atol=1e-6, msg=k)
    pretrain(_cfg(shard_dir, tmp_path / "s"), stop_after=3)
    resumed = pretrain(_cfg(shard_dir, tmp_path / "s", activation_checkpointing=True), resume=True)
    assert resumed["steps"] == ck["steps"]
