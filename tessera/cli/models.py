"""`tessera models`: the registered models (`tessera.model.registry`), without importing torch."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from tessera.cli.common import command, out

if TYPE_CHECKING:
    from tessera.model.registry import ModelSpec


def _architecture(spec: ModelSpec) -> str:
    c = spec.config
    if c is None:
        return "sizes from the checkpoint's args"
    fusion = "Linear" if c.fusion == "linear" else "MLP"
    pool = "GRU + attention" if c.pooling == "gru" else "attention"
    return (f"d {c.d_model}, {c.n_layers} layers x {c.n_heads} heads, FFN {c.ffn_dim}, {pool} "
            f"pool, {fusion} fusion to {c.latent_dim}" + (", LayerNorm" if c.final_norm else ""))


@command
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a "
                                        "table.")) -> None:
    """The models `embed`, `embed-points` and `embed --store` accept (--model ID): every
    published TESSERA model and our CPU-sized presets, with their architecture, statistics,
    sampling, output width, upstream file and parameter count."""
    from tessera.model.registry import MODELS

    rows: list[dict[str, Any]] = [{"id": m.id, "family": m.family, "title": m.title,
             "architecture": _architecture(m), "statistics": m.stats,
             "sampling": list(m.sampling), "dims": list(m.dims), "parameters": m.params,
             "upstream_file": m.upstream_file, "source": m.source, "notes": m.notes}
            for m in MODELS.values()]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    from rich.table import Table

    table = Table(title="registered models (--model ID)")
    for col in ("id", "family", "parameters", "output", "statistics", "sampling"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(r["id"], r["family"], r["parameters"],
                      "/".join(map(str, r["dims"])) + " dims", r["statistics"],
                      ", ".join(r["sampling"]))
    out.print(table)
    for r in rows:
        out.print(f"{r['id']}: {r['title']}")
        out.print(f"  architecture: {r['architecture']}")
        out.print("  weights: " + (f"{r['upstream_file']} ({r['source']})" if r["source"]
                                   else "ours (tessera pretrain; tiny is shipped)"))
        if r["notes"]:
            out.print(f"  note: {r['notes']}")
