"""Every usable real pixel of the WorldCereal datasets as d-pixels, for self-supervised
pretraining, with the held-out evaluation sets kept out.

Why: the pretraining corpus must be real data, as large and varied as the shared folder allows,
and must never contain the pixels the label-efficiency evaluation tests on; otherwise the
evaluation would measure memorisation. `real_corpus` gathers it as `CorpusPart`s (one per
source and d-pixel year, since a d-pixel is one year); `corpus_summary` tabulates them.

Where the data is: a `CorpusFiles` (or just its datasets root) that the caller passes; it lists
the folders and tables read, relative to the root. This project's root is ../shared/datasets
next to the repository (scripts/pretrain_tiny.py --datasets, the tests' `conftest.SHARED`); the
package itself never guesses it.

Parts (`name` = kind:source:year):
- patch: the patches_raw folders that have every S2 band (10 m AND 20 m cubes; 2 of the 4:
  the others lack B02/B03/B04/B08, which cannot be derived), converted for each calendar year
  with the preprocessing netCDF source (`NetcdfSource`, `plan`, `run`, default ComposeOptions)
  into tile folders under `workdir`, then read back with `Tile`: irregular dates, SCL masks,
  S1 ascending;
- cube: the monthly cubes (`tessera.preprocess.sources.cubes.read_cube`), per d-pixel year;
- table: the Flanders 2021 long table, the Flanders prometheo wide table and the Presto test
  wide table (`tessera.table.wide.wide_to_long`), read by `tessera.table.prepare_table` with
  `WORLDCEREAL_OPTIONS`, per d-pixel year.
d-pixel years (`split`): "cycle" (default) keeps a series that fits within 12 consecutive months
as ONE d-pixel labelled by the calendar year holding most of its dates (e.g. a Presto sample of
Oct 2017 .. Sep 2018 -> 2018; the 100 x 100 cube Nov 2020 .. Oct 2021 -> 2021) and splits longer
series by calendar year; "year" always splits by calendar year. Each date keeps its true day of
year either way (`tessera.preprocess.sources.cubes.annual_windows`). Tables are windowed per
sample.

Held out, never returned:
- the evaluation tables 2022_FRA_LPIS_POLY_110, 2023_FRA_LPIS_POLY_110 and
  2017_UGA_SSD_public_extractions_wide (`EVAL_TABLES`);
- every sample or pixel lying in an h3_l3_cell of those tables (for sources that carry an
  h3_l3_cell column), or within `EVAL_RADIUS_DEG` = 0.5 degree of any of their samples, in
  both latitude and longitude (a 1 x 1 degree box; the Presto table has no h3 column, and the
  h3 library is not a dependency). Applied to every source, not only the Presto table: on the
  shared data it removes 6 Presto samples and nothing else.
Skipped: 2018_BE_Flanders_training_df_LC_features (per-sample features, no time series).
Duplicates: cube pixels at a location (same CRS, same pixel centre) already taken by an earlier
raster part whose dates overlap are dropped (one 48 x 50 cube is an exact crop of the 101 x 101
one; the 100 x 100 cube shares 50 x 48 pixels and their S2 values with it, S1 differing
slightly); table samples whose sample_id appeared in an earlier table are dropped.
`CorpusPart.dropped` counts both.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from tessera.dpixel import DPixelBatch
from tessera.errors import InputError, NotFoundError

log = logging.getLogger("tessera.train")

#: The held-out evaluation tables (worldcereal/extractions): never in the corpus.
EVAL_TABLES: tuple[str, ...] = ("2022_FRA_LPIS_POLY_110.geoparquet",
                                "2023_FRA_LPIS_POLY_110.geoparquet",
                                "2017_UGA_SSD_public_extractions_wide.parquet")
#: Point tables of the corpus (worldcereal/extractions), long or wide.
TRAIN_TABLES: tuple[str, ...] = ("2021_BEL_LPIS-Flanders_long_named-dummy.parquet",
                                 "2021_BE_Flanders_prometheo_wide.parquet",
                                 "presto-worldcereal_testdf_wide.parquet")
#: Tables that are not d-pixel sources, with the reason.
SKIPPED_TABLES: dict[str, str] = {
    "2018_BE_Flanders_training_df_LC_features.parquet": "per-sample features, no time series"}
#: Samples / pixels within this many degrees (lat AND lon) of an evaluation sample are left out.
EVAL_RADIUS_DEG = 0.5
#: The pretraining filter of SPEC 4: >= 10 valid S2 and >= 10 valid S1 dates.
MIN_VALID = 10


@dataclasses.dataclass(frozen=True)
class CorpusFiles:
    """Where the corpus is read from: a datasets `root` and the paths under it.

    Folders are relative to `root`; the evaluation and training tables are file names in the
    `extractions` folder. Every function of this module takes a `CorpusFiles` or, for the
    default layout, just the root (a path).
    """

    root: Path
    worldcereal: str = "worldcereal"
    extractions: str = "worldcereal/extractions"
    patches: str = "worldcereal/patches_raw"
    cubes: str = "worldcereal/cubes"
    eval_tables: tuple[str, ...] = EVAL_TABLES
    train_tables: tuple[str, ...] = TRAIN_TABLES

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, files: CorpusFiles | str | os.PathLike) -> CorpusFiles:
        """`files` itself, or the default layout under the root path `files`."""
        return files if isinstance(files, CorpusFiles) else cls(Path(files))

    def path(self, relative: str) -> Path:
        """`relative` (one of the folder fields) under the root."""
        return self.root / relative


@dataclasses.dataclass
class CorpusPart:
    """The d-pixels of one source and one d-pixel year."""

    name: str  # kind:source:year, e.g. "cube:inputs_monthly_15x15:2021"
    region: str  # where: the centre as "50.64N_5.33E", or "global" for world-wide tables
    year: int
    batch: DPixelBatch
    source: str = ""  # the file or folder it was read from
    ids: np.ndarray | None = None  # sample ids (tables) or row-major pixel indices (rasters)
    lonlat: np.ndarray | None = None  # (N, 2) longitude, latitude of each d-pixel
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> count

    @property
    def n_pixels(self) -> int:
        return len(self.batch)


# --- the evaluation sites ---------------------------------------------------------------------

@dataclasses.dataclass
class EvalSites:
    """Where the held-out evaluation samples are: their h3_l3_cells and (lon, lat) points."""

    cells: frozenset[str]
    lonlat: np.ndarray  # (M, 2)
    tables: tuple[str, ...]

    def near(self, lonlat: np.ndarray, radius: float = EVAL_RADIUS_DEG) -> np.ndarray:
        """Boolean: which points lie within `radius` degrees (lat and lon) of a sample."""
        from scipy.spatial import cKDTree

        pts = np.asarray(lonlat, dtype=np.float64).reshape(-1, 2)
        if not len(self.lonlat) or not len(pts):
            return np.zeros(len(pts), bool)
        dist, _ = cKDTree(self.lonlat).query(pts, k=1, p=np.inf)
        return dist <= radius

    def in_cells(self, cells: Sequence[object] | np.ndarray) -> np.ndarray:
        return np.isin(np.asarray(cells, dtype=object).astype(str), sorted(self.cells))


def eval_sites(files: CorpusFiles | str | os.PathLike) -> EvalSites:
    """The h3 cells and coordinates of every sample of the evaluation tables (`EVAL_TABLES` by
    default) present under the root of `files`."""
    files = CorpusFiles.of(files)
    folder = files.path(files.extractions)
    cells: set[str] = set()
    points = []
    found = []
    for name in files.eval_tables:
        path = folder / name
        if not path.exists():
            continue
        df = pd.read_parquet(path, columns=None)
        for col in ("lon", "lat"):
            if col not in df.columns:
                raise InputError(f"{path}: no {col!r} column; needed to keep its samples out of "
                                 "the pretraining corpus")
        if "h3_l3_cell" in df.columns:
            cells.update(df["h3_l3_cell"].dropna().astype(str))
        points.append(df[["lon", "lat"]].drop_duplicates().to_numpy(np.float64))
        found.append(name)
    lonlat = np.concatenate(points) if points else np.zeros((0, 2))
    return EvalSites(frozenset(cells), np.unique(lonlat, axis=0), tuple(found))


def _region(lonlat: np.ndarray) -> str:
    """The centre of a compact set of points as '50.64N_5.33E'; 'global' if spread > 5 deg."""
    pts = np.asarray(lonlat, dtype=np.float64).reshape(-1, 2)
    if not len(pts):
        return "unknown"
    if np.ptp(pts[:, 0]) > 5 or np.ptp(pts[:, 1]) > 5:
        return "global"
    lon, lat = pts.mean(0)
    return f"{abs(lat):.2f}{'N' if lat >= 0 else 'S'}_{abs(lon):.2f}{'E' if lon >= 0 else 'W'}"


# --- point tables -----------------------------------------------------------------------------

def read_long_table(path: Path) -> pd.DataFrame:
    """A WorldCereal extraction table in the long layout (wide tables are converted)."""
    from tessera.table.wide import wide_to_long

    df = pd.read_parquet(path)
    if "timestamp" in df.columns:
        return df
    return wide_to_long(df, path.name)


def table_batches(df: pd.DataFrame, split: str = "cycle", **options: Any
                  ) -> list[tuple[int, np.ndarray, DPixelBatch]]:
    """[(year label, sample ids, their d-pixels)] of a long WorldCereal table.

    Each sample's dates are grouped by `annual_windows` (split "cycle" or "year"); the table is
    read per calendar year by `prepare_table` (options: `WORLDCEREAL_OPTIONS`, overridden by
    `options`) and the observations of each window are put together, ordered by day of year.
    """
    from tessera.preprocess.sources.cubes import annual_windows
    from tessera.table import PreparedTable, Stream, prepare_table
    from tessera.table.prepare import numpy_dtype
    from tessera.table.wide import WORLDCEREAL_OPTIONS

    opts = {**WORLDCEREAL_OPTIONS, **options}
    id_col = opts.get("id_column", "sample_id")
    date_col = opts.get("date_column") or "timestamp"
    stamps = pd.to_datetime(df[date_col]).to_numpy().astype("datetime64[D]")
    ids = df[id_col].to_numpy()
    years = stamps.astype("datetime64[Y]").astype(np.int64) + 1970

    # (sample, calendar year) -> window label
    label_of: dict[tuple[Any, int], int] = {}
    for sid, idx in pd.Series(np.arange(len(df))).groupby(ids, sort=False):
        d = np.unique(stamps[idx.to_numpy()])
        for label, sel in annual_windows(d, split):
            for y in np.unique(d[sel].astype("datetime64[Y]").astype(np.int64) + 1970):
                label_of[(sid, int(y))] = label

    streams: dict[str, list[tuple[np.ndarray, ...]]] = {"s2": [], "s1_asc": [], "s1_desc": []}
    members: dict[int, list[Any]] = {}
    for y in np.unique(years):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # filled B8A, samples without rows in y: expected
            prepared = prepare_table(df, year=int(y), **opts)
        for s in prepared.sample_ids:  # every sample with a row in y, observations or not
            members.setdefault(label_of[(s, int(y))], []).append(s)
        for name in streams:
            st = getattr(prepared, name)
            sid = prepared.sample_ids[st.sample]
            window = np.array([label_of[(s, int(y))] for s in sid], dtype=np.int64)
            streams[name].append((sid, window, st.doy, st.values, st.valid,
                                  np.full(len(sid), y, np.int64)))

    out = []
    cat = {name: [np.concatenate(a) for a in zip(*parts)] for name, parts in streams.items()}
    for label in sorted(members):
        sample_ids = pd.unique(np.asarray(members[label], dtype=object))
        try:
            sample_ids = np.array(sorted(sample_ids), dtype=object)
        except TypeError:
            sample_ids = np.array(sorted(sample_ids, key=str), dtype=object)
        index = pd.Index(sample_ids)
        built = {}
        for name, (sid, lab, doy, values, valid, yr) in cat.items():
            keep = lab == label
            sample = index.get_indexer(sid[keep])
            st = Stream(sample, doy[keep].astype(np.int16), values[keep], valid[keep])
            order_key = doy[keep].astype(np.int64) * 10_000 + yr[keep]
            built[name] = st.take(np.ones(int(keep.sum()), bool), sample, order_key)
        if df[id_col].dtype.kind in "iu":
            sample_ids = sample_ids.astype(numpy_dtype(df[id_col].dtype))
        table = PreparedTable(sample_ids=sample_ids, id_column=id_col, s2=built["s2"],
                              s1_asc=built["s1_asc"], s1_desc=built["s1_desc"], n_rows=0,
                              filled={}, dropped_samples=[], columns={})
        out.append((int(label), sample_ids, table.batch()))
    return out


def table_parts(files: CorpusFiles | str | os.PathLike, sites: EvalSites | None = None,
                split: str = "cycle") -> list[CorpusPart]:
    """The training tables (`TRAIN_TABLES` by default) present under the root of `files`,
    minus samples near the evaluation sites."""
    files = CorpusFiles.of(files)
    folder = files.path(files.extractions)
    sites = eval_sites(files) if sites is None else sites
    parts: list[CorpusPart] = []
    seen: set[Any] = set()
    for name in files.train_tables:
        path = folder / name
        if not path.exists():
            log.warning("corpus: %s not found, skipped", path)
            continue
        df = read_long_table(path)
        per = df.groupby("sample_id", sort=False)[["lon", "lat"]].first()
        near = sites.near(per[["lon", "lat"]].to_numpy())
        if "h3_l3_cell" in df.columns:
            cells = df.groupby("sample_id", sort=False)["h3_l3_cell"].first()
            near |= sites.in_cells(cells.reindex(per.index).to_numpy())
        dup = per.index.isin(list(seen))
        drop = set(per.index[near | dup])
        dropped = {"near_eval": int(near.sum()), "duplicate": int((dup & ~near).sum())}
        if drop:
            df = df[~df["sample_id"].isin(drop)]
        seen.update(per.index)
        stem = Path(name).name.split(".")[0]
        for year, ids, batch in table_batches(df, split):
            lonlat = per.loc[ids, ["lon", "lat"]].to_numpy(np.float64)
            parts.append(CorpusPart(f"table:{stem}:{year}", _region(per.to_numpy()), year, batch,
                                    str(path), ids, lonlat, dict(dropped)))
    return parts


# --- rasters ----------------------------------------------------------------------------------

def _pixel_lonlat(crs: Any, transform: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    from rasterio.warp import transform as warp

    x = transform.c + transform.a * (cols + 0.5) + transform.b * (rows + 0.5)
    y = transform.f + transform.d * (cols + 0.5) + transform.e * (rows + 0.5)
    lon, lat = warp(crs, "EPSG:4326", x.tolist(), y.tolist())
    return np.stack([lon, lat], axis=1)


@dataclasses.dataclass
class _Taken:
    """Pixel locations already in the corpus, for the duplicate rule."""

    entries: list[tuple[str, np.ndarray, np.datetime64, np.datetime64]] = dataclasses.field(
        default_factory=list)

    @staticmethod
    def keys(transform: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        x = transform.c + transform.a * (cols + 0.5) + transform.b * (rows + 0.5)
        y = transform.f + transform.d * (cols + 0.5) + transform.e * (rows + 0.5)
        return np.round(x * 100).astype(np.int64) * 10**10 + np.round(y * 100).astype(np.int64)

    def seen(self, crs: Any, keys: np.ndarray, start: np.datetime64, end: np.datetime64
             ) -> np.ndarray:
        out = np.zeros(len(keys), bool)
        for c, k, s, e in self.entries:
            if c == crs.to_wkt() and s <= end and start <= e:
                out |= np.isin(keys, k)
        return out

    def add(self, crs: Any, keys: np.ndarray, start: np.datetime64, end: np.datetime64) -> None:
        self.entries.append((crs.to_wkt(), keys, start, end))


def _raster_part(kind: str, stem: str, year: int, batch: DPixelBatch, source: str, crs: Any,
                 transform: Any, rows: np.ndarray, cols: np.ndarray, width: int,
                 dates: tuple[np.datetime64, np.datetime64], sites: EvalSites, taken: _Taken
                 ) -> CorpusPart:
    lonlat = _pixel_lonlat(crs, transform, rows, cols)
    near = sites.near(lonlat)
    keys = _Taken.keys(transform, rows, cols)
    dup = taken.seen(crs, keys, *dates) & ~near
    keep = np.flatnonzero(~(near | dup))
    taken.add(crs, keys[keep], *dates)
    if len(keep) < len(batch):
        batch = batch.take(keep)
    return CorpusPart(f"{kind}:{stem}:{year}", _region(lonlat), int(year), batch, source,
                      (rows * width + cols)[keep].astype(np.int64), lonlat[keep],
                      {"near_eval": int(near.sum()), "duplicate": int(dup.sum())})


def patch_parts(files: CorpusFiles | str | os.PathLike, workdir: Path | None = None,
                sites: EvalSites | None = None, taken: _Taken | None = None) -> list[CorpusPart]:
    """patches_raw folders with every S2 band, converted per calendar year (module docstring)."""
    from tessera.dpixel import Tile
    from tessera.preprocess import ComposeOptions, PreprocessError, plan, run
    from tessera.preprocess.sources.netcdf import NetcdfSource

    files = CorpusFiles.of(files)
    folder = files.path(files.patches)
    workdir = Path(workdir) if workdir is not None else _default_workdir()
    sites = eval_sites(files) if sites is None else sites
    taken = _Taken() if taken is None else taken
    parts: list[CorpusPart] = []
    if not folder.is_dir():
        log.warning("corpus: %s not found, no patches", folder)
        return parts
    for patch in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not any(patch.glob("S2_L2A_10m_*.nc")):
            log.info("corpus: %s has no 10 m S2 cube (B02 B03 B04 B08), skipped", patch.name)
            continue
        src = NetcdfSource(patch)
        times = np.concatenate([c10.times for c10, _ in src.inventory().s2])
        for year in np.unique(times.astype("datetime64[Y]").astype(np.int64) + 1970):
            try:
                p = plan(src, src.native_grid(), int(year), patch_size=500)
            except PreprocessError as exc:
                log.info("corpus: %s %s skipped (%s)", patch.name, year, exc)
                continue
            out = workdir / "patches" / patch.name / str(year)
            report = run(p, out, ComposeOptions())
            for name in sorted([*report.written, *report.skipped]):
                tile = Tile.open(out / name)
                h, w = tile.shape
                rows, cols = np.divmod(np.arange(h * w), w)
                inside = np.asarray(tile.roi).reshape(-1) > 0
                batch = tile.read_rows(0, h).take(np.flatnonzero(inside))
                span = (np.datetime64(f"{int(year)}-01-01"), np.datetime64(f"{int(year)}-12-31"))
                parts.append(_raster_part("patch", f"{patch.name}/{name}", int(year), batch,
                                          str(patch), tile.crs, tile.transform, rows[inside],
                                          cols[inside], w, span, sites, taken))
    return parts


def cube_parts(files: CorpusFiles | str | os.PathLike, sites: EvalSites | None = None,
               split: str = "cycle", taken: _Taken | None = None) -> list[CorpusPart]:
    """Every monthly cube of worldcereal/cubes, per d-pixel year (module docstring)."""
    from tessera.preprocess.sources.cubes import read_cube

    files = CorpusFiles.of(files)
    folder = files.path(files.cubes)
    sites = eval_sites(files) if sites is None else sites
    taken = _Taken() if taken is None else taken
    parts: list[CorpusPart] = []
    # larger cubes first, so that a crop of another cube is the one recognised as duplicate
    paths = sorted(folder.glob("*.nc"), key=lambda p: (-p.stat().st_size, p.name))
    for path in paths:
        cube = read_cube(path, split)
        if cube.crs is None or cube.transform is None:
            raise InputError(f"{path}: no CRS / grid; cannot place its pixels (needed to keep "
                             "evaluation sites out)")
        for year, batch in cube.batches.items():
            d = cube.dates_of(year)
            parts.append(_raster_part("cube", path.stem, year, batch, str(path), cube.crs,
                                      cube.transform, cube.rows, cube.cols, cube.shape[1],
                                      (d.min(), d.max()), sites, taken))
    return sorted(parts, key=lambda p: p.name)


def _default_workdir() -> Path:
    return Path(tempfile.gettempdir()) / "tessera_corpus"


def real_corpus(files: CorpusFiles | str | os.PathLike, workdir: Path | None = None,
                split: str = "cycle") -> list[CorpusPart]:
    """Every usable real pixel under the root of `files` (a `CorpusFiles` or the datasets root,
    e.g. ../shared/datasets) as `CorpusPart`s.

    Patch tiles are written under `workdir` (default: <tmp>/tessera_corpus; conversion is
    resumable, a second call reuses them). `split`: "cycle" or "year" (module docstring).
    Parts whose every pixel was dropped (see `CorpusPart.dropped`) are kept, with 0 pixels.
    """
    files = CorpusFiles.of(files)
    if not files.path(files.worldcereal).is_dir():
        raise NotFoundError(f"{files.path(files.worldcereal)}: not found; the real corpus needs "
                            "the WorldCereal datasets, e.g. ../shared/datasets/worldcereal "
                            "(see its README)")
    sites = eval_sites(files)
    taken = _Taken()
    parts = (patch_parts(files, workdir, sites, taken) + cube_parts(files, sites, split, taken)
             + table_parts(files, sites, split))
    for p in parts:
        if not p.n_pixels:
            log.info("corpus: %s has no pixel left (%s)", p.name, p.dropped)
    return parts


def corpus_summary(parts: list[CorpusPart], min_valid: int = MIN_VALID) -> pd.DataFrame:
    """One row per part: name, region, year, pixels, mean valid S2 / S1 dates per pixel, the
    pixels passing the pretraining filter (>= min_valid valid S2 and S1 dates), and the pixels
    dropped (near an evaluation site, duplicate)."""
    rows = []
    for p in parts:
        b = p.batch
        n2 = (b.s2_valid & b.s2_present).sum(1)
        n1 = b.s1_asc_valid.sum(1) + b.s1_desc_valid.sum(1)
        rows.append({"name": p.name, "region": p.region, "year": p.year, "pixels": len(b),
                     "s2_dates": int(b.s2.shape[1]),
                     "mean_valid_s2": round(float(n2.mean()), 2) if len(b) else 0.0,
                     "mean_valid_s1": round(float(n1.mean()), 2) if len(b) else 0.0,
                     f"pass_{min_valid}_{min_valid}": int(((n2 >= min_valid)
                                                           & (n1 >= min_valid)).sum()),
                     "dropped_near_eval": p.dropped.get("near_eval", 0),
                     "dropped_duplicate": p.dropped.get("duplicate", 0)})
    return pd.DataFrame(rows)
