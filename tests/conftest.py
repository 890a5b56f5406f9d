from __future__ import annotations

import sys
from pathlib import Path

import os

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixtures import make_tile_arrays  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def shared_path(*parts: str) -> Path:
    """A file of ../shared/datasets, or skip the test saying what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} (see ../shared/datasets/README.md)")
    return p


@pytest.fixture
def tile_dir(tmp_path):
    from tessera.dpixel import write_tile
    return write_tile(tmp_path / "tile", **make_tile_arrays())


@pytest.fixture(scope="session")
def tiny_model():
    from tessera.infer import resolve_model
    model, _ = resolve_model(preset="tiny", seed=0)
    return model


def pytest_configure(config):
    # Under pytest-xdist every worker is its own process: one torch thread each, so workers do
    # not oversubscribe the cores.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"  # what the CLI's default --threads honours
        import torch
        torch.set_num_threads(1)
