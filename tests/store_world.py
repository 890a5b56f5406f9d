"""The SIMULATED store the store-client tests share: random embeddings on real grid tiles at
200 m, with tiles on both sides of the UTM zone 31/32 border at 6 degrees E, and helpers.
The fixtures built from it are in tests/store/conftest.py."""

from __future__ import annotations

import collections

import numpy as np

NW, NE, SW, SE = "grid_5.95_45.05", "grid_6.05_45.05", "grid_5.95_44.95", "grid_6.05_44.95"
TILES = [NW, NE, SW, SE]
BBOX = (5.9, 44.9, 6.1, 45.1)
YEAR = 2022


def build_store(tmp_path_factory):
    from tessera.store.local import LocalStore
    from tessera.store.synthetic import build_simulated_store

    root = tmp_path_factory.mktemp("store")
    build_simulated_store(root, TILES, [YEAR], resolution=200.0)
    build_simulated_store(root, [NW], [2021], resolution=200.0)  # one tile of another year
    return LocalStore(root)


def xy(t, x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def stored(store, tile, year=YEAR):
    e = store.manifest().entry(tile, year)
    return np.load(store.path(e.files["embeddings"])), np.load(store.path(e.files["scales"])), e


class CountingStore:
    """A store wrapper counting every file open."""

    def __init__(self, inner):
        self.inner = inner
        self.opens = collections.Counter()

    def manifest(self):
        return self.inner.manifest()

    def open_file(self, f, verify=False):
        self.opens[f.path] += 1
        return self.inner.open_file(f)

    def is_local(self, f):
        return self.inner.is_local(f)

    def describe(self):
        return f"counting {self.inner.describe()}"
