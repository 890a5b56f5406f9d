"""The TESSERA architectures (SPEC sections 3 and 3b), one module for every published model.

Per sensor: per-timestep MLP, sinusoidal day-of-year encoding, a post-norm transformer encoder and
a pooling over time: v1.0 and v1.1 run the published GRU over the transformer outputs and score
its LayerNorm-ed states; the v2 students score the transformer outputs directly. The two pixel
vectors are concatenated and reduced (one Linear in v1.0; an MLP in v1.1 and v2, v2 ending in a
LayerNorm without parameters). Module and parameter names follow the published checkpoints, so
their weights load without renaming.

Inputs are right-padded: valid steps first, padding after. Padding never changes an output:
attention uses a key padding mask, the GRU is causal (padding comes after every valid step) and
the pooling softmax excludes padded steps.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tessera.bands import NORM_EPS
from tessera.model.config import ModelConfig
from tessera.model.stats import get_stats


def doy_encoding(doy: torch.Tensor, d_model: int) -> torch.Tensor:
    """Transformer sinusoid at position = raw day of year: pe[2i] = sin(doy / 10000^(2i/d))."""
    i2 = torch.arange(0, d_model, 2, device=doy.device, dtype=torch.float32)
    div = torch.exp(i2 * (-math.log(10000.0) / d_model))
    angle = doy.to(torch.float32).unsqueeze(-1) * div
    pe = torch.stack((torch.sin(angle), torch.cos(angle)), dim=-1)  # (..., d/2, 2)
    return pe.flatten(-2)


# --- CPU inference through oneDNN -------------------------------------------------------------
# On CPU, float32 inference spends ~95 % of its time in matrix products. oneDNN's linear with
# weights pre-packed into its blocked layout (torch.ops.mkldnn._linear_pointwise) ran them
# 10-30 % faster than the MKL sgemm behind nn.Linear on the machine measured (AMD Zen 4), and
# fuses the bias, ReLU and residual additions. Same float32 arithmetic (differences ~1e-6).
# Set TESSERA_ONEDNN=0 to disable.

#: module -> {name: (weak reference to the source weight, its version, packed weight)}; weak,
#: so deepcopy, pickling and state dicts never see the packed tensors.
_PACKED: weakref.WeakKeyDictionary[
    nn.Module, dict[str, tuple[weakref.ref[torch.Tensor], int | None, torch.Tensor]]
] = weakref.WeakKeyDictionary()
_ONEDNN: bool | None = None


def _onednn_available() -> bool:
    global _ONEDNN
    if _ONEDNN is None:
        _ONEDNN = False
        if os.environ.get("TESSERA_ONEDNN", "1") != "0" and torch.backends.mkldnn.is_available():
            try:  # a build may lack the ops, or a CPU oneDNN does not support
                with torch.no_grad():
                    w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(3, 2))
                    y = torch.ops.mkldnn._linear_pointwise(torch.ones(4, 2), w, None, "none",
                                                           [], "")
                _ONEDNN = bool(torch.allclose(y, torch.full((4, 3), 2.0)))
            except (AttributeError, RuntimeError):
                pass
    return _ONEDNN


def _autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _use_onednn(x: torch.Tensor, module: nn.Module) -> bool:
    """Eager float32 CPU inference without autograd or autocast (not while tracing or exporting:
    an exported graph must hold the stock layers). Within `int8_linears` the same path runs the
    products as dynamic int8, whether or not oneDNN is available."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not module.training
            and not torch.is_grad_enabled() and not torch.jit.is_scripting()
            and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and not torch.compiler.is_compiling() and not _autocast_on()
            and (_LINEAR_MODE.get() == "int8" or _onednn_available()))


# --- dynamic int8 on CPU (`tessera.infer.Embedder(precision="int8")`) ---------------------------
# The packed-linear path above, with each product run by PyTorch's dynamic int8 kernel
# (quantized::linear_dynamic, as torch.ao.quantization.quantize_dynamic uses): weights int8
# per output channel, quantised once and cached like the packed float weights; activations
# quantised per product with one scale per batch (so an int8 embedding depends slightly on the
# pixels batched with it). Attention scores, LayerNorms, the GRU and the fusion stay float32.
# A context variable, not a module flag: the same model can serve float32 and int8 embedders.

_LINEAR_MODE: contextvars.ContextVar[str] = contextvars.ContextVar("tessera_linear_mode",
                                                                  default="fp32")
#: module -> {name: (weak reference to the weight, to the bias, their versions, packed int8)}
_PACKED_INT8: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[Any, ...]]] = \
    weakref.WeakKeyDictionary()


def int8_available() -> bool:
    """Whether this PyTorch has the dynamic int8 linear kernels (x86 / ARM CPU builds do)."""
    try:
        return bool(torch.backends.quantized.supported_engines) and hasattr(
            torch.ops.quantized, "linear_dynamic")
    except (AttributeError, RuntimeError):
        return False


@contextlib.contextmanager
def int8_linears() -> Iterator[None]:
    """Within: eager CPU inference runs the encoders' linear layers as dynamic int8."""
    token = _LINEAR_MODE.set("int8")
    try:
        yield
    finally:
        _LINEAR_MODE.reset(token)


def _version(t: torch.Tensor | None) -> int | None:
    try:
        return None if t is None else t._version
    except RuntimeError:  # an inference tensor: no version
        return None


_VNNI: bool | None = None


def _full_range_int8() -> bool:
    """Whether activations may use all 8 bits: on x86 CPUs with VNNI (or AMX) instructions,
    whose int8 dot products accumulate in 32 bits. Without them fbgemm sums pairs of u8 x s8
    products in 16 bits, which 8-bit activations can overflow, so they get 7 (reduce_range,
    fbgemm's advice), at about twice the quantisation error."""
    global _VNNI
    if _VNNI is None:
        try:
            flags = next((line for line in open("/proc/cpuinfo").read().splitlines()
                          if line.startswith("flags")), "").split()
        except OSError:
            flags = []
        _VNNI = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))
    return _VNNI


def _pack_int8(weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
    with warnings.catch_warnings():  # quantized tensors are deprecated, the kernels are not yet
        warnings.simplefilter("ignore", UserWarning)
        qw = torch.quantize_per_channel(w, scales, torch.zeros_like(scales, dtype=torch.long),
                                        0, torch.qint8)
        return torch.ops.quantized.linear_prepack(qw, None if bias is None
                                                  else bias.detach().float())


def _linear_int8(owner: nn.Module, name: str, weight: torch.Tensor, bias: torch.Tensor | None,
                 x2: torch.Tensor, act: str) -> torch.Tensor:
    cache = _PACKED_INT8.setdefault(owner, {})
    hit = cache.get(name)
    if (hit is None or hit[0]() is not weight or (hit[1] is None) != (bias is None)
            or (bias is not None and hit[1]() is not bias)
            or hit[2] != (_version(weight), _version(bias))):
        hit = cache[name] = (weakref.ref(weight), None if bias is None else weakref.ref(bias),
                             (_version(weight), _version(bias)), _pack_int8(weight, bias))
    op = (torch.ops.quantized.linear_relu_dynamic if act == "relu"
          else torch.ops.quantized.linear_dynamic)
    return op(x2.contiguous(), hit[3], not _full_range_int8())  # reduce_range without VNNI


def _linear(owner: nn.Module, name: str, weight: torch.Tensor, bias: torch.Tensor | None,
            x: torch.Tensor, act: str = "none", add: torch.Tensor | None = None
            ) -> torch.Tensor:
    """x @ weight.T + bias (then ReLU when act == "relu", or + add) through oneDNN, with the
    packed weight cached per owner module until the weight is replaced, moved or changed in
    place."""
    if _LINEAR_MODE.get() == "int8":
        x2 = x.reshape(-1, x.shape[-1])
        y = _linear_int8(owner, name, weight, bias, x2, act)
        if add is not None:
            y = y.add_(add.reshape(-1, weight.shape[0]))
        return y.reshape(*x.shape[:-1], weight.shape[0])
    cache = _PACKED.setdefault(owner, {})
    try:
        version = weight._version
    except RuntimeError:  # an inference tensor (model built under inference_mode): no version
        version = None
    hit = cache.get(name)
    if hit is None or hit[0]() is not weight or hit[1] != version:
        hit = cache[name] = (weakref.ref(weight), version,
                             torch.ops.mkldnn._reorder_linear_weight(weight.detach()))
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if add is None:
        y = torch.ops.mkldnn._linear_pointwise(x2, hit[2], bias, act, [], "")
    else:
        y = torch.ops.mkldnn._linear_pointwise.binary(x2, add.reshape(-1, weight.shape[0]),
                                                      hit[2], bias, "add")
    return y.reshape(*lead, weight.shape[0])


#: Up to this many steps, unmasked attention runs as two batched products and a softmax.
SHORT_ATTENTION = 48


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(head dim), keys where `mask` is False excluded) v. Short unmasked
    sequences (the v1 scheme's 40 steps, the shorter v1.1 / v2 buckets) run written out: 1.6-1.8x
    faster on CPU than the flash kernel of F.scaled_dot_product_attention at 40 steps; masked
    or longer ones (the `all` scheme) run the flash kernel, which won there by up to 1.8x.
    Same float32 arithmetic up to rounding (~1e-6)."""
    if mask is None and q.shape[-2] <= SHORT_ATTENTION:
        scores = torch.matmul(q * (q.shape[-1] ** -0.5), k.transpose(-1, -2))
        return torch.matmul(torch.softmax(scores, dim=-1), v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _encoder_layer_onednn(owner: nn.Module, i: int, layer: nn.TransformerEncoderLayer,
                          x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """nn.TransformerEncoderLayer (post-norm, ReLU, eval) as packed linears + SDPA."""
    b, t, d = x.shape
    sa = layer.self_attn
    heads = sa.num_heads
    qkv = _linear(owner, f"{i}.qkv", sa.in_proj_weight, sa.in_proj_bias, x)
    q, k, v = qkv.view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    a = _attention(q, k, v, attn_mask)
    a = a.transpose(1, 2).reshape(b, t, d)
    n1, n2 = layer.norm1, layer.norm2
    x = F.layer_norm(_linear(owner, f"{i}.out", sa.out_proj.weight, sa.out_proj.bias, a, add=x),
                     (d,), n1.weight, n1.bias, n1.eps)
    f = _linear(owner, f"{i}.l1", layer.linear1.weight, layer.linear1.bias, x, act="relu")
    return F.layer_norm(_linear(owner, f"{i}.l2", layer.linear2.weight, layer.linear2.bias, f,
                                add=x), (d,), n2.weight, n2.bias, n2.eps)


class GRUCell(nn.Module):
    """The published GRU cell (SPEC section 3), which is NOT `torch.nn.GRU`'s: the reset gate
    acts before the hidden matrix and the update gate weighs the old state the other way round:

        r = sigmoid(W_ir x + W_hr h + b_r),  z = sigmoid(W_iz x + W_hz h + b_z)
        n = tanh(W_ih x + W_hh (r * h) + b_h),  h' = (1 - z) * h + z * n

    Parameters are named as the published checkpoint's (`W_ir.weight` ... `b_h`)."""

    W_ir: nn.Linear
    W_iz: nn.Linear
    W_ih: nn.Linear
    W_hr: nn.Linear
    W_hz: nn.Linear
    W_hh: nn.Linear

    def __init__(self, d: int) -> None:
        super().__init__()
        for name in ("W_ir", "W_iz", "W_ih", "W_hr", "W_hz", "W_hh"):
            layer = nn.Linear(d, d, bias=False)
            nn.init.xavier_uniform_(layer.weight)  # as the published code initialises them
            setattr(self, name, layer)
        self.b_r = nn.Parameter(torch.zeros(d))
        self.b_z = nn.Parameter(torch.zeros(d))
        self.b_h = nn.Parameter(torch.zeros(d))


class GRU(nn.Module):
    """The published GRU over a (B, T, d) sequence from h0 = 0, returning every step's state.

    The input products of all steps are one matrix product (3 gates at once); each step then
    costs one product for the r and z gates and one for the candidate."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.gru_cell = GRUCell(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.gru_cell
        d = c.b_r.shape[0]
        w_in = torch.cat((c.W_ir.weight, c.W_iz.weight, c.W_ih.weight)).to(x.dtype)
        b_in = torch.cat((c.b_r, c.b_z, c.b_h)).to(x.dtype)
        # (T, B, 3d), time-major so that each step reads one contiguous block
        if x.dtype == torch.float32 and not _autocast_on():
            xi = F.linear(x.transpose(0, 1), w_in, b_in).contiguous()
        else:  # bf16: the product of the transposed view then the copy took 10x longer
            xi = F.linear(x.transpose(0, 1).contiguous(), w_in, b_in)
        w_rz_t = torch.cat((c.W_hr.weight, c.W_hz.weight)).to(x.dtype).t()  # (d, 2d)
        w_hh_t = c.W_hh.weight.to(x.dtype).t()
        h = x.new_zeros(x.shape[0], d)
        out = x.new_empty(x.shape[0], x.shape[1], d)
        for t in range(x.shape[1]):
            xt = xi[t]
            rz = torch.sigmoid(torch.addmm(xt[:, :2 * d], h, w_rz_t))
            r, z = rz[:, :d], rz[:, d:]
            n = torch.tanh(torch.addmm(xt[:, 2 * d:], r * h, w_hh_t))
            h = torch.lerp(h, n, z)  # (1 - z) * h + z * n
            out[:, t] = h
        return out


def _pool(scores: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the valid steps of (B, T) scores; the weighted sum of x (B, T, d)."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = torch.softmax(scores, dim=1)
    return torch.bmm(w.unsqueeze(1), x).squeeze(1)


class GRUAttentionPool(nn.Module):
    """v1.0 and v1.1: the published GRU over the sequence, LayerNorm, Linear(d -> 1) scores,
    softmax over valid steps; the weights average the transformer outputs (not the GRU's)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.temporal_context = GRU(d_model)
        self.layer_norm = nn.LayerNorm(d_model)
        self.query = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        ctx = self.temporal_context(x)
        return _pool(self.query(self.layer_norm(ctx)).squeeze(-1), x, mask)


class AttentionPool(nn.Module):
    """v2 students: Linear(d -> 1) scores of the transformer outputs, softmax, weighted sum."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return _pool(self.query(x).squeeze(-1), x, mask)


class Backbone(nn.Module):
    """One sensor's encoder: (B, T, bands) normalised values + (B, T) day of year -> (B, d)."""

    def __init__(self, n_bands: int, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.d_model = d
        self.embedding = nn.Sequential(nn.Linear(n_bands, d), nn.ReLU(), nn.Linear(d, d))
        layer = nn.TransformerEncoderLayer(d, cfg.n_heads, cfg.ffn_dim, cfg.dropout,
                                           activation="relu", batch_first=True, norm_first=False)
        self.transformer_encoder = nn.TransformerEncoder(layer, cfg.n_layers,
                                                         enable_nested_tensor=False)
        self.attn_pool: nn.Module = (GRUAttentionPool(d) if cfg.pooling == "gru"
                                     else AttentionPool(d))

    def forward(self, x: torch.Tensor, doy: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        pad = None if mask is None else ~mask
        if _use_onednn(x, self):
            e0, e2 = self.embedding[0], self.embedding[2]
            assert isinstance(e0, nn.Linear) and isinstance(e2, nn.Linear)
            h = _linear(self, "e0", e0.weight, e0.bias, x, act="relu")
            h = _linear(self, "e2", e2.weight, e2.bias, h, add=doy_encoding(doy, self.d_model))
            attn_mask = None if mask is None else mask[:, None, None, :]
            for i, layer in enumerate(self.transformer_encoder.layers):
                h = _encoder_layer_onednn(self, i, layer, h, attn_mask)
        else:
            h = self.embedding(x) + doy_encoding(doy, self.d_model).to(x.dtype)
            h = self.transformer_encoder(h, src_key_padding_mask=pad)
        if pad is not None:
            # Padded outputs are excluded from the pooling; zero them so they cannot leak NaN.
            h = h.masked_fill(pad.unsqueeze(-1), 0.0)
        return self.attn_pool(h, mask)


class Projector(nn.Module):
    """Training-only head: Linear + BN + ReLU blocks, then a last Linear (SPEC section 3.6)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d_in = cfg.latent_dim
        for _ in range(cfg.projector_hidden_layers):
            layers += [nn.Linear(d_in, cfg.projector_dim), nn.BatchNorm1d(cfg.projector_dim),
                       nn.ReLU()]
            d_in = cfg.projector_dim
        layers.append(nn.Linear(d_in, cfg.projector_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.net(r)


def _dim_reducer(cfg: ModelConfig) -> nn.Sequential:
    """Fusion of the two concatenated pixel vectors (2d) into the representation (latent_dim):
    v1.0 one Linear (`dim_reducer.0`); v1.1 and v2 Linear(2d, 4d), LayerNorm, ReLU, Dropout,
    Linear(4d, latent) (`dim_reducer.{0,1,4}`), v2 then a LayerNorm without parameters."""
    d2 = 2 * cfg.d_model
    layers: list[nn.Module]
    if cfg.fusion == "linear":
        layers = [nn.Linear(d2, cfg.latent_dim)]
    else:
        layers = [nn.Linear(d2, 2 * d2), nn.LayerNorm(2 * d2), nn.ReLU(), nn.Dropout(0.2),
                  nn.Linear(2 * d2, cfg.latent_dim)]
    if cfg.final_norm:
        layers.append(nn.LayerNorm(cfg.latent_dim, elementwise_affine=False))
    return nn.Sequential(*layers)


class TesseraModel(nn.Module):
    """Raw inputs in, the representation out (`config.latent_dim` wide; the embedding is its
    first `config.output_dim` dims).

    `s2` is reflectance x 10 000 in model band order, `s1` the int16 code [VV, VH]; both are
    normalised inside with the configuration's statistics (buffers, not parameters). Models whose
    statistics differ between the S1 orbits need each S1 step's orbit (0 ascending, 1 descending).
    """

    # the normalisation constants, registered as buffers in __init__
    s2_mean: torch.Tensor
    s2_std: torch.Tensor
    s1_mean: torch.Tensor  # (2 orbits, 2 polarisations)
    s1_std: torch.Tensor

    def __init__(self, cfg: ModelConfig, with_projector: bool = False) -> None:
        super().__init__()
        self.config = cfg
        self.s2_backbone = Backbone(cfg.s2_bands, cfg)
        self.s1_backbone = Backbone(cfg.s1_bands, cfg)
        self.dim_reducer = _dim_reducer(cfg)
        self.projector = Projector(cfg) if with_projector else None
        stats = get_stats(cfg.stats)
        self.pooled_s1 = stats.pooled_s1
        s1_mean, s1_std = stats.s1_by_orbit()
        for name, value in (("s2_mean", stats.s2_mean), ("s2_std", stats.s2_std),
                            ("s1_mean", s1_mean), ("s1_std", s1_std)):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32),
                                 persistent=False)

    def normalise_s2(self, s2: torch.Tensor) -> torch.Tensor:
        """(x - mean) / (std + 1e-9) in float32, as the published inference does."""
        return (s2.to(torch.float32) - self.s2_mean) / (self.s2_std + NORM_EPS)

    def normalise_s1(self, s1: torch.Tensor, orbit: torch.Tensor | None = None) -> torch.Tensor:
        """Each step with its orbit's statistics (`orbit` (B, T): 0 ascending, 1 descending;
        may be None only when the model pools the orbits' statistics, as v1.0 does)."""
        if orbit is None:
            if not self.pooled_s1:
                raise ValueError(f"statistics {self.config.stats!r} differ by S1 orbit: pass "
                                 "each step's orbit")
            mean, std = self.s1_mean[0], self.s1_std[0]
        else:
            o = orbit.to(device=self.s1_mean.device, dtype=torch.long)
            mean, std = self.s1_mean[o], self.s1_std[o]
        return (s1.to(torch.float32) - mean) / (std + NORM_EPS)

    def encode_s2(self, s2: torch.Tensor, doy: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.s2_backbone(self.normalise_s2(s2).to(self.dtype), doy, mask)

    def encode_s1(self, s1: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None,
                  orbit: torch.Tensor | None = None) -> torch.Tensor:
        return self.s1_backbone(self.normalise_s1(s1, orbit).to(self.dtype), doy, mask)

    def fuse(self, h2: torch.Tensor, h1: torch.Tensor) -> torch.Tensor:
        return self.dim_reducer(torch.cat((h2, h1), dim=-1))

    @property
    def dtype(self) -> torch.dtype:
        linear = self.dim_reducer[0]
        assert isinstance(linear, nn.Linear)
        return linear.weight.dtype

    def forward(self, s2: torch.Tensor, s2_doy: torch.Tensor, s1: torch.Tensor,
                s1_doy: torch.Tensor, s2_mask: torch.Tensor | None = None,
                s1_mask: torch.Tensor | None = None,
                s1_orbit: torch.Tensor | None = None) -> torch.Tensor:
        return self.fuse(self.encode_s2(s2, s2_doy, s2_mask),
                         self.encode_s1(s1, s1_doy, s1_mask, s1_orbit))

    def num_parameters(self, include_projector: bool = False) -> int:
        return sum(p.numel() for n, p in self.named_parameters()
                   if include_projector or not n.startswith("projector."))
