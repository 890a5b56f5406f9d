"""False-colour views of a store: one PCA fit for many tiles, per-tile GeoTIFFs, region mosaics
and coverage maps (SPEC section 7, items 2, 3 and 7).

Why one fit: a PCA fitted per tile gives every tile its own colours (and sign flips), so a mosaic
shows seams that are not in the data. `fit_pca` fits the 3 components and the colour stretch ONCE
on a reproducible sample of valid pixels drawn across all the requested tiles; `PcaRgb.apply` is
then a pure function of the embedding vector, so the same vector gets the same colour in every
tile, and the fit can be saved as JSON and reused by a later call (`--pca-from file.json`).

Memory: tiles are read from memory-mapped `.npy` files and coloured in pixel chunks; a region
mosaic holds only the output image plus one tile at a time. Every file is written atomically
(a temporary sibling, then `os.replace`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera.atomic import atomic_path
from tessera.quantize import dequantize
from tessera.store.grid import GridTile, parse_tile_name
from tessera.store.manifest import Manifest, TileEntry

PCA_FORMAT = "tessera-pca-rgb"
PCA_FORMAT_VERSION = 1
STRETCHES = ("percentile", "histogram")
HISTOGRAM_LEVELS = 257  # quantile breakpoints kept per component for histogram equalisation
CHUNK_PIXELS = 16384    # pixels coloured at once (about 16 MB of float64 temporaries)

TileLike = str | GridTile | TileEntry


class VizError(ValueError):
    """A visualisation request that cannot be served (no tiles, absent year, bad PCA file)."""


# --- small helpers -----------------------------------------------------------------------------

def _store_years(manifest: Manifest) -> str:
    years = manifest.years()
    return ", ".join(map(str, years)) if years else "none (empty store)"


def resolve_tiles(store: Any, tiles: Sequence[TileLike], year: int,
                  manifest: Manifest | None = None) -> list[TileEntry]:
    """Manifest entries of `tiles` for `year`, sorted by tile name (so results do not depend on
    the order the caller listed them in) and without duplicates. One manifest query for all
    names; a name the store lacks is reported with the years it does have."""
    if isinstance(tiles, (str, GridTile, TileEntry)):
        tiles = [tiles]
    tiles = list(tiles)
    if not tiles:
        raise VizError(f"no tiles given for year {year}: expected at least one tile name or "
                       "manifest entry")
    manifest = store.manifest() if manifest is None else manifest
    if int(year) not in manifest.years():
        raise VizError(f"year {year} is not in the store {_describe(store)} (it has "
                       f"{_store_years(manifest)})")
    out: dict[str, TileEntry] = {}
    names: list[str] = []
    for t in tiles:
        if isinstance(t, TileEntry):
            if t.year != int(year):
                raise VizError(f"{t.tile}: manifest entry of year {t.year}, expected year {year}")
            out[t.tile] = t
        else:
            names.append(parse_tile_name(t.name if isinstance(t, GridTile) else str(t)).name)
    wanted = sorted(set(names) - set(out))
    if wanted:
        found = {e.tile: e for e in manifest.query(year=int(year), tiles=wanted).entries()}
        for name in wanted:
            out[name] = found[name] if name in found else manifest.entry(name, int(year))
    return [out[k] for k in sorted(out)]


def _describe(store: Any) -> str:
    return str(getattr(store, "root", None) or getattr(store, "url", None) or store)


def _open_tile(store: Any, e: TileEntry) -> tuple[np.ndarray, np.ndarray]:
    """(int8 (H*W, D) memory map, float32 (H*W,) scales memory map) of a tile-year, checked
    against the manifest's shape."""
    qpath = store.open_file(e.files["embeddings"])
    spath = store.open_file(e.files["scales"])
    q = np.load(qpath, mmap_mode="r")
    s = np.load(spath, mmap_mode="r")
    if q.dtype != np.int8 or q.ndim != 3 or q.shape[:2] != (e.height, e.width):
        raise VizError(f"{qpath}: {e.tile} {e.year}: expected int8 ({e.height}, {e.width}, D) "
                       f"embeddings, got {q.dtype} {q.shape}")
    if s.shape != (e.height, e.width):
        raise VizError(f"{spath}: {e.tile} {e.year}: expected scales of shape "
                       f"({e.height}, {e.width}), got {s.shape}")
    return q.reshape(-1, q.shape[2]), s.reshape(-1)


# --- the PCA colour model ------------------------------------------------------------------------

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
            span = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
            v = (p - self.lo) / span
        else:
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
            ok = np.isfinite(chunk).all(axis=1)
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


def sample_pixels(store: Any, tiles: Sequence[TileLike], year: int, n_sample: int = 100_000,
                  seed: int = 0) -> PixelSample:
    """A uniform sample, without replacement, of at most `n_sample` valid pixels (finite scale)
    across all `tiles`: each tile's share is drawn from a multivariate hypergeometric over the
    tiles' valid-pixel counts (so proportional to them), then that many pixels within the tile.
    Only the sampled rows of the memory-mapped embeddings are read. Same store + seed -> same
    sample, whatever order the tiles were listed in."""
    if int(n_sample) < 3:
        raise VizError(f"n_sample {n_sample}: expected at least 3 pixels for a 3-component PCA")
    entries = resolve_tiles(store, tiles, year)
    counts = np.array([e.valid_pixels for e in entries], np.int64)
    total = int(counts.sum())
    if total < 3:
        raise VizError(f"{len(entries)} tile(s) of {year} ({', '.join(e.tile for e in entries)}) "
                       f"hold {total} valid pixels: a PCA needs at least 3")
    n = min(int(n_sample), total)
    rng = np.random.default_rng(int(seed))
    per_tile = rng.multivariate_hypergeometric(counts, n)
    embs, tix, pix = [], [], []
    for i, (e, k) in enumerate(zip(entries, per_tile)):
        if k == 0:
            continue
        q, s = _open_tile(store, e)
        valid = np.flatnonzero(np.isfinite(s))
        if len(valid) != e.valid_pixels:
            raise VizError(f"{e.tile} {e.year}: the manifest lists {e.valid_pixels} valid pixels "
                           f"but {e.files['scales'].path} has {len(valid)} finite scales (stale "
                           "manifest or corrupt file; run `tessera store check`)")
        idx = np.sort(rng.choice(valid, int(k), replace=False))
        embs.append(dequantize(np.asarray(q[idx]), np.asarray(s[idx])))
        tix.append(np.full(len(idx), i, np.int32))
        pix.append(idx)
    return PixelSample(np.concatenate(embs), [e.tile for e in entries], np.concatenate(tix),
                       np.concatenate(pix))


def fit_pca(store: Any, tiles: Sequence[TileLike], year: int, n_sample: int = 100_000,
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
    if stretch not in STRETCHES:
        raise VizError(f"stretch {stretch!r}: expected one of {', '.join(STRETCHES)}")
    plo, phi = (float(v) for v in percentiles)
    if not 0.0 <= plo < phi <= 100.0:
        raise VizError(f"percentiles {percentiles}: expected 0 <= low < high <= 100")
    sample = sample_pixels(store, tiles, year, n_sample, seed)
    x = sample.embeddings.astype(np.float64)
    if x.shape[1] < 3:
        raise VizError(f"{x.shape[1]}-d embeddings: a 3-component PCA needs D >= 3")
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
              year=int(year), tiles=tuple(sample.tiles))
    scores = x @ comps.T  # = PcaRgb.project(sample): the same centred float64 values
    del x
    if stretch == "percentile":
        lo, hi = np.percentile(scores, [plo, phi], axis=0)
        return PcaRgb(stretch="percentile", lo=lo, hi=hi, **kw)
    qs = np.quantile(scores, np.linspace(0.0, 1.0, HISTOGRAM_LEVELS), axis=0).T
    return PcaRgb(stretch="histogram", quantiles=np.maximum.accumulate(qs, axis=1), **kw)


def _pca_for(store: Any, entries: list[TileEntry], year: int, pca: PcaRgb | str | os.PathLike | None,
             n_sample: int, seed: int, stretch: str) -> PcaRgb:
    if pca is None:
        return fit_pca(store, entries, year, n_sample=n_sample, seed=seed, stretch=stretch)
    if isinstance(pca, PcaRgb):
        return pca
    return PcaRgb.load(pca)


# --- per-tile output -----------------------------------------------------------------------------

def tile_rgba(store: Any, entry: TileEntry, pca: PcaRgb) -> np.ndarray:
    """uint8 (H, W, 4) RGBA of one tile-year (alpha 0 = no data), read in chunks."""
    q, s = _open_tile(store, entry)
    pca._check_dim(q.shape[1], f"{entry.tile} {entry.year}")
    return pca._apply_flat(q, s).reshape(entry.height, entry.width, 4)


def write_png(path: str | os.PathLike, rgba: np.ndarray) -> Path:
    """An RGBA PNG, atomically. Pillow when present (byte-identical output for identical pixels),
    else matplotlib."""
    with atomic_path(path) as tmp:
        try:
            from PIL import Image
        except ImportError:  # matplotlib alone
            import matplotlib.image as mpimg
            mpimg.imsave(tmp, rgba, format="png", metadata={"Software": None})
        else:
            Image.fromarray(np.ascontiguousarray(rgba), "RGBA").save(tmp, format="PNG")
    return Path(path)


def write_rgba_geotiff(path: str | os.PathLike, rgba: np.ndarray, crs: Any, transform: Any,
                       tags: dict[str, Any] | None = None) -> Path:
    """uint8 RGB + alpha GeoTIFF (photometric RGB, deflate), atomically."""
    import rasterio

    h, w, _ = rgba.shape
    tiled = h >= 256 and w >= 256
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", width=w, height=h, count=4, dtype="uint8",
                           crs=crs, transform=transform, photometric="RGB", alpha="YES",
                           compress="deflate", interleave="pixel", tiled=tiled,
                           **({"blockxsize": 256, "blockysize": 256} if tiled else {})) as dst:
            dst.write(np.moveaxis(rgba, 2, 0))
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
    return Path(path)


@dataclasses.dataclass(frozen=True)
class RenderedTile:
    tile: str
    year: int
    tif: Path
    png: Path | None


def render_tiles(store: Any, tiles: Sequence[TileLike], year: int, out_dir: str | os.PathLike,
                 pca: PcaRgb | str | os.PathLike | None = None, *, png: bool = False,
                 n_sample: int = 100_000, seed: int = 0, stretch: str = "percentile"
                 ) -> list[RenderedTile]:
    """Per tile `{out_dir}/{tile}_{year}_pca.tif` (RGB + alpha in the tile's own UTM CRS and
    transform) and, with `png`, a matching RGBA PNG. One PCA for all tiles: `pca` (a fit or a
    JSON file), else fitted here on all `tiles`. Tile by tile, so memory does not grow with the
    number of tiles."""
    entries = resolve_tiles(store, tiles, year)
    pca = _pca_for(store, entries, year, pca, n_sample, seed, stretch)
    out_dir = Path(out_dir)
    done = []
    for e in entries:
        rgba = tile_rgba(store, e, pca)
        tif = write_rgba_geotiff(out_dir / f"{e.tile}_{e.year}_pca.tif", rgba, e.crs, e.affine,
                                 _tags(pca, tile=e.tile, year=e.year, version=e.version))
        p = write_png(out_dir / f"{e.tile}_{e.year}_pca.png", rgba) if png else None
        done.append(RenderedTile(e.tile, e.year, tif, p))
    return done


def _tags(pca: PcaRgb, **extra: Any) -> dict[str, Any]:
    return {"TESSERA_PRODUCT": "PCA false colour of TESSERA embeddings (R, G, B = PC1..3)",
            "TESSERA_PCA_STRETCH": pca.stretch, "TESSERA_PCA_SEED": pca.seed,
            "TESSERA_PCA_SAMPLE": pca.n_sample,
            **{f"TESSERA_{k.upper()}": v for k, v in extra.items()}}


# --- region mosaic -----------------------------------------------------------------------------

@dataclasses.dataclass
class RenderedRegion:
    png: Path
    tif: Path | None
    grid: Any            # the TargetGrid of the mosaic
    tiles: list[str]
    pca: PcaRgb


def _cell_in(tile: str, crs: Any) -> Any:
    """The tile's lon/lat cell as a polygon in `crs` (edges densified, so shared edges of
    neighbouring tiles project to the same vertices)."""
    from pyproj import Transformer
    from shapely.geometry import box

    from tessera.preprocess.grid import _reproject

    cell = box(*parse_tile_name(tile).bounds).segmentize(0.001)
    to = Transformer.from_crs("EPSG:4326", _crs_wkt(crs), always_xy=True)
    return _reproject(cell, to)


def _crs_wkt(crs: Any) -> str:
    from rasterio.crs import CRS
    return CRS.from_user_input(crs).to_wkt()


def _inside(geom: Any, shape: tuple[int, int], transform: Any) -> np.ndarray:
    from rasterio.features import geometry_mask
    return geometry_mask([geom], out_shape=shape, transform=transform, invert=True)


def _extend_edges(rgba: np.ndarray, outside_cell: np.ndarray) -> np.ndarray:
    """Copy the nearest valid colour into no-data pixels just outside the tile's cell (one pixel,
    8-neighbourhood). Why: a neighbour in another UTM zone has a rotated pixel lattice, so near
    the seam the source pixel containing an output pixel's centre can have its own centre outside
    the cell (hence no data) although the output pixel is inside it; without this the seam shows
    a line of holes. Pixels inside the cell (real no data: sea, clouds) are never filled."""
    from scipy.ndimage import distance_transform_edt

    invalid = rgba[..., 3] == 0
    if invalid.all() or not (invalid & outside_cell).any():
        return rgba
    dist, (ri, ci) = distance_transform_edt(invalid, return_indices=True)
    fill = invalid & outside_cell & (dist <= 1.5)
    out = rgba.copy()
    out[fill] = rgba[ri[fill], ci[fill]]
    return out


def _region_grid(region: Any, store: Any, year: int, manifest: Manifest
                 ) -> tuple[Any, list[str] | None, str]:
    """(lon/lat geometry, tile names or None for 'whatever the bbox touches', label)."""
    from shapely import union_all
    from shapely.geometry import box

    if isinstance(region, Sequence) and not isinstance(region, str) and len(region) == 4 and \
            all(isinstance(v, (int, float, np.integer, np.floating)) for v in region):
        w, s, e, n = map(float, region)
        if not (w < e and s < n):
            raise VizError(f"bbox ({w}, {s}, {e}, {n}): expected west < east and south < north "
                           "in lon/lat degrees (regions across the antimeridian are not supported)")
        return box(w, s, e, n), None, f"bbox ({w}, {s}, {e}, {n})"
    names = [x.tile for x in resolve_tiles(store, region, year, manifest)]
    geom = union_all([box(*parse_tile_name(t).bounds) for t in names])
    if geom.bounds[2] - geom.bounds[0] > 180:
        raise VizError(f"tiles {names[0]} .. {names[-1]} span more than 180 degrees of longitude; "
                       "regions across the antimeridian are not supported")
    return geom, names, f"{len(names)} tiles"


def render_region(store: Any, region: Any, year: int, png_path: str | os.PathLike,
                  tif_path: str | os.PathLike | None = None,
                  pca: PcaRgb | str | os.PathLike | None = None, max_size: int = 4096, *,
                  n_sample: int = 100_000, seed: int = 0, stretch: str = "percentile"
                  ) -> RenderedRegion:
    """A mosaic of a region in ONE CRS, the UTM zone of the region's centre, as an RGBA PNG and,
    with `tif_path`, a georeferenced RGB + alpha GeoTIFF.

    `region` is a lon/lat bbox (west, south, east, north) -- every stored tile of `year` that the
    UTM rectangle touches is drawn -- or a list of tiles. Each tile's colours are reprojected with
    nearest neighbour into the mosaic's grid (the tiles' native resolution, coarsened by an
    integer factor until neither side exceeds `max_size` pixels); each output pixel takes the
    tile whose 0.1 degree cell contains its centre, so neighbouring tiles meet without overlap
    or gaps, across UTM zone borders too. Memory: the output image plus one tile."""
    from affine import Affine
    from rasterio.warp import Resampling, reproject, transform_bounds

    from tessera.preprocess.grid import TargetGrid

    if int(max_size) < 1:
        raise VizError(f"max_size {max_size}: expected a positive number of pixels")
    manifest = store.manifest()
    if int(year) not in manifest.years():
        raise VizError(f"year {year} is not in the store {_describe(store)} (it has "
                       f"{_store_years(manifest)})")
    geom, names, label = _region_grid(region, store, year, manifest)
    if names is None:
        probe = TargetGrid.from_lonlat_geometry(geom, name="region", resolution=1000.0)
        names = manifest.query(bbox=probe.lonlat_bounds(), year=int(year)).tiles()
        if not names:
            raise VizError(f"{label}: the store has no tiles there for year {year} (it has "
                           f"{len(manifest.query(year=int(year)))} tiles of {year})")
    entries = resolve_tiles(store, names, year, manifest)
    pca = _pca_for(store, entries, year, pca, n_sample, seed, stretch)

    res0 = min(abs(float(e.transform[0])) for e in entries)
    grid = TargetGrid.from_lonlat_geometry(geom, name="region", resolution=res0)
    factor = max(1, math.ceil(max(grid.width, grid.height) / int(max_size)))
    while True:
        grid = TargetGrid.from_lonlat_geometry(geom, name="region", resolution=res0 * factor)
        if max(grid.width, grid.height) <= int(max_size):
            break
        factor += 1
    H, W = grid.height, grid.width
    out = np.zeros((H, W, 4), np.uint8)
    x0, y1, r = grid.transform.c, grid.transform.f, grid.resolution
    for e in entries:
        left, bottom, right, top = transform_bounds(e.crs, grid.crs, *e.bounds, densify_pts=21)
        c0, c1 = max(0, math.floor((left - x0) / r)), min(W, math.ceil((right - x0) / r))
        r0, r1 = max(0, math.floor((y1 - top) / r)), min(H, math.ceil((y1 - bottom) / r))
        if c0 >= c1 or r0 >= r1:
            continue
        rgba = tile_rgba(store, e, pca)
        if not rgba[..., 3].any():
            continue
        outside = ~_inside(_cell_in(e.tile, e.crs), (e.height, e.width), e.affine)
        rgba = _extend_edges(rgba, outside)
        wt = grid.transform @ Affine.translation(c0, r0)
        tmp = np.zeros((4, r1 - r0, c1 - c0), np.uint8)
        reproject(np.moveaxis(rgba, 2, 0), tmp, src_transform=e.affine, src_crs=e.crs,
                  dst_transform=wt, dst_crs=grid.crs, resampling=Resampling.nearest,
                  num_threads=1)
        own = _inside(_cell_in(e.tile, grid.crs), tmp.shape[1:], wt)
        view = out[r0:r1, c0:c1]
        view[own] = np.moveaxis(tmp, 0, 2)[own]
        del rgba, tmp
    write_png(png_path, out)
    tif = None
    if tif_path is not None:
        tif = write_rgba_geotiff(tif_path, out, grid.crs, grid.transform,
                                 _tags(pca, year=int(year), tiles=len(entries),
                                       region=label))
    return RenderedRegion(Path(png_path), tif, grid, [e.tile for e in entries], pca)


# --- coverage ------------------------------------------------------------------------------------

def coverage_table(manifest: Manifest) -> Any:
    """pandas DataFrame, one row per year: year, tiles, valid_pixels, bytes (all files)."""
    import pandas as pd

    from tessera.store.layout import FILE_KINDS

    cols = ["year", "tiles", "valid_pixels", "bytes"]
    if not len(manifest):
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    df = manifest.to_pandas()
    df["bytes"] = sum(df[f"{k}_size"].astype("int64") for k in FILE_KINDS)
    g = df.groupby("year", sort=True).agg(tiles=("tile", "nunique"),
                                          valid_pixels=("valid_pixels", "sum"),
                                          bytes=("bytes", "sum")).reset_index()
    return g[cols].astype("int64")


def coverage_map(manifest: Manifest, png_path: str | os.PathLike,
                 years: Sequence[int] | None = None) -> Path:
    """A PNG with one panel per year showing which 0.1 degree tiles the store holds (lon/lat
    axes, each tile cell a filled rectangle, counts in the titles). Matplotlib without pyplot, so
    it works headless and leaves global state alone."""
    from matplotlib.collections import PatchCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from tessera.store.synthetic import SIMULATED_VERSION

    have = manifest.years()
    if not have:
        raise VizError("coverage map: the manifest has no tiles")
    years = have if years is None else sorted({int(y) for y in years})
    absent = [y for y in years if y not in have]
    if not years or absent:
        raise VizError(f"coverage map: year(s) {', '.join(map(str, absent)) or '(none given)'} "
                       f"not in the manifest (it has {', '.join(map(str, have))})")
    m = manifest.query(year=years)
    df = m.to_pandas()
    b = m.table.column("bbox").combine_chunks()
    xmin, ymin = np.asarray(b.field("xmin")), np.asarray(b.field("ymin"))
    xmax, ymax = np.asarray(b.field("xmax")), np.asarray(b.field("ymax"))
    pad = max(0.05, 0.05 * max(xmax.max() - xmin.min(), ymax.max() - ymin.min()))
    lim_x = (xmin.min() - pad, xmax.max() + pad)
    lim_y = (ymin.min() - pad, ymax.max() + pad)
    aspect = 1.0 / max(math.cos(math.radians(float((ymin.min() + ymax.max()) / 2))), 0.1)

    ncols = min(len(years), 3)
    nrows = math.ceil(len(years) / ncols)
    fig = Figure(figsize=(4.5 * ncols, 4.2 * nrows + 0.5), dpi=100)
    yr = df["year"].to_numpy()
    for i, y in enumerate(years):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        sel = yr == y
        rects = [Rectangle((x0, y0), x1 - x0, y1_ - y0) for x0, y0, x1, y1_ in
                 zip(xmin[sel], ymin[sel], xmax[sel], ymax[sel])]
        ax.add_collection(PatchCollection(rects, facecolor=f"C{i % 10}", edgecolor="black",
                                          linewidth=0.3, alpha=0.8))
        ax.set_xlim(*lim_x)
        ax.set_ylim(*lim_y)
        ax.set_aspect(aspect)
        ax.set_xlabel("longitude (deg)")
        ax.set_ylabel("latitude (deg)")
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.set_title(f"{y}: {int(sel.sum())} tiles, {int(df['valid_pixels'][sel].sum()):,} "
                     "valid px", fontsize=9)
    simulated = " (SIMULATED)" if (df["version"] == SIMULATED_VERSION).any() else ""
    fig.suptitle(f"Store coverage{simulated}: {len(df)} tile-years, {df['tile'].nunique()} "
                 f"tiles, {len(years)} year(s)", fontsize=10)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(png_path)
