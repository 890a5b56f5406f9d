"""`tessera embed --precision / --engine` and `tessera embed-points --precision` end to end on
small synthetic inputs: outputs stay int8 + scale, record the precision, and a store year
refuses a second precision."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
from fixtures import one_line_error
from typer.testing import CliRunner

from tessera.bands import S2_BANDS
from tessera.cli import app
from tessera.geo.grid import parse_tile_name
from tessera.quantize import dequantize
from tessera.store.local import LocalStore
from tessera.store.synthetic import simulated_tile_arrays


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_embed_precision_end_to_end(tile_dir, tmp_path):
    base = ("embed", tile_dir, "--model", "tiny", "--no-progress", "--year", "2022",
            "--geotiff", "--geotiff-dtype", "int8")
    ref = run(*base, "-o", tmp_path / "fp32")
    assert ref.exit_code == 0, ref.output
    res = run(*base, "-o", tmp_path / "bf16", "--precision", "bf16")
    assert res.exit_code == 0, res.output
    assert "precision bf16" in " ".join(res.output.split())
    q = np.load(tmp_path / "bf16" / "tile.npy")
    assert q.dtype == np.int8 and q.shape == (16, 12, 128)
    a = dequantize(np.load(tmp_path / "fp32" / "tile.npy"),
                   np.load(tmp_path / "fp32" / "tile_scales.npy"))
    b = dequantize(q, np.load(tmp_path / "bf16" / "tile_scales.npy"))
    ok = np.isfinite(a[..., 0]) & np.isfinite(b[..., 0])
    assert ok.any() and _cos(a[ok], b[ok]).min() >= 0.999
    with rasterio.open(tmp_path / "bf16" / "tile.tif") as src:
        assert src.tags()["precision"] == "bf16" and src.tags()["engine"] == "torch"
    with rasterio.open(tmp_path / "fp32" / "tile.tif") as src:
        assert src.tags()["precision"] == "fp32"


def test_embed_engine_onnx_int8(tile_dir, tmp_path, tmp_path_factory, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    monkeypatch.setenv("TESSERA_ONNX_CACHE", str(tmp_path_factory.getbasetemp() / "onnx-cache"))
    res = run("embed", tile_dir, "-o", tmp_path / "o", "--model", "tiny", "--no-progress",
              "--engine", "onnx", "--precision", "int8", "--geotiff", "--year", "2022")
    assert res.exit_code == 0, res.output
    assert "precision int8-onnx (engine onnx)" in " ".join(res.output.split())
    assert np.load(tmp_path / "o" / "tile.npy").dtype == np.int8
    with rasterio.open(tmp_path / "o" / "tile.tif") as src:
        assert src.tags()["precision"] == "int8-onnx" and src.tags()["engine"] == "onnx"


def test_embed_bad_precision_options(tile_dir, tmp_path):
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "o", "--precision", "fp16"),
                   "precision 'fp16'", "fp32, bf16, int8")
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "o", "--engine", "onnx",
                       "--precision", "bf16"), "'bf16' runs on engine 'torch' only")
    one_line_error(run("embed", tile_dir, "-o", tmp_path / "o", "--engine", "tensorrt"),
                   "engine 'tensorrt'")
    assert not (tmp_path / "o").exists()


def test_store_year_refuses_a_second_precision(tmp_path):
    tile = "grid_6.05_45.05"
    src = tmp_path / "sim"
    res = run("simulate", src, "--grid-tile", tile, "--resolution", 250.0, "--seed", "3")
    assert res.exit_code == 0, res.output
    store = tmp_path / "store"
    args = ("embed", src, "--store", store, "--year", "2022", "--model", "tiny",
            "--no-progress")
    res = run(*args, "--precision", "bf16")
    assert res.exit_code == 0, res.output
    held = LocalStore(store).manifest().entry(tile, 2022)
    assert held.precision == "bf16"
    # a neighbour of the same model, weights and precision: re-embedding the tile at another
    # precision would now mix two in the year (replacing the year's only tile would not)
    other = parse_tile_name("grid_5.95_45.05")
    q, sc, m, g = simulated_tile_arrays(other, 2022, 250.0)
    LocalStore(store).write_tile(other, 2022, q, sc, m, version="x", crs=g.crs,
                                 transform=g.transform, model=held.model, weights=held.weights,
                                 precision="bf16")
    before = (store / "manifest.parquet").read_bytes()
    res = run(*args)  # fp32, the default
    one_line_error(res, "precision bf16", "precision fp32", "one model per year")
    assert (store / "manifest.parquet").read_bytes() == before
    table = pq.read_table(store / "manifest.parquet")
    assert table.column("precision").to_pylist() == ["bf16", "bf16"]


def test_embed_points_precision(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        for m in range(1, 13):
            r = {"sample_id": f"p{i}", "date": f"2022-{m:02d}-15",
                 "VV": rng.uniform(-14, -8), "VH": rng.uniform(-22, -15)}
            r.update({b: float(rng.integers(300, 4000)) for b in S2_BANDS})
            rows.append(r)
    pd.DataFrame(rows).to_csv(tmp_path / "points.csv", index=False)
    out = {}
    for precision in ("fp32", "bf16"):
        res = run("embed-points", tmp_path / "points.csv", "-o", tmp_path / f"{precision}.parquet",
                  "--model", "tiny", "--device", "cpu", "--precision", precision)
        assert res.exit_code == 0, res.output
        meta = json.loads(pq.read_schema(tmp_path / f"{precision}.parquet").metadata[b"tessera"])
        assert meta["precision"] == precision and meta["engine"] == "torch"
        df = pd.read_parquet(tmp_path / f"{precision}.parquet")
        out[precision] = df[[c for c in df.columns if c.startswith("emb_")]].to_numpy(np.float32)
    assert _cos(out["fp32"], out["bf16"]).min() >= 0.999
