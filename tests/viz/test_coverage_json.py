"""The coverage JSON (`tessera.viz.coverage_doc`): what programs read instead of the map; its
content is the manifest's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tessera import viz
from tessera.geo import parse_tile_name
from tessera.store.local import LocalStore
from tessera.store.manifest import Manifest

from viz_world import EAST, RES, WEST, YEAR


def test_coverage_json_is_the_manifest(store, tmp_path):
    man = store.manifest()
    path = viz.write_coverage_json(man, tmp_path / "cov.json", store=store.describe())
    doc = json.loads(path.read_text())
    assert not list(tmp_path.glob(".*.tmp")), "temporary left behind"
    assert doc["format"] == viz.COVERAGE_FORMAT and doc["format_version"] == 1
    assert doc["store"] == store.describe() and doc["created"].endswith("+00:00")
    assert doc["totals"] == {"tile_years": len(man), "tiles": 2, "years": 2}
    assert doc["bbox"] == pytest.approx([5.9, 45.0, 6.1, 45.1])
    assert [y["year"] for y in doc["years"]] == man.years() == [2021, YEAR]
    for y in doc["years"]:
        entries = {e.tile: e for e in man.query(year=y["year"]).entries()}
        assert y["tiles"] == len(entries) == len(y["tile_list"])
        assert y["valid_pixels"] == sum(e.valid_pixels for e in entries.values())
        assert y["bytes"] == sum(f.size for e in entries.values() for f in e.files.values())
        assert y["bbox"] == pytest.approx([5.9, 45.0, 6.1, 45.1])
        assert [t["tile"] for t in y["tile_list"]] == sorted(entries) == [WEST, EAST]
        for t in y["tile_list"]:
            e = entries[t["tile"]]
            cell = parse_tile_name(e.tile)
            assert (t["lon"], t["lat"]) == pytest.approx((cell.lon, cell.lat))
            assert t["bbox"] == pytest.approx(list(cell.bounds))
            assert (t["crs"], t["width"], t["height"]) == (e.crs, e.width, e.height)
            assert (t["valid_pixels"], t["version"], t["model"]) == (e.valid_pixels, e.version,
                                                                    e.model)
            # the valid-pixel counts are the files'
            s = np.load(store.open_file(e.files["scales"]))
            assert t["valid_pixels"] == int(np.isfinite(s).sum())
    m = doc["models"]
    assert len(m) == 1 and m[0]["model"] == "simulated" and m[0]["dims"] == 128
    assert m[0]["years"] == [2021, YEAR] and m[0]["tile_years"] == 4
    # one year only
    one = viz.coverage_doc(man, years=[YEAR])
    assert [y["year"] for y in one["years"]] == [YEAR] and one["totals"]["tile_years"] == 2
    with pytest.raises(viz.VizError, match="year.*2019.*not in the manifest.*2021, 2022"):
        viz.coverage_doc(man, years=[2019])
    empty = viz.coverage_doc(Manifest())
    assert empty["years"] == [] and empty["bbox"] is None and empty["totals"]["tiles"] == 0


def test_coverage_json_of_a_geotessera_store_says_unknown_counts(tmp_path):
    from geotessera_layouts import write_store

    root = write_store(tmp_path / "gt", "manifest", ["grid_0.15_52.05", "grid_-0.05_52.05"],
                       [2024], resolution=RES * 2.5)
    st = LocalStore(root)
    doc = viz.coverage_doc(st.manifest(), store=st.describe())
    (y,) = doc["years"]
    assert y["year"] == 2024 and y["tiles"] == 2 and y["valid_pixels"] == -1
    assert {t["tile"] for t in y["tile_list"]} == {"grid_0.15_52.05", "grid_-0.05_52.05"}
    assert all(t["valid_pixels"] == -1 for t in y["tile_list"])
    assert doc["bbox"] == pytest.approx([-0.1, 52.0, 0.2, 52.1])
    assert {t["crs"] for t in y["tile_list"]} == {"EPSG:32630", "EPSG:32631"}
