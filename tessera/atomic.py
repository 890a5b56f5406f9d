"""Atomic outputs: write under a temporary sibling name, rename onto the final name only when
complete, so a reader (or a rerun) never sees a half-written file or folder.

Temporaries are named `.{final name}.pid{PID}@{HOST}.{random}.tmp`: hidden, next to their final
name, and saying which process owns them. A run killed outright (kill -9, a power cut) cannot
remove its own; the next write of the same output does (`clean_stale`): a temporary whose owner
is a process of this host that no longer exists, or one of another host older than a day, is
removed. A live writer's temporaries are never touched, so concurrent writers stay safe.

Files and folders get ordinary permissions (what the umask allows, as `open` / `mkdir` give),
not the 0600 / 0700 of `mkstemp` / `mkdtemp`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: Another host's temporaries are taken as abandoned after this many seconds.
STALE_AFTER_S = 24 * 3600
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


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `final` to write; it replaces `final` on success and is
    removed on any failure. The mode is set again after writing, for writers that recreate the
    file (safetensors does, as 0600)."""
    tmp = tmp_sibling(final)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
    tmp = tmp_dir(final)
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(final: str | os.PathLike, text: str) -> Path:
    """Write a small text file atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
    return Path(final)


__all__ = ["STALE_AFTER_S", "atomic_dir", "atomic_path", "clean_stale", "dir_mode", "file_mode",
           "is_temporary", "remove", "replace_dir", "stale_temporaries", "tmp_dir", "tmp_sibling",
           "write_text"]
