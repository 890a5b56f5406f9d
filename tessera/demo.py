"""The bundled demo: simulate a tile -> embed it with the shipped weights -> PCA false-colour
PNG -> a small head trained on 1 % of the labels -> accuracy and a class map.

Runs on the SIMULATED scene of `tessera.simulate`, with shipped weights when there are any and a
seeded random initialisation otherwise (and says so). The head is a logistic regression on the
standardised embeddings, trained on a stratified 1 % of the labelled pixels and scored on all
the others, next to the majority-class baseline.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tessera.quantize import dequantize


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


def write_png(path: Path, rgb: np.ndarray) -> None:
    """A plain (not georeferenced) RGB PNG."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=rgb.shape[1], height=rgb.shape[0],
                           count=3, dtype="uint8") as dst:
            dst.write(np.moveaxis(rgb, -1, 0))


def head_training_pixels(labels: np.ndarray, usable: np.ndarray, fraction: float, seed: int
                         ) -> np.ndarray:
    """Flat indices of a stratified `fraction` of the usable labelled pixels: per class
    max(1, round(fraction x count)) pixels, drawn with a seeded generator."""
    flat, ok = labels.reshape(-1), usable.reshape(-1) & (labels.reshape(-1) > 0)
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(flat[ok]):
        idx = np.flatnonzero(ok & (flat == c))
        k = max(1, int(round(fraction * len(idx))))
        picked.append(rng.choice(idx, k, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def write_class_map(path: Path, classes: np.ndarray, names: dict[int, str], title: str) -> None:
    """Categorical class map with a legend (0 = no prediction, white)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = plt.get_cmap("tab10").colors
    cmap = ListedColormap([(1, 1, 1)] + [colours[(i - 1) % 10] for i in range(1, max(names) + 1)])
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.imshow(classes, cmap=cmap, vmin=0, vmax=max(names), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    present = sorted(int(c) for c in np.unique(classes) if c > 0)
    ax.legend(handles=[Patch(color=cmap(c), label=names[c]) for c in present],
              loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_head(emb: np.ndarray, labels: np.ndarray, usable: np.ndarray, fraction: float,
               seed: int) -> dict:
    """Fit the 1 % head and score it on every other usable labelled pixel."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    h, w, d = emb.shape
    flat = emb.reshape(-1, d)
    y = labels.reshape(-1)
    train = head_training_pixels(labels, usable, fraction, seed)
    test = np.setdiff1d(np.flatnonzero(usable.reshape(-1) & (y > 0)), train)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    clf.fit(flat[train], y[train])
    pred = np.zeros(h * w, np.uint8)
    ok = np.flatnonzero(usable.reshape(-1))
    pred[ok] = clf.predict(flat[ok])
    majority = np.bincount(y[train]).argmax()
    return {"pred": pred.reshape(h, w), "train": train, "test": test,
            "accuracy": float(accuracy_score(y[test], pred[test])),
            "macro_f1": float(f1_score(y[test], pred[test], average="macro", zero_division=0)),
            "majority_accuracy": float(np.mean(y[test] == majority))}


def run_demo(out_dir: str | Path, size: int = 256, seed: int = 0, log=print,
             progress: bool = True, fraction: float = 0.01) -> dict:
    from tessera.infer import RANDOM_INIT_WARNING, Embedder, embed_tile, resolve_model
    from tessera.simulate import SimConfig, simulate_tile

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tile = simulate_tile(out_dir / "tile", SimConfig(height=size, width=size, seed=seed))
    log(f"1/5 simulated a {size} x {size} px tile (SIMULATED data) -> {tile}")
    model, meta = resolve_model(seed=seed)
    if meta.get("random_init"):
        log(f"WARNING: {RANDOM_INIT_WARNING}")
    out = embed_tile(Embedder(model), tile, out_dir / "embeddings", name="demo", geotiff="float32",
                     meta=meta, progress=progress)
    log(f"2/5 embedded {out.n_pixels} pixels with preset {meta.get('preset')} -> "
        f"{out.embeddings}, {out.scales.name}, {out.geotiffs[0].name}")
    scales = np.load(out.scales)
    emb = dequantize(np.load(out.embeddings, mmap_mode="r"), scales)
    png = out_dir / "demo_pca.png"
    write_png(png, pca_rgb(emb, np.isfinite(scales)))
    log(f"3/5 PCA false-colour image -> {png}")

    import json

    import rasterio

    from tessera.simulate import CLASSES
    labels = np.load(Path(tile) / "labels.npy")
    usable = np.isfinite(scales)
    head = train_head(emb, labels, usable, fraction, seed)
    weights = "RANDOM-INIT weights" if meta.get("random_init") else f"preset {meta.get('preset')}"
    log(f"4/5 head (logistic regression) trained on {len(head['train'])} labelled pixels "
        f"({fraction:.0%}); on the other {len(head['test'])}: accuracy {head['accuracy']:.3f}, "
        f"macro F1 {head['macro_f1']:.3f} (majority-class baseline {head['majority_accuracy']:.3f})"
        f" [SIMULATED data, {weights}]")
    class_png = out_dir / "demo_classes.png"
    write_class_map(class_png, head["pred"], CLASSES,
                    f"SIMULATED tile: classes from a head on {fraction:.0%} of labels, "
                    f"accuracy {head['accuracy']:.3f}")
    class_tif = out_dir / "demo_classes.tif"
    with rasterio.open(out.geotiffs[0]) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1,
                   "dtype": "uint8", "crs": src.crs, "transform": src.transform, "nodata": 0,
                   "compress": "deflate"}
    with rasterio.open(class_tif, "w", **profile) as dst:
        dst.write(head["pred"], 1)
        dst.update_tags(classes=json.dumps(CLASSES), simulated="true")
    seconds = time.perf_counter() - t0
    summary = {"simulated": True, "size": size, "seed": seed, "preset": meta.get("preset"),
               "random_init": bool(meta.get("random_init")), "label_fraction": fraction,
               "n_train": int(len(head["train"])), "n_test": int(len(head["test"])),
               "accuracy": head["accuracy"], "macro_f1": head["macro_f1"],
               "majority_accuracy": head["majority_accuracy"], "seconds": seconds}
    (out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    log(f"5/5 class map -> {class_png}, {class_tif.name}; summary -> demo_summary.json")
    log(f"done in {seconds:.1f} s")
    return {"tile": tile, "outputs": out, "png": png, "seconds": seconds, "meta": meta,
            "class_png": class_png, "class_tif": class_tif, "summary": summary,
            "pred": head["pred"]}
