"""`tessera run` and `tessera plan` from the command line (the in-process path; the cluster path
is tests/pipeline/test_run.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tessera.cli import app
from tessera.geo import tiles_in_bbox

pytest.importorskip("torch")
runner = CliRunner()
BBOX = "3.01,50.01,3.19,50.09"  # two grid tiles of UTM zone 31


@pytest.fixture(scope="module")
def acquisitions(tmp_path_factory):
    from tessera.preprocess.synthetic import write_noise_region

    root = tmp_path_factory.mktemp("acq")
    return root, write_noise_region(root, tiles_in_bbox(3.01, 50.01, 3.19, 50.09), 250.0,
                                    n_s2=6, n_s1=6)


def _args(info, store, *extra):
    return ["run", "--source", "files", "--s2", info["s2"], "--s1", info["s1"], "--year", "2022",
            "--store", str(store), "--resolution", "250", "--patch-size", "64", "--workers", "0",
            "--no-progress", *extra]


def test_run_makes_the_store_then_resumes(acquisitions, tmp_path):
    _, info = acquisitions
    store = tmp_path / "store"
    dry = runner.invoke(app, _args(info, store, "--bbox", BBOX, "--dry-run"))
    assert dry.exit_code == 0, dry.output
    assert "2 to make" in dry.output and not store.exists()
    res = runner.invoke(app, _args(info, store, "--bbox", BBOX))
    assert res.exit_code == 0, res.output
    assert "2 tile(s) made" in res.output and "0 failed" in res.output
    assert sorted(p.name for p in (store / "2022").iterdir()) == ["grid_3.05_50.05",
                                                                   "grid_3.15_50.05"]
    again = runner.invoke(app, _args(info, store, "--bbox", BBOX))
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_run_exits_nonzero_naming_the_failed_tile(acquisitions, tmp_path, monkeypatch):
    """One tile's preprocessing fails (as a disk or network error would): the other tile is
    made, the failed one is named, and the exit status is 1."""
    import tessera.pipeline.run as run_module

    _, info = acquisitions
    real = run_module.preprocess_tile

    def flaky(job, config):
        if job.tile == "grid_3.15_50.05":
            raise OSError("read error on the granule")
        return real(job, config)

    monkeypatch.setattr(run_module, "preprocess_tile", flaky)
    res = runner.invoke(app, _args(info, tmp_path / "store", "--bbox", BBOX, "--retries", "1"))
    assert res.exit_code == 1, res.output
    assert "1 tile(s) made" in res.output
    assert "FAILED   grid_3.15_50.05: OSError: read error on the granule" in res.output


def test_run_refuses_bad_region_and_source(acquisitions, tmp_path):
    _, info = acquisitions
    res = runner.invoke(app, _args(info, tmp_path / "s"))
    assert res.exit_code != 0 and "--bbox" in res.output
    res = runner.invoke(app, ["run", "--source", "stac", "--year", "2022", "--store",
                              str(tmp_path / "s"), "--bbox", BBOX])
    assert res.exit_code != 0 and "--stac-url" in res.output


def test_plan_prints_sizes_and_measured_times():
    res = runner.invoke(app, ["plan", "--year", "2022", "--tile", "grid_3.05_50.05",
                              "--calibration-px", "300", "--cluster-workers", "4", "--cores", "8",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "1 grid tiles" in res.output and "pixels" in res.output
    assert "on this machine" in res.output and "4 worker(s) x 8 cores" in res.output
    res = runner.invoke(app, ["plan", "--year", "2022", "--tile", "grid_3.05_50.05", "--gpus",
                              "2", "--calibration-px", "300", "--no-progress"])
    assert res.exit_code != 0 and "--gpu-pixels-per-s" in res.output


def test_run_records_the_precision_and_keeps_one_per_year(acquisitions, tmp_path):
    from tessera.store.local import LocalStore

    _, info = acquisitions
    store = tmp_path / "store"
    res = runner.invoke(app, _args(info, store, "--tile", "grid_3.05_50.05", "--precision",
                                   "bf16"))
    assert res.exit_code == 0, res.output
    entry, = LocalStore(store).manifest().query(year=2022).entries()
    assert entry.precision == "bf16"
    res = runner.invoke(app, _args(info, store, "--tile", "grid_3.15_50.05"))  # fp32
    assert res.exit_code != 0 and "precision" in res.output and "bf16" in res.output
    res = runner.invoke(app, _args(info, store, "--tile", "grid_3.15_50.05", "--precision",
                                   "fp16"))
    assert res.exit_code != 0 and "--precision fp16" in res.output
