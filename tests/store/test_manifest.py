import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely

from tessera.geo.grid import tiles_in_bbox
from tessera.store.manifest import FileEntry, Manifest, ManifestError, TileEntry, hash_file


def entry(tile, year=2022, sha="a", created="2026-01-01T00:00:00+00:00"):
    t = tiles_in_bbox(*_bounds(tile))[0]
    files = {k: FileEntry(f"{year}/{tile}/{tile}{suf}", 10, sha * 64)
             for k, suf in (("embeddings", ".npy"), ("scales", "_scales.npy"),
                            ("mask", "_mask.tiff"))}
    return TileEntry(tile, t.lon, t.lat, year, "v", "EPSG:32631", (10, 0, 0, 0, -10, 0), 4, 5,
                     20, files, created)


def _bounds(tile):
    lon, lat = (float(v) for v in tile.split("_")[1:])
    return lon - 0.04, lat - 0.04, lon + 0.04, lat + 0.04


TILES = ["grid_0.05_45.05", "grid_0.15_45.05", "grid_179.95_-16.95", "grid_-179.95_-16.95"]


def test_round_trip_and_geoparquet_metadata(tmp_path):
    m = Manifest.from_entries([entry(t) for t in TILES] + [entry(TILES[0], 2021)])
    path = m.write(tmp_path / "manifest.parquet")
    back = Manifest.read(path)
    assert back.entries() == m.entries() and len(back) == 5 and back.years() == [2021, 2022]
    geo = json.loads(pq.read_schema(path).metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry"]["encoding"] == "WKB"
    assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    geoms = shapely.from_wkb(back.table.column("geometry").to_numpy(zero_copy_only=False))
    assert shapely.equals(geoms[0], shapely.box(0.0, 45.0, 0.1, 45.1))
    assert Manifest.read(path.read_bytes()).entries() == m.entries()  # as fetched over HTTP
    assert not list(tmp_path.glob(".*tmp"))


def test_queries_bbox_year_tiles_and_antimeridian():
    m = Manifest.from_entries([entry(t) for t in TILES] + [entry(TILES[0], 2021)])
    assert m.query(bbox=(0.0, 45.0, 0.1, 45.1)).tiles() == ["grid_0.05_45.05"]
    assert len(m.query(bbox=(0.1, 45.0, 0.2, 45.1))) == 1  # touching edges do not count
    assert len(m.query(bbox=(-1, 44, 1, 46))) == 3 and len(m.query(bbox=(-1, 44, 1, 46),
                                                                    year=2022)) == 2
    across = m.query(bbox=(179.9, -17.0, -179.9, -16.9))
    assert sorted(across.tiles()) == ["grid_-179.95_-16.95", "grid_179.95_-16.95"]
    assert m.query(tiles=["grid_0.15_45.05"], year=[2021, 2022]).tiles() == ["grid_0.15_45.05"]
    assert m.get("grid_0.15_45.05", 2021) is None
    with pytest.raises(ManifestError, match="year 2021 is not in the store .*2022"):
        m.entry("grid_0.15_45.05", 2021)
    with pytest.raises(ManifestError, match="not in the store for any year"):
        m.entry("grid_5.05_45.05", 2022)


def test_bbox_query_is_vectorised_on_many_rows():
    tiles = [t.name for t in tiles_in_bbox(0, 40, 10, 50)]  # 10 000 tiles
    m = Manifest.from_entries([entry(t) for t in tiles[:2000]])
    hit = m.query(bbox=(0.0, 49.8, 0.3, 50.0))
    assert sorted(hit.tiles()) == sorted(t for t in tiles[:2000] if t.endswith(("_49.85",
                                                                                  "_49.95"))
                                         and float(t.split("_")[1]) < 0.3)


def test_upsert_and_merge():
    a = Manifest.from_entries([entry(TILES[0]), entry(TILES[1])])
    b = Manifest.from_entries([entry(TILES[1], sha="b", created="2026-02-01T00:00:00+00:00"),
                               entry(TILES[2])])
    up = a.upsert(b)
    assert len(up) == 3 and up.entry(TILES[1], 2022).files["scales"].sha256 == "b" * 64
    with pytest.raises(ManifestError, match=f"{TILES[1]} 2022 differs"):
        a.merge(b)
    merged = a.merge(b, on_conflict="newer")
    assert len(merged) == 3 and merged.entry(TILES[1], 2022).files["mask"].sha256 == "b" * 64
    same = a.merge(Manifest.from_entries([entry(TILES[1])]))  # identical rows merge silently
    assert len(same) == 2
    with pytest.raises(ManifestError, match="more than once"):
        Manifest.from_entries([entry(TILES[0]), entry(TILES[0])])


def test_bad_manifest_files_are_named(tmp_path):
    with pytest.raises(ManifestError, match="no manifest there"):
        Manifest.read(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ManifestError, match="junk.parquet: not a readable Parquet"):
        Manifest.read(tmp_path / "junk.parquet")
    import pyarrow as pa
    pq.write_table(pa.table({"tile": ["x"]}), tmp_path / "other.parquet")
    with pytest.raises(ManifestError, match="missing columns"):
        Manifest.read(tmp_path / "other.parquet")


def test_hash_file_streams(tmp_path):
    import hashlib
    data = np.random.default_rng(0).bytes(3 * 1024 * 1024 + 17)
    (tmp_path / "f").write_bytes(data)
    assert hash_file(tmp_path / "f", chunk=65536) == (len(data), hashlib.sha256(data).hexdigest())


# --- model provenance: one model per year -------------------------------------------------------

import dataclasses  # noqa: E402

import pyarrow as pa  # noqa: E402


def test_model_columns_round_trip_and_format_1_manifests_read_as_unrecorded(tmp_path):
    e = dataclasses.replace(entry(TILES[0]), model="v1.1-mpc", dims=128, weights="sha256:abc")
    path = Manifest.from_entries([e]).write(tmp_path / "m.parquet")
    back = Manifest.read(path).entries()[0]
    assert (back.model, back.dims, back.weights) == ("v1.1-mpc", 128, "sha256:abc")
    old = pq.read_table(path).drop(["model", "dims", "weights"])  # a format 1 manifest
    pq.write_table(old, tmp_path / "old.parquet")
    legacy = Manifest.read(tmp_path / "old.parquet").entries()[0]
    assert (legacy.model, legacy.dims, legacy.weights) == ("", 128, "")
    assert "unrecorded" in legacy.describe_model()
    assert isinstance(Manifest(old).table.schema.field("dims").type, pa.DataType)


def test_a_year_holds_one_model():
    a = dataclasses.replace(entry(TILES[0]), model="tiny", weights="sha256:1")
    b = dataclasses.replace(entry(TILES[1]), model="v2-small", dims=32, weights="sha256:2")
    m = Manifest.from_entries([a])
    m.check_one_model(2022, adding=dataclasses.replace(a, tile=TILES[1]))  # same model: fine
    with pytest.raises(ManifestError, match=r"holds embeddings of tiny .*refusing to add "
                                            r"embeddings of v2-small \(32 dims"):
        m.check_one_model(2022, adding=b)
    # replacing the only tile of the year with another model is not mixing
    m.check_one_model(2022, adding=dataclasses.replace(b, tile=TILES[0]))
    mixed = Manifest.from_entries([a, b])  # e.g. two machines' manifests, concatenated
    with pytest.raises(ManifestError, match="mixes embeddings of different models"):
        mixed.check_one_model(2022)
    with pytest.raises(ManifestError, match="mixes"):
        Manifest.from_entries([a]).merge(Manifest.from_entries([b]))
    other_year = dataclasses.replace(b, year=2021)
    Manifest.from_entries([a, other_year]).check_one_model(2022)  # years are independent
