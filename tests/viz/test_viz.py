"""tessera.viz: one PCA fit for many tiles, per-tile GeoTIFFs, region mosaics, coverage maps.

Stores are SIMULATED (random embeddings) or, where colours must mean something, hold a
'structured' signal: 3 latent factors of decreasing variance along fixed directions plus noise,
so two fits on different samples must find the same components.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from tessera import viz
from tessera.quantize import dequantize, quantize
from tessera.geo.grid import parse_tile_name
from tessera.store.local import LocalStore
from tessera.store.manifest import Manifest
from tessera.store.synthetic import build_simulated_store

WEST, EAST = "grid_5.95_45.05", "grid_6.05_45.05"  # UTM zones 31 and 32
NORTH_WEST = "grid_5.95_45.15"
RES = 200.0
D = 128


def _directions() -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(99).normal(size=(D, 3)))
    return q.T  # (3, D) orthonormal


def _structured_arrays(tile: str, seed: int, hole: slice | None = None):
    g = parse_tile_name(tile).target_grid(RES)
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(g.height, g.width, 3)) * np.array([3.0, 2.0, 1.0])
    e = (latent @ _directions() + 0.05 * rng.normal(size=(g.height, g.width, D))) * 0.1
    q, s = quantize(e)
    s = s.astype(np.float32)
    s[~g.roi().astype(bool)] = np.nan
    if hole is not None:
        s[hole] = np.nan
    q[~np.isfinite(s)] = 0
    return q, s, g


def _write(store: LocalStore, tile: str, year: int, q, s, g) -> None:
    store.write_tile(tile, year, q, s, version="test-structured", crs=g.crs, transform=g.transform)


@pytest.fixture(scope="module")
def structured(tmp_path_factory):
    """Two tiles across the zone 31/32 border; tile EAST has a no-data hole and, at SHARED
    pixels, exactly the same quantised vectors as tile WEST has at its own pixels."""
    store = LocalStore(tmp_path_factory.mktemp("structured"))
    qw, sw, gw = _structured_arrays(WEST, 1)
    qe, se, ge = _structured_arrays(EAST, 2, hole=(slice(20, 40), slice(5, 30)))
    shared = []
    for k, (r, c) in enumerate([(10, 10), (15, 20), (45, 30), (50, 12), (12, 35)]):
        re_, ce = 42 + 2 * k, 8 + 5 * k  # somewhere else in EAST, off the hole
        assert np.isfinite(sw[r, c]) and np.isfinite(se[re_, ce])
        qe[re_, ce], se[re_, ce] = qw[r, c], sw[r, c]
        shared.append(((r, c), (re_, ce)))
    _write(store, WEST, 2022, qw, sw, gw)
    _write(store, EAST, 2022, qe, se, ge)
    return store, shared


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("simulated")
    store = build_simulated_store(root, [WEST, EAST], years=[2021, 2022], resolution=RES)
    build_simulated_store(root, [NORTH_WEST], years=[2022], resolution=RES)
    return store


def _read(path):
    with rasterio.open(path) as ds:
        return np.moveaxis(ds.read(), 0, 2), ds.crs, ds.transform, ds.profile, ds.colorinterp


# --- one fit, consistent colours ------------------------------------------------------------------

def test_fit_once_same_vector_same_colour_in_every_tile(structured, tmp_path, monkeypatch):
    store, shared = structured
    calls = []
    real_fit = viz.fit_pca
    monkeypatch.setattr(viz.pca, "fit_pca", lambda *a, **k: calls.append(a) or real_fit(*a, **k))
    done = viz.render_tiles(store, [EAST, WEST], 2022, tmp_path, png=True)
    assert len(calls) == 1, "the PCA must be fitted once for all tiles"
    assert [r.tile for r in done] == [WEST, EAST]
    west, east = (_read(r.tif)[0] for r in done)
    for (rw, cw), (re_, ce) in shared:
        assert west[rw, cw, 3] == 255
        np.testing.assert_array_equal(west[rw, cw], east[re_, ce])
    # and the per-tile colours are those of PcaRgb.apply on the dequantised vectors
    pca = real_fit(store, [WEST, EAST], 2022)
    e = store.manifest().entry(WEST, 2022)
    q = np.load(store.open_file(e.files["embeddings"]))
    s = np.load(store.open_file(e.files["scales"]))
    np.testing.assert_array_equal(pca.apply(dequantize(q, s)), west)
    np.testing.assert_array_equal(pca.apply_quantized(q, s), west)


def test_refit_same_seed_gives_identical_bytes(structured, tmp_path):
    store, _ = structured
    a = viz.fit_pca(store, [WEST, EAST], 2022, n_sample=1500, seed=3)
    b = viz.fit_pca(store, [EAST, WEST], 2022, n_sample=1500, seed=3)  # order does not matter
    assert json.dumps(a.to_json()) == json.dumps(b.to_json())
    ra = viz.render_tiles(store, [WEST, EAST], 2022, tmp_path / "a", a, png=True)
    rb = viz.render_tiles(store, [WEST, EAST], 2022, tmp_path / "b", b, png=True)
    for x, y in zip(ra, rb):
        assert x.png.read_bytes() == y.png.read_bytes()
        assert x.tif.read_bytes() == y.tif.read_bytes()
    assert not list(tmp_path.rglob("*.tmp")), "temporary files left behind"


def test_different_seed_same_colours_up_to_stretch_noise(structured):
    store, _ = structured
    a = viz.fit_pca(store, [WEST, EAST], 2022, n_sample=1500, seed=0)
    b = viz.fit_pca(store, [WEST, EAST], 2022, n_sample=1500, seed=1)
    # components agree in direction AND sign (the sign convention stops colour flips)
    cos = np.sum(a.components * b.components, axis=1)
    assert np.all(cos > 0.999), cos
    rgba_a = viz.tile_rgba(store, store.manifest().entry(WEST, 2022), a).astype(int)
    rgba_b = viz.tile_rgba(store, store.manifest().entry(WEST, 2022), b).astype(int)
    ok = rgba_a[..., 3] > 0
    diff = np.abs(rgba_a[ok, :3] - rgba_b[ok, :3])
    # what remains is the noise of the 2-98 percentile estimates on two samples of 1500 pixels
    # (a sign flip or a swapped component would move colours by about 100 levels)
    assert diff.mean() < 6 and np.percentile(diff, 99) <= 16, (diff.mean(), diff.max())
    span = a.hi - a.lo
    assert np.all(np.abs(a.lo - b.lo) < 0.05 * span) and np.all(np.abs(a.hi - b.hi) < 0.05 * span)


def test_sign_convention_largest_loading_positive(structured):
    store, _ = structured
    p = viz.fit_pca(store, [WEST], 2022, n_sample=800)
    for comp in p.components:
        assert comp[np.argmax(np.abs(comp))] > 0
    np.testing.assert_allclose(np.linalg.norm(p.components, axis=1), 1.0, atol=1e-9)
    assert p.explained_variance[0] >= p.explained_variance[1] >= p.explained_variance[2]


# --- the sample ----------------------------------------------------------------------------------

def test_sample_cap_valid_pixels_only_and_proportional(structured, monkeypatch):
    store, _ = structured
    loads = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: loads.append(k.get("mmap_mode"))
                        or real_load(*a, **k))
    man = store.manifest()
    counts = {t: man.entry(t, 2022).valid_pixels for t in (WEST, EAST)}
    assert counts[WEST] > counts[EAST] + 300  # EAST has a hole
    smp = viz.sample_pixels(store, [WEST, EAST], 2022, n_sample=1200, seed=5)
    assert loads and all(m == "r" for m in loads), "tiles must be read memory-mapped"
    assert smp.embeddings.shape == (1200, D) and np.isfinite(smp.embeddings).all()
    for i, t in enumerate(smp.tiles):
        s = real_load(store.open_file(man.entry(t, 2022).files["scales"])).reshape(-1)
        pix = smp.pixel[smp.tile_index == i]
        assert np.isfinite(s[pix]).all(), "a no-data pixel was sampled"
        assert len(np.unique(pix)) == len(pix), "sampled with replacement"
        share = counts[t] / sum(counts.values())
        assert abs(len(pix) / 1200 - share) < 0.05, (t, len(pix), share)
    # the cap is the valid pixel count when that is smaller
    total = sum(counts.values())
    assert viz.fit_pca(store, [WEST, EAST], 2022, n_sample=10 ** 7).n_sample == total
    assert viz.fit_pca(store, [WEST, EAST], 2022, n_sample=321).n_sample == 321


def test_nan_pixels_get_alpha_zero(structured):
    store, _ = structured
    p = viz.fit_pca(store, [WEST], 2022, n_sample=500)
    emb = np.random.default_rng(0).normal(size=(4, 5, D)).astype(np.float32) * 0.1
    emb[0, 0] = np.nan
    emb[2, 3, 7] = np.nan  # one bad value makes the pixel no data
    out = p.apply(emb)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 4)
    assert out[0, 0].tolist() == [0, 0, 0, 0] and out[2, 3].tolist() == [0, 0, 0, 0]
    assert (out[..., 3] == 255).sum() == 18
    e = store.manifest().entry(EAST, 2022)
    rgba = viz.tile_rgba(store, e, p)
    s = np.load(store.open_file(e.files["scales"]))
    np.testing.assert_array_equal(rgba[..., 3] > 0, np.isfinite(s))
    assert (rgba[~np.isfinite(s)] == 0).all()


def test_histogram_stretch_equalises_and_json_round_trip(structured, tmp_path):
    store, _ = structured
    p = viz.fit_pca(store, [WEST, EAST], 2022, n_sample=3000, stretch="histogram")
    assert p.stretch == "histogram" and p.quantiles.shape == (3, viz.HISTOGRAM_LEVELS)
    rgba = viz.tile_rgba(store, store.manifest().entry(WEST, 2022), p)
    vals = rgba[rgba[..., 3] > 0, :3]
    for k in range(3):
        frac = np.histogram(vals[:, k], bins=4, range=(0, 256))[0] / len(vals)
        assert np.all(np.abs(frac - 0.25) < 0.06), frac
    path = p.save(tmp_path / "pca.json")
    q = viz.PcaRgb.load(path)
    np.testing.assert_array_equal(viz.tile_rgba(store, store.manifest().entry(WEST, 2022), q),
                                  rgba)
    # a saved percentile fit is reused by render_tiles given the file name
    pp = viz.fit_pca(store, [WEST, EAST], 2022, n_sample=1000)
    pp.save(tmp_path / "p.json")
    r1 = viz.render_tiles(store, [EAST], 2022, tmp_path / "x", pp, png=True)
    r2 = viz.render_tiles(store, [EAST], 2022, tmp_path / "y", tmp_path / "p.json", png=True)
    assert r1[0].png.read_bytes() == r2[0].png.read_bytes()


def test_bad_pca_files_are_named(tmp_path):
    with pytest.raises(viz.VizError, match="no such PCA file"):
        viz.PcaRgb.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(viz.VizError, match="bad.json: not valid JSON"):
        viz.PcaRgb.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(viz.VizError, match="other.json: not a tessera-pca-rgb"):
        viz.PcaRgb.load(tmp_path / "other.json")
    doc = {"format": viz.PCA_FORMAT, "format_version": 1, "stretch": "percentile",
           "mean": [0.0] * 8, "components": [[0.0] * 7] * 3, "lo": [0] * 3, "hi": [1] * 3}
    with pytest.raises(viz.VizError, match=r"components \(3, D\)"):
        viz.PcaRgb.from_json(doc)


# --- GeoTIFF outputs ------------------------------------------------------------------------------

def test_tile_geotiffs_carry_the_tiles_crs_and_transform(simulated, tmp_path):
    done = viz.render_tiles(simulated, [WEST, EAST], 2022, tmp_path, png=True)
    man = simulated.manifest()
    for r in done:
        e = man.entry(r.tile, 2022)
        rgba, crs, transform, profile, ci = _read(r.tif)
        assert crs.to_epsg() == parse_tile_name(r.tile).epsg
        assert crs == rasterio.crs.CRS.from_user_input(e.crs)
        assert tuple(transform)[:6] == pytest.approx(e.transform)
        assert rgba.shape == (e.height, e.width, 4) and profile["dtype"] == "uint8"
        assert profile["compress"] == "deflate"
        from PIL import Image
        with Image.open(r.tif) as im:  # TIFF tags: photometric RGB, one unassociated alpha
            assert im.tag_v2[262] == 2 and im.tag_v2[338] in (2, (2,))
        assert [c.name for c in ci] == ["red", "green", "blue", "alpha"]
        assert int((rgba[..., 3] > 0).sum()) == e.valid_pixels
        assert r.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {parse_tile_name(r.tile).utm_zone for r in done} == {31, 32}


# --- region mosaic --------------------------------------------------------------------------------

def _lonlat_of_pixels(shape, transform, crs):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    x, y = transform @ (cols + 0.5, rows + 0.5)
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)


def test_region_across_utm_border_one_crs_no_seam_gaps(simulated, tmp_path):
    out = viz.render_region(simulated, [EAST, WEST], 2022, tmp_path / "r.png", tmp_path / "r.tif")
    rgba, crs, transform, _, ci = _read(out.tif)
    assert crs.to_epsg() == 32632 and out.grid.crs.to_epsg() == 32632  # zone of the centre, 6.0
    assert [c.name for c in ci] == ["red", "green", "blue", "alpha"]
    assert transform.a == RES and rgba.shape[:2] == (out.grid.height, out.grid.width)
    from PIL import Image
    with Image.open(out.png) as im:
        assert im.mode == "RGBA" and im.size == (out.grid.width, out.grid.height)
        np.testing.assert_array_equal(np.asarray(im), rgba)
    lon, lat = _lonlat_of_pixels(rgba.shape[:2], transform, crs)
    # inside the two cells, away from the outer edges and the simulated 'sea' strip in the north
    inner = (lon > 5.904) & (lon < 6.096) & (lat > 45.004) & (lat < 45.075)
    seam = inner & (np.abs(lon - 6.0) < 0.006)
    assert seam.sum() > 50
    assert (rgba[inner, 3] == 255).all(), f"{int((rgba[inner, 3] == 0).sum())} holes"
    # outside both cells nothing is drawn
    outside = (lon < 5.898) | (lon > 6.102) | (lat < 44.998) | (lat > 45.102)
    assert (rgba[outside, 3] == 0).all()
    # mosaic colours are the tile colours (nearest neighbour, same PCA), well inside each tile
    tiles = {r.tile: r for r in viz.render_tiles(simulated, [WEST, EAST], 2022, tmp_path / "t",
                                                 out.pca)}
    for name, lo in ((WEST, 5.92), (EAST, 6.03)):
        trgba, tcrs, tt, _, _ = _read(tiles[name].tif)
        sel = np.argwhere(inner & (lon > lo) & (lon < lo + 0.05))[::37]
        to = Transformer.from_crs(crs, tcrs, always_xy=True)
        for r, c in sel:
            x, y = to.transform(*(transform @ (c + 0.5, r + 0.5)))
            cc, rr = ~tt @ (x, y)
            np.testing.assert_array_equal(rgba[r, c], trgba[int(rr), int(cc)])


def test_region_bbox_and_max_size(simulated, tmp_path):
    out = viz.render_region(simulated, (5.92, 45.02, 6.08, 45.13), 2022, tmp_path / "b.png",
                            max_size=40)
    assert out.tif is None and out.tiles == [WEST, NORTH_WEST, EAST]
    assert max(out.grid.width, out.grid.height) <= 40
    assert out.grid.resolution % RES == 0 and out.grid.resolution > RES
    assert out.png.stat().st_size > 0
    with pytest.raises(viz.VizError, match=r"bbox \(10.0, 50.0, 10.2, 50.1\).*no tiles there"):
        viz.render_region(simulated, (10.0, 50.0, 10.2, 50.1), 2022, tmp_path / "n.png")


# --- coverage -------------------------------------------------------------------------------------

def test_coverage_table_and_map(simulated, tmp_path):
    man = simulated.manifest()
    t = viz.coverage_table(man)
    assert t["year"].tolist() == [2021, 2022] and t["tiles"].tolist() == [2, 3]
    for y in (2021, 2022):
        row = t[t["year"] == y].iloc[0]
        valid = sum(int(np.isfinite(np.load(simulated.open_file(e.files["scales"]))).sum())
                    for e in man.query(year=y))
        size = sum((simulated.root / f.path).stat().st_size
                   for e in man.query(year=y) for f in e.files.values())
        assert row["valid_pixels"] == valid and row["bytes"] == size
    assert list(viz.coverage_table(Manifest()).columns) == ["year", "tiles", "valid_pixels",
                                                            "bytes"]
    png = viz.coverage_map(man, tmp_path / "cov.png")
    from PIL import Image
    with Image.open(png) as im:
        im.verify()
        assert im.format == "PNG" and im.size[0] > 400
    one = viz.coverage_map(man, tmp_path / "one.png", years=[2022])
    assert one.read_bytes() != png.read_bytes()
    with pytest.raises(viz.VizError, match="year.*2019.*not in the manifest.*2021, 2022"):
        viz.coverage_map(man, tmp_path / "x.png", years=[2019])
    with pytest.raises(viz.VizError, match="no tiles"):
        viz.coverage_map(Manifest(), tmp_path / "y.png")


# --- bad inputs -----------------------------------------------------------------------------------

def test_bad_inputs_give_clear_errors(simulated, tmp_path):
    with pytest.raises(viz.VizError, match="no tiles given for year 2022"):
        viz.fit_pca(simulated, [], 2022)
    with pytest.raises(viz.VizError, match="no tiles given"):
        viz.render_tiles(simulated, [], 2022, tmp_path)
    with pytest.raises(viz.VizError, match="year 2019 is not in the store.*2021, 2022"):
        viz.fit_pca(simulated, [WEST], 2019)
    with pytest.raises(viz.VizError, match="year 2019"):
        viz.render_region(simulated, [WEST], 2019, tmp_path / "r.png")
    with pytest.raises(ValueError, match="grid_8.05_45.05"):
        viz.render_tiles(simulated, ["grid_8.05_45.05"], 2022, tmp_path)
    with pytest.raises(ValueError, match=f"{NORTH_WEST}: year 2021 is not in the store"):
        viz.fit_pca(simulated, [WEST, NORTH_WEST], 2021)
    with pytest.raises(ValueError, match="expected grid_"):
        viz.fit_pca(simulated, ["not-a-tile"], 2022)
    e2021 = simulated.manifest().entry(WEST, 2021)
    with pytest.raises(viz.VizError, match="year 2021, expected year 2022"):
        viz.fit_pca(simulated, [e2021], 2022)
    with pytest.raises(viz.VizError, match="stretch 'gamma'"):
        viz.fit_pca(simulated, [WEST], 2022, stretch="gamma")
    with pytest.raises(viz.VizError, match="n_sample 2"):
        viz.fit_pca(simulated, [WEST], 2022, n_sample=2)
    small = viz.PcaRgb(mean=np.zeros(4), components=np.eye(4)[:3], lo=np.zeros(3), hi=np.ones(3))
    with pytest.raises(viz.VizError, match=f"{WEST} 2022: 128-d embeddings.*4-d"):
        viz.render_tiles(simulated, [WEST], 2022, tmp_path, small)
    assert not list(tmp_path.glob("*.tif"))
