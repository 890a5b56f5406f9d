"""Store commands: `tessera download`, `sample`, `export`, `visualize`, `coverage`, `serve` and
`tessera store check`. A STORE is a directory or an http(s) URL served by `tessera serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from tessera.cli_errors import console, fail, user_errors

STORE_HELP = "Store: a directory or an http(s):// URL (`tessera serve`)."


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
            rep = st.check(verify_hashes=not quick, progress=lambda n: bar.advance(task, n))
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

    @app.command()
    @user_errors
    def coverage(
        store: str = typer.Argument(..., help=STORE_HELP),
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
        store: str = typer.Argument(..., help=STORE_HELP),
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
