"""The registered models: every published TESSERA model and our CPU-sized presets.

In the spirit of torchgeo's weights enums, each entry pins what a user needs to run the model
exactly and to cite it: the architecture (a `ModelConfig`, or None where the sizes are read from
the checkpoint), the normalisation statistics, the temporal sampling scheme, the output width,
the upstream file and where it is published, and the parameter count. `tessera models` prints
this table.

Model ids are what outputs record (`model` in GeoTIFF tags, store manifests, point tables, and
`urn:tessera:model:<id>` as Zarr `geoemb:model`); embeddings of different ids are never mixed
within a year.
"""

from __future__ import annotations

import dataclasses

from tessera.errors import InputError
from tessera.model.config import PRESETS, ModelConfig

#: Model families: one architecture + sampling + checkpoint layout each (SPEC 3, 3b).
FAMILIES = ("v1.0", "v1.1", "v2")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One registered model."""

    id: str
    family: str  # "v1.0", "v1.1" or "v2"
    title: str
    config: ModelConfig | None  # None: sizes come from the checkpoint (its `args`)
    sampling: tuple[str, ...]  # accepted schemes, the default first
    params: str  # parameter count as published (or counted, for our presets)
    upstream_file: str | None = None
    source: str | None = None  # where the weights are published
    dims: tuple[int, ...] = (128,)  # embedding widths offered (Matryoshka prefixes for v2)
    notes: str = ""

    @property
    def output_dim(self) -> int:
        return max(self.dims)

    @property
    def stats(self) -> str:
        return self.config.stats if self.config is not None else _FAMILY_STATS[self.family]


_FAMILY_STATS = {"v1.0": "v1.0", "v1.1": "v1.1-mpc", "v2": "v2"}

_V11 = ModelConfig(d_model=768, n_layers=4, n_heads=4, ffn_dim=2048, latent_dim=192,
                   embed_dim=128, fusion="mlp", stats="v1.1-mpc")
_V2_SMALL = ModelConfig(d_model=256, n_layers=4, n_heads=4, ffn_dim=1024, latent_dim=128,
                        fusion="mlp", pooling="attention", final_norm=True, stats="v2",
                        dropout=0.0)
_V2_HF = "Hugging Face geotessera/TESSERA-V-2.0-2B-{}"
_MATRYOSHKA = (16, 32, 64, 128)

MODELS: dict[str, ModelSpec] = {m.id: m for m in (
    ModelSpec("v1", "v1.0", "TESSERA v1.0 (QAT), the paper model", PRESETS["v1"],
              ("all", "v1"), "45.83 M", "best_model_fsdp_20250608_220648_QAT.pt",
              "Google Drive, linked from the github.com/ucam-eo/tessera README",
              notes="published sampling is 40 random S2 + 40 S1 draws (--sampling v1, seeded "
                    "here); the default 'all' uses every valid observation, deterministically"),
    ModelSpec("v1.1-mpc", "v1.1", "TESSERA v1.1, Planetary Computer inputs (GeoTessera default)",
              _V11, ("v1.1",), "57.71 M",
              "tessera_v1_1_mpc_encoder.pt (best_model_fsdp_20260425_133615.pt)",
              "Google Drive, linked from the github.com/ucam-eo/tessera README; Hugging Face "
              "geotessera/TESSERA-V-1.1",
              notes="first 128 of 192 dims; every valid observation, bucketed to multiples of 8"),
    ModelSpec("v1.1-aws", "v1.1", "TESSERA v1.1, AWS inputs (Earth Search S2 + OPERA S1)",
              dataclasses.replace(_V11, stats="v1.1-aws"), ("v1.1",), "57.71 M",
              "tessera_v1_1_aws_encoder.pt (best_model_fsdp_20260425_202039.pt)",
              "Google Drive, linked from the github.com/ucam-eo/tessera README; Hugging Face "
              "geotessera/TESSERA-V-1.1",
              notes="as v1.1-mpc with the AWS statistics; the file cannot say which it is"),
    ModelSpec("v2-nano", "v2", "TESSERA v2 nano student", None, ("v2",), "1.07 M",
              "ckpt/student_nano.pt", _V2_HF.format("N"), _MATRYOSHKA),
    ModelSpec("v2-small", "v2", "TESSERA v2 small student", _V2_SMALL, ("v2",),
              "7.11 M", "ckpt/student_small.pt", _V2_HF.format("S"), _MATRYOSHKA),
    ModelSpec("v2-medium", "v2", "TESSERA v2 medium student (upstream's recommended)", None,
              ("v2",), "21.03 M", "ckpt/student_medium.pt", _V2_HF.format("M"), _MATRYOSHKA),
    ModelSpec("v2-large", "v2", "TESSERA v2 large student", None, ("v2",), "43.83 M",
              "ckpt/student_large.pt", _V2_HF.format("L"), _MATRYOSHKA),
    ModelSpec("small", "v1.0", "v1.0 architecture at d_model 256 (ours; trains on a CPU)",
              PRESETS["small"], ("all", "v1"), "7.31 M"),
    ModelSpec("tiny", "v1.0", "v1.0 architecture at d_model 128 (ours; shipped weights)",
              PRESETS["tiny"], ("all", "v1"), "1.33 M"),
)}

#: Published parameter counts of the v2 students (millions, 2 decimals): a v2 checkpoint is
#: recognised by its count, since nothing else in the file names the size.
V2_PARAMS_M = {"v2-nano": 1.07, "v2-small": 7.11, "v2-medium": 21.03, "v2-large": 43.83}


def get_model(model_id: str) -> ModelSpec:
    try:
        return MODELS[model_id]
    except KeyError:
        raise InputError(f"unknown model {model_id!r}; expected one of "
                         f"{', '.join(MODELS)} (`tessera models` lists them)") from None


def model_for_config(cfg: ModelConfig) -> ModelSpec | None:
    """The registered model with exactly these sizes and statistics, if any."""
    for spec in MODELS.values():
        if spec.config is not None and _same_arch(spec.config, cfg):
            return spec
    return None


def _same_arch(a: ModelConfig, b: ModelConfig) -> bool:
    keys = ("d_model", "n_layers", "n_heads", "ffn_dim", "latent_dim", "s2_bands", "s1_bands",
            "pooling", "fusion", "final_norm", "embed_dim", "stats")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def family_of(cfg: ModelConfig) -> str:
    """The family an architecture belongs to."""
    if cfg.pooling == "attention":
        return "v2"
    return "v1.1" if cfg.fusion == "mlp" else "v1.0"
