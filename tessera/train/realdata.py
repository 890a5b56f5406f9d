"""Every real pixel of ../shared/datasets/worldcereal as d-pixels, for pretraining.

Parts (one per source and calendar year, because a d-pixel is one year):
- patches_raw: the Belgian patches that have all S2 bands, converted with the preprocessing
  netCDF source (irregular dates, SCL cloud masks, S1 ascending in dB) into tile folders;
- cubes: the monthly Belgian cubes, one 12-month window each (a cube of at most 12 months is
  one window, a longer one is split by calendar year) (S2 composites without SCL: an S2 step is valid when its
  bands are present; S1 as WorldCereal's encoded DN, dB = 20 log10(DN) - 83; 65535 = missing;
  B8A is not in the cubes and is filled from B08, as the point-table reader does).
Held out (never returned): the WorldCereal extraction tables, which are the probe and the
evaluation sets.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from tessera.bands import S2_BANDS, s1_db_to_int16
from tessera.dpixel import DPixelBatch, Tile

#: cube variable names per model band, in the two naming schemes of the cubes
_CUBE_S2 = {b: (f"S2-L2A-{b}", b, b.replace("B0", "B")) for b in S2_BANDS}
_CUBE_S1 = {"VV": ("S1-SIGMA0-VV", "VV"), "VH": ("S1-SIGMA0-VH", "VH")}
MISSING = 65535


@dataclasses.dataclass
class CorpusPart:
    name: str
    region: str
    year: int
    batch: DPixelBatch

    @property
    def n_pixels(self) -> int:
        return len(self.batch)


def patch_parts(root: Path, workdir: Path) -> list[CorpusPart]:
    """Belgian patches_raw with a 10 m S2 file, every calendar year they cover."""
    from tessera.preprocess import ComposeOptions, plan, run
    from tessera.preprocess.sources.netcdf import NetcdfSource

    parts = []
    for folder in sorted((root / "worldcereal" / "patches_raw").iterdir()):
        if not any(folder.glob("S2_L2A_10m_*.nc")):
            continue  # no B02/B03/B04/B08: cannot make a d-pixel
        src = NetcdfSource(folder)
        start, end = folder.glob("S2_L2A_10m_*.nc").__next__().stem.split("_")[-2:]
        for year in range(int(start[:4]), int(end[:4]) + 1):
            out = workdir / folder.name / str(year)
            p = plan(src, src.native_grid(), year, patch_size=500)
            run(p, out, ComposeOptions(resampling_10m="nearest"))
            for tile_dir in sorted(d for d in out.iterdir() if d.is_dir()):
                tile = Tile.open(tile_dir)
                parts.append(CorpusPart(f"patch:{folder.name}:{year}", folder.name, year,
                                        tile.read_rows(0, tile.shape[0])))
    return parts


def _var(ds, names: tuple[str, ...], path: Path) -> np.ndarray:
    for n in names:
        if n in ds:
            return np.asarray(ds[n].values).astype(np.int64) & 0xFFFF  # stored int16, unsigned
    raise KeyError(f"{path}: none of the variables {', '.join(names)}")


def cube_parts(root: Path, min_dates: int = 10) -> list[CorpusPart]:
    """Monthly cubes split by calendar year; years with fewer than `min_dates` months are left
    out (they cannot pass the >= 10 valid dates filter)."""
    import xarray as xr

    parts = []
    for path in sorted((root / "worldcereal" / "cubes").glob("*.nc")):
        with open(path, "rb") as f:
            engine = "scipy" if f.read(3) == b"CDF" else "h5netcdf"  # netCDF3 or netCDF4
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_dataset(path, engine=engine, mask_and_scale=False, decode_times=True)
        t = pd.DatetimeIndex(ds["t"].values)
        s2 = np.stack([_var(ds, _CUBE_S2[b], path) if b != "B8A" else
                       _var(ds, _CUBE_S2["B08"], path) for b in S2_BANDS], -1)  # (T, H, W, 10)
        s1 = np.stack([_var(ds, _CUBE_S1[p], path) for p in ("VV", "VH")], -1)
        ds.close()
        tt, h, w = s2.shape[:3]
        s2_ok = (s2 != MISSING).all(-1) & (s2 > 0).any(-1)
        with np.errstate(divide="ignore"):
            db = 20.0 * np.log10(np.where((s1 == MISSING) | (s1 <= 0), np.nan, s1)) - 83.0
        code = np.where(np.isnan(db), 0, s1_db_to_int16(np.nan_to_num(db))).astype(np.int16)
        code[np.isnan(db).any(-1)] = 0  # one missing polarisation = no observation
        doy = t.dayofyear.to_numpy().astype(np.int16)
        if len(t) <= 12:  # one annual window (it may straddle New Year: doys stay distinct)
            windows = [(int(pd.Series(t.year).mode()[0]), np.arange(len(t)))]
        else:
            windows = [(int(y), np.flatnonzero(t.year == y)) for y in sorted(set(t.year))]
        for year, sel in windows:
            if len(sel) < min_dates:
                continue

            def pm(a: np.ndarray) -> np.ndarray:
                a = a[sel]
                return np.ascontiguousarray(np.moveaxis(a, 0, 2)).reshape(h * w, len(sel),
                                                                          *a.shape[3:])
            batch = DPixelBatch.from_shared_dates(
                s2=pm(np.where(s2 == MISSING, 0, s2).astype(np.uint16)), s2_valid=pm(s2_ok),
                s2_doy=doy[sel], s1_asc=pm(code), s1_asc_doy=doy[sel],
                s1_desc=np.zeros((h * w, 0, 2), np.int16), s1_desc_doy=np.zeros(0, np.int16))
            parts.append(CorpusPart(f"cube:{path.stem}:{year}", path.stem, int(year), batch))
    return parts


def real_corpus(root: Path, workdir: Path) -> list[CorpusPart]:
    return patch_parts(root, workdir) + cube_parts(root)


def corpus_summary(parts: list[CorpusPart], min_valid: int = 10) -> pd.DataFrame:
    rows = []
    for p in parts:
        b = p.batch
        n2 = (b.s2_valid & b.s2_present).sum(1)
        n1 = b.s1_asc_valid.sum(1) + b.s1_desc_valid.sum(1)
        rows.append({"name": p.name, "region": p.region, "year": p.year, "pixels": len(b),
                     "mean_valid_s2": float(n2.mean()), "mean_valid_s1": float(n1.mean()),
                     "passing": int(((n2 >= min_valid) & (n1 >= min_valid)).sum())})
    return pd.DataFrame(rows)
