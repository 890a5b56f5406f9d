"""Reduced-precision CPU inference and the ONNX Runtime engine (`Embedder(precision=...,
engine=...)`): bf16 and int8 stay within a per-pixel cosine of 0.999 of float32, ONNX float32
matches eager float32 to float32 rounding, and outputs record the precision."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from tessera.dpixel import Tile
from tessera.errors import InputError
from tessera.infer import Embedder, embed_tile, precision_label
from tessera.model import PRESETS, TesseraModel
from tessera.model.registry import get_model

#: The issue's bar for a reduced precision: per-pixel cosine to float32.
MIN_COSINE = 0.999


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def random_model(model_id: str) -> TesseraModel:
    torch.manual_seed(0)
    config = get_model(model_id).config
    assert config is not None
    return TesseraModel(config).eval()


@pytest.fixture(scope="module")
def v1_model():
    """The published v1.0 architecture (45.8 M parameters) with RANDOM weights."""
    torch.manual_seed(0)
    return TesseraModel(PRESETS["v1"]).eval()


@pytest.fixture
def onnx_cache(tmp_path_factory):
    """One export per model for the whole session (the export takes 10-30 s)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    return tmp_path_factory.getbasetemp() / "onnx-cache"


@pytest.mark.parametrize("which", ["tiny", "v1"])
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precisions_stay_close_to_fp32(tile_dir, tiny_model, v1_model, which, precision):
    model = tiny_model if which == "tiny" else v1_model  # tiny: shipped weights; v1: random
    batch = Tile.open(tile_dir).read_rows(0, 4 if which == "v1" else 16)
    ref = Embedder(model, device="cpu").embed(batch).embeddings
    e = Embedder(model, device="cpu", precision=precision)
    got = e.embed(batch).embeddings
    cos = cosines(ref, got)
    print(f"{which} {precision}: per-pixel cosine to fp32 min {cos.min():.6f} "
          f"mean {cos.mean():.6f} ({len(cos)} px)")
    assert cos.min() >= MIN_COSINE
    assert not np.array_equal(ref, got)  # the precision really changed the arithmetic
    assert e.precision_label == precision_label(precision) == (
        "bf16" if precision == "bf16" else "int8-torch")
    # float32 afterwards is exact again: int8 / bf16 leave no state behind in the model
    assert np.array_equal(Embedder(model, device="cpu").embed(batch).embeddings, ref)


def test_bf16_flag_is_the_older_spelling(tiny_model):
    assert Embedder(tiny_model, device="cpu", bf16=True).precision == "bf16"
    with pytest.raises(InputError, match="contradict"):
        Embedder(tiny_model, device="cpu", bf16=True, precision="int8")


def test_bad_precision_and_engine_options(tiny_model):
    with pytest.raises(InputError, match="precision 'fp16': expected one of fp32, bf16, int8"):
        Embedder(tiny_model, precision="fp16")
    with pytest.raises(InputError, match="engine 'tvm'"):
        Embedder(tiny_model, engine="tvm")
    with pytest.raises(InputError, match="'bf16' runs on engine 'torch' only"):
        Embedder(tiny_model, precision="bf16", engine="onnx")
    e = Embedder(tiny_model, precision="int8")  # device auto: int8 picks the CPU
    assert e.device.type == "cpu"


def test_precision_is_recorded_in_geotiff_tags(tile_dir, tiny_model, tmp_path):
    e = Embedder(tiny_model, device="cpu", precision="bf16")
    out = embed_tile(e, tile_dir, tmp_path / "o", name="x", geotiff="int8", year=2022,
                     progress=False, meta={"preset": "tiny"})
    with rasterio.open(out.geotiffs[0]) as src:
        tags = src.tags()
    assert tags["precision"] == "bf16" and tags["engine"] == "torch"
    q = np.load(out.embeddings)
    assert q.dtype == np.int8 and q.shape == (16, 12, 128)  # int8 + scale whatever the precision


# --- ONNX Runtime -----------------------------------------------------------------------------

def _random_steps(b: int, t: int, bands: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, bands, generator=g)
    doy = torch.randint(1, 366, (b, t), generator=g).float()
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t
    mask = torch.arange(t)[None, :] < lengths[:, None]  # right-padded, as the Embedder feeds
    return x, doy, mask


@pytest.mark.parametrize("which", ["tiny", "v2-small"])
def test_onnx_backbones_match_eager(tiny_model, onnx_cache, which):
    """tiny: the shipped weights (GRU pooling); v2-small: the published v2 student's
    architecture (attention pooling), RANDOM weights."""
    from tessera.model.onnx_engine import onnx_backbones

    model = tiny_model if which == "tiny" else random_model(which)
    sessions = onnx_backbones(model, "fp32", which, threads=torch.get_num_threads(),
                              cache_dir=onnx_cache)
    worst = 0.0
    for sensor, bands in (("s2", 10), ("s1", 2)):
        backbone = model.s2_backbone if sensor == "s2" else model.s1_backbone
        for i, (b, t) in enumerate(((16, 40), (5, 1), (20, 83))):  # dynamic batch and time
            x, doy, mask = _random_steps(b, t, bands, seed=i)
            with torch.inference_mode():
                ref = backbone(x, doy, mask).numpy()
                unmasked = backbone(x, doy, None).numpy()
            got = sessions[sensor](x.numpy(), doy.numpy(), mask.numpy())
            assert got.shape == ref.shape
            worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
            all_valid = sessions[sensor](x.numpy(), doy.numpy(), None)  # no mask: every step
            worst = max(worst, float(np.abs(all_valid - unmasked).max() / np.abs(unmasked).max()))
    print(f"{which}: max |onnx - eager| / max |eager| = {worst:.2e}")
    assert worst < 1e-5


def test_onnx_engine_end_to_end_and_cache(tile_dir, tiny_model, onnx_cache):
    from tessera.model import onnx_engine

    batch = Tile.open(tile_dir).read_rows(0, 16)
    ref = Embedder(tiny_model, device="cpu").embed(batch).embeddings
    fp32 = Embedder(tiny_model, device="cpu", engine="onnx", onnx_cache=onnx_cache)
    got = fp32.embed(batch).embeddings
    assert np.abs(got - ref).max() < 1e-5 * np.abs(ref).max()
    assert fp32.precision_label == "fp32"  # the same function as eager fp32
    files = sorted(onnx_cache.glob("tiny-*-fp32.onnx"))
    assert len(files) == 2  # one per sensor
    stamps = [p.stat().st_mtime_ns for p in files]
    int8 = Embedder(tiny_model, device="cpu", engine="onnx", precision="int8",
                    onnx_cache=onnx_cache)
    cos = cosines(ref, int8.embed(batch).embeddings)
    print(f"tiny int8 (onnx): per-pixel cosine min {cos.min():.6f} mean {cos.mean():.6f}")
    assert cos.min() >= MIN_COSINE and int8.precision_label == "int8-onnx"
    assert [p.stat().st_mtime_ns for p in files] == stamps  # reused, not exported again
    assert not list(onnx_cache.glob(".*.tmp"))  # written atomically, no leftovers
    # other weights, another key: a stale export is never reused
    other = random_model("tiny")
    assert (onnx_engine.weights_key(other.s2_backbone, other.config)
            != onnx_engine.weights_key(tiny_model.s2_backbone, tiny_model.config))


def test_onnx_engine_runs_on_cpu_only(tiny_model):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device to be refused")
    with pytest.raises(InputError, match="runs on CPU"):
        Embedder(tiny_model, device="cuda", engine="onnx")
