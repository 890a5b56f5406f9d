"""Plan and run a preprocessing job: source -> granules -> per-patch tile folders.

`plan()` searches the source once and states what a run would do (grid, patches, acquisitions,
disk estimate) without reading pixels: that is `--dry-run`. `run()` then writes one tile folder
per patch in the published layout. Each patch is built in a temporary sibling folder, its arrays
written date by date into `.npy` files with positioned writes (memory stays at a few dates per worker,
whatever the region or the number of dates), validated with `Tile.open`, and only then renamed
into place: an interrupted run never leaves a half-written patch, and a rerun skips patches that
are finished (their sidecar's fingerprint matches) unless `overwrite=True`.

Dates run in parallel on dask's threaded scheduler (GDAL releases the GIL while reading);
`process_patch` is a plain function of picklable arguments, so the scale-out layer can map it
over patches on a distributed cluster.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from tessera import __version__
from tessera.bands import S2_BANDS
from tessera.atomic import replace_dir, tmp_dir, write_text
from tessera.dpixel import Tile, write_roi
from tessera.preprocess.acquisition import Granule, PreprocessError, Source, bbox_intersects
from tessera.preprocess.compose import (ComposeOptions, DateResult, compose_s1_date,
                                        compose_s2_date, group_by_date)
from tessera.geo import DEFAULT_PATCH_SIZE, Patch, TargetGrid
from tessera.progress import Progress, task

if TYPE_CHECKING:
    import numpy.typing as npt
    from dask.delayed import Delayed

log = logging.getLogger("tessera.preprocess")

SIDECAR = "preprocess.json"
SIDECAR_FORMAT = "tessera-preprocess/1"
REGION_FILE = "region.json"


@dataclasses.dataclass
class Plan:
    """What a run will do. Built by `plan()`; `describe()` is the dry-run report."""

    grid: TargetGrid
    year: int
    patch_size: int
    patches: list[Patch]
    s2: list[Granule]
    s1: list[Granule]
    source: dict[str, Any]

    def granules_for(self, patch: Patch) -> tuple[list[Granule], list[Granule], list[Granule]]:
        """S2, S1 ascending and S1 descending granules whose footprint touches the patch."""
        bounds = self.grid.sub(patch).lonlat_bounds()
        near = [g for g in (*self.s2, *self.s1) if bbox_intersects(g.bbox, bounds)]
        return ([g for g in near if g.sensor == "s2"],
                [g for g in near if g.sensor == "s1" and g.orbit == "ascending"],
                [g for g in near if g.sensor == "s1" and g.orbit == "descending"])

    def dates(self) -> dict[str, list[_dt.date]]:
        return {"s2": sorted({g.date for g in self.s2}),
                "s1_ascending": sorted({g.date for g in self.s1 if g.orbit == "ascending"}),
                "s1_descending": sorted({g.date for g in self.s1 if g.orbit == "descending"})}

    def estimate_bytes(self) -> int:
        """Upper bound of the output size: every found date kept in every patch."""
        d = self.dates()
        per_px = len(d["s2"]) * (2 * len(S2_BANDS) + 1) + 4 * (len(d["s1_ascending"])
                                                              + len(d["s1_descending"]))
        return sum(p.width * p.height for p in self.patches) * (per_px + 1)

    def describe(self) -> list[str]:
        d = self.dates()
        lines = [f"grid      {self.grid.describe()}",
                 f"year      {self.year}",
                 f"patches   {len(self.patches)} of up to {self.patch_size} x {self.patch_size} px",
                 f"S2        {len(self.s2)} granules on {len(d['s2'])} dates",
                 f"S1 asc    {sum(g.orbit == 'ascending' for g in self.s1)} granules on "
                 f"{len(d['s1_ascending'])} dates",
                 f"S1 desc   {sum(g.orbit == 'descending' for g in self.s1)} granules on "
                 f"{len(d['s1_descending'])} dates",
                 f"disk      at most {_human(self.estimate_bytes())} (uncompressed .npy)"]
        return lines


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def plan(source: Source, grid: TargetGrid, year: int,
         patch_size: int = DEFAULT_PATCH_SIZE) -> Plan:
    """Search the source for `year` over `grid`. No pixel is read."""
    if not 2015 <= year <= 2100:
        raise PreprocessError(f"year {year}: Sentinel-1/2 data exist from 2014/2015 on")
    patches = grid.patches(patch_size)
    if not patches:
        raise PreprocessError(f"{grid.name}: the region covers no pixel of the grid")
    granules = [g for g in source.search(grid, year) if g.date.year == year]
    s2 = [g for g in granules if g.sensor == "s2"]
    s1 = [g for g in granules if g.sensor == "s1"]
    for g in s1:
        if g.orbit not in ("ascending", "descending"):
            raise PreprocessError(f"granule {g.id} ({g.source}, {g.date}): orbit {g.orbit!r}, "
                                  "expected ascending or descending")
    desc = source.describe()
    where = f"{grid.describe()} in {desc.get('kind', source.name)} {desc.get('location', '')}"
    if not granules:
        raise PreprocessError(f"no acquisitions in {year} over {where.strip()}")
    if not s2:
        raise PreprocessError(f"no Sentinel-2 acquisitions in {year} over {where.strip()} "
                              f"(found {len(s1)} Sentinel-1); the model needs Sentinel-2")
    if not s1:
        log.warning("no Sentinel-1 acquisitions in %s over %s: the tiles get empty orbits",
                    year, where.strip())
    return Plan(grid, year, patch_size, patches, s2, s1, desc)


# --- one patch --------------------------------------------------------------------------------

def _fingerprint(plan: Plan, patch: Patch, opts: ComposeOptions) -> str:
    pg = plan.grid.sub(patch)
    key = {"year": plan.year, "crs": pg.crs.to_string(), "transform": list(pg.transform)[:6],
           "shape": [pg.height, pg.width], "source": plan.source,
           "options": dataclasses.asdict(opts)}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def patch_status(out_dir: Path, plan: Plan, patch: Patch, opts: ComposeOptions) -> str:
    """'todo', 'done' (finished with the same settings) or 'stale' (other settings / not ours)."""
    final = out_dir / patch.name
    if not final.exists():
        return "todo"
    try:
        meta = json.loads((final / SIDECAR).read_text())
    except (OSError, json.JSONDecodeError):
        return "stale"
    return "done" if meta.get("fingerprint") == _fingerprint(plan, patch, opts) else "stale"


def _stats(counts: np.ndarray, roi: np.ndarray) -> dict[str, Any]:
    c = counts[roi > 0] if roi.any() else counts.ravel()
    if c.size == 0:
        return {"min": 0, "median": 0.0, "max": 0, "pixels_without": 0}
    return {"min": int(c.min()), "median": float(np.median(c)), "max": int(c.max()),
            "pixels_without": int((c == 0).sum())}


class _Stack:
    """A (T, H, W, ...) .npy file written date by date with positioned writes (`os.pwrite`).

    Plain writes, not a memory map: written pages sit in the kernel's page cache instead of the
    process's resident set, so memory stays at the dates in flight (threads write disjoint
    slices concurrently).
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: npt.DTypeLike) -> None:
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
        m = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=shape)
        self.offset = m.offset  # bytes of the .npy header; the file is sparse until written
        del m
        self.step = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.fd = os.open(path, os.O_RDWR)

    def write(self, t: int, a: np.ndarray) -> None:
        data = np.ascontiguousarray(a, dtype=self.dtype).tobytes()
        if len(data) != self.step:
            raise ValueError(f"{self.path}: date {t} has {len(data)} bytes, expected {self.step}")
        os.pwrite(self.fd, data, self.offset + t * self.step)

    def keep(self, idx: list[int]) -> None:
        """Drop the dates not in `idx` (rewriting the file date by date), then close it."""
        try:
            if len(idx) == self.shape[0]:
                return
            full = self.path.with_suffix(".full.npy")
            os.replace(self.path, full)
            dst = _Stack(self.path, (len(idx), *self.shape[1:]), self.dtype)
            for k, t in enumerate(idx):
                chunk = os.pread(self.fd, self.step, self.offset + t * self.step)
                os.pwrite(dst.fd, chunk.ljust(self.step, b"\0"), dst.offset + k * dst.step)
            dst.close()
            full.unlink()
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PatchJob:
    """One patch as tasks: `start` (temporary folder and `.npy` stacks), one task per
    date (compose, write its slice), `finish` (drop empty dates, ROI, sidecar, validate, rename).

    `abort` removes the temporary folder; a lock makes `finish` and `abort` exclusive, so a
    failure elsewhere in a parallel run can never publish a half-deleted folder.
    """

    def __init__(self, plan: Plan, patch: Patch, out_dir: Path, opts: ComposeOptions,
                 on_date: Callable[[], None] | None = None) -> None:
        self.plan, self.patch, self.out_dir, self.opts = plan, patch, out_dir, opts
        self.grid = plan.grid.sub(patch)
        s2, asc, desc = plan.granules_for(patch)
        self.groups = {"s2": group_by_date(s2), "ascending": group_by_date(asc),
                       "descending": group_by_date(desc)}
        self.on_date = on_date
        self.on_finish: Callable[[], None] | None = None
        self.tmp: Path | None = None
        self.stacks: dict[str, _Stack] = {}
        self.lock = threading.Lock()
        self.aborted = False

    @property
    def n_dates(self) -> int:
        return sum(len(g) for g in self.groups.values())

    def start(self) -> None:
        with self.lock:
            if self.aborted:
                raise PreprocessError(f"{self.patch.name}: aborted")
            h, w = self.grid.height, self.grid.width
            self.tmp = tmp = tmp_dir(self.out_dir / self.patch.name)  # stale ones cleaned
            n2, na, nd = (len(self.groups[k]) for k in ("s2", "ascending", "descending"))
            self.stacks = {
                "bands": _Stack(tmp / "bands.npy", (n2, h, w, len(S2_BANDS)), np.uint16),
                "masks": _Stack(tmp / "masks.npy", (n2, h, w), np.uint8),
                "ascending": _Stack(tmp / "sar_ascending.npy", (na, h, w, 2), np.int16),
                "descending": _Stack(tmp / "sar_descending.npy", (nd, h, w, 2), np.int16)}

    def date(self, _started: None, key: str, t: int) -> DateResult:
        date, gs = self.groups[key][t]
        if key == "s2":
            r = compose_s2_date(date, gs, self.grid, self.opts)
            assert r.values is not None  # freshly composed: not stacked yet
            self.stacks["bands"].write(t, r.values)
            self.stacks["masks"].write(t, r.mask)
        else:
            r = compose_s1_date(date, gs, self.grid, self.opts)
            assert r.values is not None  # freshly composed: not stacked yet
            self.stacks[key].write(t, r.values)
        r.values, r.mask = None, r.mask.astype(np.uint16)  # keep only what the sidecar needs
        if self.on_date:
            self.on_date()
        return r

    def finish(self, *results: DateResult) -> dict[str, Any]:
        with self.lock:
            if self.aborted:
                raise PreprocessError(f"{self.patch.name}: aborted")
            meta = self._finish(results)
        if self.on_finish:
            self.on_finish()
        return meta

    def _finish(self, results: tuple[DateResult, ...]) -> dict[str, Any]:
        grid, tmp, h, w = self.grid, self.tmp, self.grid.height, self.grid.width
        assert tmp is not None, "start() runs before finish()"
        n2, na = len(self.groups["s2"]), len(self.groups["ascending"])
        parts = {"s2": results[:n2], "ascending": results[n2:n2 + na],
                 "descending": results[n2 + na:]}
        roi = grid.roi()
        sidecar: dict[str, Any] = {}
        for key, rs in parts.items():
            keep = [t for t, r in enumerate(rs) if r.has_data]
            for n in (("bands", "masks") if key == "s2" else (key,)):
                self.stacks[n].keep(keep)
            kept = [rs[t] for t in keep]
            doys = np.array([r.date.timetuple().tm_yday for r in kept], np.int16)
            np.save(tmp / ("doys.npy" if key == "s2" else f"sar_{key}_doy.npy"), doys)
            counts = np.zeros((h, w), np.uint16)
            for r in kept:
                counts += r.mask
            entry = {"dates": [r.date.isoformat() for r in kept], "doys": doys.tolist(),
                     "granules": [r.granules for r in kept],
                     "valid_pixels": [int(r.mask.sum()) for r in kept],
                     "dropped_without_data": [r.date.isoformat() for r in rs if not r.has_data],
                     "valid_observations_per_pixel": _stats(counts, roi)}
            if key == "s2":
                entry["boa_offset_subtracted"] = [r.boa_subtracted for r in kept]
            sidecar[key if key == "s2" else f"s1_{key}"] = entry
        self.stacks = {}
        write_roi(tmp / "roi.tiff", roi, grid.crs, grid.transform)
        plan, patch = self.plan, self.patch
        meta = {"format": SIDECAR_FORMAT,
                "software": {"name": "tessera-eo", "version": __version__},
                "fingerprint": _fingerprint(plan, patch, self.opts), "year": plan.year,
                "patch": patch.name, "window": [patch.x0, patch.y0, patch.x1, patch.y1],
                "crs": grid.crs.to_string(), "transform": list(grid.transform)[:6],
                "bounds": list(grid.bounds), "roi_pixels": int(roi.sum()),
                "source": plan.source, "options": dataclasses.asdict(self.opts),
                **sidecar, "conflicts": [c for rs in parts.values() for r in rs
                                         for c in r.conflicts],
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        (tmp / SIDECAR).write_text(json.dumps(meta, indent=1))
        Tile.open(tmp)  # validate before publishing
        replace_dir(tmp, self.out_dir / patch.name)
        self.tmp = None
        return meta

    def abort(self) -> None:
        with self.lock:
            self.aborted = True
            for st in self.stacks.values():
                st.close()
            self.stacks = {}
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None

    def tasks(self) -> Delayed:
        """The dask graph of this patch: a delayed `finish` returning the sidecar."""
        import dask
        started = dask.delayed(self.start, pure=False)()
        dates = [dask.delayed(self.date, pure=False)(started, key, t)
                 for key in ("s2", "ascending", "descending") for t in range(len(self.groups[key]))]
        return dask.delayed(self.finish, pure=False)(*dates)


def compute_jobs(jobs: list[PatchJob], workers: int | None = None) -> list[dict[str, Any]]:
    """Run the patches' graphs together on dask's threaded scheduler (patches and dates in
    parallel); on any failure every unfinished patch's temporary folder is removed."""
    import dask
    try:
        return list(dask.compute(*[j.tasks() for j in jobs], scheduler="threads",
                                 num_workers=workers))
    except BaseException:
        for j in jobs:
            j.abort()
        raise


def process_patch(plan: Plan, patch: Patch, out_dir: str | os.PathLike,
                  opts: ComposeOptions = ComposeOptions(), workers: int | None = None,
                  on_date: Callable[[], None] | None = None) -> dict[str, Any]:
    """Build one patch's tile folder atomically; return its sidecar. A plain function of
    picklable arguments: the unit a distributed cluster maps over patches."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return compute_jobs([PatchJob(plan, patch, out_dir, opts, on_date)], workers)[0]


# --- a whole region ---------------------------------------------------------------------------

@dataclasses.dataclass
class RunReport:
    written: list[str]
    skipped: list[str]
    conflicts: int
    out_dir: Path


def write_region_file(plan: Plan, out_dir: Path) -> None:
    doc = {"format": SIDECAR_FORMAT, "software": {"name": "tessera-eo", "version": __version__},
           "year": plan.year, "patch_size": plan.patch_size, "grid": plan.grid.to_json(),
           "patches": [p.name for p in plan.patches], "source": plan.source}
    write_text(out_dir / REGION_FILE, json.dumps(doc, indent=1))


def run(plan: Plan, out_dir: str | os.PathLike, opts: ComposeOptions = ComposeOptions(),
        workers: int | None = None, overwrite: bool = False,
        progress: Progress | None = None) -> RunReport:
    """Write every patch of the plan under `out_dir` (resumable; see the module docstring)."""
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run(plan, out_dir, opts, workers, overwrite, progress)
    except BaseException:
        if created and not any(p.name != REGION_FILE and not p.name.startswith(".")
                               for p in out_dir.iterdir()):
            shutil.rmtree(out_dir, ignore_errors=True)  # nothing finished: leave no folder
        raise


def _run(plan: Plan, out_dir: Path, opts: ComposeOptions, workers: int | None, overwrite: bool,
         progress: Progress | None) -> RunReport:
    todo, skipped = [], []
    for p in plan.patches:
        status = patch_status(out_dir, plan, p, opts)
        if status == "done" and not overwrite:
            skipped.append(p.name)
        elif status == "stale" and not overwrite:
            raise PreprocessError(
                f"{out_dir / p.name}: exists but was not made by this run's settings (year, "
                "source, grid or options differ, or it has no preprocess.json); rerun with "
                "--overwrite to replace it, or choose another output folder")
        else:
            todo.append(p)
    write_region_file(plan, out_dir)
    patches = task(progress, "patches", total=len(todo))
    dates = task(progress, "dates x patches", total=None)
    jobs = [PatchJob(plan, p, out_dir, opts, dates.advance) for p in todo]
    dates.update(total=sum(j.n_dates for j in jobs))
    for j in jobs:
        j.on_finish = patches.advance
    metas = compute_jobs(jobs, workers)
    return RunReport([p.name for p in todo], skipped, sum(len(m["conflicts"]) for m in metas),
                     out_dir)
