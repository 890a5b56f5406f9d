"""The PCA colour model of embeddings: 3 principal components and a colour stretch, fitted
ONCE on a reproducible sample of valid pixels drawn across all the requested tiles.

Why one fit: a PCA fitted per tile gives every tile its own colours (and sign flips), so a mosaic
shows seams that are not in the data. `PcaRgb.apply` is a pure function of the embedding vector,
so the same vector gets the same colour in every tile, and the fit can be saved as JSON and
reused by a later call (`--pca-from file.json`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera.atomic import atomic_path
from tessera.errors import VizError
from tessera.quantize import dequantize
from tessera.store.manifest import TileEntry
from tessera.store.protocol import Store
from tessera.viz.tiles import TileLike, open_tile, resolve_tiles

PCA_FORMAT = "tessera-pca-rgb"
PCA_FORMAT_VERSION = 1
STRETCHES = ("percentile", "histogram")
HISTOGRAM_LEVELS = 257  # quantile breakpoints kept per component for histogram equalisation
CHUNK_PIXELS = 16384    # pixels coloured at once (about 16 MB of float64 temporaries)


@dataclasses.dataclass(eq=False)
class PcaRgb:
    """3 principal components + a colour stretch, fitted once and applied to every tile.

    `apply` maps each embedding vector on its own (no per-tile statistics), so colours agree
    across tiles, calls and machines that load the same JSON.
    """

    mean: np.ndarray                     # (D,) float64
    components: np.ndarray               # (3, D) float64, rows = R, G, B
    stretch: str = "percentile"
    lo: np.ndarray | None = None         # (3,) percentile stretch: value mapped to 0
    hi: np.ndarray | None = None         # (3,) value mapped to 255
    quantiles: np.ndarray | None = None  # (3, K) histogram stretch: the sample's CDF breakpoints
    percentiles: tuple[float, float] = (2.0, 98.0)
    explained_variance: np.ndarray | None = None
    n_sample: int = 0
    seed: int = 0
    year: int | None = None
    tiles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, np.float64)
        self.components = np.asarray(self.components, np.float64)
        d = self.mean.shape[0] if self.mean.ndim == 1 else -1
        if d < 3 or self.components.shape != (3, d):
            raise VizError(f"PCA: expected mean (D,) and components (3, D) with D >= 3, got "
                           f"{self.mean.shape} and {self.components.shape}")
        if self.stretch == "percentile":
            if self.lo is None or self.hi is None:
                raise VizError("PCA: a percentile stretch needs lo and hi (3 values each)")
            self.lo, self.hi = np.asarray(self.lo, np.float64), np.asarray(self.hi, np.float64)
            if self.lo.shape != (3,) or self.hi.shape != (3,):
                raise VizError(f"PCA: lo and hi must hold 3 values, got {self.lo.shape} and "
                               f"{self.hi.shape}")
        elif self.stretch == "histogram":
            if self.quantiles is None:
                raise VizError("PCA: a histogram stretch needs quantiles (3, K)")
            self.quantiles = np.asarray(self.quantiles, np.float64)
            if self.quantiles.ndim != 2 or self.quantiles.shape[0] != 3 or \
                    self.quantiles.shape[1] < 2:
                raise VizError(f"PCA: quantiles must be (3, K >= 2), got {self.quantiles.shape}")
        else:
            raise VizError(f"PCA stretch {self.stretch!r}: expected one of {', '.join(STRETCHES)}")
        if self.explained_variance is not None:
            self.explained_variance = np.asarray(self.explained_variance, np.float64)
        self.percentiles = (float(self.percentiles[0]), float(self.percentiles[1]))
        self.tiles = tuple(self.tiles)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    # --- colouring ----------------------------------------------------------------------------
    def project(self, e: np.ndarray) -> np.ndarray:
        """(N, D) float32 embeddings -> (N, 3) float64 component scores."""
        return (np.asarray(e, np.float32).astype(np.float64) - self.mean) @ self.components.T

    def stretch_scores(self, p: np.ndarray) -> np.ndarray:
        """(N, 3) scores -> (N, 3) uint8 with the fitted stretch."""
        if self.stretch == "percentile":
            assert self.lo is not None and self.hi is not None  # __post_init__ checked
            span = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
            v = (p - self.lo) / span
        else:
            assert self.quantiles is not None  # __post_init__ checked
            levels = np.linspace(0.0, 1.0, self.quantiles.shape[1])
            v = np.stack([np.interp(p[:, k], self.quantiles[k], levels) for k in range(3)],
                         axis=1) if len(p) else np.zeros((0, 3))
        return np.rint(np.clip(v, 0.0, 1.0) * 255.0).astype(np.uint8)

    def _check_dim(self, d: int, what: str) -> None:
        if d != self.dim:
            raise VizError(f"{what}: {d}-d embeddings, but the PCA was fitted on {self.dim}-d ones")

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """float (H, W, D) embeddings, NaN = no data -> uint8 (H, W, 4) RGBA, alpha 0 (and black)
        where any value of the vector is not finite, 255 elsewhere."""
        emb = np.asarray(embeddings)
        if emb.ndim != 3:
            raise VizError(f"embeddings of shape {emb.shape}: expected (H, W, D)")
        h, w, d = emb.shape
        self._check_dim(d, "embeddings")
        flat = emb.reshape(-1, d)
        out = np.zeros((h * w, 4), np.uint8)
        for i in range(0, h * w, CHUNK_PIXELS):
            chunk = np.asarray(flat[i:i + CHUNK_PIXELS], np.float32)
            # numpy's stubs allow a scalar for any reduction over an axis; (N, D) -> (N,) is not
            ok: np.ndarray = np.isfinite(chunk).all(axis=1)  # type: ignore[assignment]
            self._fill(out[i:i + CHUNK_PIXELS], chunk[ok], ok)
        return out.reshape(h, w, 4)

    def apply_quantized(self, q: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """int8 (H, W, D) + float32 (H, W) scales (NaN = no data) -> uint8 (H, W, 4) RGBA, the
        same colours as `apply(dequantize(q, scales))`, computed in pixel chunks so a memory-mapped
        tile never becomes a float array in full."""
        if q.ndim != 3 or scales.shape != q.shape[:2]:
            raise VizError(f"quantised embeddings {q.shape} and scales {scales.shape}: expected "
                           "(H, W, D) and (H, W)")
        h, w, d = q.shape
        self._check_dim(d, "quantised embeddings")
        return self._apply_flat(q.reshape(-1, d), scales.reshape(-1)).reshape(h, w, 4)

    def _apply_flat(self, q: np.ndarray, s: np.ndarray) -> np.ndarray:
        out = np.zeros((len(s), 4), np.uint8)
        for i in range(0, len(s), CHUNK_PIXELS):
            sc = np.asarray(s[i:i + CHUNK_PIXELS], np.float32)
            ok = np.isfinite(sc)
            e = dequantize(np.asarray(q[i:i + CHUNK_PIXELS])[ok], sc[ok])
            self._fill(out[i:i + CHUNK_PIXELS], e, ok)
        return out

    def _fill(self, out: np.ndarray, e: np.ndarray, ok: np.ndarray) -> None:
        if ok.any():
            rgb = self.stretch_scores(self.project(e))
            out[ok, :3] = rgb
            out[ok, 3] = 255

    # --- serialisation -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict; floats are written with repr, so a reload colours bit-identically."""
        def lst(a: np.ndarray | None) -> Any:
            return None if a is None else np.asarray(a, np.float64).tolist()

        return {"format": PCA_FORMAT, "format_version": PCA_FORMAT_VERSION, "dim": self.dim,
                "stretch": self.stretch, "percentiles": list(self.percentiles),
                "mean": lst(self.mean), "components": lst(self.components),
                "lo": lst(self.lo), "hi": lst(self.hi), "quantiles": lst(self.quantiles),
                "explained_variance": lst(self.explained_variance),
                "n_sample": int(self.n_sample), "seed": int(self.seed),
                "year": None if self.year is None else int(self.year), "tiles": list(self.tiles)}

    @classmethod
    def from_json(cls, doc: dict[str, Any], source: str = "PCA JSON") -> PcaRgb:
        if not isinstance(doc, dict) or doc.get("format") != PCA_FORMAT:
            raise VizError(f"{source}: not a {PCA_FORMAT} file (no 'format': '{PCA_FORMAT}')")
        if doc.get("format_version") != PCA_FORMAT_VERSION:
            raise VizError(f"{source}: format_version {doc.get('format_version')!r}, this version "
                           f"of tessera reads {PCA_FORMAT_VERSION}")
        missing = [k for k in ("mean", "components", "stretch") if doc.get(k) is None]
        if missing:
            raise VizError(f"{source}: missing {', '.join(missing)}")
        try:
            p = cls(mean=doc["mean"], components=doc["components"], stretch=doc["stretch"],
                    lo=doc.get("lo"), hi=doc.get("hi"), quantiles=doc.get("quantiles"),
                    percentiles=tuple(doc.get("percentiles") or (2.0, 98.0)),
                    explained_variance=doc.get("explained_variance"),
                    n_sample=int(doc.get("n_sample") or 0), seed=int(doc.get("seed") or 0),
                    year=doc.get("year"), tiles=tuple(doc.get("tiles") or ()))
        except VizError as exc:
            raise VizError(f"{source}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise VizError(f"{source}: malformed values ({exc})") from None
        if doc.get("dim") is not None and int(doc["dim"]) != p.dim:
            raise VizError(f"{source}: says dim {doc['dim']} but the mean has {p.dim} values")
        return p

    def save(self, path: str | os.PathLike) -> Path:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PcaRgb:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise VizError(f"{path}: no such PCA file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise VizError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_json(doc, source=str(path))



# --- fitting ---------------------------------------------------------------------------------

@dataclasses.dataclass
class PixelSample:
    """Valid pixels drawn across tiles: dequantised embeddings and where each came from."""

    embeddings: np.ndarray  # (N, D) float32
    tiles: list[str]        # the tiles sampled from, sorted
    tile_index: np.ndarray  # (N,) index into `tiles`
    pixel: np.ndarray       # (N,) flat pixel index (row * width + col) in its tile


def sample_plan(counts: Sequence[int] | np.ndarray, n_sample: int, seed: int
                ) -> tuple[np.random.Generator, np.ndarray]:
    """How many of at most `n_sample` pixels to draw from each source holding `counts` valid
    pixels: a multivariate hypergeometric draw (so proportional to the counts), and the
    generator that then picks the pixels within each source (`pick_pixels`, sources in order).
    Shared by stores and files, so the same pixels give the same sample whatever holds them."""
    counts = np.asarray(counts, np.int64)
    n = min(int(n_sample), int(counts.sum()))
    rng = np.random.default_rng(int(seed))
    return rng, rng.multivariate_hypergeometric(counts, n)


def pick_pixels(rng: np.random.Generator, valid: np.ndarray, k: int) -> np.ndarray:
    """`k` of the flat indices `valid`, without replacement, sorted (see `sample_plan`)."""
    return np.sort(rng.choice(valid, int(k), replace=False))


def sample_pixels(store: Store, tiles: Sequence[TileLike], year: int, n_sample: int = 100_000,
                  seed: int = 0) -> PixelSample:
    """A uniform sample, without replacement, of at most `n_sample` valid pixels (finite scale)
    across all `tiles`: each tile's share is drawn from a multivariate hypergeometric over the
    tiles' valid-pixel counts (so proportional to them), then that many pixels within the tile.
    Only the sampled rows of the memory-mapped embeddings are read. Same store + seed -> same
    sample, whatever order the tiles were listed in."""
    if int(n_sample) < 3:
        raise VizError(f"n_sample {n_sample}: expected at least 3 pixels for a 3-component PCA")
    entries = resolve_tiles(store, tiles, year)
    # stores that do not record valid-pixel counts (GeoTessera's registries: -1): count them
    counts = np.array([e.valid_pixels if e.valid_pixels >= 0
                       else int(np.isfinite(open_tile(store, e)[1]).sum()) for e in entries],
                      np.int64)
    total = int(counts.sum())
    if total < 3:
        raise VizError(f"{len(entries)} tile(s) of {year} ({', '.join(e.tile for e in entries)}) "
                       f"hold {total} valid pixels: a PCA needs at least 3")
    rng, per_tile = sample_plan(counts, n_sample, seed)
    embs, tix, pix = [], [], []
    for i, (e, k) in enumerate(zip(entries, per_tile)):
        if k == 0:
            continue
        q, s = open_tile(store, e)
        valid = np.flatnonzero(np.isfinite(s))
        if len(valid) != counts[i]:
            raise VizError(f"{e.tile} {e.year}: the manifest lists {e.valid_pixels} valid pixels "
                           f"but {e.files['scales'].path} has {len(valid)} finite scales (stale "
                           "manifest or corrupt file; run `tessera store check`)")
        idx = pick_pixels(rng, valid, int(k))
        embs.append(dequantize(np.asarray(q[idx]), np.asarray(s[idx])))
        tix.append(np.full(len(idx), i, np.int32))
        pix.append(idx)
    return PixelSample(np.concatenate(embs), [e.tile for e in entries], np.concatenate(tix),
                       np.concatenate(pix))


def _check_fit_options(stretch: str, percentiles: tuple[float, float]) -> tuple[float, float]:
    if stretch not in STRETCHES:
        raise VizError(f"stretch {stretch!r}: expected one of {', '.join(STRETCHES)}")
    plo, phi = (float(v) for v in percentiles)
    if not 0.0 <= plo < phi <= 100.0:
        raise VizError(f"percentiles {percentiles}: expected 0 <= low < high <= 100")
    return plo, phi


def fit_pca(store: Store, tiles: Sequence[TileLike], year: int, n_sample: int = 100_000,
            seed: int = 0, stretch: str = "percentile",
            percentiles: tuple[float, float] = (2.0, 98.0)) -> PcaRgb:
    """Fit 3 principal components and the colour stretch once, on `sample_pixels` drawn across
    all `tiles` of `year`, so every tile rendered with the result shares one colour scale.

    Signs are fixed (each component's largest-magnitude loading is positive) so a refit on
    another sample does not flip colours. `stretch`: "percentile" maps the `percentiles` of each
    component to 0..255; "histogram" equalises each component's histogram on the sample.
    Another `seed` draws another sample: the components agree (up to sampling noise) and the
    colours differ only by the noise of the stretch estimates, a few levels at a few thousand
    pixels, shrinking as 1/sqrt(n_sample); pin the seed (or reuse a saved fit) for identical
    bytes."""
    _check_fit_options(stretch, percentiles)
    sample = sample_pixels(store, tiles, year, n_sample, seed)
    return fit_sample(sample.embeddings, stretch=stretch, percentiles=percentiles, seed=seed,
                      year=int(year), tiles=sample.tiles)


def fit_sample(embeddings: np.ndarray, *, stretch: str = "percentile",
               percentiles: tuple[float, float] = (2.0, 98.0), seed: int = 0,
               year: int | None = None, tiles: Sequence[str] = ()) -> PcaRgb:
    """The PCA colour model of a sample of valid (N, D) embeddings (see `fit_pca`); `seed`,
    `year` and `tiles` are recorded in the fit. Non-finite rows are refused: no data must be
    dropped before the fit."""
    plo, phi = _check_fit_options(stretch, percentiles)
    x = np.asarray(embeddings, np.float32).astype(np.float64)
    if x.ndim != 2:
        raise VizError(f"PCA sample of shape {x.shape}: expected (N, D)")
    if x.shape[1] < 3:
        raise VizError(f"{x.shape[1]}-d embeddings: a 3-component PCA needs D >= 3")
    if len(x) < 3:
        raise VizError(f"{len(x)} valid pixels: a PCA needs at least 3")
    if not np.isfinite(x).all():
        raise VizError("PCA sample: holds NaN or infinite values (no-data pixels must be left "
                       "out of the fit)")
    mean = x.mean(axis=0)
    x -= mean  # in place: the sample is the largest array here
    cov = (x.T @ x) / max(len(x) - 1, 1)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:3]
    comps = vecs[:, order].T.copy()
    for k in range(3):
        if comps[k, np.argmax(np.abs(comps[k]))] < 0:
            comps[k] = -comps[k]
    kw = dict(mean=mean, components=comps, percentiles=(plo, phi),
              explained_variance=np.maximum(vals[order], 0.0), n_sample=len(x), seed=int(seed),
              year=None if year is None else int(year), tiles=tuple(tiles))
    scores = x @ comps.T  # = PcaRgb.project(sample): the same centred float64 values
    del x
    if stretch == "percentile":
        lo, hi = np.percentile(scores, [plo, phi], axis=0)
        return PcaRgb(stretch="percentile", lo=lo, hi=hi, **kw)
    qs = np.quantile(scores, np.linspace(0.0, 1.0, HISTOGRAM_LEVELS), axis=0).T
    return PcaRgb(stretch="histogram", quantiles=np.maximum.accumulate(qs, axis=1), **kw)


def pca_for(store: Store, entries: list[TileEntry], year: int,
            pca: PcaRgb | str | os.PathLike | None, n_sample: int, seed: int, stretch: str
            ) -> PcaRgb:
    """`pca` as a fit: itself, loaded from its JSON file, or (None) fitted on `entries`."""
    if pca is None:
        return fit_pca(store, entries, year, n_sample=n_sample, seed=seed, stretch=stretch)
    if isinstance(pca, PcaRgb):
        return pca
    return PcaRgb.load(pca)


__all__ = ["CHUNK_PIXELS", "HISTOGRAM_LEVELS", "PCA_FORMAT", "PCA_FORMAT_VERSION", "STRETCHES",
           "PcaRgb", "PixelSample", "fit_pca", "fit_sample", "pca_for", "pick_pixels",
           "sample_pixels", "sample_plan"]
