"""Store commands: `tessera download`, `sample`, `export`, `serve` and `tessera store check`,
`publish` and `import`. A STORE is a directory or an http(s) URL (a tessera store, or one in
GeoTessera's layouts). None of them needs the
model: they run on the light core (`pip install tessera-eo`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from tessera.cli.common import (Bars, bbox_option, cache_option, command, dataset_version_option,
                                err, fail, out,
                                overwrite_option, progress_option, region_of, region_option,
                                store_option, tile_option, year_option)

if TYPE_CHECKING:
    import pandas as pd

    from tessera.store.client import Client

FORMATS = {"npy": None, "tiff": "tiles", "zarr": "zarr"}
#: An export above this many bytes (uncompressed) needs --yes: a mistyped bbox should not start
#: writing 100 GB of mostly empty GeoTIFF.
CONFIRM_ABOVE = 4_000_000_000


def _client(store: str, cache: Optional[Path], dataset: Optional[str] = None) -> Client:
    from tessera.store import open_store
    from tessera.store.client import Client
    return Client(open_store(store, cache_dir=cache, dataset_version=dataset))


@command
def check(
    store: Path = typer.Argument(..., metavar="STORE", help="Store directory."),
    quick: bool = typer.Option(False, "--quick", help="Sizes only, no sha256."),
    progress: bool = progress_option(),
) -> None:
    """Verify every file of a store against its manifest; exit code 1 if anything is wrong.

    Checks existence, size and sha256 of each listed file, and lists the files the manifest
    does not know. Temporaries left by interrupted writers are listed apart: they are not a
    problem of the store (the next write of that file removes them)."""
    from tessera.store.local import LocalStore

    st = LocalStore(store)
    man = st.manifest()
    with Bars(progress) as bars:
        bar = bars.task("checking", total=man.total_bytes, unit="B")
        rep = st.check(verify_hashes=not quick, progress=bar.advance, manifest=man)
    for what, items in (("missing", rep.missing), ("size differs", rep.size_mismatch),
                        ("sha256 differs", rep.hash_mismatch),
                        ("not in the manifest", rep.unlisted)):
        for p in items:
            out.print(f"{what}: {p}")
    for p in rep.temporary:
        out.print(f"temporary (left by an interrupted write): {p}")
    out.print(f"{rep.checked} files of {len(man)} tile-years checked"
              f"{' (sizes only)' if quick else ''}: "
              f"{'all good' if rep.ok else 'PROBLEMS FOUND'}")
    if not rep.ok:
        raise typer.Exit(1)


@command
def serve(
    store: Path = typer.Argument(..., metavar="STORE", help="Store directory to serve "
                                 "(read-only), or a folder of stores."),
    host: str = typer.Option("127.0.0.1", metavar="ADDRESS", help="Address to bind (0.0.0.0 "
                             "for all)."),
    port: int = typer.Option(8000, metavar="PORT", min=0, max=65535, help="Port (0: any free "
                             "port)."),
    md5_etags: bool = typer.Option(False, "--md5-etags", help="Send each file's MD5 as its "
                                   "ETag (as object stores do; geotessera >= 0.10 checks "
                                   "downloads against it). Hashes each file on its first "
                                   "request."),
    quiet: bool = typer.Option(False, "--quiet", help="No access log."),
) -> None:
    """Serve a store over HTTP (GET/HEAD with byte ranges) for `--store URL`.

    STORE may be a tessera store, a store in one of GeoTessera's layouts (e.g. made by `tessera
    store publish`), or a folder whose subfolders are stores (served as URL/NAME)."""
    from tessera.errors import StoreError
    from tessera.store.local import LocalStore
    from tessera.store.server import run_server

    try:
        what = f"{len(LocalStore(store).manifest())} tile-years"
    except StoreError:
        subs = sorted(p.parent.name for pattern in ("*/manifest.parquet", "*/registry.parquet")
                      for p in store.glob(pattern))
        if not subs:
            raise
        what = "stores " + ", ".join(dict.fromkeys(subs))
    run_server(store, host, port, log=None if quiet else (lambda r: err.print(str(r))),
               md5_etags=md5_etags,
               on_ready=lambda srv: out.print(f"serving {store} ({what}) at {srv.url}/  "
                                              "(Ctrl-C stops)"))


@command
def download(
    year: int = year_option(),
    output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="PATH", help="Folder "
                                          "(npy, tiff) or .zarr path (zarr)."),
    store: str = store_option(),
    bbox: Optional[str] = bbox_option(),
    region: Optional[Path] = region_option(),
    tile: Optional[list[str]] = tile_option(),
    fmt: str = typer.Option("npy", "-f", "--format", metavar="FORMAT", help="npy (the store's "
                            "files, verified: the output is itself a store), tiff (one GeoTIFF "
                            "per tile, native UTM) or zarr (one group per UTM zone)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be read, downloaded "
                                 "and written; do nothing."),
    cache: Optional[Path] = cache_option(),
    dataset: Optional[str] = dataset_version_option(),
    jobs: int = typer.Option(4, metavar="N", min=1, help="Tiles downloaded at once (npy)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="zarr: replace an existing store "
                                   "(npy and tiff outputs resume instead)."),
    progress: bool = progress_option(),
) -> None:
    """Fetch the tiles of a region and year: verified, resumable, as a store, GeoTIFFs or Zarr.

    npy: the store's own files (size + sha256 checked), so the output is itself a store; tiff:
    the published per-tile GeoTIFFs; zarr: one group per UTM zone."""
    from tessera.store.mirror import mirror
    from tessera.store.results import MissingTilesWarning

    if fmt not in FORMATS:
        fail(f"--format {fmt!r}: expected npy, tiff or zarr")
    where = region_of(bbox, region, tile)
    client = _client(store, cache, dataset)
    client.check_year(year)
    export_format = FORMATS[fmt]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingTilesWarning)  # the plan reports them
        plan = client.dry_run(where, year, formats=[export_format] if export_format else [])
        report = str(plan)
        _, present, _ = client.plan(where, year)
        if fmt == "npy":  # a mirror writes the store's own files (+ the small masks)
            report += (f"\nwould write (npy): {sum(e.nbytes for e in present) / 1e6:.1f} MB, "
                       "the store's files as they are")
    out.print(report)
    if dry_run:
        return
    if output is None:
        fail("-o/--output is required (or --dry-run)")
    if fmt == "zarr" and output.exists() and not overwrite:
        fail(f"{output}: exists (use --overwrite to replace it)")
    if not plan.tiles_present:
        fail(f"none of the region's tiles is in the store for {year}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingTilesWarning)
        if fmt == "npy":
            with Bars(progress) as bars:
                entries = mirror(client.store, present, output, jobs=jobs, progress=bars)
            out.print(f"wrote {len(entries)} tiles (verified) into the store {output}")
        elif fmt == "tiff":
            res = client.export_tiles_geotiff(where, year, output)
            out.print(f"wrote {len(res.written)} GeoTIFFs under {output} "
                      f"({len(res.skipped)} already there)")
        else:
            out.print(f"wrote {client.export_zarr(where, year, output, overwrite=overwrite)}")


def _points_table(path: Path) -> pd.DataFrame:
    """CSV / Parquet with lon + lat columns, or GeoJSON points -> a DataFrame with lon, lat."""
    import pandas as pd

    from tessera.errors import InputError, NotFoundError
    from tessera.geo import points_lonlat
    from tessera.geo.region import read_json

    if not path.exists():
        raise NotFoundError(f"{path}: points file not found")
    name = path.name.lower()
    if name.endswith((".geojson", ".json")):
        lon, lat = points_lonlat(path)
        doc = read_json(path)
        props = [f.get("properties") or {} for f in doc.get("features", [doc])]
        df = pd.DataFrame(props)
        df["lon"], df["lat"] = lon, lat
        check_coordinates(path, lon, lat)
        return df
    parquet = name.endswith((".parquet", ".pq"))
    try:
        if not parquet:
            from tessera.table.read import check_rows
            check_rows(path, ",")
        df = pd.read_parquet(path) if parquet else pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable {'Parquet' if parquet else 'CSV'} table "
                         f"({' '.join(str(exc).split())})") from None
    cols = {str(c).lower(): c for c in df.columns}
    lon_c = next((cols[c] for c in ("lon", "longitude", "x") if c in cols), None)
    lat_c = next((cols[c] for c in ("lat", "latitude", "y") if c in cols), None)
    if lon_c is None or lat_c is None:
        raise InputError(f"{path}: needs lon and lat columns (or longitude/latitude), found "
                         f"{', '.join(map(str, df.columns))}")
    df = df.rename(columns={lon_c: "lon", lat_c: "lat"})
    for c in ("lon", "lat"):
        values = pd.to_numeric(df[c], errors="coerce")
        bad = (values.isna() & df[c].notna()).to_numpy()
        if bad.any():
            i = int(bad.argmax())
            raise InputError(f"{path}: column {c!r}, row {i + 1}: {df[c].iloc[i]!r} is not a "
                             "number")
        df[c] = values.astype(float)
    check_coordinates(path, df["lon"].to_numpy(), df["lat"].to_numpy())
    return df


def check_coordinates(path: Path, lon: object, lat: object) -> None:
    """Refuse points without a usable location (missing, infinite, beyond the globe): they
    would come back "outside" and look like points the store does not cover."""
    import numpy as np

    from tessera.errors import InputError

    for name, v, limit in (("lon", np.asarray(lon, float), 180.0),
                           ("lat", np.asarray(lat, float), 90.0)):
        bad = ~np.isfinite(v) | (np.abs(v) > limit)
        if bad.any():
            i = int(bad.argmax())
            raise InputError(f"{path}: row {i + 1}: {name} {v[i]}; expected a finite number in "
                             f"-{limit:g}..{limit:g} degrees")


@command
def sample(
    points: Path = typer.Argument(..., metavar="POINTS", help="CSV/Parquet with lon, lat "
                                  "columns, or GeoJSON points."),
    year: int = year_option(),
    output: Path = typer.Option(..., "-o", "--output", metavar="FILE", help="Output .parquet."),
    store: str = store_option(),
    bands: Optional[str] = typer.Option(None, "--bands", metavar="LIST", help="Only these "
                                        "embedding dimensions, 0-based: e.g. 0,5,127 or "
                                        "0-15,64 (columns keep their index: emb_005)."),
    metadata: bool = typer.Option(False, "--metadata", help="Add where each point was read: "
                                  "columns tile, tile_lon, tile_lat, pixel_row, pixel_col, crs "
                                  "(empty / NaN / -1 for points outside the store)."),
    cache: Optional[Path] = cache_option(),
    dataset: Optional[str] = dataset_version_option(),
) -> None:
    """Embeddings at points, one read per tile, to a Parquet table.

    Columns: the input's, then status (valid / water / nodata / outside; water: no data where
    a GeoTessera store's landmask says water), the --metadata columns if asked, and
    emb_000..emb_127 (float32, NaN unless valid). The file's metadata (key `tessera`) records
    the store's model, width, weights and version for that year, and the --bands chosen. A
    year the store does not hold is an error."""
    import pandas as pd

    from tessera.store.results import POINT_STATUSES, PointMetadata
    from tessera.dims import parse_bands
    from tessera.table import write_parquet

    df = _points_table(points)
    if _is_zarr_store(store):
        if metadata or dataset:
            fail(f"{store}: --metadata and --dataset-version are for tile stores; a Zarr store "
                 "holds one dataset on UTM zone grids")
        _sample_zarr(df, year, output, store, bands)
        return
    client = _client(store, cache, dataset)
    client.check_year(year)
    held = client.model(year)
    dims = client.dims(year)
    chosen = parse_bands(bands, dims) if bands is not None else None
    names = [f"emb_{i:03d}" for i in (chosen if chosen is not None else range(dims))]
    added = ["status", *(PointMetadata.COLUMNS if metadata else ()), *names]
    _refuse_clashes(points, df.columns, added)
    emb, status, meta = client.sample_points(
        (df["lon"].to_numpy(float), df["lat"].to_numpy(float)), year, metadata=True,
        bands=chosen)
    parts = [df.reset_index(drop=True), pd.DataFrame({"status": status})]
    if metadata:
        parts.append(pd.DataFrame(meta.columns()))
    parts.append(pd.DataFrame(emb, columns=names))
    table = pd.concat(parts, axis=1)
    table.attrs["tessera"] = {"store": str(store), "year": int(year),
                              "model": held.model if held else "", "dims": dims,
                              "bands": chosen,
                              "weights": held.weights if held else "",
                              "version": held.version if held else ""}
    write_parquet(table, output)
    counts = pd.Series(status).value_counts()
    out.print(f"wrote {output}: {len(table)} points, " + ", ".join(
        f"{counts.get(k, 0)} {k}" for k in POINT_STATUSES))


def _is_zarr_store(store: str) -> bool:
    """A GeoTessera Zarr store: a local folder holding one, or a URL ending in `.zarr`."""
    from tessera.store.gtzarr import is_zarr_store

    if store.startswith(("http://", "https://")):
        return store.rstrip("/").endswith(".zarr")
    return is_zarr_store(store)


def _sample_zarr(df: pd.DataFrame, year: int, output: Path, store: str,
                 bands: Optional[str]) -> None:
    """`sample` on a GeoTessera Zarr store (read lazily: the chunks holding the points)."""
    import pandas as pd

    from tessera.store.gtzarr import ZarrStore
    from tessera.store.results import POINT_STATUSES
    from tessera.dims import parse_bands
    from tessera.table import write_parquet

    z = ZarrStore(store)
    z.check_year(year)
    chosen = parse_bands(bands, z.dims) if bands is not None else None
    names = [f"emb_{i:03d}" for i in (chosen if chosen is not None else range(z.dims))]
    emb, status = z.sample_points((df["lon"].to_numpy(float), df["lat"].to_numpy(float)), year)
    if chosen is not None:
        emb = emb[:, chosen]
    table = pd.concat([df.reset_index(drop=True), pd.DataFrame({"status": status}),
                       pd.DataFrame(emb, columns=names)], axis=1)
    table.attrs["tessera"] = {"store": str(store), "year": int(year), "model": z.model,
                              "dims": z.dims, "bands": chosen}
    write_parquet(table, output)
    counts = pd.Series(status).value_counts()
    out.print(f"wrote {output}: {len(table)} points, " + ", ".join(
        f"{counts.get(k, 0)} {k}" for k in POINT_STATUSES))


def _refuse_clashes(points: Path, have: pd.Index, added: list[str]) -> None:
    """Refuse a points table that already has a column `sample` adds (e.g. the output of an
    earlier run): the result would hold two columns of one name."""
    from tessera.errors import InputError

    clash = [c for c in added if c in {str(h) for h in have}]
    if clash:
        raise InputError(f"{points}: already has the column{'s' if len(clash) > 1 else ''} "
                         f"{', '.join(clash[:6])}{' ...' if len(clash) > 6 else ''} that "
                         "sample adds; rename or drop them")


@command
def export(
    year: int = year_option(),
    output: Path = typer.Option(..., "-o", "--output", metavar="PATH", help="OUT.tif (one "
                                "GeoTIFF, one CRS), OUT.zarr, or a folder with --per-tile."),
    store: str = store_option(),
    bbox: Optional[str] = bbox_option(),
    region: Optional[Path] = region_option(),
    tile: Optional[list[str]] = tile_option(),
    dtype: str = typer.Option("float32", metavar="DTYPE", help="GeoTIFF: float32 (q * s), or "
                              "int8 (the exact codes plus a last band 'scale', as float32 in "
                              "one file: embedding = codes * scale)."),
    bands: Optional[str] = typer.Option(None, "--bands", metavar="LIST", help="GeoTIFF: only "
                                        "these embedding dimensions, 0-based, e.g. 0,5,127 or "
                                        "0-15,64 (each band keeps its index in its name, "
                                        "Tessera_Band_5)."),
    compress: Optional[str] = typer.Option(None, "--compress", metavar="NAME", help="GeoTIFF "
                                           "compression: deflate (default), zstd, lzw "
                                           "(GeoTessera's default; larger files) or none."),
    per_tile: bool = typer.Option(False, "--per-tile", help="One GeoTIFF per tile, each in its "
                                  "own UTM CRS and pixels, into the folder -o, named "
                                  "grid_{lon}_{lat}_{year}.tiff as torchgeo's "
                                  "TesseraEmbeddings and GeoTessera read them; resumable."),
    layout: Optional[str] = typer.Option(None, "--layout", metavar="LAYOUT", help="--per-tile "
                                         "folders: tessera ({year}/grid_X_Y/, the default), "
                                         "geotessera (the same under "
                                         "global_0.1_degree_representation/, as geotessera "
                                         "exports) or flat (all in -o)."),
    crs: Optional[str] = typer.Option(None, metavar="CRS", help="GeoTIFF CRS (default: the UTM "
                                      "zone of the region's centre)."),
    resolution: Optional[float] = typer.Option(None, metavar="SIZE", help="GeoTIFF pixel size "
                                               "in the units of --crs (default: the store's, in "
                                               "metres; needed for a geographic --crs, e.g. "
                                               "0.0001 degrees)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output "
                                   "(--per-tile: rewrite every tile's file)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be read and written; "
                                 "do nothing."),
    yes: bool = typer.Option(False, "--yes", help="Go ahead with an export of more than 4 GB "
                             "(uncompressed; the dry run says how much)."),
    cache: Optional[Path] = cache_option(),
    dataset: Optional[str] = dataset_version_option(),
) -> None:
    """A region as one GeoTIFF mosaic, one GeoTIFF per tile, or a Zarr v3 store, streamed
    window by window.

    GeoTIFFs are tiled, compressed and BigTIFF when needed, with GeoTessera's band names
    (Tessera_Band_i) and tags; memory does not grow with the region. --per-tile files are
    what torchgeo's TesseraEmbeddings and geotessera's tile reader load."""
    from tessera.errors import human_bytes
    from tessera.geotiff import DTYPES, check_compress
    from tessera.store.export import TILE_LAYOUTS, check_tiles_export
    from tessera.store.results import MissingTilesWarning
    from tessera.dims import parse_bands

    where = region_of(bbox, region, tile)
    if dtype not in DTYPES:
        fail(f"--dtype {dtype!r}: expected float32 or int8")
    is_zarr = not per_tile and output.suffix.lower() == ".zarr"
    if per_tile:
        _check_per_tile(output, crs, resolution, layout)
        check_tiles_export(dtype, layout or "tessera")
    else:
        if layout is not None:
            fail(f"--layout is for --per-tile exports (one of {', '.join(TILE_LAYOUTS)})")
        if not is_zarr and output.suffix.lower() not in (".tif", ".tiff"):
            fail(f"{output}: expected a .tif/.tiff or .zarr output (or --per-tile and a folder)")
    if is_zarr and (crs or resolution):
        fail("--crs and --resolution are for GeoTIFF exports (a Zarr export keeps each UTM "
             "zone's own grid)")
    if is_zarr and (bands or compress or dtype != "float32"):
        fail("--bands, --compress and --dtype are for GeoTIFF exports (a Zarr export holds all "
             "the int8 codes and their scales)")
    compress = check_compress(compress)
    if not per_tile and output.exists() and not overwrite and not dry_run:
        fail(f"{output}: exists (use --overwrite to replace it)")
    if _is_zarr_store(store):
        if per_tile or is_zarr or crs or resolution or dataset:
            fail(f"{store}: a Zarr store exports one GeoTIFF (-o OUT.tif) on its zone's grid; "
                 "--per-tile, a .zarr output, --crs, --resolution and --dataset-version are "
                 "for tile stores")
        _export_from_zarr(store, where, year, output, dtype, compress, bands, dry_run)
        return
    client = _client(store, cache, dataset)
    client.check_year(year)
    held = client.model(year)
    chosen = parse_bands(bands, int(held.dims) if held else 128) if bands is not None else None
    fmt = ("zarr" if is_zarr else "tiles" if per_tile else
           "geotiff-int8" if dtype == "int8" else "geotiff")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingTilesWarning)
        plan = client.dry_run(where, year, formats=[fmt], crs=crs, resolution=resolution,
                              bands=chosen)
        out.print(str(plan))
        if dry_run:
            return
        size = plan.export_bytes.get(fmt, 0)
        if size > CONFIRM_ABOVE and not yes:
            fail(f"{output}: would write about {human_bytes(size)} uncompressed for "
                 f"{len(plan.tiles_present)} stored tile(s); add --yes to go ahead, or narrow "
                 "the region")
        if is_zarr:
            path = client.export_zarr(where, year, output, overwrite=overwrite)
        elif per_tile:
            res = client.export_tiles_geotiff(where, year, output, dtype=dtype,
                                              compress=compress, bands=chosen,
                                              layout=layout or "tessera", overwrite=overwrite)
            out.print(f"wrote {len(res.written)} GeoTIFFs under {output} "
                      f"({len(res.skipped)} already there, {len(res.absent)} tiles not in "
                      "the store)")
            return
        else:
            path = client.export_geotiff(where, year, output, dtype=dtype, crs=crs,
                                         resolution=resolution, overwrite=overwrite,
                                         compress=compress, bands=chosen)
    out.print(f"wrote {path}")


def _export_from_zarr(store: str, where: object, year: int, output: Path, dtype: str,
                      compress: str, bands: Optional[str], dry_run: bool) -> None:
    """`export` from a GeoTessera Zarr store: the region's window of its UTM zone (only the
    chunks it covers are read), as one GeoTIFF with the same bands, tags and encodings as a
    tile store's export; the int8 codes are recovered exactly from codes x scale."""
    import numpy as np

    from tessera import geotiff
    from tessera.dims import parse_bands
    from tessera.errors import human_bytes
    from tessera.store.gtzarr import ZarrStore

    z = ZarrStore(store)
    z.check_year(year)
    chosen = parse_bands(bands, z.dims) if bands is not None else None
    reg = z.read_region(where, year)
    h, w = reg.scales.shape
    n = len(chosen) if chosen is not None else z.dims
    out.print(f"{store}: {w} x {h} px of zone {reg.zone} ({reg.crs.to_string()}), "
              f"about {human_bytes(h * w * (n + (dtype == 'int8')) * 4)} uncompressed")
    if dry_run:
        return
    ok = np.isfinite(reg.scales) & (reg.scales > 0)
    scales = np.where(ok, reg.scales, np.float32(np.nan)).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        codes = np.where(ok[..., None], np.rint(reg.embeddings / scales[..., None]), 0)
    codes = codes.astype(np.int8)
    tags = {"TESSERA_SOURCE": str(store), "TESSERA_YEAR": str(int(year)),
            "TESSERA_MODEL_URI": z.model, "TESSERA_DTYPE": dtype}
    geotiff.write_embeddings(output, crs=reg.crs, transform=reg.transform, width=w, height=h,
                             dim=z.dims, read=lambda win: (codes[win.slices], scales[win.slices]),
                             dtype=dtype, tags=tags, compress=compress, bands=chosen)
    out.print(f"wrote {output}")


def _check_per_tile(output: Path, crs: Optional[str], resolution: Optional[float],
                    layout: Optional[str]) -> None:
    """Refuse options a per-tile export cannot honour (each tile keeps its own grid)."""
    if output.suffix.lower() in (".tif", ".tiff", ".zarr"):
        fail(f"{output}: --per-tile writes a folder of GeoTIFFs; name the folder with -o")
    if output.exists() and not output.is_dir():
        fail(f"{output}: exists and is not a folder")
    if crs or resolution:
        fail("--crs and --resolution are for one-mosaic exports (--per-tile keeps each tile's "
             "own UTM grid)")


@command
def publish(
    store: str = typer.Argument(..., metavar="STORE", help="The store to publish (a directory "
                                "or URL)."),
    output: Path = typer.Option(..., "-o", "--output", metavar="DIR", help="Output folder "
                                "(name it after the dataset, e.g. OUT/v1, to serve OUT to "
                                "geotessera <= 0.8, which fetches BASE/v1/...)."),
    year: Optional[list[int]] = typer.Option(None, "--year", metavar="YEAR", help="Only this "
                                             "year (repeatable; default: all)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", metavar="NAME", help="The "
                                          "dataset's folder under npy/ (default: v1 for the "
                                          "v1.0 model, else the model id)."),
    copy: bool = typer.Option(False, "--copy", help="Copy the tiles (default: hard links)."),
    zarr: bool = typer.Option(False, "--zarr", help="Also GeoTessera's Zarr store of every "
                              "year, at DIR/zarr/DATASET.zarr."),
    overwrite: bool = overwrite_option(),
    progress: bool = progress_option(),
    cache: Optional[Path] = cache_option(),
) -> None:
    """Lay a store out in GeoTessera's layouts, for the real `geotessera` client.

    Writes registry.parquet (geotessera <= 0.8) and manifest.parquet (>= 0.10) beside
    landmasks.parquet, the tiles under global_0.1_degree_representation/ and npy/DATASET/
    (hard links), and the landmasks; `GeoTessera(embeddings_dir=DIR, registry_dir=DIR)` reads
    it, and so does the client over HTTP once `tessera serve` serves it."""
    from tessera.store import open_store
    from tessera.store.publish import publish as publish_store

    src = open_store(store, cache_dir=cache)
    with Bars(progress) as bars:
        bar = bars.task("publishing", unit="tiles")
        res = publish_store(src, output, years=year, dataset=dataset, link=not copy,
                            overwrite=overwrite, zarr=zarr,
                            progress=lambda i, n: bar.update(completed=i, total=n))
    out.print(f"wrote {res}")


@command
def import_(
    source: str = typer.Argument(..., metavar="SOURCE", help="A store in one of GeoTessera's "
                                 "layouts (a directory or URL)."),
    output: Path = typer.Option(..., "-o", "--output", metavar="DIR", help="The tessera store "
                                "to write."),
    year: Optional[list[int]] = typer.Option(None, "--year", metavar="YEAR", help="Only this "
                                             "year (repeatable; default: all)."),
    copy: bool = typer.Option(False, "--copy", help="Copy the tiles (default: hard links)."),
    overwrite: bool = overwrite_option(),
    progress: bool = progress_option(),
    cache: Optional[Path] = cache_option(),
    dataset: Optional[str] = dataset_version_option(),
) -> None:
    """Turn a store in GeoTessera's layout into a tessera store (manifest with sha256 and
    valid-pixel counts; tiles hard-linked)."""
    from tessera.store import open_store
    from tessera.store.publish import import_store

    src = open_store(source, cache_dir=cache, dataset_version=dataset)
    with Bars(progress) as bars:
        bar = bars.task("importing", unit="tiles")
        res = import_store(src, output, years=year, link=not copy, overwrite=overwrite,
                           progress=lambda i, n: bar.update(completed=i, total=n))
    out.print(f"wrote {res}")
