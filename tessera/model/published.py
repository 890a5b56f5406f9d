"""Import of checkpoints in the published TESSERA layouts (SPEC sections 3 and 3b).

The published models name their modules and parameters as ours do, the GRU cell included
(`attn_pool.temporal_context.gru_cell.{W_ir, W_iz, W_ih, W_hr, W_hz, W_hh}.weight`, no biases on
the matrices, and `b_r`, `b_z`, `b_h`): a published state dict loads as it is, once unwrapped and
unprefixed, and is checked key by key and shape by shape. The family is read off the keys:

- v1.0: a flat state dict (or wrapped), GRU pooling and one Linear `dim_reducer.0`;
- v1.1: `model_state` / `model_state_dict`, GRU pooling and an MLP `dim_reducer.{0,1,4}`;
  training-only `projector.*` and `segmented_matryoshka_projector.*` are skipped (and listed);
- v2: `{"model": state dict, "args": {...}}`, attention pooling without GRU; sizes in `args`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from tessera.errors import CheckpointError, NotFoundError
from tessera.model.config import ModelConfig, get_preset
from tessera.model.tessera_model import TesseraModel

WRAPPERS = ("model_state_dict", "model_state", "state_dict", "model")
PREFIXES = ("module.", "_orig_mod.")
GRU = "attn_pool.temporal_context.gru_cell."
#: Training-only parameters that a published checkpoint may carry and inference does not use.
IGNORED_PREFIXES = ("projector.", "segmented_matryoshka_projector.")


class CheckpointLayoutError(CheckpointError):
    """A state dict does not fit the architecture; `keys` lists the offending entries."""

    def __init__(self, message: str, keys: list[str]):
        self.keys = keys
        shown = ", ".join(keys[:20]) + (f" ... ({len(keys)} in all)" if len(keys) > 20 else "")
        super().__init__(f"{message}: {shown}")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from a .safetensors, .pt/.pth/.ckpt file (weights only, never pickle code)."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as exc:  # SafetensorError and OSError: truncated, corrupt, not ours
            raise CheckpointError(f"{path}: not a readable safetensors checkpoint "
                                  f"({' '.join(str(exc).split()) or type(exc).__name__})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors), "
                              f"found {type(obj).__name__}")
    return dict(obj)


def unwrap(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Remove wrappers (`model_state_dict`, `state_dict`, `model`) and prefixes (`module.`,
    `_orig_mod.`)."""
    for key in WRAPPERS:
        if key in state and isinstance(state[key], Mapping):
            return unwrap(state[key])
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue  # optimizer step counters, epochs, ... next to the weights
        changed = True
        while changed:
            changed = False
            for p in PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def is_published_layout(state: Mapping[str, Any]) -> bool:
    """True when a state dict is one of the published families' layouts."""
    return detect_family(state) is not None


def detect_family(state: Mapping[str, Any]) -> str | None:
    """"v1.0", "v1.1" or "v2" from the keys of a (wrapped) state dict; None if none fits."""
    keys = unwrap(state)
    if "s2_backbone.embedding.0.weight" not in keys:
        return None
    mlp = "dim_reducer.4.weight" in keys
    if any(GRU in k for k in keys):
        return "v1.1" if mlp else "v1.0"
    if mlp and "s2_backbone.attn_pool.query.weight" in keys and not any(
            "temporal_context" in k for k in keys):
        return "v2"
    return None


def v2_args(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The `args` of a v2 checkpoint (the student's sizes), {} when absent."""
    args = raw.get("args") if isinstance(raw, Mapping) else None
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        args = vars(args) if hasattr(args, "__dict__") else {}
    return dict(args)


def infer_config(state: Mapping[str, torch.Tensor], n_heads: int | None = None,
                 family: str = "v1.0", stats: str | None = None) -> ModelConfig:
    """Sizes read off the tensors; heads cannot be read off, so they default to 4 (every
    published model's; a v2 checkpoint's `args` say so)."""
    try:
        d_model, s2_bands = state["s2_backbone.embedding.0.weight"].shape
        s1_bands = state["s1_backbone.embedding.0.weight"].shape[1]
        ffn = state["s2_backbone.transformer_encoder.layers.0.linear1.weight"].shape[0]
        latent = state["dim_reducer.4.weight" if family != "v1.0" else
                       "dim_reducer.0.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointLayoutError(f"checkpoint lacks a parameter every {family} model has",
                                    [str(exc.args[0])]) from None
    layers = {int(m.group(1)) for k in state
              if (m := re.match(r"s2_backbone\.transformer_encoder\.layers\.(\d+)\.", k))}
    base = get_preset("v1")
    sizes: dict[str, Any] = dict(d_model=int(d_model), n_layers=len(layers),
                                 n_heads=n_heads or base.n_heads, ffn_dim=int(ffn),
                                 latent_dim=int(latent), s2_bands=int(s2_bands),
                                 s1_bands=int(s1_bands))
    if family == "v1.1":
        sizes.update(fusion="mlp", embed_dim=min(128, int(latent)), stats=stats or "v1.1-mpc")
    elif family == "v2":
        sizes.update(fusion="mlp", pooling="attention", final_norm=True, stats=stats or "v2",
                     dropout=0.0)
    elif stats is not None:
        sizes.update(stats=stats)
    return ModelConfig(**sizes)


def convert_published(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Check the published GRU cell's parameters of each backbone (the names are ours too)."""
    want = ["W_ir.weight", "W_iz.weight", "W_ih.weight", "W_hr.weight", "W_hz.weight",
            "W_hh.weight", "b_r", "b_z", "b_h"]
    cells: dict[str, list[str]] = {}
    for k in state:
        if GRU in k:
            backbone, name = k.split(GRU)
            cells.setdefault(backbone, []).append(name)
    for backbone, names in cells.items():
        missing = [backbone + GRU + n for n in want if n not in names]
        extra = [backbone + GRU + n for n in names if n not in want]
        if missing or extra:
            raise CheckpointLayoutError(
                "GRU cell parameters do not match W_ir/W_iz/W_ih/W_hr/W_hz/W_hh + b_r/b_z/b_h "
                "(missing or unexpected)", missing + extra)
    return dict(state)


def fit_state_dict(model: TesseraModel, state: Mapping[str, torch.Tensor],
                   source: str = "checkpoint") -> list[str]:
    """Load `state` (our names) strictly: every model parameter present with the right shape and
    nothing else except ignored training-only keys, which are returned."""
    own = model.state_dict()
    ignored = [k for k in state if k.startswith(IGNORED_PREFIXES) and k not in own]
    unexpected = [k for k in state if k not in own and k not in ignored]
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if unexpected:
        raise CheckpointLayoutError(f"{source}: unexpected parameters", unexpected)
    if missing:
        raise CheckpointLayoutError(f"{source}: missing parameters", missing)
    if wrong:
        raise CheckpointLayoutError(f"{source}: parameters of the wrong shape", wrong)
    model.load_state_dict({k: state[k].to(own[k].dtype) for k in own}, strict=True)
    return ignored


def load_published(path_or_state_dict: str | os.PathLike | Mapping[str, Any],
                   n_heads: int | None = None, model_id: str | None = None) -> TesseraModel:
    """Build a `TesseraModel` from a checkpoint in a published layout (see `import_published`).

    Accepts a path (.pt/.pth/.ckpt/.safetensors) or a state dict, possibly wrapped
    (`model_state_dict`, `model_state`, `model`) and prefixed (`module.`, `_orig_mod.`). Sizes
    are read from the tensors. Anything that does not fit raises `CheckpointLayoutError` listing
    the keys."""
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source, raw = str(path_or_state_dict), read_state_dict(path_or_state_dict)
    else:
        source, raw = "state dict", dict(path_or_state_dict)
    return import_published(raw, source, model_id, n_heads)[0]


def import_published(raw: Mapping[str, Any], source: str, model_id: str | None = None,
                     n_heads: int | None = None) -> tuple[TesseraModel, dict[str, Any]]:
    """A published checkpoint (the loaded object, still wrapped) as a model plus what is known
    of it: `model_id` (the registered model, None for sizes nobody registered), `family`,
    `skipped` (training-only keys left out) and `note` (what was assumed and why).

    `model_id` (the user's `--model`) must name a model of the file's family; for v1.1 it
    chooses the statistics (the file cannot say whether it is the MPC or the AWS model)."""
    from tessera.model.registry import (MODELS, V2_PARAMS_M, get_model, model_for_config)

    state = unwrap(raw)
    family = detect_family(state)
    if family is None:
        raise CheckpointLayoutError(
            f"{source}: not a published TESSERA layout (v1.0, v1.1 or v2: expected "
            f"'s2_backbone.*' and '{GRU}*' or 'dim_reducer.4.*' keys); first keys are",
            sorted(state)[:10])
    wanted = get_model(model_id) if model_id is not None else None
    note = ""
    stats = None
    if family == "v2":
        args = v2_args(raw)
        if args.get("enable_qk_norm"):
            raise CheckpointLayoutError(f"{source}: a v2 student with QK-norm "
                                        "(args enable_qk_norm=True) is not supported; its "
                                        "attention keys are", sorted(
                                            k for k in state if "q_norm" in k or "q_proj" in k)[:4])
        n_heads = n_heads or (int(args["nhead"]) if "nhead" in args else None)
    if family == "v1.1":
        stats = wanted.stats if wanted is not None and wanted.family == "v1.1" else "v1.1-mpc"
        if wanted is None:
            note = ("a v1.1 checkpoint does not record its input source: using the MPC "
                    "statistics (v1.1-mpc, GeoTessera's default); pass --model v1.1-aws for "
                    "the AWS model")
    cfg = infer_config(state, n_heads, family, stats)
    model = TesseraModel(cfg)
    skipped = fit_state_dict(model, convert_published(state), source)
    if family == "v2":
        _check_v2_args(v2_args(raw), cfg, source)
    # which registered model is this?
    found = None
    if family == "v2":
        count = round(model.num_parameters() / 1e6, 2)
        found = next((MODELS[k] for k, v in V2_PARAMS_M.items() if v == count), None)
    else:  # the statistics are part of the config, so v1.1-mpc and v1.1-aws are told apart
        found = model_for_config(cfg)
    if wanted is not None:
        if wanted.family != family:
            raise CheckpointLayoutError(
                f"{source}: --model {wanted.id} is a {wanted.family} model, but this checkpoint "
                f"is a {family} model" + (f" ({found.id})" if found else "")
                + "; its first keys are", sorted(state)[:3])
        if found is not None and found.id != wanted.id and family != "v1.1":
            raise CheckpointLayoutError(
                f"{source}: --model {wanted.id}, but the checkpoint's sizes are {found.id}'s "
                f"({found.params} parameters); its first keys are", sorted(state)[:3])
    model_id = found.id if found is not None else (wanted.id if wanted is not None else None)
    return model.eval(), {"model_id": model_id, "family": family, "skipped": skipped,
                          "note": note}


def _check_v2_args(args: Mapping[str, Any], cfg: ModelConfig, source: str) -> None:
    """A v2 checkpoint's args must agree with its tensors (a mismatch means a damaged file)."""
    expect = {"latent_dim": cfg.d_model // 4, "num_layers": cfg.n_layers,
              "dim_feedforward": cfg.ffn_dim, "repr_dim": cfg.latent_dim}
    wrong = [f"args.{k} = {args[k]!r}, tensors say {v}" for k, v in expect.items()
             if k in args and int(args[k]) != v]
    if wrong:
        raise CheckpointLayoutError(f"{source}: the v2 args contradict the weights", wrong)
