"""Fixtures of the picture tests; their helpers are in viz_world.py beside this file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from viz_world import build_store  # noqa: E402


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """Two SIMULATED tiles on both sides of the UTM zone 31/32 border, years 2021 and 2022."""
    return build_store(tmp_path_factory.mktemp("vizstore"))
