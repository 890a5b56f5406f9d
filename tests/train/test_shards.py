"""Global shuffling: shard writing, manifest, and a loader that splits work without overlap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures import make_tile_arrays
from tessera.dpixel import Tile, write_tile
from tessera.train.shards import (BatchSource, ShardError, ShardStream, TileSource, loader,
                                  read_manifest, sources_per_batch, write_shards)
from tessera.train.views import ragged_from_batch


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiles")
    paths = []
    for k in range(5):
        a = make_tile_arrays(h=8, w=6, seed=k)
        if k == 1:
            a["roi"][:2] = 0  # pixels outside the ROI never become samples
        paths.append(write_tile(root / f"tile_{k}", **a))
    return paths


@pytest.fixture(scope="module")
def shard_dir(tiles, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "s"
    write_shards([TileSource(p, rows_per_chunk=3) for p in tiles], out, shard_size=40,
                 group_size=2, seed=3)
    return out


def _samples(root):
    m = read_manifest(root)
    keys = []
    for s in m["shards"]:
        src = np.load(root / s["name"] / "source.npy")
        pix = np.load(root / s["name"] / "pixel.npy")
        keys += list(zip(src.tolist(), pix.tolist()))
    return m, keys


def test_manifest_and_content(tiles, shard_dir):
    m, keys = _samples(shard_dir)
    assert m["samples"] == len(keys) == len(set(keys))  # no duplicates
    assert [s["samples"] for s in m["shards"]][:-1] == [40] * (len(m["shards"]) - 1)
    assert m["seed"] == 3 and [s["name"] for s in m["sources"]] == [str(p) for p in tiles]
    for k, (rec, path) in enumerate(zip(m["sources"], tiles)):
        tile = Tile.open(path)
        batch = tile.read_rows(0, tile.shape[0])
        _, keep = ragged_from_batch(batch)
        roi = np.asarray(tile.roi).reshape(-1) > 0
        expect = {int(i) for i in keep if roi[i]}
        assert {p for s, p in keys if s == k} == expect
        assert rec["kept"] == len(expect) and rec["pixels"] == 48
    # the stored observations are those of the source pixel
    s = m["shards"][0]
    src = np.load(shard_dir / s["name"] / "source.npy")
    pix = np.load(shard_dir / s["name"] / "pixel.npy")
    off = np.load(shard_dir / s["name"] / "s2_off.npy")
    vals = np.load(shard_dir / s["name"] / "s2.npy")
    for j in range(0, len(src), 7):
        b = Tile.open(tiles[src[j]]).read_rows(0, 8)
        ok = b.s2_valid[pix[j]]
        np.testing.assert_array_equal(vals[off[j]:off[j + 1]], b.s2[pix[j]][ok])


def test_global_permutation_mixes_tiles(tiles, tmp_path):
    def mixing(group_size):
        out = tmp_path / f"g{group_size}"
        write_shards([TileSource(p) for p in tiles], out, shard_size=40, group_size=group_size)
        return sources_per_batch(out, batch_size=16, n_batches=10, buffer=1)
    # one permutation across all 5 tiles vs one per tile (then only the loader's buffer of one
    # shard mixes): minibatches must draw from many more tiles
    assert mixing(5) > 3.5 > 2.0 > mixing(1)


def test_every_sample_once_per_epoch_across_ranks_and_workers(shard_dir):
    m, keys = _samples(shard_dir)
    seen, batches = [], 0
    for rank in range(2):
        stream = ShardStream(shard_dir, batch_size=7, seed=1, epoch=0, rank=rank, world=2,
                             buffer=2, drop_last=False)
        for b in loader(stream, workers=2):
            seen += list(zip(b.source.tolist(), b.pixel.tolist()))
            batches += 1
    assert sorted(seen) == sorted(keys)  # exactly once: no overlap, nothing lost
    assert batches >= 2 * (m["samples"] // 14)


def test_workers_do_not_change_the_stream(shard_dir):
    def run(workers):
        stream = ShardStream(shard_dir, batch_size=8, seed=2, buffer=2)
        return [(b.index, b.pixel.tolist(), b.view1.s2_doy.sum().item())
                for b in loader(stream, workers)]
    assert run(0) == run(2)


def test_resume_position_and_epochs(shard_dir):
    full = [(b.index, b.pixel.tolist(), b.view2.s1.sum().item())
            for b in ShardStream(shard_dir, batch_size=8, seed=2, epoch=1)]
    tail = [(b.index, b.pixel.tolist(), b.view2.s1.sum().item())
            for b in loader(ShardStream(shard_dir, batch_size=8, seed=2, epoch=1, start_batch=5), 2)]
    assert tail == full[5:]
    other = [b.pixel.tolist() for b in ShardStream(shard_dir, batch_size=8, seed=2, epoch=2)]
    assert other != [f[1] for f in full]  # a new epoch, a new order
    assert len(full) == ShardStream(shard_dir, batch_size=8).batches_per_epoch()


def test_batch_sources(tmp_path):
    from fixtures import shared_dates_batch as _batch
    out = write_shards([BatchSource("a", _batch(0)), BatchSource("b", _batch(1))], tmp_path / "s",
                       shard_size=1000, seed=0)
    assert len(out["shards"]) == 1 and out["samples"] == sum(s["kept"] for s in out["sources"])


def test_bad_inputs(shard_dir, tiles, tmp_path):
    with pytest.raises(ShardError, match="not empty"):
        write_shards([TileSource(tiles[0])], shard_dir)
    with pytest.raises(ShardError, match="no pixel has >= 99"):
        write_shards([TileSource(tiles[0])], tmp_path / "none", min_s2=99)
    assert not (tmp_path / "none").exists() and not list(tmp_path.glob(".none.*"))
    with pytest.raises(ShardError, match="no manifest.json"):
        read_manifest(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ShardError, match="field 'format'"):
        read_manifest(bad)


def test_interrupted_write_leaves_nothing(tiles, tmp_path):
    class Broken:
        name = "broken"

        def chunks(self):
            raise OSError("disk vanished")
            yield  # pragma: no cover

    with pytest.raises(OSError, match="disk vanished"):
        write_shards([TileSource(tiles[0]), Broken()], tmp_path / "out", group_size=1,
                     shard_size=5)
    assert list(tmp_path.iterdir()) == []
