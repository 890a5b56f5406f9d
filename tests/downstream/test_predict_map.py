"""Prediction maps (tessera.downstream.predict_map) on the tiny SIMULATED store of
tests/store_world.py: the map is the head's prediction on `read_region`'s pixels exactly, with
nodata where the store has none, its colour table, class names, confidence band, the regression
layout, a head of another model refused, strips of a few rows equal to one strip, and a failure
mid-way leaving nothing under the final names."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from store_world import BBOX, NW, YEAR, build_store

import tessera.downstream.predict_map as pm
from tessera.downstream.predict_map import MapResult, class_colors, predict_map
from tessera.downstream.heads import make_head
from tessera.errors import HeadError, InputError
from tessera.store.client import Client
from tessera.store.results import MissingTilesWarning

CLASSES = ["water", "crop", "forest"]


@dataclasses.dataclass
class Info:
    task: str
    classes: list[str]
    model: str = "simulated"
    dims: int = 128
    bands: list[int] | None = None
    kind: str = "standin"


class StandInHead:
    """A head with row-wise arithmetic only, so batching cannot change a prediction: class
    scores from two embedding dimensions (after `bands` selection, which it makes itself from
    full-width input, as tessera.downstream.heads heads do), softmax-normalised."""

    def __init__(self, task: str = "classification", bands: list[int] | None = None,
                 model: str = "simulated") -> None:
        self.info = Info(task, CLASSES if task == "classification" else [], model=model,
                         bands=bands)
        self.calls: list[int] = []

    def check_input(self, model: str, dims: int, where: str) -> None:
        if model != self.info.model or dims != self.info.dims:
            raise InputError(f"{where}: embeddings of {model} ({dims} dims); this head was "
                             f"fitted on {self.info.model} ({self.info.dims} dims)")

    def _select(self, X: np.ndarray) -> np.ndarray:
        assert X.dtype == np.float32 and X.shape[1] == 128
        return X if self.info.bands is None else X[:, self.info.bands]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self.calls.append(len(X))
        X = self._select(X)
        z = np.stack([X[:, 0], X[:, 1], -X[:, 0] - X[:, 1]], axis=1) * np.float32(3.0)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.info.task == "regression":
            self.calls.append(len(X))
            X = self._select(X)
            return (X[:, 0] * np.float32(2.0) + X[:, 1]).astype(np.float32)
        return self.predict_proba(X).argmax(axis=1)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return Client(build_store(tmp_path_factory))


@pytest.fixture(scope="module")
def region(client):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingTilesWarning)
        return client.read_region(BBOX, YEAR)


def read(path: Path) -> tuple[np.ndarray, dict, dict]:
    with rasterio.open(path) as src:
        meta = {"dtype": src.dtypes[0], "nodata": src.nodata, "descriptions": src.descriptions,
                "crs": src.crs, "transform": src.transform, "count": src.count,
                "colormap": src.colormap(1) if src.dtypes[0] != "float32" else None,
                "band1_tags": src.tags(1)}
        return src.read(), src.tags(), meta


def expected(raster) -> tuple[np.ndarray, np.ndarray]:
    """(the valid pixels, their float32 embeddings) of `read_region`'s result."""
    valid = np.isfinite(raster.scales)
    return valid, raster.embeddings[valid]


def test_classification_map_equals_predict_on_read_region(client, region, tmp_path):
    head = StandInHead()
    res = predict_map(head, client, BBOX, YEAR, tmp_path / "map.tif", png=tmp_path / "map.png")
    assert isinstance(res, MapResult)
    data, tags, meta = read(tmp_path / "map.tif")
    valid, x = expected(region)
    assert data.shape == (2, *region.shape) and res.shape == region.shape
    assert meta["dtype"] == "uint8" and meta["nodata"] == 255
    assert meta["crs"] == region.crs and meta["transform"] == region.transform
    assert valid.any() and (~valid).any()
    np.testing.assert_array_equal(data[0][valid], head.predict(x))
    # nodata exactly where the store has none, in both bands
    assert (data[0][~valid] == 255).all() and (data[1][~valid] == 255).all()
    # confidence: the largest probability in percent, 0..100
    conf = data[1][valid]
    assert conf.min() >= 0 and conf.max() <= 100
    np.testing.assert_array_equal(conf, np.rint(head.predict_proba(x).max(axis=1) * 100))
    assert meta["descriptions"] == ("class", "confidence")
    # class names and colour table
    assert json.loads(tags["CLASS_NAMES"]) == CLASSES
    assert [tags[f"CLASS_{i}"] for i in range(3)] == CLASSES
    assert meta["band1_tags"]["CLASS_1"] == "crop"
    rgb = class_colors(CLASSES)
    for i in range(3):
        assert meta["colormap"][i][:3] == tuple(int(v) for v in rgb[i])
    assert meta["colormap"][255][3] == 0
    assert len({tuple(c) for c in rgb.tolist()}) == 3
    assert tags["TESSERA_HEAD"] == "standin" and tags["TESSERA_MODEL"] == "simulated"
    assert tags["TESSERA_YEAR"] == str(YEAR) and tags["TESSERA_TASK"] == "classification"
    assert tags["TESSERA_REGION"] and tags["TESSERA_EMBEDDING_BANDS"] == "all"
    # counts, sizes, the preview
    counts = np.bincount(head.predict(x), minlength=3)
    assert res.counts == dict(zip(CLASSES, counts.tolist()))
    assert res.valid_pixels == int(valid.sum()) and res.seconds > 0
    assert res.png is not None and res.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.png", "map.tif"]


def test_band_selection_and_few_row_strips_equal_one_strip(client, region, tmp_path,
                                                           monkeypatch):
    bands = [7, 3, 100]
    head = StandInHead(bands=bands)
    one = predict_map(head, client, BBOX, YEAR, tmp_path / "one.tif", strip_rows=100_000)
    head.calls.clear()
    few = predict_map(head, client, BBOX, YEAR, tmp_path / "few.tif", strip_rows=3, batch=50)
    assert max(head.calls) <= 50 and len(head.calls) > region.shape[0] // 3
    a, tags, _ = read(one.tif)
    b, _, _ = read(few.tif)
    np.testing.assert_array_equal(a, b)
    assert tags["TESSERA_EMBEDDING_BANDS"] == "7,3,100"
    valid, x = expected(region)
    np.testing.assert_array_equal(a[0][valid], head.predict(x))
    # the default strip: bounded by MAP_STRIP_BYTES, whatever the region
    seen: list[int] = []
    orig = pm._predict_strip

    def spy(head, strip, *args):
        seen.append(strip.scales.shape[0])
        return orig(head, strip, *args)

    monkeypatch.setattr(pm, "MAP_STRIP_BYTES", 5 * region.shape[1] * 132)
    monkeypatch.setattr(pm, "_predict_strip", spy)
    dflt = predict_map(head, client, BBOX, YEAR, tmp_path / "dflt.tif")
    assert max(seen) == 5 and sum(seen) == region.shape[0]
    np.testing.assert_array_equal(read(dflt.tif)[0], a)


def test_regression_map(client, region, tmp_path):
    head = StandInHead("regression")
    res = predict_map(head, client, BBOX, YEAR, tmp_path / "reg.tif", png=tmp_path / "reg.png",
                      strip_rows=7)
    data, tags, meta = read(tmp_path / "reg.tif")
    valid, x = expected(region)
    assert meta["dtype"] == "float32" and np.isnan(meta["nodata"]) and meta["count"] == 1
    assert meta["descriptions"] == ("value",)
    np.testing.assert_array_equal(data[0][valid], head.predict(x))
    assert np.isnan(data[0][~valid]).all()
    assert "CLASS_NAMES" not in tags and tags["TESSERA_TASK"] == "regression"
    assert res.counts == {} and res.stats["min"] <= res.stats["mean"] <= res.stats["max"]
    assert res.png is not None and res.png.stat().st_size > 0


def test_a_tile_as_region_and_given_colours(client, tmp_path):
    head = StandInHead()
    res = predict_map(head, client, NW, YEAR, tmp_path / "tile.tif",
                      colors={"water": "blue", 2: (0, 128, 0)})
    _, _, meta = read(res.tif)
    assert meta["colormap"][0][:3] == (0, 0, 255) and meta["colormap"][2][:3] == (0, 128, 0)
    assert res.valid_pixels > 0
    with pytest.raises(InputError, match="not a class"):
        class_colors(CLASSES, {"sand": "yellow"})


def test_head_of_another_model_refused(client, tmp_path):
    head = StandInHead(model="tessera-v1")
    with pytest.raises(InputError, match="simulated"):
        predict_map(head, client, BBOX, YEAR, tmp_path / "x.tif")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(HeadError, match="bands"):
        predict_map(StandInHead(bands=[0, 200]), client, BBOX, YEAR, tmp_path / "x.tif")
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_leaves_nothing_under_the_final_names(client, tmp_path, monkeypatch):
    final, png = tmp_path / "map.tif", tmp_path / "map.png"
    final.write_bytes(b"the previous map")
    calls = []

    def boom(dst, data, win):
        calls.append(win)
        if len(calls) == 2:
            raise OSError("simulated failure")
        dst.write(data, window=win.rio())

    monkeypatch.setattr(pm, "BLOCK", 16)  # several blocks, so the failure is mid-way
    monkeypatch.setattr(pm, "write_window", boom)
    with pytest.raises(OSError, match="simulated failure"):
        predict_map(StandInHead(), client, BBOX, YEAR, final, png=png, strip_rows=5)
    assert len(calls) == 2
    assert final.read_bytes() == b"the previous map" and not png.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]


class ManyClasses(StandInHead):
    """300 classes: one at 0.6 probability, picked by the first dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.info.classes = [f"k{i}" for i in range(300)]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        idx = np.clip(((X[:, 0] + 1.5) * 100).astype(np.int64), 0, 299)
        p = np.full((len(X), 300), 0.4 / 299, np.float32)
        p[np.arange(len(X)), idx] = 0.6
        return p


def test_more_than_254_classes_is_uint16(client, region, tmp_path):
    head = ManyClasses()
    res = predict_map(head, client, BBOX, YEAR, tmp_path / "many.tif", png=tmp_path / "m.png")
    data, tags, meta = read(res.tif)
    valid, x = expected(region)
    assert meta["dtype"] == "uint16" and meta["nodata"] == 65535 and res.dtype == "uint16"
    np.testing.assert_array_equal(data[0][valid], head.predict(x))
    assert (data[1][valid] == 60).all() and (data[:, ~valid] == 65535).all()
    assert tags["CLASS_299"] == "k299" and len(json.loads(tags["CLASS_NAMES"])) == 300
    rgb = class_colors(head.info.classes)
    assert meta["colormap"][299][:3] == tuple(int(v) for v in rgb[299])
    assert len({tuple(c) for c in rgb.tolist()}) == 300


def test_preview_is_downsampled_to_its_limit(monkeypatch):
    monkeypatch.setattr(pm, "PREVIEW_MAX", 10)
    st = pm._State("classification", CLASSES, "uint8", 255, 2, 45, 23)
    assert st.k == 5 and st.preview.shape == (5, 9)
    out = np.arange(2 * 23 * 45, dtype=np.int64).reshape(2, 23, 45).astype(np.uint8)

    class Sink:
        def write(self, data, window):
            pass

    monkeypatch.setattr(pm, "write_window", lambda dst, data, win: None)
    st.add(Sink(), out[:, :7], 0)
    st.add(Sink(), out[:, 7:], 7)
    np.testing.assert_array_equal(st.preview, out[0, ::5, ::5])


def _labels(x: np.ndarray) -> np.ndarray:
    return (x[:, 0] > 0).astype(np.int64) + (x[:, 5] > 0).astype(np.int64)


def test_logistic_head_with_bands(client, region, tmp_path):
    valid, x = expected(region)
    head = make_head("logistic", classes=["low", "mid", "high"], model="simulated",
                     bands=[5, 0, 9])
    head.fit(x[::3], _labels(x[::3]))
    res = predict_map(head, client, BBOX, YEAR, tmp_path / "lr.tif", strip_rows=16)
    data, tags, _ = read(res.tif)
    np.testing.assert_array_equal(data[0][valid], head.predict(x))
    np.testing.assert_array_equal(data[1][valid],
                                  np.rint(head.predict_proba(x).max(axis=1) * 100))
    assert tags["TESSERA_HEAD"] == "logistic" and tags["TESSERA_EMBEDDING_BANDS"] == "5,0,9"
    assert (data[0][valid] == 2).any() and (data[0][valid] == 0).any()


def test_mlp_regression_head(client, region, tmp_path):
    valid, x = expected(region)
    head = make_head("mlp", "regression", model="simulated", epochs=1, hidden=[16])
    head.fit(x[::4], x[::4, 0] * 3.0)
    res = predict_map(head, client, BBOX, YEAR, tmp_path / "mlp.tif")
    data, tags, _ = read(res.tif)
    np.testing.assert_array_equal(data[0][valid], head.predict(x))
    assert np.isnan(data[0][~valid]).all() and tags["TESSERA_HEAD"] == "mlp"


def test_real_head_of_another_model_refused(client, region, tmp_path):
    _, x = expected(region)
    head = make_head("logistic", classes=["low", "mid", "high"], model="tessera-v1")
    head.fit(x[::5], _labels(x[::5]))
    with pytest.raises(HeadError, match="tessera-v1.*simulated"):
        predict_map(head, client, BBOX, YEAR, tmp_path / "x.tif", png=tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
