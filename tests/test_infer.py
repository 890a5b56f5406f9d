import numpy as np
import pytest
import rasterio

from fixtures import make_tile_arrays
from tessera.dpixel import Tile, write_tile
from tessera.infer import (FLAG_NO_S1, FLAG_NO_S2, FLAG_OUTSIDE_ROI, Embedder, embed_tile,
                           resolve_model)
from tessera.quantize import dequantize


def test_pixel_alone_equals_pixel_in_padded_batch(tile_dir, tiny_model):
    tile = Tile.open(tile_dir)
    batch = tile.read_rows(0, 16)  # 192 pixels of many different valid counts
    counts = batch.s2_valid.sum(1)
    assert len(set(counts.tolist())) > 5  # so the buckets really pad
    emb = Embedder(tiny_model, device="cpu", batch_size=8).embed(batch).embeddings
    for i in (0, int(np.argmin(counts)), int(np.argmax(counts))):
        alone = Embedder(tiny_model, device="cpu").embed(batch.take([i])).embeddings
        assert np.abs(alone[0] - emb[i]).max() < 1e-5


def test_deterministic_and_seeded(tile_dir, tiny_model):
    batch = Tile.open(tile_dir).read_rows(0, 4)
    e = Embedder(tiny_model, device="cpu")
    assert np.array_equal(e.embed(batch).embeddings, e.embed(batch).embeddings)
    v1 = Embedder(tiny_model, device="cpu", sampling="v1", seed=1)
    a = v1.embed(batch).embeddings
    assert np.array_equal(a, v1.embed(batch).embeddings)
    b = Embedder(tiny_model, device="cpu", sampling="v1", seed=2).embed(batch).embeddings
    assert not np.array_equal(a, b)


def test_embedder_rejects_bad_options(tiny_model):
    with pytest.raises(ValueError, match="sampling 'x'"):
        Embedder(tiny_model, sampling="x")
    with pytest.raises(ValueError, match="batch_size 0"):
        Embedder(tiny_model, batch_size=0)


def test_embed_tile_outputs_flags_and_chunk_independence(tmp_path, tiny_model):
    arrays = make_tile_arrays()
    arrays["masks"][:, 2, 3] = 0  # no valid S2
    arrays["sar_ascending"][:, 5, 5] = 0
    arrays["sar_descending"][:, 5, 5] = 0  # no valid S1
    arrays["roi"][0, :4] = 0  # outside the ROI
    tile_dir = write_tile(tmp_path / "tile", **arrays)
    e = Embedder(tiny_model, device="cpu")
    small = embed_tile(e, tile_dir, tmp_path / "a", chunk_pixels=30, progress=False)
    big = embed_tile(e, tile_dir, tmp_path / "b", chunk_pixels=100000, progress=False)
    q, s, f = (np.load(p) for p in (small.embeddings, small.scales, small.flags))
    assert q.shape == (16, 12, 128) and q.dtype == np.int8 and s.dtype == np.float32
    assert f[2, 3] == FLAG_NO_S2 and f[5, 5] == FLAG_NO_S1 and f[0, 0] == FLAG_OUTSIDE_ROI
    assert np.isnan(s[2, 3]) and np.isnan(s[5, 5]) and np.isnan(s[0, 0]) and (q[0, 0] == 0).all()
    assert np.isfinite(s[1:, 4:][f[1:, 4:] == 0]).all()
    assert small.n_flagged == 2
    e_small = dequantize(q, s)
    e_big = dequantize(np.load(big.embeddings), np.load(big.scales))
    ok = np.isfinite(s)
    assert np.nanmax(np.abs(e_small[ok] - e_big[ok])) < 2e-2 * np.nanmax(np.abs(e_big))
    # keep_partial keeps pixels that lack only one sensor
    kp = embed_tile(e, tile_dir, tmp_path / "c", keep_partial=True, progress=False)
    s_kp = np.load(kp.scales)
    assert np.isfinite(s_kp[2, 3]) and np.isfinite(s_kp[5, 5]) and np.isnan(s_kp[0, 0])


def test_embed_tile_matches_embedder(tile_dir, tiny_model, tmp_path):
    e = Embedder(tiny_model, device="cpu")
    out = embed_tile(e, tile_dir, tmp_path / "o", name="x", progress=False)
    direct = e.embed(Tile.open(tile_dir).read_rows(0, 16)).embeddings.reshape(16, 12, 128)
    got = dequantize(np.load(out.embeddings), np.load(out.scales))
    cos = (got * direct).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(direct, axis=-1)
    assert cos.min() > 0.9999


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_geotiff_output(tile_dir, tiny_model, tmp_path, dtype):
    e = Embedder(tiny_model, device="cpu")
    out = embed_tile(e, tile_dir, tmp_path / "o", name="x", geotiff=dtype, year=2022,
                     progress=False, meta={"preset": "tiny"})
    tile = Tile.open(tile_dir)
    q, s = np.load(out.embeddings), np.load(out.scales)
    assert len(out.geotiffs) == 1  # int8: the scales are a band of the same file
    with rasterio.open(out.geotiffs[0]) as src:
        assert src.count == (128 if dtype == "float32" else 129)
        assert src.dtypes[0] == "float32"
        assert src.crs == tile.crs and src.transform == tile.transform
        assert src.descriptions[0] == "Tessera_Band_0"
        assert src.descriptions[127] == "Tessera_Band_127"
        tags = src.tags()
        assert tags["year"] == "2022" and tags["preset"] == "tiny" and tags["model"] == "tiny"
        assert tags["family"] == "v1.0" and tags["dims"] == "128"
        data = src.read()
    if dtype == "float32":
        np.testing.assert_allclose(np.moveaxis(data, 0, -1), dequantize(q, s), rtol=1e-6)
    else:  # the exact codes (NaN where no data), then the scale band
        assert tags["TESSERA_SCALE_BAND"] == "129" and tags["TESSERA_DTYPE"] == "int8"
        ok = np.isfinite(s)
        assert np.array_equal(np.moveaxis(data[:128], 0, -1)[ok], q[ok].astype(np.float32))
        assert np.isnan(data[:128, ~ok]).all()
        np.testing.assert_array_equal(data[128], np.where(ok, s, np.nan))


def test_interrupted_embedding_leaves_nothing_half_written(tile_dir, tiny_model, tmp_path,
                                                           monkeypatch):
    e = Embedder(tiny_model, device="cpu")
    out = embed_tile(e, tile_dir, tmp_path / "o", name="x", progress=False)
    before = out.embeddings.read_bytes()
    calls = {"n": 0}
    real = Embedder.embed

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real(self, *a, **k)

    monkeypatch.setattr(Embedder, "embed", failing)
    e2 = Embedder(tiny_model, device="cpu", sampling="v1")
    with pytest.raises(RuntimeError):
        embed_tile(e2, tile_dir, tmp_path / "o", name="x", chunk_pixels=24, progress=False)
    assert out.embeddings.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["x.npy", "x_flags.npy",
                                                                   "x_scales.npy"]


def test_resolve_model_random_init_is_seeded_and_says_so():
    m1, meta = resolve_model(preset="tiny", seed=3, use_shipped=False)
    m2, _ = resolve_model(preset="tiny", seed=3, use_shipped=False)
    assert meta["random_init"] is True and meta["preset"] == "tiny"
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())
    with pytest.raises(ValueError, match="unknown model 'huge'"):
        resolve_model(preset="huge")


def test_resolve_model_prefers_the_shipped_weights():
    from tessera.infer import shipped_checkpoint

    shipped = shipped_checkpoint()
    assert shipped is not None and shipped.name == "tiny.safetensors", "no weights shipped"
    for preset in (None, "tiny"):
        model, meta = resolve_model(preset=preset)
        assert not meta.get("random_init") and meta["preset"] == "tiny"
        assert "training" in meta, "shipped weights must carry their training provenance"
    _, meta = resolve_model(preset="small")  # another preset has no shipped weights
    assert meta["random_init"] is True


class RecordingProgress:
    """A tessera.progress.Progress that records every report."""

    def __init__(self):
        self.tasks = []

    def task(self, description, total=None, unit=""):
        rec = {"description": description, "total": total, "unit": unit, "advances": []}
        self.tasks.append(rec)

        class Task:
            def advance(self, n=1, info=None):
                rec["advances"].append(n)

            def update(self, *, completed=None, total=None, info=None):
                pass
        return Task()


def test_progress_is_reported_per_forward_pass(tile_dir, tiny_model, tmp_path):
    """Progress moves within a chunk (every forward batch), so a slow machine never shows a bar
    stuck at 0 for a whole chunk; the advances add up to the ROI pixels."""
    e = Embedder(tiny_model, device="cpu", batch_size=8)
    rec = RecordingProgress()
    out = embed_tile(e, tile_dir, tmp_path / "o", name="x", progress=rec, chunk_pixels=10_000)
    (t,) = rec.tasks
    roi = int(Tile.open(tile_dir).roi.sum())
    assert t["total"] == roi and t["unit"] == "px" and t["description"] == "embedding x"
    assert len(t["advances"]) > 4  # one chunk (the whole tile), many reports
    assert sum(t["advances"]) == pytest.approx(roi)
    assert out.n_pixels == 16 * 12


def test_geotiff_year_from_the_tiles_sidecar_and_int8_codes_with_scales(tiny_model, tmp_path):
    from tessera.simulate import SimConfig, simulate_tile

    tile = simulate_tile(tmp_path / "t", SimConfig(size=12, seed=1, year=2021,
                                                   n_s2_dates=6, n_s1_asc=3, n_s1_desc=3))
    e = Embedder(tiny_model, device="cpu")
    out = embed_tile(e, tile, tmp_path / "o", geotiff="int8", progress=None)
    s = np.load(out.scales)
    with rasterio.open(out.geotiffs[0]) as src:  # codes + a scale band, NaN = no data
        tags = src.tags()
        assert tags["year"] == "2021" and np.isnan(src.nodata)
        assert src.count == 129 and tags["TESSERA_SCALE_BAND"] == "129"
        data = np.moveaxis(src.read(), 0, -1)
    ok = np.isfinite(s)
    assert np.isnan(data[~ok]).all()
    np.testing.assert_array_equal(data[ok][:, :128], np.load(out.embeddings)[ok])
    np.testing.assert_array_equal(data[ok][:, 128], s[ok])


def test_threads_honour_omp_num_threads_and_the_affinity(monkeypatch):
    import os

    import torch

    from tessera.cpus import available_cpus
    from tessera.infer import use_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n = available_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert available_cpus() == 1
    before = torch.get_num_threads()
    try:
        assert use_threads() == 1 and torch.get_num_threads() == 1
        assert use_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("sampling", ["all", "v1"])
def test_outputs_are_byte_identical_across_batch_sizes_and_chunkings(tmp_path, sampling):
    """Not just int8 codes: the float32 scales too, bit for bit, whatever the batch size, the
    chunking or the number of threads."""
    import torch

    tile = write_tile(tmp_path / "t", **make_tile_arrays(h=10, w=9, t2=70, ta=30, td=25,
                                                          cloud=0.5, seed=7))
    model, _ = resolve_model(preset="small", use_shipped=False)
    threads = torch.get_num_threads()
    ref = None
    try:
        for i, (n_threads, batch, chunk) in enumerate([(1, 64, 16384), (2, 11, 50),
                                                       (1, 5, 37), (2, 300, 20)]):
            torch.set_num_threads(n_threads)
            out = embed_tile(Embedder(model, device="cpu", batch_size=batch, sampling=sampling),
                             tile, tmp_path / f"o{i}", "x", chunk_pixels=chunk, progress=None)
            got = (out.embeddings.read_bytes(), out.scales.read_bytes())
            ref = ref or got
            assert got == ref, (n_threads, batch, chunk)
    finally:
        torch.set_num_threads(threads)
