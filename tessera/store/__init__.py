"""The embedding store: its layout and manifest, local and HTTP stores behind one protocol
(`Store`), the server, mirroring, and the client that reads tiles, regions and points from any
store and exports them.

    layout.py    where files live (SPEC section 5)        manifest.py  the GeoParquet manifest
    protocol.py  what a store is (`Store`)                 local.py     a directory: write, check
    http.py      a URL with a verified cache (HttpStore)   server.py    `tessera serve`
    mirror.py    copy tile-years into a local store        client.py    `Client`: reads, exports
    mosaic.py    windows of an output grid from tiles      points.py    embeddings at points
    export.py    GeoTIFF / per-tile / Zarr exports         results.py   what the client returns
    synthetic.py SIMULATED stores for tests and demos

The store never imports the model: embedding into a store is `tessera.pipeline.embed_store`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tessera.store.protocol import Store


def open_store(location: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
               dataset_version: str | None = None, **options: Any) -> Store:
    """`http(s)://...` -> HttpStore (files cached in `cache_dir`), else a LocalStore directory;
    either may hold a tessera store or one of GeoTessera's layouts (`dataset_version` picks one
    dataset of a GeoTessera mirror holding several)."""
    loc = str(location)
    if loc.startswith(("http://", "https://")):
        from tessera.store.http import HttpStore
        return HttpStore(loc, cache_dir=cache_dir, dataset_version=dataset_version, **options)
    from tessera.store.local import LocalStore
    return LocalStore(Path(loc), dataset_version=dataset_version)


__all__ = ["Store", "open_store"]
