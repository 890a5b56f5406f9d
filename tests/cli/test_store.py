"""The store commands end to end on a SIMULATED store of four grid tiles in two UTM zones,
served over loopback by `tessera serve` (a real subprocess) and used by every command."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import rasterio
import zarr
from typer.testing import CliRunner

from tessera.cli import app
from tessera.store.local import LocalStore
from tessera.store.synthetic import build_simulated_store

TILES = ["grid_5.95_45.05", "grid_6.05_45.05", "grid_5.95_44.95", "grid_6.05_44.95"]
BBOX = "5.9,44.9,6.1,45.1"


def run(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    build_simulated_store(root, TILES, years=(2021, 2022), resolution=250.0)
    return root


@pytest.fixture(scope="module")
def url(store):
    """`tessera serve` in a subprocess on a free loopback port."""
    proc = subprocess.Popen([sys.executable, "-m", "tessera.cli", "serve", str(store), "--port",
                             "0", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert m, line + (proc.stdout.read() if proc.poll() is not None else "")
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def test_download_dry_run_then_npy_mirror_over_http(url, store, tmp_path):
    cache = tmp_path / "cache"
    res = run("download", "--store", url, "--bbox", BBOX, "--year", "2022", "--dry-run",
              "--cache", cache)
    assert res.exit_code == 0, res.output
    assert "4 in the store" in res.output and "to download" in res.output
    assert not (tmp_path / "out").exists()

    res = run("download", "--store", url, "--bbox", BBOX, "--year", "2022", "-o",
              tmp_path / "out", "--cache", cache, "--no-progress", "--jobs", "3")
    assert res.exit_code == 0, res.output
    mirror = LocalStore(tmp_path / "out")
    assert sorted(mirror.manifest().tiles()) == sorted(TILES) and mirror.check().ok
    src = LocalStore(store).manifest().entry("grid_6.05_45.05", 2022)
    assert mirror.manifest().entry("grid_6.05_45.05", 2022).files == src.files
    # a second dry run: everything is cached now
    res = run("download", "--store", url, "--bbox", BBOX, "--year", "2022", "--dry-run",
              "--cache", cache)
    assert "0 B to download" in res.output


def test_download_tiff_and_zarr(url, tmp_path):
    res = run("download", "--store", url, "--tile", "grid_5.95_45.05", "--tile",
              "grid_6.05_45.05", "--year", "2021", "-f", "tiff", "-o", tmp_path / "tif",
              "--cache", tmp_path / "c")
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "tif" / "2021" / "grid_6.05_45.05" /
                       "grid_6.05_45.05_2021.tiff") as src:
        assert src.count == 128 and src.crs.to_epsg() == 32632
    res = run("download", "--store", url, "--bbox", BBOX, "--year", "2021", "-f", "zarr",
              "-o", tmp_path / "r.zarr", "--cache", tmp_path / "c")
    assert res.exit_code == 0, res.output
    groups = sorted(k for k, _ in zarr.open_group(tmp_path / "r.zarr", mode="r").groups())
    assert groups == ["utm31", "utm32"]  # GeoTessera's Zarr store layout


def test_sample_points_csv_and_geojson(store, tmp_path):
    pts = pd.DataFrame({"id": [1, 2, 3, 4], "lon": [5.95, 6.05, 5.95, 7.55],
                        "lat": [44.95, 44.95, 45.099, 45.05]})  # valid, valid, sea strip, absent
    pts.to_csv(tmp_path / "p.csv", index=False)
    res = run("sample", tmp_path / "p.csv", "--store", store, "--year", "2022", "-o",
              tmp_path / "s.parquet")
    assert res.exit_code == 0, res.output
    out = pd.read_parquet(tmp_path / "s.parquet")
    assert out["status"].tolist() == ["valid", "valid", "nodata", "outside"]
    assert out["id"].tolist() == [1, 2, 3, 4]
    emb = out.filter(like="emb_").to_numpy()
    assert emb.shape == (4, 128) and np.isfinite(emb[:2]).all() and np.isnan(emb[2:]).all()
    gj = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "a"},
         "geometry": {"type": "Point", "coordinates": [5.95, 44.95]}}]}
    (tmp_path / "p.geojson").write_text(json.dumps(gj))
    res = run("sample", tmp_path / "p.geojson", "--year", "2022", "-o", tmp_path / "g.parquet",
              env={"TESSERA_STORE": str(store)})
    assert res.exit_code == 0, res.output
    g = pd.read_parquet(tmp_path / "g.parquet")
    np.testing.assert_array_equal(g.filter(like="emb_").to_numpy()[0], emb[0])
    assert g["name"].tolist() == ["a"]


def test_export_tif_zarr_visualize_coverage(store, tmp_path):
    res = run("export", "--store", store, "--bbox", BBOX, "--year", "2022", "-o",
              tmp_path / "r.tif")
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "r.tif") as src:
        assert src.crs.to_epsg() == 32632 and src.count == 128  # the zone of the centre (6.0E)
    res = run("export", "--store", store, "--bbox", BBOX, "--year", "2022", "-o",
              tmp_path / "r.tif")
    assert res.exit_code == 2 and "exists" in res.output
    res = run("export", "--store", store, "--bbox", BBOX, "--year", "2022", "-o",
              tmp_path / "r.zarr")
    assert res.exit_code == 0, res.output
    res = run("visualize", "--store", store, "--bbox", BBOX, "--year", "2022", "-o",
              tmp_path / "v.png", "--geotiff", tmp_path / "v.tif", "--pca-out", tmp_path / "p.json")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "p.json").exists()
    res = run("coverage", "--store", store, "-o", tmp_path / "cov.png")
    assert res.exit_code == 0, res.output
    assert "2021" in res.output and "2022" in res.output
    assert (tmp_path / "cov.png").read_bytes()[:4] == b"\x89PNG"


def test_errors_are_one_line(store, url, tmp_path):
    res = run("download", "--store", store, "--tile", "grid_9.95_45.05", "--year", "2022",
              "-o", tmp_path / "x")
    assert res.exit_code == 2 and "grid_9.95_45.05" in res.output
    res = run("export", "--store", store, "--bbox", BBOX, "--year", "2019", "-o",
              tmp_path / "x.tif")
    assert res.exit_code == 2 and "2019" in res.output and "2022" in res.output
    res = run("download", "--store", store, "--bbox", BBOX, "--tile", TILES[0], "--year", "2022")
    assert res.exit_code == 2 and "exactly one" in res.output
    res = run("download", "--store", url, "--bbox", "5.9,44.9", "--year", "2022")
    assert res.exit_code == 2 and "four numbers" in res.output
    res = run("sample", tmp_path / "none.csv", "--store", store, "--year", "2022", "-o",
              tmp_path / "s.parquet")
    assert res.exit_code == 2 and "not found" in res.output


def test_store_check_reports_a_tampered_file(tmp_path):
    root = tmp_path / "s"
    build_simulated_store(root, TILES[:2], resolution=500.0)
    assert run("store", "check", root).exit_code == 0
    f = root / "2022" / TILES[0] / f"{TILES[0]}_scales.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    (root / "2022" / TILES[0] / "stray.npy").write_bytes(b"x")
    res = run("store", "check", root)
    assert res.exit_code == 1
    assert "sha256 differs" in res.output and "stray.npy" in res.output
    # over HTTP the tampered file is refused, nothing corrupt lands in the output
    from tessera.store.server import serve_store

    with serve_store(root) as srv:
        res = run("download", "--store", srv.url, "--tile", TILES[0], "--year", "2022", "-o",
                  tmp_path / "out", "--cache", tmp_path / "c", "--no-progress")
    assert res.exit_code == 2 and "sha256" in res.output
    assert not (tmp_path / "out" / "2022" / TILES[0] / f.name).exists()


def test_interrupted_download_resumes(store, tmp_path, monkeypatch):
    from tessera.store.local import LocalStore as LS

    real, calls = LS.open_file, []

    def flaky(self, f, verify=False):
        calls.append(f.path)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real(self, f, verify)

    monkeypatch.setattr(LS, "open_file", flaky)
    res = run("download", "--store", store, "--bbox", BBOX, "--year", "2022", "-o",
              tmp_path / "m", "--no-progress", "--jobs", "1")
    assert res.exit_code == 2 and "No space" in res.output
    partial = LocalStore(tmp_path / "m")
    rep = partial.check()
    # every listed tile is complete and verified; the failed tile's finished files wait unlisted
    assert 1 <= len(partial.manifest()) < 4 and rep.checked == 3 * len(partial.manifest())
    assert not (rep.missing or rep.size_mismatch or rep.hash_mismatch)
    assert not list((tmp_path / "m").rglob(".*.tmp"))
    monkeypatch.setattr(LS, "open_file", real)
    res = run("download", "--store", store, "--bbox", BBOX, "--year", "2022", "-o",
              tmp_path / "m", "--no-progress")
    assert res.exit_code == 0, res.output
    assert len(LocalStore(tmp_path / "m").manifest()) == 4 and LocalStore(tmp_path / "m").check().ok


def test_export_in_a_geographic_crs_and_polygon_regions(store, tmp_path):
    res = run("export", "--store", store, "--bbox", BBOX, "--year", "2022", "--crs",
              "EPSG:4326", "-o", tmp_path / "ll.tif")
    assert res.exit_code == 2 and "resolution" in res.output
    res = run("export", "--store", store, "--bbox", BBOX, "--year", "2022", "--crs",
              "EPSG:4326", "--resolution", "0.005", "-o", tmp_path / "ll.tif")
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "ll.tif") as src:
        assert src.crs.to_epsg() == 4326 and abs(src.transform.a - 0.005) < 1e-12
        assert src.descriptions[0] == "Tessera_Band_0"
    poly = {"type": "Polygon", "coordinates": [[[5.92, 44.92], [6.08, 44.92], [6.08, 45.08],
                                                [5.92, 45.08], [5.92, 44.92]]]}
    (tmp_path / "r.geojson").write_text(json.dumps(poly))
    res = run("visualize", "--store", store, "--region", tmp_path / "r.geojson", "--year",
              "2022", "-o", tmp_path / "v.png")
    assert res.exit_code == 0, res.output
    assert "4 tiles" in res.output and (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"


def test_sample_names_the_bad_row(store, tmp_path):
    (tmp_path / "bad.csv").write_text("lon,lat\n6.0,45.0\nabc,45.0\n")
    res = run("sample", tmp_path / "bad.csv", "--store", store, "--year", "2022", "-o",
              tmp_path / "s.parquet")
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "bad.csv: column 'lon', row 2: 'abc' is not a number" in out
    assert not (tmp_path / "s.parquet").exists()
