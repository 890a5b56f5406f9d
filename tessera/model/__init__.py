"""The TESSERA model: architecture, presets, checkpoints and import of the published layout."""

from tessera.model.checkpoint import (CheckpointConfigError, load_checkpoint, read_meta,
                                      save_checkpoint)
from tessera.model.config import PRESETS, ModelConfig, get_preset
from tessera.model.published import CheckpointLayoutError, load_published
from tessera.model.tessera_model import TesseraModel, doy_encoding

__all__ = ["PRESETS", "ModelConfig", "get_preset", "TesseraModel", "doy_encoding",
           "load_published", "load_checkpoint", "save_checkpoint", "read_meta",
           "CheckpointLayoutError", "CheckpointConfigError"]
