"""Our checkpoint format: `<name>.safetensors` (weights) + `<name>.json` (config and provenance).

The JSON carries the preset, the model sizes, the normalisation constants, the S2 band order and
the format version; loading checks each against what this code computes with, so a checkpoint is
never silently run with the wrong inputs. The same JSON is also stored in the safetensors header,
so a lone .safetensors file still loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn


from tessera import __version__
from tessera.atomic import atomic_path
from tessera.bands import S1_POLS, S2_BANDS
from tessera.errors import CheckpointError, NotFoundError
from tessera.model.config import ModelConfig, get_preset
from tessera.model.published import (detect_family, fit_state_dict, import_published,
                                     read_state_dict, unwrap)
from tessera.model.registry import family_of, get_model, model_for_config
from tessera.model.stats import get_stats
from tessera.model.tessera_model import TesseraModel

FORMAT = "tessera-checkpoint"
#: 2: the GRU pooling is the published cell (SPEC section 3). Version 1 checkpoints (tessera-eo
#: 0.1) used torch.nn.GRU, a different function: they cannot be converted exactly.
FORMAT_VERSION = 2


class CheckpointConfigError(CheckpointError):
    """The JSON config of a checkpoint does not match what this code expects."""


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def make_meta(model: TesseraModel, preset: str | None, extra: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    spec = model_for_config(model.config)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "software_version": __version__,
        "preset": preset, "model_id": spec.id if spec is not None else None,
        "model": model.config.to_dict(),
        "normalisation": get_stats(model.config.stats).to_dict(),
        "s2_bands": list(S2_BANDS), "s1_pols": list(S1_POLS), **(extra or {}),
    }


def save_checkpoint(model: TesseraModel, path: str | os.PathLike, preset: str | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write weights + JSON config atomically; the projector is not saved (training only)."""
    from safetensors.torch import save_file

    st_path, js_path = checkpoint_paths(path)
    st_path.parent.mkdir(parents=True, exist_ok=True)
    meta = make_meta(model, preset, extra)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not k.startswith("projector.")}
    for final, write in ((st_path, lambda p: save_file(state, p, metadata={"tessera": json.dumps(meta)})),
                         (js_path, lambda p: Path(p).write_text(json.dumps(meta, indent=2)))):
        with atomic_path(final) as tmp:
            write(str(tmp))
    return st_path


def validate_meta(meta: dict[str, Any], source: str) -> ModelConfig:
    """Check a checkpoint's JSON against this code's constants; return its model config."""
    def fail(field: str, found: object, expected: object) -> NoReturn:
        raise CheckpointConfigError(f"{source}: field '{field}' is {found!r}, expected {expected!r}")

    if meta.get("format") != FORMAT:
        fail("format", meta.get("format"), FORMAT)
    if meta.get("format_version") == 1:
        raise CheckpointConfigError(
            f"{source}: a tessera-eo 0.1 checkpoint (format_version 1), whose GRU pooling is "
            "torch.nn.GRU and not the published cell; it cannot be converted exactly: retrain "
            "it (`tessera pretrain`), or use the published weights")
    if meta.get("format_version") != FORMAT_VERSION:
        fail("format_version", meta.get("format_version"), FORMAT_VERSION)
    if meta.get("s2_bands") != list(S2_BANDS):
        fail("s2_bands", meta.get("s2_bands"), list(S2_BANDS))
    if meta.get("s1_pols") != list(S1_POLS):
        fail("s1_pols", meta.get("s1_pols"), list(S1_POLS))
    if "model" not in meta:
        fail("model", None, "a dict of model sizes")
    try:
        cfg = ModelConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as exc:
        raise CheckpointConfigError(f"{source}: field 'model': {exc}") from None
    stats = get_stats(cfg.stats)
    if not stats.matches(meta.get("normalisation")):
        fail("normalisation", meta.get("normalisation"), stats.to_dict())
    preset = meta.get("preset")
    if preset is not None:
        try:
            base = get_preset(preset)
        except ValueError as exc:
            raise CheckpointConfigError(f"{source}: field 'preset': {exc}") from None
        # Presets fix the encoder sizes; the projector is training-only and may differ.
        for f in ("d_model", "n_layers", "n_heads", "ffn_dim", "latent_dim", "s2_bands", "s1_bands"):
            if getattr(cfg, f) != getattr(base, f):
                fail(f"model.{f}", getattr(cfg, f), f"{getattr(base, f)} (preset {preset})")
    return cfg


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's JSON: the sidecar file when present, else the safetensors header."""
    st_path, js_path = checkpoint_paths(path)
    if js_path.exists():
        try:
            return json.loads(js_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointConfigError(f"{js_path}: not valid JSON ({exc})") from None
    from safetensors import safe_open
    try:
        with safe_open(str(st_path), framework="pt") as f:
            header = (f.metadata() or {}).get("tessera")
    except Exception as exc:  # SafetensorError and OSError: truncated, corrupt, not ours
        raise CheckpointConfigError(f"{st_path}: not a readable safetensors checkpoint "
                                    f"({' '.join(str(exc).split()) or type(exc).__name__})") from None
    if header is None:
        raise CheckpointConfigError(f"{js_path}: config file not found and {st_path} carries none")
    return json.loads(header)


def _has_meta(weights: Path) -> bool:
    """Whether a .safetensors file is ours: a JSON sidecar or a `tessera` header entry."""
    if checkpoint_paths(weights)[1].exists():
        return True
    try:
        read_meta(weights)
    except CheckpointConfigError:
        return False
    return True


def load_checkpoint(path: str | os.PathLike, model_id: str | None = None
                    ) -> tuple[TesseraModel, dict[str, Any]]:
    """Load any checkpoint a user may pass: ours (safetensors + JSON) or a published layout
    (v1.0, v1.1, v2: detected by its keys, in any file `read_state_dict` reads). Returns the
    model in eval mode and its metadata, whose `model_id` names the registered model (None for
    unregistered sizes) and `family` its family.

    `model_id` (the user's `--model`) must fit the file: a checkpoint of one family given under
    another's name is refused naming both; for v1.1 it selects the MPC or AWS statistics."""
    p = Path(path)
    ours = p.suffix in (".safetensors", ".json", "")
    weights = checkpoint_paths(p)[0] if ours else p
    if not weights.exists():
        if ours and p.exists():  # e.g. a .pt file without suffix
            weights = p
        else:
            raise NotFoundError(f"{weights}: checkpoint not found")
    raw = read_state_dict(weights)
    ours = weights.suffix == ".safetensors" and _has_meta(weights)
    if not ours and detect_family(raw) is not None:
        model, info = import_published(raw, str(weights), model_id)
        return model, {"preset": None, "source": "published", "path": str(weights),
                       "model": model.config.to_dict(), **info}
    if not ours:
        raise CheckpointConfigError(f"{weights}: neither a tessera checkpoint (.safetensors + "
                                    ".json) nor a published TESSERA layout (v1.0, v1.1 or v2)")
    meta = read_meta(weights)
    cfg = validate_meta(meta, str(checkpoint_paths(weights)[1]))
    model = TesseraModel(cfg)
    fit_state_dict(model, unwrap(raw), str(weights))
    spec = model_for_config(cfg)
    meta.setdefault("model_id", spec.id if spec is not None else None)
    meta["family"] = family_of(cfg)
    if model_id is not None:
        wanted = get_model(model_id)
        if wanted.family != meta["family"] or (
                meta["model_id"] is not None and meta["model_id"] != wanted.id):
            raise CheckpointConfigError(
                f"{weights}: --model {wanted.id} ({wanted.family}), but this checkpoint is "
                f"{meta['model_id'] or 'an unregistered model'} ({meta['family']})")
    meta["path"] = str(weights)
    return model.eval(), meta
