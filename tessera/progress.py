"""Progress of long operations, reported by library code and drawn by whoever called it.

Library functions that take a while accept `progress: Progress | None` and report through it;
they never draw anything themselves. The command line passes an implementation that draws rich
progress bars (`tessera.cli.common`); a notebook can pass its own (tqdm, logging); None reports
nothing. Reports come often (every forward batch, every file chunk), so a bar keeps moving even
when one chunk of work is slow.
"""

from __future__ import annotations

from typing import Protocol


class Task(Protocol):
    """One bar: advanced as work is done."""

    def advance(self, n: float = 1, info: str | None = None) -> None:
        """`n` more units done; `info` replaces the bar's short status text."""
        ...

    def update(self, *, completed: float | None = None, total: float | None = None,
               info: str | None = None) -> None:
        """Set the amount done, the total (None = unknown) or the status text."""
        ...


class Progress(Protocol):
    """Makes bars. `unit` names what is counted ("px", "B" for bytes, "" for steps)."""

    def task(self, description: str, total: float | None = None, unit: str = "") -> Task:
        ...


class _NullTask:
    def advance(self, n: float = 1, info: str | None = None) -> None:
        pass

    def update(self, *, completed: float | None = None, total: float | None = None,
               info: str | None = None) -> None:
        pass


class NullProgress:
    """Reports nothing (what `progress=None` means)."""

    def task(self, description: str, total: float | None = None, unit: str = "") -> Task:
        return _NullTask()


def task(progress: Progress | None, description: str, total: float | None = None,
         unit: str = "") -> Task:
    """A bar of `progress`, or one that reports nothing when `progress` is None (or False)."""
    return (progress or NullProgress()).task(description, total, unit)


__all__ = ["NullProgress", "Progress", "Task", "task"]
