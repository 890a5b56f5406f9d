"""Global shuffling (SPEC section 4): shards of pixels mixed across many tiles, and their loader.

Neighbouring pixels are highly correlated, so a minibatch must mix pixels from many tiles and
regions. `write_shards` reads sources (tile folders or in-memory d-pixel batches) `group_size`
at a time, keeps the pixels with enough valid dates, applies ONE random permutation to all
pixels of the group and writes fixed-size shards (the last one may be short); the pixels left
over at the end of a group are carried into the next group's shards. Each shard is a folder of
`.npy` files holding the valid observations as ragged arrays (`views.Ragged`) plus the source and
pixel index of every sample; `manifest.json` records counts, sources, seed and settings.

`ShardStream` is the training loader: each epoch it shuffles the shard order, takes `buffer`
shards at a time, shuffles their samples again and cuts the resulting stream into global
batches; rank r of a world of W takes the r-th slice of each global batch and DataLoader worker w
of a rank takes every w-th batch, so no sample is seen twice or skipped. All of it is a
function of (seed, epoch), which makes resuming exact: start at batch k and the rest is
identical.

The world size changes nothing but who holds which rows: global batch k of W ranks with B each
is, concatenated in rank order, exactly batch k of one process with W x B (the same samples in
the same order, with the same views: a rank draws its rows' views from the global batch's random
stream, see `views.draw_view`). So a run may resume on another number of ranks at the same global
batch, and the DDP loss, which is computed on the gathered global batch, is that of one process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from tessera.atomic import tmp_dir
from tessera.dpixel import DPixelBatch, Tile, npy_header
from tessera.errors import ShardError, TileFormatError
from tessera.train.views import MIN_VALID, VIEW_STEPS, Ragged, View, draw_views, ragged_from_batch

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_ARRAYS = ("s2", "s2_doy", "s2_off", "s1", "s1_doy", "s1_off", "source", "pixel")


# --- sources --------------------------------------------------------------------------------

class ShardSource(Protocol):
    """Anything with a name and an iterator over its d-pixels in chunks."""

    @property
    def name(self) -> str: ...

    def chunks(self) -> Iterator[DPixelBatch]: ...


@dataclasses.dataclass
class TileSource:
    """A tile folder in the published layout, read a few rows at a time; ROI pixels only."""

    path: Path
    rows_per_chunk: int = 64

    @property
    def name(self) -> str:
        return str(self.path)

    def chunks(self) -> Iterator[DPixelBatch]:
        tile = Tile.open(self.path)
        h, w = tile.shape
        for r0 in range(0, h, self.rows_per_chunk):
            r1 = min(h, r0 + self.rows_per_chunk)
            batch = tile.read_rows(r0, r1)
            roi = np.asarray(tile.roi[r0:r1]).reshape(-1) > 0
            yield _masked(batch, roi)


def _masked(batch: DPixelBatch, keep: np.ndarray) -> DPixelBatch:
    """Pixels outside `keep` lose every observation (so the validity filter drops them) while
    pixel indices stay those of the source."""
    if keep.all():
        return batch
    out = dataclasses.replace(batch, s2_valid=batch.s2_valid & keep[:, None],
                              s1_asc_present=batch.s1_asc_present & keep[:, None],
                              s1_desc_present=batch.s1_desc_present & keep[:, None])
    return out


@dataclasses.dataclass
class BatchSource:
    """An in-memory d-pixel batch (point tables, cubes) under a name."""

    name: str
    batch: DPixelBatch

    def chunks(self) -> Iterator[DPixelBatch]:
        yield self.batch


# --- writing --------------------------------------------------------------------------------

def _seed_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in key])


def _load_source(src: ShardSource, min_s2: int, min_s1: int, max_pixels: int | None,
                 rng: np.random.Generator) -> tuple[Ragged, np.ndarray, int]:
    """(kept pixels, their pixel indices in the source, total pixels in the source)."""
    parts, idx, seen = [], [], 0
    for chunk in src.chunks():
        r, keep = ragged_from_batch(chunk, min_s2, min_s1)
        parts.append(r)
        idx.append(keep + seen)
        seen += len(chunk)
    ragged = Ragged.concat(parts)
    pixel = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    if max_pixels is not None and len(pixel) > max_pixels:
        pick = np.sort(rng.choice(len(pixel), max_pixels, replace=False))
        ragged, pixel = ragged.take(pick), pixel[pick]
    return ragged, pixel, seen


def _save_shard(root: Path, name: str, data: Ragged, source: np.ndarray, pixel: np.ndarray
                ) -> None:
    arrays = {**dataclasses.asdict(data), "source": source.astype(np.int32),
              "pixel": pixel.astype(np.int64)}
    for key in _ARRAYS:
        np.save(root / name / f"{key}.npy", arrays[key])


def write_shards(sources: Iterable[ShardSource], out: str | os.PathLike, *,
                 shard_size: int = 1_000_000, group_size: int = 200, seed: int = 0,
                 min_s2: int = MIN_VALID, min_s1: int = MIN_VALID,
                 max_pixels_per_source: int | None = None, progress=None) -> dict:
    """Write globally shuffled shards to `out` (created; must not exist or be empty).

    Everything goes to a temporary folder beside `out`, renamed into place at the end, so an
    interrupted run leaves nothing that looks finished. Returns the manifest.
    `progress(source_name, kept, total)` is called after each source.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ShardError(f"{out}: output folder exists and is not empty; choose a new folder")
    if shard_size < 1 or group_size < 1:
        raise ShardError(f"shard_size and group_size must be >= 1 (got {shard_size}, {group_size})")
    sources = list(sources)
    if not sources:
        raise ShardError("write_shards: no sources given")
    tmp = tmp_dir(out)
    try:
        shards: list[dict] = []
        records: list[dict] = []
        pending: list[tuple[Ragged, np.ndarray, np.ndarray]] = []
        n_pending = 0

        def flush(final: bool) -> None:
            nonlocal pending, n_pending
            if not pending:
                return
            data = Ragged.concat([p[0] for p in pending])
            src = np.concatenate([p[1] for p in pending])
            pix = np.concatenate([p[2] for p in pending])
            start = 0
            while len(src) - start >= shard_size or (final and start < len(src)):
                stop = min(len(src), start + shard_size)
                name = f"shard_{len(shards):05d}"
                (tmp / name).mkdir()
                sel = np.arange(start, stop)
                _save_shard(tmp, name, data.take(sel), src[sel], pix[sel])
                shards.append({"name": name, "samples": int(stop - start),
                               "sources": int(len(np.unique(src[sel])))})
                start = stop
            rest = np.arange(start, len(src))
            pending = [(data.take(rest), src[rest], pix[rest])] if len(rest) else []
            n_pending = len(rest)

        for g0 in range(0, len(sources), group_size):
            group = sources[g0:g0 + group_size]
            rng = _seed_rng(seed, 1, g0)
            datas, srcs, pixs = [], [], []
            for k, s in enumerate(group):
                data, pixel, total = _load_source(s, min_s2, min_s1, max_pixels_per_source, rng)
                datas.append(data)
                srcs.append(np.full(len(pixel), g0 + k, np.int32))
                pixs.append(pixel)
                records.append({"name": s.name, "pixels": int(total), "kept": int(len(pixel))})
                if progress is not None:
                    progress(s.name, len(pixel), total)
            data = Ragged.concat(datas)
            perm = rng.permutation(len(data))  # one permutation across the whole group
            pending.append((data.take(perm), np.concatenate(srcs)[perm],
                            np.concatenate(pixs)[perm]))
            n_pending += len(perm)
            flush(final=False)
        flush(final=True)
        total = sum(s["samples"] for s in shards)
        if total == 0:
            raise ShardError(f"no pixel has >= {min_s2} valid S2 and >= {min_s1} valid S1 dates "
                             f"in {len(sources)} source(s); lower --min-s2/--min-s1?")
        manifest = {"format": "tessera-shards", "version": FORMAT_VERSION, "seed": seed,
                    "shard_size": shard_size, "group_size": group_size, "min_s2": min_s2,
                    "min_s1": min_s1, "max_pixels_per_source": max_pixels_per_source,
                    "samples": total, "shards": shards, "sources": records}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- reading --------------------------------------------------------------------------------

def read_manifest(root: str | os.PathLike) -> dict:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise ShardError(f"{root}: no {MANIFEST}; not a shard folder written by `tessera shards`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShardError(f"{path}: not valid JSON ({e})") from None
    if manifest.get("format") != "tessera-shards":
        raise ShardError(f"{path}: field 'format' is {manifest.get('format')!r}, "
                         "expected 'tessera-shards'")
    if manifest.get("version") != FORMAT_VERSION:
        raise ShardError(f"{path}: field 'version' is {manifest.get('version')!r}, "
                         f"expected {FORMAT_VERSION}")
    for s in manifest["shards"]:
        missing = [k for k in _ARRAYS if not (root / s["name"] / f"{k}.npy").is_file()]
        if missing:
            raise ShardError(f"{root / s['name']}: missing {', '.join(k + '.npy' for k in missing)}")
        for k in _ARRAYS:  # headers and sizes only: a truncated file is named before training
            try:
                npy_header(root / s["name"] / f"{k}.npy")
            except TileFormatError as exc:
                raise ShardError(str(exc)) from None
    return manifest


@dataclasses.dataclass
class Shard:
    """One shard, memory-mapped."""

    data: Ragged
    source: np.ndarray
    pixel: np.ndarray

    @classmethod
    def open(cls, root: Path, name: str, n: int) -> "Shard":
        a = {}
        for k in _ARRAYS:
            path = root / name / f"{k}.npy"
            try:
                a[k] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:  # changed since read_manifest checked it
                raise ShardError(f"{path}: not a readable shard array ({exc})") from None
        if len(a["source"]) != n or len(a["s2_off"]) != n + 1 or len(a["s1_off"]) != n + 1:
            raise ShardError(f"{root / name}: holds {len(a['source'])} samples, the manifest "
                             f"says {n}")
        data = Ragged(s2=a["s2"], s2_doy=a["s2_doy"], s2_off=np.asarray(a["s2_off"]),
                      s1=a["s1"], s1_doy=a["s1_doy"], s1_off=np.asarray(a["s1_off"]))
        return cls(data=data, source=a["source"], pixel=a["pixel"])


@dataclasses.dataclass
class Batch:
    """What the loader yields: two views of one rank's slice of a global batch."""

    view1: View
    view2: View
    source: torch.Tensor  # (B,) source index of each sample (for the spatial-mixing metric)
    pixel: torch.Tensor  # (B,) pixel index within its source
    index: int  # global batch number within the epoch


def _collate_identity(batch):
    return batch


class ShardStream(IterableDataset):
    """Epoch-wise stream of (view, view) batches over a shard folder; see the module docstring.

    `batch_size` is per rank. `start_batch` skips that many global batches (resume). With
    `drop_last` the final partial global batch of an epoch is dropped (training, where every
    rank must see the same batch size); without it that batch is split as evenly as possible.
    """

    def __init__(self, root: str | os.PathLike, batch_size: int, *, seed: int = 0, epoch: int = 0,
                 rank: int = 0, world: int = 1, buffer: int = 20, start_batch: int = 0,
                 drop_last: bool = True, steps: int = VIEW_STEPS) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.batch_size, self.seed, self.epoch = batch_size, seed, epoch
        self.rank, self.world, self.buffer = rank, world, max(1, buffer)
        self.start_batch, self.drop_last, self.steps = start_batch, drop_last, steps

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    def batches_per_epoch(self) -> int:
        n = self.manifest["samples"]
        return n // self.global_batch if self.drop_last else -(-n // self.global_batch)

    def _epoch_groups(self) -> list[list[int]]:
        order = _seed_rng(self.seed, 2, self.epoch).permutation(len(self.manifest["shards"]))
        return [list(order[i:i + self.buffer]) for i in range(0, len(order), self.buffer)]

    def _refs(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(shard number, row) of every sample in epoch order, one buffer group at a time."""
        shards = self.manifest["shards"]
        for g, group in enumerate(self._epoch_groups()):
            sid = np.concatenate([np.full(shards[s]["samples"], s, np.int32) for s in group])
            row = np.concatenate([np.arange(shards[s]["samples"]) for s in group])
            perm = _seed_rng(self.seed, 3, self.epoch, g).permutation(len(sid))
            yield sid[perm], row[perm]

    def batch_refs(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(global batch number, shard numbers, rows) of THIS rank's slice, for every batch."""
        for b, sid, row, _ in self._slices():
            yield b, sid, row

    def _slices(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, tuple[int, int]]]:
        """`batch_refs` plus where the slice sits: (offset in the global batch, its size)."""
        gb, carry_s, carry_r, b = self.global_batch, np.zeros(0, np.int32), np.zeros(0, int), 0
        for sid, row in self._refs():
            sid, row = np.concatenate([carry_s, sid]), np.concatenate([carry_r, row])
            n_full = len(sid) // gb
            for k in range(n_full):
                lo = k * gb + self.rank * self.batch_size
                yield (b, sid[lo:lo + self.batch_size], row[lo:lo + self.batch_size],
                       (self.rank * self.batch_size, gb))
                b += 1
            carry_s, carry_r = sid[n_full * gb:], row[n_full * gb:]
        if len(carry_s) and not self.drop_last:
            part = np.array_split(np.arange(len(carry_s)), self.world)[self.rank]
            offset = int(part[0]) if len(part) else 0
            yield b, carry_s[part], carry_r[part], (offset, len(carry_s))

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        opened: dict[int, Shard] = {}
        shards = self.manifest["shards"]
        for b, sid, row, part in self._slices():
            if b < self.start_batch or (b - self.start_batch) % nw != wid or len(sid) == 0:
                continue
            current = {int(s) for s in np.unique(sid)}
            if len(opened) > 2 * self.buffer:  # the buffer and the carry from the previous one
                opened = {s: sh for s, sh in opened.items() if s in current}
            for s in current - set(opened):
                opened[s] = Shard.open(self.root, shards[s]["name"], shards[s]["samples"])
            parts, src, pix = [], [], []
            order = np.argsort(sid, kind="stable")
            for s in np.unique(sid):
                sel = order[sid[order] == s]
                shard = opened[int(s)]
                parts.append((sel, shard.data.take(row[sel])))
                src.append((sel, shard.source[row[sel]]))
                pix.append((sel, shard.pixel[row[sel]]))
            inv = np.argsort(np.concatenate([p[0] for p in parts]), kind="stable")
            data = Ragged.concat([p[1] for p in parts]).take(inv)
            source = np.concatenate([s[1] for s in src])[inv]
            pixel = np.concatenate([p[1] for p in pix])[inv]
            # one stream per global batch (the trailing 0 was the rank: world 1 draws as before),
            # this rank's rows of it: a sample's views do not depend on the number of ranks
            rng = _seed_rng(self.seed, 4, self.epoch, b, 0)
            v1, v2 = draw_views(data, rng, self.steps, part)
            yield Batch(view1=v1, view2=v2, source=torch.from_numpy(source.astype(np.int64)),
                        pixel=torch.from_numpy(pixel.astype(np.int64)), index=b)


def loader(stream: ShardStream, workers: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader over `stream` (batches are already formed; workers interleave in order)."""
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                       collate_fn=_collate_identity,
                                       persistent_workers=False, prefetch_factor=4 if workers else None)


def sources_per_batch(root: str | os.PathLike, batch_size: int, n_batches: int = 50,
                      seed: int = 0, buffer: int = 20) -> float:
    """Spatial mixing: mean number of distinct sources (tiles) per minibatch of `batch_size`
    over the first `n_batches` batches of epoch 0, computed without drawing views."""
    stream = ShardStream(root, batch_size, seed=seed, buffer=buffer)
    shards = stream.manifest["shards"]
    counts, opened = [], {}
    for b, sid, row in stream.batch_refs():
        if b >= n_batches:
            break
        src = []
        for s in np.unique(sid):
            if int(s) not in opened:
                opened[int(s)] = np.load(Path(root) / shards[s]["name"] / "source.npy",
                                         mmap_mode="r")
            src.append(np.asarray(opened[int(s)][row[sid == s]]))
        counts.append(len(np.unique(np.concatenate(src))))
    return float(np.mean(counts)) if counts else 0.0
