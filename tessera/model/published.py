"""Import of checkpoints in the published TESSERA layout (SPEC section 3).

The published model names its modules as ours do, except the GRU, which is a hand-written cell
(`attn_pool.temporal_context.gru_cell.{W_ir, W_iz, W_ih, W_hr, W_hz, W_hh}.weight`, no biases
on the matrices, and `b_r`, `b_z`, `b_h`). Mapping it onto `torch.nn.GRU` (gate order r, z, n):

    n = tanh(W_ih x + r * (W_hh h) + b_h)  ==  tanh(W_in x + b_in + r * (W_hn h + b_hn))
    with b_in = b_h, b_hn = 0;  b_ir = b_r, b_hr = 0;  b_iz = b_z, b_hz = 0.
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

WRAPPERS = ("model_state_dict", "state_dict", "model")
PREFIXES = ("module.", "_orig_mod.")
GRU = "attn_pool.temporal_context.gru_cell."
#: Training-only parameters that a published checkpoint may carry and inference does not use.
IGNORED_PREFIXES = ("projector.",)


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
    """True when a state dict uses the published GRU cell names."""
    return any(GRU in k for k in unwrap(state))


def infer_config(state: Mapping[str, torch.Tensor], n_heads: int | None = None) -> ModelConfig:
    """Sizes read off the tensors; heads cannot be read off, so they default to v1's 4."""
    try:
        d_model, s2_bands = state["s2_backbone.embedding.0.weight"].shape
        s1_bands = state["s1_backbone.embedding.0.weight"].shape[1]
        ffn = state["s2_backbone.transformer_encoder.layers.0.linear1.weight"].shape[0]
        latent = state["dim_reducer.0.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointLayoutError("checkpoint lacks a parameter every TESSERA model has",
                                    [str(exc.args[0])]) from None
    layers = {int(m.group(1)) for k in state
              if (m := re.match(r"s2_backbone\.transformer_encoder\.layers\.(\d+)\.", k))}
    base = get_preset("v1")
    return ModelConfig(d_model=int(d_model), n_layers=len(layers),
                       n_heads=n_heads or base.n_heads, ffn_dim=int(ffn), latent_dim=int(latent),
                       s2_bands=int(s2_bands), s1_bands=int(s1_bands))


def convert_published(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename published keys to ours, fusing the GRU cell into nn.GRU's packed tensors."""
    out: dict[str, torch.Tensor] = {}
    gru: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        if GRU in k:
            backbone, name = k.split(GRU)
            gru.setdefault(backbone, {})[name] = v
        else:
            out[k] = v
    for backbone, p in gru.items():
        want = ["W_ir.weight", "W_iz.weight", "W_ih.weight", "W_hr.weight", "W_hz.weight",
                "W_hh.weight", "b_r", "b_z", "b_h"]
        missing = [backbone + GRU + n for n in want if n not in p]
        extra = [backbone + GRU + n for n in p if n not in want]
        if missing or extra:
            raise CheckpointLayoutError(
                "GRU cell parameters do not match W_ir/W_iz/W_ih/W_hr/W_hz/W_hh + b_r/b_z/b_h "
                "(missing or unexpected)", missing + extra)
        g = backbone + "attn_pool.gru."
        out[g + "weight_ih_l0"] = torch.cat([p["W_ir.weight"], p["W_iz.weight"], p["W_ih.weight"]])
        out[g + "weight_hh_l0"] = torch.cat([p["W_hr.weight"], p["W_hz.weight"], p["W_hh.weight"]])
        out[g + "bias_ih_l0"] = torch.cat([p["b_r"], p["b_z"], p["b_h"]]).reshape(-1)
        out[g + "bias_hh_l0"] = torch.zeros_like(out[g + "bias_ih_l0"])
    return out


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
                   n_heads: int | None = None) -> TesseraModel:
    """Build a `TesseraModel` from a checkpoint in the published layout.

    Accepts a path (.pt/.pth/.ckpt/.safetensors) or a state dict, possibly wrapped
    (`model_state_dict`, `model`) and prefixed (`module.`, `_orig_mod.`). Sizes are read from
    the tensors. Anything that does not fit raises `CheckpointLayoutError` listing the keys.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = str(path_or_state_dict)
        state = unwrap(read_state_dict(path_or_state_dict))
    else:
        source = "state dict"
        state = unwrap(path_or_state_dict)
    if not is_published_layout(state):
        raise CheckpointLayoutError(
            f"{source}: not the published layout (no '{GRU}*' keys); first keys are",
            sorted(state)[:10])
    cfg = infer_config(state, n_heads)
    model = TesseraModel(cfg)
    fit_state_dict(model, convert_published(state), source)
    return model.eval()
