"""Fixtures of the store-client tests (the store itself is described in tests/store_world.py)."""

from __future__ import annotations

import pytest
from store_world import build_store

import tessera.store.export
import tessera.store.mosaic
from tessera.store.client import Client


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory)


@pytest.fixture(scope="module")
def client(store):
    return Client(store)


@pytest.fixture
def small_windows(monkeypatch):
    """Several windows per region, so window-by-window code paths and seams are exercised."""
    monkeypatch.setattr(tessera.store.mosaic, "WINDOW", 32)
    monkeypatch.setattr(tessera.store.export, "TIFF_BLOCK", 32)
