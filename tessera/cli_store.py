"""Store commands: `tessera download`, `sample`, `export`, `visualize`, `coverage`, `serve` and
`tessera store check`. A STORE is a directory or an http(s) URL served by `tessera serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from tessera.cli_errors import console, fail, user_errors

STORE_HELP = ("Store: a directory or an http(s):// URL (`tessera serve`); default "
              "$TESSERA_STORE.")


def _store_opt() -> Any:
    return typer.Option(..., "--store", "-s", envvar="TESSERA_STORE", help=STORE_HELP)


def _region_opts() -> tuple[Any, Any, Any]:
    return (typer.Option(None, help="west,south,east,north in degrees (west > east crosses "
                         "the antimeridian)."),
            typer.Option(None, help="GeoJSON polygon file (lon/lat)."),
            typer.Option(None, "--tile", help="grid_{lon}_{lat} (repeatable)."))


def _points_table(path: Path) -> Any:
    """CSV / Parquet with lon + lat columns, or GeoJSON points -> a DataFrame with lon, lat."""
    import json

    import pandas as pd

    if not path.exists():
        fail(f"{path}: points file not found")
    name = path.name.lower()
    if name.endswith((".geojson", ".json")):
        from tessera.store.client import points_lonlat

        lon, lat = points_lonlat(path)
        doc = json.loads(path.read_text())
        props = [f.get("properties") or {} for f in doc.get("features", [doc])]
        df = pd.DataFrame(props)
        df["lon"], df["lat"] = lon, lat
        return df
    df = pd.read_parquet(path) if name.endswith((".parquet", ".pq")) else pd.read_csv(path)
    cols = {c.lower(): c for c in df.columns}
    lon = next((cols[c] for c in ("lon", "longitude", "x") if c in cols), None)
    lat = next((cols[c] for c in ("lat", "latitude", "y") if c in cols), None)
    if lon is None or lat is None:
        fail(f"{path}: needs lon and lat columns (or longitude/latitude), found "
             f"{', '.join(map(str, df.columns))}")
    return df.rename(columns={lon: "lon", lat: "lat"})


def parse_region(bbox: Optional[str], region: Optional[Path], tiles: Optional[List[str]]) -> Any:
    """Exactly one of --bbox W,S,E,N / --region FILE / --tile NAME (repeatable) -> the region
    forms the client accepts (a bbox tuple, a GeoJSON path, a list of tile names)."""
    given = [x for x in (bbox, region, tiles) if x]
    if len(given) != 1:
        fail("give exactly one of --bbox W,S,E,N, --region FILE.geojson and --tile NAME")
    if bbox:
        try:
            w, s, e, n = (float(v) for v in bbox.split(","))
        except ValueError:
            fail(f"--bbox {bbox!r}: expected four numbers west,south,east,north in degrees")
        return (w, s, e, n)
    if region:
        if not region.exists():
            fail(f"{region}: region file not found")
        return region
    from tessera.store.grid import parse_tile_name
    return [parse_tile_name(t).name for t in tiles]


def _client(store: str, cache: Optional[Path]) -> Any:
    from tessera.store.client import Client
    return Client(store, cache_dir=cache)


def register(app: typer.Typer) -> None:
    store_app = typer.Typer(help="Inspect a store.", no_args_is_help=True)
    app.add_typer(store_app, name="store")

    @store_app.command("check")
    @user_errors
    def store_check(
        store: Path = typer.Argument(..., help="Store directory."),
        quick: bool = typer.Option(False, "--quick", help="Sizes only, no sha256."),
    ) -> None:
        """Verify every file of a store against its manifest (existence, size, sha256) and list
        files the manifest does not know. Exit code 1 when anything is wrong."""
        from tessera.store.local import LocalStore

        st = LocalStore(store)
        man = st.manifest()
        from rich.progress import Progress
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("checking", total=man.total_bytes)
            rep = st.check(verify_hashes=not quick, progress=lambda n: bar.advance(task, n),
                           manifest=man)
        for what, items in (("missing", rep.missing), ("size differs", rep.size_mismatch),
                            ("sha256 differs", rep.hash_mismatch),
                            ("not in the manifest", rep.unlisted)):
            for p in items:
                console.print(f"[red]{what}:[/] {p}", highlight=False)
        console.print(f"{rep.checked} files of {len(man)} tile-years checked"
                      f"{' (sizes only)' if quick else ''}: "
                      f"{'all good' if rep.ok else 'PROBLEMS FOUND'}")
        if not rep.ok:
            raise typer.Exit(1)

    @app.command()
    @user_errors
    def serve(
        store: Path = typer.Argument(..., help="Store directory to serve (read-only)."),
        host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 for all)."),
        port: int = typer.Option(8000),
        quiet: bool = typer.Option(False, "--quiet", help="No access log."),
    ) -> None:
        """Serve a store over HTTP (GET/HEAD with byte ranges) for `tessera download --store URL`."""
        from tessera.store.http import run_server
        from tessera.store.local import LocalStore

        man = LocalStore(store).manifest()
        run_server(store, host, port, log=None if quiet else
                   (lambda r: console.print(str(r), highlight=False)),
                   on_ready=lambda srv: console.print(
                       f"serving {store} ({len(man)} tile-years) at {srv.url}/  (Ctrl-C stops)"))

    bbox_o, region_o, tile_o = _region_opts()

    @app.command()
    @user_errors
    def download(
        year: int = typer.Option(..., help="Year."),
        output: Optional[Path] = typer.Option(None, "-o", "--output", help="Folder (npy, tiff) "
                                              "or .zarr path (zarr)."),
        store: str = _store_opt(),
        bbox: Optional[str] = bbox_o, region: Optional[Path] = region_o,
        tile: Optional[List[str]] = tile_o,
        fmt: str = typer.Option("npy", "-f", "--format", help="npy (the store's files, "
                                "verified: the output is itself a store), tiff (one GeoTIFF "
                                "per tile, native UTM) or zarr (one group per UTM zone)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be read, "
                                     "downloaded and written; do nothing."),
        cache: Optional[Path] = typer.Option(None, help="Download cache (HTTP stores)."),
        jobs: int = typer.Option(4, help="Tiles downloaded at once (npy)."),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Fetch the tiles of a region and year: verified (size + sha256), resumable, into a
        folder in the published layout, per-tile GeoTIFFs or Zarr."""
        import warnings

        from tessera.store.client import MissingTilesWarning

        if fmt not in ("npy", "tiff", "zarr"):
            fail(f"--format {fmt!r}: expected npy, tiff or zarr")
        where = parse_region(bbox, region, tile)
        client = _client(store, cache)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingTilesWarning)  # the plan reports them
            plan = client.dry_run(where, year, formats=[] if fmt == "npy" else
                                  [{"tiff": "tiles", "zarr": "zarr"}[fmt]])
            report = str(plan)
            _, present, _ = client.plan(where, year)
            if fmt == "npy":  # a mirror writes the store's own files (+ the small masks)
                report += (f"\nwould write (npy): {sum(e.nbytes for e in present) / 1e6:.1f} MB, "
                           "the store's files as they are")
        console.print(report, highlight=False)
        if dry_run:
            return
        if output is None:
            fail("-o/--output is required (or --dry-run)")
        if not plan.tiles_present:
            fail(f"none of the region's tiles is in the store for {year}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingTilesWarning)
            if fmt == "npy":
                entries = _mirror(client, present, output, progress, jobs)
                console.print(f"wrote {len(entries)} tiles (verified) into the store {output}")
            elif fmt == "tiff":
                res = client.export_tiles_geotiff(where, year, output)
                console.print(f"wrote {len(res.written)} GeoTIFFs under {output} "
                              f"({len(res.skipped)} already there)")
            else:
                console.print(f"wrote {client.export_zarr(where, year, output)}")

    @app.command()
    @user_errors
    def sample(
        points: Path = typer.Argument(..., help="CSV/Parquet with lon, lat columns, or GeoJSON "
                                      "points."),
        year: int = typer.Option(..., help="Year."),
        output: Path = typer.Option(..., "-o", "--output", help="Output .parquet."),
        store: str = _store_opt(),
        cache: Optional[Path] = typer.Option(None, help="Download cache (HTTP stores)."),
    ) -> None:
        """Embeddings at points: the input columns + status (valid / nodata / outside) +
        emb_000..emb_127 (float32, NaN unless valid). One read per tile."""
        import pandas as pd

        from tessera.table import write_parquet

        df = _points_table(points)
        emb, status = _client(store, cache).sample_points(
            (df["lon"].to_numpy(float), df["lat"].to_numpy(float)), year)
        out = pd.concat([df.reset_index(drop=True), pd.DataFrame({"status": status}),
                         pd.DataFrame(emb, columns=[f"emb_{i:03d}" for i in range(emb.shape[1])])],
                        axis=1)
        write_parquet(out, output)
        counts = pd.Series(status).value_counts()
        console.print(f"wrote {output}: {len(out)} points, " + ", ".join(
            f"{counts.get(k, 0)} {k}" for k in ("valid", "nodata", "outside")))

    @app.command()
    @user_errors
    def export(
        year: int = typer.Option(..., help="Year."),
        output: Path = typer.Option(..., "-o", "--output", help="OUT.tif (one GeoTIFF, one UTM "
                                    "zone) or OUT.zarr."),
        store: str = _store_opt(),
        bbox: Optional[str] = bbox_o, region: Optional[Path] = region_o,
        tile: Optional[List[str]] = tile_o,
        dtype: str = typer.Option("float32", help="GeoTIFF: float32, or int8 (+ OUT_scales.tif)."),
        crs: Optional[str] = typer.Option(None, help="Output CRS (default: the UTM zone of the "
                                          "region's centre)."),
        overwrite: bool = typer.Option(False, "--overwrite"),
        dry_run: bool = typer.Option(False, "--dry-run"),
        cache: Optional[Path] = typer.Option(None, help="Download cache (HTTP stores)."),
    ) -> None:
        """A region as one GeoTIFF mosaic (tiled, compressed, BigTIFF when needed) or Zarr v3,
        streamed window by window (memory does not grow with the region)."""
        import warnings

        from tessera.store.client import MissingTilesWarning

        where = parse_region(bbox, region, tile)
        client = _client(store, cache)
        is_zarr = output.suffix.lower() == ".zarr"
        if not is_zarr and output.suffix.lower() not in (".tif", ".tiff"):
            fail(f"{output}: expected a .tif/.tiff or .zarr output")
        fmt = "zarr" if is_zarr else ("geotiff-int8" if dtype == "int8" else "geotiff")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingTilesWarning)
            console.print(str(client.dry_run(where, year, formats=[fmt], crs=crs)),
                          highlight=False)
            if dry_run:
                return
            if is_zarr:
                path = client.export_zarr(where, year, output, overwrite=overwrite)
            else:
                path = client.export_geotiff(where, year, output, dtype=dtype, crs=crs,
                                             overwrite=overwrite)
        console.print(f"wrote {path}")

    @app.command()
    @user_errors
    def coverage(
        store: str = _store_opt(),
        png: Optional[Path] = typer.Option(None, "-o", "--output", help="Coverage map PNG."),
        cache: Optional[Path] = typer.Option(None, help="Download cache (HTTP stores)."),
    ) -> None:
        """Which tiles the store holds per year: a table, and a map with -o."""
        from tessera.store import open_store
        from tessera.viz import coverage_map, coverage_table

        man = open_store(store, cache_dir=cache).manifest()
        table = coverage_table(man)
        console.print(table.to_string(index=False) if len(table) else "the store is empty")
        if png is not None:
            console.print(f"wrote {coverage_map(man, png)}")

    @app.command()
    @user_errors
    def visualize(
        store: str = _store_opt(),
        year: int = typer.Option(..., help="Year."),
        output: Path = typer.Option(..., "-o", "--output", help="PNG of the region mosaic."),
        bbox: Optional[str] = typer.Option(None, help="west,south,east,north in degrees."),
        tile: Optional[List[str]] = typer.Option(None, "--tile", help="grid_{lon}_{lat} "
                                                 "(repeatable)."),
        geotiff: Optional[Path] = typer.Option(None, help="Also a georeferenced RGB GeoTIFF."),
        tiles_dir: Optional[Path] = typer.Option(None, help="Also one RGB GeoTIFF per tile, "
                                                 "in its native UTM zone."),
        pca_from: Optional[Path] = typer.Option(None, help="Reuse a PCA fit (JSON) for the "
                                                "same colours as an earlier picture."),
        pca_out: Optional[Path] = typer.Option(None, help="Save the PCA fit as JSON."),
        stretch: str = typer.Option("percentile", help="percentile (2-98) or histogram."),
        max_size: int = typer.Option(4096, help="Longest side of the mosaic in pixels."),
        n_sample: int = typer.Option(100_000, help="Pixels sampled for the one PCA fit."),
        seed: int = typer.Option(0),
        cache: Optional[Path] = typer.Option(None, help="Download cache (HTTP stores)."),
    ) -> None:
        """False colour: PCA to RGB fitted once across all tiles of the request (consistent
        colours, no seams), as a PNG mosaic in one UTM zone (+ GeoTIFFs)."""
        from tessera import viz
        from tessera.store import open_store

        region = parse_region(bbox, None, tile)
        st = open_store(store, cache_dir=cache)
        pca = viz.PcaRgb.load(pca_from) if pca_from else None
        out = viz.render_region(st, region, year, output, geotiff, pca=pca, max_size=max_size,
                                n_sample=n_sample, seed=seed, stretch=stretch)
        console.print(f"wrote {out.png}" + (f" and {out.tif}" if out.tif else "")
                      + f" ({len(out.tiles)} tiles, {out.grid.width} x {out.grid.height} px, "
                      f"{out.grid.crs.to_string()})")
        if tiles_dir is not None:
            done = viz.render_tiles(st, out.tiles, year, tiles_dir, pca=out.pca)
            console.print(f"wrote {len(done)} tile GeoTIFFs under {tiles_dir}")
        if pca_out is not None:
            console.print(f"wrote {out.pca.save(pca_out)}")


def _mirror(client: Any, present: list, out: Path, progress: bool, jobs: int = 4) -> list:
    """Copy the `present` tile-years' files (verified by the store: size + sha256) into `out` in the
    published layout and write `out`'s manifest, so the output is itself a store. `jobs` tiles
    travel at once (each file streamed, so memory stays flat). Files already there with the
    right size and hash are kept, and a tile enters `out`'s manifest only once its three files
    are in place: an interrupted download resumes where it stopped."""
    import shutil
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from rich.progress import Progress

    from tessera.atomic import atomic_path
    from tessera.store.local import LocalStore
    from tessera.store.manifest import hash_file

    dest = LocalStore(out)

    def fetch(e: Any, advance: Any) -> Any:
        for f in e.files.values():
            target = out / f.path
            if not (target.exists() and target.stat().st_size == f.size
                    and hash_file(target)[1] == f.sha256):
                src = client.store.open_file(f)  # verified (and cached, over HTTP)
                with atomic_path(target) as tmp:
                    shutil.copyfile(src, tmp)
            advance(f.size)
        return e

    done = []
    with Progress(console=console, disable=not progress, transient=True) as bar, \
            ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        task = bar.add_task("download", total=sum(e.nbytes for e in present))
        futures = [pool.submit(fetch, e, lambda n: bar.advance(task, n)) for e in present]
        def record(e: Any) -> None:
            with dest._locked():
                dest.manifest().upsert([e]).write(dest.manifest_path)
            done.append(e)

        try:
            for fut in as_completed(futures):
                record(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            pool.shutdown(wait=True)
            for fut in futures:  # tiles that finished meanwhile still count
                if fut.done() and not fut.cancelled() and fut.exception() is None \
                        and fut.result() not in done:
                    record(fut.result())
            raise
    return done
