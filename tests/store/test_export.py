"""Exports of a region: one GeoTIFF (float32 / int8 + scales), per-tile GeoTIFFs and Zarr;
interruptions and a full disk leave nothing corrupt; on the SIMULATED store of
tests/store_world.py."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import rasterio
from store_world import BBOX, NE, NW, SE, SW, TILES, YEAR, stored

import tessera.geotiff
from tessera.store.client import MissingTilesWarning
from tessera.store.layout import geotiff_relpath


# --- GeoTIFF ----------------------------------------------------------------------------------------

def test_export_geotiff_matches_read_region(client, tmp_path, small_windows):
    m = client.read_region(BBOX, YEAR)
    path = client.export_geotiff(BBOX, YEAR, tmp_path / "out" / "r.tif")
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32632 and src.transform == m.transform
        assert src.count == 128 and src.dtypes[0] == "float32" and np.isnan(src.nodata)
        assert src.descriptions[0] == "Tessera_Band_0"  # GeoTessera's names
        assert src.descriptions[127] == "Tessera_Band_127"
        tags = src.tags()
        assert tags["TESSERA_YEAR"] == "2022" and tags["TESSERA_VERSION"] == "simulated-random"
        assert set(tags["TESSERA_TILES"].split(",")) == set(TILES)
        assert src.profile["tiled"] and src.profile["compress"] == "deflate"
        assert src.block_shapes[0] == (32, 32)
        np.testing.assert_array_equal(src.read().transpose(1, 2, 0), m.embeddings)
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.tif"]
    with pytest.raises(FileExistsError):
        client.export_geotiff(BBOX, YEAR, path)

    raw = client.read_region(BBOX, YEAR, dequantize=False)
    p8 = client.export_geotiff(BBOX, YEAR, tmp_path / "r8.tif", dtype="int8", compress="zstd")
    with rasterio.open(p8) as src:  # one file: the codes (exact, as float32) + a scale band
        assert src.dtypes[0] == "float32" and np.isnan(src.nodata) and src.count == 129
        assert src.descriptions[128] == "scale" and src.tags()["TESSERA_SCALE_BAND"] == "129"
        data = src.read().transpose(1, 2, 0)
        expect = np.where(raw.valid[..., None], raw.embeddings.astype(np.float32), np.nan)
        np.testing.assert_array_equal(data[..., :128], expect)
        np.testing.assert_array_equal(data[..., 128], raw.scales)
    assert not (tmp_path / "r8_scales.tif").exists()


def test_interrupted_geotiff_export_leaves_no_file_and_rerun_completes(client, tmp_path,
                                                                        monkeypatch,
                                                                        small_windows):
    real = tessera.geotiff.write_window
    calls = []

    def dying(dst, data, win):
        calls.append(win)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way
        real(dst, data, win)

    monkeypatch.setattr(tessera.geotiff, "write_window", dying)
    path = tmp_path / "r.tif"
    with pytest.raises(KeyboardInterrupt):
        client.export_geotiff(BBOX, YEAR, path)
    assert list(tmp_path.iterdir()) == []  # no final file, no partial left
    monkeypatch.setattr(tessera.geotiff, "write_window", real)
    client.export_geotiff(BBOX, YEAR, path)
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read().transpose(1, 2, 0),
                                      client.read_region(BBOX, YEAR).embeddings)


def test_no_space_left_leaves_nothing_corrupt(client, tmp_path, monkeypatch, small_windows):
    import zarr

    def full_disk(real):
        n = [0]

        def write(self, *a, **k):
            n[0] += 1
            if n[0] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, *a, **k)
        return write

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", full_disk(rasterio.io.DatasetWriter.write))
    with pytest.raises(OSError, match="no space left") as exc:
        client.export_geotiff(BBOX, YEAR, tmp_path / "r.tif", dtype="int8")
    assert exc.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(tessera.store.mosaic, "WINDOW", 32)
    monkeypatch.setattr(tessera.store.export, "TIFF_BLOCK", 32)

    real_set = zarr.Array.__setitem__
    monkeypatch.setattr(zarr.Array, "__setitem__", full_disk(real_set))
    out = tmp_path / "r.zarr"
    with pytest.raises(OSError, match="rerun continues") as exc:
        client.export_zarr(BBOX, YEAR, out, chunk=32)
    assert exc.value.errno == errno.ENOSPC and not out.exists()
    partial = zarr.open_group(str(tmp_path / ".r.zarr.partial"), mode="r")
    assert sum(partial.attrs["tessera:progress"].values()) >= 1  # shards before the failure

    def counted(real):
        n = [0]

        def setitem(self, *a, **k):
            n[0] += 1
            return real(self, *a, **k)
        return setitem, n

    setitem, resumed = counted(real_set)
    monkeypatch.setattr(zarr.Array, "__setitem__", setitem)
    client.export_zarr(BBOX, YEAR, out, chunk=32)  # resumes the partial store
    setitem, full = counted(real_set)
    monkeypatch.setattr(zarr.Array, "__setitem__", setitem)
    ref = client.export_zarr(BBOX, YEAR, tmp_path / "ref.zarr", chunk=32)
    assert 0 < resumed[0] < full[0]
    a, b = zarr.open_group(str(out), mode="r"), zarr.open_group(str(ref), mode="r")
    for zone in ("utm31", "utm32"):
        np.testing.assert_array_equal(a[zone]["embeddings"][:], b[zone]["embeddings"][:])
        np.testing.assert_array_equal(a[zone]["scales"][:], b[zone]["scales"][:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr", "ref.zarr"]


def test_export_tiles_geotiff_layout_and_resume(client, store, tmp_path):
    with pytest.warns(MissingTilesWarning, match="grid_7.05_45.05"):
        res = client.export_tiles_geotiff([NW, NE, "grid_7.05_45.05"], YEAR, tmp_path)
    assert res.absent == ["grid_7.05_45.05"] and len(res.written) == 2
    for name in (NW, NE):
        p = tmp_path / geotiff_relpath(YEAR, name)
        q, s, e = stored(store, name)
        with rasterio.open(p) as src:
            assert src.crs.to_string() == e.crs and tuple(src.transform)[:6] == e.transform
            np.testing.assert_array_equal(src.read().transpose(1, 2, 0),
                                          q.astype(np.float32) * s[..., None])
    again = client.export_tiles_geotiff([NW, NE], YEAR, tmp_path)
    assert again.written == [] and sorted(again.skipped) == sorted(res.written)


# --- Zarr -------------------------------------------------------------------------------------------

def test_export_zarr_round_trip_with_attributes(client, store, tmp_path):
    """GeoTessera's Zarr layout (tessera.store.gtzarr; tests/store/test_gtzarr.py reads it back
    and has geotessera read it)."""
    import zarr

    path = client.export_zarr(BBOX, YEAR, tmp_path / "r.zarr")
    root = zarr.open_group(str(path), mode="r")
    ra = root.attrs
    assert ra["geoemb:dimensions"] == 128 and ra["tessera:complete"] is True
    assert ra["geoemb:type"] == "pixel" and ra["geoemb:data_type"] == "int8"
    assert ra["tessera:version"] == "simulated-random" and ra["geoemb:gsd"] == 200.0
    assert ra["geoemb:quantization"]["scale"] == {"type": "array", "array_name": "scales",
                                                  "nodata": "+inf"}
    assert {c["name"] for c in ra["zarr_conventions"]} == {"geoemb:"}
    assert sorted(root.group_keys()) == ["utm31", "utm32"]
    for zone, epsg, tiles in (("utm31", 32631, (NW, SW)), ("utm32", 32632, (NE, SE))):
        g = root[zone]
        a = g.attrs
        assert a["proj:code"] == f"EPSG:{epsg}" and "UTM zone" in a["proj:wkt2"]
        assert {c["name"] for c in a["zarr_conventions"]} == {"proj:", "spatial:"}
        emb, sca = g["embeddings"], g["scales"]
        assert emb.dtype == np.int8 and sca.dtype == np.float32
        assert emb.shape == (1, 128, *a["spatial:shape"]) and emb.chunks == (1, 128, 32, 32)
        assert emb.metadata.dimension_names == ("time", "band", "y", "x")
        assert list(g["time"][:]) == [YEAR]
        t = a["spatial:transform"]
        assert a["spatial:bbox"] == [t[2], t[5] + t[4] * sca.shape[1], t[2] + t[0] * sca.shape[2],
                                     t[5]]
        q_all, s_all = emb[0].transpose(1, 2, 0), sca[0]
        assert g["x"][0] == t[2] + 100.0
        total = 0
        for name in tiles:  # native pixels: each tile pasted at its offset
            q, s, e = stored(store, name)
            c0, r0 = round((e.transform[2] - t[2]) / 200), round((t[5] - e.transform[5]) / 200)
            rr, cc = np.nonzero(np.isfinite(s))
            np.testing.assert_array_equal(q_all[rr + r0, cc + c0], q[rr, cc])
            np.testing.assert_array_equal(s_all[rr + r0, cc + c0], s[rr, cc])
            total += rr.size
        assert np.isfinite(s_all).sum() == total
        assert np.isposinf(s_all[~np.isfinite(s_all)]).all()  # no data is +inf (no water here)
        assert (q_all[~np.isfinite(s_all)] == 0).all()
