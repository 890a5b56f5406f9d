"""The UNet head on rasters: windowed map prediction (tessera.downstream.predict_map) equal to a
prediction of the whole raster at once, and training patches cut from a label raster and the
embeddings under it (tessera.downstream.patches), from a GeoTIFF or a folder of `tessera embed`
outputs; the map preview's grid (tessera.downstream.preview) capped in size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

import tessera.downstream.unet as unet
from tessera.downstream.heads import Head, make_head
from tessera.downstream.patches import (embedding_grids, raster_patches, read_label_raster)
from tessera.downstream.predict_map import DENSE_TILE, predict_strips
from tessera.downstream.preview import preview_grid
from tessera.errors import InputError
from tessera.store.results import EmbeddingRaster

CRS_UTM = CRS.from_epsg(32631)
ORIGIN = Affine(10, 0, 500000.0, 0, -10, 5600000.0)


def raster(h: int, w: int, d: int = 4, seed: int = 0) -> np.ndarray:
    """(h, w, d) float32 noise with holes of no data (NaN)."""
    x = np.random.default_rng(seed).normal(size=(h, w, d)).astype(np.float32)
    x[100:112, 200:260] = np.nan
    x[:, :3] = np.nan
    return x


@pytest.fixture(scope="module")
def heads() -> dict[str, Head]:
    """A classification and a regression UNet, trained briefly (non-trivial weights)."""
    x = np.nan_to_num(raster(64, 64)).transpose(2, 0, 1)[None].repeat(2, 0)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    kw = {"epochs": 3, "batch_size": 2, "channels": 8, "lr": 1e-2, "seed": 1}
    return {"classification": make_head("unet", classes=["a", "b", "c"], model="m",
                                        **kw).fit_patches(x, y),  # type: ignore[attr-defined]
            "regression": make_head("unet", "regression", model="m",
                                    **kw).fit_patches(x, x[:, 0] * 2)}  # type: ignore


def strips(x: np.ndarray, rows: int, codes: bool = False):
    """The raster as strips of `rows` rows: float32 embeddings, or int8 codes and scales."""
    for r in range(0, x.shape[0], rows):
        e = x[r:r + rows]
        ok = np.isfinite(e).all(axis=2)
        if codes:
            s = np.where(ok, np.abs(np.nan_to_num(e)).max(axis=2) / 127, np.nan
                         ).astype(np.float32)
            q = np.where(ok[..., None], np.rint(np.nan_to_num(e) / np.where(ok, s, 1)[..., None]),
                         0).astype(np.int8)
            yield EmbeddingRaster(q, s, CRS_UTM, ORIGIN * Affine.translation(0, r), 2022)
        else:
            s = np.where(ok, 1.0, np.nan).astype(np.float32)
            yield EmbeddingRaster(e, s, CRS_UTM, ORIGIN * Affine.translation(0, r), 2022)


def dequantised(x: np.ndarray) -> np.ndarray:
    return np.concatenate([s.dequantize() for s in strips(x, 1000, codes=True)])


def map_of(head: Head, x: np.ndarray, rows: int, path: Path, codes: bool = False):
    h, w, d = x.shape
    res = predict_strips(head, strips(x, rows, codes), crs=CRS_UTM, transform=ORIGIN, width=w,
                         height=h, dims=d, out_tif=path, png=path.with_suffix(".png"))
    with rasterio.open(path) as src:
        return res, src.read(), {"crs": src.crs, "transform": src.transform,
                                 "shape": src.shape, "tags": src.tags()}


@pytest.mark.parametrize("codes", [False, True])
def test_windowed_map_equals_the_whole_raster_at_once(heads, tmp_path, codes):
    x = raster(300, 430)  # several windows each way: DENSE_TILE is 192
    assert x.shape[0] > DENSE_TILE and x.shape[1] > 2 * DENSE_TILE
    head = heads["classification"]
    res, data, src = map_of(head, x, 37, tmp_path / "map.tif", codes)
    whole = head.predict_dense((dequantised(x) if codes else x)[None])[0]  # type: ignore
    ok = np.isfinite(x).all(axis=2)
    assert (src["crs"], src["transform"], src["shape"]) == (CRS_UTM, ORIGIN, x.shape[:2])
    assert json.loads(src["tags"]["CLASS_NAMES"]) == ["a", "b", "c"]
    assert res.valid_pixels == ok.sum() and (data[:, ~ok] == 255).all()
    np.testing.assert_array_equal(data[0][ok], whole.argmax(axis=0)[ok])
    conf = np.rint(whole.max(axis=0) * 100)
    assert np.abs(data[1][ok].astype(int) - conf[ok]).max() <= 1  # a rounding at .5 at most
    assert len(np.unique(data[0][ok])) > 1  # not a constant map
    assert res.counts == {c: int((data[0][ok] == i).sum()) for i, c in enumerate("abc")}


def test_too_little_context_changes_the_map(heads, tmp_path, monkeypatch):
    """The context is what makes windows equal the whole: without it the seams show."""
    x = raster(300, 430)
    head = heads["classification"]
    _, full, _ = map_of(head, x, 64, tmp_path / "a.tif")
    monkeypatch.setattr(unet.UNetHead, "context", 0)
    _, seams, _ = map_of(head, x, 64, tmp_path / "b.tif")
    assert (full[0] != seams[0]).any()
    monkeypatch.setattr(unet.UNetHead, "context", 6)
    with pytest.raises(Exception, match="multiple of 4"):
        map_of(head, x, 64, tmp_path / "c.tif")


def test_windowed_regression_map(heads, tmp_path):
    x = raster(230, 250, seed=3)
    head = heads["regression"]
    res, data, _ = map_of(head, x, 50, tmp_path / "v.tif")
    whole = head.predict_dense(x[None])[0, 0]  # type: ignore[attr-defined]
    ok = np.isfinite(x).all(axis=2)
    np.testing.assert_allclose(data[0][ok], whole[ok], rtol=1e-4, atol=1e-4)
    assert np.isnan(data[0][~ok]).all() and res.stats["max"] > res.stats["min"]


def test_dense_prediction_fills_missing_embeddings_with_the_training_mean(heads):
    head = heads["classification"]
    x = raster(40, 40)
    filled = np.where(np.isnan(x), head.fill_values(4), x)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(head.predict_dense(x[None]),  # type: ignore[attr-defined]
                                  head.predict_dense(filled[None]))  # type: ignore
    np.testing.assert_allclose(head.fill_values(4), head.stats["x_mean"])  # type: ignore


# --- training patches ---------------------------------------------------------------------

def write_geotiff(path: Path, x: np.ndarray, transform: Affine = ORIGIN, model: str = "m"
                  ) -> None:
    h, w, d = x.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=d, dtype="float32",
                       nodata=np.nan, crs=CRS_UTM, transform=transform) as dst:
        dst.write(np.moveaxis(x, 2, 0))
        dst.update_tags(model=model, year="2022")


def write_labels(path: Path, lab: np.ndarray, transform: Affine) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=lab.shape[1], height=lab.shape[0],
                       count=1, dtype="uint8", nodata=0, crs=CRS_UTM,
                       transform=transform) as dst:
        dst.write(lab, 1)


def test_patches_of_a_label_raster_and_a_geotiff(tmp_path):
    x = np.random.default_rng(1).normal(size=(40, 50, 3)).astype(np.float32)
    x[5:9, 20:30] = np.nan  # no embedding there
    write_geotiff(tmp_path / "emb.tif", x)
    # labels on the same pixel grid, starting 6 columns further west (outside the embeddings)
    lab = np.zeros((40, 56), np.uint8)
    lab[:, :] = 1 + (np.arange(56) % 3 == 0)
    lab[30:, :] = 0  # rows without labels
    write_labels(tmp_path / "lab.tif", lab, ORIGIN * Affine.translation(-6, 0))
    labels = read_label_raster(tmp_path / "lab.tif")
    assert labels.classes == ["1", "2"] and labels.labelled == 30 * 56
    grids = embedding_grids(tmp_path / "emb.tif", 2022, labels)
    p = raster_patches(labels, grids, 16)
    # tiles of 16 rows (0, 16; rows 32.. hold no labels) x 4 columns (the last padded: 48..63)
    assert p.X.shape == (8, 3, 16, 16) and p.Y.shape == (8, 16, 16)
    assert not np.isnan(p.X).any() and (p.model, p.dims, p.year) == ("m", 3, 2022)
    assert p.dropped == {"outside the embeddings": 30 * 6, "no data": 40}
    assert p.labelled == 30 * 50 - 40 == int((p.Y >= 0).sum())
    # the labels line up with the embeddings: column c of the embeddings is label column c + 6
    want = ((np.arange(50) + 6) % 3 == 0).astype(np.int64)
    assert (p.Y[0, 0, :16] == want[:16]).all() and (p.Y[3, 0, :2] == want[48:50]).all()
    assert (p.Y[3, :, 2:] == -1).all()  # padding: no label
    np.testing.assert_array_equal(p.X[0].transpose(1, 2, 0), x[:16, :16])
    v = x[:32].reshape(-1, 3)  # the pixels of the kept tiles
    mean = v[np.isfinite(v).all(axis=1)].mean(axis=0)
    np.testing.assert_allclose(p.X[1, :, 5, 4], mean, rtol=1e-5)  # x[5, 20]: filled
    assert (p.Y[1, 5:9, 4:14] == -1).all()
    with pytest.raises(InputError, match="patch 4"):
        raster_patches(labels, grids, 4)


def test_patches_from_a_folder_of_embed_outputs_equal_the_geotiffs(tmp_path):
    x = np.random.default_rng(2).normal(size=(24, 20, 3)).astype(np.float32)
    s = (np.abs(x).max(axis=2) / 127).astype(np.float32)
    q = np.rint(x / s[..., None]).astype(np.int8)
    folder = tmp_path / "emb"
    folder.mkdir()
    np.save(folder / "p.npy", q)
    np.save(folder / "p_scales.npy", s)
    write_geotiff(folder / "p.tif", q * s[..., None])
    lab = np.ones((24, 20), np.uint8)
    lab[::2] = 2
    write_labels(tmp_path / "lab.tif", lab, ORIGIN)
    labels = read_label_raster(tmp_path / "lab.tif")
    a = raster_patches(labels, embedding_grids(folder, 2022, labels), 8)
    b = raster_patches(labels, embedding_grids(folder / "p.tif", None, labels), 8)
    assert a.X.shape == b.X.shape == (9, 3, 8, 8) and a.sources == [str(folder / "p.npy")]
    np.testing.assert_allclose(a.X, b.X, rtol=1e-6)
    np.testing.assert_array_equal(a.Y, b.Y)
    with pytest.raises(InputError, match="year"):
        embedding_grids(folder / "p.tif", 2019, labels)


def test_only_label_rasters_make_patches(tmp_path):
    (tmp_path / "p.csv").write_text("lon,lat,label\n1,2,a\n1,3,b\n")
    with pytest.raises(InputError, match="p.csv: a unet head trains on a label raster"):
        read_label_raster(tmp_path / "p.csv")


def test_preview_grid_is_capped():
    lon, lat = np.array([5.0, 5.9]), np.array([45.0, 45.6])  # about 70 x 67 km
    g = preview_grid(lon, lat, 10.0, max_px=512)
    assert max(g.width, g.height) <= 512 and g.resolution % 10 == 0 and g.resolution > 100
    small = preview_grid(lon[:1], lat[:1], 10.0)
    assert small.resolution == 10 and small.width * small.height <= 4
