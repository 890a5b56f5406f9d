"""The small, valid inputs the fault suite breaks: a tile folder, a grid tile, a store, shards,
a checkpoint, point tables and simulated COGs, built once per test session.

Every fault case copies what it breaks into its own folder first, so cases never see each
other's damage."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

GRID_TILE = "grid_6.05_45.05"
STORE_TILES = ["grid_5.95_45.05", "grid_6.05_45.05"]
BBOX = "5.9,45.0,6.1,45.1"


@dataclasses.dataclass(frozen=True)
class World:
    root: Path
    tile: Path            # a tile folder (16 x 12 px, random values)
    grid_tile: Path       # a SIMULATED tile folder on GRID_TILE's raster at 250 m
    store: Path           # a SIMULATED store: STORE_TILES, year 2022, 250 m
    shards: Path          # shards of `tile`
    checkpoint: Path      # a tiny random-init checkpoint (.safetensors + .json)
    points: Path          # points.csv: lon, lat inside the store
    table: Path           # a SIMULATED long point table (CSV)
    raw: Path             # SIMULATED COGs (files source)
    raw_bbox: str         # a bbox inside `raw`

    def copy(self, what: Path, dest: Path) -> Path:
        """A private copy of one input (a folder or a file, with its checkpoint sidecar)."""
        target = dest / what.name
        if what.is_dir():
            shutil.copytree(what, target)
        else:
            shutil.copy(what, target)
            side = what.with_suffix(".json")
            if what.suffix == ".safetensors" and side.exists():
                shutil.copy(side, target.with_suffix(".json"))
        return target


def build(root: Path) -> World:
    from fixtures import make_tile_arrays
    from rasterio.warp import transform_bounds

    from tessera.dpixel import write_tile
    from tessera.geo import parse_tile_name
    from tessera.infer import resolve_model
    from tessera.model import save_checkpoint
    from tessera.preprocess.synthetic import write_scene_files
    from tessera.simulate import SimConfig, simulate_table, simulate_tile
    from tessera.store.synthetic import build_simulated_store
    from tessera.train.shards import TileSource, write_shards

    tile = write_tile(root / "tile", **make_tile_arrays())
    g = parse_tile_name(GRID_TILE).target_grid(250.0)
    grid_tile = simulate_tile(root / "gridtile", SimConfig(
        height=g.height, width=g.width, seed=3, resolution=250.0, crs=g.crs.to_string(),
        origin=(g.transform.c, g.transform.f), n_s2_dates=8, n_s1_asc=4, n_s1_desc=4))
    build_simulated_store(root / "store", STORE_TILES, years=(2022,), resolution=250.0)
    write_shards([TileSource(tile)], root / "shards", shard_size=64, min_s2=1, min_s1=1)
    model, _ = resolve_model(preset="tiny", use_shipped=False)
    ck = save_checkpoint(model, root / "ck", preset="tiny")
    (root / "points.csv").write_text("lon,lat,name\n5.95,45.02,a\n6.01,45.07,b\n")
    simulate_table(12, SimConfig(size=32, seed=2, n_s2_dates=10, n_s1_asc=5, n_s1_desc=5)
                   ).to_csv(root / "table.csv", index=False)
    write_scene_files(root / "raw", SimConfig(size=32, n_s2_dates=4, n_s1_asc=2, n_s1_desc=2,
                                              origin=(500000.0, 5600000.0), seed=1))
    w, s, e, n = transform_bounds("EPSG:32631", "EPSG:4326", 500045, 5599725, 500275, 5599955)
    return World(root, tile, grid_tile, root / "store", root / "shards", ck,
                 root / "points.csv", root / "table.csv", root / "raw", f"{w},{s},{e},{n}")


def snapshot(folder: Path) -> dict[str, int]:
    """Every file, folder and link below `folder` (relative path -> size; -1 for folders, -2
    for links, which are not followed)."""
    import os
    import stat

    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            size = -2 if stat.S_ISLNK(st.st_mode) else -1 if stat.S_ISDIR(st.st_mode) else st.st_size
            out[str(p.relative_to(folder))] = size
    return dict(sorted(out.items()))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=True)
