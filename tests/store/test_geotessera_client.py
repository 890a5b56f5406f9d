"""Against the REAL geotessera clients (0.7.5 under Python 3.11, 0.11.0 under 3.12; installed by
scripts/install_geotessera.sh into .venv-geotessera/): on a store in each one's layout, written
by tests/geotessera_layouts.py, geotessera and tessera's client return identical values."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from geotessera_layouts import geotessera_python, write_store

from tessera.store.client import Client

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "geotessera_probe.py"
#: geotessera version -> the layout its local mode reads
CLIENTS = {"0.7.5": "registry", "0.11.0": "manifest"}
POINTS = [(0.15, 52.05), (0.11, 52.01), (-0.05, 52.06), (-0.01, 52.09), (5.0, 5.0)]


@pytest.mark.parametrize("version", list(CLIENTS))
def test_real_geotessera_and_tessera_agree(version: str, tmp_path: Path) -> None:
    py = geotessera_python(version)
    store = write_store(tmp_path / "store", CLIENTS[version],
                        ["grid_0.15_52.05", "grid_-0.05_52.05"], [2024])
    res = subprocess.run([str(py), str(PROBE), str(store), str(tmp_path / "gt.npz"),
                          *(f"{lon},{lat}" for lon, lat in POINTS)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen["version"] == version and seen["network"] == []
    gt = np.load(tmp_path / "gt.npz")

    c = Client(store)
    assert c.years() == seen["years"]
    assert sorted((2024, t.lon, t.lat) for t in
                  (c.manifest.entry(n, 2024) for n in c.manifest.tiles())) == \
        [tuple(t) for t in seen["tiles"]]
    year, lon, lat = seen["tile"]
    raster = c.fetch_tile(lon, lat, year)
    np.testing.assert_array_equal(raster.embeddings, gt["tile_embedding"])
    assert raster.crs.to_string() == seen["crs"]
    np.testing.assert_allclose(list(raster.transform)[:6], seen["transform"])
    ours, status = c.sample_points(POINTS, 2024)
    np.testing.assert_array_equal(ours, gt["samples"])  # NaN where both say no data
    assert list(status) == ["valid"] * 4 + ["outside"]
