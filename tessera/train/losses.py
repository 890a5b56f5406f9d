"""Barlow Twins and the mixed Barlow Twins regulariser (SPEC section 4), DDP-aware.

L_BT = sum_i (C_ii - 1)^2 + lambda sum_{i != j} C_ij^2, where C = z1n^T z2n / B is the
cross-correlation of the two projector outputs, each standardised per feature along the batch
with the BIASED variance and eps 1e-5 inside the square root, exactly as BatchNorm1d(affine=False)
in training mode does in the Barlow Twins reference code. A feature that is constant along the
batch standardises to 0 (finite values and gradients), so its diagonal term costs 1.

Mixed Barlow Twins (Bandara et al.), with z2p = z2[idx] and CC the cross-correlation above:
  L_mix = mu lambda (||CC(z_m, z1) - [a CC(z1, z1) + (1 - a) CC(z2p, z1)]||_F^2
                   + ||CC(z_m, z2p) - [a CC(z1, z2p) + (1 - a) CC(z2p, z2p)]||_F^2).
CC is linear in its first argument once standardised, so with r = z_mn - a z1n - (1 - a) z2pn the
two differences are r^T z1n / B and r^T z2pn / B: two (D, D) products instead of six, the same
value (the tests check it against the literal formula).

Precision: the loss is always computed in float32 (float64 inputs stay float64), with autocast
switched off inside, since bfloat16 sums of B products lose the 1e-3-level off-diagonal terms.

Distributed: when a process group with more than one rank is up, z1, z2 and z_m are gathered from
all ranks (one collective, in rank order) by an autograd-aware all-gather and the loss is computed
on the global batch, so its value equals the single-process loss on the concatenated batch. Every
rank computes that same loss; the gather's backward reduce-scatters (sums) the ranks' gradients,
so a rank's local gradient is world_size x dL/dz_local, and DDP's averaging of parameter gradients
over ranks then gives exactly the single-process gradient (no rescaling needed). All ranks must
hold the same local batch size B (checked). The mix permutation `idx` is LOCAL: inputs cannot be
mixed across ranks, so each rank builds x_m = a x1 + (1 - a) x2[idx] within its own batch
(`mix_inputs`); globally that is the block-diagonal permutation cat_r(idx_r + r B), which the
loss builds by gathering every rank's idx. The single-process reference on the concatenated batch
with that global index gives the same loss and gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

BN_EPS = 1e-5

# torch >= 2.13 renames the single-tensor collectives; older releases only have the old names
# (gloo has both, as all-gather / all-reduce based fallbacks, since torch 2.2).
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def world_size() -> int:
    """Ranks in the default process group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherRows(torch.autograd.Function):
    """(B, ...) per rank -> (world B, ...) in rank order; backward sums the gradients of all ranks
    for this rank's rows (reduce-scatter), so gradients flow back to every rank's own rows."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        z = z.contiguous()
        out = z.new_empty((world_size() * z.shape[0], *z.shape[1:]))
        _all_gather_single(out, z)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        out = grad.new_empty((grad.shape[0] // world_size(), *grad.shape[1:]))
        _reduce_scatter_single(out, grad, op=dist.ReduceOp.SUM)
        return out


def _check_equal_batches(b: int, device: torch.device) -> None:
    sizes = torch.zeros(world_size(), dtype=torch.long, device=device)
    _all_gather_single(sizes, torch.tensor([b], dtype=torch.long, device=device))
    if len(set(sizes.tolist())) != 1:
        raise ValueError(f"losses: ranks hold different batch sizes {sizes.tolist()}; every rank "
                         "must train on the same number of samples (drop the last partial batch)")


def gather(*zs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's rows of each (B, D_k) tensor, concatenated in rank order, gradients flowing
    back to each rank's own rows. The tensors travel in one collective; identity when not
    distributed."""
    if world_size() == 1:
        return zs
    b = zs[0].shape[0]
    if any(z.shape[0] != b for z in zs):
        raise ValueError(f"losses: batch sizes differ: {[z.shape[0] for z in zs]}")
    _check_equal_batches(b, zs[0].device)
    widths = [z.shape[1] for z in zs]
    dtype = torch.float64 if any(z.dtype == torch.float64 for z in zs) else torch.float32
    g = _GatherRows.apply(torch.cat([z.to(dtype) for z in zs], dim=1))
    return tuple(g.split(widths, dim=1))


def global_index(idx: torch.Tensor) -> torch.Tensor:
    """The global block-diagonal permutation cat_r(idx_r + r B) of the ranks' local permutations
    (identity map when not distributed)."""
    world = world_size()
    if world == 1:
        return idx
    idx = idx.to(torch.long).contiguous()
    parts = idx.new_empty(world * len(idx))
    _all_gather_single(parts, idx)
    return parts + torch.arange(world, device=idx.device).repeat_interleave(len(idx)) * len(idx)


def mix_inputs(x1: torch.Tensor, x2: torch.Tensor, alpha: float, idx: torch.Tensor
               ) -> torch.Tensor:
    """x_m = alpha x1 + (1 - alpha) x2[idx]: the mixed view fed to the network. Under DDP use
    the LOCAL batch and a local permutation (rows of x2 on other ranks are out of reach)."""
    if len(idx) != len(x1) or len(x1) != len(x2):
        raise ValueError(f"mix_inputs: x1, x2, idx sizes differ ({len(x1)}, {len(x2)}, "
                         f"{len(idx)})")
    return alpha * x1 + (1.0 - alpha) * x2[idx]


def _float(z: torch.Tensor) -> torch.Tensor:
    return z if z.dtype == torch.float64 else z.float()


def standardise(z: torch.Tensor) -> torch.Tensor:
    """Per feature along the batch: mean 0, biased variance 1 (eps 1e-5 as BatchNorm1d), in
    float32 (float64 stays float64). Statistics are of this tensor only: gather first."""
    z = _float(z)
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + BN_EPS)


def _no_autocast(z: torch.Tensor) -> torch.autocast:
    return torch.autocast(device_type=z.device.type, enabled=False)


def _cc(an: torch.Tensor, bn: torch.Tensor) -> torch.Tensor:
    return an.T @ bn / an.shape[0]


def _bt(c: torch.Tensor, lambd: float) -> torch.Tensor:
    diag = torch.diagonal(c)
    on = (diag - 1).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + lambd * off


def _check_idx(idx: torch.Tensor, z: torch.Tensor) -> None:
    if idx.shape != (len(z),):
        raise ValueError(f"losses: idx of shape {tuple(idx.shape)} for a local batch of {len(z)}")


def _mix(n1: torch.Tensor, n2: torch.Tensor, nm: torch.Tensor, alpha: float, gidx: torch.Tensor,
         lambd: float, mu: float) -> torch.Tensor:
    n2p = n2[gidx.to(n2.device)]
    r = nm - alpha * n1 - (1.0 - alpha) * n2p
    return mu * lambd * (_cc(r, n1).pow(2).sum() + _cc(r, n2p).pow(2).sum())


def cross_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(D, D) cross-correlation a_n^T b_n / B of two (B, D) batches, each standardised along the
    (global, when distributed) batch; float32."""
    with _no_autocast(a):
        ga, gb = gather(a, b)
        return _cc(standardise(ga), standardise(gb))


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3) -> torch.Tensor:
    """L_BT: pulls the diagonal of the cross-correlation to 1 (invariance between the views) and
    its off-diagonal, weighted by lambd, to 0 (decorrelated features: no collapse)."""
    with _no_autocast(z1):
        g1, g2 = gather(z1, z2)
        return _bt(_cc(standardise(g1), standardise(g2)), lambd)


def mixed_barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, zm: torch.Tensor, alpha: float,
                            idx: torch.Tensor, lambd: float = 5e-3, mu: float = 1.0
                            ) -> torch.Tensor:
    """L_mix only: the cross-correlations of the mixed view's output z_m must be the same mix of
    the views' ones, which regularises Barlow Twins against overfitting. `idx` is the LOCAL
    permutation used to build x_m = alpha x1 + (1 - alpha) x2[idx] (see `mix_inputs`)."""
    _check_idx(idx, z1)
    with _no_autocast(z1):
        g1, g2, gm = gather(z1, z2, zm)
        return _mix(standardise(g1), standardise(g2), standardise(gm), float(alpha),
                    global_index(idx.to(z1.device)), lambd, mu)


class LossTerms(NamedTuple):
    total: torch.Tensor
    bt: torch.Tensor
    mix: torch.Tensor


class BarlowTwinsLoss(nn.Module):
    """L_BT + L_mix (SPEC section 4); the mix term is 0 when no mixed view is given. Gathers the
    three outputs once per call when distributed."""

    def __init__(self, lambd: float = 5e-3, mu: float = 1.0) -> None:
        super().__init__()
        self.lambd, self.mu = lambd, mu

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}, mu={self.mu}"

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, zm: torch.Tensor | None = None,
                alpha: float | None = None, idx: torch.Tensor | None = None) -> LossTerms:
        if zm is not None and (alpha is None or idx is None):
            raise ValueError("BarlowTwinsLoss: the mixed term needs alpha and idx with zm")
        if idx is not None:
            _check_idx(idx, z1)
        with _no_autocast(z1):
            if zm is None:
                g1, g2 = gather(z1, z2)
            else:
                g1, g2, gm = gather(z1, z2, zm)
            n1, n2 = standardise(g1), standardise(g2)
            bt = _bt(_cc(n1, n2), self.lambd)
            if zm is None:
                mix = bt.new_zeros(())
            else:
                assert alpha is not None and idx is not None  # checked on entry
                mix = _mix(n1, n2, standardise(gm), float(alpha), global_index(idx.to(z1.device)),
                           self.lambd, self.mu)
        return LossTerms(total=bt + mix, bt=bt, mix=mix)
