"""Run by the REAL geotessera client (its own venv, see scripts/install_geotessera.sh) on a local
store, offline (every socket connect refused): prints JSON of what it sees and saves the arrays
it returns, for tests/store/test_geotessera_client.py to compare with tessera's client.

    .venv-geotessera/0.7.5/bin/python tests/geotessera_probe.py STORE OUT.npz LON,LAT ...
"""

import json
import socket
import sys
import tempfile

ATTEMPTS = []


def _refuse(self, address):  # type: ignore[no-untyped-def]
    ATTEMPTS.append(str(address))
    raise OSError(f"network refused by the test: {address}")


socket.socket.connect = _refuse  # type: ignore[method-assign]

import numpy as np  # noqa: E402
import geotessera  # noqa: E402
from geotessera import GeoTessera  # noqa: E402

store, out = sys.argv[1], sys.argv[2]
points = [tuple(map(float, p.split(","))) for p in sys.argv[3:]]
kw = {"dataset_version": "v1", "cache_dir": tempfile.mkdtemp(), "embeddings_dir": store,
      "registry_dir": store}
if not geotessera.__version__.startswith("0.7"):
    kw["dataset_variant"] = "vultr"
gt = GeoTessera(**kw)
tiles = sorted(gt.registry.get_available_embeddings())
year = int(tiles[0][0])
lon, lat = float(tiles[0][1]), float(tiles[0][2])
emb, crs, transform = gt.fetch_embedding(lon, lat, year)
vals = gt.sample_embeddings_at_points(points, year=year, auto_download=False)
np.savez(out, tile_embedding=emb, samples=np.asarray(vals, np.float32))
print(json.dumps({"version": geotessera.__version__,
                  "years": [int(y) for y in gt.registry.get_available_years()],
                  "tiles": [[int(y), float(a), float(b)] for y, a, b in tiles],
                  "tile": [year, lon, lat], "crs": str(crs), "transform": list(transform)[:6],
                  "network": ATTEMPTS}))
