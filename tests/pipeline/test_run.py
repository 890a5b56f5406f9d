"""`tessera run`: region -> store as tile tasks, resumable, on a real dask.distributed
LocalCluster that loses a worker mid-run, byte-identical to the in-process run."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from tessera.geo import parse_tile_name, tiles_in_bbox
from tessera.pipeline.run import (ModelChoice, RunConfig, local_cluster, plan_run,
                                  run_distributed, run_serial)
from tessera.store.local import LocalStore

pytest.importorskip("distributed")
pytest.importorskip("torch")

RES = 250.0  # metres: a grid tile is ~30 x 45 px, so a tile's tasks take about a second
# four tiles of UTM zone 31, and one across the zone line (32) for the failing-zone test
TILES = tiles_in_bbox(3.01, 50.01, 3.39, 50.09)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from tessera.preprocess.sources.files import FilesSource
    from tessera.preprocess.synthetic import write_noise_region

    root = tmp_path_factory.mktemp("acquisitions")
    info = write_noise_region(root, TILES + [parse_tile_name("grid_6.05_50.05")], RES,
                              n_s2=6, n_s1=6)
    return FilesSource(s2=info["s2"], s1=info["s1"])


@pytest.fixture(scope="module")
def meta():
    from tessera.infer import resolve_model
    return resolve_model(None)[1]


def _cfg(store: Path, **kw) -> RunConfig:
    return RunConfig(str(store), 2022, ModelChoice(), RES, 64, retries=1, **kw)


def _tile_files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("grid_*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def serial_store(source, meta, tmp_path_factory):
    store = tmp_path_factory.mktemp("serial") / "store"
    report = run_serial(plan_run(source, TILES, _cfg(store), meta))
    assert report.ok and len(report.done) == len(TILES)
    return store


def test_serial_run_writes_every_tile_once_and_resumes(serial_store, source, meta):
    entries = list(LocalStore(serial_store).manifest().query(year=2022).entries())
    assert sorted(e.tile for e in entries) == sorted(t.name for t in TILES)
    assert all(e.model == "tiny" and e.valid_pixels > 0 for e in entries)
    for e in entries:  # the embeddings are real: finite scales, non-constant codes
        q = np.load(serial_store / "2022" / e.tile / f"{e.tile}.npy")
        assert q.shape[-1] == 128 and q.std() > 1
    assert not any((serial_store / ".scratch").rglob("*.npy"))  # scratch dropped per tile
    again = plan_run(source, TILES, _cfg(serial_store), meta)  # a rerun: nothing left to do
    assert again.jobs == [] and sorted(again.done) == sorted(t.name for t in TILES)


def test_a_failing_tile_is_reported_and_the_others_are_made(source, meta, tmp_path):
    """Zone 32's files are corrupted after planning: its tile fails after its retries, zone
    31's tile is made, and the report says which failed and why."""
    import shutil

    from tessera.preprocess.sources.files import FilesSource

    root = tmp_path / "acq"
    shutil.copytree(Path(source.s2.split("{zone}")[0]), root)
    copy = FilesSource(s2=str(root / "{zone}" / "s2" / "S2_{granule}_{date}_{band}.tif"),
                       s1=str(root / "{granule}" / "s1" / "S1_{orbit}_{date}_{band}.tif"))
    tiles = [TILES[0], parse_tile_name("grid_6.05_50.05")]
    plan = plan_run(copy, tiles, _cfg(tmp_path / "store"), meta)
    assert [j.tile for j in plan.jobs] == [t.name for t in tiles]
    for f in (root / "utm32632").rglob("*.tif"):
        f.write_bytes(b"not a tiff")
    seen = []
    report = run_serial(plan, on_tile=lambda t, status, info: seen.append((t, status)))
    assert [d["tile"] for d in report.done] == [TILES[0].name]
    assert list(report.failed) == ["grid_6.05_50.05"] and not report.ok
    assert seen == [(TILES[0].name, "done"), ("grid_6.05_50.05", "failed")]
    assert "FAILED   grid_6.05_50.05" in "\n".join(report.summary())


def test_cluster_survives_a_killed_worker_and_matches_the_serial_run(serial_store, source,
                                                                      meta, tmp_path):
    """A real LocalCluster of 2 worker processes on loopback; once the first tile is done, the
    worker still busy is killed (SIGKILL). The run completes, every tile is in the manifest
    exactly once, and every tile file is byte-identical to the in-process run's."""
    from distributed import Client

    store = tmp_path / "store"
    plan = plan_run(source, TILES, _cfg(store), meta)
    killed: list[int] = []
    lock = threading.Lock()

    def on_tile(tile, status, info):
        with lock:
            if killed:
                return
            busy = [w for w, keys in client.processing().items() if keys]
            if not busy:
                return
            pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with local_cluster(2, 1, memory_limit="2GB") as cluster, Client(cluster) as client:
        report = run_distributed(plan, client, on_tile=on_tile)
    assert killed, "no worker was busy after the first tile: the kill did not happen"
    assert report.ok, report.failed
    assert sorted(d["tile"] for d in report.done) == sorted(t.name for t in TILES)
    rows = [e.tile for e in LocalStore(store).manifest().query(year=2022).entries()]
    assert sorted(rows) == sorted(t.name for t in TILES)  # each exactly once
    mine, ref = _tile_files(store), _tile_files(serial_store)
    assert mine.keys() == ref.keys()
    for name in ref:
        assert mine[name] == ref[name], name


def test_a_store_holding_another_model_is_refused_before_any_work(serial_store, source,
                                                                  tmp_path):
    from tessera.errors import StoreError
    from tessera.infer import resolve_model

    other = resolve_model(None, model="v1", seed=1)[1]  # a random-init v1: another model
    with pytest.raises(StoreError, match="one model per year"):
        plan_run(source, TILES, _cfg(serial_store), other)


def test_a_tile_larger_than_any_worker_is_refused_up_front(source, meta, tmp_path):
    from tessera.errors import InputError
    from tessera.pipeline.run import check_memory

    plan = plan_run(source, TILES[:1], _cfg(tmp_path / "s"), meta)
    check_memory(plan.jobs, None)  # workers without a MEMORY resource: nothing to check
    check_memory(plan.jobs, 2**40)
    with pytest.raises(InputError, match=f"tile {TILES[0].name} needs about .* MEMORY="):
        check_memory(plan.jobs, 2**20)
