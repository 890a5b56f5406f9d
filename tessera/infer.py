"""Inference: d-pixels -> 128-d embeddings -> int8 + per-pixel scale.

`Embedder` embeds a `DPixelBatch` in bounded batches under `torch.inference_mode`, bucketing
pixels by sequence length (each sensor separately) so little compute is spent on padding.
`embed_tile` streams a tile folder chunk by chunk from its memory maps into memory-mapped outputs
written under temporary names and renamed when complete, so memory stays bounded whatever the
tile size and an interrupted run never leaves a half-written result under the final name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from tessera import __version__
from tessera import geotiff as tessera_geotiff
from tessera.atomic import atomic_paths
from tessera.dpixel import DPixelBatch, Tile, release_pages
from tessera.errors import InputError, TileFormatError
from tessera.model import PRESETS, TesseraModel, load_checkpoint
from tessera.progress import Progress, Task, task
from tessera.quantize import quantize
from tessera.model.registry import FAMILIES, family_of, get_model, model_for_config
from tessera.sampling import (BUCKETED, SCHEMES, V1_STEPS, Candidates, Scheme, bucketed, buckets,
                              gather, s1_candidates, s2_candidates, s2_steps, select)

log = logging.getLogger(__name__)

#: Bits of the per-pixel flags written next to the embeddings.
FLAG_NO_S2 = 1  # no valid S2 observation: every S2 step was used (SPEC 5)
FLAG_NO_S1 = 2  # no valid S1 observation
FLAG_OUTSIDE_ROI = 4  # not computed
FLAG_NAMES = {FLAG_NO_S2: "no valid S2", FLAG_NO_S1: "no valid S1", FLAG_OUTSIDE_ROI: "outside ROI"}

#: Default pixels per forward pass (see `Embedder`): measured best on CPU (2-core AMD Zen 4,
#: all presets: 32-64 beat 1024 by 5-40 %), and large enough to fill a GPU.
CPU_BATCH_SIZE = 64
GPU_BATCH_SIZE = 1024

RANDOM_INIT_WARNING = ("model weights are RANDOMLY INITIALISED (no trained weights for this "
                       "preset given or shipped): the embeddings carry no learned meaning")


def use_threads(threads: int | None = None) -> int:
    """Run torch on `threads` CPU threads (default: `tessera.cpus.available_cpus`, which honours
    OMP_NUM_THREADS and the CPU affinity); returns the number set."""
    from tessera.cpus import available_cpus

    n = int(threads or available_cpus())
    torch.set_num_threads(n)
    return n


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: CUDA is not available on this machine")
    return dev


def shipped_checkpoint() -> Path | None:
    """Path of trained weights bundled with the package, if any."""
    found = sorted((Path(__file__).parent / "weights").glob("*.safetensors"))
    return found[0] if found else None


def resolve_model(checkpoint: str | os.PathLike | None = None, preset: str | None = None,
                  seed: int = 0, use_shipped: bool = True, model: str | None = None
                  ) -> tuple[TesseraModel, dict[str, Any]]:
    """The model to embed with: a checkpoint, else shipped weights (unless `use_shipped` is
    False, e.g. for a random-init control), else a seeded random init.

    `model` is a registered model id (`tessera models`; `preset` is its older name for our
    presets): with a checkpoint it must fit the file (and picks v1.1's MPC or AWS statistics);
    without one it chooses the shipped weights or the architecture of the random init.
    Metadata says which (`random_init: True` for the last, and callers must say so plainly),
    with `model_id` and `family`.
    """
    model_id = model or preset
    if checkpoint is not None:
        loaded, meta = load_checkpoint(checkpoint, model_id)
        return loaded.eval(), meta
    shipped = shipped_checkpoint() if use_shipped else None
    if shipped is not None and (model_id is None or model_id == _model_of(shipped)):
        loaded, meta = load_checkpoint(shipped)
        return loaded.eval(), meta
    spec = get_model(model_id or "tiny")
    if spec.config is None:
        raise InputError(f"model {spec.id}: its sizes are read from its checkpoint "
                         f"({spec.upstream_file}, {spec.source}); pass that file with "
                         "--checkpoint")
    torch.manual_seed(seed)
    built = TesseraModel(spec.config).eval()
    return built, {"preset": spec.id if spec.id in PRESETS else None, "model_id": spec.id,
                   "family": spec.family, "random_init": True, "init_seed": seed,
                   "model": built.config.to_dict()}


def _model_of(path: Path) -> str | None:
    from tessera.model import read_meta
    meta = read_meta(path)
    return meta.get("model_id") or meta.get("preset")


#: Forward passes run on at least this many pixels (a smaller group repeats its last pixel): the
#: CPU kernels for fewer rows (below 11-16 rows, by preset) round differently, and a pixel's
#: embedding must not depend on how many pixels it happened to be batched with.
MIN_ROWS = 16
#: Sequences are padded to whole blocks of this many steps (see `tessera.sampling.buckets`).
BLOCK_STEPS = 16


def _at_least(rows: np.ndarray, n: int) -> np.ndarray:
    return rows if len(rows) >= n else np.concatenate([rows, np.repeat(rows[-1:], n - len(rows))])


@dataclasses.dataclass
class EmbedResult:
    embeddings: np.ndarray  # (N, latent) float32
    flags: np.ndarray  # (N,) uint8, FLAG_* bits


#: The sampling schemes each model family accepts, its default first (SPEC 3, 3b, 5).
FAMILY_SCHEMES: dict[str, tuple[str, ...]] = {"v1.0": ("all", "v1"), "v1.1": ("v1.1",),
                                              "v2": ("v2",)}
#: Embedding widths a family offers (v2: Matryoshka prefixes, quantised on the kept dims).
FAMILY_DIMS: dict[str, tuple[int, ...]] = {"v1.0": (), "v1.1": (), "v2": (16, 32, 64, 128)}
assert set(FAMILY_SCHEMES) == set(FAMILIES) == set(FAMILY_DIMS)

#: Arithmetic of the encoders (`Embedder(precision=...)`, `--precision`): fp32 is exact (the
#: published model, the default); bf16 and int8 trade a little accuracy (cosine to fp32 >= 0.999
#: per pixel, tested) for speed on CPUs with bf16 / int8 instructions. The output is the int8
#: embedding + scale whatever the precision.
PRECISIONS = ("fp32", "bf16", "int8")
#: Who runs the encoders: PyTorch eager, or ONNX Runtime on CPU (`tessera.model.onnx_engine`).
ENGINES = ("torch", "onnx")


def precision_label(precision: str, engine: str = "torch") -> str:
    """What outputs record (GeoTIFF tags, store manifests, point tables): the precision, and
    for int8 also the engine, whose quantisation schemes differ (fp32 is the same function on
    both engines, to float32 rounding; bf16 runs on torch only)."""
    return f"int8-{engine}" if precision == "int8" else precision


class Embedder:
    """Embeds d-pixels with a model.

    batch_size: pixels per forward pass at 40 steps; the budget is batch_size * 40 tokens, so
    long sequences go in smaller batches and memory stays bounded. None: CPU_BATCH_SIZE on CPU
    (small batches keep the activations in cache and make finer length buckets), GPU_BATCH_SIZE
    on GPU.
    sampling: None for the model's default. v1.0-family models: "all" (deterministic, every
    valid observation; default) or "v1" (published 40 + 40 random draws, seeded by `seed` and
    each pixel's id). v1.1 and v2 models: their published deterministic schemes ("v1.1", "v2").
    dim: embedding width; None for the model's (`config.output_dim`); v2 students also offer
    their Matryoshka prefixes 16, 32 and 64 (the first dims, before quantisation).
    precision: "fp32" (exact, default), "bf16" (bfloat16 autocast, on CPU or GPU) or "int8"
    (dynamic int8 linear layers, CPU only; activations get one scale per forward pass, so an
    int8 embedding depends slightly on the pixels batched with it). `bf16=True` is the older
    spelling of precision="bf16".
    engine: "torch" (default) or "onnx": the encoders exported to ONNX (cached per weights in
    `onnx_cache`, see `tessera.model.onnx_engine`) and run by ONNX Runtime on CPU, at fp32 or
    int8 (ONNX Runtime's dynamic quantisation).
    """

    def __init__(self, model: TesseraModel, *, device: str = "auto",
                 batch_size: int | None = None,
                 sampling: Scheme | None = None, seed: int = 0, bf16: bool = False,
                 steps: int = V1_STEPS, dim: int | None = None, precision: str = "fp32",
                 engine: str = "torch", onnx_cache: str | os.PathLike | None = None) -> None:
        family = family_of(model.config)
        accepted = FAMILY_SCHEMES[family]
        scheme = accepted[0] if sampling is None else str(sampling)
        if scheme not in SCHEMES:
            raise InputError(f"sampling {scheme!r}: expected one of {', '.join(SCHEMES)}")
        if scheme not in accepted:
            raise InputError(f"sampling {scheme!r} does not fit a {family} model, which "
                             f"accepts {', '.join(accepted)}")
        full = model.config.output_dim
        if dim is not None and dim != full and dim not in FAMILY_DIMS[family]:
            offered = sorted({full, *FAMILY_DIMS[family]})
            raise InputError(f"--dim {dim}: a {family} model's embeddings are "
                             f"{' or '.join(map(str, offered))} wide")
        self.family = family
        self.dim = dim or full
        if batch_size is not None and batch_size < 1:
            raise InputError(f"batch_size {batch_size}: expected a positive number of pixels")
        precision, engine = self._check_precision(precision, engine, bf16)
        cpu_only = engine == "onnx" or precision == "int8"
        self.device = resolve_device("cpu" if cpu_only and device == "auto" else device)
        if cpu_only and self.device.type != "cpu":
            raise InputError(f"device {device!r}: " + (
                "engine 'onnx' runs on CPU (onnxruntime's CPUExecutionProvider)"
                if engine == "onnx" else "precision 'int8' runs on CPU")
                + "; use --device cpu, or --precision bf16 on a GPU")
        if batch_size is None:
            batch_size = CPU_BATCH_SIZE if self.device.type == "cpu" else GPU_BATCH_SIZE
        self.model = model.eval().to(self.device)
        self.batch_size = batch_size
        self.sampling: Scheme = scheme  # type: ignore[assignment]  # checked above
        self.seed = seed
        self.steps = steps
        self.precision = precision
        self.engine = engine
        self.bf16 = precision == "bf16"
        self._onnx: dict[str, Any] | None = None
        if engine == "onnx":
            from tessera.model.onnx_engine import onnx_backbones

            self._onnx = onnx_backbones(self.model, precision, model_label({}, model.config),
                                        torch.get_num_threads(), onnx_cache)

    @staticmethod
    def _check_precision(precision: str, engine: str, bf16: bool) -> tuple[str, str]:
        if precision not in PRECISIONS:
            raise InputError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if engine not in ENGINES:
            raise InputError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
        if bf16:
            if precision not in ("fp32", "bf16"):
                raise InputError(f"bf16 and precision {precision!r} contradict each other: "
                                 "give precision only")
            precision = "bf16"
        if engine == "onnx" and precision == "bf16":
            raise InputError("precision 'bf16' runs on engine 'torch' only (ONNX Runtime's CPU "
                             "engine here offers fp32 and int8)")
        if engine == "torch" and precision == "int8":
            from tessera.model.tessera_model import int8_available
            if not int8_available():
                raise InputError("precision 'int8': this PyTorch build has no dynamic int8 "
                                 "kernels; use engine 'onnx' (pip install 'tessera-eo[onnx]')")
        return precision, engine

    @property
    def precision_label(self) -> str:
        """What outputs record (see `precision_label`)."""
        return precision_label(self.precision, self.engine)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        if self.precision == "int8" and self.engine == "torch":
            from tessera.model.tessera_model import int8_linears
            return int8_linears()
        return contextlib.nullcontext()

    def _encode(self, sensor: str, c: Candidates, stream: int, pixel_ids: np.ndarray,
                progress: Task | None = None) -> torch.Tensor:
        """One sensor's pooled vectors (N, d_model) for every pixel of `c`."""
        if self.sampling in BUCKETED:
            return self._encode_bucketed(sensor, c, progress)
        n = c.values.shape[0]
        idx, lengths = select(c, self.sampling, self.seed, stream, pixel_ids, self.steps)
        out = torch.empty((n, self.model.config.d_model), dtype=torch.float32, device=self.device)
        if lengths is None:
            groups: Iterator[tuple[np.ndarray, int]] = (
                (np.arange(i, min(n, i + self.batch_size)), idx.shape[1])
                for i in range(0, n, self.batch_size))
        else:
            width = -(-idx.shape[1] // BLOCK_STEPS) * BLOCK_STEPS  # room to pad to whole blocks
            idx = np.pad(idx, ((0, 0), (0, width - idx.shape[1])), mode="edge")  # masked steps
            groups = buckets(lengths, self.batch_size * V1_STEPS, granularity=BLOCK_STEPS,
                             max_length=width, min_rows=MIN_ROWS)
        for rows, length in groups:
            padded = _at_least(rows, MIN_ROWS)
            seq = gather(c, idx[padded, :length], None if lengths is None else lengths[padded],
                         padded)
            mask = None if seq.mask is None else torch.from_numpy(seq.mask).to(self.device)
            h = self._forward(sensor, seq.values, seq.doy, mask,
                              None if c.orbit is None else c.orbit[idx[padded, :length]], None)
            out[torch.from_numpy(rows).to(self.device)] = h[:len(rows)].float()
            if progress is not None:
                progress.advance(len(rows) / 2)  # each pixel goes through two encoders
        return out

    def _encode_bucketed(self, sensor: str, c: Candidates, progress: Task | None
                         ) -> torch.Tensor:
        """v1.1 / v2: each pixel's sequence has its bucket's length; no padding, no mask."""
        n = c.values.shape[0]
        out = torch.empty((n, self.model.config.d_model), dtype=torch.float32, device=self.device)
        b = bucketed(c.candidate, self.sampling)
        for length in np.unique(b.length):
            length = int(length)
            members = np.flatnonzero(b.length == length)
            # forward passes run on MIN_ROWS pixels at least anyway: fill them with real ones,
            # and split a bucket into equal passes (58 pixels as 29 + 29, not 53 + 5 padded
            # to 16): fewer padded rows, same bits (an embedding never depends on its batch)
            per_batch = max(MIN_ROWS, self.batch_size * V1_STEPS // length)
            passes = -(-len(members) // per_batch)
            per_batch = -(-len(members) // passes)
            for i in range(0, len(members), per_batch):
                rows = members[i:i + per_batch]
                padded = _at_least(rows, MIN_ROWS)
                idx = b.idx[padded, :length]
                seq = gather(c, idx, None, padded)
                h = self._forward(sensor, seq.values, seq.doy, None,
                                  None if c.orbit is None else c.orbit[idx], b.blank[padded])
                out[torch.from_numpy(rows).to(self.device)] = h[:len(rows)].float()
                if progress is not None:
                    progress.advance(len(rows) / 2)
        return out

    def _forward(self, sensor: str, values: np.ndarray, doy: np.ndarray,
                 mask: torch.Tensor | None, orbit: np.ndarray | None,
                 blank: np.ndarray | None) -> torch.Tensor:
        """Normalise raw steps with the model's statistics and run one backbone. `blank` rows
        (a sensor without observations, bucketed schemes) are zero after normalisation and
        carry day 0, as the published code feeds them."""
        m = self.model
        x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(self.device)
        d = torch.from_numpy(np.ascontiguousarray(doy, dtype=np.float32)).to(self.device)
        if sensor == "s2":
            x = m.normalise_s2(x)
        else:
            o = None if orbit is None else torch.from_numpy(np.ascontiguousarray(orbit))
            x = m.normalise_s1(x, o)
        if blank is not None and blank.any():
            zero = torch.from_numpy(blank).to(self.device)
            x = x.masked_fill(zero[:, None, None], 0.0)
            d = d.masked_fill(zero[:, None], 0.0)
        if self._onnx is not None:
            pooled = self._onnx[sensor](x.numpy(), d.numpy(),
                                        None if mask is None else mask.numpy())
            return torch.from_numpy(pooled)
        backbone = m.s2_backbone if sensor == "s2" else m.s1_backbone
        with self._autocast():
            return backbone(x.to(m.dtype), d, mask)

    def embed(self, batch: DPixelBatch, pixel_ids: np.ndarray | None = None,
              progress: Task | None = None) -> EmbedResult:
        """Embed every pixel of `batch`. `pixel_ids` (default 0..N-1) seed the v1 draws;
        `progress` is advanced by the pixels done after every forward pass."""
        n = len(batch)
        if pixel_ids is None:
            pixel_ids = np.arange(n, dtype=np.int64)
        if self.sampling in BUCKETED:
            c2, c1 = s2_steps(batch), s1_candidates(batch, empty_orbit_step=False)
        else:
            c2, c1 = s2_candidates(batch), s1_candidates(batch)
        flags = (np.where(c2.any_valid, 0, FLAG_NO_S2) | np.where(c1.any_valid, 0, FLAG_NO_S1))
        if n == 0:
            return EmbedResult(np.zeros((0, self.dim), np.float32), flags.astype(np.uint8))
        # one autocast region around every forward pass of the call: bf16 casts each weight
        # once per call (autocast's cache lives until its outermost region ends), not per batch
        with torch.inference_mode(), self._autocast():
            h2 = self._encode("s2", c2, 2, pixel_ids, progress)
            h1 = self._encode("s1", c1, 1, pixel_ids, progress)
            k = _at_least(np.arange(n), MIN_ROWS)
            emb = self.model.fuse(h2[k], h1[k])[:n, :self.dim].float().cpu().numpy()
        return EmbedResult(emb, flags.astype(np.uint8))


# --- tiles ------------------------------------------------------------------------------------

@dataclasses.dataclass
class TileOutputs:
    embeddings: Path
    scales: Path
    flags: Path
    geotiffs: list[Path]
    n_pixels: int
    n_flagged: int


@dataclasses.dataclass
class Chunk:
    """Rows r0..r1 of a tile, embedded: int8 (h, W, D) codes, float32 (h, W) scales (NaN = no
    data: outside the ROI, or flagged), uint8 (h, W) FLAG_* bits."""

    r0: int
    r1: int
    q: np.ndarray
    scales: np.ndarray
    flags: np.ndarray


def check_embeddable(tile: Tile) -> None:
    """Refuse a tile the model cannot embed, before any output is made: one without S2 dates
    (every pixel would be no data)."""
    if tile.bands.shape[0] == 0:
        raise TileFormatError(f"{tile.path / 'bands.npy'}: no S2 dates; the model needs "
                              "Sentinel-2 observations (no S2 acquisition covered this tile in "
                              "its year?)")


def embed_chunks(embedder: Embedder, tile: Tile, *, keep_partial: bool = False,
                 chunk_pixels: int = 16384, progress: Progress | None = None,
                 description: str | None = None) -> Iterator[Chunk]:
    """Embed a tile a few rows at a time (about `chunk_pixels` pixels), in row order.

    Pixels outside the ROI are not computed. Pixels without any valid S2 or S1 observation are
    embedded as SPEC 5 says (all steps used) but get a NaN scale, unless `keep_partial` keeps
    those that lack only one sensor. A pixel's result does not depend on the chunking."""
    h, w = tile.shape
    latent = embedder.dim
    rows_per_chunk = max(1, chunk_pixels // max(w, 1))
    check_embeddable(tile)
    roi = tile.roi.reshape(-1) > 0
    bar = task(progress, description or f"embedding {tile.path.name}", total=int(roi.sum()),
               unit="px")
    for r0 in range(0, h, rows_per_chunk):
        r1 = min(h, r0 + rows_per_chunk)
        ids = np.arange(r0 * w, r1 * w, dtype=np.int64)
        inside = roi[ids]
        q = np.zeros((len(ids), latent), np.int8)
        s = np.full(len(ids), np.nan, np.float32)
        flags = np.full(len(ids), FLAG_OUTSIDE_ROI, np.uint8)
        if inside.any():
            batch = tile.read_rows(r0, r1).take(np.flatnonzero(inside))
            res = embedder.embed(batch, ids[inside], progress=bar)
            qi, si = quantize(res.embeddings)
            drop = (res.flags != 0) if not keep_partial else (
                res.flags == (FLAG_NO_S2 | FLAG_NO_S1))
            si[drop] = np.nan
            q[inside], s[inside], flags[inside] = qi, si, res.flags
        yield Chunk(r0, r1, q.reshape(r1 - r0, w, latent), s.reshape(r1 - r0, w),
                    flags.reshape(r1 - r0, w))


def embed_tile_arrays(embedder: Embedder, tile: Tile, *, keep_partial: bool = False,
                      chunk_pixels: int = 16384, progress: Progress | None = None,
                      description: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`embed_chunks` gathered in memory: (int8 (H, W, D), float32 (H, W), uint8 (H, W))."""
    h, w = tile.shape
    latent = embedder.dim
    q = np.zeros((h, w, latent), np.int8)
    s = np.full((h, w), np.nan, np.float32)
    f = np.zeros((h, w), np.uint8)
    for c in embed_chunks(embedder, tile, keep_partial=keep_partial, chunk_pixels=chunk_pixels,
                          progress=progress, description=description):
        q[c.r0:c.r1], s[c.r0:c.r1], f[c.r0:c.r1] = c.q, c.scales, c.flags
    return q, s, f


def embed_tile(embedder: Embedder, tile_dir: Tile | str | os.PathLike, out_dir: str | os.PathLike,
               name: str | None = None, *, geotiff: str | None = None, year: int | None = None,
               keep_partial: bool = False, chunk_pixels: int = 16384,
               progress: Progress | None = None, meta: dict[str, Any] | None = None
               ) -> TileOutputs:
    """Embed a tile folder (a path or an opened `Tile`) into `<out_dir>/<name>.npy` (int8,
    H x W x 128), `<name>_scales.npy` (float32, H x W; NaN = no data) and `<name>_flags.npy`
    (uint8 FLAG_* bits), streamed chunk by chunk into memory-mapped files written under
    temporary names and renamed when complete (see `embed_chunks` for what is computed).

    `geotiff`: None, "float32" or "int8" (see `tessera.geotiff`); its tags record the year
    (`year`, else the one the tile's sidecar records) and the model."""
    if geotiff is not None and geotiff not in tessera_geotiff.DTYPES:
        raise InputError(f"geotiff dtype {geotiff!r}: expected 'float32' or 'int8'")
    tile = tile_dir if isinstance(tile_dir, Tile) else Tile.open(tile_dir)
    check_embeddable(tile)
    out_dir = Path(out_dir)
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _embed_tile(embedder, tile, out_dir, name, geotiff, year, keep_partial,
                           chunk_pixels, progress, meta)
    except BaseException:
        for p in made:  # folders this call created and left empty go too
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


def _embed_tile(embedder: Embedder, tile: Tile, out_dir: Path, name: str | None,
                geotiff: str | None, year: int | None, keep_partial: bool, chunk_pixels: int,
                progress: Progress | None, meta: dict[str, Any] | None) -> TileOutputs:
    name = name or tile.path.resolve().name
    h, w = tile.shape
    latent = embedder.dim
    finals = {k: out_dir / f"{name}{suffix}" for k, suffix in
              (("emb", ".npy"), ("scales", "_scales.npy"), ("flags", "_flags.npy"))}
    # renamed in this order: a pair of embeddings and scales is complete once both exist
    with atomic_paths(list(finals.values()), needed=h * w * (latent + 5)) as tmps:
        q_out = _output_array(tmps[0], np.int8, (h, w, latent))
        s_out = _output_array(tmps[1], np.float32, (h, w))
        f_out = _output_array(tmps[2], np.uint8, (h, w))
        n_flagged = 0
        for c in embed_chunks(embedder, tile, keep_partial=keep_partial, chunk_pixels=chunk_pixels,
                              progress=progress, description=f"embedding {name}"):
            q_out[c.r0:c.r1], s_out[c.r0:c.r1], f_out[c.r0:c.r1] = c.q, c.scales, c.flags
            n_flagged += int(((c.flags != 0) & (c.flags != FLAG_OUTSIDE_ROI)).sum())
            release_pages(q_out, s_out, f_out)  # written pages go to disk, not RSS
        for arr in (q_out, s_out, f_out):
            arr.flush()
        geotiffs: list[Path] = []
        if geotiff is not None:
            year = year if year is not None else tile.recorded_year()
            tags = {**_provenance(embedder, meta), "year": "" if year is None else str(year),
                    "tile": name}
            geotiffs = write_geotiff(q_out, s_out, out_dir / f"{name}.tif", tile.crs,
                                     tile.transform, dtype=geotiff, tags=tags)
        del q_out, s_out, f_out
    return TileOutputs(finals["emb"], finals["scales"], finals["flags"], geotiffs, h * w, n_flagged)


def _output_array(path: Path, dtype: Any, shape: tuple[int, ...]) -> np.memmap[Any, Any]:
    """A memory-mapped .npy output whose disk blocks are reserved first: a full disk is an
    error now (ENOSPC), not a crash (SIGBUS) when a mapped page is written later."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it
            raise
    finally:
        os.close(fd)
    return arr


def _provenance(embedder: Embedder, meta: dict[str, Any] | None) -> dict[str, str]:
    meta = meta or {}
    return {"software": f"tessera-eo {__version__}",
            "model": model_label(meta, embedder.model.config),
            "family": embedder.family, "dims": str(embedder.dim),
            "preset": str(meta.get("preset")), "checkpoint": str(meta.get("path", "")),
            "random_init": str(bool(meta.get("random_init", False))),
            "sampling": embedder.sampling, "seed": str(embedder.seed),
            "precision": embedder.precision_label, "engine": embedder.engine}


def model_label(meta: dict[str, Any], config: Any = None) -> str:
    """The model id outputs record: the registered id (from the metadata, else the registered
    model with exactly this configuration), else `<family>-custom`."""
    if meta.get("model_id"):
        return str(meta["model_id"])
    if config is not None:
        spec = model_for_config(config)
        if spec is not None:
            return spec.id
    family = meta.get("family") or (family_of(config) if config is not None else "v1.0")
    return f"{family}-custom"


def write_geotiff(q: np.ndarray, scales: np.ndarray, path: Path, crs: Any, transform: Any,
                  dtype: str = "float32", tags: dict[str, str] | None = None) -> list[Path]:
    """GeoTIFF(s) of a tile's int8 codes (H, W, D) and scales (H, W) (arrays or memory maps) in
    its CRS and transform, written window by window (`tessera.geotiff.write_embeddings`)."""
    h, w, latent = q.shape

    def read(win: tessera_geotiff.Window) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = win.slices
        return np.asarray(q[rows, cols]), np.asarray(scales[rows, cols])

    encoding = "q*s" if dtype == "float32" else "int8 q; embedding = q * scale"
    return tessera_geotiff.write_embeddings(path, crs=crs, transform=transform, width=w, height=h,
                                            dim=latent, read=read, dtype=dtype,
                                            tags={**(tags or {}), "encoding": encoding})
