"""How many CPU threads this process should use: what it may run on (its CPU affinity, which
containers and `taskset` restrict), capped by `OMP_NUM_THREADS` when that is set. On a shared
machine asking for more threads than that makes them fight each other and other processes."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may use (at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return max(1, n)


__all__ = ["available_cpus"]
