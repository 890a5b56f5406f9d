"""Shared fixtures; tests/ is put on the import path for the helper modules beside this file
(fixtures.py, http_server.py, store_world.py, fault_world.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixtures import SHARED, make_tile_arrays, shared_path  # noqa: E402,F401


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


# --- the fault suite's counts (tests/faults/), reported by the controlling process -------------

_FAULTS = {"tried": 0, "handled": 0, "skipped": 0}


def pytest_runtest_logreport(report):
    if "tests/faults/" not in report.nodeid.replace("\\", "/"):
        return
    if report.when == "call" or (report.when == "setup" and report.skipped):
        if report.skipped:
            _FAULTS["skipped"] += 1
        else:
            _FAULTS["tried"] += 1
            _FAULTS["handled"] += report.passed
    elif report.when == "setup" and report.failed:
        _FAULTS["tried"] += 1


def pytest_terminal_summary(terminalreporter):
    if _FAULTS["tried"] or _FAULTS["skipped"]:
        terminalreporter.write_line(
            f"fault suite: {_FAULTS['tried']} cases tried, {_FAULTS['handled']} handled"
            + (f", {_FAULTS['skipped']} skipped (see -rs for why)" if _FAULTS["skipped"] else ""))
