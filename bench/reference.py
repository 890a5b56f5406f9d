"""A plain eager reference of every TESSERA architecture (SPEC sections 3 and 3b), for
benchmarks: v1.0, v1.1 and the v2 students.

Written the way the original research code does it: plain `nn.Module`s with explicit per-layer
operations, no fused kernels.

- multi-head self-attention by hand: q, k, v projected with one `in_proj_weight`, scaled dot
  products, softmax, weighted sum, `out_proj`;
- post-norm encoder layers: x = LN1(x + SA(x)); x = LN2(x + W2 relu(W1 x));
- a Python-loop GRU cell, the published one (SPEC section 3), written as the original code
  writes it: six bias-free Linear layers and three biases, one step at a time;
- attention pooling: LayerNorm on the GRU outputs, Linear(d -> 1) scores, softmax over time,
  weights applied to the transformer outputs (v1.0, v1.1); v2: Linear(d -> 1) scores of the
  transformer outputs, no GRU;
- fusion: Linear(2d -> latent) (v1.0); Linear, LayerNorm, ReLU, Linear (v1.1, v2), v2 then a
  LayerNorm without parameters.

It takes NORMALISED inputs (each model's statistics applied by the caller, as the published
datasets do before the model), holds no padding logic (fixed-length sequences only) and is meant
to run under `torch.no_grad()` in float32. `ReferenceModel.from_tessera(model)` copies the
weights of a `tessera.model.TesseraModel`, so both compute the same function.
"""

from __future__ import annotations

import math

import torch
from torch import nn



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
    """r = s(W_ir x + W_hr h + b_r), z = s(W_iz x + W_hz h + b_z),
    n = tanh(W_ih x + W_hh (r * h) + b_h), h' = (1 - z) * h + z * n."""

    def __init__(self, d: int) -> None:
        super().__init__()
        for name in ("W_ir", "W_iz", "W_ih", "W_hr", "W_hz", "W_hh"):
            setattr(self, name, nn.Linear(d, d, bias=False))
        self.b_r = nn.Parameter(torch.zeros(d))
        self.b_z = nn.Parameter(torch.zeros(d))
        self.b_h = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r = torch.sigmoid(self.W_ir(x) + self.W_hr(h) + self.b_r)
        z = torch.sigmoid(self.W_iz(x) + self.W_hz(h) + self.b_z)
        n = torch.tanh(self.W_ih(x) + self.W_hh(r * h) + self.b_h)
        return (1 - z) * h + z * n


class RefAttentionPool(nn.Module):
    def __init__(self, d: int, gru: bool = True) -> None:
        super().__init__()
        self.gru = gru
        if gru:
            self.gru_cell = RefGRUCell(d)
            self.layer_norm = nn.LayerNorm(d)
        self.query = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.gru:  # v2: plain attention pooling
            return (torch.softmax(self.query(x), dim=1) * x).sum(dim=1)
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
                 ffn_dim: int, gru: bool = True) -> None:
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Sequential(nn.Linear(n_bands, d_model), nn.ReLU(),
                                       nn.Linear(d_model, d_model))
        self.layers = nn.ModuleList(RefEncoderLayer(d_model, n_heads, ffn_dim)
                                    for _ in range(n_layers))
        self.attn_pool = RefAttentionPool(d_model, gru)

    def forward(self, x: torch.Tensor, doy: torch.Tensor) -> torch.Tensor:
        h = self.embedding(x) + doy_positional_encoding(doy, self.d_model)
        for layer in self.layers:
            h = layer(h)
        return self.attn_pool(h)


class ReferenceModel(nn.Module):
    """Normalised S2 and S1 sequences in (each (B, T, bands) + (B, T) days of year), the
    representation out (the embedding is its first `embed_dim` dims)."""

    def __init__(self, cfg) -> None:  # type: ignore[no-untyped-def]  # a tessera ModelConfig
        super().__init__()
        gru = cfg.pooling == "gru"
        d = cfg.d_model
        self.s2_backbone = RefBackbone(cfg.s2_bands, d, cfg.n_layers, cfg.n_heads, cfg.ffn_dim, gru)
        self.s1_backbone = RefBackbone(cfg.s1_bands, d, cfg.n_layers, cfg.n_heads, cfg.ffn_dim, gru)
        if cfg.fusion == "linear":
            layers: list[nn.Module] = [nn.Linear(2 * d, cfg.latent_dim)]
        else:
            layers = [nn.Linear(2 * d, 4 * d), nn.LayerNorm(4 * d), nn.ReLU(), nn.Identity(),
                      nn.Linear(4 * d, cfg.latent_dim)]
        if cfg.final_norm:
            layers.append(nn.LayerNorm(cfg.latent_dim, elementwise_affine=False))
        self.dim_reducer = nn.Sequential(*layers)

    def forward(self, x2: torch.Tensor, s2_doy: torch.Tensor, x1: torch.Tensor,
                s1_doy: torch.Tensor) -> torch.Tensor:
        h2 = self.s2_backbone(x2, s2_doy)
        h1 = self.s1_backbone(x1, s1_doy)
        return self.dim_reducer(torch.cat([h2, h1], dim=-1))

    @classmethod
    def from_tessera(cls, model: nn.Module) -> "ReferenceModel":
        """A reference holding a copy of the weights of a `TesseraModel` (our module names)."""
        cfg = model.config
        ref = cls(cfg)
        src = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
        dst: dict[str, torch.Tensor] = {}
        for bb in ("s2_backbone", "s1_backbone"):
            keys = ["embedding.0.weight", "embedding.0.bias", "embedding.2.weight",
                    "embedding.2.bias", "attn_pool.query.weight", "attn_pool.query.bias"]
            if cfg.pooling == "gru":
                keys += ["attn_pool.layer_norm.weight", "attn_pool.layer_norm.bias"]
            for k in keys:
                dst[f"{bb}.{k}"] = src[f"{bb}.{k}"]
            for i in range(cfg.n_layers):
                s, t = f"{bb}.transformer_encoder.layers.{i}.", f"{bb}.layers.{i}."
                for k in ("self_attn.in_proj_weight", "self_attn.in_proj_bias",
                          "self_attn.out_proj.weight", "self_attn.out_proj.bias",
                          "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
                          "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"):
                    dst[t + k] = src[s + k]
            if cfg.pooling == "gru":
                g, c = f"{bb}.attn_pool.temporal_context.gru_cell.", f"{bb}.attn_pool.gru_cell."
                for name in ("W_ir.weight", "W_iz.weight", "W_ih.weight", "W_hr.weight",
                             "W_hz.weight", "W_hh.weight", "b_r", "b_z", "b_h"):
                    dst[c + name] = src[g + name].clone()
        for k, v in src.items():
            if k.startswith("dim_reducer."):
                dst[k] = v
        ref.load_state_dict(dst, strict=True)
        return ref.eval()
