"""The fault suite (`tests/faults/`): bad input to every command, processes killed at several
points, a burst of concurrent HTTP requests, a full and a read-only output location. The counts
of cases tried and handled are printed at the end of the run (tests/conftest.py)."""

from __future__ import annotations

import pytest
from fault_world import World, build


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    return build(tmp_path_factory.mktemp("world"))
