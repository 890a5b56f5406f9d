"""Local GeoTIFF/COG files -> tile folders, end to end on SIMULATED COGs (tessera.preprocess
.synthetic): values, masks, BOA offset, S1 codes, seams between regions, reprojection, resuming,
and bad input."""

import json
import shutil

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.warp import Resampling, calculate_default_transform, reproject
from shapely.geometry import box

from tessera.bands import scl_valid
from tessera.dpixel import Tile
from tessera.geo import TargetGrid
from tessera.preprocess import ComposeOptions, PreprocessError, plan, run
from tessera.preprocess import pipeline
from tessera.preprocess.sources.files import FilesSource, template_regex
from tessera.preprocess.synthetic import S1_TEMPLATE, S2_TEMPLATE, write_scene_files
from tessera.simulate import SimConfig

YEAR = 2022
ORIGIN = (500000.0, 5600000.0)
EXACT = ComposeOptions(resampling_20m="nearest")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    cfg = SimConfig(height=64, width=96, n_s2_dates=10, n_s1_asc=5, n_s1_desc=4, year=YEAR,
                    origin=ORIGIN, seed=3)
    sim = write_scene_files(root, cfg)
    sim["root"] = root
    return sim


def source(root, **kw):
    return FilesSource(s2=str(root / S2_TEMPLATE), s1=str(root / S1_TEMPLATE), **kw)


def scene_grid(sim, x0=0, y0=0, x1=96, y1=64):
    crs = CRS.from_string(sim["crs"])
    t = sim["transform"]
    geom = box(t.c + 10 * x0, t.f - 10 * y1, t.c + 10 * x1, t.f - 10 * y0)
    return TargetGrid.from_projected_geometry(geom, crs, "test")


def mosaic(out_dir, grid, patch_size, name, doy_name=None):
    """Reassemble the patches' arrays into one (T, H, W, ...) array over `grid`. With `doy_name`,
    over the union of the patches' dates (a patch drops dates without data: zeros there)."""
    tiles = [(p, Tile.open(out_dir / p.name)) for p in grid.patches(patch_size)]
    doys = sorted({int(d) for _, t in tiles for d in getattr(t, doy_name)}) if doy_name else None
    full = None
    for p, t in tiles:
        a = np.asarray(getattr(t, name))
        if full is None:
            n = len(doys) if doys is not None else a.shape[0]
            full = np.zeros((n, grid.height, grid.width, *a.shape[3:]), a.dtype)
        idx = [doys.index(int(d)) for d in getattr(t, doy_name)] if doys is not None else slice(None)
        full[idx, p.y0:p.y1, p.x0:p.x1] = a
    return (doys, full) if doy_name else full


def test_template_parsing():
    rx = template_regex("/d/S2_{granule}_{date}_{band}.tif")
    m = rx.match("/d/S2_T31UDS_2022-05-01_B8A.tif")
    assert m.groupdict() == {"granule": "T31UDS", "date": "2022-05-01", "band": "B8A"}
    assert template_regex("/d/{date}/{band}.tif").match("/d/20220501T103021/B4.tif")


def test_files_to_tiles_match_the_source(scene, tmp_path):
    src = source(scene["root"])
    p = plan(src, scene_grid(scene), YEAR, patch_size=40)
    assert [x.name for x in p.patches] == ["0_0_40_40", "40_0_80_40", "80_0_96_40", "0_40_40_64",
                                           "40_40_80_64", "80_40_96_64"]
    assert len(p.s2) == 10 and sum(g.orbit == "ascending" for g in p.s1) == 5
    report = run(p, tmp_path / "out", EXACT)
    assert len(report.written) == 6 and report.conflicts == 0
    grid = p.grid
    bands = mosaic(tmp_path / "out", grid, 40, "bands")
    masks = mosaic(tmp_path / "out", grid, 40, "masks")
    scl20 = scene["scl"][:, ::2, ::2].repeat(2, 1).repeat(2, 2)
    data = scl20 != 0
    sim = scene["bands"]
    # 10 m bands: exact; 20 m bands: the 20 m cell written; both after removing the BOA offset
    # (the COGs carry it from 2022-01-25 on, the simulated values do not): exactly once.
    assert np.array_equal(bands[..., :4][data], sim[..., :4][data])
    sim20 = sim[:, ::2, ::2, 4:].repeat(2, 1).repeat(2, 2)
    assert np.array_equal(bands[..., 4:][data], sim20[data])
    assert (bands[~data] == 0).all()
    # clouds masked from SCL; a band at the files' nodata (0) is no observation either
    usable = (sim[..., :4] != 0).all(-1) & (sim20 != 0).all(-1)
    assert np.array_equal(masks.astype(bool), scl_valid(scl20) & usable)
    tile = Tile.open(tmp_path / "out" / "0_0_40_40")
    assert np.array_equal(tile.doys, scene["doys"])
    for pt in p.patches:  # S1: per patch, since a date without data in a patch is dropped
        t = Tile.open(tmp_path / "out" / pt.name)
        for orbit in ("ascending", "descending"):
            sim_doys = list(scene[f"sar_{orbit}_doy"])
            sim_sar = scene[f"sar_{orbit}"][:, pt.y0:pt.y1, pt.x0:pt.x1]
            kept = [sim_doys.index(d) for d in getattr(t, f"sar_{orbit}_doy")]
            assert np.array_equal(getattr(t, f"sar_{orbit}"), sim_sar[kept])
            dropped = sorted(set(range(len(sim_doys))) - set(kept))
            assert not sim_sar[dropped].any()
    meta = json.loads((tmp_path / "out" / "0_0_40_40" / "preprocess.json").read_text())
    assert meta["s2"]["doys"] == scene["doys"].tolist()
    # The first date (day 23) predates baseline 04.00; all later ones had the offset removed.
    assert meta["s2"]["boa_offset_subtracted"][0] == []
    assert all(g == ["T31UDS"] for g in meta["s2"]["boa_offset_subtracted"][1:])
    assert meta["s2"]["valid_pixels"] == [int(m.sum()) for m in masks[:, :40, :40]]
    assert meta["software"]["name"] == "tessera-eo" and meta["year"] == YEAR
    region = json.loads((tmp_path / "out" / "region.json").read_text())
    assert len(region["patches"]) == 6


def test_adjacent_regions_are_identical_on_their_overlap(scene, tmp_path):
    """The seam test: two overlapping regions, different patch sizes, processed separately."""
    src = source(scene["root"])
    a = plan(src, scene_grid(scene, 0, 0, 60, 64), YEAR, patch_size=32)
    b = plan(src, scene_grid(scene, 36, 5, 96, 64), YEAR, patch_size=25)
    opts = ComposeOptions()  # default resampling (bilinear 20 m, bilinear S1)
    run(a, tmp_path / "a", opts)
    run(b, tmp_path / "b", opts)
    for name, doy_name in (("bands", "doys"), ("masks", "doys"),
                           ("sar_ascending", "sar_ascending_doy"),
                           ("sar_descending", "sar_descending_doy")):
        (da, ma), (db, mb) = (mosaic(tmp_path / "a", a.grid, 32, name, doy_name),
                              mosaic(tmp_path / "b", b.grid, 25, name, doy_name))
        # Overlap in scene pixels: columns 36..60, rows 5..64 -> a[:, 5:64, 36:60], b[:, :, :24]
        oa, ob = ma[:, 5:64, 36:60], mb[:, :59, :24]
        union = sorted(set(da) | set(db))
        for d in union:  # a date one region lacks must have no data on the overlap
            va = oa[da.index(d)] if d in da else np.zeros_like(oa[0])
            vb = ob[db.index(d)] if d in db else np.zeros_like(ob[0])
            assert np.array_equal(va, vb), (name, d)
        assert oa.any() and len(union) > 3


def test_granules_in_another_crs_are_reprojected(scene, tmp_path):
    """A granule delivered in UTM 32 N is warped onto the region's UTM 31 N grid."""
    raw = tmp_path / "raw32"
    dst_crs = CRS.from_epsg(32632)
    for f in scene["root"].rglob("*.tif"):
        out = raw / f.relative_to(scene["root"])
        out.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(f) as s:
            tr, w, h = calculate_default_transform(s.crs, dst_crs, s.width, s.height, *s.bounds,
                                                   resolution=s.res)
            prof = s.profile | {"crs": dst_crs, "transform": tr, "width": w, "height": h,
                                "driver": "GTiff"}
            with rasterio.open(out, "w", **prof) as d:
                d.update_tags(**s.tags())
                reproject(rasterio.band(s, 1), rasterio.band(d, 1), resampling=Resampling.nearest)
    ref_plan = plan(source(scene["root"]), scene_grid(scene), YEAR)
    run(ref_plan, tmp_path / "ref", ComposeOptions(resampling_20m="nearest",
                                                   resampling_s1="nearest"))
    p = plan(source(raw), scene_grid(scene), YEAR)
    run(p, tmp_path / "out", ComposeOptions(resampling_20m="nearest", resampling_s1="nearest"))
    ref, out = Tile.open(tmp_path / "ref" / "0_0_96_64"), Tile.open(tmp_path / "out" / "0_0_96_64")
    assert out.crs == ref.crs and out.transform == ref.transform
    inner = (slice(None), slice(4, -4), slice(4, -4))  # away from the warped footprint's edge
    same = np.asarray(out.bands)[inner] == np.asarray(ref.bands)[inner]
    assert same.mean() > 0.6  # two nearest-neighbour warps return most pixels unchanged


def test_rerun_skips_finished_patches_and_overwrite_redoes_them(scene, tmp_path):
    p = plan(source(scene["root"]), scene_grid(scene, 0, 0, 64, 32), YEAR, patch_size=32)
    first = run(p, tmp_path / "out", EXACT)
    assert first.written == ["0_0_32_32", "32_0_64_32"]
    stamp = (tmp_path / "out" / "0_0_32_32" / "bands.npy").stat().st_mtime_ns
    again = run(p, tmp_path / "out", EXACT)
    assert again.written == [] and again.skipped == first.written
    assert (tmp_path / "out" / "0_0_32_32" / "bands.npy").stat().st_mtime_ns == stamp
    with pytest.raises(PreprocessError, match="not made by this run's settings.*--overwrite"):
        run(p, tmp_path / "out", ComposeOptions())  # other options: refuse to mix
    redo = run(p, tmp_path / "out", ComposeOptions(), overwrite=True)
    assert redo.written == first.written


def test_interrupted_run_leaves_no_half_written_patch(scene, tmp_path, monkeypatch):
    p = plan(source(scene["root"]), scene_grid(scene, 0, 0, 64, 32), YEAR, patch_size=32)
    real = pipeline.compose_s2_date

    def flaky(date, gs, grid, opts):
        if grid.name == "32_0_64_32" and date == gs[0].date and date.month == 8:
            raise OSError("simulated network failure")
        return real(date, gs, grid, opts)

    monkeypatch.setattr(pipeline, "compose_s2_date", flaky)
    with pytest.raises(OSError, match="simulated"):
        run(p, tmp_path / "out", EXACT, workers=2)
    out = tmp_path / "out"  # gone if no patch finished before the failure
    left = sorted(x.name for x in out.iterdir()) if out.exists() else []
    assert not [n for n in left if n.startswith(".")]  # no temporary folder left behind
    assert "32_0_64_32" not in left
    for name in left:
        if name != "region.json":  # a patch finished before the failure is complete and valid
            Tile.open(tmp_path / "out" / name)
    monkeypatch.setattr(pipeline, "compose_s2_date", real)
    resumed = run(p, tmp_path / "out", EXACT)
    assert sorted(resumed.skipped + resumed.written) == ["0_0_32_32", "32_0_64_32"]
    assert "32_0_64_32" in resumed.written


def test_dates_without_data_in_a_patch_are_dropped(scene, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(scene["root"], raw)
    # Blank the third S2 date entirely (all bands and SCL = 0, the no-data value).
    d3 = scene["s2_dates"][2].isoformat()
    for f in raw.glob(f"s2/*_{d3}_*.tif"):
        with rasterio.open(f, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
            ds.write(np.zeros((ds.height, ds.width), ds.dtypes[0]), 1)
    p = plan(source(raw), scene_grid(scene, 0, 0, 32, 32), YEAR)
    run(p, tmp_path / "out", EXACT)
    tile = Tile.open(tmp_path / "out" / "0_0_32_32")
    assert tile.bands.shape[0] == 9
    assert scene["doys"][2] not in tile.doys
    meta = json.loads((tmp_path / "out" / "0_0_32_32" / "preprocess.json").read_text())
    assert meta["s2"]["dropped_without_data"] == [d3]


# --- bad input ---------------------------------------------------------------------------------

def copy_raw(scene, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(scene["root"], raw)
    return raw


def test_missing_band(scene, tmp_path):
    raw = copy_raw(scene, tmp_path)
    d = scene["s2_dates"][4].isoformat()
    (raw / "s2" / f"S2_T31UDS_{d}_B8A.tif").unlink()
    with pytest.raises(PreprocessError, match=rf"S2 {d} .*missing band\(s\) B8A"):
        plan(source(raw), scene_grid(scene), YEAR)


def test_band_in_another_crs_than_its_granule(scene, tmp_path):
    raw = copy_raw(scene, tmp_path)
    d = scene["s2_dates"][1].isoformat()
    f = raw / "s2" / f"S2_T31UDS_{d}_B11.tif"
    with rasterio.open(f, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.crs = CRS.from_epsg(32632)
    with pytest.raises(PreprocessError, match=rf"B11.tif: CRS EPSG:32632 differs .*\({d}\)"):
        plan(source(raw), scene_grid(scene), YEAR)


def test_corrupt_files(scene, tmp_path):
    raw = copy_raw(scene, tmp_path)
    d = scene["s2_dates"][3].isoformat()
    bad = raw / "s2" / f"S2_T31UDS_{d}_B03.tif"
    bad.write_bytes(b"this is not a tiff")
    with pytest.raises(PreprocessError, match=rf"S2_T31UDS_{d}_B03.tif: not a readable"):
        plan(source(raw), scene_grid(scene), YEAR)
    # A truncated file passes the header check and fails while reading pixels.
    raw2 = copy_raw(scene, tmp_path / "2")
    bad = raw2 / "s2" / f"S2_T31UDS_{d}_B04.tif"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    p = plan(source(raw2), scene_grid(scene), YEAR, patch_size=48)
    with pytest.raises(PreprocessError, match=rf"S2_T31UDS_{d}_B04.tif: cannot read"):
        run(p, tmp_path / "out", EXACT)
    assert not (tmp_path / "out").exists()  # nothing finished: no folder left behind


def test_overlapping_granules_with_different_values(scene, tmp_path):
    raw = copy_raw(scene, tmp_path)
    d = scene["s2_dates"][5].isoformat()
    for f in raw.glob(f"s2/S2_T31UDS_{d}_*.tif"):  # a second granule of the same date
        g = f.with_name(f.name.replace("T31UDS", "T31UET"))
        shutil.copy(f, g)
        if f.name.endswith("_B02.tif"):
            with rasterio.open(g, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
                a = ds.read(1)
                ds.write(np.where(a > 0, a + 7, 0).astype(a.dtype), 1)
    p = plan(source(raw), scene_grid(scene, 0, 0, 32, 32), YEAR)
    with pytest.raises(PreprocessError, match=rf"{d}: overlapping granules T31UDS .* and T31UET "
                                              r".*band B02, max difference 7"):
        run(p, tmp_path / "err", ComposeOptions(on_conflict="error"))
    assert not (tmp_path / "err" / "0_0_32_32").exists()
    report = run(p, tmp_path / "warn", EXACT)  # default: warn, keep the first granule
    assert report.conflicts == 1
    meta = json.loads((tmp_path / "warn" / "0_0_32_32" / "preprocess.json").read_text())
    assert meta["conflicts"][0]["band"] == "B02" and meta["conflicts"][0]["other"] == "T31UET"


def test_no_files_no_acquisitions_no_year(scene, tmp_path):
    with pytest.raises(PreprocessError, match="no files match the S2 template"):
        plan(FilesSource(s2=str(tmp_path / "none_{date}_{band}.tif")), scene_grid(scene), YEAR)
    far = TargetGrid.from_bbox(10.0, 45.0, 10.01, 45.01)
    with pytest.raises(PreprocessError, match="no acquisitions in 2022 over"):
        plan(source(scene["root"]), far, YEAR)
    with pytest.raises(PreprocessError, match="no acquisitions in 2021 over"):
        plan(source(scene["root"]), scene_grid(scene), 2021)
    with pytest.raises(PreprocessError, match="needs an {orbit} field"):
        FilesSource(s1=str(tmp_path / "S1_{date}_{band}.tif"))
    with pytest.raises(PreprocessError, match="multi-band"):
        FilesSource(s2=str(tmp_path / "S2_{date}.tif"))
