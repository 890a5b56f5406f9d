"""`tessera head train --head unet` and `head predict` with it, end to end, on SYNTHETIC rasters
whose classes are a spatial function of the embeddings (the sign of a 5 x 5 mean of one
dimension: a pixel head sees no more than chance there, a UNet learns it); and `head evaluate`'s
map preview (map_preview.png) or, without a raster to draw, the reason in report.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from scipy.ndimage import uniform_filter
from typer.testing import CliRunner

from tessera.cli import app
from tessera.downstream.heads import Head
from tessera.store.client import Client
from tessera.store.synthetic import build_simulated_store

TILES = ["grid_5.95_45.05", "grid_6.05_45.05", "grid_5.95_44.95", "grid_6.05_44.95"]
BBOX = "5.9,44.9,6.1,45.1"
TRANSFORM = Affine(10, 0, 500000.0, 0, -10, 5600000.0)
runner = CliRunner()


def run(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args])


def spatial_classes(e: np.ndarray) -> np.ndarray:
    """Classes 1 / 2 / 3 (uint8) from the 5 x 5 mean of embedding dimension 0."""
    field = uniform_filter(e[..., 0].astype(np.float64), size=5, mode="nearest")
    return np.where(field > 0.12, 2, np.where(field < -0.12, 1, 3)).astype(np.uint8)


def write_pair(root: Path, seed: int, h: int = 96, w: int = 80, d: int = 6) -> np.ndarray:
    """emb{seed}.tif (float32 embeddings of model `synthetic`, 2022) and lab{seed}.tif (its
    classes; the first 8 columns unlabelled, nodata 0) on one UTM grid; returns the classes."""
    e = np.random.default_rng(seed).normal(size=(h, w, d)).astype(np.float32)
    lab = spatial_classes(e)
    prof = dict(driver="GTiff", width=w, height=h, crs="EPSG:32631", transform=TRANSFORM)
    with rasterio.open(root / f"emb{seed}.tif", "w", count=d, dtype="float32", nodata=np.nan,
                       **prof) as dst:
        dst.write(np.moveaxis(e, 2, 0))
        dst.update_tags(model="synthetic", year="2022")
    partial = lab.copy()
    partial[:, :8] = 0
    with rasterio.open(root / f"lab{seed}.tif", "w", count=1, dtype="uint8", nodata=0,
                       **prof) as dst:
        dst.write(partial, 1)
    return lab


def test_unet_from_a_label_raster_to_a_map_of_another_raster(tmp_path: Path) -> None:
    write_pair(tmp_path, 1)
    truth = write_pair(tmp_path, 2)
    res = run("head", "train", tmp_path / "lab1.tif", "--head", "unet", "--embeddings",
              tmp_path / "emb1.tif", "--patch", 16, "-o", tmp_path / "u.safetensors",
              "--param", "epochs=30", "--param", "channels=8", "--param", "lr=0.01",
              "--no-progress")
    assert res.exit_code == 0, res.output
    assert "unet head, 3 classes, 6912 labelled pixels in 30 patches of 16 x 16" in res.output
    h = Head.load(tmp_path / "u.safetensors")
    assert (h.info.kind, h.info.model, h.info.dims, h.info.classes) == (
        "unet", "synthetic", 6, ["1", "2", "3"])
    assert len(h.info.fingerprint) == 64 and h.info.extra["patch"] == 16
    assert h.info.n_train == 6912  # labelled pixels only: the unlabelled columns are no loss

    res = run("head", "predict", tmp_path / "u.safetensors", "--embeddings",
              tmp_path / "emb2.tif", "-o", tmp_path / "map.tif", "--compare",
              tmp_path / "lab2.tif", "--no-progress")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "map.png").is_file() and (tmp_path / "map_vs_labels.png").is_file()
    with rasterio.open(tmp_path / "map.tif") as m, rasterio.open(tmp_path / "emb2.tif") as e:
        assert (m.crs, m.transform, m.shape) == (e.crs, e.transform, e.shape)
        names = json.loads(m.tags()["CLASS_NAMES"])
        assert names == ["1", "2", "3"] and m.tags()["TESSERA_HEAD"] == "unet"
        assert len({m.colormap(1)[i][:3] for i in range(3)}) == 3
        cls, conf = m.read(1), m.read(2)
    pred = np.asarray(names, int)[cls]
    acc = float((pred == truth).mean())
    majority = np.bincount(truth.ravel()).max() / truth.size
    # chance (the majority class) is 0.46, and so is the best pixel-wise head (logistic
    # regression on each pixel's own embedding: 0.47); the UNet sees the neighbourhood
    assert acc > majority + 0.2, (acc, majority)
    assert (conf <= 100).all() and conf.mean() > 50


def test_unet_from_a_store(tmp_path: Path) -> None:
    """Labels on a store's mosaic grid: trained from -s STORE, mapped from it with --bbox; the
    map's grid is the label raster's."""
    st = build_simulated_store(tmp_path / "store", TILES, [2022], resolution=200.0)
    region = Client(st).read_region((5.9, 44.9, 6.1, 45.1), 2022)
    e = np.nan_to_num(region.embeddings)
    lab = 1 + (uniform_filter(e[..., 0] + e[..., 1], size=3) > 0).astype(np.uint8)
    lab[~np.isfinite(region.scales)] = 0
    h, w = lab.shape
    with rasterio.open(tmp_path / "lab.tif", "w", driver="GTiff", width=w, height=h, count=1,
                       dtype="uint8", nodata=0, crs=region.crs,
                       transform=region.transform) as dst:
        dst.write(lab, 1)
    res = run("head", "train", tmp_path / "lab.tif", "--head", "unet", "-s", tmp_path / "store",
              "--year", 2022, "--patch", 32, "-o", tmp_path / "u.safetensors", "--param",
              "epochs=15", "--param", "channels=8", "--param", "lr=0.01", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "of simulated (128 dims)" in res.output
    res = run("head", "predict", tmp_path / "u.safetensors", "-s", tmp_path / "store", "--year",
              2022, "--bbox", BBOX, "-o", tmp_path / "map.tif", "--no-progress")
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "map.tif") as m:
        assert (m.crs, m.transform, m.shape) == (region.crs, region.transform, lab.shape)
        cls = m.read(1)
    ok = lab > 0
    agree = float((cls[ok] + 1 == lab[ok]).mean())
    assert agree > max(np.bincount(lab[ok]).max() / ok.sum(), 0.5) + 0.1, agree


def test_unet_needs_a_label_raster_and_is_not_evaluated(tmp_path: Path) -> None:
    pd.DataFrame({"lon": [6.0, 6.01], "lat": [45.0, 45.01], "label": ["a", "b"]}).to_csv(
        tmp_path / "p.csv", index=False)
    res = run("head", "train", tmp_path / "p.csv", "--head", "unet", "--embeddings",
              tmp_path / "e.tif", "-o", tmp_path / "u.safetensors")
    assert res.exit_code == 2 and "p.csv: a unet head trains on a label raster" in res.output
    res = run("head", "train", tmp_path / "p.csv", "--head", "unet", "-o", tmp_path / "u.st")
    assert res.exit_code == 2 and "--embeddings FILE.tif" in res.output
    res = run("head", "train", tmp_path / "p.csv", "--patch", 32, "-s", tmp_path, "--year", 2022,
              "-o", tmp_path / "h.skops")
    assert res.exit_code == 2 and "--head unet" in res.output
    res = run("head", "evaluate", tmp_path / "p.csv", "--heads", "logistic,unet", "-o",
              tmp_path / "rep")
    assert res.exit_code == 2 and "head evaluate scores pixel heads only" in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store and points labelled by the sign of emb_0 + emb_1."""
    root = tmp_path_factory.mktemp("preview")
    st = build_simulated_store(root / "store", TILES, [2022], resolution=200.0)
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(5.92, 6.08, 300), rng.uniform(44.93, 45.07, 300)
    e, status = Client(st).sample_points((lon, lat), 2022)
    ok = status == "valid"
    label = np.where(e[:, 0] + e[:, 1] > 0, "crop", "grass")
    pd.DataFrame({"lon": lon[ok], "lat": lat[ok], "label": label[ok]}).to_csv(
        root / "points.csv", index=False)
    return root


def test_evaluate_draws_a_map_preview_of_the_labels_area(world: Path, tmp_path: Path) -> None:
    res = run("head", "evaluate", world / "points.csv", "-s", world / "store", "--year", 2022,
              "-o", tmp_path / "rep", "--heads", "logistic", "--seeds", 0, "--fractions", 1,
              "--k", 3, "--block-size", 5000, "--no-progress")
    assert res.exit_code == 0, res.output
    png = tmp_path / "rep" / "map_preview.png"
    assert png.is_file() and str(png) in res.output
    what = json.loads((tmp_path / "rep" / "report.json").read_text())["meta"]["map_preview"]
    assert what.startswith("map_preview.png: ") and "logistic head" in what
    assert "all " in what and "of 200 m (EPSG:326" in what
    assert what in (tmp_path / "rep" / "summary.md").read_text()
    from PIL import Image

    with Image.open(png) as im:  # the box (about 13 x 16 km at 200 m) plus its legend
        assert 200 < im.size[0] < 800 and 100 < im.size[1] < 600
        px = np.asarray(im.convert("RGB")).reshape(-1, 3)
    from tessera.downstream.predict_map import class_colors

    for rgb in class_colors(["crop", "grass"]):  # both classes drawn in their colours
        assert (px == rgb).all(axis=1).sum() > 100


def test_evaluate_says_why_there_is_no_map_preview(world: Path, tmp_path: Path) -> None:
    """An embedded point table without a store: nothing to draw, and report.json says so."""
    res = run("sample", world / "points.csv", "--year", 2022, "-s", world / "store", "-o",
              tmp_path / "emb.parquet")
    assert res.exit_code == 0, res.output
    args = ["head", "evaluate", tmp_path / "emb.parquet", "-o", tmp_path / "rep", "--heads",
            "logistic", "--seeds", 0, "--fractions", 1, "--k", 3, "--no-progress"]
    res = runner.invoke(app, [str(a) for a in args], env={"TESSERA_STORE": None})
    assert res.exit_code == 0, res.output
    what = json.loads((tmp_path / "rep" / "report.json").read_text())["meta"]["map_preview"]
    assert what.startswith("none: ") and "no --store" in what
    assert not (tmp_path / "rep" / "map_preview.png").exists()
