"""The `tessera` command line (typer + rich): one module per group of commands, each command a
module-level function; `common` holds what they share (errors, progress bars, options).

    embed.py       embed, embed-points            (needs tessera-eo[model])
    models.py      models
    simulate.py    simulate, demo
    preprocess.py  preprocess                     (needs tessera-eo[preprocess])
    run.py         run, plan                      (needs tessera-eo[scale])
    train.py       shards, pretrain               (needs tessera-eo[train])
    store.py       download, sample, export, serve, store check / publish / import
    viz.py         visualize, coverage
    head.py        head train / evaluate / predict (needs tessera-eo[eval])

Commands import their heavy dependencies inside their bodies, so `tessera --help` and the store
commands start without torch, dask or scikit-learn.
"""

from __future__ import annotations

from typing import Any, Optional

import typer
import typer.core

from tessera.cli import embed, head, models, preprocess, run, simulate, store, train, viz
from tessera.cli.common import command, out

def _flag_types_hidden() -> None:
    """Typer >= 0.20 prints a flag's Python type in help (`--overwrite <bool>`), which reads as
    if the flag took a value; show nothing there, as click does."""
    option = getattr(typer.core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if option is None or shown is None or getattr(shown, "_tessera", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich._tessera = True  # type: ignore[attr-defined]  # a marker: patched once
    option.display_type_rich = display_type_rich


_flag_types_hidden()
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="TESSERA: pixel-wise Sentinel-1/2 embeddings. Preprocess rasters into "
                       "d-pixel tiles, embed them, pretrain models, and read, export and "
                       "picture embedding stores (local or over HTTP).")


def _version(value: bool) -> None:
    if value:
        from tessera import __version__
        out.print(f"tessera-eo {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Optional[bool] = typer.Option(None, "--version", callback=_version,
                                                 is_eager=True, help="Show the version and "
                                                 "exit.")) -> None:
    pass


@command
def info() -> None:
    """Version, shipped weights, model presets and compute devices."""
    from tessera import __version__
    from tessera.cpus import available_cpus

    out.print(f"tessera-eo {__version__}; {available_cpus()} CPU threads available")
    try:
        import torch
    except ImportError:
        out.print("model: not installed (pip install 'tessera-eo[model]' to embed and train)")
        return
    from rich.table import Table

    from tessera.infer import shipped_checkpoint
    from tessera.model import PRESETS, TesseraModel

    out.print(f"torch {torch.__version__}")
    shipped = shipped_checkpoint()
    out.print(f"shipped weights: {shipped if shipped else 'none (random init until trained)'}")
    table = Table(title="presets")
    for col in ("preset", "d_model", "layers", "heads", "ffn", "parameters (no projector)"):
        table.add_column(col)
    with torch.device("meta"):
        for name, cfg in PRESETS.items():
            n = TesseraModel(cfg).num_parameters()
            table.add_row(name, str(cfg.d_model), str(cfg.n_layers), str(cfg.n_heads),
                          str(cfg.ffn_dim), f"{n / 1e6:.2f} M")
    out.print(table)
    devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                         for i in range(torch.cuda.device_count())]
    out.print("devices: " + ", ".join(devices))


app.command()(embed.embed)
app.command("embed-points")(embed.embed_points)
app.command()(simulate.simulate)
app.command()(simulate.demo)
app.command()(info)
app.command()(models.models)
app.command()(preprocess.preprocess)
app.command()(run.run)
app.command()(run.plan)
app.command()(train.shards)
app.command()(train.pretrain)
app.command()(store.download)
app.command()(store.sample)
app.command()(store.export)
app.command()(viz.visualize)
app.command()(viz.coverage)
app.command()(store.serve)
store_app = typer.Typer(help="Inspect a store.", no_args_is_help=True, rich_markup_mode="rich")
store_app.command("check")(store.check)
store_app.command("publish")(store.publish)
store_app.command("import")(store.import_)
app.add_typer(store_app, name="store")
head_app = typer.Typer(help="Heads on embeddings: train, evaluate, predict maps (needs "
                            "tessera-eo[eval]).", no_args_is_help=True, rich_markup_mode="rich")
head_app.command("train")(head.train)
head_app.command("evaluate")(head.evaluate)
head_app.command("predict")(head.predict)
app.add_typer(head_app, name="head")


def main() -> None:
    app(prog_name="tessera")


__all__ = ["app", "main"]
