"""What every command shares: the two consoles, how errors end a command, the progress bars,
and the option definitions (so an option means and reads the same in every command).

Errors. A `TesseraError` (bad input, missing data, an output in the way; see `tessera.errors`)
and an operating-system error about a file (not found, no permission, no space) end the command
with one line `error: ...` on stderr and exit code 2. Anything else is a bug in tessera: one
line saying so, exit code 70, and `TESSERA_DEBUG=1` shows the traceback. Ctrl-C exits with 130.
Warnings of the library (`UserWarning`, `RuntimeWarning`) are shown as `warning: ...` lines.

Results go to stdout (`out`); errors, warnings and progress bars to stderr (`err`), so a
command's output can be piped.
"""

from __future__ import annotations

import errno
import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TextIO, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from tessera.errors import RegionError, TesseraError

if TYPE_CHECKING:
    from tessera.geo.region import BBox

out = Console(soft_wrap=True, highlight=False, markup=False)  # paths may hold [brackets]
err = Console(stderr=True, soft_wrap=True, highlight=False)

#: Exit codes: 2 for anything the user can fix, 70 (EX_SOFTWARE) for a bug, 130 for Ctrl-C.
EXIT_USER, EXIT_BUG, EXIT_INTERRUPTED = 2, 70, 130
#: OS errors that are about the user's files or machine, not about tessera's code.
ENVIRONMENT_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT,
                      errno.EROFS, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ELOOP,
                      errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE, errno.EIO, errno.EXDEV,
                      errno.ECONNREFUSED, errno.EADDRINUSE, errno.EADDRNOTAVAIL}
BUG_REPORTS = "https://github.com/ucam-eo/tessera/issues"


def one_line(message: object) -> str:
    return " ".join(str(message).split())


def warn(message: object) -> None:
    """One `warning: ...` line on stderr."""
    err.print(f"[bold yellow]warning:[/] {escape(one_line(message))}")


def fail(message: object, code: int = EXIT_USER) -> NoReturn:
    """End the command: `error: ...` on stderr, exit `code`."""
    err.print(f"[bold red]error:[/] {escape(one_line(message) or 'failed')}")
    raise typer.Exit(code)


def user_message(exc: BaseException) -> str | None:
    """The one-line message of an error the user can fix, or None for a bug."""
    if isinstance(exc, TesseraError):
        lines = str(exc).strip().splitlines()
        return lines[0] if lines else type(exc).__name__
    if isinstance(exc, OSError):
        if exc.errno in ENVIRONMENT_ERRNOS:
            if exc.filename is not None:
                return f"{exc.filename}: {exc.strerror}"
            return one_line(exc)
        if type(exc).__module__.split(".")[0] == "rasterio":  # GDAL could not read / write a file
            return one_line(exc)
    return None


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    if issubclass(category, (UserWarning, RuntimeWarning)):
        warn(message)


P = ParamSpec("P")
R = TypeVar("R")


def command(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a command with the error handling and warning display of the module docstring."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except KeyboardInterrupt:
            if os.environ.get("TESSERA_DEBUG"):
                raise
            err.print("[bold red]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if os.environ.get("TESSERA_DEBUG"):
                raise
            msg = user_message(exc)
            if msg is not None:
                fail(msg)
            from tessera import __version__
            fail(f"internal error (a bug in tessera-eo {__version__}, not in your input): "
                       f"{type(exc).__name__}: {one_line(exc)}; rerun with TESSERA_DEBUG=1 for "
                       f"the traceback and report it at {BUG_REPORTS}", EXIT_BUG)
    return wrapper


# --- progress bars ------------------------------------------------------------------------------

class _Count(ProgressColumn):
    """`done/total unit` (bytes as kB / MB / GB)."""

    def render(self, task: Task) -> Text:
        from rich.filesize import decimal
        unit = task.fields.get("unit", "")
        if unit == "B":
            done = decimal(int(task.completed))
            return Text(f"{done}/{decimal(int(task.total))}" if task.total else done)
        total = f"/{task.total:,.0f}" if task.total is not None else ""
        return Text(f"{task.completed:,.0f}{total} {unit}".rstrip())


class _Rate(ProgressColumn):
    """Throughput: `123 px/s`, `4.5 MB/s`."""

    def render(self, task: Task) -> Text:
        from rich.filesize import decimal
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("")
        unit = task.fields.get("unit", "")
        if unit == "B":
            return Text(f"{decimal(int(speed))}/s")
        return Text(f"{speed:,.1f} {unit or 'it'}/s" if speed < 10 else f"{speed:,.0f} {unit or 'it'}/s")


class _Task:
    def __init__(self, bar: Progress, task_id: TaskID) -> None:
        self.bar, self.id = bar, task_id

    def advance(self, n: float = 1, info: str | None = None) -> None:
        if info is not None:
            self.bar.update(self.id, info=info)
        self.bar.advance(self.id, n)

    def update(self, *, completed: float | None = None, total: float | None = None,
               info: str | None = None) -> None:
        fields: dict[str, Any] = {} if info is None else {"info": info}
        if total is not None:
            fields["total"] = total
        self.bar.update(self.id, completed=completed, **fields)


class Bars:
    """A `tessera.progress.Progress` drawing rich bars on stderr: description, bar, count,
    throughput, elapsed time, ETA and a short status text. Use as a context manager; with
    `enabled=False` it draws nothing."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), _Count(), _Rate(),
                            TimeElapsedColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), console=err, transient=False,
                            disable=not enabled, refresh_per_second=4)

    def __enter__(self) -> Bars:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def task(self, description: str, total: float | None = None, unit: str = "") -> _Task:
        return _Task(self.bar, self.bar.add_task(description, total=total, unit=unit, info=""))


# --- shared options -----------------------------------------------------------------------------

def store_option() -> Any:
    return typer.Option(..., "--store", "-s", envvar="TESSERA_STORE", metavar="STORE",
                        help="Store: a directory or an http(s):// URL (`tessera serve`); "
                             "default $TESSERA_STORE.")


def store_option_optional() -> Any:
    return typer.Option(None, "--store", "-s", envvar="TESSERA_STORE", metavar="STORE",
                        help="Store (a directory or URL) or a folder of `tessera embed` "
                             "outputs, for labels without embeddings; default $TESSERA_STORE.")


def dataset_version_option() -> Any:
    return typer.Option(None, "--dataset-version", metavar="DATASET",
                        help="Which dataset of a GeoTessera mirror holding several (e.g. v1, "
                             "v1.1-cam).")


def cache_option() -> Any:
    return typer.Option(None, "--cache", metavar="DIR",
                        help="Download cache of an HTTP store (default: $TESSERA_CACHE or "
                             "~/.cache/tessera).")


def year_option(required: bool = True) -> Any:
    return typer.Option(... if required else None, "--year", metavar="YEAR",
                        help="Calendar year.")


def bbox_option() -> Any:
    return typer.Option(None, "--bbox", metavar="W,S,E,N",
                        help="Region: west,south,east,north in degrees (west > east crosses the "
                             "antimeridian).")


def region_option() -> Any:
    return typer.Option(None, "--region", metavar="FILE",
                        help="Region: a polygon file (GeoJSON, or GeoPackage with "
                             "tessera-eo\\[vector]).")


def tile_option() -> Any:
    return typer.Option(None, "--tile", metavar="NAME",
                        help="Region: a 0.1 degree grid tile grid_{lon}_{lat} (repeatable).")


def progress_option() -> Any:
    return typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr.")


def threads_option() -> Any:
    return typer.Option(None, "--threads", metavar="N", min=1,
                        help="CPU threads (default: the CPUs this process may use, honouring "
                             "OMP_NUM_THREADS and the CPU affinity).")


def overwrite_option() -> Any:
    return typer.Option(False, "--overwrite", help="Replace an existing output.")


def region_of(bbox: str | None, region: Path | None, tiles: list[str] | None
              ) -> BBox | Path | list[str]:
    """Exactly one of --bbox / --region / --tile -> what `tessera.geo.Region.parse` reads (a
    bbox tuple, a polygon file path, a list of tile names)."""
    from tessera.geo import parse_bbox, parse_tile_name

    given = [x for x in (bbox, region, tiles) if x]
    if len(given) != 1:
        fail("give exactly one of --bbox W,S,E,N, --region FILE and --tile NAME")
    if bbox:
        return parse_bbox(bbox)
    if region:
        if not region.exists():
            raise RegionError(f"{region}: region file not found")
        return region
    return [parse_tile_name(t).name for t in tiles or []]


def need(module: str, extra: str, feature: str) -> None:
    """Stop with `error: ... pip install 'tessera-eo[extra]'` when an extra is missing."""
    from tessera.errors import require
    require(module, extra, feature)


__all__ = ["EXIT_BUG", "EXIT_INTERRUPTED", "EXIT_USER", "Bars", "bbox_option", "cache_option",
           "command", "err", "fail", "need", "out", "overwrite_option", "progress_option",
           "store_option_optional",
           "region_of", "region_option", "store_option", "threads_option",
           "tile_option", "user_message", "warn", "year_option"]
