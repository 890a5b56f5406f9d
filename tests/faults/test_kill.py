"""kill -9 at several points of `embed`, `embed --store`, `download --jobs`, `preprocess` and
`pretrain`: nothing under a final name is half-written, and running the same command again
cleans up what the killed run left (its temporaries) and gives byte-identical outputs.

Each command runs once uninterrupted (the reference), then is killed at 30 % and 65 % of the
reference's wall time and rerun (pretrain reruns with --resume when a checkpoint exists)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tessera.atomic import is_temporary

POINTS = (0.30, 0.65)


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "tessera.cli", *map(str, args)]


def run(args: list[str], timeout: float = 300) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return time.perf_counter() - t0


def killed(args: list[str], after: float) -> int:
    """Start `args`, SIGKILL it `after` seconds later (if still running); its exit code."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(after)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(30)


def temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if is_temporary(p.name)
                  or p.name.endswith(".part"))


def content(root: Path) -> dict[str, bytes]:
    """What a command produced, by relative path: array bytes of .npy files, table rows of
    Parquet files (without creation times), raw bytes of the rest (metadata with times and the
    run logs excluded)."""
    import pyarrow.parquet as pq

    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if not p.is_file() or is_temporary(p.name) or p.name.startswith("."):
            continue
        if p.suffix == ".npy":
            out[rel] = np.load(p).tobytes()
        elif p.suffix == ".parquet":
            t = pq.read_table(p)
            cols = [c for c in t.column_names if c != "created"]
            rows = sorted(map(repr, zip(*[t.column(c).to_pylist() for c in cols])))
            out[rel] = repr(rows).encode()
        elif p.suffix == ".safetensors":  # the weights (the header names the run's folder)
            from safetensors.numpy import load_file
            w = load_file(p)
            out[rel] = b"".join(k.encode() + w[k].tobytes() for k in sorted(w))
        elif p.suffix in (".json", ".csv", ".pt") or "tensorboard" in rel or "events." in p.name:
            continue  # timestamps, timings, pickled optimiser state
        else:
            out[rel] = p.read_bytes()
    return out


@dataclasses.dataclass
class Job:
    name: str
    args: Callable[[Path], list[str]]       # the command, writing under the given folder
    output: str                             # what it produces, relative to that folder
    resume: list[str] = dataclasses.field(default_factory=list)  # extra args of a rerun


def _jobs(world) -> list[Job]:
    bbox = world.raw_bbox
    return [
        Job("embed", lambda d: cli("embed", world.tile, "-o", d / "out", "--no-progress",
                                   "--geotiff", "--batch-size", "16"), "out"),
        Job("embed-store", lambda d: cli("embed", world.grid_tile, "--store", d / "store",
                                         "--year", 2022, "--no-progress"), "store"),
        Job("preprocess", lambda d: cli(
            "preprocess", "--source", "files",
            "--s2", world.raw / "s2" / "S2_{granule}_{date}_{band}.tif",
            "--s1", world.raw / "s1" / "S1_{orbit}_{date}_{band}.tif", "--bbox", bbox,
            "--year", 2022, "--patch-size", 12, "--workers", 1, "-o", d / "tiles",
            "--no-progress"), "tiles"),
        Job("pretrain", lambda d: cli(
            "pretrain", "--shards", world.shards, "-o", d / "run", "--steps", 8,
            "--batch-size", 16, "--checkpoint-every", 2, "--qat-start", 4, "--no-progress"),
            "run", resume=["--resume"]),
    ]


@pytest.fixture(scope="module")
def jobs(world):
    return {j.name: j for j in _jobs(world)}


@pytest.mark.parametrize("name", ["embed", "embed-store", "preprocess", "pretrain"])
def test_killed_then_rerun_is_clean_and_identical(jobs, name, tmp_path):
    job = jobs[name]
    ref_dir = tmp_path / "ref"
    seconds = run(job.args(ref_dir))
    reference = content(ref_dir / job.output)
    assert reference, "the reference run produced nothing"
    for k, point in enumerate(POINTS):
        d = tmp_path / f"k{k}"
        killed(job.args(d), point * seconds)
        out = d / job.output
        if out.exists():  # what is there under final names is complete
            _complete(out)
        args = job.args(d)
        if job.resume and (out / "checkpoint.pt").exists():
            args += job.resume
        run(args)
        assert temporaries(d) == [], f"{name}: the rerun left temporaries"
        assert content(out) == reference, f"{name}: killed at {point:.0%}, the rerun differs"


def _complete(out: Path) -> None:
    """Every final .npy file is whole (its header's data is all there)."""
    from tessera.dpixel import npy_header

    for p in out.rglob("*.npy"):
        if not is_temporary(p.name) and not any(is_temporary(q.name) for q in p.parents):
            npy_header(p)


def test_killed_parallel_download_then_rerun(world, tmp_path):
    """A mirror over HTTP with 4 tiles at once, from a slow server, killed mid-file: the rerun
    resumes, leaves no `.part` or temporary, and the mirror equals the store."""
    import threading

    from tessera.store.server import StoreRequestHandler, serve_store
    from tessera.store.synthetic import build_simulated_store

    root = tmp_path / "store"
    tiles = ["grid_5.95_45.05", "grid_6.05_45.05", "grid_5.95_44.95", "grid_6.05_44.95"]
    build_simulated_store(root, tiles, years=(2022,), resolution=60.0)

    class Slow(StoreRequestHandler):
        def send_body(self, f, start, length):  # 64 KB every 10 ms: about 6 MB/s
            f.seek(start)
            while length > 0:
                block = f.read(min(1 << 16, length))
                if not block:
                    return
                self.wfile.write(block)
                length -= len(block)
                time.sleep(0.01)

    with serve_store(root, handler=Slow) as srv:
        def args(d: Path) -> list[str]:
            return cli("download", "--store", srv.url, "--bbox", "5.9,44.9,6.1,45.1", "--year",
                       2022, "-o", d / "mirror", "--cache", d / "cache", "--jobs", 4,
                       "--no-progress")
        seconds = run(args(tmp_path / "ref"))
        reference = content(tmp_path / "ref" / "mirror")
        for k, point in enumerate(POINTS):
            d = tmp_path / f"k{k}"
            killed(args(d), point * seconds)
            run(args(d))
            assert temporaries(d / "mirror") == []
            assert content(d / "mirror") == reference
        assert threading.active_count() >= 1
