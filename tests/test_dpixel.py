import numpy as np
import pytest

from fixtures import make_tile_arrays
from tessera.dpixel import DPixelBatch, Tile, TileFormatError, write_tile


def test_open_memory_maps_and_reads_rows(tile_dir):
    tile = Tile.open(tile_dir)
    assert isinstance(tile.bands, np.memmap) and isinstance(tile.sar_ascending, np.memmap)
    assert tile.shape == (16, 12) and tile.crs.to_epsg() == 32631
    batch = tile.read_rows(3, 5)
    assert len(batch) == 2 * 12
    # pixel (row 4, col 7) is index (4 - 3) * 12 + 7 in the batch
    i = 12 + 7
    np.testing.assert_array_equal(batch.s2[i], tile.bands[:, 4, 7])
    np.testing.assert_array_equal(batch.s2_valid[i], tile.masks[:, 4, 7].astype(bool))
    np.testing.assert_array_equal(batch.s1_desc[i], tile.sar_descending[:, 4, 7])
    np.testing.assert_array_equal(batch.s2_doy[i], tile.doys)


def test_empty_orbit_is_zero_length(tmp_path):
    arrays = make_tile_arrays()
    arrays["sar_descending"] = np.zeros((0, 16, 12, 2), np.int16)
    arrays["sar_descending_doy"] = np.zeros((0,), np.int16)
    tile = Tile.open(write_tile(tmp_path / "t", **arrays))
    assert tile.sar_descending.shape == (0, 16, 12, 2)
    assert tile.read_rows(0, 1).s1_desc.shape == (12, 0, 2)


def _corrupt(tmp_path, name, value):
    path = write_tile(tmp_path / "t", **make_tile_arrays())
    if value is None:
        (path / name).unlink()
    else:
        np.save(path / name, value)
    return path


@pytest.mark.parametrize("name, value, message", [
    ("masks.npy", None, "missing masks.npy"),
    ("sar_descending_doy.npy", None, "missing sar_descending_doy.npy"),
    ("bands.npy", np.zeros((20, 16, 12, 10), np.float32), "dtype float32, expected uint16"),
    ("bands.npy", np.zeros((20, 16, 12, 9), np.uint16), "9 bands in the last axis, expected 10"),
    ("bands.npy", np.zeros((20, 16, 12), np.uint16), "expected (T_s2, H, W, 10)"),
    ("masks.npy", np.zeros((20, 16, 11), np.uint8), "expected (20, 16, 12) to match bands.npy"),
    ("doys.npy", np.arange(1, 20, dtype=np.int16), "19 dates, expected 20"),
    ("doys.npy", np.arange(0, 20, dtype=np.int16), "day of year 0; expected values in 1-366"),
    ("sar_ascending_doy.npy", np.array([5, 9, 400, 2, 3, 4, 6, 7], np.int16), "day of year 400"),
    ("sar_ascending.npy", np.zeros((8, 16, 12, 3), np.int16), "with [VV, VH] last"),
    ("sar_ascending.npy", np.zeros((8, 16, 12, 2), np.uint16), "dtype uint16, expected int16"),
    ("sar_descending_doy.npy", np.arange(1, 4, dtype=np.int16), "3 dates, expected 6"),
])
def test_bad_tiles_name_file_and_expectation(tmp_path, name, value, message):
    path = _corrupt(tmp_path, name, value)
    with pytest.raises(TileFormatError) as err:
        Tile.open(path)
    assert name in str(err.value) and message in str(err.value)


def test_truncated_and_corrupt_files(tmp_path):
    path = write_tile(tmp_path / "t", **make_tile_arrays())
    data = (path / "bands.npy").read_bytes()
    (path / "bands.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(TileFormatError, match="bands.npy: file is truncated"):
        Tile.open(path)
    (path / "bands.npy").write_bytes(b"not numpy at all")
    with pytest.raises(TileFormatError, match="bands.npy: not a readable .npy"):
        Tile.open(path)


def test_roi_checks(tmp_path):
    import rasterio
    from tessera.dpixel import write_roi
    path = write_tile(tmp_path / "t", **make_tile_arrays())
    write_roi(path / "roi.tiff", np.ones((15, 12)), "EPSG:32631", rasterio.Affine.identity())
    with pytest.raises(TileFormatError, match=r"roi.tiff: raster is 15 x 12, expected 16 x 12"):
        Tile.open(path)
    with rasterio.open(path / "roi.tiff", "w", driver="GTiff", width=12, height=16, count=1,
                       dtype="uint8") as dst:
        dst.write(np.ones((1, 16, 12), np.uint8))
    with pytest.raises(TileFormatError, match="roi.tiff: no CRS"):
        Tile.open(path)
    (path / "roi.tiff").write_bytes(b"garbage")
    with pytest.raises(TileFormatError, match="roi.tiff: not a readable GeoTIFF"):
        Tile.open(path)


def test_not_a_folder(tmp_path):
    with pytest.raises(TileFormatError, match="directory not found"):
        Tile.open(tmp_path / "nope")


def test_write_tile_is_atomic(tmp_path):
    good = write_tile(tmp_path / "t", **make_tile_arrays(seed=1))
    before = (good / "bands.npy").read_bytes()
    bad = make_tile_arrays(seed=2)
    bad["doys"] = bad["doys"] * 0  # day 0: invalid, detected while validating
    with pytest.raises(TileFormatError):
        write_tile(tmp_path / "t", **bad)
    assert (good / "bands.npy").read_bytes() == before  # the old tile is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]  # no temporary folder left
    write_tile(tmp_path / "t", **make_tile_arrays(seed=3))  # replacing works
    assert (good / "bands.npy").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_dpixel_batch_validation():
    n, t = 3, 4
    ok = dict(s2=np.zeros((n, t, 10)), s2_doy=np.ones((n, t), int), s2_valid=np.ones((n, t), bool),
              s2_present=np.ones((n, t), bool), s1_asc=np.zeros((n, 2, 2)),
              s1_asc_doy=np.ones((n, 2), int), s1_asc_present=np.ones((n, 2), bool),
              s1_desc=np.zeros((n, 0, 2)), s1_desc_doy=np.ones((n, 0), int),
              s1_desc_present=np.ones((n, 0), bool))
    assert len(DPixelBatch(**ok)) == 3
    with pytest.raises(ValueError, match="DPixelBatch.s2: shape"):
        DPixelBatch(**{**ok, "s2": np.zeros((n, t, 9))})
    with pytest.raises(ValueError, match="DPixelBatch.s1_asc_doy: shape"):
        DPixelBatch(**{**ok, "s1_asc_doy": np.ones((n, 3), int)})
    doy = np.ones((n, t), int)
    doy[1, 2] = 367
    with pytest.raises(ValueError, match="day of year 367 at pixel 1, step 2"):
        DPixelBatch(**{**ok, "s2_doy": doy})
    present = np.ones((n, t), bool)
    present[1, 2] = False  # padding may carry any day
    assert len(DPixelBatch(**{**ok, "s2_doy": doy, "s2_present": present})) == 3
