"""Mirroring tile-years into a local store (the API behind `tessera download`), and `check`
telling a store's real problems from writers' temporaries."""

from __future__ import annotations

import pytest

from tessera.errors import InputError
from tessera.store.local import LocalStore
from tessera.store.mirror import mirror
from tessera.store.synthetic import build_simulated_store

TILES = ["grid_5.95_45.05", "grid_6.05_45.05", "grid_5.95_44.95"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return build_simulated_store(tmp_path_factory.mktemp("src"), TILES, years=(2022,),
                                 resolution=250.0)


class Bytes:
    def __init__(self):
        self.total, self.done = None, 0

    def task(self, description, total=None, unit=""):
        self.total, self.unit = total, unit
        outer = self

        class T:
            def advance(self, n=1, info=None):
                outer.done += n

            def update(self, **k):
                pass
        return T()


def test_mirror_is_a_verified_store_and_reports_bytes(source, tmp_path):
    entries = source.manifest().entries()
    bar = Bytes()
    done = mirror(source, entries, tmp_path / "m", jobs=2, progress=bar)
    assert sorted(e.tile for e in done) == sorted(TILES)
    m = LocalStore(tmp_path / "m")
    assert m.check().ok and m.manifest().entries() and bar.unit == "B"
    assert bar.done == bar.total == sum(e.nbytes for e in entries)
    for e in entries:
        assert m.manifest().entry(e.tile, 2022).files == e.files
    # a rerun keeps what is there (nothing fetched again) and lists the same tiles
    class NoFetch:
        def __getattr__(self, name):
            return getattr(source, name)

        def open_file(self, f, verify=False):
            raise AssertionError(f"{f.path} fetched again")
    assert len(mirror(NoFetch(), entries, tmp_path / "m", jobs=2)) == len(entries)
    with pytest.raises(InputError, match="jobs 0"):
        mirror(source, entries, tmp_path / "x", jobs=0)


def test_check_lists_temporaries_apart_from_problems(source, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(source.root, root)
    store = LocalStore(root)
    e = store.manifest().entries()[0]
    folder = root / e.files["embeddings"].path.rsplit("/", 1)[0]
    (folder / f".{e.tile}.npy.pid999999@somehost.ab12.tmp").write_bytes(b"half a file")
    rep = store.check()
    assert rep.ok and rep.temporary and not rep.unlisted  # a killed writer's leftover
    (folder / "stray.npy").write_bytes(b"x")
    rep = store.check()
    assert not rep.ok and rep.unlisted == [f"{folder.relative_to(root)}/stray.npy"]
