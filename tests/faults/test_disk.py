"""A full and a read-only output location (a small tmpfs, when this machine lets the tests mount
one; skipped with the reason otherwise): every writing command ends with exit 2 and one line
naming the file and the cause, and leaves nothing in the location."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_world import BBOX, World, snapshot
from typer.testing import CliRunner

from tessera.cli import app


def _umount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)  # busy: detach


def _mount(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(proc.stderr or proc.stdout).strip()}); "
                    "the full / read-only disk cases need one")


@pytest.fixture
def full(tmp_path) -> Iterator[Path]:
    where = tmp_path / "full"
    _mount(where, "size=256k")
    with open(where / "filler", "wb", buffering=0) as f:  # fill it: no block is left free
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    try:
        yield where
    finally:
        _umount(where)


@pytest.fixture
def readonly(tmp_path) -> Iterator[Path]:
    where = tmp_path / "ro"
    _mount(where, "size=1m")
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
    try:
        yield where
    finally:
        _umount(where)


def _commands(world: World, where: Path) -> dict[str, list]:
    store = world.store
    return {
        "export-tif": ["export", "--store", store, "--bbox", BBOX, "--year", 2022,
                       "-o", where / "r.tif"],
        "export-int8": ["export", "--store", store, "--bbox", BBOX, "--year", 2022,
                        "--dtype", "int8", "-o", where / "r8.tif"],
        "export-zarr": ["export", "--store", store, "--bbox", BBOX, "--year", 2022,
                        "-o", where / "r.zarr"],
        "download": ["download", "--store", store, "--bbox", BBOX, "--year", 2022,
                     "-o", where / "mirror", "--no-progress"],
        "sample": ["sample", world.points, "--store", store, "--year", 2022,
                   "-o", where / "p.parquet"],
        "embed": ["embed", world.tile, "-o", where / "emb", "--geotiff", "--no-progress"],
        "simulate": ["simulate", where / "sim", "--size", 32],
        "visualize": ["visualize", "--store", store, "--bbox", BBOX, "--year", 2022,
                      "-o", where / "v.png", "--no-progress"],
    }


NAMES = ["export-tif", "export-int8", "export-zarr", "download", "sample", "embed", "simulate",
         "visualize"]


def _check(res, where: Path, before: dict[str, int], cause: str, keeps: str = "") -> None:
    err = " ".join(res.stderr.split())
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert str(where) in err and cause in err.lower(), err
    after = {k: v for k, v in snapshot(where).items() if not (keeps and k.startswith(keeps))}
    assert after == before, "something was left in the location"


@pytest.mark.parametrize("name", NAMES)
def test_full_disk(world, full, name):
    before = snapshot(full)
    res = CliRunner().invoke(app, [str(a) for a in _commands(world, full)[name]],
                             env={"COLUMNS": "400"})
    # a Zarr export keeps its completed part (hidden) for a rerun to continue
    _check(res, full, before, "no space", keeps=".r.zarr.partial" if name == "export-zarr" else "")


@pytest.mark.parametrize("name", NAMES)
def test_read_only_location(world, readonly, name):
    before = snapshot(readonly)
    res = CliRunner().invoke(app, [str(a) for a in _commands(world, readonly)[name]],
                             env={"COLUMNS": "400"})
    _check(res, readonly, before, "read-only")
