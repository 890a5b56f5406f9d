"""The real pretraining corpus (`tessera.train.corpus`) and the monthly cube reader
(`tessera.preprocess.sources.cubes`), on ../shared/datasets/worldcereal.

Cubes are compared with the raw netCDF values at sampled pixels; the corpus must hold every
usable source, never an evaluation table or a sample near one, and its summary must count what
the batches hold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from fixtures import shared_path
from tessera.bands import S2_BANDS, s1_db_to_int16
from tessera.preprocess.sources.cubes import annual_windows, open_cube, read_cube
from tessera.train.corpus import (EVAL_RADIUS_DEG, EVAL_TABLES, CorpusFiles, corpus_summary,
                                  eval_sites, read_long_table, real_corpus, table_batches)

CUBES = ("worldcereal", "cubes")
EXTRACTIONS = ("worldcereal", "extractions")
CUBE_NAMES = ("inputs_monthly_15x15.nc", "preprocessed_inputs_monthly_100x100.nc",
              "pw_WORLDCEREAL-INPUTS-10m_belgium_good_32631_2020-08-01_2022-03-31.nc")


def _dates(*s: str) -> np.ndarray:
    return np.array(s, dtype="datetime64[D]")


# --- annual windows ---------------------------------------------------------------------------

def test_annual_windows_cycle_and_year():
    d = _dates("2020-11-01", "2020-12-01", *[f"2021-{m:02d}-01" for m in range(1, 11)])
    (label, idx), = annual_windows(d, "cycle")
    assert label == 2021 and len(idx) == 12
    assert d[idx][:2].tolist() == _dates("2021-01-01", "2021-02-01").tolist()  # by day of year
    assert d[idx][-2:].tolist() == _dates("2020-11-01", "2020-12-01").tolist()
    assert [(y, len(i)) for y, i in annual_windows(d, "year")] == [(2020, 2), (2021, 10)]
    tie = _dates(*[f"2020-{m:02d}-01" for m in range(7, 13)], *[f"2021-{m:02d}-01"
                                                                 for m in range(1, 7)])
    assert annual_windows(tie, "cycle")[0][0] == 2021  # a tie goes to the later year
    longer = _dates("2020-08-01", "2021-01-01", "2021-08-01")  # 13 months: calendar years
    assert [(y, len(i)) for y, i in annual_windows(longer, "cycle")] == [(2020, 1), (2021, 2)]
    with pytest.raises(ValueError, match="split 'month'"):
        annual_windows(longer, "month")


# --- monthly cubes ----------------------------------------------------------------------------

def _raw_cube(path) -> dict[str, np.ndarray]:
    """Band -> (T, H, W) uint values read independently (xarray decodes _Unsigned itself)."""
    engine = "scipy" if path.read_bytes()[:3] == b"CDF" else "h5netcdf"
    with xr.open_dataset(path, engine=engine, mask_and_scale=True) as ds:
        out = {}
        for var in ds.data_vars:
            name = str(ds[var].attrs.get("long_name", var)).split("-")[-1]
            name = {"B2": "B02", "B3": "B03", "B4": "B04", "B5": "B05", "B6": "B06", "B7": "B07",
                    "B8": "B08"}.get(str(var), name)
            if ds[var].dims == ("t", "y", "x"):
                out[name] = np.asarray(ds[var].values, dtype=np.float64)
        out["_x"], out["_y"] = ds["x"].values, ds["y"].values
        out["_t"] = ds["t"].values.astype("datetime64[D]")
    return out


@pytest.mark.parametrize("name", CUBE_NAMES)
@pytest.mark.parametrize("split", ["year", "cycle"])
def test_cube_pixels_match_the_raw_netcdf(name, split):
    path = shared_path(*CUBES, name)
    cube = read_cube(path, split)
    raw = _raw_cube(path)
    h, w = cube.shape
    assert (h, w) == raw["B02"].shape[1:] and cube.n_pixels == h * w
    assert cube.filled == {"B8A": ["B08"]}  # no cube has B8A
    assert (cube.s1_orbit, cube.s1_orbit_source) == ("ascending", "default")
    # pixel centres of the transform are the x / y coordinates
    t = cube.transform
    assert np.allclose(t.c + t.a * (np.arange(w) + 0.5), raw["_x"])
    assert np.allclose(t.f + t.e * (np.arange(h) + 0.5), raw["_y"])
    assert cube.crs is not None
    steps = np.concatenate(list(cube.windows.values()))
    assert sorted(steps.tolist()) == list(range(len(cube.dates)))  # every date, once

    rng = np.random.default_rng(0)
    for label, batch in cube.batches.items():
        sel = cube.windows[label]
        assert len(batch) == h * w
        d = raw["_t"][sel]
        doy = (d - d.astype("datetime64[Y]")).astype(int) + 1
        assert batch.s2_doy[0].tolist() == doy.tolist() == batch.s1_asc_doy[0].tolist()
        assert sorted(doy.tolist()) == doy.tolist()
        if split == "year":
            assert (d.astype("datetime64[Y]").astype(int) + 1970 == label).all()
        for p in rng.choice(h * w, 25, replace=False):
            r, c = int(cube.rows[p]), int(cube.cols[p])
            assert r * w + c == p
            bands = {b: raw[b if b != "B8A" else "B08"][sel, r, c] for b in S2_BANDS}
            s2 = np.stack([bands[b] for b in S2_BANDS], -1)
            ok = (s2 != 65535).all(-1)
            np.testing.assert_array_equal(batch.s2_valid[p], ok)
            np.testing.assert_array_equal(batch.s2[p][ok], s2[ok].astype(np.uint16))
            for k, pol in enumerate(("VV", "VH")):
                dn = raw[pol][sel, r, c]
                want = np.where(dn == 65535, 0, s1_db_to_int16(20 * np.log10(dn) - 83))
                np.testing.assert_array_equal(batch.s1_asc[p, :, k], want)
            assert batch.s1_desc.shape[1] == 0


def test_cube_static_maps_and_split_of_the_20_month_cube():
    cube = read_cube(shared_path(*CUBES, CUBE_NAMES[2]))
    assert sorted(cube.batches) == [2020, 2021, 2022]
    assert [len(cube.dates_of(y)) for y in (2020, 2021, 2022)] == [5, 12, 3]
    labels = cube.static["WORLDCEREAL_TEMPORARYCROPS_2021"]
    assert labels.shape == (cube.n_pixels,) and set(np.unique(labels)) <= {0, 100, 254}
    with pytest.raises(ValueError, match="2020, 2021, 2022"):
        _ = cube.batch


def test_cube_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"not a netcdf")
    with pytest.raises(Exception, match="bad.nc"):
        read_cube(bad)
    with pytest.raises(Exception, match="missing.nc"):
        open_cube(tmp_path / "missing.nc")


# --- tables -----------------------------------------------------------------------------------

def test_presto_cycles_keep_each_sample_whole():
    long = read_long_table(shared_path(*EXTRACTIONS, "presto-worldcereal_testdf_wide.parquet"))
    parts = table_batches(long, "cycle")
    assert sum(len(ids) for _, ids, _ in parts) == long["sample_id"].nunique()
    label, ids, batch = next(p for p in parts if p[0] == 2018)
    start = pd.to_datetime(long.groupby("sample_id")["timestamp"].min())
    straddling = [i for i, s in enumerate(ids) if start[s].year == 2017]
    assert straddling  # samples of Nov 2017 .. Oct 2018 and the like
    s2_cols = [f"S2-L2A-{b}" for b in S2_BANDS]
    for i in straddling[:10]:
        rows = long[long["sample_id"] == ids[i]]
        assert len(rows) == 12
        has_s2 = (rows[s2_cols] != 65535).any(axis=1).to_numpy()
        d = rows["timestamp"].to_numpy().astype("datetime64[D]")[has_s2]
        doy = batch.s2_doy[i][batch.s2_present[i]]
        assert doy.tolist() == sorted(doy.tolist())  # ordered by day of year
        assert sorted(((d - d.astype("datetime64[Y]")).astype(int) + 1).tolist()) == doy.tolist()
        s1_doy = batch.s1_asc_doy[i][batch.s1_asc_present[i]]
        assert len(s1_doy) == (rows[["S1-SIGMA0-VV", "S1-SIGMA0-VH"]] != 65535).any(axis=1).sum()


# --- the corpus -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = shared_path("worldcereal").parent
    return root, real_corpus(CorpusFiles(root), tmp_path_factory.mktemp("corpus"))


def test_corpus_holds_every_source(corpus):
    _, parts = corpus
    names = [p.name for p in parts]
    kinds = {n.split(":")[0] for n in names}
    assert kinds == {"patch", "cube", "table"}
    sources = {n.split(":")[1].split("/")[0] for n in names}
    assert {"00002806639B424A", "0000280849BAC91C", "inputs_monthly_15x15",
            "preprocessed_inputs_monthly_100x100", "2021_BEL_LPIS-Flanders_long_named-dummy",
            "2021_BE_Flanders_prometheo_wide", "presto-worldcereal_testdf_wide"} <= sources
    assert not any("000028085BF08E7E" in n or "TZA" in n for n in names)  # no 10 m S2 cube
    assert not any("2018_BE_Flanders" in n for n in names)  # features only
    for p in parts:
        p.batch.validate()
        assert p.n_pixels == len(p.batch) == len(p.ids) == len(p.lonlat)
    patches = [p for p in parts if p.name.startswith("patch:")]
    assert len(patches) == 4 and all(p.n_pixels == 64 * 64 for p in patches)


def _min_distance(lonlat: np.ndarray, sites: np.ndarray) -> float:
    """Smallest Chebyshev distance (degrees) between two point sets, by brute force; a raster
    part is first bounded by its box (exact when the box is farther than the radius)."""
    lo, hi = lonlat.min(0), lonlat.max(0)
    box = np.maximum(np.maximum(lo - sites, sites - hi), 0).max(-1).min()
    if box > EVAL_RADIUS_DEG or len(lonlat) == 1:
        return float(box)
    return float(min(np.abs(chunk[:, None, :] - sites[None]).max(-1).min()
                     for chunk in np.array_split(lonlat, max(1, len(lonlat) // 256))))


def test_corpus_keeps_the_evaluation_sets_out(corpus):
    root, parts = corpus
    sites = eval_sites(root)
    assert len(sites.tables) == len(EVAL_TABLES)
    eval_ids = set()
    for name in EVAL_TABLES:
        eval_ids |= set(pd.read_parquet(root / "worldcereal" / "extractions" / name,
                                        columns=["sample_id"])["sample_id"])
    for p in parts:
        assert not any(t.split(".")[0] in p.name for t in EVAL_TABLES)
        if p.name.startswith("table:"):
            assert not eval_ids & set(p.ids.tolist())
        if p.n_pixels:  # no d-pixel within the radius of an evaluation sample
            assert _min_distance(p.lonlat, sites.lonlat) > EVAL_RADIUS_DEG, p.name

    presto = pd.read_parquet(shared_path(*EXTRACTIONS, "presto-worldcereal_testdf_wide.parquet"))
    pts = presto[["lon", "lat"]].to_numpy(np.float64)
    near = np.array([_min_distance(pt[None], sites.lonlat) for pt in pts]) <= EVAL_RADIUS_DEG
    kept = [p for p in parts if "presto" in p.name]
    assert near.sum() > 0
    assert sum(p.n_pixels for p in kept) == len(presto) - near.sum()
    assert all(p.dropped["near_eval"] == near.sum() for p in kept)
    assert not set(presto.index[near]) & {i for p in kept for i in p.ids.tolist()}


def test_duplicate_cube_pixels_are_dropped(corpus):
    _, parts = corpus
    crop = [p for p in parts if "2020-08-30_2022-03-03" in p.name]
    assert crop and all(p.n_pixels == 0 and p.dropped["duplicate"] == 48 * 50 for p in crop)
    cells = [(p.source, p.year, tuple(p.ids)) for p in parts if p.name.startswith("cube:")]
    assert len(cells) == len(set(cells))


def test_corpus_summary_counts_the_batches(corpus):
    _, parts = corpus
    summary = corpus_summary(parts)
    assert list(summary.columns) == ["name", "region", "year", "pixels", "s2_dates",
                                     "mean_valid_s2", "mean_valid_s1", "pass_10_10",
                                     "dropped_near_eval", "dropped_duplicate"]
    assert summary["pixels"].tolist() == [p.n_pixels for p in parts]
    for p, row in zip(parts, summary.itertuples()):
        b = p.batch
        n2 = (b.s2_valid & b.s2_present).sum(1)
        n1 = b.s1_asc_valid.sum(1) + b.s1_desc_valid.sum(1)
        assert row.pass_10_10 == int(((n2 >= 10) & (n1 >= 10)).sum())
    cube100 = summary[summary["name"].str.contains("100x100")]
    assert cube100["year"].tolist() == [2021] and cube100["s2_dates"].tolist() == [12]
    assert summary["pass_10_10"].sum() > 30_000
    print("\n" + summary.to_string())
