"""Tests of the simulated-tile generator (tessera.simulate)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tessera.bands import S2_BANDS, s1_int16_to_db, scl_valid
from tessera.dpixel import Tile
from tessera.simulate import (CLASS_IDS, CLASSES, CROP_CLASSES, PHENOLOGY, TABLE_COLUMNS,
                              SimConfig, cover_fractions, peak_doy, simulate_arrays,
                              simulate_table, simulate_tile)

SMALL = dict(size=64, field_size=14, n_s2_dates=40, n_s1_asc=16, n_s1_desc=14)
B04, B08 = S2_BANDS.index("B04"), S2_BANDS.index("B08")


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return simulate_arrays(SimConfig(seed=7, **SMALL))


@pytest.fixture(scope="module")
def clear() -> dict[str, np.ndarray]:
    """A cloud- and snow-free year with a date every few days (phenology checks)."""
    return simulate_arrays(SimConfig(seed=3, size=64, field_size=12, n_s2_dates=90,
                                     cloud_fraction=0.0, snow_probability=0.0,
                                     cirrus_probability=0.0, nodata_probability=0.0))


def _ndvi(bands: np.ndarray) -> np.ndarray:
    b = bands.astype(np.float32)
    return (b[..., B08] - b[..., B04]) / (b[..., B08] + b[..., B04] + 1.0)


def test_deterministic_by_seed(arrays):
    again = simulate_arrays(SimConfig(seed=7, **SMALL), workers=1)
    assert arrays.keys() == again.keys()
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], again[key], err_msg=key)
    other = simulate_arrays(SimConfig(seed=8, **SMALL))
    for key in ("bands", "sar_ascending", "labels", "doys"):
        assert not np.array_equal(arrays[key], other[key]), key


def test_shapes_and_dtypes(arrays):
    t2, ta, td = SMALL["n_s2_dates"], SMALL["n_s1_asc"], SMALL["n_s1_desc"]
    h = w = SMALL["size"]
    assert arrays["bands"].shape == (t2, h, w, 10) and arrays["bands"].dtype == np.uint16
    assert arrays["masks"].shape == arrays["scl"].shape == (t2, h, w)
    assert arrays["sar_ascending"].shape == (ta, h, w, 2)
    assert arrays["sar_descending"].shape == (td, h, w, 2)
    assert arrays["sar_ascending"].dtype == np.int16
    assert arrays["labels"].dtype == np.uint8 and arrays["labels"].shape == (h, w)
    assert (arrays["roi"] == 1).all()


def test_dates(arrays):
    for key in ("doys", "sar_ascending_doy", "sar_descending_doy"):
        d = arrays[key]
        assert d.min() >= 1 and d.max() <= 366, key
        assert (np.diff(d) > 0).all(), key
    asc, desc = arrays["sar_ascending_doy"], arrays["sar_descending_doy"]
    assert not np.array_equal(asc[:len(desc)], desc)
    assert len(np.intersect1d(asc, desc)) < len(desc) // 2
    gaps = np.diff(arrays["doys"])
    assert gaps.min() >= 1 and gaps.max() > gaps.min()  # irregular


def test_masks_follow_scl(arrays):
    scl = arrays["scl"]
    assert scl.max() <= 11
    np.testing.assert_array_equal(arrays["masks"], scl_valid(scl).astype(np.uint8))
    # no-data pixels are zeros, cloudy pixels are bright, not zeros
    assert (arrays["bands"][scl == 0] == 0).all()
    cloudy = arrays["bands"][np.isin(scl, [8, 9])]
    assert cloudy.size and np.median(cloudy[:, S2_BANDS.index("B02")]) > 3000


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_cloud_fraction(fraction):
    a = simulate_arrays(SimConfig(seed=1, cloud_fraction=fraction, **SMALL))
    scl = a["scl"]
    cloud = np.isin(scl, [1, 8, 9]).sum() / max((scl != 0).sum(), 1)
    assert abs(cloud - fraction) < 0.05
    assert (np.isin(scl, [3]).mean()) > 0  # shadows exist
    per_date = np.isin(scl, [8, 9]).mean(axis=(1, 2))
    assert per_date.min() < 0.05 and per_date.max() > 0.8  # clear and overcast dates


def test_no_clouds():
    a = simulate_arrays(SimConfig(seed=2, cloud_fraction=0.0, **SMALL))
    assert not np.isin(a["scl"], [1, 3, 8, 9]).any()


def test_water_darker_than_crops_in_nir(clear):
    labels, bands, doys = clear["labels"], clear["bands"], clear["doys"]
    water = labels == CLASS_IDS["water"]
    crops = np.isin(labels, [CLASS_IDS[c] for c in ("maize", "sugar_beet")])
    assert water.sum() > 20 and crops.sum() > 20
    t = int(np.argmin(np.abs(doys - 200)))
    nir = bands[t, ..., B08].astype(float)
    assert nir[water].mean() < 0.3 * nir[crops].mean()
    assert nir[water].mean() < 800
    swir = bands[t, ..., S2_BANDS.index("B11")].astype(float)
    assert swir[water].mean() < 1000


@pytest.mark.parametrize("crop", CROP_CLASSES)
def test_phenology_peak_greener_than_start(clear, crop):
    assert PHENOLOGY[crop].sos < peak_doy(crop) < PHENOLOGY[crop].eos + 1
    labels, bands, doys = clear["labels"], clear["bands"], clear["doys"]
    sel = labels == CLASS_IDS[crop]
    if sel.sum() < 10:
        pytest.skip(f"{crop} not in this small scene")
    ndvi = _ndvi(bands)
    t_peak = int(np.argmin(np.abs(doys - peak_doy(crop))))
    t_start = int(np.argmin(np.abs(doys - (PHENOLOGY[crop].sos - 25))))
    assert ndvi[t_peak][sel].mean() > ndvi[t_start][sel].mean() + 0.15
    assert ndvi[t_peak][sel].mean() > 0.7


def test_cover_fractions():
    maize = cover_fractions("maize", [30, peak_doy("maize"), 320])
    assert maize["green"][1] > 0.9 and maize["green"][0] < 0.05
    rape = cover_fractions("rapeseed", [PHENOLOGY["rapeseed"].flower])
    assert rape["flower"][0] > 0.3
    with pytest.raises(KeyError):
        cover_fractions("banana", [1])


def test_s1_physics(clear):
    labels = clear["labels"]
    db = s1_int16_to_db(clear["sar_ascending"])  # (T, H, W, 2)
    water = labels == CLASS_IDS["water"]
    vv_water = np.nanmedian(db[..., 0][:, water])
    assert -28 < vv_water < -18
    maize = labels == CLASS_IDS["maize"]
    if maize.sum() >= 10:
        doys = clear["sar_ascending_doy"]
        vh = np.nanmean(db[..., 1][:, maize], axis=1)
        summer, spring = vh[(doys > 200) & (doys < 240)], vh[(doys > 100) & (doys < 140)]
        assert summer.mean() > spring.mean() + 3
    # speckle: pixel-to-pixel spread within one field on one date
    assert np.nanstd(db[0, ..., 0][water]) > 1.0


def test_labels_and_roi_options():
    a = simulate_arrays(SimConfig(seed=4, roi="border", roi_border=5, **SMALL))
    assert set(np.unique(a["labels"])) <= set(CLASSES)
    assert a["roi"][:5].sum() == 0 and a["roi"][5:-5, 5:-5].all()
    b = simulate_arrays(SimConfig(seed=4, roi="random", roi_outside_fraction=0.3, **SMALL))
    assert 0.2 < 1 - b["roi"].mean() < 0.4
    with pytest.raises(ValueError):
        SimConfig(roi="circle")


def test_written_tile_opens(tmp_path):
    config = SimConfig(seed=5, **SMALL)
    path = simulate_tile(tmp_path / "sim", config)
    tile = Tile.open(path)
    assert tile.shape == (64, 64)
    assert tile.bands.shape == (40, 64, 64, 10) and tile.bands.dtype == np.uint16
    assert tile.masks.dtype == np.uint8
    assert tile.sar_ascending.shape == (16, 64, 64, 2)
    assert tile.crs.to_epsg() == 32631 and tile.transform.a == 10.0
    labels = np.load(path / "labels.npy")
    assert labels.shape == (64, 64) and set(np.unique(labels)) <= set(CLASSES)
    assert (path / "labels.tiff").exists()
    np.testing.assert_array_equal(np.load(path / "scl.npy"), simulate_arrays(config)["scl"])
    meta = json.loads((path / "simulation.json").read_text())
    assert meta["simulated"] is True and meta["seed"] == 5
    assert meta["classes"]["8"] == "water" and meta["config"]["height"] == 64
    batch = tile.read_rows(0, 2)
    assert len(batch) == 128
    # rewriting replaces the folder, leaving no staging folder behind
    simulate_tile(path, config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]


def test_empty_orbit(tmp_path):
    path = simulate_tile(tmp_path / "t", SimConfig(seed=0, size=16, n_s2_dates=5, n_s1_asc=0,
                                                   n_s1_desc=3, write_labels_tiff=False))
    tile = Tile.open(path)
    assert tile.sar_ascending.shape == (0, 16, 16, 2) and len(tile.sar_descending_doy) == 3


def test_simulate_table():
    config = SimConfig(seed=9, **SMALL)
    df = simulate_table(30, config)
    assert list(df.columns) == list(TABLE_COLUMNS)
    for col in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12",
                "VV", "VH", "orbit", "SCL", "date", "label"):
        assert col in df.columns
    assert df["sample_id"].nunique() == 30
    assert set(df["label"]) <= set(CLASSES.values())
    assert (df["date"].dt.year == config.year).all()
    s1, s2 = df[df["sensor"] == "S1"], df[df["sensor"] == "S2"]
    assert set(s1["orbit"]) == {"ascending", "descending"} and s2["orbit"].isna().all()
    assert s1["B04"].isna().all() and s2["VV"].isna().all() and s1["SCL"].isna().all()
    assert s2["B04"].notna().all() and s2["SCL"].notna().all()
    assert (s2["B08"] == s2["B08"].round()).all()
    # deterministic, and equal to the tile's values at the sampled pixels
    assert df.equals(simulate_table(30, config))
    a = simulate_arrays(config)
    row = s2.iloc[0]
    t = int(np.flatnonzero(a["doys"] == row["doy"])[0])
    expect = a["bands"][t, row["row"], row["col"]]
    got = np.array([row[b] for b in S2_BANDS])
    np.testing.assert_array_equal(got, expect)
    with pytest.raises(ValueError):
        simulate_table(64 * 64 + 1, config)
