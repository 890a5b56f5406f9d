"""The manifest's `precision` column (issue 16): recorded per tile-year, read as "fp32" from
manifests written before it existed, and part of what one year must agree on, so a store never
mixes embeddings made at different precisions."""

from __future__ import annotations

import dataclasses

import pyarrow.parquet as pq
import pytest

from tessera.errors import StoreError
from tessera.geo.grid import parse_tile_name, tiles_in_bbox
from tessera.store.local import LocalStore
from tessera.store.manifest import FileEntry, Manifest, ManifestError, TileEntry
from tessera.store.synthetic import simulated_tile_arrays

TILES = ["grid_0.05_45.05", "grid_0.15_45.05"]


def entry(tile: str, precision: str = "fp32", year: int = 2022) -> TileEntry:
    lon, lat = (float(v) for v in tile.split("_")[1:])
    t = tiles_in_bbox(lon - 0.04, lat - 0.04, lon + 0.04, lat + 0.04)[0]
    files = {k: FileEntry(f"{year}/{tile}/{tile}{suf}", 10, "a" * 64)
             for k, suf in (("embeddings", ".npy"), ("scales", "_scales.npy"),
                            ("mask", "_mask.tiff"))}
    return TileEntry(tile, t.lon, t.lat, year, "v", "EPSG:32631", (10, 0, 0, 0, -10, 0), 4, 5,
                     20, files, "2026-01-01T00:00:00+00:00", model="tiny", weights="sha256:1",
                     precision=precision)


def test_precision_round_trips_and_older_manifests_read_as_fp32(tmp_path):
    path = Manifest.from_entries([entry(TILES[0], "int8-onnx")]).write(tmp_path / "m.parquet")
    back = Manifest.read(path).entries()[0]
    assert back.precision == "int8-onnx" and back.provenance == ("tiny", 128, "sha256:1",
                                                                 "int8-onnx")
    old = pq.read_table(path).drop(["precision"])  # a format 2 manifest
    pq.write_table(old, tmp_path / "old.parquet")
    legacy = Manifest.read(tmp_path / "old.parquet")
    assert legacy.entries()[0].precision == "fp32"
    # an old fp32 year accepts fp32 tiles and refuses others
    legacy.check_one_model(2022, adding=entry(TILES[1], "fp32"))
    with pytest.raises(ManifestError, match="precision fp32.*precision bf16"):
        legacy.check_one_model(2022, adding=entry(TILES[1], "bf16"))
    e = entry(TILES[0], "bf16")
    plain = TileEntry(**{f.name: getattr(e, f.name) for f in dataclasses.fields(TileEntry)
                         if f.name != "precision"})
    assert plain.precision == "fp32"  # the default, for code that does not say


def test_a_year_holds_one_precision():
    m = Manifest.from_entries([entry(TILES[0], "fp32")])
    with pytest.raises(ManifestError) as err:
        m.check_one_model(2022, adding=entry(TILES[1], "int8-torch"))
    message = str(err.value)
    assert "\n" not in message  # one line, naming both
    assert "precision fp32" in message and "precision int8-torch" in message
    assert "one model per year" in message
    m.check_one_model(2022, adding=entry(TILES[0], "bf16"))  # replacing the only tile is fine
    mixed = Manifest.from_entries([entry(TILES[0], "fp32"), entry(TILES[1], "bf16")])
    with pytest.raises(ManifestError, match="mixes embeddings of different models.*precision"):
        mixed.check_one_model(2022)
    Manifest.from_entries([entry(TILES[0], "fp32"),
                           dataclasses.replace(entry(TILES[1], "bf16"), year=2021)]
                          ).check_one_model(2022)  # years are independent


def test_local_store_refuses_to_mix_precisions(tmp_path):
    store = LocalStore(tmp_path / "s")

    def write(tile: str, precision: str) -> TileEntry:
        q, s, m, g = simulated_tile_arrays(parse_tile_name(tile), 2022, 250.0, 0)
        return store.write_tile(tile, 2022, q, s, m, version="test", crs=g.crs,
                                transform=g.transform, model="tiny", weights="sha256:1",
                                precision=precision)

    assert write("grid_5.95_45.05", "bf16").precision == "bf16"
    before = (tmp_path / "s" / "manifest.parquet").read_bytes()
    with pytest.raises(StoreError, match="precision bf16.*precision fp32"):
        write("grid_6.05_45.05", "fp32")
    assert (tmp_path / "s" / "manifest.parquet").read_bytes() == before
    write("grid_6.05_45.05", "bf16")
    assert {e.precision for e in store.manifest().entries()} == {"bf16"}
    # exports (GeoTIFF TESSERA_PRECISION, Zarr tessera:precision) carry it on
    from tessera.store.export import model_tags
    assert model_tags(store.manifest().entries())["precision"] == "bf16"
