import os
import stat

import pytest

from tessera.atomic import atomic_path, tmp_sibling


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_success_replaces_failure_keeps_the_old_file(tmp_path):
    final = tmp_path / "sub" / "f.txt"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".f.txt.")
        tmp.write_text("one")
    assert final.read_text() == "one"
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(final) as tmp:
            tmp.write_text("tw")
            raise OSError(28, "disk full")
    assert final.read_text() == "one" and os.listdir(final.parent) == ["f.txt"]


def test_ordinary_file_mode_even_when_the_writer_recreates_the_file(tmp_path):
    umask = os.umask(0o022)
    try:
        assert _mode(tmp_sibling(tmp_path / "a")) == 0o644  # mkstemp alone gives 0600
        with atomic_path(tmp_path / "b") as tmp:
            tmp.unlink()
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)  # as safetensors does
            os.close(fd)
        assert _mode(tmp_path / "b") == 0o644
    finally:
        os.umask(umask)


def test_checkpoints_are_ordinary_files(tmp_path):
    from tessera.infer import resolve_model
    from tessera.model import save_checkpoint

    model, _ = resolve_model(preset="tiny", use_shipped=False)
    umask = os.umask(0o022)
    try:
        path = save_checkpoint(model, tmp_path / "ck", preset="tiny")
    finally:
        os.umask(umask)
    assert _mode(path) == 0o644 and _mode(path.with_suffix(".json")) == 0o644


# --- temporaries left by a killed writer --------------------------------------------------------

def _dead_pid():
    """A pid that is not running (a child that has exited and been reaped)."""
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temporaries_name_their_owner_and_the_next_write_cleans_abandoned_ones(tmp_path):
    import socket

    from tessera.atomic import clean_stale, is_temporary, stale_temporaries

    final = tmp_path / "out.npy"
    mine = tmp_sibling(final)  # this process: alive, never touched
    assert is_temporary(mine.name) and f"pid{os.getpid()}@" in mine.name
    host = socket.gethostname().split(".")[0]
    dead = tmp_path / f".out.npy.pid{_dead_pid()}@{host}.abcd1234.tmp"
    dead.write_bytes(b"half")
    dead_dir = tmp_path / f".out.npy.pid{_dead_pid()}@{host}.dir0.tmp"
    (dead_dir / "sub").mkdir(parents=True)
    other = tmp_path / f".other.npy.pid{_dead_pid()}@{host}.x1.tmp"  # another output's
    other.write_bytes(b"x")
    remote = tmp_path / ".out.npy.pid1@otherhost.r1.tmp"  # another machine's, recent
    remote.write_bytes(b"x")
    assert stale_temporaries(tmp_path, "out.npy") == sorted([dead, dead_dir])
    with atomic_path(final) as tmp:  # a write of the same output cleans them first
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new"
    assert not dead.exists() and not dead_dir.exists()
    assert mine.exists() and other.exists() and remote.exists()
    os.utime(remote, (1, 1))  # another machine's, a day old: abandoned
    assert clean_stale(final) == [remote] and not remote.exists()


def test_temporary_and_published_folders_have_ordinary_permissions(tmp_path):
    from tessera.atomic import atomic_dir, tmp_dir

    umask = os.umask(0o022)
    try:
        assert _mode(tmp_dir(tmp_path / "a")) == 0o755  # mkdtemp alone gives 0700
        with atomic_dir(tmp_path / "tile") as d:
            (d / "x.npy").write_bytes(b"1")
        assert _mode(tmp_path / "tile") == 0o755
    finally:
        os.umask(umask)


def test_atomic_dir_replaces_whole_folders_and_failures_leave_the_old_one(tmp_path):
    from tessera.atomic import atomic_dir

    final = tmp_path / "tile"
    with atomic_dir(final) as d:
        (d / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "b").write_text("2")
            raise RuntimeError("crash")
    assert sorted(os.listdir(final)) == ["a"] and os.listdir(tmp_path) == ["tile"]
    with atomic_dir(final) as d:
        (d / "b").write_text("2")
    assert sorted(os.listdir(final)) == ["b"] and os.listdir(tmp_path) == ["tile"]
