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
