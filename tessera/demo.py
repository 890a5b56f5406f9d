"""The bundled demo: simulate a tile -> embed it with the shipped weights -> PCA false-colour
PNG -> a small head trained on 1 % of the labels -> accuracy and a class map.

Runs on the SIMULATED scene of `tessera.simulate` (its per-pixel class labels are the tile's
``labels.npy``, ids of `tessera.simulate.CLASSES`), with the shipped weights when there are any
and a seeded random initialisation otherwise (and says so). The head is a logistic regression on
the standardised, dequantised embeddings, trained on a stratified 1 % of the labelled pixels and
scored on all the others, next to the majority-class baseline.

Outputs in ``OUT_DIR``: ``tile/`` (the SIMULATED tile), ``embeddings/`` (int8 embeddings, scales,
flags and a float32 GeoTIFF), ``demo_pca.png``, ``demo_classes.png`` (SIMULATED labels next to
the predicted classes), ``demo_classes.tif`` (uint8 class ids, 0 = no prediction, in the CRS and
transform of the embedding GeoTIFF) and ``demo_summary.json``.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from tessera.atomic import write_text
from tessera.errors import InputError
from tessera.progress import Progress, task
from tessera.quantize import dequantize

#: Colours of the class map (and of the GeoTIFF's colour table), by class id of
#: `tessera.simulate.CLASSES`; ids without an entry fall back to matplotlib's tab20.
CLASS_COLOURS: dict[int, str] = {
    1: "#e6b422",  # winter_wheat: gold
    2: "#b8a26a",  # winter_barley: khaki
    3: "#f07f13",  # maize: orange
    4: "#f5ef42",  # rapeseed: yellow
    5: "#9b4f96",  # sugar_beet: purple
    6: "#98df8a",  # grassland: light green
    7: "#1f6b2a",  # forest: dark green
    8: "#2b7bd6",  # water: blue
    9: "#8c564b",  # bare_soil: brown
    10: "#7f7f7f",  # urban: grey
}

SIMULATED_NOTE = "SIMULATED data (tessera.simulate), not real Sentinel-1/2 observations"


def pca_rgb(emb: np.ndarray, valid: np.ndarray, sample: int = 100_000, seed: int = 0
            ) -> np.ndarray:
    """(H, W, D) embeddings -> (H, W, 3) uint8 from the first 3 principal components, fitted on a
    reproducible sample of valid pixels and stretched to the 2-98 percentiles."""
    h, w, d = emb.shape
    flat = emb.reshape(-1, d)
    ok = np.flatnonzero(valid.reshape(-1))
    rgb = np.zeros((h * w, 3), np.uint8)
    if len(ok) < 3:
        return rgb.reshape(h, w, 3)
    rng = np.random.default_rng(seed)
    fit = flat[rng.choice(ok, min(sample, len(ok)), replace=False)].astype(np.float64)
    mean = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    comps = (flat[ok] - mean) @ vt[:3].T
    lo, hi = np.percentile(comps, [2, 98], axis=0)
    rgb[ok] = (np.clip((comps - lo) / np.where(hi > lo, hi - lo, 1), 0, 1) * 255).astype(np.uint8)
    return rgb.reshape(h, w, 3)


def head_training_pixels(labels: np.ndarray, usable: np.ndarray, fraction: float, seed: int
                         ) -> np.ndarray:
    """Sorted flat indices of a stratified `fraction` of the usable labelled pixels (label > 0):
    per class max(1, round(fraction x count)) pixels, drawn with a generator seeded by `seed`, so
    every class present gets at least one training pixel."""
    if not 0 < fraction < 1:
        raise InputError(f"label fraction {fraction}: expected a number in (0, 1)")
    flat, ok = labels.reshape(-1), usable.reshape(-1) & (labels.reshape(-1) > 0)
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(flat[ok]):
        idx = np.flatnonzero(ok & (flat == c))
        k = max(1, int(round(fraction * len(idx))))
        picked.append(rng.choice(idx, k, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def split_head_pixels(labels: np.ndarray, usable: np.ndarray, fraction: float, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) flat indices: the stratified training `fraction` of `head_training_pixels`
    and every other usable labelled pixel; disjoint, and together all usable labelled pixels."""
    train = head_training_pixels(labels, usable, fraction, seed)
    labelled = np.flatnonzero(usable.reshape(-1) & (labels.reshape(-1) > 0))
    return train, np.setdiff1d(labelled, train, assume_unique=True)


def train_head(emb: np.ndarray, labels: np.ndarray, usable: np.ndarray, fraction: float,
               seed: int) -> dict:
    """Fit the head (standardise + logistic regression, seeded) on the training split, predict
    every usable pixel and score the predictions on the test split."""
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    h, w, d = emb.shape
    flat = emb.reshape(-1, d)
    y = labels.reshape(-1)
    train, test = split_head_pixels(labels, usable, fraction, seed)
    if len(test) == 0:
        raise InputError(f"{len(train)} labelled pixels with a valid embedding: too few for a "
                         "training and an evaluation split (use a larger --size)")
    if len(np.unique(y[train])) > 1:
        clf = make_pipeline(StandardScaler(),
                            LogisticRegression(max_iter=2000, random_state=seed))
    else:  # one class only: the head can only predict it
        clf = DummyClassifier(strategy="most_frequent")
    clf.fit(flat[train].astype(np.float32), y[train])
    pred = np.zeros(h * w, np.uint8)
    ok = np.flatnonzero(usable.reshape(-1))
    pred[ok] = clf.predict(flat[ok].astype(np.float32))
    majority = int(np.bincount(y[train]).argmax())
    classes = np.unique(y[np.concatenate([train, test])])
    f1s = f1_score(y[test], pred[test], labels=classes, average=None, zero_division=0)
    return {"pred": pred.reshape(h, w), "train": train, "test": test, "classes": classes,
            "accuracy": float(accuracy_score(y[test], pred[test])),
            "macro_f1": float(f1_score(y[test], pred[test], average="macro", zero_division=0)),
            "majority_class": majority,
            "majority_accuracy": float(np.mean(y[test] == majority)),
            "f1_per_class": {int(c): float(f) for c, f in zip(classes, f1s)}}


def _colour(cid: int) -> tuple[float, float, float]:
    import matplotlib
    from matplotlib import colors
    if cid in CLASS_COLOURS:
        return colors.to_rgb(CLASS_COLOURS[cid])
    # tab20 is a ListedColormap, but matplotlib's stubs type the registry as the base Colormap
    # (and ListedColormap.colors as any array-like)
    return tuple(matplotlib.colormaps["tab20"].colors[cid % 20])  # type: ignore[attr-defined]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_pca_png(path: Path, rgb: np.ndarray, title: str) -> None:
    """The PCA false-colour image as a titled figure (the title says SIMULATED)."""
    plt = _pyplot()
    h, w, _ = rgb.shape
    fig, ax = plt.subplots(figsize=(6, 6 * h / w + 0.6))
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_class_map(path: Path, labels: np.ndarray, pred: np.ndarray, names: dict[int, str],
                    title: str) -> None:
    """The SIMULATED labels next to the predicted classes, categorical colours, one legend
    (0 = no label / no prediction, white)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = _pyplot()
    top = max(max(names), int(labels.max(initial=0)), int(pred.max(initial=0)))
    cmap = ListedColormap([(1.0, 1.0, 1.0)] + [_colour(c) for c in range(1, top + 1)])
    h, w = pred.shape
    fig, axes = plt.subplots(1, 2, figsize=(11, 5 * h / w + 1.0))
    for ax, img, sub in ((axes[0], labels, "SIMULATED labels (truth)"),
                         (axes[1], pred, "predicted classes")):
        ax.imshow(img, cmap=cmap, vmin=-0.5, vmax=top + 0.5, interpolation="nearest")
        ax.set_title(sub, fontsize=9)
        ax.axis("off")
    present = sorted(int(c) for c in np.union1d(np.unique(labels), np.unique(pred)) if c > 0)
    fig.legend(handles=[Patch(color=_colour(c), label=names.get(c, f"class {c}"))
                        for c in present],
               loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_class_geotiff(path: Path, pred: np.ndarray, like: Path, names: dict[int, str]) -> None:
    """uint8 class ids (0 = no prediction = nodata) in the CRS and transform of the GeoTIFF
    `like`, with a colour table and the class names in the tags."""
    import rasterio

    with rasterio.open(like) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1,
                   "dtype": "uint8", "crs": src.crs, "transform": src.transform, "nodata": 0,
                   "compress": "deflate"}
    if (profile["height"], profile["width"]) != pred.shape:
        raise ValueError(f"class map {pred.shape} and {like} "
                         f"({profile['height']} x {profile['width']}) differ in shape")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pred, 1)
        dst.update_tags(classes=json.dumps({str(k): v for k, v in names.items()}),
                        simulated="true", note=SIMULATED_NOTE)
        table: dict[int, tuple[int, ...]] = {0: (255, 255, 255, 0)}
        table.update({c: tuple(int(round(255 * v)) for v in _colour(c)) + (255,)
                      for c in range(1, max(names) + 1)})
        dst.write_colormap(1, table)


@contextlib.contextmanager
def _step(progress: Progress | None, what: str) -> Iterator[None]:
    """One progress task per step of the demo, done when the step is."""
    bar = task(progress, what, total=1)
    yield
    bar.update(completed=1)


def run_demo(out_dir: str | Path, size: int = 256, seed: int = 0,
             log: Callable[[str], None] = print, progress: Progress | None = None,
             fraction: float = 0.01, random_init: bool = False) -> dict:
    """Run the demo into `out_dir` (see the module docstring); returns paths, the summary and
    the predicted class map. `random_init` ignores the shipped weights (the control run)."""
    from tessera.infer import (RANDOM_INIT_WARNING, Embedder, embed_tile, resolve_model,
                               shipped_checkpoint)
    from tessera.simulate import CLASSES, SimConfig, simulate_tile

    if size < 8:
        raise InputError(f"--size {size}: expected at least 8 pixels")
    if not 0 < fraction < 1:
        raise InputError(f"label fraction {fraction}: expected a number in (0, 1)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps: dict[str, float] = {}
    t0 = t = time.perf_counter()

    def lap(name: str) -> float:
        nonlocal t
        now = time.perf_counter()
        steps[name] = round(now - t, 3)
        t = now
        return steps[name]

    with _step(progress, f"simulating a {size} x {size} px tile"):
        tile = simulate_tile(out_dir / "tile", SimConfig(height=size, width=size, seed=seed))
    log(f"1/5 simulated a {size} x {size} px tile -> {tile}  [{SIMULATED_NOTE}] "
        f"({lap('simulate'):.1f} s)")

    model, meta = resolve_model(seed=seed, use_shipped=not random_init)
    random_init = bool(meta.get("random_init"))
    shipped = None if random_init else shipped_checkpoint()
    if random_init:
        log(f"WARNING: {RANDOM_INIT_WARNING} (preset {meta.get('preset')}, init seed {seed})")
    weights = ("RANDOM-INIT weights" if random_init
               else f"shipped weights {shipped.name if shipped else ''} "
                    f"(preset {meta.get('preset')})")
    out = embed_tile(Embedder(model), tile, out_dir / "embeddings", name="demo",
                     geotiff="float32", meta=meta, progress=progress)
    log(f"2/5 embedded {out.n_pixels} pixels with {weights} -> {out.embeddings}, "
        f"{out.scales.name}, {out.geotiffs[0].name} ({lap('embed'):.1f} s)")

    with _step(progress, "PCA false-colour image"):
        scales = np.load(out.scales)
        usable = np.isfinite(scales)
        emb = dequantize(np.load(out.embeddings, mmap_mode="r"), scales)
        png = out_dir / "demo_pca.png"
        write_pca_png(png, pca_rgb(emb, usable, seed=seed),
                      f"SIMULATED tile {size} x {size} px: embeddings' first 3 principal "
                      f"components as RGB\n{weights}")
    log(f"3/5 PCA false-colour image -> {png} ({lap('pca'):.1f} s)")

    labels = np.load(Path(tile) / "labels.npy")
    with _step(progress, f"training the head on {fraction:.0%} of the labels"):
        head = train_head(emb, labels, usable, fraction, seed)
    log(f"4/5 head (standardised logistic regression) trained on {len(head['train'])} "
        f"labelled pixels ({fraction:.0%}, stratified, seed {seed}); on the other "
        f"{len(head['test'])}: accuracy {head['accuracy']:.3f}, macro F1 "
        f"{head['macro_f1']:.3f}, majority-class baseline {head['majority_accuracy']:.3f} "
        f"[SIMULATED data, {weights}] ({lap('head'):.1f} s)")

    class_png, class_tif = out_dir / "demo_classes.png", out_dir / "demo_classes.tif"
    with _step(progress, "class map"):
        write_class_map(class_png, labels, head["pred"], CLASSES,
                        f"SIMULATED tile: head on {fraction:.0%} of the labels "
                        f"({len(head['train'])} px), {weights}\naccuracy {head['accuracy']:.3f}, "
                        f"macro F1 {head['macro_f1']:.3f} on {len(head['test'])} px (majority-"
                        f"class baseline {head['majority_accuracy']:.3f})")
        write_class_geotiff(class_tif, head["pred"], out.geotiffs[0], CLASSES)
    lap("class_map")

    y = labels.reshape(-1)
    seconds = time.perf_counter() - t0
    summary = {
        "data": SIMULATED_NOTE, "simulated": True, "size": size, "seed": seed,
        "preset": meta.get("preset"), "random_init": random_init,
        "weights": "random init" if random_init else str(shipped or "checkpoint"),
        "label_fraction": fraction,
        "metrics": {"accuracy": head["accuracy"], "macro_f1": head["macro_f1"],
                    "majority_class": CLASSES.get(head["majority_class"]),
                    "majority_accuracy": head["majority_accuracy"],
                    "f1_per_class": {CLASSES.get(c, str(c)): f
                                     for c, f in head["f1_per_class"].items()}},
        "accuracy": head["accuracy"], "macro_f1": head["macro_f1"],
        "majority_accuracy": head["majority_accuracy"],
        "pixels": {"total": int(labels.size), "embedded": int(out.n_pixels),
                   "usable": int(usable.sum()), "labelled_usable": int(len(head["train"])
                                                                       + len(head["test"])),
                   "train": int(len(head["train"])), "test": int(len(head["test"])),
                   "per_class": {CLASSES.get(int(c), str(c)):
                                 {"train": int((y[head["train"]] == c).sum()),
                                  "test": int((y[head["test"]] == c).sum())}
                                 for c in head["classes"]}},
        "n_train": int(len(head["train"])), "n_test": int(len(head["test"])),
        "seconds": round(seconds, 3), "step_seconds": steps,
        "outputs": {"pca_png": png.name, "class_png": class_png.name,
                    "class_geotiff": class_tif.name,
                    "embedding_geotiff": str(out.geotiffs[0].relative_to(out_dir))},
    }
    write_text(out_dir / "demo_summary.json", json.dumps(summary, indent=1))
    log(f"5/5 class map -> {class_png}, {class_tif.name}; summary -> "
        f"{out_dir / 'demo_summary.json'} ({steps['class_map']:.1f} s)")
    log(f"done in {seconds:.1f} s (SIMULATED data, {weights})")
    return {"tile": tile, "outputs": out, "png": png, "seconds": seconds, "meta": meta,
            "class_png": class_png, "class_tif": class_tif, "summary": summary,
            "pred": head["pred"]}
