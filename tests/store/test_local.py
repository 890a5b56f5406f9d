"""LocalStore writes: model provenance is recorded, and a write that would mix models within a
year is refused before any file is touched; clients refuse a year that mixes them anyway."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.errors import ClientError, StoreError
from tessera.store.client import Client
from tessera.store.local import LocalStore
from tessera.store.manifest import Manifest
from tessera.geo.grid import parse_tile_name
from tessera.store.synthetic import simulated_tile_arrays

TILES = ["grid_5.95_45.05", "grid_6.05_45.05"]


def _write(store, tile, model, dims=128, weights="sha256:aaa", year=2022):
    q, s, m, g = simulated_tile_arrays(parse_tile_name(tile), year, 250.0, 0)
    return store.write_tile(tile, year, q[..., :dims].copy(), s, m, version="test",
                            crs=g.crs, transform=g.transform, model=model, weights=weights)


def test_store_records_the_model_and_refuses_to_mix(tmp_path):
    store = LocalStore(tmp_path / "s")
    e = _write(store, TILES[0], "v2-small", dims=32)
    assert (e.model, e.dims, e.weights) == ("v2-small", 32, "sha256:aaa")
    before = {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    for model, dims, weights in (("tiny", 128, "sha256:aaa"), ("v2-small", 64, "sha256:aaa"),
                                 ("v2-small", 32, "sha256:bbb")):
        with pytest.raises(StoreError, match="one model per year"):
            _write(store, TILES[1], model, dims, weights)
    after = {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing half-written
    _write(store, TILES[1], "v2-small", dims=32)  # the same model is welcome
    _write(store, TILES[0], "tiny", year=2021)  # another year may hold another model
    assert len(store.manifest()) == 3
    client = Client(tmp_path / "s")
    assert client.model(2022).model == "v2-small" and client.model(2021).model == "tiny"


def test_client_refuses_a_year_that_mixes_models(tmp_path):
    store = LocalStore(tmp_path / "s")
    a = _write(store, TILES[0], "tiny")
    b = _write(LocalStore(tmp_path / "t"), TILES[1], "v1.1-mpc")
    # a manifest edited by hand (or concatenated from two machines) that mixes them
    (tmp_path / "s" / b.files["embeddings"].path).parent.mkdir(parents=True, exist_ok=True)
    for f in b.files.values():
        (tmp_path / "s" / f.path).write_bytes((tmp_path / "t" / f.path).read_bytes())
    Manifest(Manifest.from_entries([a, b]).table).write(store.manifest_path)
    client = Client(tmp_path / "s")
    with pytest.raises(ClientError, match="mixes embeddings of different models: tiny"):
        client.read_region((5.9, 45.0, 6.1, 45.1), 2022)
    with pytest.raises(ClientError, match="mixes"):
        client.sample_points((np.array([5.95]), np.array([45.05])), 2022)
