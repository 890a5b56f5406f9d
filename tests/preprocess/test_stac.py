"""StacSource on a static catalog and on a STAC API, both served over loopback HTTP: the tiles
must be identical to a FilesSource run over the same simulated COGs, with the collection
conventions (asset keys, processing baseline, Earth Search's offset flag) of the real ones."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from http_server import StacApi, serve
from rasterio.crs import CRS
from rasterio.warp import transform_bounds, transform_geom
from shapely.geometry import box, mapping

from tessera.bands import BOA_OFFSET, S2_BANDS
from tessera.geo import TargetGrid
from tessera.preprocess import ComposeOptions, PreprocessError, plan, run
from tessera.preprocess.sources.files import FilesSource
from tessera.preprocess.sources.stac import StacSource
from tessera.preprocess.synthetic import (
    S1_TEMPLATE,
    S2_TEMPLATE,
    write_s2_date,
    write_scene_files,
)
from tessera.simulate import SimConfig

YEAR = 2022
PATCH = 40  # 4 patches over the 64 x 64 scene
OPTS = ComposeOptions(resampling_20m="nearest")
PC_KEYS = {b: b for b in (*S2_BANDS, "SCL")}
ES_KEYS = {"B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
           "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B11": "swir16", "B12": "swir22",
           "SCL": "scl"}
ARRAYS = ("bands", "masks", "doys", "sar_ascending", "sar_ascending_doy", "sar_descending",
          "sar_descending_doy")


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Simulated COGs (S2 dates 2022-01-20 without the BOA offset, then three with it; two S1
    dates per orbit), the same S2 written offset-free as Earth Search serves it, and a
    FilesSource run as the reference."""
    root = tmp_path_factory.mktemp("stac")
    cfg = SimConfig(size=64, n_s2_dates=4, n_s1_asc=2, n_s1_desc=2, seed=1, year=YEAR)
    sim = write_scene_files(root / "raw", cfg)
    assert sim["s2_dates"][0] < dt.date(2022, 1, 25) <= sim["s2_dates"][1]
    for t, d in enumerate(sim["s2_dates"]):
        write_s2_date(root / "es_raw", "T31UDS", d, sim["bands"][t], sim["scl"][t], sim["crs"],
                      sim["transform"], offset=False)
    grid = TargetGrid(CRS.from_string(sim["crs"]), sim["transform"], 64, 64)
    files = FilesSource(s2=str(root / "raw" / S2_TEMPLATE), s1=str(root / "raw" / S1_TEMPLATE))
    run(plan(files, grid, YEAR, PATCH), root / "ref", OPTS)
    return {"root": root, "sim": sim, "grid": grid, "ref": tile_arrays(root / "ref")}


def tile_arrays(out: Path) -> dict[str, dict[str, np.ndarray]]:
    tiles = {}
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        tiles[d.name] = {n: np.load(d / f"{n}.npy") for n in ARRAYS}
        with rasterio.open(d / "roi.tiff") as r:
            tiles[d.name]["roi"] = r.read(1)
    return tiles


def assert_same_tiles(got: dict, ref: dict) -> None:
    assert sorted(got) == sorted(ref) and len(ref) == 4
    for name in ref:
        for key, a in ref[name].items():
            b = got[name][key]
            assert b.dtype == a.dtype and b.shape == a.shape, (name, key)
            assert np.array_equal(b, a), f"{name}/{key} differs"


def footprint(path: Path) -> tuple[dict, list[float]]:
    with rasterio.open(path) as r:
        geom = transform_geom(r.crs, "EPSG:4326", mapping(box(*r.bounds)))
        return geom, list(transform_bounds(r.crs, "EPSG:4326", *r.bounds))


def s2_item(raw: Path, date: dt.date, keys: dict[str, str], style: str, props: dict,
            drop: str | None = None) -> pystac.Item:
    path = {b: raw / S2_TEMPLATE.format(granule="T31UDS", date=date.isoformat(), band=b)
            for b in keys}
    with rasterio.open(path["B02"]) as r:
        baseline = r.tags()["PROCESSING_BASELINE"]
    geom, bbox = footprint(path["B02"])
    ymd = date.strftime("%Y%m%d")
    gid = (f"S2B_MSIL2A_{ymd}T105029_R051_T31UDS_{ymd}T130000" if style == "pc"
           else f"S2B_31UDS_{ymd}_0_L2A")
    props = {"s2:processing_baseline": baseline, "proj:code": "EPSG:32631", **props}
    item = pystac.Item(gid, geom, bbox, dt.datetime.combine(date, dt.time(10, 50),
                                                            tzinfo=dt.timezone.utc),
                       {k: v for k, v in props.items() if v is not None})
    for band, key in keys.items():
        if band != drop:
            item.add_asset(key, pystac.Asset(
                str(path[band]), media_type=pystac.MediaType.COG, roles=["data"],
                extra_fields={"raster:bands": [{"nodata": 0, "data_type": "uint16"}]}))
    return item


def s1_item(raw: Path, orbit: str, date: dt.date, drop: str | None = None) -> pystac.Item:
    path = {p: raw / S1_TEMPLATE.format(orbit=orbit, date=date.isoformat(), band=p.upper())
            for p in ("vv", "vh")}
    geom, bbox = footprint(path["vv"])
    ymd = date.strftime("%Y%m%d")
    item = pystac.Item(f"S1A_IW_GRDH_1SDV_{ymd}T060000_{orbit[:3]}_rtc", geom, bbox,
                       dt.datetime.combine(date, dt.time(6, 0), tzinfo=dt.timezone.utc),
                       {"sat:orbit_state": orbit, "sar:polarizations": ["VV", "VH"],
                        "proj:code": "EPSG:32631"})
    for pol, p in path.items():
        if pol != drop:
            item.add_asset(pol, pystac.Asset(
                str(p), media_type=pystac.MediaType.COG, roles=["data"],
                extra_fields={"raster:bands": [{"nodata": 0, "data_type": "float32"}]}))
    return item


def build_catalog(scene, name: str, style: str = "pc", raw: str = "raw",
                  s2_props=lambda d: {}, drop: tuple[str, str] | None = None) -> Path:
    """A self-contained static catalog `root/name/catalog.json` (relative hrefs) with the
    collections sentinel-2-l2a and sentinel-1-rtc. `drop` = (band, item date) leaves out one
    asset of one item."""
    root, sim = scene["root"], scene["sim"]
    keys = PC_KEYS if style == "pc" else ES_KEYS
    extent = pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]),
                           pystac.TemporalExtent([[dt.datetime(2015, 6, 23,
                                                               tzinfo=dt.timezone.utc), None]]))
    cat = pystac.Catalog("test", "simulated Sentinel scenes")
    s2 = pystac.Collection("sentinel-2-l2a", "S2 L2A", extent)
    s1 = pystac.Collection("sentinel-1-rtc", "S1 RTC", extent)
    cat.add_children([s2, s1])
    dropped = drop or (None, None)
    for d in sim["s2_dates"]:
        s2.add_item(s2_item(root / raw, d, keys, style, s2_props(d),
                            dropped[0] if dropped[1] == d else None))
    for orbit, key in (("ascending", "asc_dates"), ("descending", "desc_dates")):
        for d in sim[key]:
            s1.add_item(s1_item(root / "raw", orbit, d, dropped[0] if dropped[1] == d else None))
    cat.normalize_hrefs(str(root / name))
    cat.make_all_asset_hrefs_relative()
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    return root / name / "catalog.json"


def stac_run(src: StacSource, scene, out: str) -> dict:
    p = plan(src, scene["grid"], YEAR, PATCH)
    run(p, scene["root"] / out, OPTS)
    return tile_arrays(scene["root"] / out)


def check_sim_values(tiles: dict, sim: dict) -> None:
    """10 m bands equal the simulated offset-free values on every pixel with data."""
    for name, t in tiles.items():
        x0, y0, x1, y1 = map(int, name.split("_"))
        expect = sim["bands"][:, y0:y1, x0:x1, :4]
        has_data = sim["scl"][:, ::2, ::2].repeat(2, 1).repeat(2, 2)[:, y0:y1, x0:x1] != 0
        assert has_data.mean() > 0.9
        assert np.array_equal(t["bands"][..., :4][has_data], expect[has_data])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pc_catalog(scene):
    return build_catalog(scene, "pc")


# --- the loopback server ------------------------------------------------------------------------

def test_server_ranges(tmp_path):
    import urllib.error
    import urllib.request
    data = bytes(range(256)) * 4
    (tmp_path / "f.tif").write_bytes(data)
    with serve(tmp_path) as srv:
        def get(rng=None, method="GET"):
            req = urllib.request.Request(srv.url + "/f.tif?sig=x", method=method,
                                         headers={"Range": rng} if rng else {})
            with urllib.request.urlopen(req) as r:
                return r.status, dict(r.headers), r.read()
        assert get(method="HEAD")[1]["Content-Length"] == "1024"
        st, h, body = get("bytes=10-19")
        assert (st, h["Content-Range"], body) == (206, "bytes 10-19/1024", data[10:20])
        assert get("bytes=1000-")[2] == data[1000:] and get("bytes=-4")[2] == data[-4:]
        assert get("bytes=0-1,5-6")[0] == 200  # several ranges: the whole file
        with pytest.raises(urllib.error.HTTPError, match="416"):
            get("bytes=2000-2001")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(srv.url + "/missing.tif")


def test_http_cog_read_fetches_only_the_window(tmp_path):
    """RasterAsset over http reads the blocks under the target window by byte ranges, and the
    values equal a local read."""
    from rasterio.transform import from_origin

    from tessera.preprocess import RasterAsset

    rng = np.random.default_rng(0)
    a = rng.integers(1, 10000, size=(1024, 1024)).astype(np.uint16)
    t = from_origin(500000, 5600000, 10, 10)
    with rasterio.open(tmp_path / "big.tif", "w", driver="COG", width=1024, height=1024,
                       count=1, dtype="uint16", crs="EPSG:32631", transform=t, nodata=0,
                       compress="deflate", blocksize=256, overviews="NONE") as dst:
        dst.write(a, 1)
    size = (tmp_path / "big.tif").stat().st_size
    grid = TargetGrid(CRS.from_epsg(32631), from_origin(500000 + 3000, 5600000 - 3000, 10, 10),
                      64, 64)
    (tmp_path / "big_noext").write_bytes((tmp_path / "big.tif").read_bytes())
    with serve(tmp_path) as srv:
        got = RasterAsset(srv.url + "/big.tif").read(grid, "nearest")
        ranges = [r for m, _, r in srv.requests if m == "GET"]
        # a URL without extension (download links) is read too
        noext = RasterAsset(srv.url + "/big_noext?token=1").read(grid, "nearest")
        assert np.array_equal(noext, got)
    assert np.array_equal(got, a[300:364, 300:364].astype(np.float32))
    assert np.array_equal(got, RasterAsset(str(tmp_path / "big.tif")).read(grid, "nearest"))
    assert ranges and all(r and r.startswith("bytes=") for r in ranges)
    fetched = sum(int(e) - int(b) + 1 for b, e in (r[6:].split("-") for r in ranges))
    assert fetched < size / 4, (fetched, size)


# --- static catalog and API give the FilesSource tiles --------------------------------------------

@pytest.mark.parametrize("mode", ["static", "api"])
def test_stac_matches_files_source(scene, pc_catalog, mode):
    root = scene["root"]
    api = StacApi.from_catalog(pc_catalog, root=root) if mode == "api" else None
    with serve(root, api) as srv:
        url = srv.url + ("/pc/catalog.json" if mode == "static" else "/")
        src = StacSource(url)
        granules = src.search(scene["grid"], YEAR)
        tiles = stac_run(src, scene, f"out_{mode}")
        log = list(srv.requests)
    s2 = [g for g in granules if g.sensor == "s2"]
    s1 = [g for g in granules if g.sensor == "s1"]
    assert [g.date for g in s2] == scene["sim"]["s2_dates"]
    assert [g.baseline for g in s2] == ["02.09", "04.00", "04.00", "04.00"]
    assert all(g.boa_offset_applied is None for g in s2)
    assert sorted(g.date for g in s1 if g.orbit == "ascending") == scene["sim"]["asc_dates"]
    assert all(g.s1_units == "linear" and set(g.assets) == {"VV", "VH"} for g in s1)
    g = s2[1]
    assert set(g.assets) == {*S2_BANDS, "SCL"} and g.assets["B8A"].nodata == 0.0
    assert g.assets["B8A"].href.startswith(srv.url + "/raw/s2/") and g.assets["B8A"].href \
        .endswith("_B8A.tif")
    assert g.source.startswith(srv.url) if mode == "static" else g.source.endswith(g.id)
    assert g.bbox[0] < g.bbox[2] and 0 < g.bbox[0] < 3.5 and 49 < g.bbox[1] < 50
    assert_same_tiles(tiles, scene["ref"])
    check_sim_values(tiles, scene["sim"])
    # GDAL read the COGs by byte ranges
    assert any(m == "GET" and p.endswith(".tif") and r for m, p, r in log)
    if mode == "api":
        assert any(p.startswith("/search") for _, p, _ in log)
    else:
        assert not any(p.startswith("/search") for _, p, _ in log)


def test_local_catalog_path(scene, pc_catalog):
    gs = StacSource(str(pc_catalog)).search(scene["grid"], YEAR)
    assert len(gs) == 8
    href = next(g for g in gs if g.sensor == "s2").assets["SCL"].href
    assert Path(href).is_absolute() and Path(href).exists()


@pytest.mark.parametrize("mode", ["static", "api"])
def test_modifier_signs_every_item(scene, pc_catalog, mode):
    """A Planetary-Computer-like modifier appending a token to each asset href: applied to
    items of a static catalog, to pages (dicts) of an API; GDAL reads the signed URLs."""
    seen = []

    def sign(obj):
        if isinstance(obj, dict):
            feats = obj.get("features", [obj] if "assets" in obj else [])
            for f in feats:
                seen.append(f["id"])
                for a in f["assets"].values():
                    a["href"] += "?st=2024&sig=abc%3D"
        elif isinstance(obj, pystac.Item):
            seen.append(obj.id)
            for a in obj.assets.values():
                a.href = a.get_absolute_href() + "?st=2024&sig=abc%3D"

    root = scene["root"]
    api = StacApi.from_catalog(pc_catalog, root=root) if mode == "api" else None
    with serve(root, api) as srv:
        url = srv.url + ("/pc/catalog.json" if mode == "static" else "/")
        src = StacSource(url, modifier=sign)
        gs = src.search(scene["grid"], YEAR)
        assert sorted(seen) == sorted(g.id for g in gs) and len(gs) == 8
        assert all(a.href.endswith("?st=2024&sig=abc%3D") for g in gs for a in g.assets.values())
        tiles = stac_run(src, scene, f"out_signed_{mode}")
        assert any("sig=abc" in p for _, p, _ in srv.requests)
    assert_same_tiles(tiles, scene["ref"])
    assert src.describe()["modifier"].endswith("sign")


# --- Earth Search conventions and the BOA offset -------------------------------------------------

def _es_flag(flag):
    return lambda d: {"earthsearch:boa_offset_applied": flag(d)}


POST = dt.date(2022, 1, 25)


@pytest.mark.parametrize("case, raw, props", [
    # Earth Search: offset removed on items of baseline >= 04.00 (flag true), false before
    ("es_removed", "es_raw", _es_flag(lambda d: d >= POST)),
    # flag false everywhere over values that still carry the offset: removed once (by baseline)
    ("es_false", "raw", _es_flag(lambda d: False)),
    # no flag at all
    ("es_absent", "raw", lambda d: {}),
    # neither flag nor baseline: the acquisition date decides
    ("es_bare", "raw", lambda d: {"s2:processing_baseline": None}),
])
def test_earth_search_offset_exactly_once(scene, case, raw, props):
    cat = build_catalog(scene, case, style="es", raw=raw, s2_props=props)
    with serve(scene["root"]) as srv:
        src = StacSource(f"{srv.url}/{case}/catalog.json")
        gs = [g for g in src.search(scene["grid"], YEAR) if g.sensor == "s2"]
        assert gs[0].id.endswith("_0_L2A") and cat.exists()
        assert gs[1].assets["B04"].href.endswith(f"/{raw}/s2/S2_T31UDS_"
                                                 f"{gs[1].date.isoformat()}_B04.tif")
        assert [g.boa_offset_applied for g in gs] == (
            [None, True, True, True] if case == "es_removed" else [None] * 4)
        tiles = stac_run(src, scene, f"out_{case}")
    assert_same_tiles(tiles, scene["ref"])
    check_sim_values(tiles, scene["sim"])


def test_offset_flag_is_obeyed(scene):
    """`earthsearch:boa_offset_applied: true` on values that do carry the offset keeps them:
    the flag, not the baseline, decides (the control that the mapping is not ignored)."""
    build_catalog(scene, "es_lying", style="es", raw="raw",
                  s2_props=_es_flag(lambda d: d >= POST))
    with serve(scene["root"]) as srv:
        tiles = stac_run(StacSource(f"{srv.url}/es_lying/catalog.json"), scene, "out_es_lying")
    sim = scene["sim"]
    for name, t in tiles.items():
        x0, y0, x1, y1 = map(int, name.split("_"))
        ref = scene["ref"][name]["bands"].astype(np.int32)
        got = t["bands"].astype(np.int32)
        assert np.array_equal(got[0], ref[0])  # 2022-01-20: no offset anywhere
        data = ref[1:, ..., :4] > 0
        assert np.array_equal(got[1:, ..., :4][data], ref[1:, ..., :4][data] + BOA_OFFSET)
        assert np.array_equal(ref[1:, ..., :4], sim["bands"][1:, y0:y1, x0:x1, :4])


# --- errors ----------------------------------------------------------------------------------

def test_missing_asset_names_item_and_band(scene):
    d = scene["sim"]["s2_dates"][2]
    build_catalog(scene, "no_b05", drop=("B05", d))
    a = scene["sim"]["asc_dates"][1]
    build_catalog(scene, "no_vh", drop=("vh", a))
    with serve(scene["root"]) as srv:
        ymd = d.strftime("%Y%m%d")
        with pytest.raises(PreprocessError, match=rf"S2B_MSIL2A_{ymd}\w+ \(sentinel-2-l2a, "
                                                  rf"{d.isoformat()}\): no asset for band B05"):
            plan(StacSource(f"{srv.url}/no_b05/catalog.json"), scene["grid"], YEAR)
        with pytest.raises(PreprocessError, match=rf"S1A_IW_GRDH_1SDV_{a.strftime('%Y%m%d')}"
                                                  rf"\w+ \(sentinel-1-rtc, {a.isoformat()}\): "
                                                  r"no asset for band VH"):
            StacSource(f"{srv.url}/no_vh/catalog.json").search(scene["grid"], YEAR)


@pytest.mark.parametrize("mode", ["static", "api"])
def test_unknown_collection_and_empty_year(scene, pc_catalog, mode):
    root = scene["root"]
    api = StacApi.from_catalog(pc_catalog, root=root) if mode == "api" else None
    with serve(root, api) as srv:
        url = srv.url + ("/pc/catalog.json" if mode == "static" else "/")
        with pytest.raises(PreprocessError, match=r"no collection 'sentinel-2-c1-l2a'; it has "
                                                  r"sentinel-1-rtc, sentinel-2-l2a"):
            StacSource(url, s2_collection="sentinel-2-c1-l2a").search(scene["grid"], YEAR)
        with pytest.raises(PreprocessError, match=r"no acquisitions in 2021 over .* in stac "
                                                  + url.replace(".", r"\.")):
            plan(StacSource(url), scene["grid"], 2021)
        # a region the scene does not touch
        far = TargetGrid.from_bbox(10.0, 45.0, 10.01, 45.01)
        assert StacSource(url).search(far, YEAR) == []
        # S1 only: the S2 collection skipped
        only = StacSource(url, s2_collection=None).search(scene["grid"], YEAR)
        assert {g.sensor for g in only} == {"s1"} and len(only) == 4


def test_unreachable_or_not_stac(scene, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/catalog.json"
    with pytest.raises(PreprocessError, match=rf"STAC {url}: cannot open it"):
        StacSource(url).search(scene["grid"], YEAR)
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    with serve(tmp_path) as srv:
        for path in ("/missing/catalog.json", "/notes.json"):
            with pytest.raises(PreprocessError, match=rf"STAC {srv.url}{path}: cannot open it"):
                StacSource(srv.url + path).search(scene["grid"], YEAR)
    with pytest.raises(PreprocessError, match="no collection given"):
        StacSource("x", s2_collection=None, s1_collection=None).search(scene["grid"], YEAR)


def test_describe():
    d = StacSource("https://example.test/api/stac/v1").describe()
    assert d == {"kind": "stac", "location": "https://example.test/api/stac/v1",
                 "s2_collection": "sentinel-2-l2a", "s1_collection": "sentinel-1-rtc",
                 "modifier": None}
