"""NaN, inf and nodata in source rasters are never valid zeros: a float S2 band that is all NaN
(or inf) on one date makes that date's observations invalid (mask 0) with a warning naming the
file; a single non-finite pixel makes that pixel invalid. Through `tessera preprocess`."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from tessera.cli import app
from tessera.dpixel import Tile


def _rewrite_float(path, fill=None, pixel=None, value=np.nan):
    """Rewrite a band file as float32 (as a user's own processing might write it)."""
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read(1).astype(np.float32)
    if fill is not None:
        data[:] = fill
    if pixel is not None:
        data[pixel] = value
    profile.update(dtype="float32", nodata=None, driver="GTiff")
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_a_non_finite_band_is_not_a_valid_observation(world, tmp_path, fill):
    raw = world.copy(world.raw, tmp_path)
    files = sorted((raw / "s2").glob("*_B04.tif"))
    bad_date = files[1].name.split("_")[2]
    _rewrite_float(files[1], fill=fill)
    _rewrite_float(files[2], pixel=(3, 4), value=np.inf if fill == np.nan else np.nan)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, [str(a) for a in [
        "preprocess", "--source", "files", "--s2", raw / "s2" / "S2_{granule}_{date}_{band}.tif",
        "--s1", raw / "s1" / "S1_{orbit}_{date}_{band}.tif", "--bbox", world.raw_bbox,
        "--year", "2022", "-o", out, "--no-progress"]], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert any(files[1].name in ln and "no usable value" in ln for ln in warned), res.stderr
    (patch,) = [p for p in out.iterdir() if p.is_dir()]
    tile = Tile.open(patch)
    dates = [str(d) for d in __import__("json").loads(
        (patch / "preprocess.json").read_text())["s2"]["dates"]]
    t = dates.index(bad_date)
    assert not tile.masks[t].any()                     # the whole date: no valid observation
    assert (tile.bands[t][..., 0] == 0).all()          # B04 (first in model order) not a value
    # the single bad pixel of the next date is invalid; its neighbours keep their validity
    with rasterio.open(files[2]) as src:
        row, col = rasterio.transform.rowcol(tile.transform, *src.xy(3, 4))
    if 0 <= row < tile.shape[0] and 0 <= col < tile.shape[1]:
        assert tile.masks[t + 1][row, col] == 0
