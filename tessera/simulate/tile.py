"""A whole simulated tile: the arrays in memory (`simulate_arrays`), a tile folder on disk with
its `simulation.json` sidecar (`simulate_tile`) and a long point table of sampled pixels
(`simulate_table`).

Why a module of its own: this is where the scene, the dates and the sensors are put together,
the one part of the simulator the rest of the code base calls.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tessera.bands import S2_BANDS, SCL_NAMES, s1_int16_to_db
from tessera.errors import InputError
from tessera.simulate.classes import CLASSES
from tessera.simulate.config import (DATES_STREAM, S1_ASC_STREAM, S1_DESC_STREAM, TABLE_STREAM,
                                     SimConfig, stream_rng, tile_geometry)
from tessera.simulate.dates import (acquisition_doys, cloud_covers, soil_moisture,
                                    tile_latitude)
from tessera.simulate.scene import RandomFields, build_scene
from tessera.simulate.sensors import render_s1, render_s2

if TYPE_CHECKING:
    import pandas as pd


# --- public API -------------------------------------------------------------------------------
def simulate_arrays(config: SimConfig | None = None, workers: int | None = None
                    ) -> dict[str, np.ndarray]:
    """Simulate one tile in memory.

    Returns the `write_tile` arrays (``bands`` (T2, H, W, 10) uint16, ``masks`` (T2, H, W)
    uint8, ``doys``, ``sar_ascending`` (Ta, H, W, 2) int16, ``sar_ascending_doy``,
    ``sar_descending``, ``sar_descending_doy``, ``roi`` (H, W) uint8) plus ``scl``
    (T2, H, W) uint8, ``labels`` (H, W) uint8 (see `CLASSES`) and ``fields`` (H, W) int32
    (parcel ids, e.g. for spatial hold-out). All of it is SIMULATED. The CRS and transform
    are `tile_geometry(config)`. Dates are rendered by `workers` threads (default: up to 4
    CPUs); the result does not depend on it.
    """
    config = config or SimConfig()
    h, w = config.height, config.width
    scene = build_scene(config)
    noise = RandomFields(h, w)
    lat = tile_latitude(config)
    n_days = config.n_days

    drng = stream_rng(config.seed, DATES_STREAM)
    moisture = soil_moisture(drng, n_days)
    s2_doys, _, _ = acquisition_doys(drng, config.n_s2_dates, n_days, drop=0.08, jitter=1)
    asc_doys, step, off = acquisition_doys(drng, config.n_s1_asc, n_days, drop=0.08, jitter=0)
    desc_off = off + step / 2 + float(drng.uniform(-1, 1))
    desc_doys, _, _ = acquisition_doys(drng, config.n_s1_desc, n_days, drop=0.08, jitter=0,
                                        offset=desc_off if config.n_s1_asc else None)
    covers = cloud_covers(drng, s2_doys, config.cloud_fraction, config.cloud_seasonality)

    bands = np.empty((len(s2_doys), h, w, 10), dtype=np.uint16)
    scl = np.empty((len(s2_doys), h, w), dtype=np.uint8)
    masks = np.empty((len(s2_doys), h, w), dtype=np.uint8)
    sar = {"ascending": np.empty((len(asc_doys), h, w, 2), dtype=np.int16),
           "descending": np.empty((len(desc_doys), h, w, 2), dtype=np.int16)}
    jobs: list[Any] = []
    for t, doy in enumerate(s2_doys):
        jobs.append((render_s2, scene, config, noise, t, int(doy), float(covers[t]),
                     float(moisture[doy - 1]), lat, bands[t], scl[t], masks[t]))
    for orbit, (name, doys, stream) in enumerate((("ascending", asc_doys, S1_ASC_STREAM),
                                                  ("descending", desc_doys, S1_DESC_STREAM))):
        for t, doy in enumerate(doys):
            jobs.append((render_s1, scene, config, orbit, stream, t, int(doy),
                         float(moisture[doy - 1]), sar[name][t]))
    for key in {(config.cloud_scale, 3.2), (config.cloud_scale, 2.5), (max(h, w), 3.0)}:
        noise.filter(*key)  # fill the cache before threads share it
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for f in [pool.submit(job[0], *job[1:]) for job in jobs]:
                f.result()
    else:
        for job in jobs:
            job[0](*job[1:])
    return {
        "bands": bands, "masks": masks, "scl": scl, "doys": s2_doys.astype(np.int16),
        "sar_ascending": sar["ascending"], "sar_ascending_doy": asc_doys.astype(np.int16),
        "sar_descending": sar["descending"], "sar_descending_doy": desc_doys.astype(np.int16),
        "roi": scene.roi, "labels": scene.labels, "fields": scene.fields,
    }


def _sidecar(config: SimConfig) -> dict[str, Any]:
    return {
        "simulated": True,
        "generator": "tessera.simulate",
        "note": "SIMULATED data: synthetic scene, not satellite observations.",
        "seed": config.seed,
        "config": config.to_json(),
        "classes": {str(k): v for k, v in CLASSES.items()},
        "s2_band_order": list(S2_BANDS),
        "scl_names": {str(k): v for k, v in SCL_NAMES.items()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def simulate_tile(out_dir: str | os.PathLike, config: SimConfig | None = None,
                  workers: int | None = None) -> Path:
    """Simulate a tile and write it atomically as a tile folder at `out_dir`.

    Besides the published layout it holds ``labels.npy`` (and ``labels.tiff`` when
    ``config.write_labels_tiff``), ``fields.npy``, ``scl.npy`` (when ``config.write_scl``) and
    ``simulation.json`` (``"simulated": true``, seed, config, class table). An existing folder
    is replaced.
    """
    from tessera.dpixel import write_tile

    config = config or SimConfig()
    arrays = simulate_arrays(config, workers=workers)
    crs, transform = tile_geometry(config)
    extra = {"labels": arrays["labels"], "fields": arrays["fields"]}
    if config.write_scl:
        extra["scl"] = arrays["scl"]

    def sidecars(folder: Path) -> None:
        if config.write_labels_tiff:
            _write_labels_tiff(folder / "labels.tiff", arrays["labels"], crs, transform)
        (folder / "simulation.json").write_text(json.dumps(_sidecar(config), indent=2))

    return write_tile(out_dir, bands=arrays["bands"], masks=arrays["masks"], doys=arrays["doys"],
                      sar_ascending=arrays["sar_ascending"],
                      sar_ascending_doy=arrays["sar_ascending_doy"],
                      sar_descending=arrays["sar_descending"],
                      sar_descending_doy=arrays["sar_descending_doy"],
                      roi=arrays["roi"], crs=crs, transform=transform, extra=extra,
                      add_files=sidecars)


def _write_labels_tiff(path: Path, labels: np.ndarray, crs: str, transform: Any) -> None:
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", height=labels.shape[0], width=labels.shape[1],
                       count=1, dtype="uint8", crs=crs, transform=transform, nodata=0,
                       compress="deflate") as dst:
        dst.write(labels, 1)
        dst.update_tags(simulated="true", **{f"class_{k}": v for k, v in CLASSES.items()})


#: Column order of `simulate_table`.
TABLE_COLUMNS: tuple[str, ...] = (
    "sample_id", "row", "col", "x", "y", "label", "class_id", "sensor", "orbit", "date", "doy",
    "SCL", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "VV", "VH",
)


def simulate_table(n_samples: int, config: SimConfig | None = None) -> pd.DataFrame:
    """A long-form point table of SIMULATED observations of `n_samples` random ROI pixels.

    The scene of `config` (default: a 128 x 128 tile, seed 0) is simulated with
    `simulate_arrays`, so the values equal the tile's at the sampled pixels. One row per
    (sample_id, date) for S2 and per (sample_id, date, orbit) for S1, sorted by sample, date,
    sensor. Columns (`TABLE_COLUMNS`): ``sample_id``, ``row``/``col`` (pixel), ``x``/``y``
    (pixel centre in the tile CRS), ``label`` (class name), ``class_id``, ``sensor`` ("S2"
    or "S1"), ``orbit`` ("ascending" / "descending"; missing on S2 rows), ``date``
    (datetime64 in ``config.year``), ``doy``, ``SCL`` (nullable integer; missing on S1 rows),
    the S2 bands B02 ... B12 (reflectance x 10 000, integer values in float32; NaN on S1
    rows) and ``VV``/``VH`` (dB, float32; NaN on S2 rows). Cloudy S2 rows are kept (filter on
    ``SCL``); rows where the sensor had no data at the pixel (SCL 0, S1 code 0) are left out.
    """
    import pandas as pd

    config = config or SimConfig(height=128, width=128)
    arrays = simulate_arrays(config)
    h, w = config.height, config.width
    inside = np.flatnonzero(arrays["roi"].ravel())
    if n_samples < 0 or n_samples > inside.size:
        raise InputError(f"simulate_table: n_samples={n_samples}, but the simulated "
                         f"{h} x {w} scene has {inside.size} ROI pixels; use a larger config")
    rng = stream_rng(config.seed, TABLE_STREAM)
    pix = rng.choice(inside, n_samples, replace=False)
    rows, cols = pix // w, pix % w
    _, transform = tile_geometry(config)
    xs = transform.c + (cols + 0.5) * transform.a
    ys = transform.f + (rows + 0.5) * transform.e
    class_id = arrays["labels"][rows, cols]
    start = np.datetime64(f"{config.year}-01-01", "D")
    f32 = np.float32
    parts: list[pd.DataFrame] = []

    def frame(t: np.ndarray, s: np.ndarray, doys: np.ndarray, sensor: str,
              orbit: str | None) -> dict[str, Any]:
        return {
            "sample_id": s.astype(np.int64), "row": rows[s].astype(np.int32),
            "col": cols[s].astype(np.int32), "x": xs[s], "y": ys[s],
            "label": np.array([CLASSES[int(c)] for c in class_id[s]], dtype=object),
            "class_id": class_id[s].astype(np.int16), "sensor": sensor,
            "orbit": orbit, "date": (start + (doys[t].astype(np.int64) - 1)).astype(
                "datetime64[ns]"), "doy": doys[t].astype(np.int16),
        }

    # S2 rows
    doys = arrays["doys"]
    vals = arrays["bands"][:, rows, cols, :]  # (T2, n, 10)
    scl = arrays["scl"][:, rows, cols]
    t, s = np.nonzero(scl != 0)
    d2 = frame(t, s, doys, "S2", None)
    d2["SCL"] = pd.array(scl[t, s], dtype="UInt8")
    for i, band in enumerate(S2_BANDS):
        d2[band] = vals[t, s, i].astype(f32)
    d2["VV"] = d2["VH"] = np.full(t.size, np.nan, f32)
    parts.append(pd.DataFrame(d2))
    # S1 rows
    for orbit in ("ascending", "descending"):
        sar = arrays[f"sar_{orbit}"][:, rows, cols, :]  # (T, n, 2)
        t, s = np.nonzero((sar[..., 0] != 0) | (sar[..., 1] != 0))
        d1 = frame(t, s, arrays[f"sar_{orbit}_doy"], "S1", orbit)
        d1["SCL"] = pd.array([None] * t.size, dtype="UInt8")
        for band in S2_BANDS:
            d1[band] = np.full(t.size, np.nan, f32)
        db = s1_int16_to_db(sar[t, s])
        d1["VV"], d1["VH"] = db[:, 0], db[:, 1]
        parts.append(pd.DataFrame(d1))
    df = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    df["orbit"] = df["orbit"].astype(object).where(df["sensor"] == "S1", None)
    df = df.sort_values(["sample_id", "date", "sensor", "orbit"], kind="stable",
                        na_position="first", ignore_index=True)
    return df[list(TABLE_COLUMNS)]
