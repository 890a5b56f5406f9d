"""Plain feature tables from two public NDVI data sets, for checking the evaluation engine
(`tessera head evaluate TABLE --features 'ndvi_*'`) against known numbers.

Why: both data sets carry NDVI only (no Sentinel-1, no full Sentinel-2 band set), so no TESSERA
embedding can be made from them; what they check is the engine itself: heads, splits, metrics
and reports on a plain feature vector, against a published number (UCR Crop) and on spatially
autocorrelated pixels (the eo-learn patch). The data stays where it is; these functions write
Parquet tables wherever asked (keep them out of the repository).

- UCR "Crop" (FORMOSAT-2 NDVI, 46 dates, 24 classes; `Crop_{TRAIN,VALIDATION,TEST}.npy`,
  column 0 = the class 1..24): `ucr_crop_tables` writes `ucr_crop_train.parquet` (TRAIN and
  VALIDATION: here a reduced re-split of the canonical 7200-row training set, 5759 rows) and
  `ucr_crop_test.parquet` (the canonical test set), columns label, class_name, part,
  ndvi_000 .. ndvi_045.
- eo-learn's test EOPatch (Sentinel-2 NDVI at 68 dates 2015-2017, 101 x 100 px of 10 m in
  Slovenia, EPSG:32633, with cloud masks and a LULC map): `eolearn_lulc_table` writes
  `eolearn_lulc.parquet`, one row per pixel with a LULC class (0 = no data left out): row,
  col, x, y (UTM 33N metres, pixel centre), lon, lat, block (squares of `block_px` pixels, for
  `--split grouped --group block`), label (the LULC code), class_name, n_clear (cloud-free
  dates), ndvi_000 .. ndvi_067. Cloudy dates (CLM = 1 or IS_DATA = 0) are linearly interpolated
  in time from the pixel's clear dates by default (eo-learn's own land-cover example does the
  same), or kept as they are (`clouds="keep"`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tessera.errors import ExistsError, InputError, NotFoundError

UCR_PARTS = ("TRAIN", "VALIDATION", "TEST")
#: The UCR archive's README of Crop: class code -> English name.
UCR_CROP_CLASSES = {
    1: "corn", 2: "wheat", 3: "dense building", 4: "built indu", 5: "diffuse building",
    6: "temporary meadow", 7: "hardwood", 8: "wasteland", 9: "jachere", 10: "soy", 11: "water",
    12: "pre", 13: "softwood", 14: "sunflower", 15: "sorghum", 16: "eucalyptus",
    17: "rapeseed", 18: "but drilling", 19: "barley", 20: "peas", 21: "poplars",
    22: "mineral surface", 23: "gravel", 24: "lake"}
#: eo-learn's example_data/lulc_classes.py: LULC code -> name.
EOLEARN_LULC_CLASSES = {
    0: "no data", 1: "cultivated land", 2: "forest", 3: "grassland", 4: "shrubland",
    5: "water", 6: "wetlands", 7: "tundra", 8: "artificial surface", 9: "bareland",
    10: "snow and ice"}
CLOUDS = ("interpolate", "keep")


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise NotFoundError(f"{path}: not found (see ../shared/datasets/README.md)")
    return np.load(path, allow_pickle=False)


def _write(df: pd.DataFrame, final: Path, meta: dict[str, Any], overwrite: bool) -> Path:
    """One Parquet file, atomically, with `meta` as JSON under the schema key
    `tessera_sanity`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tessera.atomic import atomic_path

    if final.exists() and not overwrite:
        raise ExistsError(f"{final}: exists; pass overwrite (--overwrite) to replace it")
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"tessera_sanity": json.dumps(meta).encode()})
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp)
    return final


def _ndvi_columns(n: int) -> list[str]:
    return [f"ndvi_{i:03d}" for i in range(n)]


def ucr_crop_tables(folder: str | os.PathLike, out_dir: str | os.PathLike, *,
                    overwrite: bool = False) -> dict[str, Path]:
    """`ucr_crop_train.parquet` (TRAIN + VALIDATION) and `ucr_crop_test.parquet` (TEST) from
    the UCR Crop .npy files of `folder` (see the module docstring)."""
    src, out = Path(folder), Path(out_dir)
    arrays = {p: _load(src / f"Crop_{p}.npy") for p in UCR_PARTS}
    widths = {a.shape[1] if a.ndim == 2 else -1 for a in arrays.values()}
    if len(widths) != 1 or -1 in widths:
        shapes = ", ".join(f"{p} {a.shape}" for p, a in arrays.items())
        raise InputError(f"{src}: Crop_*.npy shapes {shapes}; expected (rows, 1 + steps) with "
                         "the same steps in each")
    steps = widths.pop() - 1
    frames: dict[str, pd.DataFrame] = {}
    for part, a in arrays.items():
        codes = a[:, 0]
        if not np.all(codes == np.round(codes)) or not set(codes.astype(int)) <= set(
                UCR_CROP_CLASSES):
            raise InputError(f"{src / f'Crop_{part}.npy'}: column 0 holds "
                             f"{sorted(set(codes.tolist()))[:5]}...; expected the classes 1..24")
        df = pd.DataFrame(a[:, 1:].astype(np.float32), columns=_ndvi_columns(steps))
        df.insert(0, "part", part)
        df.insert(0, "class_name", [UCR_CROP_CLASSES[int(c)] for c in codes])
        df.insert(0, "label", codes.astype(np.int64))
        frames[part] = df
    meta = {"source": str(src), "dataset": "UCR Crop (FORMOSAT-2 NDVI)",
            "rows": {p: len(a) for p, a in arrays.items()},
            "note": "TRAIN + VALIDATION are a reduced re-split of the canonical 7200-row "
                    "training set; TEST is the canonical test set"}
    train = pd.concat([frames["TRAIN"], frames["VALIDATION"]], ignore_index=True)
    return {"train": _write(train, out / "ucr_crop_train.parquet", meta, overwrite),
            "test": _write(frames["TEST"], out / "ucr_crop_test.parquet", meta, overwrite)}


def _interpolate(ndvi: np.ndarray, clear: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Per pixel (rows of `ndvi`, dates along axis 1): values at unclear dates linearly
    interpolated in time from the clear ones (constant beyond the first / last); a pixel
    without any clear date stays NaN."""
    out = np.full_like(ndvi, np.nan)
    for i in range(len(ndvi)):
        ok = clear[i]
        if ok.any():
            out[i] = np.interp(days, days[ok], ndvi[i, ok])
    return out


def eolearn_lulc_table(folder: str | os.PathLike, out_dir: str | os.PathLike, *,
                       clouds: str = "interpolate", block_px: int = 20,
                       overwrite: bool = False) -> Path:
    """`eolearn_lulc.parquet`: the pixels of eo-learn's test EOPatch in `folder` with their
    NDVI series and LULC class (see the module docstring)."""
    from pyproj import Transformer

    if clouds not in CLOUDS:
        raise InputError(f"clouds {clouds!r}: expected one of {', '.join(CLOUDS)}")
    if block_px < 1:
        raise InputError(f"block_px {block_px}: expected a block edge of >= 1 pixel")
    src = Path(folder)
    ndvi = _load(src / "data" / "NDVI.npy")
    lulc = _load(src / "mask_timeless" / "LULC.npy")
    clm = _load(src / "mask" / "CLM.npy")
    is_data = _load(src / "mask" / "IS_DATA.npy")
    t, h, w = ndvi.shape[:3]
    if lulc.shape[:2] != (h, w) or clm.shape[:3] != (t, h, w) or is_data.shape[:3] != (t, h, w):
        raise InputError(f"{src}: NDVI {ndvi.shape}, LULC {lulc.shape}, CLM {clm.shape}, "
                         f"IS_DATA {is_data.shape}: expected (time, h, w, 1) and (h, w, 1)")
    stamps_path = src / "timestamps.json"
    bbox_path = src / "bbox.geojson"
    for p in (stamps_path, bbox_path):
        if not p.is_file():
            raise NotFoundError(f"{p}: not found (see ../shared/datasets/README.md)")
    stamps = [str(s) for s in json.loads(stamps_path.read_text())]
    if len(stamps) != t:
        raise InputError(f"{stamps_path}: {len(stamps)} dates for {t} NDVI layers")
    bbox = json.loads(bbox_path.read_text())
    crs = str(bbox.get("crs", {}).get("properties", {}).get("name", ""))
    epsg = crs.rsplit(":", 1)[-1]
    if not epsg.isdigit():
        raise InputError(f"{bbox_path}: no EPSG code in its crs member ({crs!r})")
    ring = np.asarray(bbox["coordinates"][0], float)
    x0, x1, y0, y1 = ring[:, 0].min(), ring[:, 0].max(), ring[:, 1].min(), ring[:, 1].max()
    rows, cols = np.divmod(np.arange(h * w), w)
    x = x0 + (cols + 0.5) * (x1 - x0) / w
    y = y1 - (rows + 0.5) * (y1 - y0) / h
    lon, lat = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True).transform(x, y)
    series = np.moveaxis(ndvi[..., 0], 0, -1).reshape(h * w, t).astype(np.float32)
    clear = np.moveaxis((clm[..., 0] == 0) & (is_data[..., 0] == 1), 0, -1).reshape(h * w, t)
    days = pd.to_datetime(pd.Series(stamps)).to_numpy("datetime64[D]").astype(np.int64)
    if clouds == "interpolate":
        series = _interpolate(series, clear, days.astype(float)).astype(np.float32)
    code = lulc[..., 0].reshape(-1).astype(np.int64)
    unknown = sorted(set(code.tolist()) - set(EOLEARN_LULC_CLASSES))
    if unknown:
        raise InputError(f"{src / 'mask_timeless' / 'LULC.npy'}: codes {unknown} are not in "
                         "eo-learn's LULC legend (0..10)")
    keep = code != 0
    df = pd.DataFrame(series[keep], columns=_ndvi_columns(t))
    front = {"row": rows[keep], "col": cols[keep], "x": x[keep], "y": y[keep],
             "lon": np.asarray(lon)[keep], "lat": np.asarray(lat)[keep],
             "block": [f"r{r // block_px}_c{c // block_px}"
                       for r, c in zip(rows[keep], cols[keep])],
             "label": code[keep], "class_name": [EOLEARN_LULC_CLASSES[c] for c in code[keep]],
             "n_clear": clear[keep].sum(axis=1)}
    df = pd.concat([pd.DataFrame(front), df], axis=1)
    meta = {"source": str(src), "dataset": "eo-learn test EOPatch (Sentinel-2 NDVI, LULC)",
            "crs": f"EPSG:{epsg}", "dates": stamps, "clouds": clouds, "block_px": block_px,
            "pixels": h * w, "rows_no_data": int((~keep).sum()),
            "pixels_never_clear": int((~clear[keep].any(axis=1)).sum())}
    return _write(df, Path(out_dir) / "eolearn_lulc.parquet", meta, overwrite)


__all__ = ["CLOUDS", "EOLEARN_LULC_CLASSES", "UCR_CROP_CLASSES", "eolearn_lulc_table",
           "ucr_crop_tables"]
