"""The pretraining network under DDP: global-batch BatchNorm on every backend.

The projector's BatchNorm1d layers normalise with the statistics of the batch they see. Under
DDP each rank sees only its slice, so plain BatchNorm would make a W-rank run train another
network than one process on the same global batch (the loss is computed on the gathered global
batch, losses.py, but the projector outputs that go into it would be normalised per rank).
torch's SyncBatchNorm fixes that on GPUs only (NCCL; it refuses CPU tensors), so on gloo the
layers become `GlobalBatchNorm1d`, whose statistics are all-reduced over the ranks with an
autograd-aware all-reduce. With it, 2 gloo ranks with B samples each give the loss and gradients
of one process with 2B on the same samples (tests/train/test_ddp.py), up to float rounding.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from tessera.train.losses import world_size


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; backward sums the ranks' gradients, as d(sum)/d(x_r) = 1 for every
    rank's loss. (torch.distributed.nn.functional.all_reduce does the same but is deprecated
    from torch 2.13; its replacement, in the private `_functional_collectives`, is
    differentiable only in recent releases, and tessera supports torch >= 2.3.)"""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """`x` summed over the ranks of the default group, differentiable."""
    out: torch.Tensor = _AllReduceSum.apply(x)
    return out


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d normalising with the statistics of the GLOBAL batch (all ranks) in training.

    Mean and biased variance come from two all-reduces (sum and count, then the sum of squared
    deviations: two passes, as stable as the single-process kernel); gradients flow through both
    to every rank's rows, since the all-reduce's backward all-reduces the gradient. The running
    statistics are updated with the global ones (unbiased variance, as BatchNorm1d), so they are
    the same on every rank. Outside training, or without a process group, it is BatchNorm1d.
    Every rank must call it the same number of times per step (the projector does: 3 views).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]  # every dim but the features
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x if x.dtype == torch.float64 else x.float()  # statistics in float32 at least
        count = xf.new_tensor([float(x.numel() // x.shape[1])])
        sums = all_reduce_sum(torch.cat([xf.sum(dims), count]))
        n = float(sums[-1].detach())
        mean = sums[:-1] / n
        centred = xf - mean.reshape(shape)
        var = all_reduce_sum(centred.pow(2).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats and self.running_mean is not None \
                and self.running_var is not None and self.num_batches_tracked is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                unbiased = var * (n / (n - 1)) if n > 1 else var
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        return y.to(x.dtype)


def global_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm1d replaced by a GlobalBatchNorm1d holding the same
    parameters and running statistics (in place where the BN is a child; returned)."""
    if isinstance(module, nn.BatchNorm1d) and not isinstance(module, GlobalBatchNorm1d):
        out = GlobalBatchNorm1d(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats,
                                device=_device(module), dtype=_dtype(module))
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        if module.affine:
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
        return out
    for name, child in module.named_children():
        new = global_batchnorm(child)
        if new is not child:
            module.add_module(name, new)
    return module


def _device(m: nn.Module) -> torch.device | None:
    t = next(iter([*m.parameters(), *m.buffers()]), None)
    return None if t is None else t.device


def _dtype(m: nn.Module) -> torch.dtype | None:
    t = next(iter(m.parameters()), None)
    return None if t is None else t.dtype


def distributed(net: nn.Module, device: torch.device) -> nn.Module:
    """`net` for training under the current process group: BatchNorm over the global batch
    (SyncBatchNorm with NCCL, GlobalBatchNorm1d otherwise), then DistributedDataParallel."""
    if dist.get_backend() == "nccl":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    else:
        net = global_batchnorm(net)
    return nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None)
