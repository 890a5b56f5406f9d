"""Heads on embeddings (tessera.downstream.heads / .unet): every kind fits and beats chance on
tiny separable data, saves and loads with identical predictions, is deterministic for a seed,
refuses embeddings of another model, bad data and foreign files with one-line errors."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from tessera.downstream.heads import (FORMAT, HEAD_KINDS, Head, HeadInfo, default_params,
                                      fingerprint, make_head)
from tessera.errors import ExistsError, HeadError, InputError, NotFoundError

CLASSES = ["wheat", "maize", "water"]
PIXEL_KINDS = ("logistic", "random_forest", "knn", "gbm", "mlp")
FAST = {"logistic": {}, "random_forest": {"n_estimators": 20}, "knn": {}, "gbm": {"max_iter": 30},
        "mlp": {"epochs": 15, "batch_size": 32, "hidden": [32, 16]}, "unet": {}}


def blobs(n: int = 240, d: int = 8, seed: int = 0):
    """Three well separated classes in d dims, and a linear regression target."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, size=(3, d))
    y = np.arange(n) % 3
    x = (centres[y] + rng.normal(0, 0.6, size=(n, d))).astype(np.float32)
    target = (x @ rng.normal(size=d) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return x, y.astype(np.int64), target


def r2(pred, truth):
    return 1 - float(np.mean((pred - truth) ** 2) / np.var(truth))


class Bars:
    """A Progress that counts what it is told."""

    def __init__(self):
        self.made, self.advanced = [], 0

    def task(self, description, total=None, unit=""):
        self.made.append((description, total))
        bars = self

        class T:
            def advance(self, n=1, info=None):
                bars.advanced += n

            def update(self, *, completed=None, total=None, info=None):
                pass
        return T()


# --- every kind: fit, beat chance, save / load -------------------------------------------------

@pytest.mark.parametrize("kind", PIXEL_KINDS)
def test_classification_fits_saves_and_loads(kind, tmp_path):
    x, y, _ = blobs()
    head = make_head(kind, classes=CLASSES, model="tessera-v1", seed=1, **FAST[kind])
    assert head.fit(x[:150], y[:150]) is head
    pred = head.predict(x[150:])
    assert pred.dtype == np.int64 and pred.shape == (90,)
    assert np.mean(pred == y[150:]) > 0.8  # chance: 1/3
    proba = head.predict_proba(x[150:])
    assert proba.dtype == np.float32 and proba.shape == (90, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), pred)

    info = head.info
    assert (info.kind, info.task, info.model, info.dims, info.classes, info.n_train) == (
        kind, "classification", "tessera-v1", 8, CLASSES, 150)
    assert info.fingerprint == fingerprint(x[:150], y[:150], CLASSES)
    assert info.params["seed"] == 1 and info.created

    path = head.save(tmp_path / f"h{head.suffix}")
    assert path.is_file() and head.path == path
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left
    back = Head.load(path)
    assert type(back) is type(head) and back.info == info and back.path == path
    np.testing.assert_array_equal(back.predict(x[150:]), pred)
    np.testing.assert_array_equal(back.predict_proba(x[150:]), proba)


@pytest.mark.parametrize("kind", PIXEL_KINDS)
def test_regression_fits_saves_and_loads(kind, tmp_path):
    x, _, t = blobs()
    head = make_head(kind, "regression", seed=2, **FAST[kind]).fit(x[:150], t[:150])
    pred = head.predict(x[150:])
    assert pred.dtype == np.float32 and pred.shape == (90,)
    assert r2(pred, t[150:]) > 0.5
    assert head.info.classes == [] and head.info.task == "regression"
    with pytest.raises(HeadError, match="regression head"):
        head.predict_proba(x[150:])
    back = Head.load(head.save(tmp_path / "r.head"))  # any name: the content says the kind
    assert back.info == head.info
    np.testing.assert_array_equal(back.predict(x[150:]), pred)


@pytest.mark.parametrize("kind", ["random_forest", "gbm", "mlp"])
def test_same_seed_same_head(kind):
    x, y, _ = blobs()
    a = make_head(kind, classes=CLASSES, seed=5, **FAST[kind]).fit(x[:150], y[:150])
    b = make_head(kind, classes=CLASSES, seed=5, **FAST[kind]).fit(x[:150], y[:150])
    np.testing.assert_array_equal(a.predict_proba(x[150:]), b.predict_proba(x[150:]))
    if kind == "mlp":
        c = make_head(kind, classes=CLASSES, seed=6, **FAST[kind]).fit(x[:150], y[:150])
        assert not np.array_equal(a.predict_proba(x[150:]), c.predict_proba(x[150:]))


def test_mlp_leaves_the_callers_torch_state_alone():
    import torch

    x, y, _ = blobs(60)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_head("mlp", seed=0, epochs=2, threads=1).fit(x, y)
    assert torch.equal(torch.rand(3), expected) and torch.get_num_threads() == threads


def test_progress_is_reported():
    x, y, _ = blobs(64)
    bars = Bars()
    make_head("mlp", classes=CLASSES, epochs=3, batch_size=16, hidden=[8]).fit(x, y, progress=bars)
    assert bars.made == [("training the mlp head", 12)] and bars.advanced == 12
    bars = Bars()
    make_head("logistic").fit(x, y, progress=bars)
    assert bars.advanced == 1


def test_no_rows_no_predictions():
    x, y, t = blobs(30)
    for kind in ("random_forest", "mlp"):
        head = make_head(kind, classes=CLASSES, **FAST[kind]).fit(x, y)
        assert head.predict(x[:0]).shape == (0,) and head.predict_proba(x[:0]).shape == (0, 3)
        reg = make_head(kind, "regression", **FAST[kind]).fit(x, t)
        assert reg.predict(x[:0]).shape == (0,)


def test_predictions_in_batches_equal_one_batch():
    x, y, _ = blobs()
    for kind in ("random_forest", "mlp"):
        head = make_head(kind, classes=CLASSES, **FAST[kind]).fit(x[:150], y[:150])
        small = make_head(kind, classes=CLASSES, predict_batch=7, **FAST[kind]).fit(x[:150], y[:150])
        np.testing.assert_allclose(small.predict_proba(x), head.predict_proba(x), atol=1e-6)


# --- what the head was trained on --------------------------------------------------------------

def test_check_input_refuses_another_model_or_width():
    x, y, _ = blobs()
    head = make_head("logistic", model="tessera-v1").fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head.check_input("tessera-v1", 8, "tile A")  # the same: silent
    with pytest.raises(HeadError) as err:
        head.check_input("other-model", 8, "tile A")
    assert str(err.value) == ("head (logistic head) was trained on embeddings of model tessera-v1 "
                              "(8 dims); tile A holds model other-model (8 dims)")
    with pytest.raises(HeadError, match="tile B holds model tessera-v1 \\(64 dims\\)"):
        head.check_input("tessera-v1", 64, "tile B")
    with pytest.warns(UserWarning, match="unknown"):
        head.check_input("", 8, "tile C")
    anonymous = make_head("logistic").fit(x, y)
    with pytest.warns(UserWarning, match="unknown"):
        anonymous.check_input("tessera-v1", 8, "tile D")
    with pytest.raises(HeadError, match="64 dims"):
        anonymous.check_input("tessera-v1", 64, "tile D")


def test_check_input_names_the_file(tmp_path):
    x, y, _ = blobs()
    path = make_head("knn", model="A").fit(x, y).save(tmp_path / "k.skops")
    with pytest.raises(HeadError, match=f"head {path} was trained on embeddings of model A"):
        Head.load(path).check_input("B", 8, "store S")


def test_bands_select_embedding_dimensions(tmp_path):
    x, y, _ = blobs(d=12)
    head = make_head("logistic", classes=CLASSES, bands=[0, 3, 5, 7, 11], model="m").fit(x, y)
    assert head.info.dims == 5 and head.info.bands == [0, 3, 5, 7, 11]
    assert head.info.extra["input_dims"] == 12
    plain = make_head("logistic", classes=CLASSES).fit(x[:, [0, 3, 5, 7, 11]], y)
    np.testing.assert_array_equal(head.predict_proba(x), plain.predict_proba(x[:, [0, 3, 5, 7, 11]]))
    head.check_input("m", 12, "tile")  # the full width is what comes in
    with pytest.raises(HeadError, match="12 dims"):
        head.check_input("m", 5, "tile")
    with pytest.raises(HeadError, match="X: 5 columns; head .* takes embeddings of 12 dims"):
        head.predict(x[:, :5])
    back = Head.load(head.save(tmp_path / "b.skops"))
    np.testing.assert_array_equal(back.predict(x), head.predict(x))
    with pytest.raises(HeadError, match="uses embedding dimension 11"):
        make_head("logistic", bands=[11]).fit(x[:, :8], y)


def test_dims_fixed_in_advance_is_enforced():
    x, y, _ = blobs()
    head = make_head("logistic", dims=16)
    with pytest.raises(HeadError, match="X: 8 columns; head .* 16 dims"):
        head.fit(x, y)
    fitted = make_head("logistic").fit(x, y)
    with pytest.raises(HeadError, match="X: 4 columns"):
        fitted.predict(x[:, :4])


def test_fingerprint_follows_the_data():
    x, y, _ = blobs(30)
    a = fingerprint(x, y, CLASSES)
    assert a == fingerprint(x.copy(), y.astype(np.int32), list(CLASSES)) and len(a) == 64
    assert a != fingerprint(x, np.roll(y, 1), CLASSES)
    assert a != fingerprint(x, y, ["a", "b", "c"])
    x2 = x.copy()
    x2[0, 0] += 1
    assert a != fingerprint(x2, y, CLASSES)


# --- odd training data -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["logistic", "random_forest", "gbm", "mlp"])
def test_single_class_predicts_it(kind, tmp_path):
    x, _, _ = blobs(30)
    head = make_head(kind, classes=CLASSES, **FAST[kind]).fit(x, np.full(30, 2))
    np.testing.assert_array_equal(head.predict(x[:5]), [2] * 5)
    proba = head.predict_proba(x[:5])
    assert proba.shape == (5, 3)
    np.testing.assert_array_equal(proba, np.tile([0, 0, 1], (5, 1)).astype(np.float32))
    back = Head.load(head.save(tmp_path / f"one{head.suffix}"))
    np.testing.assert_array_equal(back.predict_proba(x[:5]), proba)


def test_classes_come_from_y_when_not_named():
    x, y, _ = blobs(30)
    head = make_head("logistic").fit(x, y)
    assert head.info.classes == ["0", "1", "2"]
    assert head.predict_proba(x).shape == (30, 3)
    # classes absent from the training set still get a (zero) column
    head = make_head("random_forest", classes=["a", "b", "c", "d"], n_estimators=5).fit(x, y)
    proba = head.predict_proba(x)
    assert proba.shape == (30, 4) and not proba[:, 3].any()


def test_nan_rows_and_bad_arrays_are_refused():
    x, y, t = blobs(30)
    bad = x.copy()
    bad[[4, 9], 2] = np.nan
    with pytest.raises(HeadError, match="X: 2 of 30 rows hold NaN or inf values \\(first: row 4\\)"):
        make_head("logistic").fit(bad, y)
    with pytest.raises(HeadError, match="X: 2 of 30 rows"):
        make_head("logistic").fit(x, y).predict(bad)
    with pytest.raises(HeadError, match="de-quantise"):
        make_head("logistic").fit(x.astype(np.int8), y)
    with pytest.raises(HeadError, match="2-D array"):
        make_head("logistic").fit(x[0], y)
    with pytest.raises(HeadError, match="expected 30 labels"):
        make_head("logistic").fit(x, y[:10])
    with pytest.raises(HeadError, match="class index 3; the head has 2 classes"):
        make_head("logistic", classes=["a", "b"]).fit(x, y + 1)
    with pytest.raises(HeadError, match="non-integer"):
        make_head("logistic").fit(x, t)
    with pytest.raises(HeadError, match="class names to indices"):
        make_head("logistic").fit(x, np.array(CLASSES * 10))
    nan_t = t.copy()
    nan_t[3] = np.nan
    with pytest.raises(HeadError, match="1 targets are NaN"):
        make_head("gbm", "regression").fit(x, nan_t)
    with pytest.raises(HeadError, match="not fitted"):
        make_head("knn").predict(x)
    assert issubclass(HeadError, InputError)


def test_bad_kind_task_and_parameters():
    with pytest.raises(HeadError, match="head kind 'svm': expected one of logistic, random_forest"):
        make_head("svm")
    with pytest.raises(HeadError, match="head task 'ranking'"):
        make_head("logistic", "ranking")
    with pytest.raises(HeadError, match="unknown parameter\\(s\\) n_trees; expected"):
        make_head("random_forest", n_trees=3)
    with pytest.raises(HeadError, match="epochs=0: expected a positive integer"):
        make_head("mlp", epochs=0)
    with pytest.raises(HeadError, match="dropout"):
        make_head("mlp", dropout=1.5)
    with pytest.raises(HeadError, match="no classes"):
        make_head("knn", "regression", classes=["a"])
    with pytest.raises(HeadError, match="duplicate"):
        make_head("knn", classes=["a", "a"])
    with pytest.raises(HeadError, match="bands"):
        make_head("knn", bands=[1, 1])
    with pytest.raises(HeadError, match="dims=3 but 2 bands"):
        make_head("knn", bands=[0, 1], dims=3)
    assert default_params("logistic", "regression") == {"alpha": 1.0, "predict_batch": 65536}
    assert set(HEAD_KINDS) == {"logistic", "random_forest", "knn", "gbm", "mlp", "unet"}


# --- files -------------------------------------------------------------------------------------

def test_save_refuses_to_overwrite(tmp_path):
    x, y, _ = blobs(30)
    with pytest.raises(HeadError, match="not fitted"):
        make_head("logistic").save(tmp_path / "h.skops")
    head = make_head("logistic").fit(x, y)
    path = head.save(tmp_path / "h.skops")
    with pytest.raises(ExistsError, match="overwrite=True"):
        head.save(path)
    other = make_head("mlp", epochs=1).fit(x, y)
    assert other.save(path, overwrite=True) == path
    assert Head.load(path).info.kind == "mlp"


def test_missing_truncated_and_foreign_files(tmp_path):
    x, y, _ = blobs(30)
    with pytest.raises(NotFoundError, match="no such head file"):
        Head.load(tmp_path / "nope.skops")
    with pytest.raises(HeadError, match="is a folder"):
        Head.load(tmp_path)
    for kind in ("logistic", "mlp"):
        path = make_head(kind, **FAST[kind]).fit(x, y).save(tmp_path / kind)
        data = path.read_bytes()
        cut = tmp_path / f"{kind}.cut"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(HeadError, match=f"^{cut}: ") as err:
            Head.load(cut)
        assert "\n" not in str(err.value)
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a head")
    with pytest.raises(HeadError, match=f"^{text}: not a readable head file"):
        Head.load(text)


def test_foreign_skops_and_safetensors_files(tmp_path):
    import safetensors.torch as st
    import skops.io as sio
    import torch
    from sklearn.preprocessing import FunctionTransformer

    plain = tmp_path / "plain.skops"
    plain.write_bytes(sio.dumps({"some": "dict"}))
    with pytest.raises(HeadError, match="not a tessera head"):
        Head.load(plain)
    evil = tmp_path / "evil.skops"
    evil.write_bytes(sio.dumps({"format": FORMAT, "version": 1,
                                "estimator": FunctionTransformer(os.system)}))
    with pytest.raises(HeadError, match="holds types a head never holds \\(posix.system\\)"):
        Head.load(evil)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(st.save({"a": torch.zeros(2)}))
    with pytest.raises(HeadError, match="not a tessera head"):
        Head.load(weights)
    # the info and the weights of another head: refused, not half-loaded
    x, y, _ = blobs(30)
    path = make_head("mlp", epochs=1, hidden=[8]).fit(x, y).save(tmp_path / "m.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta["info"])
    info["params"]["hidden"] = [16]
    weights.write_bytes(st.save(tensors, {**meta, "info": json.dumps(info)}))
    with pytest.raises(HeadError, match="weights do not fit a mlp head"):
        Head.load(weights)


def test_head_info_json_round_trip():
    info = HeadInfo(kind="gbm", task="regression", model="m", dims=4, bands=[0, 1, 2, 3],
                    classes=[], fingerprint="ab", params={"seed": 0}, n_train=3,
                    created="2026-01-01T00:00:00+00:00", extra={"year": 2024})
    assert HeadInfo.from_json(info.to_json()) == info
    info.extra["accuracy"] = np.float32(0.5)
    assert HeadInfo.from_json(info.to_json()).extra["accuracy"] == 0.5
    with pytest.raises(HeadError, match="f.skops: head info field 'dims'"):
        HeadInfo.from_json(json.dumps({**json.loads(info.to_json()), "dims": "4"}), "f.skops")


# --- unet --------------------------------------------------------------------------------------

def patches(n: int = 16, d: int = 4, h: int = 10, w: int = 11, seed: int = 0):
    """Patches whose class is a smooth random field's sign, written (with noise) into embedding
    dimension 0; the other dimensions are noise. Also a regression target: 2 x dimension 0 + 1."""
    from scipy.ndimage import uniform_filter

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d, h, w)).astype(np.float32)
    field = uniform_filter(rng.normal(size=(n, h, w)), size=(1, 3, 3))
    y = (field > 0).astype(np.int64)
    x[:, 0] += 3 * (2 * y - 1)
    return x, y, (2 * x[:, 0] + 1).astype(np.float32)


def test_unet_segments_patches(tmp_path):
    x, y, _ = patches()  # 10 x 11: not a multiple of 4
    y_train = y[:12].copy()
    y_train[:, :2, :2] = -1  # no label there
    kw = {"epochs": 15, "batch_size": 4, "channels": 8, "lr": 1e-2, "seed": 3}
    head = make_head("unet", classes=["dry", "wet"], model="m", **kw)
    head.fit_patches(x[:12], y_train)
    assert head.info.n_train == int((y_train >= 0).sum()) and head.info.extra["n_patches"] == 12
    pred = head.predict_patches(x[12:])
    assert pred.shape == (4, 10, 11) and pred.dtype == np.int64
    assert np.mean(pred == y[12:]) > 0.9  # chance: 1/2
    proba = head.predict_proba_patches(x[12:])
    assert proba.shape == (4, 2, 10, 11) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
    back = Head.load(head.save(tmp_path / "u.safetensors"))
    assert back.info == head.info
    np.testing.assert_array_equal(back.predict_proba_patches(x[12:]), proba)
    again = make_head("unet", classes=["dry", "wet"], model="m", **kw).fit_patches(x[:12], y_train)
    np.testing.assert_array_equal(again.predict_proba_patches(x[12:]), proba)
    with pytest.raises(HeadError, match="use predict_patches"):
        head.predict(x[:, :, 0, 0])
    with pytest.raises(HeadError, match="use fit_patches"):
        head.fit(x[:, :, 0, 0], y[:, 0, 0])
    with pytest.raises(HeadError, match="use predict_proba_patches"):
        head.predict_proba(x[:, :, 0, 0])


def test_unet_regression_and_odd_input():
    x, y, target = patches(h=5, w=7)
    target[:, 0, 0] = np.nan  # no label
    head = make_head("unet", "regression", epochs=20, batch_size=4, channels=8, lr=1e-2)
    pred = head.fit_patches(x[:12], target[:12]).predict_patches(x[12:])
    assert pred.shape == (4, 5, 7) and pred.dtype == np.float32
    valid = np.isfinite(target[12:])
    assert r2(pred[valid], target[12:][valid]) > 0.5
    with pytest.raises(HeadError, match="Y: expected shape"):
        make_head("unet", epochs=1).fit_patches(x, y[:, :4])
    bad = x.copy()
    bad[1, 0, 2, 2] = np.nan
    with pytest.raises(HeadError, match="X: 1 of 16 patches hold NaN"):
        make_head("unet", epochs=1).fit_patches(bad, y)
    with pytest.raises(HeadError, match="4-D array"):
        make_head("unet", epochs=1).fit_patches(x[0], y)
    one = make_head("unet", classes=["a", "b"], epochs=1).fit_patches(x, np.ones_like(y))
    assert (one.predict_patches(x) == 1).all() and one.net is None
    assert head.predict_patches(x[:0]).shape == (0, 5, 7)


def test_forests_and_boosting_take_nan_as_missing_values() -> None:
    """Raw time-series baselines have gaps: the kinds whose estimators handle NaN natively
    take it (inf is still refused); the others refuse NaN rows."""
    import numpy as np
    import pytest

    from tessera.downstream.heads import make_head
    from tessera.errors import HeadError

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    x[rng.random(x.shape) < 0.1] = np.nan
    for kind in ("random_forest", "gbm"):
        h = make_head(kind, classes=["a", "b"], seed=0).fit(x, y)
        assert (h.predict(x) == y).mean() > 0.8
        with pytest.raises(HeadError, match="inf"):
            h.predict(np.full((1, 6), np.inf, np.float32))
    with pytest.raises(HeadError, match="NaN"):
        make_head("logistic", classes=["a", "b"]).fit(x, y)


def test_mlp_inference_is_the_trained_network_folded_and_bf16_is_an_option() -> None:
    """Prediction folds the standardisation and BatchNorm into the Linear layers: the same
    probabilities as the trained network's forward (float rounding apart); precision="bf16"
    (an option, not the default) keeps the classes of nearly every pixel."""
    import numpy as np
    import torch

    from tessera.downstream.heads import make_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    h = make_head("mlp", classes=["a", "b", "c"], epochs=3, seed=0).fit(x, y)
    net = h.net.eval()
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(
            ((x - h.stats["x_mean"]) / h.stats["x_std"]).astype(np.float32))), 1).numpy()
    np.testing.assert_allclose(h.predict_proba(x), ref, atol=1e-5)
    h.info.params["precision"] = "bf16"
    assert (h.predict(x) == ref.argmax(1)).mean() > 0.98
    np.testing.assert_allclose(h.predict_proba(x), ref, atol=0.05)
    h.info.params["precision"] = "fp32"  # and back: the float32 network was not rounded
    np.testing.assert_allclose(h.predict_proba(x), ref, atol=1e-5)
