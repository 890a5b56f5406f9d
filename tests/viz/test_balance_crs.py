"""Colour balances (percentile, histogram, adaptive CLAHE) and pictures reprojected for web maps
(--crs EPSG:3857: PNG + world file + .aux.xml, GeoTIFF in that CRS)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds

from tessera import viz
from tessera.viz.balance import equalize_adaptive, stretch_of
from tessera.viz.georef import world_file_path

from viz_world import BBOX, WEST, YEAR, read_png


# --- balance ---------------------------------------------------------------------------------

def test_each_balance_changes_the_picture_deterministically(store, tmp_path):
    pics = {}
    for bal in viz.BALANCES:
        a = viz.render_region(store, BBOX, YEAR, tmp_path / f"{bal}.png", tmp_path / f"{bal}.tif",
                              balance=bal, n_sample=2000)
        b = viz.render_region(store, BBOX, YEAR, tmp_path / f"{bal}2.png", balance=bal,
                              n_sample=2000)
        assert a.png.read_bytes() == b.png.read_bytes(), f"{bal} is not deterministic"
        assert a.pca.stretch == stretch_of(bal)
        with rasterio.open(a.tif) as ds:
            assert ds.tags()["TESSERA_PCA_BALANCE"] == bal
        pics[bal] = read_png(a.png)
    alpha = pics["percentile"][..., 3]
    for bal, p in pics.items():
        np.testing.assert_array_equal(p[..., 3], alpha, err_msg=f"{bal} moved the no-data mask")
        assert (p[alpha == 0] == 0).all()
    ok = alpha > 0
    for x, y in (("percentile", "histogram"), ("percentile", "adaptive"),
                 ("histogram", "adaptive")):
        diff = np.abs(pics[x][ok, :3].astype(int) - pics[y][ok, :3].astype(int))
        assert diff.mean() > 3, (x, y, diff.mean())
    # histogram: each channel about uniform over the picture; adaptive: more contrast locally
    for k in range(3):
        frac = np.histogram(pics["histogram"][ok, k], bins=4, range=(0, 256))[0] / ok.sum()
        assert np.all(np.abs(frac - 0.25) < 0.07), frac
    # adaptive keeps the order of levels within a neighbourhood (a monotone local map)
    assert pics["adaptive"][ok, :3].std() >= 0.8 * pics["percentile"][ok, :3].std()


def test_balance_of_file_pictures_and_a_reused_fit(store, tmp_path):
    from tessera.store.client import Client

    tif = Client(store).export_tiles_geotiff([WEST], YEAR, tmp_path / "t").written[0]
    out = {b: viz.render_files([tif], tmp_path / f"{b}.png", balance=b, n_sample=800)
           for b in viz.BALANCES}
    assert len({r.png.read_bytes() for r in out.values()}) == 3
    # a saved fit keeps its stretch; adaptive still equalises on top of it
    fit = out["percentile"].pca
    same = viz.render_files([tif], tmp_path / "p2.png", pca=fit, balance="histogram")
    assert same.png.read_bytes() == out["percentile"].png.read_bytes()
    adapt = viz.render_files([tif], tmp_path / "a2.png", pca=fit, balance="adaptive")
    assert adapt.png.read_bytes() == out["adaptive"].png.read_bytes()


def test_equalize_adaptive_locally_stretches_and_keeps_no_data():
    rng = np.random.default_rng(0)
    h, w = 120, 200
    img = np.zeros((h, w, 4), np.uint8)
    # two halves of low contrast around different levels, a transparent band
    img[:, : w // 2, :3] = rng.normal(60, 4, (h, w // 2, 3)).clip(0, 255)
    img[:, w // 2:, :3] = rng.normal(190, 4, (h, w - w // 2, 3)).clip(0, 255)
    img[..., 3] = 255
    img[:10, :, :] = 0
    out = equalize_adaptive(img)
    assert out.dtype == np.uint8 and out.shape == img.shape and img[10, 0, 3] == 255
    np.testing.assert_array_equal(out[..., 3], img[..., 3])
    assert (out[:10] == 0).all(), "transparent pixels must stay as they are"
    left = out[10:, 10: w // 2 - 10, 0].astype(float)
    assert left.std() > 3 * img[10:, 10: w // 2 - 10, 0].std()
    np.testing.assert_array_equal(equalize_adaptive(img), out)  # deterministic
    # a monotone map: brighter stays brighter where the mapping is the same (one tile)
    one = equalize_adaptive(img, tiles=1)
    v = img[10:, :, 1].ravel()
    o = one[10:, :, 1].ravel()
    order = np.argsort(v, kind="stable")
    assert (np.diff(o[order].astype(int)) >= 0).all()
    # lower clip: gentler
    gentle = equalize_adaptive(img, clip=1.0)
    assert gentle[10:, 10: w // 2 - 10, 0].std() < left.std()
    # all transparent: nothing to do; bad inputs are errors
    empty = np.zeros((5, 5, 4), np.uint8)
    np.testing.assert_array_equal(equalize_adaptive(empty), empty)
    with pytest.raises(viz.VizError, match=r"uint8 \(H, W, 4\)"):
        equalize_adaptive(np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(viz.VizError, match="tiles 0"):
        equalize_adaptive(img, tiles=0)


# --- web mercator ----------------------------------------------------------------------------

def test_region_in_web_mercator_covers_the_region(store, tmp_path):
    utm = viz.render_region(store, BBOX, YEAR, tmp_path / "utm.png", n_sample=1500, seed=1)
    res = viz.render_region(store, BBOX, YEAR, tmp_path / "m.png", tmp_path / "m.tif",
                            pca=utm.pca, crs="EPSG:3857")
    assert res.grid.crs.to_epsg() == 3857
    assert world_file_path(res.png) in res.sidecars and world_file_path(res.png).name == "m.pgw"
    with rasterio.open(res.tif) as ds:
        assert ds.crs.to_epsg() == 3857
        tif = np.moveaxis(ds.read(), 0, 2)
        t, (h, w) = ds.transform, (ds.height, ds.width)
    png = read_png(res.png)
    np.testing.assert_array_equal(png, tif)
    # the PNG is georeferenced by its sidecars: GDAL (rasterio) opens it in EPSG:3857
    with rasterio.open(res.png) as ds:
        assert ds.crs.to_epsg() == 3857
        assert tuple(ds.transform)[:6] == pytest.approx(tuple(t)[:6])
    lines = [float(x) for x in world_file_path(res.png).read_text().split()]
    assert lines == pytest.approx([t.a, t.d, t.b, t.e, t.c + t.a / 2, t.f + t.e / 2])
    # covers the region (to a pixel), square pixels, not larger than needed
    west, south, east, north = transform_bounds("EPSG:4326", "EPSG:3857", *BBOX)
    px = abs(t.a)
    assert t.c <= west + px and t.c + w * t.a >= east - px
    assert t.f >= north - px and t.f + h * t.e <= south + px
    assert t.a == pytest.approx(-t.e)
    # nearest neighbour: only colours of the UTM picture; no data stays transparent
    colours = {tuple(c) for c in read_png(utm.png).reshape(-1, 4)}
    assert {tuple(c) for c in png.reshape(-1, 4)} <= colours
    assert (png[png[..., 3] == 0] == 0).all() and (png[..., 3] == 255).mean() > 0.5
    # the middle of the region is drawn
    from pyproj import Transformer
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(6.0, 45.05)
    c, r = ~t * (x, y)
    assert png[int(r), int(c), 3] == 255
    # max_size bounds the reprojected picture too
    small = viz.render_region(store, BBOX, YEAR, tmp_path / "s.png", pca=utm.pca,
                              crs="EPSG:3857", max_size=30)
    assert max(small.grid.width, small.grid.height) <= 30


def test_world_file_without_reprojection_and_bad_crs(store, tmp_path):
    res = viz.render_region(store, [WEST], YEAR, tmp_path / "w.png", world_file=True)
    assert [p.name for p in res.sidecars] == ["w.pgw", "w.png.aux.xml"]
    with rasterio.open(res.png) as ds:
        assert ds.crs == res.grid.crs and tuple(ds.transform)[:6] == pytest.approx(
            tuple(res.grid.transform)[:6])
    with pytest.raises(viz.VizError, match="--crs 'nonsense': not a coordinate reference"):
        viz.render_region(store, [WEST], YEAR, tmp_path / "x.png", crs="nonsense")
    assert not (tmp_path / "x.png").exists()
    ll = viz.render_region(store, [WEST], YEAR, tmp_path / "ll.png", crs="4326")
    assert ll.grid.crs.to_epsg() == 4326 and 5.89 < ll.grid.transform.c < 5.91
