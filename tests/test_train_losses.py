"""Barlow Twins and mixed Barlow Twins: against a from-the-formula reference, at the optimum,
gradients, and under 2-process DDP (gloo) against the single-process loss on the whole batch."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from tessera.train.losses import (BarlowTwinsLoss, barlow_twins_loss, cross_correlation,
                                  mixed_barlow_twins_loss)


def ref_standardise(z: np.ndarray) -> np.ndarray:
    b, d = z.shape
    out = np.empty_like(z)
    for j in range(d):
        m = sum(z[i, j] for i in range(b)) / b
        v = sum((z[i, j] - m) ** 2 for i in range(b)) / b
        for i in range(b):
            out[i, j] = (z[i, j] - m) / np.sqrt(v + 1e-5)
    return out


def ref_cc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    an, bn = ref_standardise(a), ref_standardise(b)
    n, d = a.shape
    return np.array([[sum(an[k, i] * bn[k, j] for k in range(n)) / n for j in range(d)]
                     for i in range(d)])


def ref_bt(z1, z2, lambd):
    c = ref_cc(z1, z2)
    d = c.shape[0]
    return (sum((c[i, i] - 1) ** 2 for i in range(d))
            + lambd * sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j))


def ref_mix(z1, z2, zm, alpha, idx, lambd, mu):
    z2p = z2[idx]
    t1 = alpha * ref_cc(z1, z1) + (1 - alpha) * ref_cc(z2p, z1)
    t2 = alpha * ref_cc(z1, z2p) + (1 - alpha) * ref_cc(z2p, z2p)
    return mu * lambd * (((ref_cc(zm, z1) - t1) ** 2).sum() + ((ref_cc(zm, z2p) - t2) ** 2).sum())


@pytest.mark.parametrize("lambd", [5e-3, 0.1, 1.0])
def test_against_reference(lambd):
    rng = np.random.default_rng(int(lambd * 1000))
    z1, z2, zm = (rng.normal(size=(12, 5)) * [1, 2, 3, 4, 5] + 1 for _ in range(3))
    idx = rng.permutation(12)
    t = [torch.tensor(z, dtype=torch.float64) for z in (z1, z2, zm)]
    assert float(barlow_twins_loss(t[0], t[1], lambd)) == pytest.approx(ref_bt(z1, z2, lambd),
                                                                         rel=1e-9)
    got = mixed_barlow_twins_loss(t[0], t[1], t[2], 0.3, torch.from_numpy(idx), lambd, mu=2.0)
    assert float(got) == pytest.approx(ref_mix(z1, z2, zm, 0.3, idx, lambd, 2.0), rel=1e-9)
    terms = BarlowTwinsLoss(lambd, 2.0)(t[0], t[1], t[2], 0.3, torch.from_numpy(idx))
    assert float(terms.total) == pytest.approx(float(terms.bt) + float(terms.mix))


def test_identity_cross_correlation_gives_zero():
    # columns of a Hadamard matrix minus its constant column: mean 0, variance 1, orthogonal
    h = torch.tensor([[1.0]])
    for _ in range(4):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)  # 16 x 16
    z = h[:, 1:9] * 3.0 + 7.0  # scale and shift do not matter after standardisation
    c = cross_correlation(z, z)
    assert torch.allclose(c, torch.eye(8), atol=1e-5)
    assert float(barlow_twins_loss(z, z)) == pytest.approx(0.0, abs=1e-8)
    # and the mixed term vanishes for z_m = the matching mix of identical views (alpha = 1)
    assert float(mixed_barlow_twins_loss(z, z, z, 1.0, torch.arange(16))) == pytest.approx(
        0.0, abs=1e-8)


def test_gradients_finite_even_with_a_constant_feature():
    z1 = torch.randn(32, 6, requires_grad=True)
    z2 = torch.randn(32, 6)
    z2[:, 0] = 4.0  # constant along the batch: variance 0
    z2.requires_grad_(True)
    zm = torch.randn(32, 6, requires_grad=True)
    terms = BarlowTwinsLoss()(z1, z2, zm, 0.7, torch.randperm(32))
    terms.total.backward()
    for t in (z1, z2, zm):
        assert torch.isfinite(t.grad).all()
    assert float(BarlowTwinsLoss()(z1, z2).mix) == 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    idx = [torch.randperm(8, generator=g) for _ in range(2)]  # one local permutation per rank
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6))
    return x1, x2, idx, model


def _loss(model, x1, x2, idx, alpha=0.35):
    xm = alpha * x1 + (1 - alpha) * x2[idx]
    return BarlowTwinsLoss(lambd=0.05)(model(x1), model(x2), model(xm), alpha, idx).total


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    x1, x2, idx, model = _data()
    ddp = nn.parallel.DistributedDataParallel(model)
    sl = slice(8 * rank, 8 * rank + 8)
    loss = _loss(ddp, x1[sl], x2[sl], idx[rank])
    loss.backward()
    torch.save({"loss": loss.detach(), "grads": [p.grad for p in model.parameters()]},
               f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_equals_single_process_on_concatenated_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    x1, x2, idx, model = _data()
    global_idx = torch.cat([idx[0], idx[1] + 8])  # block-diagonal permutation
    ref = _loss(model, x1, x2, global_idx)
    ref.backward()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(got["loss"], ref.detach(), rtol=1e-5)
        for g, p in zip(got["grads"], model.parameters()):
            assert torch.allclose(g, p.grad, rtol=1e-4, atol=1e-6)
