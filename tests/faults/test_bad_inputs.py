"""Bad input to every command, table-driven: each case must end with exit code 2, ONE line
`error: ...` naming the file or field (no traceback), and leave nothing behind (no new file or
folder, no temporary, inputs untouched).

A case is a function of (world, its own folder) returning the command's arguments and the
fragments the message must contain; the world's inputs are copied before being broken. Option
parsing errors caught by click itself (`--jobs 0`, `--port 70000`) are marked `usage`: exit 2
and click's usage message naming the option.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from fault_world import BBOX, GRID_TILE, World, save, snapshot, truncate

from tessera.cli import app


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[World, Path], tuple[list, list[str]]]
    usage: bool = False
    env: dict[str, str] | None = None


CASES: list[Case] = []


def case(usage: bool = False, env: dict[str, str] | None = None):
    def deco(fn):
        CASES.append(Case(fn.__name__, fn, usage, env))
        return fn
    return deco


def run(args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400", **(env or {})})


# --- embed -------------------------------------------------------------------------------------

def _tile(w, d):
    return w.copy(w.tile, d)


def _embed(t, d, *more):
    return ["embed", t, "-o", d / "out", "--no-progress", *more]


@case()
def embed_missing_folder(w, d):
    return _embed(d / "nope", d), ["nope", "not a tile folder"]


@case()
def embed_file_not_folder(w, d):
    (d / "afile").write_text("x")
    return _embed(d / "afile", d), ["afile"]


@case()
def embed_missing_bands(w, d):
    t = _tile(w, d)
    (t / "bands.npy").unlink()
    return _embed(t, d), ["bands.npy"]


@case()
def embed_truncated_bands(w, d):
    t = _tile(w, d)
    truncate(t / "bands.npy")
    return _embed(t, d), ["bands.npy"]


@case()
def embed_empty_bands(w, d):
    t = _tile(w, d)
    (t / "bands.npy").write_bytes(b"")
    return _embed(t, d), ["bands.npy"]


@case()
def embed_float_bands(w, d):
    t = _tile(w, d)
    save(t / "bands.npy", np.load(t / "bands.npy").astype(np.float64))
    return _embed(t, d), ["bands.npy", "float64"]


@case()
def embed_object_bands(w, d):
    t = _tile(w, d)
    a = np.empty(np.load(t / "bands.npy").shape, dtype=object)
    save(t / "bands.npy", a)
    return _embed(t, d), ["bands.npy", "object"]


@case()
def embed_nine_bands(w, d):
    t = _tile(w, d)
    save(t / "bands.npy", np.load(t / "bands.npy")[..., :9])
    return _embed(t, d), ["bands.npy", "10"]


@case()
def embed_reversed_doys(w, d):
    t = _tile(w, d)
    save(t / "doys.npy", np.load(t / "doys.npy")[::-1].copy())
    return _embed(t, d), ["doys.npy", "increasing"]


@case()
def embed_doy_out_of_range(w, d):
    t = _tile(w, d)
    doys = np.load(t / "doys.npy")
    doys[-1] = 400
    save(t / "doys.npy", doys)
    return _embed(t, d), ["doys.npy", "400"]


@case()
def embed_zero_s2_dates(w, d):
    t = _tile(w, d)
    for name, shape in (("bands", (0, 16, 12, 10)), ("masks", (0, 16, 12)), ("doys", (0,))):
        dtype = {"bands": np.uint16, "masks": np.uint8, "doys": np.int16}[name]
        save(t / f"{name}.npy", np.zeros(shape, dtype))
    return _embed(t, d), ["bands.npy", "no S2"]


@case()
def embed_masks_wrong_shape(w, d):
    t = _tile(w, d)
    save(t / "masks.npy", np.load(t / "masks.npy")[:, :5])
    return _embed(t, d), ["masks.npy"]


@case()
def embed_sar_doy_count(w, d):
    t = _tile(w, d)
    save(t / "sar_ascending_doy.npy", np.load(t / "sar_ascending_doy.npy")[:-1].copy())
    return _embed(t, d), ["sar_ascending_doy.npy"]


@case()
def embed_roi_missing(w, d):
    t = _tile(w, d)
    (t / "roi.tiff").unlink()
    return _embed(t, d), ["roi.tiff"]


@case()
def embed_roi_garbage(w, d):
    t = _tile(w, d)
    (t / "roi.tiff").write_bytes(b"not a tiff at all")
    return _embed(t, d), ["roi.tiff"]


@case()
def embed_corrupt_checkpoint(w, d):
    ck = w.copy(w.checkpoint, d)
    ck.write_bytes(os.urandom(500))
    return _embed(_tile(w, d), d, "--checkpoint", ck), [ck.name]


@case()
def embed_truncated_checkpoint(w, d):
    ck = w.copy(w.checkpoint, d)
    truncate(ck)
    return _embed(_tile(w, d), d, "--checkpoint", ck), [ck.name]


@case()
def embed_missing_checkpoint(w, d):
    return _embed(_tile(w, d), d, "--checkpoint", d / "none.safetensors"), ["none.safetensors"]


@case()
def embed_unknown_preset(w, d):
    return _embed(_tile(w, d), d, "--preset", "huge"), ["huge"]


@case()
def embed_batch_size_zero(w, d):
    return _embed(_tile(w, d), d, "--batch-size", "0"), ["batch_size 0"]


@case()
def embed_bad_sampling(w, d):
    return _embed(_tile(w, d), d, "--sampling", "random"), ["sampling 'random'"]


@case()
def embed_bad_geotiff_dtype(w, d):
    return _embed(_tile(w, d), d, "--geotiff-dtype", "float16"), ["--geotiff-dtype"]


@case()
def embed_output_is_a_file(w, d):
    (d / "out").write_text("x")
    return _embed(_tile(w, d), d), ["out"]


@case()
def embed_symlink_loop(w, d):
    os.symlink(d / "loop", d / "loop")
    return _embed(d / "loop", d), ["loop"]


@case()
def embed_cuda_without_gpu(w, d):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return _embed(_tile(w, d), d, "--device", "cuda"), ["cuda"]


@case()
def embed_output_and_store(w, d):
    return ["embed", _tile(w, d), "-o", d / "o", "--store", d / "s", "--year", "2022"], \
        ["exactly one"]


@case()
def embed_store_without_year(w, d):
    return ["embed", w.copy(w.grid_tile, d), "--store", d / "s"], ["--year"]


@case()
def embed_store_unreadable_manifest(w, d):
    store = w.copy(w.store, d)
    (store / "manifest.parquet").write_bytes(b"PAR1 garbage")
    return ["embed", w.copy(w.grid_tile, d), "--store", store, "--year", "2022",
            "--no-progress"], ["manifest.parquet"]


@case()
def embed_store_is_a_file(w, d):
    (d / "store").write_text("x")
    return ["embed", w.copy(w.grid_tile, d), "--store", d / "store", "--year", "2022",
            "--no-progress"], ["store"]


@case()
def embed_store_bad_grid_tile(w, d):
    return ["embed", w.copy(w.grid_tile, d), "--store", d / "s", "--year", "2022",
            "--grid-tile", "grid_6.1_45.05", "--no-progress"], ["grid_6.1_45.05"]


@case()
def embed_store_wrong_grid_tile(w, d):
    return ["embed", w.copy(w.grid_tile, d), "--store", d / "s", "--year", "2022",
            "--grid-tile", "grid_6.15_45.05", "--no-progress"], ["not on the grid"]


@case()
def embed_two_inputs_with_output(w, d):
    t = _tile(w, d)
    return ["embed", t, t, "-o", d / "o"], ["one tile folder"]


# --- embed-points ------------------------------------------------------------------------------

def _points(path, d, *more):
    return ["embed-points", path, "-o", d / "out.parquet", "--year", "2022", *more]


def _table(w, d):
    return w.copy(w.table, d)


@case()
def points_missing_file(w, d):
    return _points(d / "none.csv", d), ["none.csv"]


@case()
def points_empty_file(w, d):
    (d / "empty.csv").write_text("")
    return _points(d / "empty.csv", d), ["empty.csv"]


@case()
def points_cut_mid_row(w, d):
    t = _table(w, d)
    text = t.read_text()
    t.write_text(text[: text.rindex(",", 0, len(text) - 5)])  # the last row loses its tail
    return _points(t, d), ["table.csv", "row"]


@case()
def points_not_a_number(w, d):
    import pandas as pd
    t = _table(w, d)
    df = pd.read_csv(t)
    df["B04"] = df["B04"].astype(object)
    df.loc[3, "B04"] = "abc"
    df.to_csv(t, index=False)
    return _points(t, d), ["B04", "abc"]


@case()
def points_no_id_column(w, d):
    import pandas as pd
    t = _table(w, d)
    pd.read_csv(t).drop(columns=["sample_id"]).to_csv(t, index=False)
    return _points(t, d), ["sample_id"]


@case()
def points_no_date_column(w, d):
    import pandas as pd
    t = _table(w, d)
    pd.read_csv(t).drop(columns=["date"]).to_csv(t, index=False)
    return _points(t, d), ["date"]


@case()
def points_bad_date(w, d):
    import pandas as pd
    t = _table(w, d)
    df = pd.read_csv(t)
    df.loc[2, "date"] = "yesterday"
    df.to_csv(t, index=False)
    return _points(t, d), ["date", "yesterday"]


@case()
def points_wrong_s1_encoding(w, d):
    return _points(_table(w, d), d, "--s1-encoding", "linear"), ["S1 values look like"]


@case()
def points_bad_s2_scale(w, d):
    return _points(_table(w, d), d, "--s2-scale", "percent"), ["percent"]


@case()
def points_bad_nodata(w, d):
    return _points(_table(w, d), d, "--nodata", "abc"), ["--nodata"]


@case()
def points_bad_rename(w, d):
    return _points(_table(w, d), d, "--rename", "red"), ["OLD=NEW"]


@case()
def points_corrupt_parquet(w, d):
    (d / "t.parquet").write_bytes(b"PAR1 not really")
    return _points(d / "t.parquet", d), ["t.parquet"]


@case()
def points_unknown_preset(w, d):
    return _points(_table(w, d), d, "--preset", "huge"), ["huge"]


# --- preprocess --------------------------------------------------------------------------------

def _pre(w, d, *more):
    raw = w.copy(w.raw, d)
    return ["preprocess", "--source", "files", "--s2", raw / "s2" / "S2_{granule}_{date}_{band}.tif",
            "--s1", raw / "s1" / "S1_{orbit}_{date}_{band}.tif", "--year", "2022",
            "--no-progress", *more], raw


@case()
def pre_no_files_match(w, d):
    return ["preprocess", "--source", "files", "--s2", d / "x_{date}_{band}.tif", "--bbox",
            w.raw_bbox, "--year", "2022", "-o", d / "out", "--no-progress"], \
        ["no files match"]


@case()
def pre_bad_source(w, d):
    return ["preprocess", "--source", "ftp", "--year", "2022", "-o", d / "o"], ["--source"]


@case()
def pre_bad_bbox(w, d):
    args, _ = _pre(w, d, "--bbox", "1,2,3", "-o", d / "out")
    return args, ["--bbox"]


@case()
def pre_region_missing(w, d):
    args, _ = _pre(w, d, "--region", d / "none.geojson", "-o", d / "out")
    return args, ["none.geojson"]


@case()
def pre_region_not_json(w, d):
    (d / "r.geojson").write_text("{nope")
    args, _ = _pre(w, d, "--region", d / "r.geojson", "-o", d / "out")
    return args, ["r.geojson"]


@case()
def pre_year_too_early(w, d):
    args, _ = _pre(w, d, "--bbox", w.raw_bbox, "-o", d / "out")
    args[args.index("--year") + 1] = "2010"
    return args, ["2010"]


@case()
def pre_corrupt_tif(w, d):
    args, raw = _pre(w, d, "--bbox", w.raw_bbox, "-o", d / "out")
    f = sorted((raw / "s2").glob("*_B04.tif"))[0]
    f.write_bytes(b"II*\x00garbage" * 10)
    return args, [f.name]


@case()
def pre_truncated_tif(w, d):
    args, raw = _pre(w, d, "--bbox", w.raw_bbox, "-o", d / "out")
    f = sorted((raw / "s2").glob("*_B08.tif"))[0]
    truncate(f, 0.3)
    return args, [f.name]


@case()
def pre_two_regions(w, d):
    args, _ = _pre(w, d, "--bbox", w.raw_bbox, "--tile", GRID_TILE, "-o", d / "out")
    return args, ["only one"]


@case()
def pre_no_output(w, d):
    args, _ = _pre(w, d, "--bbox", w.raw_bbox)
    return args, ["-o"]


@case()
def pre_stac_without_url(w, d):
    return ["preprocess", "--source", "stac", "--bbox", w.raw_bbox, "--year", "2022", "-o",
            d / "o"], ["--stac-url"]


@case()
def pre_bad_tile_name(w, d):
    args, _ = _pre(w, d, "--tile", "grid_6.1_45.05", "-o", d / "out")
    return args, ["grid_6.1_45.05"]


@case()
def pre_patch_size_zero(w, d):
    args, _ = _pre(w, d, "--bbox", w.raw_bbox, "--patch-size", "0", "-o", d / "out")
    return args, ["patch size 0"]


@case()
def pre_bad_resampling(w, d):
    args, _ = _pre(w, d, "--bbox", w.raw_bbox, "--resampling-10m", "fancy", "-o", d / "out")
    return args, ["fancy"]


# --- store commands ----------------------------------------------------------------------------

def _store(w, d):
    return w.copy(w.store, d)


@case()
def download_store_missing(w, d):
    return ["download", "--store", d / "none", "--bbox", BBOX, "--year", "2022", "-o",
            d / "o"], ["none"]


@case()
def download_store_is_a_file(w, d):
    (d / "afile").write_text("x")
    return ["download", "--store", d / "afile", "--bbox", BBOX, "--year", "2022", "-o",
            d / "o"], ["afile"]


@case()
def download_year_absent(w, d):
    return ["download", "--store", _store(w, d), "--bbox", BBOX, "--year", "2019", "-o",
            d / "o"], ["2019", "2022"]


@case()
def download_bad_tile(w, d):
    return ["download", "--store", _store(w, d), "--tile", "grid_6.00_45.05", "--year",
            "2022", "-o", d / "o"], ["grid_6.00_45.05"]


@case()
def download_short_bbox(w, d):
    return ["download", "--store", _store(w, d), "--bbox", "5.9,45", "--year", "2022", "-o",
            d / "o"], ["four numbers"]


@case(usage=True)
def download_jobs_zero(w, d):
    return ["download", "--store", _store(w, d), "--bbox", BBOX, "--year", "2022", "-o",
            d / "o", "--jobs", "0"], ["--jobs"]


@case(usage=True)
def download_jobs_negative(w, d):
    return ["download", "--store", _store(w, d), "--bbox", BBOX, "--year", "2022", "-o",
            d / "o", "--jobs", "-3"], ["--jobs"]


@case()
def download_bad_format(w, d):
    return ["download", "--store", _store(w, d), "--bbox", BBOX, "--year", "2022", "-f", "gif",
            "-o", d / "o"], ["--format"]


@case()
def download_no_output(w, d):
    return ["download", "--store", _store(w, d), "--bbox", BBOX, "--year", "2022"], ["-o"]


@case()
def download_zarr_exists(w, d):
    (d / "o.zarr").mkdir()
    return ["download", "--store", _store(w, d), "--bbox", BBOX, "--year", "2022", "-f", "zarr",
            "-o", d / "o.zarr"], ["o.zarr", "--overwrite"]


@case()
def download_corrupt_manifest(w, d):
    s = _store(w, d)
    (s / "manifest.parquet").write_bytes(b"garbage")
    return ["download", "--store", s, "--bbox", BBOX, "--year", "2022", "-o", d / "o"], \
        ["manifest.parquet"]


@case()
def download_region_not_polygon(w, d):
    (d / "r.geojson").write_text(json.dumps({"type": "Point", "coordinates": [6.0, 45.0]}))
    return ["download", "--store", _store(w, d), "--region", d / "r.geojson", "--year", "2022",
            "-o", d / "o"], ["r.geojson"]


def _sample(w, d, points, *more):
    return ["sample", points, "--store", _store(w, d), "--year", "2022", "-o",
            d / "out.parquet", *more]


@case()
def sample_missing_points(w, d):
    return _sample(w, d, d / "none.csv"), ["none.csv"]


@case()
def sample_bad_cell(w, d):
    (d / "p.csv").write_text("lon,lat\n6.0,45.0\nabc,45.0\n")
    return _sample(w, d, d / "p.csv"), ["p.csv", "'lon'", "row 2"]


@case()
def sample_no_lat_column(w, d):
    (d / "p.csv").write_text("lon,height\n6.0,45.0\n")
    return _sample(w, d, d / "p.csv"), ["p.csv", "lat"]


@case()
def sample_year_absent(w, d):
    return ["sample", w.copy(w.points, d), "--store", _store(w, d), "--year", "2019", "-o",
            d / "out.parquet"], ["2019", "2022"]


@case()
def sample_nan_coordinate(w, d):
    (d / "p.csv").write_text("lon,lat\n6.0,45.0\n6.01,\n")
    return _sample(w, d, d / "p.csv"), ["p.csv", "row 2", "lat"]


@case()
def sample_inf_coordinate(w, d):
    (d / "p.csv").write_text("lon,lat\ninf,45.0\n")
    return _sample(w, d, d / "p.csv"), ["p.csv", "row 1", "lon"]


@case()
def sample_out_of_range(w, d):
    (d / "p.csv").write_text("lon,lat\n6.0,45.0\n200.0,45.0\n")
    return _sample(w, d, d / "p.csv"), ["p.csv", "row 2", "200"]


@case()
def sample_corrupt_parquet(w, d):
    (d / "p.parquet").write_bytes(b"PAR1 garbage")
    return _sample(w, d, d / "p.parquet"), ["p.parquet"]


@case()
def sample_empty_csv(w, d):
    (d / "p.csv").write_text("")
    return _sample(w, d, d / "p.csv"), ["p.csv"]


@case()
def sample_bad_geojson(w, d):
    (d / "p.geojson").write_text("{nope")
    return _sample(w, d, d / "p.geojson"), ["p.geojson"]


@case()
def sample_line_geojson(w, d):
    (d / "p.geojson").write_text(json.dumps({"type": "LineString",
                                             "coordinates": [[6, 45], [6.1, 45.1]]}))
    return _sample(w, d, d / "p.geojson"), ["LineString"]


def _export(w, d, out, *more):
    return ["export", "--store", _store(w, d), "--bbox", BBOX, "--year", "2022", "-o", out,
            *more]


@case()
def export_bad_suffix(w, d):
    return _export(w, d, d / "out.png"), ["out.png"]


@case()
def export_exists(w, d):
    (d / "out.tif").write_text("x")
    return _export(w, d, d / "out.tif"), ["out.tif", "--overwrite"]


@case()
def export_geographic_without_resolution(w, d):
    return _export(w, d, d / "out.tif", "--crs", "EPSG:4326"), ["resolution"]


@case()
def export_bad_crs(w, d):
    return _export(w, d, d / "out.tif", "--crs", "EPSG:999999"), ["EPSG:999999"]


@case()
def export_year_absent(w, d):
    args = _export(w, d, d / "out.tif")
    args[args.index("--year") + 1] = "2019"
    return args, ["2019"]


@case()
def export_zero_width(w, d):
    args = _export(w, d, d / "out.tif")
    args[args.index("--bbox") + 1] = "6.0,45.0,6.0,45.1"
    return args, ["zero width"]


@case()
def export_across_antimeridian(w, d):
    args = _export(w, d, d / "out.tif")
    args[args.index("--bbox") + 1] = "179.9,45.0,-179.9,45.1"
    return args, ["antimeridian"]


@case()
def export_bad_dtype(w, d):
    return _export(w, d, d / "out.tif", "--dtype", "uint8"), ["--dtype", "uint8"]


@case()
def export_zarr_with_crs(w, d):
    return _export(w, d, d / "out.zarr", "--crs", "EPSG:4326"), ["--crs"]


@case()
def export_too_large_without_yes(w, d):
    """2 stored tiles in a 10 x 10 degree box: a 7 GB GeoTIFF of mostly nothing, not without
    --yes."""
    args = _export(w, d, d / "out.tif")
    args[args.index("--bbox") + 1] = "5,40,15,50"
    return args, ["GB", "--yes"]


def _vis(w, d, *more):
    return ["visualize", "--store", _store(w, d), "--bbox", BBOX, "--year", "2022", "-o",
            d / "v.png", *more]


@case()
def visualize_pca_missing(w, d):
    return _vis(w, d, "--pca-from", d / "none.json"), ["none.json"]


@case()
def visualize_pca_not_json(w, d):
    (d / "p.json").write_text("{nope")
    return _vis(w, d, "--pca-from", d / "p.json"), ["p.json"]


@case()
def visualize_pca_wrong_format(w, d):
    (d / "p.json").write_text(json.dumps({"format": "something else"}))
    return _vis(w, d, "--pca-from", d / "p.json"), ["p.json"]


@case()
def visualize_year_absent(w, d):
    args = _vis(w, d)
    args[args.index("--year") + 1] = "2019"
    return args, ["2019"]


@case()
def visualize_bad_stretch(w, d):
    return _vis(w, d, "--stretch", "log"), ["log"]


@case(usage=True)
def visualize_max_size_zero(w, d):
    return _vis(w, d, "--max-size", "0"), ["--max-size"]


@case()
def visualize_no_region(w, d):
    return ["visualize", "--store", _store(w, d), "--year", "2022", "-o", d / "v.png"], \
        ["exactly one"]


@case()
def coverage_store_missing(w, d):
    return ["coverage", "--store", d / "none"], ["none"]


@case()
def coverage_corrupt_manifest(w, d):
    s = _store(w, d)
    (s / "manifest.parquet").write_bytes(b"garbage")
    return ["coverage", "--store", s], ["manifest.parquet"]


@case()
def check_store_missing(w, d):
    return ["store", "check", d / "none"], ["none"]


@case()
def check_corrupt_manifest(w, d):
    s = _store(w, d)
    truncate(s / "manifest.parquet")
    return ["store", "check", s], ["manifest.parquet"]


@case(usage=True)
def serve_port_out_of_range(w, d):
    return ["serve", _store(w, d), "--port", "70000"], ["--port"]


@case()
def serve_store_missing(w, d):
    return ["serve", d / "none"], ["none"]


@case()
def serve_port_in_use(w, d):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    d.joinpath(".keep").write_text(str(id(s)))  # keep the socket alive through the call
    CASE_RESOURCES.append(s)
    return ["serve", _store(w, d), "--port", str(s.getsockname()[1])], \
        [str(s.getsockname()[1])]


CASE_RESOURCES: list = []


# --- simulate, demo, shards, pretrain ----------------------------------------------------------

@case()
def simulate_size_zero(w, d):
    return ["simulate", d / "t", "--size", "0"], ["--size"]


@case()
def simulate_resolution_zero(w, d):
    return ["simulate", d / "t", "--resolution", "0"], ["--resolution"]


@case()
def simulate_bad_grid_tile(w, d):
    return ["simulate", d / "t", "--grid-tile", "grid_x_y"], ["grid_x_y"]


@case()
def simulate_exists(w, d):
    (d / "t").mkdir()
    (d / "t" / "f").write_text("x")
    return ["simulate", d / "t"], ["--overwrite"]


@case()
def demo_size_too_small(w, d):
    return ["demo", d / "demo", "--size", "4"], ["--size"]


@case()
def demo_bad_fraction(w, d):
    return ["demo", d / "demo", "--label-fraction", "2"], ["--label-fraction"]


@case()
def shards_missing_tile(w, d):
    return ["shards", d / "none", "-o", d / "s"], ["none"]


@case()
def shards_truncated_tile(w, d):
    t = _tile(w, d)
    truncate(t / "sar_ascending.npy")
    return ["shards", t, "-o", d / "s", "--no-progress"], ["sar_ascending.npy"]


@case()
def shards_output_not_empty(w, d):
    (d / "s").mkdir()
    (d / "s" / "f").write_text("x")
    return ["shards", _tile(w, d), "-o", d / "s", "--no-progress"], ["s"]


@case()
def shards_nothing_kept(w, d):
    return ["shards", _tile(w, d), "-o", d / "s", "--min-s2", "999", "--no-progress"], \
        ["--min-s2"]


def _pretrain(w, d, shards, *more):
    return ["pretrain", "--shards", shards, "-o", d / "run", "--batch-size", "16",
            "--no-progress", *more]


@case()
def pretrain_shards_missing(w, d):
    return _pretrain(w, d, d / "none", "--steps", "1"), ["none"]


@case()
def pretrain_truncated_shard(w, d):
    s = w.copy(w.shards, d)
    f = sorted(s.glob("shard_*/s2.npy"))[0]
    truncate(f, 0.05)
    return _pretrain(w, d, s, "--steps", "2"), [f"{f.parent.name}/s2.npy"]


@case()
def pretrain_steps_zero(w, d):
    return _pretrain(w, d, w.copy(w.shards, d), "--steps", "0"), ["--steps"]


@case()
def pretrain_bad_preset(w, d):
    return _pretrain(w, d, w.copy(w.shards, d), "--steps", "1", "--preset", "huge"), ["huge"]


@case()
def pretrain_nothing_to_resume(w, d):
    return _pretrain(w, d, w.copy(w.shards, d), "--steps", "1", "--resume"), \
        ["nothing to resume"]


@case()
def pretrain_bad_probe_options(w, d):
    return _pretrain(w, d, w.copy(w.shards, d), "--steps", "1", "--probe", w.table,
                     "--probe-options", "{nope"), ["--probe-options"]


@case()
def pretrain_steps_and_epochs(w, d):
    return _pretrain(w, d, w.copy(w.shards, d), "--steps", "1", "--epochs", "1"), \
        ["exactly one"]


@case()
def pretrain_batch_larger_than_shards(w, d):
    args = _pretrain(w, d, w.copy(w.shards, d), "--steps", "1")
    args[args.index("--batch-size") + 1] = "100000"
    return args, ["--batch-size"]


# --- the runner ----------------------------------------------------------------------------------

@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(c, world, tmp_path):
    args, says = c.build(world, tmp_path)
    before = snapshot(tmp_path)
    res = run(args, env=c.env)
    out, err = res.output, res.stderr  # results (a plan, a dry run) go to stdout
    assert res.exit_code == 2, f"exit {res.exit_code}: {out}"
    assert "Traceback" not in out and "internal error" not in out, out
    flat = " ".join(err.split())
    if c.usage:
        assert "Invalid value" in err or "Missing" in err or "Error" in err, out
    else:
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning:")]
        assert len(lines) == 1 and lines[0].startswith("error:"), out
    for s in says:
        assert s in flat, f"{s!r} not in: {out}"
    assert snapshot(tmp_path) == before, "files left behind or inputs changed"
