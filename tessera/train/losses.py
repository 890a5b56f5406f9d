"""Barlow Twins and the mixed Barlow Twins regulariser (SPEC section 4), DDP-aware.

L_BT = sum_i (C_ii - 1)^2 + lambda sum_{i != j} C_ij^2 with C the cross-correlation of the two
projector outputs, each standardised along the batch (biased variance, eps 1e-5 inside the
square root, as BatchNorm1d(affine=False) in the Barlow Twins reference code).
L_mix = mu lambda (||CC(z_m, z1) - [a CC(z1, z1) + (1 - a) CC(z2p, z1)]||_F^2
                  + ||CC(z_m, z2p) - [a CC(z1, z2p) + (1 - a) CC(z2p, z2p)]||_F^2), z2p = z2[idx].

Distributed: when a process group with more than one rank is up, z is gathered from all ranks
with the autograd-aware `torch.distributed.nn.functional.all_gather` and the loss is computed on
the global batch, so it equals the single-process loss on the concatenated batch. Every rank
computes that same loss; the gather's backward sums the ranks' gradients, so a rank's local
gradient is world_size x dL/dz_local, and DDP's averaging of parameter gradients over ranks
then gives exactly the single-process gradient. The mix permutation `idx` is LOCAL (each rank
permutes within its own batch, as inputs cannot be mixed across ranks); globally it is the
block-diagonal permutation cat(idx_r + r * B).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

BN_EPS = 1e-5


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather(z: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, in rank order, with gradients flowing back to each rank's own rows."""
    if _world() == 1:
        return z
    from torch.distributed.nn.functional import all_gather
    sizes = [torch.zeros(1, dtype=torch.long, device=z.device) for _ in range(_world())]
    dist.all_gather(sizes, torch.tensor([len(z)], device=z.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(f"losses: ranks hold different batch sizes {[int(s) for s in sizes]}; "
                         "every rank must train on the same number of samples")
    return torch.cat(all_gather(z), dim=0)


def global_index(idx: torch.Tensor) -> torch.Tensor:
    """The block-diagonal global permutation of local permutations (one per rank)."""
    world = _world()
    if world == 1:
        return idx
    parts = [torch.empty_like(idx) for _ in range(world)]
    dist.all_gather(parts, idx.contiguous())
    return torch.cat([p + r * len(idx) for r, p in enumerate(parts)])


def standardise(z: torch.Tensor) -> torch.Tensor:
    """Per feature along the batch: mean 0, (biased) variance 1; half precision is computed in
    float32."""
    z = z if z.dtype == torch.float64 else z.float()
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + BN_EPS)


def _cc(an: torch.Tensor, bn: torch.Tensor) -> torch.Tensor:
    return an.T @ bn / an.shape[0]


def cross_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(D, D) cross-correlation of two (B, D) batches standardised along the (global) batch."""
    return _cc(standardise(gather(a)), standardise(gather(b)))


def _bt(c: torch.Tensor, lambd: float) -> torch.Tensor:
    diag = torch.diagonal(c)
    on = (diag - 1).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + lambd * off


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3) -> torch.Tensor:
    return _bt(cross_correlation(z1, z2), lambd)


def mixed_barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, zm: torch.Tensor, alpha: float,
                            idx: torch.Tensor, lambd: float = 5e-3, mu: float = 1.0
                            ) -> torch.Tensor:
    """The L_mix term; `idx` is the local permutation used to build x_m from view 2."""
    g = global_index(idx.to(z1.device))
    n1, n2, nm = (standardise(gather(z)) for z in (z1, z2, zm))
    n2p = n2[g]
    target1 = alpha * _cc(n1, n1) + (1 - alpha) * _cc(n2p, n1)
    target2 = alpha * _cc(n1, n2p) + (1 - alpha) * _cc(n2p, n2p)
    return mu * lambd * ((_cc(nm, n1) - target1).pow(2).sum()
                         + (_cc(nm, n2p) - target2).pow(2).sum())


class LossTerms(NamedTuple):
    total: torch.Tensor
    bt: torch.Tensor
    mix: torch.Tensor


class BarlowTwinsLoss(nn.Module):
    """L_BT + L_mix (the mix term is 0 when no mixed view is given)."""

    def __init__(self, lambd: float = 5e-3, mu: float = 1.0) -> None:
        super().__init__()
        self.lambd, self.mu = lambd, mu

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, zm: torch.Tensor | None = None,
                alpha: float | None = None, idx: torch.Tensor | None = None) -> LossTerms:
        bt = barlow_twins_loss(z1, z2, self.lambd)
        if zm is None:
            mix = torch.zeros((), device=bt.device)
        else:
            if alpha is None or idx is None:
                raise ValueError("the mixed term needs alpha and idx")
            mix = mixed_barlow_twins_loss(z1, z2, zm, alpha, idx, self.lambd, self.mu)
        return LossTerms(total=bt + mix, bt=bt, mix=mix)
