"""Region -> store in one command (`tessera run`), as dask.distributed tasks.

A region is cut into the 0.1 degree grid tiles of the store. For each tile two tasks run:

    preprocess  the tile's acquisitions -> d-pixel patch folders under the scratch folder
    embed       those patches -> the tile's int8 embeddings + scales, written into the store;
                then the tile's scratch folder is removed

so scratch disk is bounded by the tiles in flight, not by the region. Embedding tasks have the
higher priority: a worker that finishes a preprocessing task embeds that tile next, and the
other workers preprocess ahead of it (the published pipeline's bottleneck was preprocessing).
Where the cluster's workers declare dask resources, tasks ask for them: an embedding task
takes `EMBED=1` (give it to GPU workers: `dask worker ... --resources EMBED=1`, one embedding
at a time each) and every task declares its memory as `MEMORY` bytes.

Completion and resume: a tile is complete when its manifest row is written, which the store
does last, after the tile's files were renamed into place (`LocalStore.write_tile`). A rerun,
or a run after the scheduler restarted, plans only the tiles whose row is missing. A failed task
is retried `retries` times (a task on a lost worker is rescheduled by dask itself); a tile that
still fails is reported in the summary without stopping the others.

The same functions run in-process (`run_serial`): the reference the cluster run is compared
with, byte for byte (same model, seed and thread count give the same embeddings).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from tessera.errors import InputError, StoreError
from tessera.geo import GridTile
from tessera.preprocess.acquisition import Granule, Source, bbox_intersects
from tessera.preprocess.compose import ComposeOptions
from tessera.preprocess.pipeline import Plan
from tessera.progress import Progress, task
from tessera.store.local import LocalStore
from tessera.store.manifest import ManifestError, TileEntry

if TYPE_CHECKING:
    from distributed import Client

#: bytes per pixel of a tile held while embedding it: int8 codes, float32 scale, the ROI, and
#: the patch arrays being read (the model's own memory is added separately)
EMBED_BYTES_PER_PX = 128 + 4 + 1 + 64
#: bytes per pixel of the int8 + scale files a store keeps per tile-year
STORE_BYTES_PER_PX = 128 + 4


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """Which weights embed, and how: picklable, so every worker builds the same Embedder."""

    checkpoint: str | None = None
    model: str | None = None
    seed: int = 0
    batch_size: int | None = None
    sampling: str | None = None
    precision: str = "fp32"   # fp32 (exact, default) | bf16 | int8: recorded in the manifest
    engine: str = "torch"     # torch | onnx
    device: str = "auto"

    @property
    def precision_label(self) -> str:
        from tessera.infer import precision_label
        return precision_label(self.precision, self.engine)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a tile task needs besides its own plan. Paths are absolute (workers may run
    elsewhere: the store and the scratch folder must then be on a shared filesystem)."""

    store: str
    year: int
    model: ModelChoice = ModelChoice()
    resolution: float = 10.0
    patch_size: int = 500
    compose: ComposeOptions = ComposeOptions()
    threads: int = 1          # torch / GDAL threads inside one task
    scratch: str = ""         # default: <store>/.scratch
    retries: int = 2
    version: str = ""         # provenance, filled by `plan_run` from the model
    model_id: str = ""
    weights: str = ""

    @property
    def scratch_dir(self) -> Path:
        return Path(self.scratch) if self.scratch else Path(self.store) / ".scratch"

    def token(self) -> str:
        """Names this run's dask tasks: the same config gives the same keys."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


@dataclasses.dataclass
class TileJob:
    """One grid tile to make: its preprocessing plan (the granules touching it) and size."""

    tile: str
    plan: Plan
    pixels: int

    @property
    def dates(self) -> int:
        return len(self.plan.s2) + len(self.plan.s1)

    def memory(self) -> int:
        """Bytes one task of this tile may hold (declared to dask as the MEMORY resource)."""
        return self.pixels * EMBED_BYTES_PER_PX + 256 * 2**20


@dataclasses.dataclass
class RunPlan:
    """What a run will do: tiles to make, tiles already in the store, tiles without data."""

    config: RunConfig
    jobs: list[TileJob]
    done: list[str]
    empty: dict[str, str]     # tile -> why nothing can be made (no Sentinel-2 acquisition)
    source: dict[str, Any]

    @property
    def pixels(self) -> int:
        return sum(j.pixels for j in self.jobs)

    def describe(self) -> list[str]:
        c = self.config
        n = len(self.jobs) + len(self.done) + len(self.empty)
        dates = sorted({j.dates for j in self.jobs})
        return [f"store     {c.store} (year {c.year})",
                f"model     {c.model_id or c.model.model or 'default'}"
                + (f", weights {c.weights}" if c.weights else "")
                + f", {c.model.precision_label} ({c.model.engine})",
                f"tiles     {n} in the region: {len(self.jobs)} to make, {len(self.done)} "
                f"already in the store, {len(self.empty)} without Sentinel-2 data",
                f"pixels    {self.pixels:,} to embed at {c.resolution:g} m",
                "dates     " + (f"{dates[0]}-{dates[-1]} granules per tile" if dates else "-"),
                f"output    {_human(self.pixels * STORE_BYTES_PER_PX)} of embeddings",
                f"scratch   {c.scratch_dir} (about {_human(self.scratch_per_tile())} per tile "
                "in flight)"]

    def scratch_per_tile(self) -> int:
        return max((j.plan.estimate_bytes() for j in self.jobs), default=0)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PB"


# --- planning (the driver) ---------------------------------------------------------------------

def _search(source: Source, tiles: list[GridTile], year: int, resolution: float
            ) -> list[Granule]:
    """One search per UTM zone over the zone's tiles (not one per tile: STAC is remote)."""
    from tessera.geo import TargetGrid

    found: dict[str, Granule] = {}
    by_zone: dict[int, list[GridTile]] = {}
    for t in tiles:
        by_zone.setdefault(t.epsg, []).append(t)
    for zone_tiles in by_zone.values():
        w = min(t.bounds[0] for t in zone_tiles)
        s = min(t.bounds[1] for t in zone_tiles)
        e = max(t.bounds[2] for t in zone_tiles)
        n = max(t.bounds[3] for t in zone_tiles)
        grid = TargetGrid.from_bbox(w, s, e, n, max(resolution, 100.0), "search")
        for g in source.search(grid, year):
            if g.date.year == year:
                found.setdefault(f"{g.sensor}/{g.orbit}/{g.id}/{g.date}", g)
    return list(found.values())


def plan_run(source: Source, tiles: Iterable[GridTile], config: RunConfig,
             meta: dict[str, Any] | None = None, weights: str | os.PathLike | None = None
             ) -> RunPlan:
    """Search the source once, split the granules over the tiles, and leave out the tiles the
    store already holds for the year. `meta` / `weights` (from `resolve_model`) fill the
    provenance the store records and checks (one model per year, refused up front)."""
    from tessera.pipeline.embed_store import provenance

    tiles = list(dict.fromkeys(tiles))
    if not tiles:
        raise InputError("the region covers no grid tile")
    if not 2015 <= config.year <= 2100:
        raise InputError(f"year {config.year}: Sentinel-1/2 data exist from 2014/2015 on")
    if meta is not None:
        version, model_id, weights_id = provenance(meta, Path(weights) if weights else None)
        config = dataclasses.replace(config, version=version, model_id=model_id,
                                     weights=weights_id)
    store = LocalStore(config.store)
    done: list[str] = []
    if store.root.exists():
        try:
            manifest = store.manifest_for_writing()
            held = {e.tile for e in manifest.query(year=config.year).entries()}
            probe = TileEntry(tiles[0].name, tiles[0].lon, tiles[0].lat, config.year,
                              config.version, "", (), 0, 0, 0, {}, model=config.model_id,
                              weights=config.weights,
                              precision=config.model.precision_label)
            manifest.check_one_model(config.year, adding=probe)
        except ManifestError as exc:
            raise StoreError(f"{store.root}: {exc}") from None
        done = [t.name for t in tiles if t.name in held]
    granules = _search(source, [t for t in tiles if t.name not in done], config.year,
                       config.resolution)
    desc = source.describe()
    jobs, empty = [], {}
    for t in tiles:
        if t.name in done:
            continue
        grid = t.target_grid(config.resolution)
        bounds = grid.lonlat_bounds()
        near = [g for g in granules if bbox_intersects(g.bbox, bounds)]
        s2 = [g for g in near if g.sensor == "s2"]
        s1 = [g for g in near if g.sensor == "s1"]
        if not s2:
            empty[t.name] = f"no Sentinel-2 acquisition in {config.year}"
            continue
        plan = Plan(grid, config.year, config.patch_size, grid.patches(config.patch_size), s2, s1,
                    desc)
        jobs.append(TileJob(t.name, plan, grid.width * grid.height))
    return RunPlan(config, jobs, done, empty, desc)


# --- the two tasks of a tile (run on workers) ---------------------------------------------------

_EMBEDDERS: dict[tuple[ModelChoice, int], Any] = {}


def _embedder(choice: ModelChoice, threads: int) -> Any:
    """One Embedder per worker process and model: loading weights once, not per tile."""
    from tessera.infer import Embedder, resolve_model

    key = (choice, threads)
    if key not in _EMBEDDERS:
        net, _ = resolve_model(choice.checkpoint, seed=choice.seed, model=choice.model)
        _EMBEDDERS[key] = Embedder(net, device=choice.device, batch_size=choice.batch_size,
                                   sampling=choice.sampling,  # type: ignore[arg-type]
                                   seed=choice.seed, precision=choice.precision,
                                   engine=choice.engine)
    return _EMBEDDERS[key]


class _torch_threads:
    """Run a task on `n` torch threads and give the process its setting back afterwards."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        import torch
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        import torch
        torch.set_num_threads(self.before)


def preprocess_tile(job: TileJob, config: RunConfig) -> str:
    """Task 1: the tile's patch folders under the scratch folder (resumes finished patches)."""
    from tessera.preprocess.pipeline import run

    out = config.scratch_dir / str(config.year) / job.tile
    run(job.plan, out, config.compose, workers=config.threads)
    return str(out)


def embed_tile(tile: str, scratch: str, config: RunConfig) -> dict[str, Any]:
    """Task 2: embed the preprocessed tile into the store (manifest row last), then drop its
    scratch folder. Returns what the summary reports."""
    from tessera.pipeline.embed_store import embed_to_store

    t0 = time.perf_counter()
    with _torch_threads(config.threads):
        embedder = _embedder(config.model, config.threads)
        entry = embed_to_store(embedder, scratch, LocalStore(config.store), config.year,
                               grid_tile=tile, version=config.version, model=config.model_id,
                               weights=config.weights)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"tile": tile, "pixels": entry.width * entry.height, "valid": entry.valid_pixels,
            "seconds": time.perf_counter() - t0}


# --- running -----------------------------------------------------------------------------------

@dataclasses.dataclass
class RunReport:
    done: list[dict[str, Any]]
    failed: dict[str, str]     # tile -> the error
    skipped: list[str]         # already in the store
    empty: dict[str, str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failed

    def pixels_per_s(self) -> float:
        return sum(d["pixels"] for d in self.done) / max(self.seconds, 1e-9)

    def summary(self) -> list[str]:
        lines = [f"{len(self.done)} tile(s) made, {len(self.skipped)} already in the store, "
                 f"{len(self.empty)} without data, {len(self.failed)} failed, in "
                 f"{self.seconds:.1f} s ({self.pixels_per_s():,.0f} px/s)"]
        lines += [f"  no data  {t}: {why}" for t, why in self.empty.items()]
        lines += [f"  FAILED   {t}: {why}" for t, why in self.failed.items()]
        return lines


OnTile = Callable[[str, str, dict[str, Any]], None]  # (tile, "done" | "failed", details)


class _Tally:
    """What both runners record per finished tile: the report's lists, the bars (status: done /
    failed / left) and the caller's `on_tile`."""

    def __init__(self, plan: RunPlan, progress: Progress | None, on_tile: OnTile | None,
                 count_pixels: bool) -> None:
        self.plan, self.on_tile, self.t0 = plan, on_tile, time.perf_counter()
        self.bar = task(progress, "tiles", total=len(plan.jobs))
        self.pixels = task(progress, "pixels", total=plan.pixels, unit="px") if count_pixels \
            else None
        self.done: list[dict[str, Any]] = []
        self.failed: dict[str, str] = {}

    def _advance(self) -> None:
        left = len(self.plan.jobs) - len(self.done) - len(self.failed)
        self.bar.advance(1, f"{len(self.done)} done, {len(self.failed)} failed, {left} left")

    def made(self, tile: str, res: dict[str, Any]) -> None:
        self.done.append(res)
        self._advance()
        if self.pixels is not None:
            self.pixels.advance(res["pixels"])
        if self.on_tile:
            self.on_tile(tile, "done", res)

    def lost(self, tile: str, exc: BaseException | None) -> None:
        self.failed[tile] = _error_line(exc)
        self._advance()
        if self.on_tile:
            self.on_tile(tile, "failed", {"error": self.failed[tile]})

    def report(self) -> RunReport:
        return RunReport(self.done, self.failed, self.plan.done, self.plan.empty,
                         time.perf_counter() - self.t0)


def _error_line(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def run_serial(plan: RunPlan, progress: Progress | None = None,
               on_tile: OnTile | None = None) -> RunReport:
    """Every tile in this process, one after the other: the reference for the cluster run, and
    what a run without dask.distributed does."""
    tally = _Tally(plan, progress, on_tile, count_pixels=False)
    for job in plan.jobs:
        err: BaseException | None = None
        for _ in range(plan.config.retries + 1):
            try:
                res = embed_tile(job.tile, preprocess_tile(job, plan.config), plan.config)
                break
            except Exception as exc:  # noqa: BLE001 - reported per tile, the others go on
                err = exc
        else:
            tally.lost(job.tile, err)
            continue
        tally.made(job.tile, res)
    return tally.report()


def _worker_resources(client: Client) -> dict[str, float]:
    """The largest amount of each resource one worker of the cluster declares."""
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else \
        client.scheduler_info()
    most: dict[str, float] = {}
    for w in info.get("workers", {}).values():
        for k, v in (w.get("resources") or {}).items():
            most[k] = max(most.get(k, 0.0), float(v))
    return most


def check_memory(jobs: list[TileJob], memory: float | None) -> None:
    """A task asking for more MEMORY than any worker has would wait forever: refuse first."""
    if memory is None:
        return
    big = [j for j in jobs if j.memory() > memory]
    if big:
        j = max(big, key=TileJob.memory)
        raise InputError(f"tile {j.tile} needs about {_human(j.memory())} to embed but the "
                         f"largest worker declares MEMORY={_human(memory)}; give the workers "
                         "more memory (--memory-limit, or dask worker --resources MEMORY=...)")


def _takes_n_workers(client: Client) -> bool:
    import inspect
    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def run_distributed(plan: RunPlan, client: Client, progress: Progress | None = None,
                    on_tile: OnTile | None = None) -> RunReport:
    """Every tile as two tasks on `client`'s cluster (see the module docstring); returns when
    each tile is made or has failed its retries."""
    from distributed import as_completed

    cfg = plan.config
    tally = _Tally(plan, progress, on_tile, count_pixels=True)
    have = _worker_resources(client)
    check_memory(plan.jobs, have.get("MEMORY"))
    token = cfg.token()
    futures = {}
    for job in plan.jobs:
        mem = {"MEMORY": job.memory()} if "MEMORY" in have else {}
        pre = client.submit(preprocess_tile, job, cfg, key=f"preprocess-{job.tile}-{token}",
                            retries=cfg.retries, priority=0, resources=mem or None, pure=False)
        emb_res = {**mem, **({"EMBED": 1} if "EMBED" in have else {})}
        emb = client.submit(embed_tile, job.tile, pre, cfg, key=f"embed-{job.tile}-{token}",
                            retries=cfg.retries, priority=10, resources=emb_res or None,
                            pure=False)
        futures[emb] = job
    for fut in as_completed(list(futures)):
        job = futures[fut]
        if fut.status == "finished":
            tally.made(job.tile, fut.result())
        else:
            tally.lost(job.tile, fut.exception())
        fut.release()
    return tally.report()


def local_cluster(workers: int, threads: int = 1, memory_limit: str | int = "auto",
                  resources: dict[str, float] | None = None) -> Any:
    """A LocalCluster of `workers` processes with `threads` threads each (nannies restart a
    lost worker). MEMORY is declared per worker so tasks declare theirs against it."""
    from distributed import LocalCluster
    from distributed.system import MEMORY_LIMIT

    if workers < 1:
        raise InputError(f"--workers {workers}: expected at least 1")
    per_worker = (MEMORY_LIMIT // workers) if memory_limit == "auto" else memory_limit
    res = {"MEMORY": float(_bytes(per_worker)), **(resources or {})}
    return LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                        memory_limit=per_worker, resources=res, dashboard_address=None)


def _bytes(v: str | int) -> int:
    from dask.utils import parse_bytes
    return int(parse_bytes(v)) if isinstance(v, str) else int(v)


__all__ = ["ModelChoice", "RunConfig", "RunPlan", "RunReport", "TileJob", "embed_tile",
           "local_cluster", "plan_run", "preprocess_tile", "run_distributed", "run_serial"]
