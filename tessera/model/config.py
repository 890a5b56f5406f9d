"""Model configuration and named presets.

One configuration describes every published architecture (SPEC sections 3 and 3b): v1.0 (GRU
pooling, linear fusion), v1.1 (GRU pooling, MLP fusion, 192-d representation of which the first
128 dims are the embedding) and the v2 students (plain attention pooling, MLP fusion, final
non-affine LayerNorm). `v1` is the published TESSERA v1.0 size; `tiny` and `small` keep its
structure at sizes that train and infer quickly on a CPU. The published models are registered,
with their provenance, in `tessera.model.registry`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tessera.errors import InputError
from tessera.model.stats import get_stats


POOLINGS = ("gru", "attention")
FUSIONS = ("linear", "mlp")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the two backbones, the fusion and the (training-only) projector."""

    d_model: int = 512
    n_layers: int = 4
    n_heads: int = 4
    ffn_dim: int = 4096
    dropout: float = 0.1
    latent_dim: int = 128
    s2_bands: int = 10
    s1_bands: int = 2
    projector_dim: int = 16384
    projector_hidden_layers: int = 5  # Linear + BN + ReLU blocks before the last Linear
    pooling: str = "gru"  # "gru": published GRU + LayerNorm scores; "attention": Linear scores
    fusion: str = "linear"  # "linear": Linear(2d, latent); "mlp": Linear, LayerNorm, ReLU, Linear
    final_norm: bool = False  # a last LayerNorm without parameters (v2)
    embed_dim: int | None = None  # dims of the representation kept (first ones); None: all
    stats: str = "v1.0"  # the normalisation statistics (`tessera.model.stats`)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise InputError(f"ModelConfig: pooling {self.pooling!r}; expected one of "
                             f"{', '.join(POOLINGS)}")
        if self.fusion not in FUSIONS:
            raise InputError(f"ModelConfig: fusion {self.fusion!r}; expected one of "
                             f"{', '.join(FUSIONS)}")
        get_stats(self.stats)  # an unknown id is an error now, not at the first embedding
        if self.embed_dim is not None and not 0 < self.embed_dim <= self.latent_dim:
            raise InputError(f"ModelConfig: embed_dim {self.embed_dim} must be within 1.."
                             f"{self.latent_dim} (latent_dim)")
        if self.d_model % self.n_heads:
            raise InputError(f"ModelConfig: d_model {self.d_model} is not divisible by "
                             f"n_heads {self.n_heads}")
        if self.d_model % 2:
            raise InputError(f"ModelConfig: d_model {self.d_model} must be even (sinusoid pairs)")

    @property
    def output_dim(self) -> int:
        """Width of the embeddings written (the first `output_dim` dims of the representation)."""
        return self.embed_dim or self.latent_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"model config: unknown field(s) {', '.join(unknown)}; "
                             f"expected only {', '.join(sorted(known))}")
        return cls(**d)


PRESETS: dict[str, ModelConfig] = {
    "v1": ModelConfig(),
    "small": ModelConfig(d_model=256, n_layers=4, n_heads=4, ffn_dim=1024, projector_dim=2048,
                         projector_hidden_layers=2),
    "tiny": ModelConfig(d_model=128, n_layers=4, n_heads=4, ffn_dim=256, projector_dim=1024,
                        projector_hidden_layers=2),
}


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None
