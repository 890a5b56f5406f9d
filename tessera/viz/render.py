"""False-colour pictures of a store: per-tile RGB GeoTIFFs (and PNGs) in each tile's own UTM
zone, and region mosaics in one CRS, all coloured with ONE PCA fit (`tessera.viz.pca`); and
`finish_picture`, the last steps every picture shares (balance, reprojection, the files).

Memory: tiles are read from memory-mapped `.npy` files and coloured in pixel chunks; a region
mosaic holds only the output image plus one tile at a time. Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera.atomic import atomic_path
from tessera.errors import VizError
from tessera.geo import Region, TargetGrid, parse_tile_name
from tessera.geo.crs import LONLAT, reproject_geometry, transformer
from tessera.geo.region import RegionLike
from tessera.store.manifest import Manifest, TileEntry
from tessera.progress import Progress, task
from tessera.store.protocol import Store
from tessera.viz.balance import check_balance, equalize_adaptive, stretch_of
from tessera.viz.georef import parse_crs, reproject_rgba, write_world_file
from tessera.viz.pca import PcaRgb, pca_for
from tessera.viz.tiles import TileLike, open_tile, resolve_tiles, store_years


# --- per-tile output -----------------------------------------------------------------------------

def tile_rgba(store: Store, entry: TileEntry, pca: PcaRgb) -> np.ndarray:
    """uint8 (H, W, 4) RGBA of one tile-year (alpha 0 = no data), read in chunks."""
    q, s = open_tile(store, entry)
    pca._check_dim(q.shape[1], f"{entry.tile} {entry.year}")
    return pca._apply_flat(q, s).reshape(entry.height, entry.width, 4)


def write_png(path: str | os.PathLike, rgba: np.ndarray) -> Path:
    """An RGBA PNG, atomically. Pillow when present (byte-identical output for identical pixels),
    else matplotlib."""
    with atomic_path(path) as tmp:
        try:
            from PIL import Image
        except ImportError:  # matplotlib alone
            import matplotlib.image as mpimg
            # None drops matplotlib's default Software key (its stubs allow str values only)
            mpimg.imsave(tmp, rgba, format="png",
                         metadata={"Software": None})  # type: ignore[dict-item]
        else:
            Image.fromarray(np.ascontiguousarray(rgba), "RGBA").save(tmp, format="PNG")
    return Path(path)


def write_rgba_geotiff(path: str | os.PathLike, rgba: np.ndarray, crs: Any, transform: Any,
                       tags: dict[str, Any] | None = None) -> Path:
    """uint8 RGB + alpha GeoTIFF (photometric RGB, deflate), atomically."""
    import rasterio

    h, w, _ = rgba.shape
    tiled = h >= 256 and w >= 256
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", width=w, height=h, count=4, dtype="uint8",
                           crs=crs, transform=transform, photometric="RGB", alpha="YES",
                           compress="deflate", interleave="pixel", tiled=tiled,
                           **({"blockxsize": 256, "blockysize": 256} if tiled else {})) as dst:
            dst.write(np.moveaxis(rgba, 2, 0))
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
    return Path(path)


@dataclasses.dataclass(frozen=True)
class RenderedTile:
    tile: str
    year: int
    tif: Path
    png: Path | None


def render_tiles(store: Store, tiles: Sequence[TileLike], year: int, out_dir: str | os.PathLike,
                 pca: PcaRgb | str | os.PathLike | None = None, *, png: bool = False,
                 n_sample: int = 100_000, seed: int = 0, stretch: str = "percentile"
                 ) -> list[RenderedTile]:
    """Per tile `{out_dir}/{tile}_{year}_pca.tif` (RGB + alpha in the tile's own UTM CRS and
    transform) and, with `png`, a matching RGBA PNG. One PCA for all tiles: `pca` (a fit or a
    JSON file), else fitted here on all `tiles`. Tile by tile, so memory does not grow with the
    number of tiles."""
    entries = resolve_tiles(store, tiles, year)
    pca = pca_for(store, entries, year, pca, n_sample, seed, stretch)
    out_dir = Path(out_dir)
    done = []
    for e in entries:
        rgba = tile_rgba(store, e, pca)
        tif = write_rgba_geotiff(out_dir / f"{e.tile}_{e.year}_pca.tif", rgba, e.crs, e.affine,
                                 _tags(pca, tile=e.tile, year=e.year, version=e.version))
        p = write_png(out_dir / f"{e.tile}_{e.year}_pca.png", rgba) if png else None
        done.append(RenderedTile(e.tile, e.year, tif, p))
    return done


def pca_tags(pca: PcaRgb, balance: str | None = None, **extra: Any) -> dict[str, Any]:
    """The TESSERA_* tags of a picture's GeoTIFF: what it shows and how it was coloured."""
    return {"TESSERA_PRODUCT": "PCA false colour of TESSERA embeddings (R, G, B = PC1..3)",
            "TESSERA_PCA_STRETCH": pca.stretch, "TESSERA_PCA_SEED": pca.seed,
            "TESSERA_PCA_SAMPLE": pca.n_sample,
            **({"TESSERA_PCA_BALANCE": balance} if balance else {}),
            **{f"TESSERA_{k.upper()}": v for k, v in extra.items()}}


_tags = pca_tags


@dataclasses.dataclass
class Picture:
    """What `finish_picture` wrote, and the grid of the picture (None: not georeferenced)."""

    png: Path
    tif: Path | None
    sidecars: list[Path]
    grid: TargetGrid | None
    width: int
    height: int


def finish_picture(rgba: np.ndarray, crs: Any, transform: Any, png_path: str | os.PathLike,
                   tif_path: str | os.PathLike | None = None, *, balance: str = "percentile",
                   to_crs: Any = None, max_size: int | None = None, world_file: bool = False,
                   tags: dict[str, Any] | None = None, label: str = "picture") -> Picture:
    """The last steps of every picture: refuse one without a single valid pixel (all no data is
    an error, not an empty image), equalise locally for `balance` "adaptive", reproject to
    `to_crs` (nearest; the PNG then gets a world file and `.aux.xml`, as with `world_file`), and
    write the PNG and, with `tif_path`, the RGB + alpha GeoTIFF. `crs` / `transform` None: the
    picture is not georeferenced (a plain PNG; a GeoTIFF, `to_crs` or `world_file` is refused)."""
    check_balance(balance)
    if not rgba[..., 3].any():
        raise VizError(f"{label}: no valid pixels to draw (every pixel is no data)")
    georef = crs is not None and transform is not None
    if not georef and (tif_path is not None or to_crs is not None or world_file):
        need = "--geotiff" if tif_path is not None else "--crs" if to_crs is not None \
            else "--world-file"
        raise VizError(f"{label}: not georeferenced, so {need} cannot place it (for .npy tiles "
                       "give --landmask with the tile's landmask GeoTIFF)")
    if balance == "adaptive":
        rgba = equalize_adaptive(rgba)
    if to_crs is not None:
        rgba, transform, crs = reproject_rgba(rgba, crs, transform, parse_crs(to_crs), max_size)
    png = write_png(png_path, rgba)
    sidecars = write_world_file(png, transform, crs) if georef and (
        world_file or to_crs is not None) else []
    tif = None
    if tif_path is not None:
        tif = write_rgba_geotiff(tif_path, rgba, crs, transform, tags)
    h, w, _ = rgba.shape
    grid = TargetGrid(parse_crs(crs), transform, w, h, None, "picture") if georef else None
    return Picture(png, tif, sidecars, grid, w, h)


# --- region mosaic -----------------------------------------------------------------------------

@dataclasses.dataclass
class RenderedRegion:
    png: Path
    tif: Path | None
    grid: TargetGrid     # of the picture: the mosaic's, or in `crs` when reprojected
    tiles: list[str]
    pca: PcaRgb
    sidecars: list[Path] = dataclasses.field(default_factory=list)  # world file, .aux.xml


def _cell_in(tile: str, crs: Any) -> Any:
    """The tile's lon/lat cell as a polygon in `crs` (edges densified, so shared edges of
    neighbouring tiles project to the same vertices)."""
    from shapely.geometry import box

    cell = box(*parse_tile_name(tile).bounds).segmentize(0.001)
    return reproject_geometry(cell, transformer(LONLAT, _crs_wkt(crs)))


def _crs_wkt(crs: Any) -> str:
    from rasterio.crs import CRS
    return CRS.from_user_input(crs).to_wkt()


def _inside(geom: Any, shape: tuple[int, int], transform: Any) -> np.ndarray:
    from rasterio.features import geometry_mask
    return geometry_mask([geom], out_shape=shape, transform=transform, invert=True)


def _extend_edges(rgba: np.ndarray, outside_cell: np.ndarray) -> np.ndarray:
    """Copy the nearest valid colour into no-data pixels just outside the tile's cell (one pixel,
    8-neighbourhood). Why: a neighbour in another UTM zone has a rotated pixel lattice, so near
    the seam the source pixel containing an output pixel's centre can have its own centre outside
    the cell (hence no data) although the output pixel is inside it; without this the seam shows
    a line of holes. Pixels inside the cell (real no data: sea, clouds) are never filled."""
    from scipy.ndimage import distance_transform_edt

    invalid = rgba[..., 3] == 0
    if invalid.all() or not (invalid & outside_cell).any():
        return rgba
    dist, (ri, ci) = distance_transform_edt(invalid, return_indices=True)
    fill = invalid & outside_cell & (dist <= 1.5)
    out = rgba.copy()
    out[fill] = rgba[ri[fill], ci[fill]]
    return out


def _region_grid(region: RegionLike, store: Store, year: int, manifest: Manifest
                 ) -> tuple[Any, list[str] | None, str]:
    """(lon/lat geometry, tile names or None for 'whatever the bbox touches', label)."""
    from shapely import union_all
    from shapely.geometry import box

    if isinstance(region, Region):  # a polygon: every stored tile its bounding box touches
        if region.crosses_antimeridian:
            raise VizError(f"{region.name}: crosses the antimeridian, which pictures do not "
                           "support")
        return region.geometry, None, region.name
    if isinstance(region, Sequence) and not isinstance(region, str) and len(region) == 4 and \
            all(isinstance(v, (int, float, np.integer, np.floating)) for v in region):
        w, s, e, n = map(float, region)
        if not (w < e and s < n):
            raise VizError(f"bbox ({w}, {s}, {e}, {n}): expected west < east and south < north "
                           "in lon/lat degrees (regions across the antimeridian are not supported)")
        return box(w, s, e, n), None, f"bbox ({w}, {s}, {e}, {n})"
    names = [x.tile for x in resolve_tiles(store, region, year, manifest)]
    geom = union_all([box(*parse_tile_name(t).bounds) for t in names])
    if geom.bounds[2] - geom.bounds[0] > 180:
        raise VizError(f"tiles {names[0]} .. {names[-1]} span more than 180 degrees of longitude; "
                       "regions across the antimeridian are not supported")
    return geom, names, f"{len(names)} tiles"


def fitted_grid(geom: Any, name: str, res0: float, max_size: int) -> TargetGrid:
    """The UTM grid of a lon/lat geometry at `res0` times the smallest whole factor that keeps
    both sides within `max_size` pixels."""
    probe = TargetGrid.from_lonlat_geometry(geom, name=name, resolution=res0)
    factor = max(1, math.ceil(max(probe.width, probe.height) / int(max_size)))
    while True:
        grid = TargetGrid.from_lonlat_geometry(geom, name=name, resolution=res0 * factor)
        if max(grid.width, grid.height) <= int(max_size):
            return grid
        factor += 1


def render_region(store: Store, region: RegionLike, year: int, png_path: str | os.PathLike,
                  tif_path: str | os.PathLike | None = None,
                  pca: PcaRgb | str | os.PathLike | None = None, max_size: int = 4096, *,
                  n_sample: int = 100_000, seed: int = 0, stretch: str = "percentile",
                  balance: str | None = None, crs: Any = None, world_file: bool = False,
                  progress: Progress | None = None) -> RenderedRegion:
    """A mosaic of a region in ONE CRS, the UTM zone of the region's centre, as an RGBA PNG and,
    with `tif_path`, a georeferenced RGB + alpha GeoTIFF.

    `balance` ("percentile", "histogram", "adaptive"; see `tessera.viz.balance`) overrides
    `stretch` for a new fit, and "adaptive" equalises the finished mosaic locally. `crs` (e.g.
    "EPSG:3857") reprojects the finished mosaic (nearest neighbour, at most `max_size` a side);
    the PNG then gets a world file and `.aux.xml` (also with `world_file`). A region whose
    tiles hold no valid pixel at all is an error, not an empty picture.

    `region` is a lon/lat bbox (west, south, east, north) or a `tessera.geo.Region` (e.g. a
    polygon file) -- every stored tile of `year` that the UTM rectangle around it touches is
    drawn -- or a list of tiles. Each tile's colours are reprojected with
    nearest neighbour into the mosaic's grid (the tiles' native resolution, coarsened by an
    integer factor until neither side exceeds `max_size` pixels); each output pixel takes the
    tile whose 0.1 degree cell contains its centre, so neighbouring tiles meet without overlap
    or gaps, across UTM zone borders too. Memory: the output image plus one tile."""
    from affine import Affine
    from rasterio.warp import Resampling, reproject, transform_bounds

    if int(max_size) < 1:
        raise VizError(f"max_size {max_size}: expected a positive number of pixels")
    if balance is not None:
        stretch = stretch_of(balance)
    if crs is not None:
        crs = parse_crs(crs)
    manifest = store.manifest()
    if int(year) not in manifest.years():
        raise VizError(f"year {year} is not in the store {store.describe()} (it has "
                       f"{store_years(manifest)})")
    geom, names, label = _region_grid(region, store, year, manifest)
    if names is None:
        probe = TargetGrid.from_lonlat_geometry(geom, name="region", resolution=1000.0)
        names = manifest.query(bbox=probe.lonlat_bounds(), year=int(year)).tiles()
        if not names:
            raise VizError(f"{label}: the store has no tiles there for year {year} (it has "
                           f"{len(manifest.query(year=int(year)))} tiles of {year})")
    entries = resolve_tiles(store, names, year, manifest)
    pca = pca_for(store, entries, year, pca, n_sample, seed, stretch)

    res0 = min(abs(float(e.transform[0])) for e in entries)
    grid = fitted_grid(geom, "region", res0, max_size)
    H, W = grid.height, grid.width
    out = np.zeros((H, W, 4), np.uint8)
    x0, y1, r = grid.transform.c, grid.transform.f, grid.resolution
    bar = task(progress, "colouring", len(entries), "tiles")
    for e in entries:
        bar.advance(1, info=e.tile)
        left, bottom, right, top = transform_bounds(e.crs, grid.crs, *e.bounds, densify_pts=21)
        c0, c1 = max(0, math.floor((left - x0) / r)), min(W, math.ceil((right - x0) / r))
        r0, r1 = max(0, math.floor((y1 - top) / r)), min(H, math.ceil((y1 - bottom) / r))
        if c0 >= c1 or r0 >= r1:
            continue
        rgba = tile_rgba(store, e, pca)
        if not rgba[..., 3].any():
            continue
        outside = ~_inside(_cell_in(e.tile, e.crs), (e.height, e.width), e.affine)
        rgba = _extend_edges(rgba, outside)
        wt = grid.transform @ Affine.translation(c0, r0)
        tmp = np.zeros((4, r1 - r0, c1 - c0), np.uint8)
        reproject(np.moveaxis(rgba, 2, 0), tmp, src_transform=e.affine, src_crs=e.crs,
                  dst_transform=wt, dst_crs=grid.crs, resampling=Resampling.nearest,
                  num_threads=1)
        own = _inside(_cell_in(e.tile, grid.crs), tmp.shape[1:], wt)
        view = out[r0:r1, c0:c1]
        view[own] = np.moveaxis(tmp, 0, 2)[own]
        del rgba, tmp
    pic = finish_picture(out, grid.crs, grid.transform, png_path, tif_path,
                         balance=balance or pca.stretch, to_crs=crs, max_size=int(max_size),
                         world_file=world_file, label=f"{label}, year {year}",
                         tags=_tags(pca, balance, year=int(year), tiles=len(entries),
                                    region=label))
    assert pic.grid is not None  # a mosaic is georeferenced
    return RenderedRegion(pic.png, pic.tif, pic.grid if crs is not None else grid,
                          [e.tile for e in entries], pca, pic.sidecars)


__all__ = ["Picture", "RenderedRegion", "RenderedTile", "finish_picture", "pca_tags",
           "render_region", "render_tiles", "tile_rgba", "write_png", "write_rgba_geotiff"]
