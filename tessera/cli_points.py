"""`tessera embed-points`: embed a long point table (CSV / GeoParquet) to a Parquet table.

Wired into the main app with `register(app)`. Bad input ends with a one-line `error: ...` on
stderr and exit code 2, never a traceback (`TESSERA_DEBUG=1` shows it).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from tessera.cli_errors import warn
from tessera.cli_errors import fail

_out = Console(soft_wrap=True, highlight=False)


def _parse_nodata(values: Optional[List[str]]) -> tuple[float, ...]:
    out: list[float] = []
    for v in values or []:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(float(part))
            except ValueError:
                raise ValueError(f"--nodata {part!r}: expected a number such as 65535") from None
    return tuple(out)


def _parse_rename(values: Optional[List[str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or []:
        if "=" not in v:
            raise ValueError(f"--rename {v!r}: expected OLD=NEW, e.g. --rename red=B04")
        old, new = v.split("=", 1)
        if not old or not new:
            raise ValueError(f"--rename {v!r}: expected OLD=NEW, e.g. --rename red=B04")
        out[old] = new
    return out


def register(app: typer.Typer) -> None:
    """Add the `embed-points` command to `app`."""

    @app.command("embed-points")
    def embed_points(
        input: Path = typer.Argument(..., help="Long table: CSV or (Geo)Parquet, one row per "
                                     "(sample_id, date), one column per band."),
        output: Path = typer.Option(..., "-o", "--output", help="Output Parquet file."),
        checkpoint: Optional[Path] = typer.Option(None, help="Model checkpoint."),
        preset: Optional[str] = typer.Option(None, help="Model preset (tiny, small, v1) when "
                                             "no checkpoint is given."),
        s2_scale: str = typer.Option("x10000", help="S2 values: x10000 (reflectance x 10 000) "
                                     "or reflectance (float 0-1)."),
        s1_encoding: str = typer.Option("db", help="S1 values: db (10 log10 power), linear "
                                        "(power), int16 (TESSERA code) or amplitude (DN)."),
        s1_offset: Optional[float] = typer.Option(None, help="With --s1-encoding amplitude: "
                                                  "dB = 20 log10(DN) + offset (default -83, "
                                                  "WorldCereal)."),
        nodata: Optional[List[str]] = typer.Option(None, help="Band value meaning missing, "
                                                   "e.g. 65535 (repeatable or comma-separated)."),
        rename: Optional[List[str]] = typer.Option(None, help="OLD=NEW: read your column OLD "
                                                   "as band NEW (repeatable)."),
        s2_pattern: Optional[str] = typer.Option(None, help="S2 column name pattern, e.g. "
                                                 "'S2-L2A-{band}'."),
        s1_pattern: Optional[str] = typer.Option(None, help="S1 column name pattern, e.g. "
                                                 "'S1-SIGMA0-{pol}'."),
        year: Optional[int] = typer.Option(None, help="Keep the rows of this calendar year "
                                           "(needed when the dates span several years)."),
        fill_missing: bool = typer.Option(False, "--fill-missing", help="Fill absent or "
                                          "all-nodata S2 bands from their spectral neighbours "
                                          "(tessera.table.FILL_RULES), with a warning."),
        int8: bool = typer.Option(False, "--int8", help="Write int8 embeddings + a float32 "
                                  "scale column instead of float32."),
        sampling: str = typer.Option("all", help="all (deterministic, every valid observation) "
                                     "or v1 (published 40 + 40 seeded draws)."),
        seed: int = typer.Option(0, help="Seed of the v1 draws."),
        batch_size: Optional[int] = typer.Option(None, help="Samples per forward pass at 40 "
                                                 "steps (default: 64 on CPU, 1024 on GPU)."),
        device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
        id_column: str = typer.Option("sample_id", help="Sample id column."),
        date_column: Optional[str] = typer.Option(None, help="Date column (default: date, "
                                                  "timestamp or time)."),
    ) -> None:
        """Embed point samples of a long table (one row per sample and date) to a Parquet
        table: sample id, emb_000..emb_127, flags, valid S2 / S1 observation counts."""
        from tessera.table import TableError, TableOptions, embed_points_file

        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                opts = TableOptions(
                    s2_scale=s2_scale, s1_encoding=s1_encoding, s1_offset=s1_offset,
                    nodata=_parse_nodata(nodata), rename=_parse_rename(rename),
                    s2_pattern=s2_pattern, s1_pattern=s1_pattern, year=year,
                    fill_missing=fill_missing, id_column=id_column, date_column=date_column)
                summary = embed_points_file(
                    input, output, checkpoint=checkpoint, preset=preset, options=opts,
                    sampling=sampling, seed=seed, batch_size=batch_size, device=device,
                    int8=int8)
        except (TableError, FileNotFoundError, ValueError, OSError) as exc:
            _print_warnings(caught)
            if os.environ.get("TESSERA_DEBUG"):
                raise
            fail(str(exc) or type(exc).__name__)
        _print_warnings(caught)
        flagged = summary.flagged_samples
        _out.print(f"[bold]embed-points[/]: {summary.samples} samples from {summary.rows} rows "
                   f"({summary.s2_observations} S2 + {summary.s1_observations} S1 observations)"
                   f"; {flagged} flagged sample{'s' if flagged != 1 else ''} (no valid S2 or "
                   f"S1); {summary.seconds:.1f} s")
        _out.print(f"wrote {escape(str(summary.output))}")


def _print_warnings(caught: list) -> None:
    seen = set()
    for w in caught:
        text = " ".join(str(w.message).split())
        if text in seen or not issubclass(w.category, UserWarning):
            continue
        seen.add(text)
        warn(text)
