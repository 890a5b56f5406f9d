"""`tessera export` for the GeoTessera / torchgeo ecosystem: --bands, --compress, int8 codes with
their scale band in one file, and --per-tile folders in the layouts torchgeo's
`TesseraEmbeddings` and geotessera read; on a SIMULATED store of four grid tiles."""

import re

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from tessera.cli import app
from tessera.store.client import Client
from tessera.store.synthetic import build_simulated_store

TILES = ["grid_5.95_45.05", "grid_6.05_45.05", "grid_5.95_44.95", "grid_6.05_44.95"]
BBOX = "5.9,44.9,6.1,45.1"
#: torchgeo 0.10.1 `TesseraEmbeddings.filename_regex` (re.VERBOSE)
TORCHGEO_REGEX = re.compile(r"""
    ^grid
    _(?P<lon>[0-9.-]+)
    _(?P<lat>[0-9.-]+)
    _(?P<date>[0-9]{4})
    .tiff$
""", re.VERBOSE)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def export(store, *args):
    return run("export", "--store", store, "--bbox", BBOX, "--year", "2022", *args)


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert "error:" in out and "Traceback" not in out
    out = out[out.index("error:"):]  # after the plan, where the export itself refused
    assert len(out.splitlines()) <= 3  # one message (rich may wrap a long line)
    for f in fragments:
        assert f in " ".join(out.split()), out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    build_simulated_store(root, TILES, years=(2022,), resolution=250.0)
    return root


def test_bands_compress_and_int8_in_one_file(store, tmp_path):
    ref = Client(store).read_region(tuple(map(float, BBOX.split(","))), 2022)
    res = export(store, "-o", tmp_path / "r.tif", "--bands", "0,5,127", "--compress", "zstd")
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "r.tif") as src:
        assert src.count == 3 and src.profile["compress"] == "zstd"
        assert src.descriptions == ("Tessera_Band_0", "Tessera_Band_5", "Tessera_Band_127")
        assert src.tags()["TESSERA_BANDS"] == "0,5,127"
        np.testing.assert_array_equal(src.read().transpose(1, 2, 0),
                                      ref.embeddings[..., [0, 5, 127]])
    res = export(store, "-o", tmp_path / "q.tif", "--dtype", "int8", "--bands", "0-3")
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "q.tif") as src:
        assert src.count == 5 and src.descriptions[-1] == "scale"
        assert src.profile["compress"] == "deflate"  # the default
        assert src.tags()["TESSERA_SCALE_BAND"] == "5"
        d = src.read()
    np.testing.assert_array_equal(d[:4] * d[4][None], ref.embeddings[..., :4].transpose(2, 0, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.tif", "r.tif"]


def test_per_tile_layouts_resume_and_overwrite(store, tmp_path):
    out = tmp_path / "tiles"
    res = export(store, "-o", out, "--per-tile", "--layout", "geotessera", "--bands", "0-7",
                 "--compress", "lzw")
    assert res.exit_code == 0, res.output
    assert "wrote 4 GeoTIFFs" in res.output
    files = sorted(out.glob("**/grid_*.tiff"))  # torchgeo's recursive glob
    assert [p.relative_to(out).parts[:2] for p in files] == \
        [("global_0.1_degree_representation", "2022")] * 4
    for p in files:
        m = TORCHGEO_REGEX.match(p.name)
        assert m and m["date"] == "2022" and p.parent.name == f"grid_{m['lon']}_{m['lat']}"
        with rasterio.open(p) as src:
            assert src.count == 8 and src.profile["compress"] == "lzw"
            tags = src.tags()
            assert (tags["TESSERA_TILE_LON"], tags["TESSERA_TILE_LAT"]) == (m["lon"], m["lat"])
    res = export(store, "-o", out, "--per-tile", "--layout", "geotessera", "--bands", "0-7")
    assert res.exit_code == 0 and "4 already there" in res.output, res.output
    one_line_error(export(store, "-o", out, "--per-tile", "--layout", "geotessera"),
                   "another dtype or other bands", "--overwrite")
    res = export(store, "-o", out, "--per-tile", "--layout", "geotessera", "--overwrite")
    assert res.exit_code == 0 and "wrote 4 GeoTIFFs" in res.output, res.output
    with rasterio.open(files[0]) as src:
        assert src.count == 128

    res = export(store, "-o", tmp_path / "flat", "--per-tile", "--layout", "flat")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == \
        sorted(f"{t}_2022.tiff" for t in TILES)
    res = export(store, "-o", tmp_path / "pub", "--per-tile", "--dtype", "int8")
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "pub" / "2022" / TILES[0] / f"{TILES[0]}_2022.tiff") as src:
        assert src.count == 129 and src.descriptions[128] == "scale"


def test_dry_run_with_bands_writes_nothing(store, tmp_path):
    res = export(store, "-o", tmp_path / "r.tif", "--dry-run")
    res16 = export(store, "-o", tmp_path / "r.tif", "--dry-run", "--bands", "0-15")
    assert res.exit_code == 0 and res16.exit_code == 0, res.output + res16.output
    assert "would write (geotiff)" in res16.output and res.output != res16.output
    res = export(store, "-o", tmp_path / "t", "--per-tile", "--dry-run")
    assert res.exit_code == 0 and "would write (tiles)" in res.output, res.output
    assert list(tmp_path.iterdir()) == []


def test_bad_values_are_one_line_errors(store, tmp_path):
    one_line_error(export(store, "-o", tmp_path / "r.tif", "--bands", "0,128"),
                   "band 128", "128 dimensions")
    one_line_error(export(store, "-o", tmp_path / "r.tif", "--bands", "5-x"), "'5-x'")
    one_line_error(export(store, "-o", tmp_path / "r.tif", "--bands", "3,3"), "twice")
    one_line_error(export(store, "-o", tmp_path / "r.tif", "--compress", "lzma"),
                   "lzma", "deflate, zstd, lzw, none")
    one_line_error(export(store, "-o", tmp_path / "r.tif", "--layout", "flat"), "--per-tile")
    one_line_error(export(store, "-o", tmp_path / "r.tif", "--per-tile"), "folder")
    one_line_error(export(store, "-o", tmp_path / "t", "--per-tile", "--crs", "EPSG:4326"),
                   "--crs")
    one_line_error(export(store, "-o", tmp_path / "t", "--per-tile", "--layout", "torchgeo"),
                   "tessera, geotessera, flat")
    one_line_error(export(store, "-o", tmp_path / "t", "--per-tile", "--layout", "flat",
                          "--dtype", "int8"), "torchgeo", "float32")
    one_line_error(export(store, "-o", tmp_path / "r.zarr", "--bands", "0-3"), "GeoTIFF")
    one_line_error(export(store, "-o", tmp_path / "r.zarr", "--compress", "zstd"), "GeoTIFF")
    assert list(tmp_path.iterdir()) == []
