"""Model configuration and named presets.

`v1` is the published TESSERA v1.0 size (SPEC section 3); `tiny` and `small` keep the same
structure at sizes that train and infer quickly on a CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tessera.errors import InputError


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

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise InputError(f"ModelConfig: d_model {self.d_model} is not divisible by "
                             f"n_heads {self.n_heads}")
        if self.d_model % 2:
            raise InputError(f"ModelConfig: d_model {self.d_model} must be even (sinusoid pairs)")

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
