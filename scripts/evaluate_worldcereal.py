"""Label-efficiency numbers of a checkpoint on the real WorldCereal extraction tables.

    .venv/bin/python scripts/evaluate_worldcereal.py [--checkpoint PATH] --out DIR

Tables: 2022_FRA, 2023_FRA and 2017_UGA_SSD (none of them seen in pretraining). Methods:
logistic regression and random forest on the embeddings of the checkpoint (default: the shipped
weights), the same on a RANDOMLY INITIALISED tiny model (a control: what the architecture gives
without training), and a random forest on the raw time series. Protocol:
tessera/downstream/label_efficiency.py. Writes results.csv, summary.csv and summary.md.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXTRACTIONS = ROOT.parent / "shared" / "datasets" / "worldcereal" / "extractions"
TABLES = ("2022_FRA_LPIS_POLY_110.geoparquet", "2023_FRA_LPIS_POLY_110.geoparquet",
          "2017_UGA_SSD_public_extractions_wide.parquet")


def embedder(model):
    from tessera.downstream.label_efficiency import TABLE_OPTIONS
    from tessera.table import embed_table, embedding_columns

    def features(t) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = embed_table(t.long, model=model, device="cpu", year=t.year, **TABLE_OPTIONS)
        out = out.set_index(out.columns[0]).reindex(t.sample_ids)
        return out[embedding_columns(model.config.latent_dim)].to_numpy(np.float32)
    return features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--no-control", action="store_true", help="skip the random-init control")
    args = ap.parse_args()

    from tessera.downstream import label_efficiency as le
    from tessera.infer import resolve_model

    missing = [t for t in TABLES if not (EXTRACTIONS / t).exists()]
    if missing:
        raise SystemExit(f"real data not available: {EXTRACTIONS} lacks {', '.join(missing)}")
    t0 = time.perf_counter()
    model, meta = resolve_model(args.checkpoint)
    name = "random init" if meta.get("random_init") else Path(meta.get("path", "?")).name
    print(f"model: {name} (preset {meta.get('preset')})")
    tables = [le.load_table(EXTRACTIONS / t) for t in TABLES]
    for t in tables:
        print(f"{t.name}: {len(t.sample_ids)} samples, year {t.year}, {len(set(t.cells))} cells, "
              f"{len(set(t.labels))} classes")
    features = {"emb": embedder(model), "raw": le.raw_features}
    methods = {"LR on embeddings": ("emb", "logreg"), "RF on embeddings": ("emb", "rf"),
               "RF on raw time series": ("raw", "rf")}
    if not args.no_control and not meta.get("random_init"):
        import torch

        from tessera.model import TesseraModel
        torch.manual_seed(0)
        features["random"] = embedder(TesseraModel(model.config).eval())
        methods["LR on random-init embeddings (control)"] = ("random", "logreg")
    results = le.evaluate(tables, features, methods, seeds=tuple(range(args.seeds)))
    summary = le.summarise(results)
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / "results.csv", index=False)
    summary.to_csv(args.out / "summary.csv", index=False)
    md = (f"Model: {name}; accuracy mean ± std over {args.seeds} seeds (macro F1), "
          f"leave-one-h3_l3_cell-out.\n\n" + le.markdown(summary))
    (args.out / "summary.md").write_text(md + "\n")
    print(md)
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
