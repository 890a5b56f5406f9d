"""The processing rules on in-memory granules (no files): first valid SCL wins, masks from SCL,
BOA offset exactly once, S1 encodings, conflicts between overlapping granules, resampling."""

import datetime as dt
import logging

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import from_origin

from tessera.bands import S2_BANDS, s1_db_to_int16, s1_linear_to_int16
from tessera.preprocess.acquisition import ArrayAsset, Granule, PreprocessError
from tessera.preprocess.compose import (ComposeOptions, ConflictError, compose_s1_date,
                                        compose_s2_date, group_by_date)
from tessera.geo import TargetGrid

CRS32631 = CRS.from_epsg(32631)
T10 = from_origin(500000, 5600000, 10, 10)
T20 = from_origin(500000, 5600000, 20, 20)
GRID = TargetGrid(CRS32631, T10, 8, 8)
DAY = dt.date(2021, 6, 1)


def asset(a, transform=T10, name="mem"):
    a = np.asarray(a, np.float32)
    return ArrayAsset(lambda: a, CRS32631, transform, name)


def s2_granule(gid, values, scl, date=DAY, baseline="02.09", applied=None):
    """values: (8, 8, 10) or a scalar per band; scl (8, 8) at 10 m."""
    v = np.broadcast_to(np.asarray(values, np.float32), (8, 8, 10))
    assets = {b: asset(v[..., i]) for i, b in enumerate(S2_BANDS)}
    assets["SCL"] = asset(scl)
    return Granule("s2", date, gid, assets, baseline=baseline, boa_offset_applied=applied,
                   source=f"{gid}.tif")


def test_first_granule_with_valid_scl_supplies_all_bands():
    scl_a = np.full((8, 8), 4)
    scl_a[:4] = 9  # cloud in the top half
    scl_b = np.full((8, 8), 5)
    scl_b[6:] = 3  # shadow at the bottom
    a = s2_granule("A", np.arange(10) + 100, scl_a)
    b = s2_granule("B", np.arange(10) + 200, scl_b)
    opts = ComposeOptions(on_conflict="ignore")
    for order in ([a, b], [b, a]):  # "first" is by id, not by the order given
        (_, gs), = group_by_date(order)
        r = compose_s2_date(DAY, gs, GRID, opts)
        assert (r.values[:4] == np.arange(10) + 200).all()   # A cloudy -> B
        assert (r.values[4:] == np.arange(10) + 100).all()   # A valid -> A
        assert r.mask.all() and r.granules == ["A", "B"]


def test_no_valid_granule_keeps_first_data_values_masked():
    scl_a = np.full((8, 8), 9)
    scl_a[0, 0] = 0  # no data in A here
    scl_b = np.full((8, 8), 8)
    r = compose_s2_date(DAY, [s2_granule("A", 500, scl_a), s2_granule("B", 700, scl_b)], GRID,
                        ComposeOptions())
    assert not r.mask.any()
    assert (r.values[0, 0] == 700).all() and (r.values[1:] == 500).all()
    assert r.has_data


def test_all_no_data_date():
    r = compose_s2_date(DAY, [s2_granule("A", 500, np.zeros((8, 8)))], GRID, ComposeOptions())
    assert not r.has_data and not r.mask.any() and (r.values == 0).all()


def test_mask_follows_scl_classes():
    scl = np.arange(64).reshape(8, 8) % 12
    r = compose_s2_date(DAY, [s2_granule("A", 500, scl)], GRID, ComposeOptions())
    assert (r.mask == np.isin(scl, [4, 5, 6, 7, 10, 11])).all()


@pytest.mark.parametrize("kw, expect", [
    ({"baseline": "04.00"}, 500), ({"baseline": "N0509"}, 500), ({"baseline": "02.09"}, 1500),
    ({"baseline": None, "date": dt.date(2022, 3, 1)}, 500),
    ({"baseline": None, "date": dt.date(2022, 1, 24)}, 1500),
    ({"baseline": "04.00", "applied": True}, 1500),   # the source already removed it
    ({"baseline": "02.09", "applied": False}, 500),   # metadata flag beats the baseline
])
def test_boa_offset_from_metadata(kw, expect):
    date = kw.pop("date", DAY)
    g = s2_granule("A", 1500, np.full((8, 8), 4), date=date, **kw)
    r = compose_s2_date(date, [g], GRID, ComposeOptions())
    assert (r.values == expect).all()
    assert r.boa_subtracted == (["A"] if expect == 500 else [])


def test_boa_offset_override_and_exactly_once():
    rows = np.array([900, 1000, 2500, 0] * 2, np.float32).reshape(8, 1, 1)
    g = s2_granule("A", rows, np.full((8, 8), 4), baseline="04.00")
    sub = compose_s2_date(DAY, [g], GRID, ComposeOptions(boa_offset="subtract")).values
    keep = compose_s2_date(DAY, [g], GRID, ComposeOptions(boa_offset="keep")).values
    auto = compose_s2_date(DAY, [g], GRID, ComposeOptions()).values
    assert (keep[0] == 900).all() and (keep[2] == 2500).all()
    assert (sub == auto).all()
    assert (sub[0] == 0).all() and (sub[1] == 0).all() and (sub[2] == 1500).all()
    assert (sub[3] == 0).all()  # no data stays 0, never wraps around


def test_conflicting_overlap_warns_or_errors(caplog):
    a = s2_granule("A", 1000, np.full((8, 8), 4))
    b_vals = np.full((8, 8, 10), 1000.0)
    b_vals[2:4, :, 3] = 1200  # B08 differs on 16 pixels
    b = s2_granule("B", b_vals, np.full((8, 8), 4))
    with caplog.at_level(logging.WARNING, "tessera.preprocess"):
        r = compose_s2_date(DAY, [a, b], GRID, ComposeOptions())
    assert (r.values == 1000).all()  # the first granule wins
    (c,) = r.conflicts
    assert c["band"] == "B08" and c["pixels"] == 16 and c["max_abs_diff"] == 200
    assert "A (A.tif) and B (B.tif)" in caplog.text and "2021-06-01" in caplog.text
    with pytest.raises(ConflictError, match=r"2021-06-01: .*A \(A.tif\).*B \(B.tif\).*band B08"):
        compose_s2_date(DAY, [a, b], GRID, ComposeOptions(on_conflict="error"))
    same = compose_s2_date(DAY, [a, s2_granule("B", 1000, np.full((8, 8), 4))], GRID,
                           ComposeOptions(on_conflict="error"))
    assert same.conflicts == []


def test_duplicate_granule_ids():
    a = s2_granule("A", 1000, np.full((8, 8), 4))
    with pytest.raises(PreprocessError, match="appear more than once"):
        group_by_date([a, a])


def test_missing_band_names_granule_date_and_band():
    g = s2_granule("A", 1000, np.full((8, 8), 4))
    del g.assets["B8A"]
    with pytest.raises(PreprocessError, match=r"granule A \(A.tif, 2021-06-01\): no B8A band"):
        compose_s2_date(DAY, [g], GRID, ComposeOptions())


def test_20m_band_resampling():
    b20 = np.array([[1000, 2000, 3000, 4000]] * 4, np.float32)  # 4 x 4 cells at 20 m
    vals = {b: asset(np.full((8, 8), 500)) for b in S2_BANDS}
    vals["B05"] = asset(b20, T20)
    vals["SCL"] = asset(np.full((4, 4), 4), T20)
    g = Granule("s2", DAY, "A", vals, baseline="02.09")
    near = compose_s2_date(DAY, [g], GRID, ComposeOptions(resampling_20m="nearest")).values[..., 5]
    bil = compose_s2_date(DAY, [g], GRID, ComposeOptions()).values[..., 5]
    assert (near == np.repeat(b20.astype(np.uint16), 2, axis=1).repeat(2, axis=0)).all()
    assert not (bil == near).all()
    assert (bil >= 1000).all() and (bil <= 4000).all()
    # Between two 20 m centres, bilinear interpolates: columns 1 and 2 straddle 1000 | 2000.
    assert 1000 < bil[4, 1] < 2000 and 1000 < bil[4, 2] < 2000


def s1_granule(gid, vv, vh, units="linear", orbit="ascending"):
    return Granule("s1", DAY, gid, {"VV": asset(np.broadcast_to(vv, (8, 8))),
                                    "VH": asset(np.broadcast_to(vh, (8, 8)))},
                   orbit=orbit, s1_units=units, source=f"{gid}.tif")


def test_s1_encodings_and_first_with_data():
    lin = compose_s1_date(DAY, [s1_granule("A", 0.05, 0.01)], GRID, ComposeOptions()).values
    assert (lin[..., 0] == s1_linear_to_int16(np.float32(0.05))).all()
    db = compose_s1_date(DAY, [s1_granule("A", -13.0, -20.0, "db")], GRID, ComposeOptions()).values
    assert (db[..., 1] == s1_db_to_int16(-20.0)).all()
    code = compose_s1_date(DAY, [s1_granule("A", 7000, 4000, "int16")], GRID,
                           ComposeOptions()).values
    assert (code == [7000, 4000]).all()
    vv = np.full((8, 8), 0.05, np.float32)
    vv[:, :3] = np.nan  # A has no data on the left
    r = compose_s1_date(DAY, [s1_granule("A", vv, np.where(np.isnan(vv), np.nan, 0.01)),
                              s1_granule("B", 0.2, 0.02)], GRID, ComposeOptions())
    assert (r.values[:, :3, 0] == s1_linear_to_int16(np.float32(0.2))).all()
    assert (r.values[:, 3:, 0] == s1_linear_to_int16(np.float32(0.05))).all()
    assert r.mask.all() and r.granules == ["A", "B"]
    (c,) = r.conflicts  # where both have data they disagree: reported, A kept
    assert c["pixels"] == 40 and c["band"] == "VV" and c["first"] == "A"


def test_bad_options():
    with pytest.raises(PreprocessError, match="resampling_20m='cubicc'"):
        ComposeOptions(resampling_20m="cubicc")
    with pytest.raises(PreprocessError, match="boa_offset"):
        ComposeOptions(boa_offset="twice")
