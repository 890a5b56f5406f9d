"""GeoTessera's Zarr store layout (tessera.store.gtzarr): written from a SIMULATED tessera store
and read back bit for bit; and against the REAL geotessera 0.11 in both directions (its
`GeoTesseraZarr` reads a store we wrote; a store written by its own `init_store` / `fill_store`
is read by our `ZarrStore`), via tests/geotessera_zarr_probe.py run with its own venv."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tessera.errors import ClientError, DependencyError, ExistsError, StoreError
from tessera.geo import parse_tile_name
from tessera.geo.crs import LONLAT, transformer
from tessera.store.client import Client
from tessera.store.gtzarr import ZarrStore, is_zarr_store, write_zarr_store

ROOT = Path(__file__).resolve().parents[2]
GT_VENV = ROOT / ".venv-geotessera" / "0.11.0"
PROBE = ROOT / "tests" / "geotessera_zarr_probe.py"

# zone 31: NW, SW; zone 32: NE (both years), SE (2022 only, with a no-data hole); zone 33 south
NW, SW, NE, SE, SOUTH = ("grid_5.95_45.05", "grid_5.95_44.95", "grid_6.05_45.05",
                         "grid_6.05_44.95", "grid_15.05_-44.95")
YEARS = [2021, 2022]
SHARD = 64
HOLE = (slice(20, 24), slice(10, 14))  # SE's pixels without data inside its cell


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The source store: 200 m SIMULATED tiles; SE written with the pipeline's mask (its cell)
    and a hole, so +inf inside a cell is exercised."""
    from tessera.store.synthetic import (SIMULATED_VERSION, build_simulated_store,
                                         simulated_tile_arrays)

    root = tmp_path_factory.mktemp("source")
    store = build_simulated_store(root, [NW, SW, NE, SOUTH], YEARS, resolution=200.0)
    q, s, _, g = simulated_tile_arrays(parse_tile_name(SE), 2022, 200.0)
    s[HOLE], q[HOLE] = np.nan, 0
    store.write_tile(SE, 2022, q, s, g.roi(), version=SIMULATED_VERSION, model="simulated",
                     weights="simulated", crs=g.crs, transform=g.transform)
    return store


@pytest.fixture(scope="module")
def client(source):
    return Client(source)


@pytest.fixture(scope="module")
def written(client, tmp_path_factory):
    return write_zarr_store(client, tmp_path_factory.mktemp("zarr") / "s.zarr", YEARS,
                            shard=SHARD)


def _hole(client: Client) -> tuple[float, float]:
    """(lon, lat) of a pixel in SE's hole."""
    e = client.manifest.entry(SE, 2022)
    x, y = e.affine * (HOLE[1].start + 1.5, HOLE[0].start + 1.5)
    lon, lat = transformer(e.crs, LONLAT).transform(x, y)
    return float(lon), float(lat)


def _points(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Random points over the four northern cells and the southern one, a band along the zone
    31/32 border (pixels there straddle it) and along the cells' shared latitude, a point in a
    zone without tiles and one not finite."""
    rng = np.random.default_rng(seed)
    lon = np.r_[rng.uniform(5.9, 6.1, n), rng.uniform(15.0, 15.1, n // 4),
                6.0 + rng.uniform(-0.004, 0.004, n // 2), rng.uniform(5.9, 6.1, n // 2),
                20.0, np.nan]
    lat = np.r_[rng.uniform(44.9, 45.1, n), rng.uniform(-45.0, -44.9, n // 4),
                rng.uniform(44.9, 45.1, n // 2), 45.0 + rng.uniform(-0.003, 0.003, n // 2),
                10.0, 45.0]
    return lon, lat


# --- the layout ----------------------------------------------------------------------------------

def test_layout_and_attributes(written):
    import zarr

    meta = json.loads((written / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["consolidated_metadata"]["kind"] == "inline"
    assert is_zarr_store(written) and not (written.parent / ".s.zarr.partial").exists()
    root = zarr.open_group(str(written), mode="r")
    a = root.attrs
    assert a["geoemb:dimensions"] == 128 and a["geoemb:model"] == "urn:tessera:model:simulated"
    assert a["geoemb:spatial_layout"] == "utm_zones" and a["geoemb:gsd"] == 200.0
    assert a["geoemb:quantization"]["scale"] == {"type": "array", "array_name": "scales",
                                                 "nodata": "+inf"}
    assert a["tessera:weights"] == "simulated" and a["tessera:complete"] is True
    assert "tessera:progress" not in a and a["tessera:years"] == YEARS
    assert sorted(root.group_keys()) == ["utm31", "utm32", "utm33"]
    for zone, tiles in (("utm31", {NW, SW}), ("utm32", {NE, SE}), ("utm33", {SOUTH})):
        g = root[zone]
        za = g.attrs
        assert za["proj:code"] == f"EPSG:326{zone[3:]}"  # the southern zone too
        assert set(za["tessera:tiles"]["2022"]) == tiles
        h, w = za["spatial:shape"]
        t = za["spatial:transform"]
        assert za["spatial:bbox"] == [t[2], t[5] + t[4] * h, t[2] + t[0] * w, t[5]]
        emb, sca = g["embeddings"], g["scales"]
        assert emb.shape == (2, 128, h, w) and emb.dtype == np.int8
        assert emb.chunks == (1, 128, 32, 32) and emb.shards == (1, 128, SHARD, SHARD)
        assert emb.metadata.dimension_names == ("time", "band", "y", "x")
        assert sca.shape == (2, h, w) and sca.dtype == np.float32 and sca.fill_value == np.inf
        assert sca.metadata.dimension_names == ("time", "y", "x")
        assert list(g["time"][:]) == YEARS and list(g["band"][:]) == list(range(128))
        np.testing.assert_array_equal(g["x"][:], t[2] + t[0] * (np.arange(w) + 0.5))
        np.testing.assert_array_equal(g["y"][:], t[5] + t[4] * (np.arange(h) + 0.5))
        s = sca[:]
        assert not np.isnan(s).any()  # a tessera store knows no water: no data is +inf
        assert np.isfinite(s).any() and np.isposinf(s).any()
    assert root["utm33"].attrs["spatial:transform"][5] < 0  # southern northings shifted


def test_points_equal_the_source_bit_for_bit(client, written):
    z = ZarrStore(written)
    assert z.years() == YEARS and z.zones == [31, 32, 33] and z.dims == 128
    lon, lat = _points()
    for year in YEARS:
        ours, status = z.sample_points((lon, lat), year)
        theirs, their_status = client.sample_points((lon, lat), year)
        np.testing.assert_array_equal(ours, theirs)  # NaN where both have no data
        assert list(status) == list(their_status)
        assert {"valid", "nodata", "outside"} <= set(status) and (status == "valid").sum() > 500
        vec, st = z.probe(lon[0], lat[0], year)
        np.testing.assert_array_equal(vec, ours[0])
        assert st == status[0]
    hole = _hole(client)
    assert z.probe(*hole, 2022)[1] == "nodata" and z.probe(*hole, 2021)[1] == "outside"


@pytest.mark.filterwarnings("ignore::tessera.store.results.MissingTilesWarning")  # SE in 2021
def test_regions_equal_the_source_bit_for_bit(client, written):
    z = ZarrStore(written)
    for bbox, crs in (((5.905, 44.91, 5.995, 45.09), "EPSG:32631"),
                      ((6.005, 44.93, 6.09, 45.07), "EPSG:32632"),
                      ((15.01, -44.99, 15.09, -44.91), "EPSG:32733")):
        for year in YEARS:
            r = z.read_region(bbox, year)
            assert r.crs.to_string() == f"EPSG:326{crs[-2:]}" and r.zone == int(crs[-2:])
            src = client.read_region(bbox, year, crs=crs, clip=False)
            f = src.transform.f - (10_000_000 if crs.startswith("EPSG:327") else 0)
            r0 = round((f - r.transform.f) / 200.0)
            c0 = round((r.transform.c - src.transform.c) / 200.0)
            assert r0 >= 0 and c0 >= 0 and r.transform.a == src.transform.a == 200.0
            h, w = r.scales.shape
            np.testing.assert_array_equal(r.embeddings, src.embeddings[r0:r0 + h, c0:c0 + w])
            assert (np.isfinite(r.scales) == src.valid[r0:r0 + h, c0:c0 + w]).all()
    with pytest.raises(StoreError, match="zone=") as exc:
        z.read_region((5.95, 45.0, 6.05, 45.1), 2022)  # zones 31 and 32
    assert "\n" not in str(exc.value)
    assert z.read_region((5.95, 45.0, 6.05, 45.1), 2022, zone=32).zone == 32


def test_water_from_a_geotessera_landmask(tmp_path):
    """Tiles in GeoTessera's layout carry its landmask: no data there is water (NaN)."""
    from geotessera_layouts import write_store

    src = write_store(tmp_path / "gts", "manifest", [NW, NE], [2024], resolution=500.0)
    c = Client(src)
    path = write_zarr_store(c, tmp_path / "w.zarr", 2024, shard=32)
    z = ZarrStore(path)
    lon, lat = _points(1, 200)
    ours, status = z.sample_points((lon, lat), 2024)
    theirs, _ = c.sample_points((lon, lat), 2024)
    np.testing.assert_array_equal(ours, theirs)
    assert "water" in set(status)  # the north edge's 'sea' strip, 0 in the landmask
    north = z.probe(5.95, 45.0995, 2024)
    assert north[1] == "water" and np.isnan(north[0]).all()


def test_point_reads_touch_only_their_chunks(written):
    from zarr.storage import LocalStore, WrapperStore

    class Counting(WrapperStore):  # type: ignore[type-arg]
        def __init__(self, store):  # type: ignore[no-untyped-def]
            super().__init__(store)
            self.got: list[tuple[str, int]] = []

        async def get(self, key, prototype, byte_range=None):  # type: ignore[no-untyped-def]
            buf = await self._store.get(key, prototype, byte_range)
            self.got.append((key, 0 if buf is None else len(buf)))
            return buf

    counting = Counting(LocalStore(str(written), read_only=True))
    z = ZarrStore(counting)
    z.years()
    counting.got.clear()
    _, status = z.sample_points((np.array([5.97]), np.array([45.03])), 2022)
    assert list(status) == ["valid"]
    read = [(k, n) for k, n in counting.got if "/c/" in k]
    assert {k.split("/")[1] for k, _ in read} == {"embeddings", "scales"}
    assert len({k for k, _ in read}) == 2  # one shard of each array
    emb_bytes = sum(n for k, n in read if "embeddings" in k)
    shard_file = written / next(k for k, _ in read if "embeddings" in k)
    assert emb_bytes <= 128 * 32 * 32 + 4096 < shard_file.stat().st_size  # one inner chunk


# --- errors ----------------------------------------------------------------------------------------

def test_bad_input_one_line_errors(client, written, tmp_path):
    import zarr

    errors = []
    with pytest.raises(StoreError, match="not a GeoTessera Zarr store") as exc:
        ZarrStore(tmp_path)
    errors.append(exc.value)
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3).attrs["x"] = 1
    assert not is_zarr_store(tmp_path / "plain.zarr") and not is_zarr_store(tmp_path)
    with pytest.raises(StoreError, match="not a GeoTessera store") as exc:
        ZarrStore(tmp_path / "plain.zarr")
    errors.append(exc.value)
    z = ZarrStore(written)
    with pytest.raises(StoreError, match=r"year 1999 .*\(it has 2021, 2022\)") as exc:
        z.sample_points([(5.97, 45.03)], 1999)
    errors.append(exc.value)
    with pytest.raises(StoreError, match="does not hold"):
        z.read_region((20.0, 10.0, 20.05, 10.05), 2022)
    with pytest.raises(ExistsError):
        write_zarr_store(client, written, YEARS)
    with pytest.raises(ClientError, match="multiple of 32"):
        write_zarr_store(client, tmp_path / "x.zarr", YEARS, shard=50)
    for e in errors:
        assert "\n" not in str(e) and (str(tmp_path) in str(e) or str(written) in str(e))


def test_one_model_per_store(tmp_path):
    from tessera.store.synthetic import build_simulated_store, simulated_tile_arrays

    store = build_simulated_store(tmp_path / "s", [NW], [2021])
    q, s, m, g = simulated_tile_arrays(parse_tile_name(NW), 2022, 200.0)
    store.write_tile(NW, 2022, q, s, m, version="v", model="other", weights="w", crs=g.crs,
                     transform=g.transform)
    with pytest.raises(ClientError, match="one Zarr store holds one model"):
        write_zarr_store(Client(store), tmp_path / "m.zarr", [2021, 2022])
    assert not (tmp_path / "m.zarr").exists()


def test_url_needs_fsspec_http():
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        with pytest.raises(DependencyError, match="local Zarr stores only"):
            ZarrStore("https://example.invalid/store.zarr")
    else:
        pytest.skip("aiohttp is installed: zarr could read a URL")


# --- against the real geotessera 0.11 ------------------------------------------------------------

def _run_probe(spec: dict, tmp_path: Path) -> tuple[dict, dict]:  # type: ignore[type-arg]
    py = GT_VENV / "bin" / "python"
    if not (GT_VENV / ".installed").exists() or not py.exists():
        pytest.skip(f"geotessera 0.11.0 is not installed in {GT_VENV} (run "
                    "scripts/install_geotessera.sh; it needs a Python 3.12)")
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    res = subprocess.run([str(py), str(PROBE), str(spec_path)], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen["version"] == "0.11.0" and seen["network"] == []
    with np.load(spec["out"]) as f:
        arrays = {k: f[k] for k in f.files}
    return seen, arrays


def test_geotessera_reads_our_store(client, written, tmp_path):
    # cell interiors (a tile's own pixels), the hole in SE, SE in 2021 (no tile: we say
    # "outside" as the store lists its tiles, geotessera "nodata"), a zone the store lacks
    points = [(5.93, 45.02), (5.97, 45.08), (5.96, 44.94), (6.03, 45.07), (6.07, 45.03),
              (6.04, 44.96), (15.03, -44.97), (15.07, -44.92)]
    points += [_hole(client), (20.0, 10.0)]
    bboxes = [[5.91, 44.96, 5.99, 45.06], [6.01, 44.92, 6.08, 45.04], [15.02, -44.98, 15.08, -44.92]]
    seen, gt = _run_probe({"mode": "read", "store": str(written), "out": str(tmp_path / "gt.npz"),
                           "years": YEARS, "points": points, "bboxes": bboxes}, tmp_path)
    z = ZarrStore(written)
    assert seen["years"] == z.years() and seen["model"] == z.model and seen["n_bands"] == 128
    pts = np.array(points)
    for year in YEARS:
        ours, status = z.sample_points((pts[:, 0], pts[:, 1]), year)
        np.testing.assert_array_equal(ours, gt[f"samples_{year}"])
        expect = list(status)
        if year == 2021:  # no SE tile that year
            assert expect[5] == expect[8] == "outside"
            expect[5] = expect[8] = "nodata"
        assert seen["status"][str(year)] == expect
        for i, bbox in enumerate(bboxes):
            r = z.read_region(bbox, year)
            np.testing.assert_array_equal(r.embeddings, gt[f"region_{year}_{i}"])
            got = seen["regions"][f"{year}_{i}"]
            assert got["crs"] == r.crs.to_string()
            np.testing.assert_allclose(got["transform"], list(r.transform)[:6])
    assert seen["status"]["2022"][8] == "nodata"


def test_we_read_a_store_geotessera_wrote(tmp_path):
    """Two 10 m tiles (geotessera's writer needs their real shape): zone 31 north (2023 and
    2024) and zone 32 south (2024 only), 256 px shards."""
    years = [2023, 2024]
    points = [(3.03, 79.93), (3.07, 79.91), (3.062, 79.97),  # valid
              (3.05, 79.995), (9.05, -79.801),                # the landmask's water strip
              (3.115, 79.95),                                 # grid beyond the tile: +inf
              (9.04, -79.83), (9.06, -79.87),                 # valid in 2024, +inf in 2023
              (15.05, 50.0), (3.5, 79.95)]                    # no zone 33; beyond zone 31
    bboxes = [[3.02, 79.92, 3.04, 79.93], [9.03, -79.88, 9.05, -79.87]]
    store = tmp_path / "gt.zarr"
    seen, gt = _run_probe({"mode": "build", "store": str(store), "out": str(tmp_path / "gt.npz"),
                           "work": str(tmp_path), "shard": 256, "years": years,
                           "tiles": [[3.05, 79.95, years], [9.05, -79.85, [2024]]],
                           "points": points, "bboxes": bboxes}, tmp_path)
    assert is_zarr_store(store)
    z = ZarrStore(store)
    assert z.years() == seen["years"] == years and z.zones == [31, 32]
    assert z.model == "https://geotessera.org/model/1.0"
    pts = np.array(points)
    for year in years:
        ours, status = z.sample_points((pts[:, 0], pts[:, 1]), year)
        np.testing.assert_array_equal(ours, gt[f"samples_{year}"])
        assert list(status) == seen["status"][str(year)]
        for i, bbox in enumerate(bboxes):
            r = z.read_region(bbox, year)
            np.testing.assert_array_equal(r.embeddings, gt[f"region_{year}_{i}"])
            got = seen["regions"][f"{year}_{i}"]
            assert got["crs"] == r.crs.to_string()
            np.testing.assert_allclose(got["transform"], list(r.transform)[:6])
    assert seen["status"]["2024"][:8] == ["valid"] * 3 + ["water"] * 2 + ["nodata"] + ["valid"] * 2
    assert seen["status"]["2023"][6:] == ["nodata", "nodata", "outside", "outside"]
    # and the values are the source tiles' q * s, placed as geotessera documents it: the tile's
    # pixel (r, c) at zone pixel (r + floor((y0 - tile y0) / 10), c + floor((tile x0 - x0) / 10))
    ours, status = z.sample_points((pts[:, 0], pts[:, 1]), 2024)
    for k in np.nonzero(status == "valid")[0]:
        zone = 31 if pts[k, 0] < 6 else 32
        tile = seen["tiles"][0 if zone == 31 else 1]
        zn = z.zone(zone)
        assert zn is not None
        x, y = transformer(LONLAT, f"EPSG:{zn.epsg}").transform(pts[k, 0], pts[k, 1])
        col, row = (int(v) for v in np.floor(~zn.transform * (x, y)))
        t = tile["transform"]
        ty = t[5] - (10_000_000 if tile["epsg"] > 32700 else 0)
        r0 = int(np.floor((zn.transform.f - ty) / 10))
        c0 = int(np.floor((t[2] - zn.transform.c) / 10))
        folder = Path(seen["source"]) / "2024" / tile["name"]
        q = np.load(folder / f"{tile['name']}.npy", mmap_mode="r")
        s = np.load(folder / f"{tile['name']}_scales.npy", mmap_mode="r")
        np.testing.assert_array_equal(ours[k], q[row - r0, col - c0].astype(np.float32)
                                      * s[row - r0, col - c0])
