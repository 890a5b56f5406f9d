"""Reading stores in GeoTessera's published layouts (tessera.store.geotessera), and refusing
directories in no known layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from pyproj import Transformer
from typer.testing import CliRunner

from tessera.errors import StoreError
from tessera.store.client import Client
from tessera.store.local import LocalStore

from geotessera_layouts import LAYOUTS, write_store

TILES = ["grid_0.15_52.05", "grid_-0.05_52.05"]
POINTS = [(0.15, 52.05), (-0.05, 52.06), (0.12, 52.01), (5.0, 5.0)]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("gt")
    return {lay: write_store(base / lay, lay, TILES, [2024]) for lay in LAYOUTS}


def _tile_dir(root: Path, layout: str) -> Path:
    return root / ("npy/v1" if layout == "mirror" else "global_0.1_degree_representation")


def _landmask(root: Path, layout: str, tile: str) -> Path:
    return root / ("landmasks/v1" if layout == "mirror" else "global_0.1_degree_tiff_all") / (
        tile + ".tiff")


def _expected(root: Path, layout: str, lon: float, lat: float) -> np.ndarray | None:
    """int8 x scale at the point, read straight from the files with the landmask's grid (as
    geotessera does); None outside every tile."""
    tile = f"grid_{np.floor(lon * 10) / 10 + 0.05:.2f}_{np.floor(lat * 10) / 10 + 0.05:.2f}"
    folder = _tile_dir(root, layout) / "2024" / tile
    if not folder.exists():
        return None
    q = np.load(folder / f"{tile}.npy")
    s = np.load(folder / f"{tile}_scales.npy")
    with rasterio.open(_landmask(root, layout, tile)) as src:
        x, y = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True).transform(lon, lat)
        row, col = src.index(x, y)
    return q[row, col].astype(np.float32) * s[row, col]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reads_each_layout(stores: dict[str, Path], layout: str) -> None:
    root = stores[layout]
    c = Client(root)
    assert c.years() == [2024]
    assert sorted(c.manifest.tiles()) == sorted(TILES)
    e = c.model(2024)
    assert e is not None and e.model == "v1" and e.dims == 128 and e.valid_pixels == -1
    emb, status = c.sample_points(POINTS, 2024)
    assert list(status) == ["valid", "valid", "valid", "outside"]
    for (lon, lat), got in zip(POINTS[:3], emb[:3]):
        want = _expected(root, layout, lon, lat)
        assert want is not None
        np.testing.assert_array_equal(got, want)
    assert np.isnan(emb[3]).all()
    # the georeferencing is the landmask's
    with rasterio.open(_landmask(root, layout, "grid_0.15_52.05")) as src:
        entry = c.manifest.entry("grid_0.15_52.05", 2024)
        assert entry.crs == src.crs.to_string() and entry.affine == src.transform
    with pytest.warns(UserWarning, match="grid_0.05_52.05"):  # between the two tiles
        r = c.read_region((-0.1, 52.0, 0.2, 52.1), 2024)
    assert sorted(r.tiles) == sorted(TILES) and np.isfinite(r.embeddings).any()


def test_store_check_verifies_geotessera_hashes(stores: dict[str, Path], tmp_path: Path) -> None:
    root = shutil.copytree(stores["registry"], tmp_path / "s")
    assert LocalStore(root).check().ok
    npy = root / "global_0.1_degree_representation/2024/grid_0.15_52.05/grid_0.15_52.05.npy"
    data = bytearray(npy.read_bytes())
    data[-1] ^= 1  # same size, another sha256
    npy.write_bytes(bytes(data))
    rep = LocalStore(root).check()
    assert rep.hash_mismatch == [npy.relative_to(root).as_posix()]


def test_a_partial_mirror_holds_what_it_downloaded(stores: dict[str, Path],
                                                   tmp_path: Path) -> None:
    """The registry lists the whole catalogue; tiles without their files are not in the store."""
    root = shutil.copytree(stores["manifest"], tmp_path / "s")
    shutil.rmtree(root / "global_0.1_degree_representation/2024/grid_-0.05_52.05")
    assert Client(root).manifest.tiles() == ["grid_0.15_52.05"]


def test_bad_geotessera_stores_get_one_line_errors(stores: dict[str, Path],
                                                   tmp_path: Path) -> None:
    root = shutil.copytree(stores["registry"], tmp_path / "a")
    table = pq.read_table(root / "registry.parquet").drop(["file_size"])
    pq.write_table(table, root / "registry.parquet")
    with pytest.raises(StoreError, match=r"registry.parquet.*lacks the columns file_size"):
        Client(root).years()

    root = shutil.copytree(stores["registry"], tmp_path / "b")
    (root / "global_0.1_degree_representation/2024/grid_0.15_52.05/"
     "grid_0.15_52.05_scales.npy").unlink()
    with pytest.raises(StoreError, match=r"grid_0.15_52.05_scales.npy: missing"):
        Client(root).years()

    root = shutil.copytree(stores["manifest"], tmp_path / "c")
    lm = pq.read_table(root / "landmasks.parquet")
    pq.write_table(lm.slice(0, 1), root / "landmasks.parquet")
    with pytest.raises(StoreError, match=r"landmasks.parquet: no row for grid_"):
        Client(root).years()


def test_a_mirror_of_several_datasets_needs_a_choice(stores: dict[str, Path],
                                                     tmp_path: Path) -> None:
    root = shutil.copytree(stores["mirror"], tmp_path / "m")
    shutil.copytree(root / "npy/v1", root / "npy/v1.1-cam")
    shutil.copytree(root / "landmasks/v1", root / "landmasks/v1.1")
    with pytest.raises(StoreError, match=r"2 datasets \(v1, v1.1-cam\).*--dataset-version"):
        Client(LocalStore(root)).years()
    man = LocalStore(root, dataset_version="v1.1-cam").manifest()
    assert man.entries()[0].files["embeddings"].path.startswith("npy/v1.1-cam/2024/")
    with pytest.raises(StoreError, match=r"no dataset 'v2' in this GeoTessera mirror"):
        LocalStore(root, dataset_version="v2").manifest()


def test_geotessera_stores_are_read_only(stores: dict[str, Path], tmp_path: Path) -> None:
    root = shutil.copytree(stores["manifest"], tmp_path / "s")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    q = np.zeros((4, 4, 128), np.int8)
    s = np.ones((4, 4), np.float32)
    with pytest.raises(StoreError, match="GeoTessera store.*read-only"):
        LocalStore(root).write_tile("grid_0.15_52.05", 2025, q, s, version="x",
                                    crs="EPSG:32631", transform=(10, 0, 0, 0, -10, 0))
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_directory_in_no_layout_is_an_error_not_an_empty_store(tmp_path: Path) -> None:
    from tessera.cli import app

    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not a store: no manifest.parquet"):
        Client(tmp_path / "empty").years()
    runner = CliRunner()
    res = runner.invoke(app, ["store", "check", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "not a store" in res.output
    pts = tmp_path / "p.csv"
    pts.write_text("lon,lat\n0.15,52.05\n")
    res = runner.invoke(app, ["sample", str(pts), "-s", str(tmp_path / "empty"), "--year",
                              "2024", "-o", str(tmp_path / "o.parquet")])
    assert res.exit_code == 2 and "not a store" in res.output
    assert not (tmp_path / "o.parquet").exists()


def test_cli_samples_a_geotessera_store(stores: dict[str, Path], tmp_path: Path) -> None:
    import pandas as pd

    from tessera.cli import app

    pts = tmp_path / "p.csv"
    pts.write_text("lon,lat\n" + "\n".join(f"{lon},{lat}" for lon, lat in POINTS) + "\n")
    out = tmp_path / "o.parquet"
    res = CliRunner().invoke(app, ["sample", str(pts), "-s", str(stores["registry"]),
                                   "--year", "2024", "-o", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    assert list(df["status"]) == ["valid", "valid", "valid", "outside"]
    want = _expected(stores["registry"], "registry", *POINTS[0])
    assert want is not None
    np.testing.assert_allclose(df.filter(like="emb_").iloc[0].to_numpy(np.float32), want,
                               rtol=1e-6)


def test_cli_dataset_version_picks_a_mirror_dataset(stores: dict[str, Path],
                                                    tmp_path: Path) -> None:
    from tessera.cli import app

    root = shutil.copytree(stores["mirror"], tmp_path / "m")
    shutil.copytree(root / "npy/v1", root / "npy/v1.1-cam")
    shutil.copytree(root / "landmasks/v1", root / "landmasks/v1.1")
    pts = tmp_path / "p.csv"
    pts.write_text("lon,lat\n0.15,52.05\n")
    runner = CliRunner()
    base = ["sample", str(pts), "-s", str(root), "--year", "2024", "-o"]
    res = runner.invoke(app, [*base, str(tmp_path / "a.parquet")])
    assert res.exit_code == 2 and "--dataset-version" in res.output
    res = runner.invoke(app, [*base, str(tmp_path / "b.parquet"), "--dataset-version",
                              "v1.1-cam"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, str(tmp_path / "c.parquet"), "--dataset-version", "v1",
                              "-s", str(stores["registry"])])
    assert res.exit_code == 0, res.output  # a single-dataset GeoTessera store: accepted
    (tmp_path / "own").mkdir()
    from tessera.store.synthetic import build_simulated_store
    build_simulated_store(tmp_path / "own", ["grid_0.15_52.05"], years=[2024], resolution=2000)
    res = runner.invoke(app, [*base, str(tmp_path / "d.parquet"), "--dataset-version", "v1",
                              "-s", str(tmp_path / "own")])
    assert res.exit_code == 2 and "not a GeoTessera mirror" in res.output
