"""Heads on embeddings: one fit / predict / save / load interface for every kind.

A head turns embeddings (de-quantised: int8 codes x scale, float32) into classes or values:

    head = make_head("random_forest", classes=["wheat", "maize", "other"], model="tessera-v1")
    head.fit(X, y)                      # X (N, D) float32, y class indices 0..C-1 (or floats)
    head.predict(X2)                    # (N,) int64 class indices (float32 values: regression)
    head.predict_proba(X2)              # (N, C) float32 (classification only)
    head.save("crops.skops")            # atomic; refuses to overwrite unless overwrite=True
    head = Head.load("crops.skops")     # any kind; the HeadInfo comes back with it
    head.check_input("tessera-v1", 128, "tile 51.05_0.15")  # before predicting other embeddings

Kinds (`HEAD_KINDS`), each for task "classification" or "regression":

- `logistic`: StandardScaler + LogisticRegression (regression: StandardScaler + Ridge);
- `random_forest`: RandomForestClassifier / Regressor (`n_jobs`, default 1);
- `knn`: KNeighborsClassifier / Regressor (`n_neighbors` clipped to the training size);
- `gbm`: HistGradientBoostingClassifier / Regressor (no early stopping: deterministic);
- `mlp`: a PyTorch pixel MLP D -> 512 -> 256 -> C (Linear, BatchNorm1d, ReLU, Dropout 0.3;
  AdamW), cross-entropy, or MSE on standardised targets for regression; inputs standardised
  with the training mean / std (stored with the head);
- `unet`: a small UNet on embedding patches (`tessera.downstream.unet`): `fit_patches`,
  `predict_patches`, `predict_proba_patches` on (N, D, H, W) arrays; its `fit` / `predict` /
  `predict_proba` on pixel arrays raise a HeadError pointing there.

Hyper-parameters are keyword arguments of `make_head` (`default_params(kind, task)` lists them
with their defaults; an unknown name is refused); `seed` is stored among them. Everything is
deterministic for a given seed: scikit-learn's `random_state`, and for the torch heads a seeded
initialisation, a seeded `torch.Generator` for the shuffling and `threads` (default 1) CPU
threads during training and prediction (the caller's RNG state and thread count are restored).

Training data: X is a 2-D float array whose rows must all be finite (a row with NaN / inf is
refused, as are integer codes: de-quantise first; random_forest and gbm take NaN as a missing
value, as scikit-learn does, for raw time series with gaps); y holds class indices 0..C-1 (C =
`len(classes)`, or max(y) + 1 when no names are given: the classes are then "0", "1", ...) or
finite float targets. A classification training set with a single class gives a head that
predicts that class with probability 1. `bands` picks embedding dimensions: X keeps its full
width (`info.extra["input_dims"]`) and the head uses the columns `bands` (`info.dims` =
len(bands)). Predictions are made in batches (`predict_batch` rows), so memory stays bounded on
whole tiles.

File format (one file per head; `Head.load` recognises the content, not the name; `head.suffix`
is the suggested suffix). No pickle anywhere:

- scikit-learn kinds: a skops file (`.skops`, a zip) holding the dict
  {"format": "tessera-head", "version": 1, "info": <HeadInfo as JSON text>,
  "constant": <the single training class, or -1>, "estimator": <the fitted estimator or None>}.
  It is loaded trusting only the types such estimators hold (`TRUSTED_TYPES`: trees, KD / ball
  trees, distance metrics); a file holding any other type is refused unread.
- torch kinds: a safetensors file (`.safetensors`): tensors "net.<state-dict key>" (the network),
  "x_mean" / "x_std" (input standardisation) and, for regression, "y_mean" / "y_std"; metadata
  {"format": "tessera-head", "version": "1", "info": <HeadInfo JSON>, "constant": "<class or -1>"}.
  The network is rebuilt from the info (kind, dims, classes, params) and its weights loaded
  strictly.

A missing file is a NotFoundError; a truncated, foreign or inconsistent file a one-line HeadError
naming it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tessera.atomic import atomic_path
from tessera.errors import ExistsError, HeadError, NotFoundError, error_text, require
from tessera.progress import Progress, task

if TYPE_CHECKING:
    import torch

HEAD_KINDS: tuple[str, ...] = ("logistic", "random_forest", "knn", "gbm", "mlp", "unet")
TASKS: tuple[str, ...] = ("classification", "regression")
SKLEARN_KINDS: tuple[str, ...] = ("logistic", "random_forest", "knn", "gbm")
TORCH_KINDS: tuple[str, ...] = ("mlp", "unet")
FORMAT = "tessera-head"
FORMAT_VERSION = 1
#: The only types (beyond skops' defaults: scikit-learn estimators, numpy, builtins) that a
#: scikit-learn head file may hold.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.EuclideanDistance32",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance32",
)
_ESTIMATORS = {("logistic", "classification"): "Pipeline", ("logistic", "regression"): "Pipeline",
               ("random_forest", "classification"): "RandomForestClassifier",
               ("random_forest", "regression"): "RandomForestRegressor",
               ("knn", "classification"): "KNeighborsClassifier",
               ("knn", "regression"): "KNeighborsRegressor",
               ("gbm", "classification"): "HistGradientBoostingClassifier",
               ("gbm", "regression"): "HistGradientBoostingRegressor"}
_SKOPS_MAGIC = b"PK\x03\x04"


def _plain(v: Any) -> Any:
    """JSON for what json cannot write itself: numpy scalars and arrays, else the text."""
    return v.tolist() if hasattr(v, "tolist") else str(v)


@dataclasses.dataclass
class HeadInfo:
    """What a head is and what it was trained on; travels with the head's file."""

    kind: str            # "logistic" | "random_forest" | "knn" | "gbm" | "mlp" | "unet"
    task: str            # "classification" | "regression"
    model: str           # the embedding model id the head was trained on ("" unknown)
    dims: int            # embedding width it takes (after band selection; 0 = not known yet)
    bands: list[int] | None   # embedding dimensions used (None = all)
    classes: list[str]   # class names in index order (classification; [] for regression)
    fingerprint: str     # sha256 hex of the training data (X bytes, y, classes), for provenance
    params: dict         # hyper-parameters (with "seed")
    n_train: int
    created: str         # ISO time of the fit
    extra: dict          # free-form (metrics, label source, year, ...; "input_dims" is set by fit)

    def to_json(self) -> str:
        """The info as JSON text (numpy values in `extra` become numbers / lists)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=_plain)

    @classmethod
    def from_json(cls, text: str, where: str = "head info") -> HeadInfo:
        """The info stored as JSON; HeadError naming `where` when a field is missing or bad."""
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise HeadError(f"{where}: the head info is not JSON ({exc})") from None
        if not isinstance(d, dict):
            raise HeadError(f"{where}: the head info is not a JSON object")
        kinds = {"kind": str, "task": str, "model": str, "dims": int, "classes": list,
                 "fingerprint": str, "params": dict, "n_train": int, "created": str,
                 "extra": dict}
        for name, typ in kinds.items():
            if not isinstance(d.get(name), typ):
                raise HeadError(f"{where}: head info field {name!r} is missing or not "
                                f"{typ.__name__}")
        bands = d.get("bands")
        if bands is not None and not (isinstance(bands, list)
                                      and all(isinstance(b, int) for b in bands)):
            raise HeadError(f"{where}: head info field 'bands' is not null or a list of integers")
        if d["kind"] not in HEAD_KINDS or d["task"] not in TASKS:
            raise HeadError(f"{where}: head info kind {d['kind']!r} / task {d['task']!r}: "
                            f"expected one of {', '.join(HEAD_KINDS)} / {', '.join(TASKS)}")
        return cls(kind=d["kind"], task=d["task"], model=d["model"], dims=d["dims"],
                   bands=bands, classes=[str(c) for c in d["classes"]],
                   fingerprint=d["fingerprint"], params=d["params"], n_train=d["n_train"],
                   created=d["created"], extra=d["extra"])


# --- hyper-parameters --------------------------------------------------------------------------

_FOREST = {"n_estimators": 200, "max_depth": None, "min_samples_leaf": 1, "n_jobs": 1,
           "predict_batch": 65536}
_KNN = {"n_neighbors": 5, "weights": "uniform", "metric": "euclidean", "predict_batch": 65536}
_GBM = {"max_iter": 200, "learning_rate": 0.1, "max_leaf_nodes": 31, "l2_regularization": 0.0,
        "predict_batch": 65536}
_MLP = {"epochs": 50, "batch_size": 256, "lr": 1e-3, "weight_decay": 1e-2, "hidden": [512, 256],
        "dropout": 0.3, "threads": 1, "device": "cpu", "predict_batch": 16384,  # fits in cache
        "precision": "fp32"}
_UNET = {"epochs": 50, "batch_size": 8, "lr": 1e-3, "weight_decay": 1e-4, "channels": 32,
         "threads": 1, "device": "cpu", "predict_batch": 8}
_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("logistic", "classification"): {"C": 1.0, "max_iter": 5000, "predict_batch": 65536},
    ("logistic", "regression"): {"alpha": 1.0, "predict_batch": 65536},
    ("random_forest", "classification"): {**_FOREST, "max_features": "sqrt"},
    ("random_forest", "regression"): {**_FOREST, "max_features": 1.0},
    ("knn", "classification"): _KNN, ("knn", "regression"): _KNN,
    ("gbm", "classification"): _GBM, ("gbm", "regression"): _GBM,
    ("mlp", "classification"): _MLP, ("mlp", "regression"): _MLP,
    ("unet", "classification"): _UNET, ("unet", "regression"): _UNET,
}


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


_POS_INT = (lambda v: _is_int(v) and v >= 1, "a positive integer")
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "C": (lambda v: _is_real(v) and v > 0, "a number > 0"),
    "lr": (lambda v: _is_real(v) and v > 0, "a number > 0"),
    "learning_rate": (lambda v: _is_real(v) and v > 0, "a number > 0"),
    "alpha": (lambda v: _is_real(v) and v >= 0, "a number >= 0"),
    "weight_decay": (lambda v: _is_real(v) and v >= 0, "a number >= 0"),
    "l2_regularization": (lambda v: _is_real(v) and v >= 0, "a number >= 0"),
    "dropout": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "max_iter": _POS_INT, "n_estimators": _POS_INT, "n_neighbors": _POS_INT, "epochs": _POS_INT,
    "batch_size": _POS_INT, "predict_batch": _POS_INT, "min_samples_leaf": _POS_INT,
    "channels": _POS_INT, "threads": _POS_INT,
    "precision": (lambda v: v in ("fp32", "bf16"), '"fp32" (exact) or "bf16" (inference in '
                  'bfloat16: about 4x faster on CPUs with AVX512-BF16, probabilities to ~3 '
                  'digits)'),
    "max_leaf_nodes": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    "max_depth": (lambda v: v is None or (_is_int(v) and v >= 1), "None or a positive integer"),
    "max_features": (lambda v: v in ("sqrt", "log2") or (_is_int(v) and v >= 1)
                     or (_is_real(v) and 0 < v <= 1), '"sqrt", "log2", an integer >= 1 or a '
                     'fraction in (0, 1]'),
    "n_jobs": (lambda v: _is_int(v) and v != 0, "a non-zero integer (-1: all cores)"),
    "weights": (lambda v: v in ("uniform", "distance"), '"uniform" or "distance"'),
    "metric": (lambda v: v in ("euclidean", "manhattan", "cosine"),
               '"euclidean", "manhattan" or "cosine"'),
    "hidden": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0
               and all(_is_int(h) and h >= 1 for h in v), "a non-empty list of positive integers"),
    "device": (lambda v: isinstance(v, str) and v.split(":")[0] in ("cpu", "cuda", "mps"),
               '"cpu", "cuda", "cuda:N" or "mps"'),
}


def default_params(kind: str, task: str = "classification") -> dict[str, Any]:
    """The hyper-parameters of a kind and task with their defaults."""
    _check_kind_task(kind, task)
    return json.loads(json.dumps(_DEFAULTS[(kind, task)]))


def _jsonable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if _is_int(v):
        return int(v)
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return float(v)
    return v


def _check_kind_task(kind: str, task: str) -> None:
    if kind not in HEAD_KINDS:
        raise HeadError(f"head kind {kind!r}: expected one of {', '.join(HEAD_KINDS)}")
    if task not in TASKS:
        raise HeadError(f"head task {task!r}: expected one of {', '.join(TASKS)}")


def _check_params(kind: str, task: str, params: Mapping[str, Any]) -> dict[str, Any]:
    defaults = _DEFAULTS[(kind, task)]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise HeadError(f"{kind} {task} head: unknown parameter(s) {', '.join(unknown)}; "
                        f"expected {', '.join(sorted(defaults))}")
    out = dict(defaults)
    for name, value in params.items():
        ok, expected = _RULES[name]
        if not ok(value):
            raise HeadError(f"{kind} head: parameter {name}={value!r}: expected {expected}")
        out[name] = _jsonable(value)
    return json.loads(json.dumps(out))


# --- the training data -------------------------------------------------------------------------

def fingerprint(X: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> str:
    """sha256 hex of training data: the shapes, the float32 bytes of X, y (int64 class indices
    or float32 targets) and the class names. Equal data gives equal fingerprints."""
    x = np.ascontiguousarray(X, dtype=np.float32)
    t = np.asarray(y)
    t = np.ascontiguousarray(t, dtype=np.int64 if t.dtype.kind in "iub" else np.float32)
    h = hashlib.sha256()
    h.update(json.dumps({"x": list(x.shape), "y": list(t.shape), "y_dtype": t.dtype.str,
                         "classes": [str(c) for c in classes]}).encode())
    flat = x.reshape(-1)
    step = 1 << 24
    for i in range(0, flat.size, step):
        h.update(flat[i:i + step].data)
    h.update(t.tobytes())
    return h.hexdigest()


#: Kinds whose estimators take NaN as a missing value (scikit-learn's forests >= 1.4 and
#: histogram gradient boosting): raw time-series baselines with gaps need no filling for them.
NAN_NATIVE = ("random_forest", "gbm")


def check_finite_rows(x: np.ndarray, name: str, what: str = "rows") -> None:
    """HeadError when rows of `x` (first axis) hold NaN or inf values (checked in chunks)."""
    bad: list[np.ndarray] = []
    step = max(1, (1 << 22) // max(1, int(np.prod(x.shape[1:]))))
    for i in range(0, len(x), step):
        part = x[i:i + step].reshape(min(step, len(x) - i), -1)
        rows = np.flatnonzero(~np.isfinite(part).all(axis=1))
        if rows.size:
            bad.append(rows + i)
    if bad:
        rows = np.concatenate(bad)
        raise HeadError(f"{name}: {rows.size} of {len(x)} {what} hold NaN or inf values (first: "
                        f"{what[:-1]} {int(rows[0])}); drop or fill them first")


def float_array(X: Any, name: str, ndim: int, shape_text: str) -> np.ndarray:
    """`X` as float32 with `ndim` dimensions (HeadError otherwise: integer codes are refused)."""
    x = np.asarray(X)
    if x.ndim != ndim:
        raise HeadError(f"{name}: expected a {ndim}-D array {shape_text}; got shape {x.shape}")
    if x.dtype.kind != "f":
        raise HeadError(f"{name}: expected float embeddings; got {x.dtype} (de-quantise int8 "
                        "codes first: codes x scale)")
    return x.astype(np.float32, copy=False)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- the heads ---------------------------------------------------------------------------------

class Head:
    """A head of any kind (see the module docstring); made by `make_head` or `Head.load`."""

    suffix: ClassVar[str] = ""

    def __init__(self, info: HeadInfo) -> None:
        self.info = info
        self.path: Path | None = None  # the file it was loaded from / saved to
        self._constant = -1            # the single training class, or -1
        self._fitted = False

    def __repr__(self) -> str:
        state = f"{self.info.n_train} samples" if self._fitted else "not fitted"
        return f"<{type(self).__name__} {self.info.kind} {self.info.task}, {state}>"

    # -- what the head is -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"({self.info.kind} head)"

    @property
    def is_classifier(self) -> bool:
        return self.info.task == "classification"

    @property
    def n_classes(self) -> int:
        return len(self.info.classes)

    @property
    def input_dims(self) -> int:
        """The embedding width the head takes (before band selection); 0 = not known yet."""
        if self.info.bands is None:
            return self.info.dims
        return int(self.info.extra.get("input_dims", 0))

    @property
    def fitted(self) -> bool:
        return self._fitted

    def check_input(self, model: str, dims: int, where: str) -> None:
        """HeadError when embeddings of `where` come from another model id or width than the
        head's training data; an unknown model id ("") on either side is allowed with a warning."""
        want = self.input_dims
        other_model = bool(self.info.model and model and model != self.info.model)
        if other_model or (want and dims != want):
            raise HeadError(f"head {self.name} was trained on embeddings of model "
                            f"{self.info.model or '(unknown)'} ({want or '?'} dims); {where} holds "
                            f"model {model or '(unknown)'} ({dims} dims)")
        if not self.info.model or not model:
            side = f"head {self.name}" if not self.info.model else where
            warnings.warn(f"the embedding model of {side} is unknown: cannot check that {where} "
                          f"comes from the model head {self.name} was trained on "
                          f"({self.info.model or 'unknown'})", UserWarning, stacklevel=2)

    # -- training and prediction on pixel arrays -------------------------------------------------

    def fit(self, X: np.ndarray, y: np.ndarray, *, progress: Progress | None = None) -> Head:
        """Train on X (N, D) float32 with finite rows and y (N,): class indices 0..C-1
        (classification) or float targets (regression). Returns the head."""
        x = self._matrix(X, fitting=True)
        t = self._targets(y, len(x), "y")
        self._start_fit(x, t)
        xs = self._select(x, axis=1)
        if self._constant < 0:
            self._fit(xs, t, progress)
        return self._end_fit(len(x))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(N,) int64 class indices, or float32 values for a regression head."""
        x = self._select(self._matrix(X), axis=1)
        if self.is_classifier:
            return self._batched(x, self._proba, self.n_classes).argmax(axis=1).astype(np.int64)
        return self._batched(x, self._values, 0).astype(np.float32)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, C) float32 class probabilities (classification heads only)."""
        self._need_classifier()
        x = self._select(self._matrix(X), axis=1)
        return self._batched(x, self._proba, self.n_classes).astype(np.float32)

    # -- files ----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the head (and its info) to one file, atomically; an existing file is replaced
        only with `overwrite=True` (ExistsError otherwise)."""
        final = Path(path)
        if not self._fitted:
            raise HeadError(f"{final}: the {self.info.kind} head is not fitted; fit it before saving")
        if final.is_dir():
            raise HeadError(f"{final}: is a folder; expected a head file name")
        if final.exists() and not overwrite:
            raise ExistsError(f"{final}: exists already; pass overwrite=True to replace it")
        data = self._to_bytes()
        with atomic_path(final, needed=len(data)) as tmp:
            tmp.write_bytes(data)
        self.path = final
        return final

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Head:
        """A head saved by `save`, of any kind, with its info."""
        p = Path(path)
        if p.is_dir():
            raise HeadError(f"{p}: is a folder; expected a head file")
        if not p.is_file():
            raise NotFoundError(f"{p}: no such head file")
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic == _SKOPS_MAGIC:
            head: Head = SklearnHead._from_skops(p)
        else:
            head = TorchHead._from_safetensors(p)
        head.path = p
        return head

    # -- the parts each kind provides -----------------------------------------------------------

    def _fit(self, x: np.ndarray, y: np.ndarray, progress: Progress | None) -> None:
        raise NotImplementedError

    def _proba_fitted(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _values(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _to_bytes(self) -> bytes:
        raise NotImplementedError

    # -- shared machinery -----------------------------------------------------------------------

    def _proba(self, x: np.ndarray) -> np.ndarray:
        if self._constant >= 0:
            out = np.zeros((len(x), self.n_classes), np.float32)
            out[:, self._constant] = 1.0
            return out
        return self._proba_fitted(x)

    def _need_fitted(self) -> None:
        if not self._fitted:
            raise HeadError(f"the {self.info.kind} head {self.name} is not fitted; call fit first")

    def _need_classifier(self) -> None:
        if not self.is_classifier:
            raise HeadError(f"{self.info.kind} head {self.name} is a regression head: no class "
                            "probabilities; use predict")

    def _matrix(self, X: Any, fitting: bool = False) -> np.ndarray:
        """X as a float32 (N, D) array with finite rows of the head's width."""
        if not fitting:
            self._need_fitted()
        want = 0 if fitting and self.info.bands is not None else self.input_dims
        x = float_array(X, "X", 2, f"(pixels, {want or 'dims'}) of embeddings")
        self._check_width(x.shape[1], want, "X", "columns")
        if self.info.kind in NAN_NATIVE:  # NaN = a missing feature value, handled natively
            if np.isinf(x).any():
                raise HeadError(f"X: {int(np.isinf(x).any(axis=1).sum())} rows hold inf values; "
                                "expected finite values or NaN (= missing)")
        else:
            check_finite_rows(x, "X")
        return x

    def _check_width(self, width: int, want: int, name: str, what: str) -> None:
        if want and width != want:
            raise HeadError(f"{name}: {width} {what}; head {self.name} takes embeddings of "
                            f"{want} dims")
        bands = self.info.bands
        if bands is not None and max(bands) >= width:
            raise HeadError(f"{name}: {width} {what}; head {self.name} uses embedding dimension "
                            f"{max(bands)} (bands)")

    def _select(self, x: np.ndarray, axis: int) -> np.ndarray:
        if self.info.bands is None:
            return x
        return np.take(x, self.info.bands, axis=axis)

    def _targets(self, y: Any, n: int, name: str, ignore: bool = False) -> np.ndarray:
        """y as int64 class indices or float32 targets; with `ignore`, -1 / NaN mark pixels
        without a label."""
        t = np.asarray(y)
        if t.shape[:1] != (n,):
            raise HeadError(f"{name}: expected {n} labels (one per row of X); got shape {t.shape}")
        if n == 0:
            raise HeadError(f"{name}: no training samples")
        if self.is_classifier:
            if t.dtype.kind == "f":
                if not np.all((t == np.round(t)) | (ignore & np.isnan(t))):
                    raise HeadError(f"{name}: expected class indices 0..C-1; got non-integer "
                                    "values (a regression target? use task='regression')")
                t = np.where(np.isnan(t), -1, t)
            elif t.dtype.kind not in "iub":
                raise HeadError(f"{name}: expected integer class indices 0..C-1; got {t.dtype} "
                                "(map class names to indices and pass the names as classes=)")
            t = t.astype(np.int64)
            low = -1 if ignore else 0
            if t.size and t.min() < low:
                raise HeadError(f"{name}: class index {int(t.min())}; expected indices >= 0"
                                + (" (-1 = no label)" if ignore else ""))
            if self.info.classes and t.size and t.max() >= self.n_classes:
                raise HeadError(f"{name}: class index {int(t.max())}; the head has "
                                f"{self.n_classes} classes ({', '.join(self.info.classes)})")
            return t
        if t.dtype.kind not in "iuf":
            raise HeadError(f"{name}: expected float targets for a regression head; got {t.dtype}")
        t = t.astype(np.float32)
        if not ignore and not np.isfinite(t).all():
            raise HeadError(f"{name}: {int((~np.isfinite(t)).sum())} targets are NaN or inf; "
                            "drop those samples first")
        if ignore and np.isinf(t).any():
            raise HeadError(f"{name}: inf targets; expected finite values or NaN (= no label)")
        return t

    def _start_fit(self, x: np.ndarray, t: np.ndarray) -> None:
        """Classes, fingerprint and widths of a new fit; spots a single-class training set."""
        self._fitted = False
        valid = t[t >= 0] if self.is_classifier else t[np.isfinite(t)]
        if valid.size == 0:
            raise HeadError(f"{self.info.kind} head: the training data hold no labelled sample")
        if self.is_classifier and not self.info.classes:
            self.info.classes = [str(i) for i in range(int(valid.max()) + 1)]
        if self.info.bands is not None:
            self.info.extra["input_dims"] = int(x.shape[1])
            self.info.dims = len(self.info.bands)
        else:
            self.info.dims = int(x.shape[1])
        self.info.fingerprint = fingerprint(x, t, self.info.classes)
        self._constant = -1
        if self.is_classifier:
            present = np.unique(valid)
            if len(present) == 1:
                self._constant = int(present[0])

    def _end_fit(self, n: int) -> Head:
        self.info.n_train = int(n)
        self.info.created = _now()
        self._fitted = True
        return self

    def _batched(self, x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], width: int
                 ) -> np.ndarray:
        """fn over batches of `predict_batch` rows; no rows: (0, width), or (0,) for width 0."""
        if len(x) == 0:
            return np.zeros((0, width) if width else (0,), np.float32)
        step = int(self.info.params.get("predict_batch", 65536))
        if len(x) <= step:
            return fn(x)
        return np.concatenate([fn(x[i:i + step]) for i in range(0, len(x), step)])


# --- scikit-learn heads ------------------------------------------------------------------------

def _sklearn_estimator(kind: str, task: str, p: Mapping[str, Any], n_train: int) -> Any:
    require("sklearn", "eval", f"the {kind} head")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cls = task == "classification"
    seed = int(p["seed"])
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression, Ridge

        last = (LogisticRegression(C=p["C"], max_iter=p["max_iter"], random_state=seed) if cls
                else Ridge(alpha=p["alpha"]))
        return make_pipeline(StandardScaler(), last)
    if kind == "random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        forest = RandomForestClassifier if cls else RandomForestRegressor
        return forest(n_estimators=p["n_estimators"], max_depth=p["max_depth"],
                      min_samples_leaf=p["min_samples_leaf"], max_features=p["max_features"],
                      n_jobs=p["n_jobs"], random_state=seed)
    if kind == "knn":
        from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

        knn = KNeighborsClassifier if cls else KNeighborsRegressor
        return knn(n_neighbors=min(int(p["n_neighbors"]), n_train), weights=p["weights"],
                   metric=p["metric"])
    if kind == "gbm":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        gbm = HistGradientBoostingClassifier if cls else HistGradientBoostingRegressor
        return gbm(max_iter=p["max_iter"], learning_rate=p["learning_rate"],
                   max_leaf_nodes=p["max_leaf_nodes"], l2_regularization=p["l2_regularization"],
                   early_stopping=False, random_state=seed)
    raise HeadError(f"head kind {kind!r}: not a scikit-learn kind")


class SklearnHead(Head):
    """The scikit-learn kinds: logistic, random_forest, knn, gbm."""

    suffix: ClassVar[str] = ".skops"

    def __init__(self, info: HeadInfo) -> None:
        super().__init__(info)
        self.estimator: Any = None

    def _fit(self, x: np.ndarray, y: np.ndarray, progress: Progress | None) -> None:
        bar = task(progress, f"fitting the {self.info.kind} head", total=1)
        est = _sklearn_estimator(self.info.kind, self.info.task, self.info.params, len(x))
        est.fit(x, y)
        self.estimator = est
        bar.advance(1)

    def _end_fit(self, n: int) -> Head:
        if self._constant >= 0:
            self.estimator = None
        return super()._end_fit(n)

    def _proba_fitted(self, x: np.ndarray) -> np.ndarray:
        p = self.estimator.predict_proba(x)
        out = np.zeros((len(x), self.n_classes), np.float32)
        out[:, np.asarray(self.estimator.classes_, dtype=np.int64)] = p
        return out

    def _values(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(x), dtype=np.float32)

    def _to_bytes(self) -> bytes:
        require("skops", "eval", "saving a scikit-learn head")
        import skops.io as sio

        return sio.dumps({"format": FORMAT, "version": FORMAT_VERSION,
                          "info": self.info.to_json(), "constant": int(self._constant),
                          "estimator": self.estimator})

    @staticmethod
    def _from_skops(p: Path) -> SklearnHead:
        require("skops", "eval", "loading a scikit-learn head")
        import skops.io as sio

        try:
            data = p.read_bytes()
            types = sio.get_untrusted_types(data=data)
        except Exception as exc:
            raise HeadError(f"{p}: not a readable head file ({error_text(exc)})") from None
        foreign = sorted(set(types) - set(TRUSTED_TYPES))
        if foreign:
            raise HeadError(f"{p}: holds types a head never holds ({', '.join(foreign)}); "
                            "not loaded")
        try:
            obj = sio.loads(data, trusted=list(types))
        except Exception as exc:
            raise HeadError(f"{p}: not a readable head file ({error_text(exc)})") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise HeadError(f"{p}: a skops file, but not a tessera head (no format "
                            f"{FORMAT!r})")
        if obj.get("version") != FORMAT_VERSION:
            raise HeadError(f"{p}: head file version {obj.get('version')!r}; this tessera reads "
                            f"version {FORMAT_VERSION}")
        info = HeadInfo.from_json(str(obj.get("info")), str(p))
        if info.kind not in SKLEARN_KINDS:
            raise HeadError(f"{p}: a skops file holding a {info.kind} head; expected one of "
                            f"{', '.join(SKLEARN_KINDS)}")
        head = SklearnHead(info)
        constant, est = obj.get("constant"), obj.get("estimator")
        if not isinstance(constant, int):
            raise HeadError(f"{p}: head field 'constant' is not an integer")
        head._constant = constant
        want = _ESTIMATORS[(info.kind, info.task)]
        if constant < 0 and type(est).__name__ != want:
            raise HeadError(f"{p}: holds a {type(est).__name__}; a {info.kind} {info.task} head "
                            f"holds a {want}")
        if info.task == "classification" and not -1 <= constant < len(info.classes):
            raise HeadError(f"{p}: head field 'constant' = {constant} is not a class index")
        head.estimator = est
        head._fitted = True
        return head


# --- torch heads -------------------------------------------------------------------------------

@contextlib.contextmanager
def torch_session(threads: int, seed: int | None = None) -> Iterator[None]:
    """`threads` torch CPU threads and (with `seed`) a seeded torch RNG inside the block; the
    caller's thread count and RNG state are restored after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            yield
    finally:
        torch.set_num_threads(old)


def torch_device(name: str) -> torch.device:
    """The device `name`, or the CPU (with a warning) where it is not available."""
    import torch

    ok = (name == "cpu" or (name.startswith("cuda") and torch.cuda.is_available())
          or (name == "mps" and torch.backends.mps.is_available()))
    if not ok:
        warnings.warn(f"head device {name!r} is not available here; using the CPU",
                      UserWarning, stacklevel=3)
        name = "cpu"
    return torch.device(name)


def batches(n: int, size: int, order: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Index batches of `size` over `n` items (in `order`); a last batch of one item is merged
    into the one before (BatchNorm cannot train on a single value)."""
    import torch

    idx = order if order is not None else torch.arange(n)
    out = list(torch.split(idx, size))
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2] = torch.cat([out[-2], out[-1]])
        out.pop()
    return out


def standardiser(x: np.ndarray, axis: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 over `axis`, a std of 0 replaced by 1."""
    mean = x.mean(axis=axis, dtype=np.float64)
    std = x.std(axis=axis, dtype=np.float64)
    std[~(std > 1e-12)] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


class TorchHead(Head):
    """The torch kinds; a subclass builds the network (`_network`)."""

    suffix: ClassVar[str] = ".safetensors"

    def __init__(self, info: HeadInfo) -> None:
        super().__init__(info)
        require("torch", "eval", f"the {info.kind} head")
        self.net: torch.nn.Module | None = None
        self.stats: dict[str, np.ndarray] = {}   # x_mean, x_std (, y_mean, y_std)

    @property
    def n_out(self) -> int:
        return self.n_classes if self.is_classifier else 1

    def _network(self) -> torch.nn.Module:
        raise NotImplementedError

    def _end_fit(self, n: int) -> Head:
        if self._constant >= 0:
            self.net, self.stats = None, {}
        return super()._end_fit(n)

    def _device(self) -> torch.device:
        return torch_device(str(self.info.params.get("device", "cpu")))

    def _train(self, xt: Any, yt: Any, n: int,
               loss_of: Callable[[Any, Any], tuple[Any, int]],
               progress: Progress | None) -> torch.nn.Module:
        """A new network (`_network`) trained with AdamW for `epochs` over seeded shuffled
        batches of the `n` samples of `xt` / `yt` (tensors on the head's device);
        `loss_of(out, target)` gives a batch's mean loss and the number of targets it averages
        (the progress bar shows the mean over the epoch's targets). Returns it in eval mode."""
        import torch

        p = self.info.params
        dev = self._device()
        epochs, size = int(p["epochs"]), int(p["batch_size"])
        n_batches = len(batches(n, size))
        bar = task(progress, f"training the {self.info.kind} head", total=epochs * n_batches,
                   unit="batch")
        with torch_session(self._threads(), int(p["seed"])):
            net = self._network().to(dev)
            gen = torch.Generator().manual_seed(int(p["seed"]))
            opt = torch.optim.AdamW(net.parameters(), lr=float(p["lr"]),
                                    weight_decay=float(p["weight_decay"]))
            net.train()
            for epoch in range(epochs):
                total, seen = 0.0, 0
                for idx in batches(n, size, torch.randperm(n, generator=gen)):
                    idx = idx.to(dev)
                    loss, count = loss_of(net(xt[idx]), yt[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * int(count)
                    seen += int(count)
                    bar.advance(1, f"epoch {epoch + 1}/{epochs} loss {total / max(seen, 1):.4f}")
            net.eval()
        return net

    def _threads(self) -> int:
        return int(self.info.params.get("threads", 1))

    def _target_stats(self, t: np.ndarray) -> None:
        if not self.is_classifier:
            valid = t[np.isfinite(t)].astype(np.float64)
            std = float(valid.std())
            self.stats["y_mean"] = np.array([valid.mean()], np.float32)
            self.stats["y_std"] = np.array([std if std > 1e-12 else 1.0], np.float32)

    def _unscale(self, v: np.ndarray) -> np.ndarray:
        return (v * self.stats["y_std"][0] + self.stats["y_mean"][0]).astype(np.float32)

    def _to_bytes(self) -> bytes:
        import safetensors.torch as st
        import torch

        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.stats.items()}
        if self.net is not None:
            for k, v in self.net.state_dict().items():
                tensors[f"net.{k}"] = v.detach().cpu().contiguous()
        meta = {"format": FORMAT, "version": str(FORMAT_VERSION), "info": self.info.to_json(),
                "constant": str(self._constant)}
        return st.save(tensors, meta)

    @staticmethod
    def _from_safetensors(p: Path) -> TorchHead:
        require("safetensors", "eval", "loading a torch head")
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise HeadError(f"{p}: not a readable head file (neither skops nor safetensors: "
                            f"{error_text(exc)})") from None
        if meta.get("format") != FORMAT:
            raise HeadError(f"{p}: a safetensors file, but not a tessera head (no format "
                            f"{FORMAT!r} in its metadata)")
        if meta.get("version") != str(FORMAT_VERSION):
            raise HeadError(f"{p}: head file version {meta.get('version')!r}; this tessera reads "
                            f"version {FORMAT_VERSION}")
        info = HeadInfo.from_json(meta.get("info", ""), str(p))
        if info.kind not in TORCH_KINDS:
            raise HeadError(f"{p}: a safetensors file holding a {info.kind} head; expected one "
                            f"of {', '.join(TORCH_KINDS)}")
        head: TorchHead
        if info.kind == "mlp":
            head = MLPHead(info)
        else:
            from tessera.downstream.unet import UNetHead

            head = UNetHead(info)
        try:
            head._constant = int(meta.get("constant", ""))
        except ValueError:
            raise HeadError(f"{p}: head metadata 'constant' is not an integer") from None
        try:
            head.stats = {k: tensors[k].numpy() for k in ("x_mean", "x_std", "y_mean", "y_std")
                          if k in tensors}
            if head._constant < 0:
                if "x_mean" not in head.stats or "x_std" not in head.stats or (
                        not head.is_classifier and "y_mean" not in head.stats):
                    raise HeadError(f"{p}: the head's standardisation tensors are missing")
                net = head._network()
                state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
                net.load_state_dict(state, strict=True)
                net.eval()
                head.net = net
        except HeadError:
            raise
        except Exception as exc:
            raise HeadError(f"{p}: the weights do not fit a {info.kind} head of {info.dims} dims "
                            f"and {head.n_out} outputs ({error_text(exc)})") from None
        head._fitted = True
        return head


class MLPHead(TorchHead):
    """A pixel MLP: D -> hidden... -> C (Linear, BatchNorm1d, ReLU, Dropout), AdamW."""

    _fused_key: tuple[int, bool] | None = None  # the weights the inference network was made of
    _fused_net: Any = None
    _fused_bf16: Any = None  # (the key of the weights, a bfloat16 copy of the fused network)

    def _network(self) -> torch.nn.Module:
        from torch import nn

        p = self.info.params
        layers: list[nn.Module] = []
        width = self.info.dims
        for h in p["hidden"]:
            layers += [nn.Linear(width, int(h)), nn.BatchNorm1d(int(h)), nn.ReLU(),
                       nn.Dropout(float(p["dropout"]))]
            width = int(h)
        layers.append(nn.Linear(width, self.n_out))
        return nn.Sequential(*layers)

    def _fit(self, x: np.ndarray, y: np.ndarray, progress: Progress | None) -> None:
        self._fused_key = None  # new weights: the inference network is rebuilt
        import torch

        if len(x) < 2:
            raise HeadError("mlp head: needs at least 2 training samples")
        mean, std = standardiser(x, (0,))
        self.stats = {"x_mean": mean, "x_std": std}
        self._target_stats(y)
        dev = self._device()
        xt = torch.from_numpy((x - mean) / std).to(dev)
        if self.is_classifier:
            yt = torch.from_numpy(y).to(dev)
        else:
            yt = torch.from_numpy((y - self.stats["y_mean"]) / self.stats["y_std"]).to(dev)
        def loss_of(out: Any, target: Any) -> tuple[Any, int]:
            if self.is_classifier:
                return torch.nn.functional.cross_entropy(out, target), len(target)
            return torch.nn.functional.mse_loss(out[:, 0], target), len(target)

        self.net = self._train(xt, yt, len(x), loss_of, progress)

    def _fused(self) -> torch.nn.Module:
        """The trained network for inference with the input standardisation and each eval-mode
        BatchNorm folded into its Linear layer (dropout is the identity): three matrix products
        and two ReLUs per pixel, no elementwise passes over the wide activations. Built once
        per set of weights."""
        import torch
        from torch import nn

        assert self.net is not None
        key = id(self.net), self.net.training
        if getattr(self, "_fused_key", None) == key and self._fused_net is not None:
            return self._fused_net
        mods = list(self.net.children())
        mean = torch.from_numpy(np.asarray(self.stats["x_mean"], np.float32)).double()
        std = torch.from_numpy(np.asarray(self.stats["x_std"], np.float32)).double()
        w_in, b_in = 1.0 / std, -mean / std  # x' = x * w_in + b_in
        layers: list[nn.Module] = []
        i = 0
        with torch.no_grad():
            while i < len(mods):
                lin = mods[i]
                assert isinstance(lin, nn.Linear)
                w = lin.weight.double() * w_in[None, :]
                b = lin.bias.double() + lin.weight.double() @ b_in
                i += 1
                if i < len(mods) and isinstance(mods[i], nn.BatchNorm1d):
                    bn: Any = mods[i]
                    a = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
                    w, b = a[:, None] * w, a * (b - bn.running_mean.double()) + bn.bias.double()
                    i += 1
                fused = nn.Linear(w.shape[1], w.shape[0])
                fused.weight.copy_(w.float())
                fused.bias.copy_(b.float())
                layers.append(fused)
                w_in = torch.ones(w.shape[0], dtype=torch.float64)
                b_in = torch.zeros(w.shape[0], dtype=torch.float64)
                while i < len(mods) and not isinstance(mods[i], nn.Linear):
                    if isinstance(mods[i], nn.ReLU):
                        layers.append(nn.ReLU(inplace=True))
                    i += 1  # Dropout: the identity in inference
        self._fused_net = nn.Sequential(*layers).eval()
        self._fused_key = key
        return self._fused_net

    def _run(self, x: np.ndarray) -> np.ndarray:
        import torch

        assert self.net is not None
        dev = self._device()
        self.net.to(dev)
        net = self._fused().to(dev)
        bf16 = self.info.params.get("precision", "fp32") == "bf16"
        with torch_session(self._threads()), torch.inference_mode():
            xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dev)
            if bf16:
                if self._fused_bf16 is None or self._fused_bf16[0] != self._fused_key:
                    import copy
                    self._fused_bf16 = (self._fused_key, copy.deepcopy(net).to(torch.bfloat16))
                out = self._fused_bf16[1](xt.to(torch.bfloat16)).float()
            else:
                out = net(xt)
            if self.is_classifier:
                out = torch.softmax(out, dim=1)
            return out.cpu().numpy()

    def _proba_fitted(self, x: np.ndarray) -> np.ndarray:
        return self._run(x).astype(np.float32)

    def _values(self, x: np.ndarray) -> np.ndarray:
        return self._unscale(self._run(x)[:, 0])


# --- making heads ------------------------------------------------------------------------------

def make_head(kind: str, task: str = "classification", *, classes: Sequence[str] = (),
              seed: int = 0, model: str = "", dims: int | None = None,
              bands: Sequence[int] | None = None, **params: Any) -> Head:
    """A new, unfitted head of `kind` for `task`.

    classes: class names in index order (classification; derived from y at fit when empty);
    seed: the random seed (stored in `params`); model: the embedding model id of the training
    embeddings ("" = unknown); dims: the embedding width the head takes after band selection
    (None = taken from the training data); bands: the embedding dimensions to use (None = all);
    params: the kind's hyper-parameters (`default_params`)."""
    _check_kind_task(kind, task)
    names = [str(c) for c in classes]
    if task == "regression" and names:
        raise HeadError(f"{kind} regression head: classes={names[:3]}...: a regression head has "
                        "no classes")
    if len(set(names)) != len(names):
        raise HeadError(f"{kind} head: classes hold duplicate names ({', '.join(names)})")
    if not _is_int(seed):
        raise HeadError(f"{kind} head: seed={seed!r}: expected an integer")
    if not isinstance(model, str):
        raise HeadError(f"{kind} head: model={model!r}: expected an embedding model id (text)")
    band_list: list[int] | None = None
    if bands is not None:
        band_list = [int(b) for b in bands] if all(_is_int(b) for b in bands) else []
        if not band_list or min(band_list) < 0 or len(set(band_list)) != len(band_list):
            raise HeadError(f"{kind} head: bands={list(bands)!r}: expected distinct embedding "
                            "dimensions >= 0")
    if dims is not None:
        if not _is_int(dims) or dims < 1:
            raise HeadError(f"{kind} head: dims={dims!r}: expected a positive integer")
        if band_list is not None and dims != len(band_list):
            raise HeadError(f"{kind} head: dims={dims} but {len(band_list)} bands; dims is the "
                            "width after band selection")
    p = _check_params(kind, task, params)
    p["seed"] = int(seed)
    info = HeadInfo(kind=kind, task=task, model=model,
                    dims=int(dims) if dims is not None else (len(band_list) if band_list else 0),
                    bands=band_list, classes=names, fingerprint="", params=p, n_train=0,
                    created="", extra={})
    if kind in SKLEARN_KINDS:
        return SklearnHead(info)
    if kind == "mlp":
        return MLPHead(info)
    from tessera.downstream.unet import UNetHead

    return UNetHead(info)


__all__ = ["FORMAT", "HEAD_KINDS", "SKLEARN_KINDS", "TASKS", "TORCH_KINDS", "TRUSTED_TYPES",
           "Head", "HeadInfo", "MLPHead", "SklearnHead", "TorchHead", "default_params",
           "fingerprint", "make_head"]
