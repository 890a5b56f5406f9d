"""NetcdfSource on the real WorldCereal patch cubes (../shared/datasets/worldcereal/patches_raw).

The converted tiles are compared with the raw netCDF values read independently with xarray:
10 m bands exactly, 20 m bands against the 20 m cell under each pixel (nearest) or its 2 x 2
neighbourhood (bilinear), the mask against the SCL classes, S1 against the published int16 code
of the stored dB, and the day-of-year lists against the cube's timestamps.
"""

from __future__ import annotations

import datetime as _dt
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from fixtures import shared_path
from typer.testing import CliRunner

from tessera.bands import S2_BANDS, s1_db_to_int16, scl_valid
from tessera.dpixel import Tile
from tessera.geo import Patch, TargetGrid
from tessera.preprocess import (
    ComposeOptions,
    PreprocessError,
    plan,
    run,
)
from tessera.preprocess.sources.netcdf import NetcdfSource

RAW = ("worldcereal", "patches_raw")
BELGIAN = {"00002806639B424A": 2018, "0000280849BAC91C": 2019}
NO_10M = ("000028085BF08E7E", "2021_TZA_COPERNICUS-GEOGLAM_POLY_1101950")
NEAREST = ComposeOptions(resampling_10m="nearest", resampling_20m="nearest",
                         resampling_s1="nearest")
BANDS_10M = ("B02", "B03", "B04", "B08")
BANDS_20M = ("B8A", "B05", "B06", "B07", "B11", "B12")


def folder(pid: str) -> Path:
    return shared_path(*RAW, pid)


def cube(pid: str, prefix: str) -> Path:
    (f,) = sorted(folder(pid).glob(f"{prefix}*.nc"))
    return f


class Raw:
    """The raw cubes of one patch for one year, read directly with xarray."""

    def __init__(self, pid: str, year: int) -> None:
        def load(prefix: str) -> xr.Dataset:
            with xr.open_dataset(cube(pid, prefix), mask_and_scale=False) as ds:
                t = ds.timestamp.values.astype("datetime64[D]").astype(object)
                return ds.isel(timestamp=[d.year == year for d in t]).load()

        self.s10, self.s20, self.s1 = load("S2_L2A_10m"), load("S2_L2A_20m"), load("S1_GRD-ASC")
        self.dates = [d for d in self.s10.timestamp.values.astype("datetime64[D]").astype(object)]
        self.s1_dates = [d for d in self.s1.timestamp.values.astype("datetime64[D]").astype(object)]

    def s1_codes(self) -> np.ndarray:
        """(T, 32, 32, 2) expected int16 codes [VV, VH] on the 20 m grid."""
        out = []
        for pol in ("VV", "VH"):
            raw = self.s1[pol].values
            code = s1_db_to_int16(raw * 1e-4)
            out.append(np.where(raw == 0, 0, code))
        return np.stack(out, -1)


def doy(d: _dt.date) -> int:
    return d.timetuple().tm_yday


@pytest.fixture(scope="module", params=sorted(BELGIAN))
def converted(request, tmp_path_factory):
    """(raw cubes, tile, sidecar, source) for one Belgian patch converted with nearest."""
    pid = request.param
    year = BELGIAN[pid]
    src = NetcdfSource(folder(pid))
    grid = src.native_grid()
    p = plan(src, grid, year, patch_size=500)
    out = tmp_path_factory.mktemp(f"nc_{pid}")
    report = run(p, out, NEAREST)
    assert report.written == ["0_0_64_64"]
    tile = Tile.open(out / "0_0_64_64")
    meta = json.loads((out / "0_0_64_64" / "preprocess.json").read_text())
    return Raw(pid, year), tile, meta, src


def test_native_grid_is_the_cube_grid():
    src = NetcdfSource(folder("00002806639B424A"))
    g = src.native_grid()
    assert (g.width, g.height, g.resolution) == (64, 64, 10.0)
    assert g.crs.to_epsg() == 32631 and g.name == "00002806639B424A"
    assert g.bounds == (501360.0, 5629040.0, 502000.0, 5629680.0)  # the cube's `bounds` attribute
    # a single file of the folder means the folder
    assert NetcdfSource(cube("00002806639B424A", "S1_GRD")).folder == src.folder
    d = src.describe()
    assert d["kind"] == "netcdf" and d["location"] == str(src.folder)
    assert d["location_id"] == "00002806639B424A" and len(d["files"]) == 3


def test_search_granules(converted):
    raw, _, _, src = converted
    year = raw.dates[0].year
    gs = src.search(src.native_grid(), year)
    s2 = [g for g in gs if g.sensor == "s2"]
    s1 = [g for g in gs if g.sensor == "s1"]
    assert [g.date for g in s2] == raw.dates and [g.date for g in s1] == raw.s1_dates
    assert all(g.orbit == "ascending" and g.s1_units == "db" for g in s1)
    assert all(g.baseline is None and g.boa_offset_applied is None for g in s2)
    assert set(s2[0].assets) == {*S2_BANDS, "SCL"} and set(s1[0].assets) == {"VV", "VH"}
    ts = str(raw.s10.timestamp.values[0].astype("datetime64[s]")).replace("-", "").replace(":", "")
    assert s2[0].id == f"{src.describe()['location_id']}_{ts}"
    assert len({g.id for g in s2}) == len(s2)
    # one asset = one date slice, exactly the raw values (fill value -> NaN)
    a = s2[3].assets["B04"].load()
    assert a.shape == (64, 64) and np.array_equal(a, raw.s10.B04.values[3].astype(np.float32))
    v = s1[5].assets["VH"].load()
    assert np.allclose(v, raw.s1.VH.values[5] * 1e-4, atol=1e-5)
    # other years and other places give nothing
    assert all(g.date.year == year for g in gs)
    far = TargetGrid.from_bbox(10.0, 45.0, 10.01, 45.01)
    assert src.search(far, year) == []
    # plans travel to other processes (the scale-out layer pickles them)
    g2 = pickle.loads(pickle.dumps(s2[3]))
    assert np.array_equal(g2.assets["B04"].load(), a)


def test_dates_and_doys(converted):
    raw, tile, meta, _ = converted
    # S2: a date is kept iff some pixel has a non-zero SCL (no data = 0)
    s2_has = [bool((raw.s20.SCL.values[t] != 0).any()) for t in range(len(raw.dates))]
    want = [d for d, h in zip(raw.dates, s2_has) if h]
    assert meta["s2"]["dates"] == [d.isoformat() for d in want]
    assert tile.doys.tolist() == [doy(d) for d in want]
    assert meta["s2"]["dropped_without_data"] == [d.isoformat() for d, h in
                                                  zip(raw.dates, s2_has) if not h]
    codes = raw.s1_codes()
    s1_has = [bool(codes[t].any()) for t in range(len(raw.s1_dates))]
    want1 = [d for d, h in zip(raw.s1_dates, s1_has) if h]
    assert tile.sar_ascending_doy.tolist() == [doy(d) for d in want1]
    assert tile.sar_descending.shape == (0, 64, 64, 2) and tile.sar_descending_doy.size == 0
    assert len(want) >= 40 and len(want1) >= 50


def _kept(raw: Raw, meta: dict) -> tuple[list[int], list[int]]:
    s2 = [raw.dates.index(_dt.date.fromisoformat(d)) for d in meta["s2"]["dates"]]
    s1 = [raw.s1_dates.index(_dt.date.fromisoformat(d)) for d in meta["s1_ascending"]["dates"]]
    return s2, s1


def test_values_nearest(converted):
    raw, tile, meta, _ = converted
    s2_idx, s1_idx = _kept(raw, meta)
    bands, masks = np.asarray(tile.bands), np.asarray(tile.masks)
    sar = np.asarray(tile.sar_ascending)
    rng = np.random.default_rng(0)
    pick = [(int(rng.integers(len(s2_idx))), int(rng.integers(64)), int(rng.integers(64)))
            for _ in range(50)]
    for k, y, x in pick:
        t = s2_idx[k]
        for b in BANDS_10M:
            assert bands[k, y, x, S2_BANDS.index(b)] == raw.s10[b].values[t, y, x], (b, t, y, x)
        for b in BANDS_20M:
            assert bands[k, y, x, S2_BANDS.index(b)] == raw.s20[b].values[t, y // 2, x // 2]
        assert masks[k, y, x] == scl_valid(raw.s20.SCL.values[t, y // 2, x // 2])
    # the same over every pixel and date, vectorised
    def up(a):
        return a.repeat(2, axis=-2).repeat(2, axis=-1)

    for b in BANDS_10M:
        assert np.array_equal(bands[..., S2_BANDS.index(b)], raw.s10[b].values[s2_idx]), b
    for b in BANDS_20M:
        assert np.array_equal(bands[..., S2_BANDS.index(b)], up(raw.s20[b].values[s2_idx])), b
    scl = up(raw.s20.SCL.values[s2_idx])
    assert np.array_equal(masks.astype(bool), scl_valid(scl))
    assert (masks[np.isin(scl, (3, 8, 9))] == 0).all()  # shadows and clouds are masked
    assert 0.2 < masks.mean() < 0.9  # a real mix of clear and cloudy observations
    codes = raw.s1_codes()[s1_idx]  # (T, 32, 32, 2)
    for k, y, x in pick:
        k1 = k % len(s1_idx)
        assert (sar[k1, y, x] == codes[k1, y // 2, x // 2]).all()
    assert np.array_equal(sar, codes.repeat(2, 1).repeat(2, 2))
    counts = masks.sum(0)
    stats = meta["s2"]["valid_observations_per_pixel"]
    assert (stats["min"], stats["max"]) == (int(counts.min()), int(counts.max()))


def test_bilinear_20m_within_neighbours(tmp_path):
    pid, year = "0000280849BAC91C", 2019
    raw = Raw(pid, year)
    src = NetcdfSource(folder(pid))
    run(plan(src, src.native_grid(), year), tmp_path, ComposeOptions())  # bilinear 20 m and S1
    tile = Tile.open(tmp_path / "0_0_64_64")
    bands = np.asarray(tile.bands)
    assert len(tile.doys) == len(raw.dates)
    # 10 m pixel x lies at 20 m coordinate x/2 - 0.25: neighbours floor(.) and floor(.) + 1
    lo = np.clip(np.floor(np.arange(64) / 2 - 0.25).astype(int), 0, 31)
    hi = np.clip(lo + 1, 0, 31)
    some_between = 0
    for b in BANDS_20M:
        v = raw.s20[b].values.astype(np.int32)  # (T, 32, 32)
        corners = np.stack([v[:, r][:, :, c] for r in (lo, hi) for c in (lo, hi)])
        got = bands[..., S2_BANDS.index(b)].astype(np.int32)
        assert (got >= corners.min(0) - 1).all() and (got <= corners.max(0) + 1).all(), b
        nearest = v.repeat(2, 1).repeat(2, 2)
        some_between += int((got != nearest).sum())
    assert some_between > 0  # really interpolated, not nearest
    for b in BANDS_10M:  # the 10 m bands stay exact
        assert np.array_equal(bands[..., S2_BANDS.index(b)], raw.s10[b].values)
    scl = raw.s20.SCL.values.repeat(2, 1).repeat(2, 2)
    assert np.array_equal(np.asarray(tile.masks).astype(bool), scl_valid(scl))  # SCL: nearest


@pytest.mark.parametrize("pid", NO_10M)
def test_no_10m_cube_is_a_clear_error(pid):
    src = NetcdfSource(folder(pid))
    for call in (src.native_grid, lambda: src.search(TargetGrid.from_bbox(3.9, 50.7, 4.2, 50.9),
                                                     2020)):
        with pytest.raises(PreprocessError) as e:
            call()
        msg = str(e.value)
        assert str(folder(pid)) in msg and "B02 B03 B04 B08" in msg
        assert "10 m" in msg and "cannot be derived from the 20 m bands" in msg


def _subset(src: Path, dst: Path, change=None, n: int = 6) -> None:
    """A small copy of a real cube: the first n timestamps, 8 x 8 cells of 20 m."""
    with xr.open_dataset(src, mask_and_scale=False) as ds:
        size = 16 if "10m" in src.name else 8
        sub = ds.isel(timestamp=slice(0, n), x=slice(0, size), y=slice(0, size)).load()
    if change is not None:
        sub = change(sub)
    sub.to_netcdf(dst, engine="h5netcdf")


def _small_folder(tmp_path: Path, pid: str = "00002806639B424A", s1_name: str | None = None,
                  **changes) -> Path:
    d = tmp_path / pid
    d.mkdir()
    for prefix in ("S2_L2A_10m", "S2_L2A_20m", "S1_GRD"):
        f = cube(pid, prefix)
        name = f.name if prefix != "S1_GRD" or s1_name is None else s1_name
        _subset(f, d / name, changes.get(prefix.lower().replace("_l2a", "").replace("_grd", "")))
    return d


def test_small_copy_with_descending_orbit(tmp_path):
    """A cut-down patch whose S1 file is named DESCENDING: the orbit follows the file name and the
    values land in sar_descending; a sub-window reads the right cells."""
    name = cube("00002806639B424A", "S1_GRD").name.replace("ASCENDING", "DESCENDING")

    def fill_vv(ds):  # no data (the fill value 0) in VV on one 20 m cell: its code must be 0
        ds["VV"].values[:, 1, 6] = 0
        return ds

    d = _small_folder(tmp_path, s1_name=name, s1=fill_vv)
    src = NetcdfSource(d)
    grid = src.native_grid()
    assert (grid.width, grid.height) == (16, 16)
    with xr.open_dataset(d / name, mask_and_scale=False) as s1:
        year = int(str(s1.timestamp.values[0])[:4])
    p = plan(src, grid, year, patch_size=10)  # 4 patches: windows must be offset correctly
    assert not [g for g in p.s1 if g.orbit != "descending"]
    run(p, tmp_path / "out", NEAREST)
    with xr.open_dataset(d / name, mask_and_scale=False) as s1, \
            xr.open_dataset(next(d.glob("S2_L2A_10m*")), mask_and_scale=False) as s10:
        keep1 = [str(t)[:4] == str(year) for t in s1.timestamp.values]
        keep2 = [str(t)[:4] == str(year) for t in s10.timestamp.values]
        vv = s1.VV.values[keep1]
        b08 = s10.B08.values[keep2]
    tile = Tile.open(tmp_path / "out" / "10_0_16_10")
    assert tile.sar_ascending.shape[0] == 0 and tile.sar_descending.shape[0] == len(vv)
    want = np.where(vv == 0, 0, s1_db_to_int16(vv * 1e-4)).repeat(2, 1).repeat(2, 2)[:, 0:10, 10:16]
    assert np.array_equal(np.asarray(tile.sar_descending)[..., 0], want)
    assert (want[:, 2:4, 2:4] == 0).all() and (want != 0).mean() > 0.9
    assert np.array_equal(np.asarray(tile.bands)[..., S2_BANDS.index("B08")], b08[:, 0:10, 10:16])


def test_mismatched_timestamps(tmp_path):
    def shift(ds):
        t = ds.timestamp.values.copy()
        t[2] = t[2] + np.timedelta64(1, "D")
        return ds.assign_coords(timestamp=t)

    d = _small_folder(tmp_path, s2_20m=shift)
    with pytest.raises(PreprocessError) as e:
        NetcdfSource(d).search(TargetGrid.from_bbox(3.9, 50.7, 4.2, 50.9), 2017)
    msg = str(e.value)
    f10, f20 = next(d.glob("S2_L2A_10m*")), next(d.glob("S2_L2A_20m*"))
    assert str(f10) in msg and str(f20) in msg and "timestamp 2" in msg
    with xr.open_dataset(f10, mask_and_scale=False) as ds:
        assert str(ds.timestamp.values[2])[:19] in msg


def test_missing_10m_timestamp_count(tmp_path):
    d = _small_folder(tmp_path, s2_10m=lambda ds: ds.isel(timestamp=slice(0, 4)))
    with pytest.raises(PreprocessError, match=r"4 timestamps.*6 timestamps.*extra timestamp"):
        NetcdfSource(d).native_grid()


def test_missing_variable(tmp_path):
    d = _small_folder(tmp_path, s2_20m=lambda ds: ds.drop_vars("SCL"))
    with pytest.raises(PreprocessError) as e:
        NetcdfSource(d).native_grid()
    assert str(next(d.glob("S2_L2A_20m*"))) in str(e.value) and "SCL" in str(e.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_file(tmp_path, damage):
    d = tmp_path / "patch"
    d.mkdir()
    for prefix in ("S2_L2A_10m", "S2_L2A_20m", "S1_GRD"):
        shutil.copy(cube("0000280849BAC91C", prefix), d)
    bad = next(d.glob("S2_L2A_20m*"))
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\x89HDF" + bytes(4000))
    src = NetcdfSource(d)
    with pytest.raises(PreprocessError) as e:
        plan(src, TargetGrid.from_bbox(3.9, 50.7, 4.2, 50.9), 2019)
    assert str(bad) in str(e.value) and "not a readable netCDF file" in str(e.value)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(PreprocessError, match="not found"):
        NetcdfSource(tmp_path / "nope")
    with pytest.raises(PreprocessError, match="no Sentinel-2"):
        NetcdfSource(tmp_path).native_grid()


def test_s1_only_folder(tmp_path):
    shutil.copy(cube("0000280849BAC91C", "S1_GRD"), tmp_path)
    src = NetcdfSource(tmp_path)
    gs = src.search(src.native_grid(), 2019)
    assert gs and all(g.sensor == "s1" for g in gs)
    with pytest.raises(PreprocessError, match="no Sentinel-2"):
        plan(src, src.native_grid(), 2019)


def test_embed_converted_window(tmp_path):
    """A 16 x 16 window of a real patch: convert, embed with a (random) tiny model, and embed the
    same tile through the CLI."""
    from tessera.cli import app
    from tessera.infer import Embedder, embed_tile, resolve_model

    pid, year = "0000280849BAC91C", 2019
    src = NetcdfSource(folder(pid))
    grid = src.native_grid().sub(Patch(24, 8, 40, 24))
    run(plan(src, grid, year), tmp_path / "tiles")
    tile_dir = tmp_path / "tiles" / "0_0_16_16"
    tile = Tile.open(tile_dir)
    assert tile.shape == (16, 16)
    raw = Raw(pid, year)
    assert np.array_equal(np.asarray(tile.bands)[..., S2_BANDS.index("B04")],
                          raw.s10.B04.values[:, 8:24, 24:40])
    s2_ok = np.asarray(tile.masks).any(0)
    s1_ok = (np.asarray(tile.sar_ascending) != 0).any(-1).any(0)
    assert s2_ok.all() and s1_ok.all()

    out = embed_tile(Embedder(resolve_model(None, "tiny")[0], device="cpu"), tile_dir,
                     tmp_path / "emb", progress=False)
    q, s = np.load(out.embeddings), np.load(out.scales)
    assert q.shape == (16, 16, 128) and q.dtype == np.int8 and s.shape == (16, 16)
    assert np.isfinite(s[s2_ok & s1_ok]).all() and (s[s2_ok & s1_ok] > 0).all()
    assert (np.abs(q).max(-1) == 127).all()

    result = CliRunner().invoke(app, ["embed", str(tile_dir), "-o", str(tmp_path / "cli"),
                                      "--preset", "tiny", "--no-progress"])
    assert result.exit_code == 0, result.output
    q2 = np.load(tmp_path / "cli" / "0_0_16_16.npy")
    assert q2.shape == (16, 16, 128) and np.array_equal(q2, q)  # deterministic scheme


@pytest.mark.slow
def test_cli_preprocess_and_embed_whole_patch(tmp_path):
    from tessera.cli import app

    runner = CliRunner()
    pid = "0000280849BAC91C"
    r = runner.invoke(app, ["preprocess", "--source", "netcdf", "--netcdf", str(folder(pid)),
                            "--year", "2019", "-o", str(tmp_path / "tiles"), "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["embed", str(tmp_path / "tiles" / "0_0_64_64"), "-o",
                            str(tmp_path / "emb"), "--preset", "tiny", "--no-progress"])
    assert r.exit_code == 0, r.output
    s = np.load(tmp_path / "emb" / "0_0_64_64_scales.npy")
    assert s.shape == (64, 64) and np.isfinite(s).all()
    r = runner.invoke(app, ["preprocess", "--source", "netcdf", "--netcdf",
                            str(folder(NO_10M[0])), "--year", "2019", "-o", str(tmp_path / "x"),
                            "--no-progress"])
    assert r.exit_code == 2 and "B02 B03 B04 B08" in " ".join(r.output.split())
