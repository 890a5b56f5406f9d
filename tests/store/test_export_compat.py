"""Exports that drop into the GeoTessera / torchgeo ecosystem (docs/geotessera_layouts.md
sections 4 and 5): GeoTessera's band names and tags, band subsets, the compressions, int8 codes
and their scales in one file, and per-tile files that torchgeo's `TesseraEmbeddings` finds and
the REAL geotessera 0.11 tile reader loads with the same values; on the SIMULATED store of
tests/store_world.py."""

from __future__ import annotations

import json
import re
import subprocess
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import rasterio
from store_world import BBOX, NE, NW, TILES, YEAR, stored

from tessera.errors import ExistsError, InputError
from tessera.geotiff import read_embeddings, scales_path
from tessera.store.client import ClientError
from tessera.store.export import tile_relpath

ROOT = Path(__file__).resolve().parents[2]
GT011 = ROOT / ".venv-geotessera" / "0.11.0"
#: torchgeo 0.10.1 `TesseraEmbeddings` (datasets/tessera.py): the recursive glob and the
#: verbose regex its RasterDataset matches file names with.
TORCHGEO_GLOB = "grid_*.tiff"
TORCHGEO_REGEX = re.compile(r"""
    ^grid
    _(?P<lon>[0-9.-]+)
    _(?P<lat>[0-9.-]+)
    _(?P<date>[0-9]{4})
    .tiff$
""", re.VERBOSE)
#: geotessera's `tiles._parse_geotiff_filename` (re.match).
GEOTESSERA_REGEX = re.compile(r"grid_(-?\d+\.\d+)_(-?\d+\.\d+)_(\d{4})\.tiff?")


def _tags(path):
    with rasterio.open(path) as src:
        return src.tags()


# --- bands, tags, compression ---------------------------------------------------------------------

def test_geotessera_band_names_and_tags_on_a_band_subset(client, tmp_path):
    full = client.read_region(BBOX, YEAR).embeddings
    path = client.export_geotiff(BBOX, YEAR, tmp_path / "r.tif", bands=[0, 5, 127])
    with rasterio.open(path) as src:
        assert src.count == 3 and src.dtypes == ("float32",) * 3 and np.isnan(src.nodata)
        assert src.descriptions == ("Tessera_Band_0", "Tessera_Band_5", "Tessera_Band_127")
        tags = src.tags()
        np.testing.assert_array_equal(src.read().transpose(1, 2, 0), full[..., [0, 5, 127]])
    assert tags["TESSERA_BANDS"] == "0,5,127" and tags["TESSERA_DTYPE"] == "float32"
    # GeoTessera's tags, beside ours
    assert tags["TESSERA_YEAR"] == "2022" and tags["TESSERA_DATASET_VERSION"] == "simulated-random"
    assert tags["GEOTESSERA_VERSION"].startswith("tessera-eo")
    assert "embedding mosaic" in tags["TESSERA_DESCRIPTION"]
    assert "TESSERA_TILE_LAT" not in tags  # a mosaic is no one tile
    assert tags["TESSERA_VERSION"] == "simulated-random" and tags["TESSERA_MODEL"] == "simulated"
    assert set(tags["TESSERA_TILES"].split(",")) == set(TILES)
    # ranges as text, in the given order
    p2 = client.export_geotiff(BBOX, YEAR, tmp_path / "r2.tif", bands="127,0-2")
    emb, dims = read_embeddings(p2)
    assert dims == (127, 0, 1, 2)
    np.testing.assert_array_equal(emb, full[..., [127, 0, 1, 2]])


@pytest.mark.parametrize("compress", ["lzw", "zstd", "deflate", "none", "ZSTD"])
def test_compressions(client, tmp_path, compress):
    path = client.export_geotiff(BBOX, YEAR, tmp_path / "r.tif", compress=compress, bands="0-7")
    with rasterio.open(path) as src:
        assert src.profile.get("compress") == (None if compress == "none" else compress.lower())
        assert src.profile["tiled"]
        np.testing.assert_array_equal(src.read().transpose(1, 2, 0),
                                      client.read_region(BBOX, YEAR).embeddings[..., :8])


def test_bad_bands_and_compression_are_one_line_errors_before_writing(client, tmp_path):
    cases = [({"bands": [0, 128]}, "128"), ({"bands": "0-200"}, "128 dimensions"),
             ({"bands": [3, 3]}, "twice"), ({"bands": "a"}, "not a band index"),
             ({"bands": []}, "no band"), ({"compress": "lzma"}, "deflate, zstd, lzw, none"),
             ({"dtype": "int16"}, "int8")]
    for kw, said in cases:
        with pytest.raises(InputError, match=said) as exc:
            client.export_geotiff(BBOX, YEAR, tmp_path / "r.tif", **kw)
        assert "\n" not in str(exc.value)
        with pytest.raises(InputError, match=said):
            client.export_tiles_geotiff(BBOX, YEAR, tmp_path / "t", **kw)
    assert list(tmp_path.iterdir()) == []


# --- int8: codes and scales in one file ------------------------------------------------------------

def test_int8_codes_and_scale_band_in_one_file(client, tmp_path, small_windows):
    raw = client.read_region(BBOX, YEAR, dequantize=False)
    f32 = client.export_geotiff(BBOX, YEAR, tmp_path / "f.tif", bands=[1, 64, 127])
    p8 = client.export_geotiff(BBOX, YEAR, tmp_path / "q.tif", dtype="int8", bands=[1, 64, 127])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif", "q.tif"]  # no sibling
    with rasterio.open(p8) as src:  # ONE open gives codes and scales
        assert src.count == 4 and src.dtypes[0] == "float32" and np.isnan(src.nodata)
        assert src.descriptions == ("Tessera_Band_1", "Tessera_Band_64", "Tessera_Band_127",
                                    "scale")
        tags = src.tags()
        data = src.read()
    assert tags["TESSERA_SCALE_BAND"] == "4" and tags["TESSERA_DTYPE"] == "int8"
    assert "band 4" in tags["TESSERA_VALUES"] and tags["TESSERA_BANDS"] == "1,64,127"
    ok = raw.valid
    codes = data[:3].transpose(1, 2, 0)
    np.testing.assert_array_equal(codes[ok], raw.embeddings[ok][:, [1, 64, 127]])  # exact
    assert np.isnan(codes[~ok]).all() and np.isnan(data[3][~ok]).all()
    np.testing.assert_array_equal(data[3][ok], raw.scales[ok])
    # codes * scale is bit for bit the float32 export
    with rasterio.open(f32) as src:
        np.testing.assert_array_equal(data[:3] * data[3][None], src.read())
    emb, dims = read_embeddings(p8)
    assert dims == (1, 64, 127)
    np.testing.assert_array_equal(emb, read_embeddings(f32)[0])


def test_read_embeddings_reads_int8_files_of_earlier_versions(client, tmp_path):
    """Int8 codes (nodata -128) + a sibling `_scales.tif`: what int8 exports used to be."""
    raw = client.read_region(BBOX, YEAR, dequantize=False)
    path = tmp_path / "old.tif"
    h, w, d = raw.embeddings.shape
    prof = dict(driver="GTiff", width=w, height=h, crs=raw.crs, transform=raw.transform)
    codes = np.where(raw.valid[..., None], raw.embeddings, np.int8(-128)).transpose(2, 0, 1)
    with rasterio.open(path, "w", count=d, dtype="int8", nodata=-128, **prof) as dst:
        dst.write(codes)
        for i in range(d):
            dst.set_band_description(i + 1, f"A{i:03d}")
    with rasterio.open(scales_path(path), "w", count=1, dtype="float32", nodata=np.nan,
                       **prof) as dst:
        dst.write(raw.scales[None])
    emb, dims = read_embeddings(path)
    assert dims == tuple(range(128))
    np.testing.assert_array_equal(emb, client.read_region(BBOX, YEAR).embeddings)
    scales_path(path).unlink()
    with pytest.raises(InputError, match="old_scales.tif"):
        read_embeddings(path)


# --- per-tile exports: names, layouts, resume -------------------------------------------------------

@pytest.mark.parametrize("layout", ["tessera", "geotessera", "flat"])
def test_per_tile_names_match_torchgeo_and_geotessera(client, store, tmp_path, layout):
    res = client.export_tiles_geotiff(BBOX, YEAR, tmp_path, layout=layout)
    assert len(res.written) == 4 and res.absent == []
    expect = {"tessera": f"2022/{NW}/{NW}_2022.tiff",
              "geotessera": f"global_0.1_degree_representation/2022/{NW}/{NW}_2022.tiff",
              "flat": f"{NW}_2022.tiff"}[layout]
    assert tmp_path / expect in res.written and tile_relpath(layout, YEAR, NW) == expect
    # what torchgeo's TesseraEmbeddings finds: path/**/grid_*.tiff, then its regex
    found = sorted(tmp_path.glob(f"**/{TORCHGEO_GLOB}"))
    assert found == sorted(res.written)
    for p in found:
        assert fnmatch(p.name, TORCHGEO_GLOB)
        m = TORCHGEO_REGEX.match(p.name)
        assert m and m["date"] == "2022", p.name
        g = GEOTESSERA_REGEX.match(p.name)
        assert g and (float(g[1]), float(g[2]), int(g[3])) == (float(m["lon"]), float(m["lat"]),
                                                               2022)
        name = f"grid_{m['lon']}_{m['lat']}"
        q, s, e = stored(store, name)
        tags = _tags(p)
        assert tags["TESSERA_TILE_LON"] == f"{e.lon:.2f}" == m["lon"]
        assert tags["TESSERA_TILE_LAT"] == f"{e.lat:.2f}" == m["lat"]
        assert tags["TESSERA_DESCRIPTION"] == "GeoTessera satellite embedding tile"
        assert tags["TESSERA_YEAR"] == "2022" and tags["TESSERA_TILES"] == name
        with rasterio.open(p) as src:
            assert src.count == 128 and src.crs.to_string() == e.crs
            assert src.descriptions[5] == "Tessera_Band_5"
            np.testing.assert_array_equal(src.read().transpose(1, 2, 0),
                                          q.astype(np.float32) * s[..., None])
    assert not TORCHGEO_REGEX.match(f"{NW}_2022.tif") and not TORCHGEO_REGEX.match(f"{NW}.tiff")


def test_per_tile_int8_only_in_tessera_layout_and_resume_checks_settings(client, tmp_path):
    for layout in ("geotessera", "flat"):
        with pytest.raises(ClientError, match="torchgeo"):
            client.export_tiles_geotiff(BBOX, YEAR, tmp_path, dtype="int8", layout=layout)
    with pytest.raises(ClientError, match="tessera, geotessera, flat"):
        client.export_tiles_geotiff(BBOX, YEAR, tmp_path, layout="torchgeo")
    assert list(tmp_path.iterdir()) == []

    res = client.export_tiles_geotiff([NW, NE], YEAR, tmp_path, dtype="int8", bands="0-3")
    with rasterio.open(res.written[0]) as src:
        assert src.count == 5 and src.descriptions[-1] == "scale"
        assert src.tags()["TESSERA_SCALE_BAND"] == "5"
    again = client.export_tiles_geotiff([NW, NE], YEAR, tmp_path, dtype="int8", bands=[0, 1, 2, 3])
    assert again.written == [] and sorted(again.skipped) == sorted(res.written)
    for kw in ({"dtype": "int8"}, {"bands": "0-3"}, {"dtype": "int8", "bands": [3, 2, 1, 0]}):
        with pytest.raises(ExistsError, match="another dtype or other bands"):
            client.export_tiles_geotiff([NW, NE], YEAR, tmp_path, **kw)
    res2 = client.export_tiles_geotiff([NW, NE], YEAR, tmp_path, overwrite=True)
    assert sorted(res2.written) == sorted(res.written)
    with rasterio.open(res2.written[0]) as src:
        assert src.count == 128 and src.tags()["TESSERA_DTYPE"] == "float32"


def test_dry_run_counts_the_bands(client):
    full = client.dry_run(BBOX, YEAR, formats=["geotiff", "geotiff-int8", "tiles"])
    some = client.dry_run(BBOX, YEAR, formats=["geotiff", "geotiff-int8", "tiles"],
                          bands="0-15")
    px = full.width * full.height
    assert full.export_bytes["geotiff"] == px * 128 * 4
    assert some.export_bytes["geotiff"] == px * 16 * 4
    assert some.export_bytes["geotiff-int8"] == px * 17 * 4  # codes + the scale band
    assert some.export_bytes["tiles"] * 8 == full.export_bytes["tiles"]
    with pytest.raises(InputError, match="128"):
        client.dry_run(BBOX, YEAR, bands=[128])


# --- the real geotessera 0.11 reads our per-tile exports ---------------------------------------------

PROBE = r'''
import json, socket, sys
ATTEMPTS = []
def _refuse(self, address):
    ATTEMPTS.append(str(address))
    raise OSError(f"network refused by the test: {address}")
socket.socket.connect = _refuse
from pathlib import Path
import numpy as np
import geotessera
from geotessera import tiles
out, npz, points = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
arrays, seen = {}, []
for t in tiles.discover_geotiff_tiles(out):
    arrays[t.grid_name] = t.load_embedding()
    arrays[t.grid_name + "/points"] = t.sample_points(points)
    again = tiles.tile_for_coord(out, t.lon, t.lat, t.year)
    seen.append({"tile": t.grid_name, "lon": t.lon, "lat": t.lat, "year": t.year,
                 "bands": t.band_count, "crs": str(t.crs), "transform": list(t.transform)[:6],
                 "shape": [t.height, t.width],
                 "resolved": None if again is None else
                 str(Path(again._geotiff_path).relative_to(out))})
np.savez(npz, **arrays)
print(json.dumps({"version": geotessera.__version__, "tiles": seen, "network": ATTEMPTS}))
'''


def _geotessera_011() -> Path:
    py = GT011 / "bin" / "python"
    if not (GT011 / ".installed").exists() or not py.exists():
        pytest.skip(f"geotessera 0.11.0 is not installed in {GT011} (run "
                    "scripts/install_geotessera.sh; it needs a Python 3.12)")
    return py


@pytest.mark.parametrize("layout,bands", [("geotessera", None), ("flat", [0, 5, 127])])
def test_real_geotessera_loads_our_per_tile_exports(client, store, tmp_path, layout, bands):
    py = _geotessera_011()
    out = tmp_path / "out"
    res = client.export_tiles_geotiff(BBOX, YEAR, out, layout=layout, bands=bands,
                                      compress="lzw")
    points = [[5.95, 45.05], [6.02, 45.07], [6.08, 44.93], [5.91, 44.99]]
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    run = subprocess.run([str(py), str(probe), str(out), str(tmp_path / "gt.npz"),
                          json.dumps(points)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["version"] == "0.11.0" and seen["network"] == []
    assert sorted(t["tile"] for t in seen["tiles"]) == sorted(TILES)
    got = np.load(tmp_path / "gt.npz")
    idx = list(range(128)) if bands is None else bands
    for t in seen["tiles"]:
        name = t["tile"]
        e = store.manifest().entry(name, YEAR)
        assert (t["lon"], t["lat"], t["year"]) == (e.lon, e.lat, YEAR)
        assert t["bands"] == len(idx) and t["shape"] == [e.height, e.width]
        assert t["crs"] == e.crs and tuple(t["transform"]) == e.transform
        assert out / t["resolved"] in res.written  # tile_for_coord finds it by its name
        ours = client.fetch_tile(name, YEAR)
        np.testing.assert_array_equal(got[name], ours.embeddings[..., idx])  # same band order
        inside = [p for p in points if abs(p[0] - e.lon) < 0.05 and abs(p[1] - e.lat) < 0.05]
        mine, _ = client.sample_points(inside, YEAR)
        sampled = got[name + "/points"]
        np.testing.assert_array_equal(
            sampled[[points.index(p) for p in inside]], mine[:, idx])
