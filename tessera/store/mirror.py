"""Mirroring: copy tile-years of one store into a local directory that is itself a store (the
same files, the same manifest rows), verified, resumable and in parallel. What
`tessera download --format npy` does.

Each file comes through the source store's `open_file`, which checks its size and sha256 (an
`HttpStore` downloads and caches it), then is copied under a temporary name and renamed. A
tile-year enters the mirror's manifest only once its three files are in place, so an interrupted
mirror never lists a partial tile, and a rerun keeps the files that are there with the right
size and hash and fetches the rest.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path

from tessera.atomic import atomic_path, prune_empty
from tessera.errors import InputError
from tessera.progress import Progress, Task, task
from tessera.store.local import LocalStore
from tessera.store.manifest import TileEntry, hash_file
from tessera.store.protocol import Store


def _has_copy(target: Path, size: int, sha256: str) -> bool:
    return target.is_file() and target.stat().st_size == size and hash_file(target)[1] == sha256


def _fetch(source: Store, e: TileEntry, out: Path, bar: Task) -> TileEntry:
    for f in e.files.values():
        target = out / f.path
        if not _has_copy(target, f.size, f.sha256):
            src = source.open_file(f)  # verified (and cached, over HTTP)
            with atomic_path(target) as tmp:
                shutil.copyfile(src, tmp)
        bar.advance(f.size)
    return e


def mirror(source: Store, entries: Sequence[TileEntry], out: str | os.PathLike, jobs: int = 4,
           progress: Progress | None = None) -> list[TileEntry]:
    """Copy the files of `entries` (tile-years of `source`) into the store directory `out` and
    record them in its manifest; `jobs` tiles travel at once (each file streamed, so memory
    stays flat). Returns the entries now in `out`, in the order they completed."""
    if jobs < 1:
        raise InputError(f"jobs {jobs}: expected at least 1 tile at a time")
    out = Path(out)
    created = not out.exists()
    dest = LocalStore(out)
    bar = task(progress, "download", total=sum(e.nbytes for e in entries), unit="B")
    done: list[TileEntry] = []

    def record(e: TileEntry) -> None:
        dest.record([e])
        done.append(e)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures: list[Future[TileEntry]] = [pool.submit(_fetch, source, e, out, bar)
                                            for e in entries]
        try:
            for fut in as_completed(futures):
                record(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            pool.shutdown(wait=True)
            for fut in futures:  # tiles that finished meanwhile still count
                if (fut.done() and not fut.cancelled() and fut.exception() is None
                        and fut.result() not in done):
                    record(fut.result())
            if created:
                prune_empty(out)  # folders made for tiles that never arrived
            raise
    return done


__all__ = ["mirror"]
