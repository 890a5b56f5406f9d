"""Barlow Twins and mixed Barlow Twins: against a from-the-formula reference (python loops,
float64), at the optimum, float32 / autocast sanity, gradients, and under 2-process DDP (gloo)
against the single-process loss and gradients on the concatenated batch."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from tessera.train.losses import (BarlowTwinsLoss, barlow_twins_loss, cross_correlation,
                                  mix_inputs, mixed_barlow_twins_loss)

# --- independent reference, written from SPEC section 4 -------------------------------------


def ref_standardise(z: np.ndarray) -> np.ndarray:
    b, d = z.shape
    out = np.empty_like(z)
    for j in range(d):
        m = sum(z[i, j] for i in range(b)) / b
        v = sum((z[i, j] - m) ** 2 for i in range(b)) / b  # biased, as BatchNorm1d
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


def ref_frob2(m):
    return sum(m[i, j] ** 2 for i in range(m.shape[0]) for j in range(m.shape[1]))


def ref_mix(z1, z2, zm, alpha, idx, lambd, mu):
    z2p = z2[idx]
    t1 = alpha * ref_cc(z1, z1) + (1 - alpha) * ref_cc(z2p, z1)
    t2 = alpha * ref_cc(z1, z2p) + (1 - alpha) * ref_cc(z2p, z2p)
    return mu * lambd * (ref_frob2(ref_cc(zm, z1) - t1) + ref_frob2(ref_cc(zm, z2p) - t2))


def _random_views(seed, b=12, d=5):
    rng = np.random.default_rng(seed)
    scale = np.arange(1, d + 1)
    z1 = rng.normal(size=(b, d)) * scale + 1
    z2 = 0.6 * z1 + 0.4 * rng.normal(size=(b, d)) * scale  # correlated, like two views
    zm = rng.normal(size=(b, d)) * scale - 2
    return z1, z2, zm, rng.permutation(b)


@pytest.mark.parametrize("lambd", [5e-3, 0.1, 1.0])
def test_against_reference(lambd):
    z1, z2, zm, idx = _random_views(int(lambd * 1000))
    t1, t2, tm = (torch.tensor(z, dtype=torch.float64) for z in (z1, z2, zm))
    ti = torch.from_numpy(idx)
    np.testing.assert_allclose(cross_correlation(t1, t2).numpy(), ref_cc(z1, z2), rtol=1e-10,
                               atol=1e-12)
    assert float(barlow_twins_loss(t1, t2, lambd)) == pytest.approx(ref_bt(z1, z2, lambd),
                                                                     rel=1e-10)
    for alpha, mu in [(0.3, 2.0), (0.9, 1.0)]:
        got = mixed_barlow_twins_loss(t1, t2, tm, alpha, ti, lambd, mu=mu)
        assert float(got) == pytest.approx(ref_mix(z1, z2, zm, alpha, idx, lambd, mu), rel=1e-10)
    terms = BarlowTwinsLoss(lambd, 2.0)(t1, t2, tm, 0.3, ti)
    assert float(terms.bt) == pytest.approx(ref_bt(z1, z2, lambd), rel=1e-10)
    assert float(terms.mix) == pytest.approx(ref_mix(z1, z2, zm, 0.3, idx, lambd, 2.0), rel=1e-10)
    assert float(terms.total) == pytest.approx(float(terms.bt) + float(terms.mix), rel=1e-12)
    assert float(BarlowTwinsLoss(lambd)(t1, t2).mix) == 0.0


def test_identity_cross_correlation_gives_zero():
    # columns of a Hadamard matrix minus its constant column: mean 0, variance 1, orthogonal
    h = torch.tensor([[1.0]])
    for _ in range(4):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)  # 16 x 16
    z = h[:, 1:9] * 3.0 + 7.0  # scale and shift do not matter after standardisation
    c = cross_correlation(z, z)
    assert torch.allclose(c, torch.eye(8), atol=1e-5)  # 1 / sqrt(1 + eps / 9) on the diagonal
    assert float(barlow_twins_loss(z, z)) == pytest.approx(0.0, abs=1e-8)
    # the mixed term vanishes when z_m is the matching mix of the views (here alpha = 1)
    assert float(mixed_barlow_twins_loss(z, z, z, 1.0, torch.arange(16))) == pytest.approx(
        0.0, abs=1e-8)
    # and (alpha = 0) when z_m is the output for x_m = x2[idx], with any views
    z1, z2 = torch.randn(16, 6), torch.randn(16, 6) * 3
    idx = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    assert float(mixed_barlow_twins_loss(z1, z2, z2[idx], 0.0, idx)) == pytest.approx(0.0,
                                                                                     abs=1e-8)


def test_mix_inputs():
    x1, x2 = torch.randn(6, 3, 4), torch.randn(6, 3, 4)
    idx = torch.randperm(6)
    xm = mix_inputs(x1, x2, 0.25, idx)
    for i in range(6):
        assert torch.allclose(xm[i], 0.25 * x1[i] + 0.75 * x2[idx[i]])
    with pytest.raises(ValueError):
        mix_inputs(x1, x2, 0.25, idx[:5])
    with pytest.raises(ValueError):
        BarlowTwinsLoss()(x1[:, 0], x2[:, 0], xm[:, 0], 0.25, idx[:5])
    with pytest.raises(ValueError):
        BarlowTwinsLoss()(x1[:, 0], x2[:, 0], xm[:, 0])


def test_float32_and_autocast_match_float64():
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(256, 64, generator=g, dtype=torch.float64) * 50 + 100
    z2 = z1 + torch.randn(256, 64, generator=g, dtype=torch.float64) * 20
    zm = 0.4 * z1 + 0.6 * z2[torch.randperm(256, generator=g)] + torch.randn(256, 64, generator=g)
    idx = torch.randperm(256, generator=g)
    loss = BarlowTwinsLoss()
    ref = loss(z1, z2, zm, 0.4, idx)
    got = loss(z1.float(), z2.float(), zm.float(), 0.4, idx)
    for r, t in zip(ref, got):
        assert t.dtype == torch.float32
        assert float(t) == pytest.approx(float(r), rel=1e-4)
    # bfloat16 outputs under autocast: computed in float32 on the (rounded) values
    b1, b2, bm = (z.to(torch.bfloat16) for z in (z1, z2, zm))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = loss(b1, b2, bm, 0.4, idx)
    exact = loss(b1.double(), b2.double(), bm.double(), 0.4, idx)
    for r, t in zip(exact, amp):
        assert t.dtype == torch.float32
        assert float(t) == pytest.approx(float(r), rel=1e-4)


def test_gradients_finite_even_with_a_constant_feature():
    z1 = torch.randn(32, 6, requires_grad=True)
    z2 = torch.randn(32, 6)
    z2[:, 0] = 4.0  # constant along the batch: variance 0
    z2.requires_grad_(True)
    zm = torch.randn(32, 6, requires_grad=True)
    terms = BarlowTwinsLoss()(z1, z2, zm, 0.7, torch.randperm(32))
    assert torch.isfinite(terms.total)
    terms.total.backward()
    for t in (z1, z2, zm):
        assert torch.isfinite(t.grad).all()
    assert float(BarlowTwinsLoss()(z1, z2).mix) == 0.0


# --- DDP: 2 processes on CPU (gloo), each with half of the batch ------------------------------

B_LOCAL, ALPHA, LAMBD = 8, 0.35, 0.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2 * B_LOCAL, 5, generator=g, dtype=dtype)
    x2 = x1 + 0.5 * torch.randn(2 * B_LOCAL, 5, generator=g, dtype=dtype)
    idx = [torch.randperm(B_LOCAL, generator=g) for _ in range(2)]  # one local permutation/rank
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6)).to(dtype)
    return x1, x2, idx, model


def _losses(model, x1, x2, idx):
    z1, z2, zm = model(x1), model(x2), model(mix_inputs(x1, x2, ALPHA, idx))
    terms = BarlowTwinsLoss(lambd=LAMBD)(z1, z2, zm, ALPHA, idx)
    with torch.no_grad():  # the functional API and the BT-only path, on the same batch
        extra = torch.stack([barlow_twins_loss(z1, z2, LAMBD),
                             mixed_barlow_twins_loss(z1, z2, zm, ALPHA, idx, LAMBD),
                             BarlowTwinsLoss(LAMBD)(z1, z2).total,
                             cross_correlation(z1, zm).sum()])
    return terms, extra


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        res = {}
        for dtype in (torch.float32, torch.float64):
            x1, x2, idx, model = _data(dtype)
            ddp = nn.parallel.DistributedDataParallel(model)
            sl = slice(B_LOCAL * rank, B_LOCAL * (rank + 1))
            terms, extra = _losses(ddp, x1[sl], x2[sl], idx[rank])
            terms.total.backward()
            res[str(dtype)] = {"terms": torch.stack(list(terms)).detach(), "extra": extra,
                               "grads": [p.grad.clone() for p in model.parameters()]}
        try:  # unequal local batch sizes are refused on every rank (no hang)
            barlow_twins_loss(torch.randn(3 + rank, 4), torch.randn(3 + rank, 4))
            res["unequal"] = "accepted"
        except ValueError as e:
            res["unequal"] = str(e)
        torch.save(res, f"{out}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_equals_single_process_on_concatenated_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for dtype, rtol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        x1, x2, idx, model = _data(dtype)
        global_idx = torch.cat([idx[0], idx[1] + B_LOCAL])  # the block-diagonal permutation
        terms, extra = _losses(model, x1, x2, global_idx)
        terms.total.backward()
        assert float(terms.mix.detach()) > 1e-3 * float(terms.bt.detach())  # the mix term is really exercised
        for res in got:  # every rank holds the global loss
            r = res[str(dtype)]
            torch.testing.assert_close(r["terms"], torch.stack(list(terms)).detach(), rtol=rtol,
                                       atol=0)
            torch.testing.assert_close(r["extra"], extra, rtol=rtol, atol=rtol)
            # DDP-averaged gradients = single-process ones (the last bias, to which the loss is
            # invariant, has a gradient of rounding size only: compare on the overall scale)
            scale = max(float(p.grad.abs().max()) for p in model.parameters())
            for g, p in zip(r["grads"], model.parameters()):
                torch.testing.assert_close(g, p.grad, rtol=rtol * 10, atol=rtol * scale)
    for res in got:
        assert "different batch sizes [3, 4]" in res["unequal"]
