"""WorldCereal WIDE tables -> the long layout (`tessera.table.wide.wide_to_long`).

A tiny synthetic wide frame must convert to an exactly known long frame; malformed tables must
fail with errors naming the table and column; the three real wide tables must go through
`prepare_table` with every non-missing cell of the wide frame accounted for (samples, S2 and S1
observations, valid ones, values and days of year).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from fixtures import shared_path
from tessera.bands import S2_BANDS, s1_amplitude_dn_to_db, s1_db_to_int16
from tessera.table import prepare_table
from tessera.table.wide import (WORLDCEREAL_OPTIONS, WideTableError, first_month, long_column,
                                wide_to_long)

EXTRACTIONS = ("worldcereal", "extractions")
WIDE_TABLES = ("2017_UGA_SSD_public_extractions_wide.parquet",
               "presto-worldcereal_testdf_wide.parquet",
               "2021_BE_Flanders_prometheo_wide.parquet")
MISSING = 65535


def tiny_wide() -> pd.DataFrame:
    u16 = np.uint16
    return pd.DataFrame({
        "sample_id": ["a", "b"],
        "OPTICAL-B02-ts0-10m": np.array([100, 65535], u16),
        "OPTICAL-B02-ts1-10m": np.array([110, 210], u16),
        "OPTICAL-B8A-ts0-20m": np.array([300, 400], u16),
        "OPTICAL-B8A-ts1-20m": np.array([310, 410], u16),
        "SAR-VV-ts0-20m": np.array([5000, 5100], u16),
        "SAR-VV-ts1-20m": np.array([65535, 5200], u16),
        "METEO-temperature_mean-ts0-100m": np.array([28000, 28100], u16),
        "METEO-temperature_mean-ts1-100m": np.array([28200, 28300], u16),
        "DEM-alt-20m": np.array([12, 34], u16),
        "start_date": ["2020-12-01", "2021-01-20"],  # b: Jan 20 + 15 d -> February
        "lat": [50.5, 51.0],
        "h3_l3_cell": ["831fa4fffffffff", "831fa5fffffffff"],
    })


def test_tiny_wide_frame_converts_exactly():
    got = wide_to_long(tiny_wide(), "tiny.parquet")
    u16 = np.uint16
    want = pd.DataFrame({
        "sample_id": ["a", "a", "b", "b"],
        "timestamp": pd.to_datetime(["2020-12-01", "2021-01-01", "2021-02-01", "2021-03-01"]),
        "S2-L2A-B02": np.array([100, 110, 65535, 210], u16),
        "S2-L2A-B8A": np.array([300, 310, 400, 410], u16),
        "S1-SIGMA0-VV": np.array([5000, 65535, 5100, 5200], u16),
        "AGERA5-TMEAN": np.array([28000, 28200, 28100, 28300], u16),
        "elevation": np.array([12, 12, 34, 34], u16),
        "start_date": ["2020-12-01", "2020-12-01", "2021-01-20", "2021-01-20"],
        "lat": [50.5, 50.5, 51.0, 51.0],
        "h3_l3_cell": ["831fa4fffffffff"] * 2 + ["831fa5fffffffff"] * 2,
    })
    want["timestamp"] = want["timestamp"].astype("datetime64[ns]")
    pd.testing.assert_frame_equal(got, want)


def test_first_month_is_the_month_holding_the_window_middle():
    starts = pd.to_datetime(pd.Series(["2021-03-01", "2021-03-16", "2021-03-17", "2021-04-15",
                                       "2021-04-16", "2021-12-27"]))
    got = first_month(starts).astype(str).tolist()
    assert got == ["2021-03", "2021-03", "2021-04", "2021-04", "2021-05", "2022-01"]


def test_column_names():
    assert long_column("OPTICAL", "B8A") == "S2-L2A-B8A"
    assert long_column("SAR", "VH") == "S1-SIGMA0-VH"
    assert long_column("METEO", "precipitation_flux") == "AGERA5-PRECIP"
    assert long_column("OPTICAL", "ndvi") == "OPTICAL-ndvi"  # an index, not a band


def test_ids_from_index_or_row_labels():
    df = tiny_wide().set_index("sample_id")
    assert wide_to_long(df)["sample_id"].tolist() == ["a", "a", "b", "b"]
    anonymous = tiny_wide().drop(columns="sample_id")
    anonymous.index = pd.Index([7, 9], name="index")
    assert wide_to_long(anonymous)["sample_id"].tolist() == [7, 7, 9, 9]
    by_location = tiny_wide().rename(columns={"sample_id": "location_id"})
    out = wide_to_long(by_location)
    assert out["sample_id"].tolist() == ["a", "a", "b", "b"]
    assert out["location_id"].tolist() == ["a", "a", "b", "b"]  # kept as metadata too


def test_missing_timestep_column_becomes_nan():
    df = tiny_wide().drop(columns="OPTICAL-B8A-ts1-20m")
    out = wide_to_long(df)
    assert np.isnan(out["S2-L2A-B8A"].to_numpy()[[1, 3]]).all()
    assert out["S2-L2A-B8A"].to_numpy()[[0, 2]].tolist() == [300, 400]


@pytest.mark.parametrize("mutate, match", [
    (lambda df: df.drop(columns=[c for c in df.columns if "-ts" in c]), "no band time-series"),
    (lambda df: df.drop(columns="start_date"), "'start_date'"),
    (lambda df: df.assign(start_date=["2020-12-01", "someday"]),
     r"'start_date', row 2 \(sample_id 'b'\): cannot read 'someday'"),
    (lambda df: df.assign(sample_id=["a", "a"]), "sample id 'a' appears on several rows"),
    (lambda df: df.assign(**{"OPTICAL-B02-ts0-20m": df["OPTICAL-B02-ts0-10m"]}),
     "'OPTICAL-B02-ts0-10m' and 'OPTICAL-B02-ts0-20m' both give S2-L2A-B02 at timestep 0"),
    (lambda df: df.assign(timestamp="2021-01-01"), "both time-series columns"),
])
def test_errors_name_the_table_and_column(mutate, match):
    with pytest.raises(WideTableError, match="bad.parquet") as err:
        wide_to_long(mutate(tiny_wide()), "bad.parquet")
    assert err.match(match)


def test_features_only_and_long_tables_are_refused_with_the_reason():
    features = pd.DataFrame({"OPTICAL-B02-p10-10m": [1.0], "OPTICAL-ndvi-ts0-10m": [0.5],
                             "location_id": ["x"]})
    with pytest.raises(WideTableError, match="per-sample features"):
        wide_to_long(features, "features.parquet")
    long = pd.DataFrame({"sample_id": ["a"], "timestamp": ["2021-01-01"], "S2-L2A-B02": [1]})
    with pytest.raises(WideTableError, match="already looks long"):
        wide_to_long(long, "long.parquet")


# --- the real wide tables ---------------------------------------------------------------------

def _wide_cells(df: pd.DataFrame, kind: str, band: str, steps: list[int]) -> np.ndarray:
    """(N, T) float values of one band, NaN where missing (65535 or no column)."""
    out = np.full((len(df), len(steps)), np.nan)
    for j, k in enumerate(steps):
        cols = [c for c in df.columns if c.startswith(f"{kind}-{band}-ts{k}-")]
        if cols:
            v = df[cols[0]].to_numpy(np.float64)
            out[:, j] = np.where(v == MISSING, np.nan, v)
    return out


@pytest.mark.parametrize("name", WIDE_TABLES)
def test_real_wide_table_through_prepare_table(name):
    wide = pd.read_parquet(shared_path(*EXTRACTIONS, name))
    long = wide_to_long(wide, name)
    steps = sorted({int(c.split("-ts")[1].split("-")[0]) for c in wide.columns if "-ts" in c})
    assert len(long) == len(wide) * len(steps)

    stamps = long["timestamp"].to_numpy().reshape(len(wide), len(steps))
    years = stamps.astype("datetime64[Y]").astype(int) + 1970
    s2 = np.stack([_wide_cells(wide, "OPTICAL", b, steps) for b in S2_BANDS], -1)  # (N, T, 10)
    dn = np.stack([_wide_cells(wide, "SAR", p, steps) for p in ("VV", "VH")], -1)  # (N, T, 2)
    code = s1_db_to_int16(s1_amplitude_dn_to_db(np.nan_to_num(dn, nan=0.0)))
    s1_present = ~np.isnan(dn).all(-1)

    for year in np.unique(years):
        in_year = years == year
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # B8A filled from B08; samples outside the year
            prepared = prepare_table(long, year=int(year), **WORLDCEREAL_OPTIONS)
        s2y = s2.copy()
        b8a = S2_BANDS.index("B8A")
        if np.isnan(s2y[..., b8a][in_year]).all():  # filled from B08 by fill_missing
            s2y[..., b8a] = s2y[..., S2_BANDS.index("B08")]
        n_samples = int(in_year.any(1).sum())
        s2_obs = int((~np.isnan(s2y).all(-1) & in_year).sum())
        s2_valid = int((~np.isnan(s2y).any(-1) & in_year).sum())
        s1_obs = int((s1_present & in_year).sum())
        s1_valid = int((((code != 0).any(-1)) & s1_present & in_year).sum())
        n2, n1 = prepared.counts()
        assert len(prepared) == n_samples, year
        assert prepared.n_observations == (s2_obs, s1_obs), year
        assert (int(n2.sum()), int(n1.sum())) == (s2_valid, s1_valid), year

        # values and days of year of one sample, observation by observation
        batch = prepared.batch()
        i = int(np.flatnonzero(in_year.any(1))[len(prepared) // 2])
        sid = long["sample_id"].to_numpy()[i * len(steps)]
        k = int(np.flatnonzero(prepared.sample_ids == sid)[0])
        sel = in_year[i] & ~np.isnan(s2y[i]).all(-1)
        d = stamps[i][sel].astype("datetime64[D]")
        doy = (d - d.astype("datetime64[Y]")).astype(int) + 1
        present = batch.s2_present[k]
        assert batch.s2_doy[k][present].tolist() == doy.tolist()
        np.testing.assert_array_equal(batch.s2[k][present], np.nan_to_num(s2y[i][sel]))
        sel1 = in_year[i] & s1_present[i]
        np.testing.assert_array_equal(batch.s1_asc[k][batch.s1_asc_present[k]], code[i][sel1])
