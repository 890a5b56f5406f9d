"""Outputs get ordinary permissions (what the umask allows), never the 0600 / 0700 of temporary
files: cached manifests, tile folders written by `simulate` and `preprocess`, shards, store
files and embeddings."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from fault_world import BBOX
from typer.testing import CliRunner

from tessera.cli import app


def _modes(root: Path) -> set[tuple[str, int]]:
    out = {("dir" if root.is_dir() else "file", stat.S_IMODE(root.stat().st_mode))}
    for p in root.rglob("*"):
        if p.name.startswith("."):
            continue
        out.add(("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)))
    return out


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_have_ordinary_permissions(world, tmp_path, umask_022):
    from tessera.store.http import HttpStore
    from tessera.store.server import serve_store

    run = CliRunner().invoke
    outs = {}
    assert run(app, ["simulate", str(tmp_path / "sim"), "--size", "16"]).exit_code == 0
    outs["simulate"] = tmp_path / "sim"
    res = run(app, ["preprocess", "--source", "files", "--s2",
                    str(world.raw / "s2" / "S2_{granule}_{date}_{band}.tif"), "--s1",
                    str(world.raw / "s1" / "S1_{orbit}_{date}_{band}.tif"), "--bbox",
                    world.raw_bbox, "--year", "2022", "-o", str(tmp_path / "pre"),
                    "--no-progress"])
    assert res.exit_code == 0, res.output
    outs["preprocess"] = tmp_path / "pre"
    res = run(app, ["shards", str(world.tile), "-o", str(tmp_path / "shards"), "--min-s2", "1",
                    "--min-s1", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    outs["shards"] = tmp_path / "shards"
    res = run(app, ["embed", str(world.tile), "-o", str(tmp_path / "emb"), "--geotiff",
                    "--no-progress"])
    assert res.exit_code == 0, res.output
    outs["embed"] = tmp_path / "emb"
    res = run(app, ["embed", str(world.grid_tile), "--store", str(tmp_path / "store"),
                    "--year", "2022", "--no-progress"])
    assert res.exit_code == 0, res.output
    outs["store"] = tmp_path / "store"
    with serve_store(world.store) as srv:
        HttpStore(srv.url, cache_dir=tmp_path / "cache").manifest()
    res = run(app, ["download", "--store", str(world.store), "--bbox", BBOX, "--year", "2022",
                    "-o", str(tmp_path / "mirror"), "--no-progress"])
    assert res.exit_code == 0, res.output
    outs["cache"], outs["mirror"] = tmp_path / "cache", tmp_path / "mirror"
    for name, root in outs.items():
        bad = {m for m in _modes(root) if m not in {("dir", 0o755), ("file", 0o644)}}
        assert not bad, f"{name}: {sorted((k, oct(v)) for k, v in bad)}"
