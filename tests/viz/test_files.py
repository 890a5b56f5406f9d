"""tessera.viz pictures of embedding FILES (GeoTIFFs, .npy tiles, Zarr stores): the colours a
store gives its tiles, no-data pixels transparent and never in the fit, GeoTessera's layouts,
and one-line errors for what is not embeddings."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine

from tessera import viz
from tessera.quantize import dequantize
from tessera.store.client import Client
from tessera.store.local import LocalStore
from tessera.viz import pca as pca_module
from tessera.viz.files import View
from tessera.viz.sources import open_inputs

from viz_world import (BBOX, EAST, RES, WEST, YEAR, read_png, tile_arrays, write_geotessera_zarr,
                       write_geotiff)


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory):
    """The store's tiles exported per tile (float32, and int8: codes + a scale band) and as
    one region GeoTIFF, as `tessera export` writes them."""
    root = tmp_path_factory.mktemp("exported")
    client = Client(store)
    f32 = client.export_tiles_geotiff([WEST, EAST], YEAR, root / "f32").written
    i8 = client.export_tiles_geotiff([WEST, EAST], YEAR, root / "i8", dtype="int8").written
    region = client.export_geotiff(BBOX, YEAR, root / "region.tif")
    return {"f32": dict(zip([WEST, EAST], f32)), "i8": dict(zip([WEST, EAST], i8)),
            "region": region, "root": root}


def _store_tile_rgba(store, tile, pca):
    return viz.tile_rgba(store, store.manifest().entry(tile, YEAR), pca)


# --- a file pictures as its store ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["f32", "i8"])
def test_tile_geotiff_gets_its_stores_colours(store, exported, tmp_path, kind):
    """Fitted on its own, a tile's GeoTIFF gets the fit (same sample, same generator) and so the
    colours of the store's tile: bit-identical pictures."""
    tif = exported[kind][WEST]
    res = viz.render_files([tif], tmp_path / "f.png", tmp_path / "f.tif", n_sample=700, seed=4)
    fit = viz.fit_pca(store, [WEST], YEAR, n_sample=700, seed=4)
    for k in ("mean", "components", "lo", "hi"):
        np.testing.assert_array_equal(getattr(res.pca, k), getattr(fit, k))
    want = _store_tile_rgba(store, WEST, fit)
    np.testing.assert_array_equal(read_png(res.png), want)
    e = store.manifest().entry(WEST, YEAR)
    with rasterio.open(res.tif) as ds:
        assert ds.crs == rasterio.crs.CRS.from_user_input(e.crs)
        assert tuple(ds.transform)[:6] == pytest.approx(e.transform)
        np.testing.assert_array_equal(np.moveaxis(ds.read(), 0, 2), want)
        assert ds.tags()["TESSERA_PCA_BALANCE"] == "percentile"
    assert res.pca.year == YEAR and res.inputs == [str(tif)]
    # the store's own picture of the tile (a region of one tile) is the same picture
    reg = viz.render_region(store, [WEST], YEAR, tmp_path / "s.png", n_sample=700, seed=4)
    np.testing.assert_array_equal(read_png(reg.png), want)


def test_region_geotiff_pictures_as_the_store_mosaic(store, exported, tmp_path):
    """The region GeoTIFF exported from a store, coloured with the store picture's fit, is the
    store picture: same grid, same colours wherever both chose the same source pixel (all but a
    few pixels on the tile seams, where the export and the picture pick neighbours in different
    ways)."""
    reg = viz.render_region(store, BBOX, YEAR, tmp_path / "s.png", tmp_path / "s.tif")
    res = viz.render_files([exported["region"]], tmp_path / "f.png", tmp_path / "f.tif",
                           pca=reg.pca)
    a, b = read_png(reg.png), read_png(res.png)
    assert a.shape == b.shape
    assert tuple(res.grid.transform)[:6] == pytest.approx(tuple(reg.grid.transform)[:6])
    assert res.grid.crs == reg.grid.crs
    both = (a[..., 3] > 0) & (b[..., 3] > 0)
    assert both.sum() > 0.98 * max((a[..., 3] > 0).sum(), (b[..., 3] > 0).sum())
    same = (a == b).all(axis=2)
    assert same[both].mean() > 0.99, same[both].mean()
    # every colour of the file picture is a colour of some store pixel
    colours = {tuple(c) for c in a[a[..., 3] > 0]}
    assert all(tuple(c) in colours for c in b[both & ~same])
    # and the saved fit reproduces the picture byte for byte
    reg.pca.save(tmp_path / "p.json")
    again = viz.render_files([exported["region"]], tmp_path / "g.png", pca=tmp_path / "p.json")
    assert again.png.read_bytes() == res.png.read_bytes()


def test_npy_tiles_of_a_store_and_of_geotessera_layouts(store, tmp_path):
    """`grid_X_Y.npy` + `_scales.npy` are georeferenced by the landmask found where the store
    keeps it: tessera's `_mask.tiff` beside the tile, GeoTessera's
    `global_0.1_degree_tiff_all/` above it, or --landmask; alone, a plain PNG."""
    from geotessera_layouts import write_store

    fit = viz.fit_pca(store, [EAST], YEAR, n_sample=500)
    want = _store_tile_rgba(store, EAST, fit)
    e = store.manifest().entry(EAST, YEAR)
    npy = store.open_file(e.files["embeddings"])
    res = viz.render_files([npy], tmp_path / "a.png", pca=fit, crs="EPSG:3857")
    assert res.grid.crs.to_epsg() == 3857  # georeferenced by the _mask.tiff beside it
    res = viz.render_files([npy], tmp_path / "a.png", tmp_path / "a.tif", pca=fit)
    np.testing.assert_array_equal(read_png(res.png), want)
    assert tuple(res.grid.transform)[:6] == pytest.approx(e.transform)
    # given as its scales file, the same tile
    s_npy = store.open_file(e.files["scales"])
    res2 = viz.render_files([s_npy], tmp_path / "b.png", pca=fit)
    assert res2.png.read_bytes() == res.png.read_bytes()
    # GeoTessera's layout: landmask in global_0.1_degree_tiff_all/
    gt = write_store(tmp_path / "gt", "registry", [EAST], [YEAR], resolution=RES)
    g_npy = gt / "global_0.1_degree_representation" / str(YEAR) / EAST / f"{EAST}.npy"
    g = viz.render_files([g_npy], tmp_path / "g.png", tmp_path / "g.tif")
    with rasterio.open(gt / "global_0.1_degree_tiff_all" / f"{EAST}.tiff") as lm:
        assert g.grid.crs == lm.crs and tuple(g.grid.transform) == tuple(lm.transform)
    assert g.pca.year == YEAR and open_inputs([g_npy])[0].tile == EAST
    # alone: a plain picture; a GeoTIFF, a CRS or a world file cannot be placed
    lone = tmp_path / "lone"
    lone.mkdir()
    for f in (npy, s_npy):
        shutil.copy(f, lone / f.name)
    plain = viz.render_files([lone / npy.name], tmp_path / "p.png", pca=fit)
    assert plain.grid is None and plain.sidecars == []
    np.testing.assert_array_equal(read_png(plain.png), want)
    for kw, what in (({"tif_path": tmp_path / "p.tif"}, "--geotiff"),
                     ({"crs": "EPSG:3857"}, "--crs"), ({"world_file": True}, "--world-file")):
        with pytest.raises(viz.VizError, match=f"not georeferenced, so {what}.*--landmask"):
            viz.render_files([lone / npy.name], tmp_path / "q.png", pca=fit, **kw)
    assert not (tmp_path / "q.png").exists() and not (tmp_path / "p.tif").exists()
    # --landmask: a file, or a folder of them
    lm = viz.render_files([lone / npy.name], tmp_path / "l.png", pca=fit,
                          landmask=store.open_file(e.files["mask"]))
    assert tuple(lm.grid.transform)[:6] == pytest.approx(e.transform)
    lmdir = tmp_path / "lms"
    lmdir.mkdir()
    shutil.copy(gt / "global_0.1_degree_tiff_all" / f"{EAST}.tiff", lmdir)
    assert viz.render_files([lone / npy.name], tmp_path / "m.png", pca=fit,
                            landmask=lmdir).grid.crs.to_epsg() == 32632


def test_geotessera_zarr_store(store, tmp_path):
    """GeoTessera's Zarr layout: a zone group with (time, band, y, x) codes and (time, y, x)
    scales, +inf = no data, NaN = water, both transparent; the year picked by --year; the
    tile's pixels get the store's colours (the zone's padding adds no valid pixel, so even the
    fit is the same)."""
    z = tmp_path / "v1.zarr"
    pr, pc = write_geotessera_zarr(z, store, WEST)
    q, s, e = tile_arrays(store, WEST)
    res = viz.render_files([z], tmp_path / "z.png", tmp_path / "z.tif", year=YEAR, n_sample=600)
    fit = viz.fit_pca(store, [WEST], YEAR, n_sample=600)
    np.testing.assert_array_equal(res.pca.components, fit.components)
    got = read_png(res.png)
    assert got.shape[:2] == (e.height + 2 * pr, e.width + 2 * pc)
    np.testing.assert_array_equal(got[pr:pr + e.height, pc:pc + e.width],
                                  _store_tile_rgba(store, WEST, fit))
    pad = np.ones(got.shape[:2], bool)
    pad[pr:pr + e.height, pc:pc + e.width] = False
    assert (got[pad] == 0).all(), "+inf (no data) and NaN (water) must be transparent"
    assert res.grid.crs.to_epsg() == 32631
    assert res.grid.transform.c == pytest.approx(e.affine.c - pc * RES)
    assert res.inputs == [f"{z}/utm31 ({YEAR})"]
    # the other year is another picture; no year is an error for a store of several
    other = viz.render_files([z], tmp_path / "y.png", year=2021, pca=fit)
    assert other.png.read_bytes() != res.png.read_bytes()
    with pytest.raises(viz.VizError, match=r"v1.zarr/utm31: holds 2 years \(2021, 2022\); "
                                           "pass --year"):
        viz.render_files([z], tmp_path / "n.png")
    with pytest.raises(viz.VizError, match="year 2019 is not in it.*2021, 2022"):
        viz.render_files([z], tmp_path / "n.png", year=2019)
    # the group opened directly, and a bbox crop around the tile's centre
    crop = viz.render_files([z / "utm31"], tmp_path / "c.png", year=YEAR, pca=fit,
                            bbox=(5.93, 45.03, 5.97, 45.07))
    assert crop.width < e.width / 2 and crop.height < e.height / 2


def test_tessera_zarr_export_two_zones(store, tmp_path):
    """tessera's own Zarr export (groups utm31n / utm32n, (y, x, band)) mosaics into one grid
    whose colours are the store's at the tiles' centres."""
    z = Client(store).export_zarr(BBOX, YEAR, tmp_path / "r.zarr")
    reg = viz.render_region(store, BBOX, YEAR, tmp_path / "s.png")
    res = viz.render_files([z], tmp_path / "z.png", pca=reg.pca)
    assert len(res.inputs) == 2 and res.grid.crs.to_epsg() == 32632
    got = read_png(res.png)
    for tile, (lon, lat) in ((WEST, (5.95, 45.05)), (EAST, (6.05, 45.05))):
        from pyproj import Transformer
        x, y = Transformer.from_crs("EPSG:4326", res.grid.crs, always_xy=True).transform(lon,
                                                                                         lat)
        c, r = ~res.grid.transform * (x, y)
        q, s, e = tile_arrays(store, tile)
        tx, ty = Transformer.from_crs("EPSG:4326", e.crs, always_xy=True).transform(lon, lat)
        tc, tr = ~e.affine * (tx, ty)
        want = reg.pca.apply(dequantize(q, s)[int(tr):int(tr) + 1, int(tc):int(tc) + 1])[0, 0]
        assert got[int(r), int(c), 3] == 255
        # nearest neighbour across a zone change: the pixel or one of its neighbours
        near = reg.pca.apply(dequantize(q, s)[int(tr) - 1:int(tr) + 2, int(tc) - 1:int(tc) + 2])
        assert any((near[i, j] == got[int(r), int(c)]).all() for i in range(3) for j in range(3))
        assert want[3] == 255


def test_folder_of_geotessera_geotiffs_mosaics_across_zones(store, exported, tmp_path):
    """A folder as GeoTessera exports it (`{year}/grid_X_Y/grid_X_Y_{year}.tiff`), with scales,
    landmasks and pictures beside: the embedding GeoTIFFs only, mosaicked into one grid."""
    folder = exported["root"] / "i8"
    (folder / "global_0.1_degree_tiff_all").mkdir(exist_ok=True)
    lm = store.open_file(store.manifest().entry(WEST, YEAR).files["mask"])
    shutil.copy(lm, folder / "global_0.1_degree_tiff_all" / f"{WEST}.tiff")
    viz.render_tiles(store, [WEST], YEAR, folder / "pictures")  # RGB GeoTIFFs: skipped
    np.save(folder / "labels.npy", np.zeros((3, 4)))             # not a tile: skipped
    (folder / "README.txt").write_text("tiles")
    rasters = open_inputs([folder])
    assert [r.tile for r in rasters] == [WEST, EAST] and all(r.year == YEAR for r in rasters)
    reg = viz.render_region(store, [WEST, EAST], YEAR, tmp_path / "s.png")
    res = viz.render_files([folder], tmp_path / "f.png", pca=reg.pca)
    assert res.grid.crs.to_epsg() == 32632 and len(res.inputs) == 2
    # the picture covers the files' rasters (a little more than the tiles' cells), on the
    # store picture's pixel lattice
    a, b = read_png(reg.png), read_png(res.png)
    ta, tb = reg.grid.transform, res.grid.transform
    dc, dr = (ta.c - tb.c) / ta.a, (tb.f - ta.f) / ta.a
    assert tb.a == ta.a and dc == int(dc) and dr == int(dr) and dc >= 0 and dr >= 0
    b = b[int(dr):int(dr) + a.shape[0], int(dc):int(dc) + a.shape[1]]
    assert b.shape == a.shape
    both = (a[..., 3] > 0) & (b[..., 3] > 0)
    assert both.sum() > 0.95 * (a[..., 3] > 0).sum()
    assert (a[both] == b[both]).all(axis=1).mean() > 0.97
    with pytest.raises(viz.VizError, match="no embeddings of year 2019 in this folder"):
        viz.render_files([folder], tmp_path / "x.png", year=2019)


def test_several_tiles_of_one_zone_share_the_lattice(store, exported, tmp_path):
    """Inputs on one CRS and pixel lattice mosaic without resampling: each input's pixels land
    unchanged in the picture."""
    tif = exported["f32"][WEST]
    with rasterio.open(tif) as ds:
        data, crs, t, desc = ds.read(), ds.crs, ds.transform, ds.descriptions
    # the tile cut in two files along a row, the lower one shifted by whole pixels
    top = write_geotiff(tmp_path / "top.tif", data[:, :20], crs, t, nodata=np.nan)
    bottom = write_geotiff(tmp_path / "bottom.tif", data[:, 20:], crs,
                           t * Affine.translation(0, 20), nodata=np.nan, descriptions=desc)
    fit = viz.fit_pca(store, [WEST], YEAR, n_sample=500)
    res = viz.render_files([top, bottom], tmp_path / "m.png", pca=fit)
    np.testing.assert_array_equal(read_png(res.png), _store_tile_rgba(store, WEST, fit))
    assert tuple(res.grid.transform)[:6] == pytest.approx(tuple(t)[:6])
    # max_size: every k-th pixel, the transform k times coarser, the colours the tile's
    small = viz.render_files([tif], tmp_path / "s.png", pca=fit, max_size=12)
    full = _store_tile_rgba(store, WEST, fit)
    k = -(-max(full.shape[:2]) // 12)
    assert k > 1 and max(small.width, small.height) <= 12
    assert small.grid.transform.a == pytest.approx(t.a * k)
    v = View.of(open_inputs([tif])[0], step=k)
    assert list(v.rows[:2]) == [k // 2, k + k // 2]  # the middle pixel of each k x k block
    np.testing.assert_array_equal(read_png(small.png), full[np.ix_(v.rows, v.cols)])


# --- no data ----------------------------------------------------------------------------------

def test_nan_and_inf_pixels_are_transparent_and_never_fitted(store, tmp_path, monkeypatch):
    q, s, e = tile_arrays(store, WEST)
    emb = dequantize(q, s)  # NaN where the store has no data
    emb[5, 6] = np.inf            # one infinite pixel
    emb[7, 8, 100] = np.nan       # one NaN value makes a pixel no data
    emb[9, :, 3] = -np.inf
    bad = ~np.isfinite(emb).all(axis=2)
    assert bad.sum() > 300 and (~bad).sum() > 500
    tif = write_geotiff(tmp_path / "gt.tif", np.moveaxis(emb, 2, 0).astype(np.float32), e.crs,
                        e.affine, descriptions=[f"Tessera_Band_{i}" for i in range(128)],
                        tags={"TESSERA_YEAR": "2022"})  # GeoTessera 0.7: no nodata
    seen = []
    real = pca_module.fit_sample
    monkeypatch.setattr("tessera.viz.files.fit_sample",
                        lambda x, **k: seen.append(np.array(x)) or real(x, **k))
    res = viz.render_files([tif], tmp_path / "a.png", n_sample=10 ** 6)
    assert len(seen) == 1 and np.isfinite(seen[0]).all()
    assert len(seen[0]) == int((~bad).sum()), "every valid pixel, and only those, in the fit"
    got = read_png(res.png)
    np.testing.assert_array_equal(got[..., 3] == 0, bad)
    assert (got[bad] == 0).all()
    # scales: NaN (water) and +inf (GeoTessera's no data) in an int8 GeoTIFF's _scales.tif
    s2 = s.copy()
    s2[10, 10], s2[11, 11] = np.nan, np.inf
    codes = np.where(np.isfinite(s2)[None], np.moveaxis(q, 2, 0), -128).astype(np.int8)
    write_geotiff(tmp_path / "c.tif", codes, e.crs, e.affine, nodata=-128)
    write_geotiff(tmp_path / "c_scales.tif", s2[None], e.crs, e.affine, nodata=np.nan)
    res = viz.render_files([tmp_path / "c.tif"], tmp_path / "c.png")
    np.testing.assert_array_equal(read_png(res.png)[..., 3] > 0, np.isfinite(s2))


def test_all_no_data_is_an_error_not_an_empty_picture(store, tmp_path):
    e = store.manifest().entry(WEST, YEAR)
    nan = np.full((128, 6, 7), np.nan, np.float32)
    tif = write_geotiff(tmp_path / "nan.tif", nan, e.crs, e.affine, nodata=np.nan)
    with pytest.raises(viz.VizError, match=r"nan.tif: no valid pixels \(every pixel is no "
                                           "data"):
        viz.render_files([tif], tmp_path / "nan.png")
    fit = viz.fit_pca(store, [WEST], YEAR, n_sample=300)
    with pytest.raises(viz.VizError, match="nan.tif: no valid pixels to draw"):
        viz.render_files([tif], tmp_path / "nan.png", pca=fit)
    assert not (tmp_path / "nan.png").exists()
    two = np.full((128, 6, 7), np.nan, np.float32)
    two[:, 1, 1] = two[:, 2, 2] = 0.5
    write_geotiff(tmp_path / "two.tif", two, e.crs, e.affine)
    with pytest.raises(viz.VizError, match="2 valid pixel.*at least 3"):
        viz.render_files([tmp_path / "two.tif"], tmp_path / "two.png")
    # a GeoTessera Zarr year without data (all +inf) likewise
    z = tmp_path / "empty.zarr"
    write_geotessera_zarr(z, store, WEST, years=(YEAR,))
    import zarr
    zarr.open_group(str(z), mode="r+")["utm31"]["scales"][:] = np.inf
    with pytest.raises(viz.VizError, match="no valid pixels"):
        viz.render_files([z], tmp_path / "z.png")
    # and a store region whose tiles hold nothing, drawn with a given fit
    from tessera.store.synthetic import simulated_tile_arrays
    from tessera.geo import parse_tile_name
    empty = LocalStore(tmp_path / "emptystore")
    qq, ss, m, g = simulated_tile_arrays(parse_tile_name(WEST), YEAR, RES)
    ss[:] = np.nan
    empty.write_tile(WEST, YEAR, qq, ss, m, version="t", crs=g.crs, transform=g.transform)
    with pytest.raises(viz.VizError, match="no valid pixels to draw"):
        viz.render_region(empty, [WEST], YEAR, tmp_path / "r.png", pca=fit)
    assert not (tmp_path / "r.png").exists()


# --- scales inside the file ---------------------------------------------------------------------

def test_scales_inside_the_geotiff_are_read_defensively(store, tmp_path):
    """Int8 codes with their scales in the file itself: a tag TESSERA_SCALE_BAND naming the band
    (a float band holding codes and scale), or 4 integer bands holding the float32 bytes; and a
    band described 'scale'. All give the store's colours."""
    q, s, e = tile_arrays(store, WEST)
    fit = viz.fit_pca(store, [WEST], YEAR, n_sample=500)
    want = _store_tile_rgba(store, WEST, fit)
    codes = np.moveaxis(q, 2, 0)
    # float file: 128 code bands + the scale band, named by the tag
    f = np.concatenate([codes.astype(np.float32), s[None]])
    write_geotiff(tmp_path / "a.tif", f, e.crs, e.affine, tags={"TESSERA_SCALE_BAND": "129"})
    # int8 file: the scale's 4 bytes in bands 129-132
    by = np.ascontiguousarray(s.astype("<f4")).view(np.uint8).reshape(s.shape + (4,))
    i8 = np.concatenate([codes, np.moveaxis(by, 2, 0).view(np.int8)])
    write_geotiff(tmp_path / "b.tif", i8, e.crs, e.affine,
                  tags={"TESSERA_SCALE_BAND": "129-132"})
    # no tag: a band described "scale" (first band here)
    c = np.concatenate([s[None], codes.astype(np.float32)])
    write_geotiff(tmp_path / "c.tif", c, e.crs, e.affine, descriptions=["scale"])
    for name in ("a", "b", "c"):
        res = viz.render_files([tmp_path / f"{name}.tif"], tmp_path / f"{name}.png", pca=fit)
        np.testing.assert_array_equal(read_png(res.png), want, err_msg=name)
        assert open_inputs([tmp_path / f"{name}.tif"])[0].dim == 128
    write_geotiff(tmp_path / "d.tif", f, e.crs, e.affine, tags={"TESSERA_SCALE_BAND": "400"})
    with pytest.raises(viz.VizError, match=r"d.tif: tag TESSERA_SCALE_BAND='400' names bands "
                                           r"outside 1..129"):
        viz.render_files([tmp_path / "d.tif"], tmp_path / "d.png", pca=fit)


# --- what is not embeddings ---------------------------------------------------------------------

def test_unknown_inputs_give_one_line_errors(store, exported, tmp_path):
    e = store.manifest().entry(WEST, YEAR)

    def fails(path, match, **kw):
        with pytest.raises(viz.VizError, match=match) as info:
            viz.render_files([path], tmp_path / "x.png", **kw)
        assert "\n" not in str(info.value)

    (tmp_path / "notes.txt").write_text("hello")
    fails(tmp_path / "notes.txt", r"notes.txt: not a file of embeddings.*expected a GeoTIFF")
    fails(tmp_path / "missing.tif", "missing.tif: no such file or directory")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    fails(tmp_path / "broken.tif", "broken.tif: not a readable GeoTIFF")
    fails(store.open_file(e.files["mask"]), r"_mask.tiff: a mask or landmask, not embeddings")
    pic = viz.render_tiles(store, [WEST], YEAR, tmp_path / "pics")[0].tif
    fails(pic, r"an RGB picture \(uint8 RGBA\), not embeddings")
    lone = tmp_path / "lone"
    lone.mkdir()
    q, _, _ = tile_arrays(store, WEST)  # int8 codes as earlier versions wrote them
    write_geotiff(lone / "t.tif", np.moveaxis(q, 2, 0), e.crs, e.affine, nodata=-128)
    fails(lone / "t.tif", r"t.tif: int8 codes without their scales \(expected t_scales.tif")
    np.save(lone / "q.npy", np.zeros((4, 5, 128), np.int8))
    fails(lone / "q.npy", r"q.npy: int8 codes without their scales \(expected q_scales.npy")
    np.save(lone / "flat.npy", np.zeros((4, 128), np.float32))
    fails(lone / "flat.npy", r"flat.npy: an array of shape \(4, 128\), expected \(H, W, D\)")
    np.save(lone / "narrow.npy", np.zeros((4, 5, 2), np.float32))
    fails(lone / "narrow.npy", "narrow.npy: 2 embedding dimension")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "empty: no embedding files in this folder")
    import zarr
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_array("a", shape=(2,),
                                                                         dtype="f4")
    fails(tmp_path / "other.zarr", "other.zarr: a Zarr without embeddings")
    fails(exported["f32"][WEST], "balance 'vivid'", balance="vivid")
    fails(exported["f32"][WEST], r"--crs 'EPSG:999999': not a coordinate reference system",
          crs="EPSG:999999")
    fails(exported["f32"][WEST], r"bbox \(10.0, 50.0, 10.1, 50.1\): none of the inputs covers "
                                 "it", bbox=(10.0, 50.0, 10.1, 50.1))
    fails(exported["f32"][WEST], f"holds year {YEAR}, not 2019", year=2019)
    small = viz.PcaRgb(mean=np.zeros(4), components=np.eye(4)[:3], lo=np.zeros(3),
                       hi=np.ones(3))
    fails(exported["f32"][WEST], "128-d embeddings, but the PCA was fitted on 4-d", pca=small)
    with pytest.raises(viz.VizError, match="inputs of several years"):
        open_inputs([exported["f32"][WEST],
                     Client(store).export_tiles_geotiff([WEST], 2021,
                                                        tmp_path / "y21").written[0]])
    assert not (tmp_path / "x.png").exists()


def test_pca_json_of_a_file_fit_round_trips(store, exported, tmp_path):
    res = viz.render_files([exported["f32"][EAST]], tmp_path / "a.png", n_sample=400, seed=2)
    doc = json.loads(res.pca.save(tmp_path / "p.json").read_text())
    assert doc["tiles"] == [EAST] and doc["year"] == YEAR and doc["n_sample"] == 400
    again = viz.render_files([exported["f32"][EAST]], tmp_path / "b.png", pca=tmp_path / "p.json")
    assert again.png.read_bytes() == res.png.read_bytes()


@pytest.mark.parametrize("max_size", [4096, 17])
def test_streamed_reads_equal_held_reads(store, exported, tmp_path, monkeypatch, max_size):
    """Large inputs are read in strips (a few rows at a time, every k-th pixel) instead of held
    in memory: the pictures and fits are the same."""
    from tessera.viz import files, sources

    z = tmp_path / "gt.zarr"
    write_geotessera_zarr(z, store, EAST)
    e = store.manifest().entry(WEST, YEAR)
    inputs = [[exported["f32"][WEST]], [exported["i8"][EAST]],
              [store.open_file(e.files["embeddings"])], [z],
              [exported["f32"][WEST], exported["i8"][EAST]]]

    def pictures(tag):
        out = []
        for i, inp in enumerate(inputs):
            r = viz.render_files(inp, tmp_path / f"{tag}{i}.png", year=YEAR, n_sample=900,
                                 max_size=max_size)
            out.append((r.png.read_bytes(), json.dumps(r.pca.to_json())))
        return out

    held = pictures("held")
    monkeypatch.setattr(files, "CACHE_VALUES", 0)
    monkeypatch.setattr(files, "STRIP_VALUES", 128 * 150)   # a few rows per strip
    monkeypatch.setattr(sources, "READ_VALUES", 129 * 200)  # GeoTIFF windows of a few rows
    assert pictures("streamed") == held
