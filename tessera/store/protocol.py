"""What a store is, for everything that reads one: a manifest and verified local copies of the
files it lists. `LocalStore` (a directory) and `HttpStore` (a URL with a local cache) implement
it; the client, the mirror and the pictures are written against this protocol only."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from tessera.store.manifest import FileEntry, Manifest


@runtime_checkable
class Store(Protocol):
    """A readable store of embeddings (SPEC section 5 layout)."""

    def manifest(self) -> Manifest:
        """The store's manifest: one row per tile-year with its files' sizes and hashes."""
        ...

    def open_file(self, f: FileEntry, verify: bool = False) -> Path:
        """A local path to a copy of the listed file, checked against the manifest's size (and
        sha256 when `verify`, or when the store had to download it)."""
        ...

    def is_local(self, f: FileEntry) -> bool:
        """Whether `open_file(f)` needs no download."""
        ...

    def describe(self) -> str:
        """Where the store is, for messages."""
        ...


__all__ = ["Store"]
