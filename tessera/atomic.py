"""Atomic outputs: write under a temporary sibling name, rename onto the final name only when
complete, so a reader (or a rerun) never sees a half-written file or folder.

Temporaries are named `.{final name}.pid{PID}@{HOST}.{random}.tmp`: hidden, next to their final
name, and saying which process owns them. A run killed outright (kill -9, a power cut) cannot
remove its own; the next write of the same output does (`clean_stale`): a temporary whose owner
is a process of this host that no longer exists, or one of another host older than a day, is
removed. A live writer's temporaries are never touched, so concurrent writers stay safe.

Files and folders get ordinary permissions (what the umask allows, as `open` / `mkdir` give),
not the 0600 / 0700 of `mkstemp` / `mkdtemp`.

A write that fails because of where it goes (no space left, a quota, a read-only file system)
becomes a `WriteError` naming the output and the cause, whatever library was writing (numpy,
GDAL's "Write failed", pyarrow, PIL): the writers all go through this module.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tessera.errors import TesseraError, WriteError, error_text, human_bytes

#: Another host's temporaries are taken as abandoned after this many seconds.
STALE_AFTER_S = 24 * 3600
#: A write that fails where less than this is free is taken to have failed for lack of space
#: (GDAL and numpy do not always say so).
LOW_SPACE = 1 << 20
_CAUSES = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
           errno.EROFS: "read-only file system", errno.EFBIG: "file too large here"}
_TMP = re.compile(r"^\.(?P<name>.+)\.pid(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]*)\.[A-Za-z0-9_]+\.tmp$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:32]


def _prefix(final: Path) -> str:
    return f".{final.name}.pid{os.getpid()}@{_host()}."


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def file_mode() -> int:
    """The mode `open()` gives a new file under the current umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode `mkdir()` gives a new folder under the current umask."""
    return 0o777 & ~_umask()


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is one of our temporaries."""
    return _TMP.match(name) is not None


def _owner_gone(match: re.Match[str], path: Path) -> bool:
    if match["host"] != _host():
        try:
            return time.time() - path.lstat().st_mtime > STALE_AFTER_S
        except FileNotFoundError:
            return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Temporaries in `folder` (of the output `name`, or of any output) whose writer is gone."""
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for e in entries:
        m = _TMP.match(e.name)
        if m and (name is None or m["name"] == name) and _owner_gone(m, Path(e.path)):
            out.append(Path(e.path))
    return sorted(out)


def remove(path: Path) -> None:
    """Remove a file or a folder tree, whichever it is (gone already is fine)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass


def clean_stale(final: str | os.PathLike) -> list[Path]:
    """Remove the abandoned temporaries of the output `final` (see the module docstring);
    returns what was removed."""
    final = Path(final)
    gone = stale_temporaries(final.parent, final.name)
    for p in gone:
        remove(p)
    return gone


def make_parents(final: str | os.PathLike) -> list[Path]:
    """Create the folders above `final`; returns those this call created, deepest first."""
    missing = [p for p in Path(final).parents if not p.exists()]
    Path(final).parent.mkdir(parents=True, exist_ok=True)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove folders (deepest first) that are empty: what a failed write created for nothing."""
    for p in folders:
        with contextlib.suppress(OSError):
            p.rmdir()


def prune_empty(root: str | os.PathLike) -> None:
    """Remove the empty folders below `root`, and `root` itself if that leaves it empty (what
    parallel writers that all failed created for nothing)."""
    for dirpath, _, _ in sorted(os.walk(str(root)), key=lambda w: -len(Path(w[0]).parts)):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def tmp_sibling(final: str | os.PathLike) -> Path:
    """A new empty temporary file beside `final` (its folder created), with the permissions of
    an ordinary file. Abandoned temporaries of `final` are removed first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(final), suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, file_mode())
    return Path(tmp)


def tmp_dir(final: str | os.PathLike) -> Path:
    """A new empty temporary folder beside `final` (ordinary permissions); abandoned
    temporaries of `final` are removed first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(final), suffix=".tmp", dir=final.parent))
    os.chmod(tmp, dir_mode())
    return tmp


def _free(where: Path) -> int | None:
    for p in (where, *where.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def write_error(final: str | os.PathLike, exc: BaseException, needed: int | None = None
                ) -> WriteError | None:
    """A WriteError naming `final` when `exc` says its location cannot take it (no space, a
    quota, read-only), else None (the error is about something else: leave it as it is)."""
    if isinstance(exc, TesseraError) or not isinstance(exc, OSError):
        return None
    final = Path(final)
    text = error_text(exc)
    low = text.lower()
    if exc.errno in _CAUSES:
        code = exc.errno
    elif "no space left" in low:
        code = errno.ENOSPC
    elif "read-only file system" in low:
        code = errno.EROFS
    else:
        free = _free(final.parent)
        if exc.errno is None and free is not None and free < LOW_SPACE:
            code = errno.ENOSPC  # a library's bare "Write failed" where the disk is full
        else:
            return None
    free = _free(final.parent)
    room = "" if free is None else f"; {human_bytes(free)} free on {final.parent}"
    need = f", about {human_bytes(needed)} needed" if needed else ""
    said = f" ({text})"  # what the writing library said
    return WriteError(code, f"{final}: cannot write it: {_CAUSES[code]}{said}{room}{need}; "
                            "nothing was written under that name")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of `final` to write; it replaces `final` on success and is
    removed on any failure (a full or read-only location: a WriteError naming `final`, with
    `needed` bytes in the message when given). The mode is set again after writing, for writers
    that recreate the file (safetensors does, as 0600)."""
    made: list[Path] = []
    try:
        made = make_parents(final)
        tmp = tmp_sibling(final)
    except OSError as exc:
        remove_empty(made)
        raise (write_error(final, exc, needed) or exc) from exc
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, final)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        remove_empty(made)
        err = write_error(final, exc, needed)
        if err is not None:
            raise err from exc
        raise


@contextlib.contextmanager
def atomic_paths(finals: Sequence[str | os.PathLike], needed: int | None = None
                 ) -> Iterator[list[Path]]:
    """`atomic_path` for several files that belong together: all are written under temporary
    names, then renamed in the given order (put last the one whose presence says the set is
    complete); on any failure none is renamed and the temporaries go."""
    paths = [Path(f) for f in finals]
    tmps: list[Path] = []
    made: list[Path] = []
    try:
        for p in paths:
            made += make_parents(p)
            tmps.append(tmp_sibling(p))
        yield tmps
        for t, p in zip(tmps, paths):
            os.chmod(t, file_mode())
            os.replace(t, p)
    except BaseException as exc:
        for t in tmps:
            t.unlink(missing_ok=True)
        remove_empty(sorted(set(made), key=lambda p: len(p.parts), reverse=True))
        err = write_error(paths[0].parent / f"{paths[0].name} (and {len(paths) - 1} more)"
                          if len(paths) > 1 else paths[0], exc, needed)
        if err is not None:
            raise err from exc
        raise


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move a finished temporary folder onto `final`, replacing an existing folder (the old one
    is moved aside first and removed after, so `final` is never a mix of both)."""
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists():
        old = final.with_name(f"{_prefix(final)}old{os.urandom(4).hex()}.tmp")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder to fill; it replaces the folder `final` on success and is
    removed on any failure."""
    made: list[Path] = []
    try:
        made = make_parents(final)
        tmp = tmp_dir(final)
    except OSError as exc:
        remove_empty(made)
        raise (write_error(final, exc) or exc) from exc
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(made)
        err = write_error(final, exc)
        if err is not None:
            raise err from exc
        raise


def write_text(final: str | os.PathLike, text: str) -> Path:
    """Write a small text file atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
    return Path(final)


__all__ = ["LOW_SPACE", "STALE_AFTER_S", "atomic_dir", "atomic_path", "atomic_paths", "clean_stale",
           "dir_mode", "file_mode", "is_temporary", "make_parents", "prune_empty", "remove",
           "remove_empty",
           "replace_dir", "stale_temporaries",
           "tmp_dir", "tmp_sibling", "write_error", "write_text"]
