"""What a region costs (`tessera plan`): sizes from the grid, times from a measured calibration.

Sizes: the grid tiles' rasters at the resolution (pixels), the acquisitions read per pixel and
date (input), the int8 + scale files a store keeps (output) and the d-pixel scratch of a tile
in flight. Times: one small SIMULATED tile is preprocessed and embedded on this machine with the
chosen model (the same code as `tessera run`), which gives seconds per pixel-date of
preprocessing and pixels per second of embedding per core; a cluster is that rate times its
cores, or, with GPUs, embedding at the GPUs' given rate while the CPUs preprocess (pipelined).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path

from tessera.geo import GridTile, parse_tile_name
from tessera.pipeline.run import STORE_BYTES_PER_PX, ModelChoice, RunConfig, _human

#: bytes read per pixel and acquisition, uncompressed: S2 4 bands at 10 m + 6 at 20 m (uint16)
#: + SCL at 20 m; S1 VV and VH as float32
S2_IN_BYTES = 4 * 2 + 6 * 2 / 4 + 1 / 4
S1_IN_BYTES = 2 * 4
#: d-pixel scratch per pixel and acquisition: S2 10 bands int16 + mask; S1 2 int16
S2_SCRATCH_BYTES, S1_SCRATCH_BYTES = 21, 4


@dataclasses.dataclass
class RegionSize:
    tiles: int
    pixels: int
    largest_tile: int
    s2_dates: int
    s1_dates: int
    resolution: float

    @classmethod
    def of(cls, tiles: list[GridTile], resolution: float, s2_dates: int, s1_dates: int
           ) -> RegionSize:
        sizes = [g.width * g.height for g in (t.target_grid(resolution) for t in tiles)]
        return cls(len(tiles), sum(sizes), max(sizes, default=0), s2_dates, s1_dates,
                   resolution)

    @property
    def input_bytes(self) -> float:
        return self.pixels * (self.s2_dates * S2_IN_BYTES + self.s1_dates * S1_IN_BYTES)

    @property
    def output_bytes(self) -> float:
        return self.pixels * (STORE_BYTES_PER_PX + 1)

    @property
    def scratch_per_tile(self) -> float:
        return self.largest_tile * (self.s2_dates * S2_SCRATCH_BYTES
                                    + self.s1_dates * S1_SCRATCH_BYTES)

    def describe(self) -> list[str]:
        return [f"tiles        {self.tiles:,} grid tiles of 0.1 degree",
                f"pixels       {self.pixels:,} at {self.resolution:g} m",
                f"dates        {self.s2_dates} Sentinel-2 + {self.s1_dates} Sentinel-1 per tile "
                "(assumed)",
                f"input        {_human(self.input_bytes)} read (uncompressed)",
                f"output       {_human(self.output_bytes)} of int8 embeddings + scales",
                f"scratch      {_human(self.scratch_per_tile)} per tile in flight"]


@dataclasses.dataclass
class Calibration:
    """Measured on this machine: preprocessing seconds per pixel-date and embedding pixels per
    second, each per CPU core (the calibration ran on `cores` threads)."""

    model: str
    cores: int
    pixels: int
    preprocess_s_per_px_date: float   # per core
    embed_px_per_s: float             # per core

    def describe(self) -> str:
        return (f"{self.model}: preprocessing {1 / self.preprocess_s_per_px_date:,.0f} "
                f"pixel-dates/s per core, embedding {self.embed_px_per_s:,.0f} px/s per core "
                f"(measured on a {self.pixels:,} px simulated tile with {self.cores} threads)")


def calibrate(model: str | None = None, checkpoint: str | None = None, pixels: int = 2000,
              s2_dates: int = 40, s1_dates: int = 40, threads: int | None = None,
              tile: str = "grid_0.05_45.05") -> Calibration:
    """Preprocess and embed one simulated tile of about `pixels` pixels (`tessera run`'s own
    tasks) and time both."""
    from tessera.cpus import available_cpus
    from tessera.infer import resolve_model
    from tessera.pipeline.run import _embedder, embed_tile, plan_run, preprocess_tile
    from tessera.preprocess.sources.files import FilesSource
    from tessera.preprocess.synthetic import write_noise_region

    cores = threads or available_cpus()
    t = parse_tile_name(tile)
    g10 = t.target_grid(10.0)
    resolution = max(10.0, 10.0 * math.sqrt(g10.width * g10.height / max(pixels, 1)))
    choice = ModelChoice(checkpoint, model)
    net, meta = resolve_model(checkpoint, model=model)
    del net
    with tempfile.TemporaryDirectory(prefix="tessera-calibrate-") as tmp:
        info = write_noise_region(Path(tmp) / "src", [t], resolution, s2_dates, s1_dates)
        src = FilesSource(s2=info["s2"], s1=info["s1"])
        cfg = RunConfig(str(Path(tmp) / "store"), 2022, choice, resolution, 10_000,
                        threads=cores)
        plan = plan_run(src, [t], cfg, meta)
        job = plan.jobs[0]
        _embedder(choice, cores)  # the weights load once per worker, not per tile: not timed
        t0 = time.perf_counter()
        scratch = preprocess_tile(job, plan.config)
        t1 = time.perf_counter()
        embed_tile(job.tile, scratch, plan.config)
        t2 = time.perf_counter()
    px_dates = job.pixels * (len(job.plan.s2) + len(job.plan.s1))
    return Calibration(str(meta.get("model_id") or model or "default"), cores, job.pixels,
                       (t1 - t0) * cores / px_dates, job.pixels / (t2 - t1) / cores)


@dataclasses.dataclass
class Estimate:
    preprocess_s: float
    embed_s: float
    total_s: float
    pipelined: bool

    def describe(self, where: str) -> str:
        how = "pipelined: the longer of the two" if self.pipelined else "sharing the cores"
        return (f"{_duration(self.total_s)} on {where} (preprocess "
                f"{_duration(self.preprocess_s)}, embed {_duration(self.embed_s)}; {how})")


def estimate(size: RegionSize, cal: Calibration, workers: int = 1, cores: int = 1,
             gpus: int = 0, gpu_px_per_s: float = 0.0) -> Estimate:
    """Time for `size` on `workers` x `cores` CPU cores (and `gpus` GPUs at `gpu_px_per_s`):
    linear in cores, which holds while tiles outnumber workers and I/O keeps up."""
    total_cores = max(workers * cores, 1)
    pre = size.pixels * (size.s2_dates + size.s1_dates) * cal.preprocess_s_per_px_date \
        / total_cores
    if gpus > 0 and gpu_px_per_s > 0:
        emb = size.pixels / (gpus * gpu_px_per_s)
        return Estimate(pre, emb, max(pre, emb), True)
    emb = size.pixels / (cal.embed_px_per_s * total_cores)
    return Estimate(pre, emb, pre + emb, False)


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


__all__ = ["Calibration", "Estimate", "RegionSize", "calibrate", "estimate"]
