"""`tessera run` (region -> store, on dask.distributed) and `tessera plan` (what a run costs)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from tessera.cli.common import (Bars, bbox_option, command, err, fail, need, out,
                                progress_option, region_of, region_option, tile_option, warn)
from tessera.cli.preprocess import (build_source, netcdf_option, s1_band_order_option,
                                    s1_collection_option, s1_option, s1_orbit_option,
                                    s1_units_option, s2_band_order_option, s2_collection_option,
                                    s2_option, stac_url_option)

if TYPE_CHECKING:
    from tessera.preprocess.acquisition import Source


def _absolute(template: Optional[str]) -> Optional[str]:
    """Workers may run in another folder (or machine): file templates become absolute."""
    if not template or "://" in template:
        return template
    return str(Path(template).expanduser().absolute())


def _source(source: str, s2: Optional[str], s1: Optional[str], s2_band_order: Optional[str],
            s1_band_order: Optional[str], s1_units: str, s1_orbit: Optional[str],
            stac_url: Optional[str], s2_collection: str, s1_collection: str,
            netcdf: Optional[Path]) -> Source:
    return build_source(source, _absolute(s2), _absolute(s1), s2_band_order, s1_band_order,
                        s1_units, s1_orbit, stac_url, s2_collection, s1_collection,
                        netcdf.absolute() if netcdf else None, command="tessera run")


def _tiles(bbox: Optional[str], region: Optional[Path], tile: Optional[list[str]]) -> list[Any]:
    from tessera.geo import Region
    names = [t.strip() for v in (tile or []) for t in v.split(",") if t.strip()] or None
    return list(Region.parse(region_of(bbox, region, names)).tiles)


@command
def run(
    source: str = typer.Option(..., metavar="SOURCE", help="files, stac or netcdf."),
    store: Path = typer.Option(..., "--store", "-s", metavar="STORE",
                               help="The store to write (a folder; created if missing)."),
    year: int = typer.Option(..., metavar="YEAR", help="Calendar year of the acquisitions."),
    bbox: Optional[str] = bbox_option(),
    region: Optional[Path] = region_option(),
    tile: Optional[list[str]] = tile_option(),
    s2: Optional[str] = s2_option(),
    s1: Optional[str] = s1_option(),
    s2_band_order: Optional[str] = s2_band_order_option(),
    s1_band_order: Optional[str] = s1_band_order_option(),
    s1_units: str = s1_units_option(),
    s1_orbit: Optional[str] = s1_orbit_option(),
    stac_url: Optional[str] = stac_url_option(),
    s2_collection: str = s2_collection_option(),
    s1_collection: str = s1_collection_option(),
    netcdf: Optional[Path] = netcdf_option(),
    model: Optional[str] = typer.Option(None, "--model", metavar="ID", help="Registered model "
                                        "id (`tessera models`); default: the shipped weights."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", metavar="FILE",
                                              help="Weights file (.safetensors / .pt)."),
    seed: int = typer.Option(0, metavar="N", help="Sampling seed (same seed, same output)."),
    batch_size: Optional[int] = typer.Option(None, metavar="PX", min=1,
                                             help="Pixels per forward pass."),
    precision: str = typer.Option("fp32", "--precision", metavar="P", help="fp32 (exact, "
                                  "published-compatible), bf16 or int8; recorded in the store, "
                                  "which keeps one per year."),
    engine: str = typer.Option("torch", "--engine", metavar="E", help="torch or onnx (CPU)."),
    device: str = typer.Option("auto", "--device", metavar="DEV", help="auto, cpu or cuda."),
    resolution: float = typer.Option(10.0, metavar="M", help="Pixel size in metres (10 is "
                                     "the published grid; coarser for quick looks)."),
    patch_size: int = typer.Option(500, metavar="PX", help="Preprocessing patch side."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS",
                                            help="An existing dask scheduler, e.g. "
                                                 "tcp://host:8786 (default: a LocalCluster)."),
    workers: Optional[int] = typer.Option(None, "--workers", metavar="N", min=0,
                                          help="LocalCluster worker processes (default: the "
                                               "CPUs this process may use; 0 = no cluster, "
                                               "tiles one by one in this process)."),
    threads: int = typer.Option(1, "--threads-per-worker", metavar="N", min=1,
                                help="Threads per worker (torch and GDAL inside a task)."),
    memory_limit: str = typer.Option("auto", "--memory-limit", metavar="BYTES",
                                     help="LocalCluster memory per worker (e.g. 4GB)."),
    scratch: Optional[Path] = typer.Option(None, "--scratch", metavar="DIR",
                                           help="Preprocessed tiles in flight (default: "
                                                "STORE/.scratch; shared by all machines)."),
    retries: int = typer.Option(2, metavar="N", min=0, help="Retries of a failing task."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and stop."),
    progress: bool = progress_option(),
) -> None:
    """Preprocess, embed and store every grid tile of a region, as dask.distributed tasks.

    A finished tile (its manifest row) is never redone: rerun the same command to resume.
    Exits non-zero when a tile failed."""
    need("dask", "preprocess", "tessera run")
    need("torch", "model", "tessera run")
    from tessera.cpus import available_cpus
    from tessera.infer import ENGINES, PRECISIONS, resolve_model, shipped_checkpoint
    from tessera.pipeline.run import ModelChoice, RunConfig, plan_run

    src = _source(source, s2, s1, s2_band_order, s1_band_order, s1_units, s1_orbit, stac_url,
                  s2_collection, s1_collection, netcdf)
    tiles = _tiles(bbox, region, tile)
    net, meta = resolve_model(checkpoint, model=model, seed=seed)
    del net
    weights = checkpoint if checkpoint is not None else (
        None if meta.get("random_init") else shipped_checkpoint())
    if meta.get("random_init"):
        warn("no weights: embedding with a RANDOM INIT (recorded in the store)")
    choice = ModelChoice(str(checkpoint.absolute()) if checkpoint else None, model, seed,
                         batch_size, precision=precision, engine=engine, device=device)
    if precision not in PRECISIONS or engine not in ENGINES:
        fail(f"--precision {precision} --engine {engine}: expected precision "
             f"{' | '.join(PRECISIONS)} and engine {' | '.join(ENGINES)}")
    cfg = RunConfig(str(store.absolute()), year, choice, resolution, patch_size,
                    threads=threads, scratch=str(scratch.absolute()) if scratch else "",
                    retries=retries)
    with err.status("searching acquisitions") if progress else contextlib.nullcontext():
        plan = plan_run(src, tiles, cfg, meta, weights)
    for line in plan.describe():
        out.print(line)
    if dry_run:
        return
    if not plan.jobs:
        out.print("nothing to do: every tile with data is already in the store")
        if not plan.done:
            fail(f"no tile of the region has Sentinel-2 data in {year}")
        return
    n = available_cpus() // threads if workers is None else workers
    with Bars(progress) as bars:
        if scheduler is None and n == 0:
            from tessera.pipeline.run import run_serial
            report = run_serial(plan, progress=bars)
        else:
            report = _on_cluster(plan, scheduler, max(n, 1), threads, memory_limit, bars)
    for line in report.summary():
        out.print(line)
    if not report.ok:
        raise typer.Exit(1)


def _on_cluster(plan: Any, scheduler: Optional[str], workers: int, threads: int,
                memory_limit: str, bars: Any) -> Any:
    need("distributed", "scale", "tessera run")
    from distributed import Client

    from tessera.pipeline.run import local_cluster, run_distributed

    if scheduler is not None:
        with Client(scheduler, timeout="30s") as client:
            out.print(f"cluster   {scheduler}: {len(client.scheduler_info(n_workers=-1)['workers'])} "
                      "worker(s)")
            return run_distributed(plan, client, progress=bars)
    with local_cluster(workers, threads, memory_limit) as cluster, Client(cluster) as client:
        out.print(f"cluster   LocalCluster of {workers} worker process(es) x {threads} thread(s)")
        return run_distributed(plan, client, progress=bars)


@command
def plan(
    year: int = typer.Option(..., metavar="YEAR", help="Calendar year."),
    bbox: Optional[str] = bbox_option(),
    region: Optional[Path] = region_option(),
    tile: Optional[list[str]] = tile_option(),
    model: Optional[str] = typer.Option(None, "--model", metavar="ID",
                                        help="Registered model id (default: shipped weights)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", metavar="FILE",
                                              help="Weights file."),
    resolution: float = typer.Option(10.0, metavar="M", help="Pixel size in metres."),
    s2_dates: int = typer.Option(73, metavar="N", help="Sentinel-2 acquisitions per tile and "
                                 "year assumed (5-day revisit: 73)."),
    s1_dates: int = typer.Option(60, metavar="N", help="Sentinel-1 acquisitions per tile and "
                                 "year, both orbits (12-day revisit, 2 orbits: about 60)."),
    cluster_workers: int = typer.Option(1, "--cluster-workers", metavar="N", min=1,
                                        help="Machines (or worker processes) of the cluster."),
    cores: Optional[int] = typer.Option(None, "--cores", metavar="N", min=1,
                                        help="CPU cores per worker (default: this machine's)."),
    gpus: int = typer.Option(0, "--gpus", metavar="N", min=0, help="GPUs of the cluster "
                             "(embedding runs there, preprocessing on the CPUs)."),
    gpu_rate: Optional[float] = typer.Option(None, "--gpu-pixels-per-s", metavar="PX/S",
                                             help="Embedding throughput of one GPU (measure "
                                                  "it with bench/infer.py on the GPU)."),
    calibration_px: int = typer.Option(2000, metavar="PX", min=100, help="Pixels of the "
                                       "measured calibration tile."),
    progress: bool = progress_option(),
) -> None:
    """Print what a run over a region costs: tiles, pixels, bytes in and out, and the time on
    this machine (from a short measured calibration) and on a given cluster."""
    need("dask", "preprocess", "tessera plan")
    need("torch", "model", "tessera plan")
    from tessera.cpus import available_cpus
    from tessera.pipeline.estimate import RegionSize, calibrate, estimate

    tiles = _tiles(bbox, region, tile)
    size = RegionSize.of(tiles, resolution, s2_dates, s1_dates)
    with err.status("calibrating on this machine") if progress else contextlib.nullcontext():
        cal = calibrate(model=model, checkpoint=str(checkpoint) if checkpoint else None,
                        pixels=calibration_px, s2_dates=min(s2_dates, 40),
                        s1_dates=min(s1_dates, 40))
    here = available_cpus()
    for line in size.describe():
        out.print(line)
    out.print(f"calibration  {cal.describe()}")
    out.print("time         " + estimate(size, cal, workers=1, cores=here).describe(
        f"this machine ({here} cores)"))
    if cluster_workers > 1 or cores or gpus:
        if gpus and gpu_rate is None:
            fail("--gpus needs --gpu-pixels-per-s (measure one GPU with bench/infer.py; it "
                 "cannot be measured on this machine)")
        c = cores or here
        where = f"{cluster_workers} worker(s) x {c} cores" + (f" + {gpus} GPU(s) at "
                                                              f"{gpu_rate:,.0f} px/s"
                                                              if gpus else "")
        out.print("time         " + estimate(size, cal, workers=cluster_workers, cores=c,
                                             gpus=gpus, gpu_px_per_s=gpu_rate or 0.0
                                             ).describe(where))
