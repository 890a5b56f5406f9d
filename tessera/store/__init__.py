"""The embedding store: the global grid, the manifest, local and HTTP stores, and the client.

A store is anything with `manifest() -> Manifest` and `open_file(FileEntry) -> Path` (a local,
verified copy of a listed file): `LocalStore` (a directory) or `HttpStore` (a URL, with a cache).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def open_store(location: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
               **options: Any) -> Any:
    """`http(s)://...` -> HttpStore (files cached in `cache_dir`), else a LocalStore directory."""
    loc = str(location)
    if loc.startswith(("http://", "https://")):
        from tessera.store.http import HttpStore
        return HttpStore(loc, cache_dir=cache_dir, **options)
    from tessera.store.local import LocalStore
    return LocalStore(Path(loc))
