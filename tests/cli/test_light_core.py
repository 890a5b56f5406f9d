"""The light core: the store commands (download, sample, export, visualize, coverage, check,
and reading over HTTP) never import torch, dask or scikit-learn, and still work when those are
not installed, while the model commands then say which extra to install. Run in subprocesses,
so nothing this test process imported counts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tessera.store.synthetic import build_simulated_store

TILES = ["grid_5.95_45.05", "grid_6.05_45.05"]
HEAVY = ("torch", "dask", "sklearn")

SCRIPT = r"""
import importlib.abc, json, sys
BLOCK = sys.argv[2] == "block"
HEAVY = ("torch", "dask", "sklearn")

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

if BLOCK:
    sys.meta_path.insert(0, Blocker())

from pathlib import Path
from typer.testing import CliRunner
from tessera.cli import app
from tessera.store.server import serve_store

work = Path(sys.argv[1])
store = work / "store"
(work / "points.csv").write_text("lon,lat\n5.95,45.02\n6.01,45.07\n7.5,45.0\n")
runner = CliRunner()
results = {}

def run(key, *args):
    r = runner.invoke(app, [str(a) for a in args])
    results[key] = [r.exit_code, r.output[-2000:]]

bbox = "5.9,45.0,6.1,45.1"
with serve_store(store) as srv:
    run("download", "download", "--store", srv.url, "--bbox", bbox, "--year", 2022,
        "-o", work / "mirror", "--cache", work / "cache", "--no-progress")
run("download-tiff", "download", "--store", store, "--bbox", bbox, "--year", 2022, "-f", "tiff",
    "-o", work / "tiffs")
run("sample", "sample", work / "points.csv", "--store", store, "--year", 2022,
    "-o", work / "points.parquet")
run("export", "export", "--store", store, "--bbox", bbox, "--year", 2022,
    "-o", work / "region.tif")
run("export-zarr", "export", "--store", store, "--bbox", bbox, "--year", 2022,
    "-o", work / "region.zarr")
run("visualize", "visualize", "--store", store, "--bbox", bbox, "--year", 2022,
    "-o", work / "pca.png")
run("coverage", "coverage", "--store", store, "-o", work / "coverage.png")
run("check", "store", "check", work / "mirror", "--no-progress")
run("help", "--help")
if BLOCK:
    (work / "tile").mkdir(exist_ok=True)
    run("embed", "embed", work / "tile", "-o", work / "emb", "--no-progress")
    run("pretrain", "pretrain", "--shards", work, "-o", work / "run", "--steps", 1)
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
print(json.dumps({"results": results, "loaded": loaded}))
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("light")
    build_simulated_store(root / "store", TILES, years=(2022,), resolution=250.0)
    return root


def _run(work, mode):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(work), mode], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_store_commands_never_import_torch_dask_or_sklearn(work):
    got = _run(work, "plain")
    failed = {k: v for k, v in got["results"].items() if v[0] != 0}
    assert not failed, failed
    assert got["loaded"] == [], f"the store commands imported {got['loaded']}"


def test_without_the_extras_store_commands_work_and_model_commands_say_what_to_install(tmp_path):
    build_simulated_store(tmp_path / "store", TILES, years=(2022,), resolution=250.0)
    got = _run(tmp_path, "block")
    res = got["results"]
    embed, pretrain = res.pop("embed"), res.pop("pretrain")
    failed = {k: v for k, v in res.items() if v[0] != 0}
    assert not failed, failed
    assert embed[0] == 2 and "pip install 'tessera-eo[model]'" in " ".join(embed[1].split())
    assert pretrain[0] == 2 and "tessera-eo[train]" in pretrain[1]
    assert got["loaded"] == []
