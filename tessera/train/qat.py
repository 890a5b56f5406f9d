"""Quantisation-aware training: the int8 round trip of `tessera.quantize`, differentiable, so
the representation learns to survive the int8 storage of the published product."""

from __future__ import annotations

import torch
import torch.distributed as dist

from tessera.train.losses import world_size


def fake_quantize_tensor(r: torch.Tensor, global_batch: bool = False) -> torch.Tensor:
    """Straight-through fake quantisation used in training (per-tensor scale, SPEC section 4):
    forward = the int8 round trip, backward = identity.

    `global_batch`: under DDP the tensor is the global batch, so the scale is the max over all
    ranks (one all-reduce of a scalar): with a per-rank scale W ranks would quantise each slice
    on its own grid and not train what one process does on the same samples."""
    m = r.detach().abs().max()
    if global_batch and world_size() > 1:
        m = m.clone()
        dist.all_reduce(m, op=dist.ReduceOp.MAX)
    s = m.clamp_min(1e-12) / 127.0
    q = torch.clamp(torch.round(r / s), -128, 127) * s
    return r + (q - r).detach()


__all__ = ["fake_quantize_tensor"]
