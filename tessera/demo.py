"""The bundled demo: simulate a tile -> embed it -> PCA false-colour PNG.

Runs on the SIMULATED scene of `tessera.simulate`, with shipped weights when there are any and a
seeded random initialisation otherwise (and says so).
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


def run_demo(out_dir: str | Path, size: int = 128, seed: int = 0, log=print) -> dict:
    from tessera.infer import RANDOM_INIT_WARNING, Embedder, embed_tile, resolve_model
    from tessera.simulate import SimConfig, simulate_tile

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tile = simulate_tile(out_dir / "tile", SimConfig(height=size, width=size, seed=seed))
    log(f"1/3 simulated a {size} x {size} px tile (SIMULATED data) -> {tile}")
    model, meta = resolve_model(seed=seed)
    if meta.get("random_init"):
        log(f"WARNING: {RANDOM_INIT_WARNING}")
    out = embed_tile(Embedder(model), tile, out_dir / "embeddings", name="demo", geotiff="float32",
                     meta=meta)
    log(f"2/3 embedded {out.n_pixels} pixels with preset {meta.get('preset')} -> "
        f"{out.embeddings}, {out.scales.name}, {out.geotiffs[0].name}")
    scales = np.load(out.scales)
    emb = dequantize(np.load(out.embeddings, mmap_mode="r"), scales)
    png = out_dir / "demo_pca.png"
    write_png(png, pca_rgb(emb, np.isfinite(scales)))
    log(f"3/3 PCA false-colour image -> {png}")
    seconds = time.perf_counter() - t0
    log(f"done in {seconds:.1f} s")
    return {"tile": tile, "outputs": out, "png": png, "seconds": seconds, "meta": meta}
