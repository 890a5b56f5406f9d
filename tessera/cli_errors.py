"""One way to end a command on bad input: a one-line `error: ...` on stderr, exit code 2.

`TESSERA_DEBUG=1` re-raises instead, for bug reports with a traceback.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, soft_wrap=True, highlight=False)

#: Exceptions that mean "bad input" (TileFormatError, TableError, checkpoint errors are
#: ValueErrors).
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError,
               OSError)


def warn(message: str) -> None:
    """One `warning: ...` line on stderr."""
    console.print(f"[bold yellow]warning:[/] {escape(' '.join(str(message).split()))}")


def fail(message: str, code: int = 2) -> None:
    text = " ".join(str(message).split()) or "failed"
    console.print(f"[bold red]error:[/] {escape(text)}")
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """Turn bad-input exceptions raised by a command into `fail(first line of the message)`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except USER_ERRORS as exc:
            if os.environ.get("TESSERA_DEBUG"):
                raise
            lines = str(exc).strip().splitlines()
            fail(lines[0] if lines else type(exc).__name__)
    return wrapper
