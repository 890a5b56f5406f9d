"""Quantisation-aware training: the int8 round trip of `tessera.quantize`, differentiable, so
the representation learns to survive the int8 storage of the published product."""

from __future__ import annotations

import torch


def fake_quantize_tensor(r: torch.Tensor) -> torch.Tensor:
    """Straight-through fake quantisation used in training (per-tensor scale, SPEC section 4):
    forward = the int8 round trip, backward = identity."""
    s = r.detach().abs().max().clamp_min(1e-12) / 127.0
    q = torch.clamp(torch.round(r / s), -128, 127) * s
    return r + (q - r).detach()


__all__ = ["fake_quantize_tensor"]
