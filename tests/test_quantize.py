import numpy as np
import pytest

from tessera.quantize import dequantize, quantize


def cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_quantize_formula():
    e = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
    q, s = quantize(e)
    assert q.dtype == np.int8 and s.dtype == np.float32
    assert s[0] == pytest.approx(2.0 / 127)
    assert q[0].tolist() == [64, -127, 32] and q[1].tolist() == [0, 0, 0] and s[1] == 0
    np.testing.assert_array_equal(dequantize(q, np.array([np.nan, 1.0], np.float32))[0], [np.nan] * 3)


def test_roundtrip_cosine_on_model_embeddings(tile_dir, tiny_model):
    """Cosine >= 0.9999 on embeddings produced by the model (random-init tiny on a random tile).
    The real-data check lives in test_infer.py."""
    from tessera.dpixel import Tile
    from tessera.infer import Embedder
    tile = Tile.open(tile_dir)
    e = Embedder(tiny_model, device="cpu").embed(tile.read_rows(0, tile.shape[0])).embeddings
    q, s = quantize(e)
    assert cosine(dequantize(q, s), e).min() >= 0.9999


def test_roundtrip_heavy_tailed():
    rng = np.random.default_rng(0)
    e = rng.standard_t(3, size=(2000, 128)).astype(np.float32)
    q, s = quantize(e)
    assert cosine(dequantize(q, s), e).min() >= 0.999
    assert np.abs(q).max() == 127


def test_roundtrip_cosine_on_real_pixels():
    """Embeddings of real WorldCereal FRA 2022 samples (tiny preset) survive int8 at >= 0.9999."""
    from fixtures import shared_path
    from tessera.table import embed_table
    path = shared_path("worldcereal", "extractions", "2022_FRA_LPIS_POLY_110.geoparquet")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = embed_table(path, preset="tiny", s2_pattern="S2-L2A-{band}",
                         s1_pattern="S1-SIGMA0-{pol}", s1_encoding="amplitude", nodata=[65535],
                         year=2022, fill_missing=True, device="cpu")
    e = df[[f"emb_{i:03d}" for i in range(128)]].to_numpy(np.float32)
    assert len(e) == 500 and np.isfinite(e).all()
    q, s = quantize(e)
    c = cosine(dequantize(q, s), e)
    assert c.min() >= 0.9999, c.min()
