"""A plain eager reference of the TESSERA v1.0 architecture (SPEC section 3), for benchmarks.

Written the way the original research code does it: plain `nn.Module`s with explicit per-layer
operations, no fused kernels.

- multi-head self-attention by hand: q, k, v projected with one `in_proj_weight`, scaled dot
  products, softmax, weighted sum, `out_proj`;
- post-norm encoder layers: x = LN1(x + SA(x)); x = LN2(x + W2 relu(W1 x));
- a Python-loop GRU cell (r, z, n gates as SPEC section 3, written textbook-style with an input
  bias and a hidden bias per gate, which is what `nn.GRU` computes: with b_h* = 0 it is exactly
  the published cell);
- attention pooling: LayerNorm on the GRU outputs, Linear(d -> 1) scores, softmax over time,
  weights applied to the transformer outputs; fusion Linear(2d -> latent).

It holds no padding logic (fixed-length sequences only) and is meant to run under
`torch.no_grad()` in float32. `ReferenceModel.from_tessera(model)` copies the weights of a
`tessera.model.TesseraModel`, so both compute the same function.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tessera.bands import NORM_EPS, S1_MEAN, S1_STD, S2_MEAN, S2_STD


class RefSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.d_model, self.n_heads = d_model, n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h, hd = self.n_heads, d // self.n_heads
        qkv = torch.matmul(x, self.in_proj_weight.t()) + self.in_proj_bias
        q, k, v = qkv.chunk(3, dim=-1)
        q = q.reshape(b, t, h, hd).transpose(1, 2)  # (B, H, T, hd)
        k = k.reshape(b, t, h, hd).transpose(1, 2)
        v = v.reshape(b, t, h, hd).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(hd)
        attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, d)
        return self.out_proj(out)


class RefEncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = RefSelfAttention(d_model, n_heads)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x))
        x = self.norm2(x + self.linear2(torch.relu(self.linear1(x))))
        return x


class RefGRUCell(nn.Module):
    """r = s(W_ir x + b_ir + W_hr h + b_hr), z = s(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.W_ir, self.W_iz, self.W_in = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.W_hr, self.W_hz, self.W_hn = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r = torch.sigmoid(self.W_ir(x) + self.W_hr(h))
        z = torch.sigmoid(self.W_iz(x) + self.W_hz(h))
        n = torch.tanh(self.W_in(x) + r * self.W_hn(h))
        return (1 - z) * n + z * h


class RefAttentionPool(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.gru_cell = RefGRUCell(d)
        self.layer_norm = nn.LayerNorm(d)
        self.query = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = torch.zeros(b, d, dtype=x.dtype, device=x.device)
        outputs = []
        for i in range(t):
            h = self.gru_cell(x[:, i], h)
            outputs.append(h)
        ctx = torch.stack(outputs, dim=1)
        w = torch.softmax(self.query(self.layer_norm(ctx)), dim=1)  # (B, T, 1)
        return (w * x).sum(dim=1)


def doy_positional_encoding(doy: torch.Tensor, d_model: int) -> torch.Tensor:
    position = doy.unsqueeze(-1).float()
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float, device=doy.device)
                         * -(math.log(10000.0) / d_model))
    pe = torch.zeros(doy.shape[0], doy.shape[1], d_model, device=doy.device)
    pe[:, :, 0::2] = torch.sin(position * div_term)
    pe[:, :, 1::2] = torch.cos(position * div_term)
    return pe


class RefBackbone(nn.Module):
    def __init__(self, n_bands: int, d_model: int, n_layers: int, n_heads: int,
                 ffn_dim: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Sequential(nn.Linear(n_bands, d_model), nn.ReLU(),
                                       nn.Linear(d_model, d_model))
        self.layers = nn.ModuleList(RefEncoderLayer(d_model, n_heads, ffn_dim)
                                    for _ in range(n_layers))
        self.attn_pool = RefAttentionPool(d_model)

    def forward(self, x: torch.Tensor, doy: torch.Tensor) -> torch.Tensor:
        h = self.embedding(x) + doy_positional_encoding(doy, self.d_model)
        for layer in self.layers:
            h = layer(h)
        return self.attn_pool(h)


class ReferenceModel(nn.Module):
    """Raw S2 (reflectance x 10 000) and S1 (int16 code) sequences in, 128-d out."""

    def __init__(self, d_model: int = 512, n_layers: int = 4, n_heads: int = 4,
                 ffn_dim: int = 4096, latent_dim: int = 128, s2_bands: int = 10,
                 s1_bands: int = 2) -> None:
        super().__init__()
        self.s2_backbone = RefBackbone(s2_bands, d_model, n_layers, n_heads, ffn_dim)
        self.s1_backbone = RefBackbone(s1_bands, d_model, n_layers, n_heads, ffn_dim)
        self.dim_reducer = nn.Sequential(nn.Linear(2 * d_model, latent_dim))
        self.register_buffer("s2_mean", torch.as_tensor(S2_MEAN), persistent=False)
        self.register_buffer("s2_std", torch.as_tensor(S2_STD), persistent=False)
        self.register_buffer("s1_mean", torch.as_tensor(S1_MEAN), persistent=False)
        self.register_buffer("s1_std", torch.as_tensor(S1_STD), persistent=False)

    def forward(self, s2: torch.Tensor, s2_doy: torch.Tensor, s1: torch.Tensor,
                s1_doy: torch.Tensor) -> torch.Tensor:
        x2 = (s2.float() - self.s2_mean) / (self.s2_std + NORM_EPS)
        x1 = (s1.float() - self.s1_mean) / (self.s1_std + NORM_EPS)
        h2 = self.s2_backbone(x2, s2_doy)
        h1 = self.s1_backbone(x1, s1_doy)
        return self.dim_reducer(torch.cat([h2, h1], dim=-1))

    @classmethod
    def from_tessera(cls, model: nn.Module) -> "ReferenceModel":
        """A reference holding a copy of the weights of a `TesseraModel` (our module names)."""
        cfg = model.config
        ref = cls(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_dim, cfg.latent_dim,
                  cfg.s2_bands, cfg.s1_bands)
        src = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
        dst: dict[str, torch.Tensor] = {}
        for bb in ("s2_backbone", "s1_backbone"):
            for k in ("embedding.0.weight", "embedding.0.bias", "embedding.2.weight",
                      "embedding.2.bias", "attn_pool.layer_norm.weight",
                      "attn_pool.layer_norm.bias", "attn_pool.query.weight",
                      "attn_pool.query.bias"):
                dst[f"{bb}.{k}"] = src[f"{bb}.{k}"]
            for i in range(cfg.n_layers):
                s, t = f"{bb}.transformer_encoder.layers.{i}.", f"{bb}.layers.{i}."
                for k in ("self_attn.in_proj_weight", "self_attn.in_proj_bias",
                          "self_attn.out_proj.weight", "self_attn.out_proj.bias",
                          "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
                          "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"):
                    dst[t + k] = src[s + k]
            g, c = f"{bb}.attn_pool.gru.", f"{bb}.attn_pool.gru_cell."
            # nn.GRU packs the gates in the order r, z, n
            for packed, names in (("weight_ih_l0", ("W_ir", "W_iz", "W_in")),
                                  ("weight_hh_l0", ("W_hr", "W_hz", "W_hn"))):
                for name, w in zip(names, src[g + packed].chunk(3, dim=0)):
                    dst[f"{c}{name}.weight"] = w.clone()
            for packed, names in (("bias_ih_l0", ("W_ir", "W_iz", "W_in")),
                                  ("bias_hh_l0", ("W_hr", "W_hz", "W_hn"))):
                for name, b in zip(names, src[g + packed].chunk(3, dim=0)):
                    dst[f"{c}{name}.bias"] = b.clone()
        dst["dim_reducer.0.weight"] = src["dim_reducer.0.weight"]
        dst["dim_reducer.0.bias"] = src["dim_reducer.0.bias"]
        ref.load_state_dict(dst, strict=True)
        return ref.eval()
