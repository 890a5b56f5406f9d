"""What every command shares: user errors end in one line and exit 2, bugs in one line that
says so and exit 70 (TESSERA_DEBUG=1 shows the traceback), Ctrl-C in 130, library warnings as
`warning:` lines; --version; the shared region options; progress bars from library callbacks."""

from __future__ import annotations

import errno
import warnings

import pytest
import typer
from typer.testing import CliRunner

from tessera import __version__
from tessera.cli import app
from tessera.cli.common import Bars, command, region_of
from tessera.errors import GridError, InputError, RegionError, TesseraError


def _app(fn):
    """A one-command app running `fn` under the shared error handling."""
    a = typer.Typer()
    a.command()(command(fn))

    @a.command("other")  # a second command, so typer keeps the first as a sub-command
    def _other() -> None:
        pass
    return a


def invoke(fn, env=None):
    return CliRunner().invoke(_app(fn), ["main" if fn.__name__ == "main" else fn.__name__],
                              env=env)


def test_user_errors_are_one_line_exit_2():
    def main() -> None:
        raise InputError("table.csv: column 'lon', row 3: 'abc' is not a number\nsecond line")
    res = invoke(main)
    assert res.exit_code == 2
    assert res.output.strip() == "error: table.csv: column 'lon', row 3: 'abc' is not a number"
    assert issubclass(InputError, (TesseraError, ValueError))


def test_os_errors_about_files_are_user_errors():
    def main() -> None:
        open("/nonexistent/folder/file.txt")  # noqa: SIM115
    res = invoke(main)
    assert res.exit_code == 2 and "/nonexistent/folder/file.txt" in res.output
    assert "No such file" in res.output and "Traceback" not in res.output

    def main() -> None:  # noqa: F811
        raise OSError(errno.ENOSPC, "No space left on device")
    res = invoke(main)
    assert res.exit_code == 2 and "No space left" in res.output


@pytest.mark.parametrize("exc", [KeyError("x"), TypeError("bad call"), ValueError("plain"),
                                 OSError("no errno"), RuntimeError("boom")])
def test_bugs_say_so_in_one_line_and_exit_70(exc):
    def main() -> None:
        raise exc
    res = invoke(main)
    out = " ".join(res.output.split())
    assert res.exit_code == 70, res.output
    assert out.startswith("error: internal error (a bug in tessera-eo")
    assert type(exc).__name__ in out and "TESSERA_DEBUG=1" in out and "Traceback" not in out


def test_debug_shows_the_traceback():
    def main() -> None:
        raise KeyError("x")
    res = invoke(main, env={"TESSERA_DEBUG": "1"})
    assert isinstance(res.exception, KeyError)  # re-raised, not turned into a message


def test_ctrl_c_exits_130():
    def main() -> None:
        raise KeyboardInterrupt
    res = invoke(main)
    assert res.exit_code == 130 and "interrupted" in res.output


def test_library_warnings_are_warning_lines():
    def main() -> None:
        warnings.warn("3 of 4 tiles are absent", UserWarning, stacklevel=1)
        warnings.warn("internal detail", DeprecationWarning, stacklevel=1)
    res = invoke(main)
    assert res.exit_code == 0
    assert "warning: 3 of 4 tiles are absent" in res.output
    assert "internal detail" not in res.output


def test_version():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"tessera-eo {__version__}"


def test_help_shows_no_python_types_for_flags():
    res = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "140"})
    assert res.exit_code == 0
    assert "<bool>" not in res.output and "<str>" not in res.output
    assert "W,S,E,N" in res.output and "--resolution" in res.output


def test_region_options(tmp_path):
    assert region_of("5.9, 44.9,6.1,45.1", None, None) == (5.9, 44.9, 6.1, 45.1)
    assert region_of(None, None, ["grid_6.05_45.05"]) == ["grid_6.05_45.05"]
    with pytest.raises(RegionError, match="four numbers"):
        region_of("5.9,44.9,6.1", None, None)
    with pytest.raises(RegionError, match="four numbers"):
        region_of("5.9,44.9,nan,45.1", None, None)
    with pytest.raises(RegionError, match="not found"):
        region_of(None, tmp_path / "nope.geojson", None)
    with pytest.raises(GridError):
        region_of(None, None, ["grid_6.1_45.05"])
    with pytest.raises(typer.Exit):
        region_of("5.9,44.9,6.1,45.1", None, ["grid_6.05_45.05"])


@pytest.mark.parametrize("command_name", ["download", "export", "visualize"])
def test_region_options_are_the_same_everywhere(command_name):
    res = CliRunner().invoke(app, [command_name, "--help"], env={"COLUMNS": "140"})
    for opt in ("--bbox", "--region", "--tile"):
        assert opt in res.output, (command_name, opt)


def test_bars_draw_library_progress():
    with Bars(enabled=True) as bars:
        t = bars.task("embedding x", total=10, unit="px")
        t.advance(4)
        t.advance(6, info="done")
        t2 = bars.task("download", total=2_000_000, unit="B")
        t2.update(completed=1_000_000)
    tasks = bars.bar.tasks
    assert tasks[0].completed == 10 and tasks[0].fields["info"] == "done"
    assert tasks[1].completed == 1_000_000 and tasks[1].fields["unit"] == "B"
