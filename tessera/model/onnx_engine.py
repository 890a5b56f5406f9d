"""The ONNX Runtime engine: each sensor's encoder exported to ONNX once per weights, cached, and
run with onnxruntime's CPUExecutionProvider (`Embedder(..., engine="onnx")`).

Why: ONNX Runtime runs the same float32 graph as fast as our eager path or faster on some CPUs,
and its dynamic int8 quantisation (MatMulInteger on int8 weights, per output channel) uses the
CPU's int8 dot-product instructions where present. Outputs stay the Embedder's: normalisation,
sampling, fusion and the int8 embedding + scale are unchanged; only the two backbones run here.

What is exported: one graph per sensor, (normalised steps (B, T, bands) float32, day of year
(B, T) float32, valid-step mask (B, T) bool) -> pooled vector (B, d_model), with B and T
dynamic. The transformer layers export as stock ONNX operators (opset 18). The published GRU
(SPEC section 3) is ONNX's own GRU operator: with `linear_before_reset=0` ONNX applies the reset
gate before the hidden matrix as the published cell does, and its update gate weighs the old
state the other way round, so the z weights and bias go in negated (sigmoid(-a) = 1 - sigmoid(a)).
Its time loop then runs inside the operator for any T, which a traced Python loop could not.

The cache: `<cache>/<model>-<sensor>-<key>-<fp32|int8>.onnx`, `key` a sha256 prefix of the
backbone's weights, its configuration, this module's export format and the opset, so new
weights never reuse a stale file. `cache` is the `cache_dir` argument, else $TESSERA_ONNX_CACHE,
else $XDG_CACHE_HOME/tessera/onnx (~/.cache/tessera/onnx). Files are written atomically, so
concurrent embedders at worst export the same file twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tessera.atomic import atomic_path
from tessera.errors import DependencyError
from tessera.model.tessera_model import Backbone, GRUAttentionPool, TesseraModel, _pool, doy_encoding

log = logging.getLogger(__name__)

#: Bump when the exported graph changes, so cached files from older code are not reused.
EXPORT_FORMAT = 1
OPSET = 18
SENSORS = ("s2", "s1")


def require_onnx() -> None:
    """Raise DependencyError naming the extra when onnxruntime, onnx or onnxscript is missing."""
    import importlib

    for module in ("onnxruntime", "onnx", "onnxscript"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise DependencyError(f"engine 'onnx' needs {module}, which is not installed: "
                                  "pip install 'tessera-eo[onnx]'") from None


def default_cache_dir() -> Path:
    env = os.environ.get("TESSERA_ONNX_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tessera" / "onnx"


# --- the exported graph -----------------------------------------------------------------------

@torch.library.custom_op("tessera::onnx_gru", mutates_args=())
def onnx_gru(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ONNX's GRU (gates z, r, h; linear_before_reset=0; h' = (1 - z) n + z h) over (B, T, d)
    from h0 = 0, every step's state. Eager here for checking; exported as the ONNX operator."""
    d = r.shape[-1]
    wz, wr, wh = w[0].split(d)
    rz, rr, rh = r[0].split(d)
    bz, br, bh = b[0, :3 * d].split(d)
    h = x.new_zeros(x.shape[0], d)
    out = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        z = torch.sigmoid(xt @ wz.T + h @ rz.T + bz)
        rg = torch.sigmoid(xt @ wr.T + h @ rr.T + br)
        n = torch.tanh(xt @ wh.T + (rg * h) @ rh.T + bh)
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out, 1)


@onnx_gru.register_fake
def _onnx_gru_shape(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor
                    ) -> torch.Tensor:
    return x.new_empty(x.shape[0], x.shape[1], r.shape[-1])


def _gru_translation(d: int) -> dict[Any, Any]:
    from onnxscript import opset18 as op

    def gru(x: Any, w: Any, r: Any, b: Any) -> Any:
        y, _ = op.GRU(op.Transpose(x, perm=[1, 0, 2]), w, r, b, hidden_size=d,
                      linear_before_reset=0)  # y: (T, 1 direction, B, d)
        direction: Any = op.Constant(value_ints=[1])  # the one direction axis
        return op.Transpose(op.Squeeze(y, direction), perm=[1, 0, 2])

    return {torch.ops.tessera.onnx_gru.default: gru}


class ExportedBackbone(nn.Module):
    """`Backbone.forward` through the stock layers, the GRU as `onnx_gru` with the published
    cell's weights rearranged for ONNX (z negated, see the module docstring); always masked."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        pool = backbone.attn_pool
        self.gru = isinstance(pool, GRUAttentionPool)
        if isinstance(pool, GRUAttentionPool):
            c = pool.temporal_context.gru_cell
            with torch.no_grad():
                zero = torch.zeros_like(c.b_r)
                w = torch.cat((-c.W_iz.weight, c.W_ir.weight, c.W_ih.weight))[None]
                r = torch.cat((-c.W_hz.weight, c.W_hr.weight, c.W_hh.weight))[None]
                b = torch.cat((-c.b_z, c.b_r, c.b_h, zero, zero, zero))[None]
            self.register_buffer("gru_w", w.detach().clone())
            self.register_buffer("gru_r", r.detach().clone())
            self.register_buffer("gru_b", b.detach().clone())

    def forward(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bb = self.backbone
        pad = ~mask
        h = bb.embedding(x) + doy_encoding(doy, bb.d_model)
        h = bb.transformer_encoder(h, src_key_padding_mask=pad)
        h = h.masked_fill(pad.unsqueeze(-1), 0.0)
        pool = bb.attn_pool
        if isinstance(pool, GRUAttentionPool):
            ctx = onnx_gru(h, self.gru_w, self.gru_r, self.gru_b)
            return _pool(pool.query(pool.layer_norm(ctx)).squeeze(-1), h, mask)
        return pool(h, mask)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's and the quantiser's notices (torchvision absent, deprecations, advice to
    pre-process, logged on the root logger) are not the user's concern."""
    loggers = [logging.getLogger("torch.onnx"), logging.getLogger()]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_backbone(backbone: Backbone, path: Path) -> Path:
    """Export one backbone to `path` (atomically)."""
    require_onnx()
    wrapper = ExportedBackbone(backbone).eval()
    first = backbone.embedding[0]
    assert isinstance(first, nn.Linear)
    n_bands = first.in_features
    b, t = 16, 40
    example = (torch.zeros(b, t, n_bands), torch.arange(t, dtype=torch.float32).expand(b, t),
               torch.ones(b, t, dtype=torch.bool))
    axes = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("time", min=1)}
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            wrapper, example, dynamo=True, opset_version=OPSET, external_data=False,
            input_names=["x", "doy", "mask"], output_names=["pooled"],
            dynamic_shapes={"x": axes, "doy": axes, "mask": axes},
            custom_translation_table=_gru_translation(backbone.d_model), verbose=False)
    assert program is not None
    with atomic_path(path) as tmp:
        program.save(str(tmp), external_data=False)
    return path


def quantize_file(src: Path, dst: Path) -> Path:
    """ONNX Runtime's dynamic int8 quantisation of `src`'s matrix products (weights int8 per
    output channel, activations uint8 with one scale per product), written atomically."""
    require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(dst) as tmp, _quiet():
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"])
    return dst


def weights_key(backbone: Backbone, config: Any) -> str:
    """A sha256 prefix of what the exported graph depends on: the backbone's tensors (names,
    dtypes, shapes, bytes), the model configuration, the export format and the opset."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": EXPORT_FORMAT, "opset": OPSET,
                         "config": config.to_dict()}, sort_keys=True).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        arr = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{arr.dtype}:{tuple(arr.shape)}".encode())
        h.update(arr.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def cached_model(model: TesseraModel, sensor: str, precision: str, label: str,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """The ONNX file of `model`'s `sensor` backbone at `precision` ("fp32" or "int8"),
    exported (and quantised) on first use."""
    backbone = model.s2_backbone if sensor == "s2" else model.s1_backbone
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)
    key = weights_key(backbone, model.config)
    fp32 = root / f"{safe}-{sensor}-{key}-fp32.onnx"
    if not fp32.exists():
        log.info("exporting the %s %s encoder to %s (once per weights)", label, sensor, fp32)
        export_backbone(backbone, fp32)
    if precision == "fp32":
        return fp32
    int8 = root / f"{safe}-{sensor}-{key}-int8.onnx"
    if not int8.exists():
        quantize_file(fp32, int8)
    return int8


class OnnxBackbone:
    """One exported backbone in an onnxruntime session on CPU."""

    def __init__(self, path: Path, threads: int) -> None:
        require_onnx()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray, doy: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        if mask is None:
            mask = np.ones(x.shape[:2], bool)
        feed = {"x": np.ascontiguousarray(x, np.float32),
                "doy": np.ascontiguousarray(doy, np.float32),
                "mask": np.ascontiguousarray(mask, bool)}
        return np.asarray(self.session.run(None, feed)[0])


def onnx_backbones(model: TesseraModel, precision: str, label: str, threads: int,
                   cache_dir: str | os.PathLike | None = None) -> dict[str, OnnxBackbone]:
    """Both sensors' backbones as ONNX Runtime sessions (exported / quantised when not cached)."""
    require_onnx()
    return {s: OnnxBackbone(cached_model(model, s, precision, label, cache_dir), threads)
            for s in SENSORS}
