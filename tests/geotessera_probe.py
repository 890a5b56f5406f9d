"""Run by the REAL geotessera client (its own venv, see scripts/install_geotessera.sh) on a local
store, offline (every socket connect refused), or on a store served on loopback (connects to
127.0.0.1 only): prints JSON of what it sees and saves the arrays it returns, for the tests
in tests/store/ to compare with tessera's client.

    .venv-geotessera/0.7.5/bin/python tests/geotessera_probe.py STORE OUT.npz LON,LAT ...
    .venv-geotessera/0.7.5/bin/python tests/geotessera_probe.py http://127.0.0.1:PORT OUT.npz ...

Over HTTP the server's root holds the store as `v1/` (geotessera <= 0.8 fetches
{BASE}/v1/registry.parquet; >= 0.10 fetches {BASE}/v1/npy/v1/manifest.parquet and
{BASE}/v1/landmasks/v1/landmasks.parquet: the mirror URLs are patched to the server's).
Exported GeoTIFFs go to OUT's folder, under `tiffs/`.
"""

import json
import socket
import sys
import tempfile

ATTEMPTS = []


_connect = socket.socket.connect


def _refuse(self, address):  # type: ignore[no-untyped-def]
    if HTTP and isinstance(address, tuple) and address[0] == "127.0.0.1":
        return _connect(self, address)
    ATTEMPTS.append(str(address))
    raise OSError(f"network refused by the test: {address}")


HTTP = sys.argv[1].startswith("http://")
socket.socket.connect = _refuse  # type: ignore[method-assign]

import numpy as np  # noqa: E402
import geotessera  # noqa: E402
from geotessera import GeoTessera  # noqa: E402

store, out = sys.argv[1], sys.argv[2]
points = [tuple(map(float, p.split(","))) for p in sys.argv[3:]]
kw = {"dataset_version": "v1", "cache_dir": tempfile.mkdtemp(), "embeddings_dir": store,
      "registry_dir": store}
OLD = geotessera.__version__.startswith("0.7")
if HTTP:
    import geotessera.registry as reg

    base = store.rstrip("/")
    if OLD:
        reg.TESSERA_BASE_URL = base
    else:
        reg.TESSERA_NPY_MIRROR_URL = f"{base}/v1/npy"
        reg.TESSERA_LANDMASKS_MIRROR_URL = f"{base}/v1/landmasks"
    kw["embeddings_dir"] = tempfile.mkdtemp()
    del kw["registry_dir"]
if not OLD:
    kw["dataset_variant"] = "vultr"
gt = GeoTessera(**kw)
tiles = sorted(gt.registry.get_available_embeddings())
year = int(tiles[0][0])
lon, lat = float(tiles[0][1]), float(tiles[0][2])
emb, crs, transform = gt.fetch_embedding(lon, lat, year)
vals = gt.sample_embeddings_at_points(points, year=year, auto_download=HTTP)
import os  # noqa: E402

tiffs = gt.export_embedding_geotiffs([(year, lo, la) for _, lo, la in tiles if _ == year],
                                     os.path.join(os.path.dirname(os.path.abspath(out)),
                                                  "tiffs"))
np.savez(out, tile_embedding=emb, samples=np.asarray(vals, np.float32))
print(json.dumps({"version": geotessera.__version__,
                  "years": [int(y) for y in gt.registry.get_available_years()],
                  "tiles": [[int(y), float(a), float(b)] for y, a, b in tiles],
                  "tile": [year, lon, lat], "crs": str(crs), "transform": list(transform)[:6],
                  "tiffs": sorted(str(t) for t in tiffs),
                  "network": ATTEMPTS}))
