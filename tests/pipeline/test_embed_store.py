"""Writing grid tiles into a store: `tessera embed --store`, patch pasting, the manifest under
parallel writers, and the refusals."""

import json
import multiprocessing as mp

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from tessera.cli import app
from tessera.dpixel import Tile, write_tile
from tessera.infer import Embedder, embed_tile, resolve_model
from tessera.geo.grid import parse_tile_name
from tessera.store.layout import relpath
from tessera.store.local import LocalStore, StoreError
from tessera.pipeline.embed_store import embed_to_store

TILE = "grid_6.05_45.05"
RES = 250.0  # coarse pixels keep the simulated grid tile small (about 45 x 34 px)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def grid_tile_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "my_tile"  # recognised from its raster, not its name
    res = run("simulate", out, "--grid-tile", TILE, "--resolution", RES, "--seed", "3")
    assert res.exit_code == 0, res.output
    return out


def _embedder():
    model, _ = resolve_model(preset="tiny")
    return Embedder(model, device="cpu")


def test_embed_into_store_matches_a_direct_embedding(grid_tile_dir, tmp_path):
    res = run("embed", grid_tile_dir, "--store", tmp_path / "store", "--year", "2022",
              "--no-progress")
    assert res.exit_code == 0, res.output
    assert f"wrote {TILE} 2022" in res.output and "[1/1]" in res.output
    store = LocalStore(tmp_path / "store")
    entry = store.manifest().entry(TILE, 2022)
    assert entry.crs == "EPSG:32632" and "tiny" in entry.version
    assert store.check().ok
    q = np.load(store.root / relpath("embeddings", 2022, TILE))
    s = np.load(store.root / relpath("scales", 2022, TILE))
    direct = embed_tile(_embedder(), grid_tile_dir, tmp_path / "direct", "d", progress=False)
    qd, sd = np.load(direct.embeddings), np.load(direct.scales)
    g = parse_tile_name(TILE).target_grid(RES)
    inside = g.roi().astype(bool)
    assert q.shape == qd.shape and inside.any() and (~inside).any()
    np.testing.assert_array_equal(q[inside], qd[inside])
    np.testing.assert_array_equal(s[inside], sd[inside])
    assert np.isnan(s[~inside]).all() and (q[~inside] == 0).all()  # outside the 0.1 degree cell
    assert entry.valid_pixels == int(np.isfinite(s).sum())
    with rasterio.open(store.root / relpath("mask", 2022, TILE)) as src:
        assert src.crs.to_epsg() == 32632 and src.transform == g.transform
        np.testing.assert_array_equal(src.read(1), inside.astype(np.uint8))


def test_preprocessed_patches_are_pasted_at_their_offsets(grid_tile_dir, tmp_path):
    t = Tile.open(grid_tile_dir)
    h, w = t.shape
    region = tmp_path / "region"
    names = []
    for x0, x1 in ((0, w // 2), (w // 2, w)):
        name = f"{x0}_0_{x1}_{h}"
        names.append(name)
        from rasterio.windows import Window, transform as wt
        write_tile(region / name, bands=t.bands[:, :, x0:x1], masks=t.masks[:, :, x0:x1],
                   doys=t.doys, sar_ascending=t.sar_ascending[:, :, x0:x1],
                   sar_ascending_doy=t.sar_ascending_doy,
                   sar_descending=t.sar_descending[:, :, x0:x1],
                   sar_descending_doy=t.sar_descending_doy, roi=t.roi[:, x0:x1], crs=t.crs,
                   transform=wt(Window(x0, 0, x1 - x0, h), t.transform))
    (region / "region.json").write_text(json.dumps({
        "grid": {"name": TILE, "crs": t.crs.to_string(), "transform": list(t.transform)[:6],
                 "width": w, "height": h}, "patches": names}))
    emb = _embedder()
    a = embed_to_store(emb, grid_tile_dir, LocalStore(tmp_path / "a"), 2022, progress=False)
    b = embed_to_store(emb, region, LocalStore(tmp_path / "b"), 2022, progress=False)
    assert a.files["embeddings"].sha256 == b.files["embeddings"].sha256
    assert a.files["scales"].sha256 == b.files["scales"].sha256

    (region / names[1] / "bands.npy").unlink()
    with pytest.raises(StoreError, match="missing"):
        embed_to_store(emb, region, LocalStore(tmp_path / "c"), 2022, progress=False)


def test_refusals(grid_tile_dir, tmp_path):
    res = run("embed", grid_tile_dir, "--store", tmp_path / "s", "--no-progress")
    assert res.exit_code == 2 and "--year" in res.output
    res = run("embed", grid_tile_dir, "--store", tmp_path / "s", "-o", tmp_path / "o",
              "--year", "2022", "--no-progress")
    assert res.exit_code == 2 and "exactly one" in res.output
    # a tile folder on no grid tile's raster: refused with the way out
    res = run("simulate", tmp_path / "plain", "--size", "16")
    res = run("embed", tmp_path / "plain", "--store", tmp_path / "s", "--year", "2022",
              "--no-progress")
    assert res.exit_code == 2 and "give --grid-tile" in res.output
    # the right tile folder declared as another grid tile: refused, nothing written
    res = run("embed", grid_tile_dir, "--store", tmp_path / "s", "--year", "2022",
              "--grid-tile", "grid_6.15_45.05", "--no-progress")
    assert res.exit_code == 2 and "not on the grid of grid_6.15_45.05" in res.output
    assert not (tmp_path / "s" / "manifest.parquet").exists()
    res = run("embed", grid_tile_dir, "--store", tmp_path / "s", "--year", "2022",
              "--grid-tile", "grid_6.1_45.05", "--no-progress")
    assert res.exit_code == 2 and "grid_" in res.output
    res = run("embed", grid_tile_dir, grid_tile_dir, "-o", tmp_path / "o", "--no-progress")
    assert res.exit_code == 2 and "give one tile folder" in res.output
    res = run("embed", grid_tile_dir, tmp_path / "nope", "--store", tmp_path / "s", "--year",
              "2022", "--no-progress")
    assert res.exit_code == 2 and "nope: not a tile folder" in res.output


def _writer(root, tiles, seed):
    store = LocalStore(root)
    rng = np.random.default_rng(seed)
    for name in tiles:
        g = parse_tile_name(name).target_grid(2000.0)
        q = rng.integers(-127, 128, (g.height, g.width, 8), dtype=np.int8)
        s = rng.uniform(0.01, 0.02, (g.height, g.width)).astype(np.float32)
        store.write_tile(name, 2022, q, s, version="t", crs=g.crs, transform=g.transform)


def test_parallel_writers_keep_every_row(tmp_path):
    a = [f"grid_{x:.2f}_45.05" for x in (5.05, 5.15, 5.25, 5.35)]
    b = [f"grid_{x:.2f}_45.15" for x in (5.05, 5.15, 5.25, 5.35)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(tmp_path, tiles, i)) for i, tiles in
             enumerate((a, b))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    m = LocalStore(tmp_path).manifest()
    assert sorted(m.tiles()) == sorted(a + b)
    assert LocalStore(tmp_path).check().ok


def test_a_failing_write_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    _writer(tmp_path, ["grid_5.05_45.05"], 0)
    before = (tmp_path / "manifest.parquet").read_bytes()
    import tessera.store.local as local

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local, "write_mask", full_disk)
    with pytest.raises(OSError, match="No space"):
        _writer(tmp_path, ["grid_5.05_45.05", "grid_5.15_45.05"], 1)
    assert (tmp_path / "manifest.parquet").read_bytes() == before
    assert LocalStore(tmp_path).check().ok  # no leftovers, the old tile intact


def test_store_records_the_model_and_dims_and_refuses_another_model(grid_tile_dir, tmp_path):
    """A v2 student at a Matryoshka width goes into a store that records model, width and
    weights; the year then refuses another width's tiles; export reads it."""
    from tessera.store.synthetic import simulated_tile_arrays

    store = LocalStore(tmp_path / "s")
    other = parse_tile_name("grid_5.95_45.05")  # a neighbour already in the year
    q, s, m, g = simulated_tile_arrays(other, 2022, RES, dim=32)
    store.write_tile(other, 2022, q, s, m, version="x", crs=g.crs, transform=g.transform,
                     model="v2-small", weights="random init seed 0")
    res = run("embed", grid_tile_dir, "--store", tmp_path / "s", "--year", "2022",
              "--model", "v2-small", "--dim", "32", "--no-progress")
    assert res.exit_code == 0, res.output
    entry = store.manifest().entry(TILE, 2022)
    assert (entry.model, entry.dims, entry.weights) == ("v2-small", 32, "random init seed 0")
    before = (tmp_path / "s" / "manifest.parquet").read_bytes()
    res = run("embed", grid_tile_dir, "--store", tmp_path / "s", "--year", "2022",
              "--model", "v2-small", "--no-progress")  # 128 dims: another width
    assert res.exit_code == 2 and "one model per year" in " ".join(res.output.split())
    assert (tmp_path / "s" / "manifest.parquet").read_bytes() == before
    res = run("export", "--store", tmp_path / "s", "--tile", TILE, "--year", "2022", "-o",
              tmp_path / "x.zarr")
    assert res.exit_code == 0, res.output
    import zarr
    attrs = zarr.open_group(str(tmp_path / "x.zarr"), mode="r").attrs
    assert attrs["geoemb:model"] == "urn:tessera:model:v2-small"
    assert attrs["geoemb:dimensions"] == 32 and attrs["tessera:weights"] == "random init seed 0"
