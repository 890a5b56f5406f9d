"""Atomic file writes: write under a temporary sibling name, rename onto the final name only when
complete, so a reader (or a rerun) never sees a half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def tmp_sibling(final: str | os.PathLike) -> Path:
    """A new empty `.{name}.XXXX.tmp` beside `final` (its folder created), with the permissions
    of an ordinary file (mkstemp makes 0600 files)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, _file_mode())
    return Path(tmp)


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `final` to write; it replaces `final` on success and is
    removed on any failure. The mode is set again after writing, for writers that recreate the
    file (safetensors does, as 0600)."""
    tmp = tmp_sibling(final)
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
