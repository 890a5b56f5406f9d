"""Label-efficiency evaluation of TESSERA embeddings on the real WorldCereal extraction tables.

    .venv/bin/python scripts/eval_worldcereal.py [--checkpoint PATH] --out DIR

Tables (../shared/datasets/worldcereal/extractions): 2022_FRA_LPIS_POLY_110 (2 h3 cells),
2023_FRA_LPIS_POLY_110 (3 cells), 2017_UGA_SSD_public_extractions_wide (7 cells). Methods:
logistic regression and random forest on the embeddings, random forest on the raw time series, and
the majority class; leave-one-h3-cell-out folds; 1 / 10 / 100 % of the training labels; 5 seeds.
The protocol is documented in tessera/downstream/evaluate.py. Writes results.csv (one row per
table, method, fraction, seed and fold), summary.md and summary.json.

Without --checkpoint the shipped weights are used; when there are none, a RANDOMLY INITIALISED
model of --preset (default tiny), which is reported loudly in every output.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "worldcereal"
EXTRACTIONS = SHARED / "extractions"
LEGEND = SHARED / "legend" / "ewoc_code_crop_type_class_mappings.csv"
TABLES = ("2022_FRA_LPIS_POLY_110.geoparquet", "2023_FRA_LPIS_POLY_110.geoparquet",
          "2017_UGA_SSD_public_extractions_wide.parquet")
BANNER = "!" * 78


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="model weights (default: the shipped ones, else a random init)")
    ap.add_argument("--preset", default=None,
                    help="model preset for the random init when no weights exist (default tiny)")
    ap.add_argument("--random-init", action="store_true",
                    help="the control: a seeded random init of --preset, ignoring shipped weights")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--data", type=Path, default=EXTRACTIONS, help="extraction tables folder")
    ap.add_argument("--tables", nargs="+", default=list(TABLES), help="table file names")
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (0..n-1)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    ap.add_argument("--min-count", type=int, default=10,
                    help="classes with fewer samples in a table become 'other'")
    ap.add_argument("--min-per-class", type=int, default=1,
                    help="labelled samples guaranteed per class present in a training pool")
    ap.add_argument("--n-estimators", type=int, default=200)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--raw-all-rows", action="store_true",
                    help="raw baseline on every row of a table, not only the evaluation year")
    ap.add_argument("--weight", choices=("fold", "sample"), default="fold",
                    help="aggregate folds equally (default) or by their test samples")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    from tessera import __version__
    from tessera.downstream.evaluate import evaluate_table
    from tessera.downstream.features import embed_samples, tessera_embedder
    from tessera.downstream.report import fraction_label, summary_dict, summary_markdown
    from tessera.downstream.tables import OTHER, load_class_names, load_table
    from tessera.infer import RANDOM_INIT_WARNING, resolve_model, shipped_checkpoint

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", flush=True)

    missing = [t for t in args.tables if not (args.data / t).exists()]
    if missing:
        print(f"real data not available: {args.data} lacks {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.random_init:
        if args.checkpoint:
            print("--random-init and --checkpoint exclude each other", file=sys.stderr)
            return 2
    checkpoint = args.checkpoint or (None if args.random_init else shipped_checkpoint())
    model, meta = resolve_model(args.checkpoint, args.preset, use_shipped=not args.random_init)
    random_init = bool(meta.get("random_init"))
    if random_init:
        model_desc = f"RANDOM INIT (preset {meta.get('preset')}, init seed {meta.get('init_seed')})"
        print(f"{BANNER}\n!! {RANDOM_INIT_WARNING}\n!! evaluating {model_desc}: these numbers "
              f"say nothing about trained TESSERA\n{BANNER}", flush=True)
    else:
        model_desc = f"{checkpoint} (preset {meta.get('preset')})"
    log(f"model: {model_desc}")

    names = load_class_names(LEGEND)
    tables = []
    for name in args.tables:
        t = load_table(args.data / name, min_count=args.min_count, class_names=names)
        info = t.info()
        log(f"{t.name}: {len(t)} samples, year {t.year}, {len(info['cells'])} cells, "
            f"{len(info['classes'])} classes (incl. 'other': "
            f"{sum(c['count'] for c in info['classes'] if c['class'] == OTHER)} samples)")
        tables.append(t)

    embed = tessera_embedder(model, device=args.device)
    seeds = list(range(args.seeds))
    frames, counts = [], {}
    for t in tables:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="fill_missing")  # B8A from B08, documented
            emb = embed_samples(t, embed)
        counts[t.name] = {"flagged": int((emb.flags != 0).sum()),
                          "no_embedding": int(emb.missing.sum())}
        log(f"{t.name}: embedded in {emb.seconds:.1f} s; {counts[t.name]['flagged']} samples "
            f"flagged (no valid S2 or S1: predicted normally), {counts[t.name]['no_embedding']} "
            "without an embedding (counted as errors)")
        frames.append(evaluate_table(
            t, embeddings=emb, fractions=args.fractions, seeds=seeds,
            min_per_class=args.min_per_class, n_estimators=args.n_estimators,
            n_jobs=args.n_jobs, raw_all_rows=args.raw_all_rows, log=log))
    import pandas as pd
    results = pd.concat(frames, ignore_index=True)
    elapsed = time.perf_counter() - t_start

    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / "results.csv", index=False)
    table_md = summary_markdown(results, weight=args.weight)
    header = ["# WorldCereal label-efficiency evaluation", ""]
    if random_init:
        header += [f"> **WARNING: {RANDOM_INIT_WARNING}.** Model: {model_desc}. The embedding rows "
                   "measure an untrained network, not TESSERA.", ""]
    header += [
        f"Model: {model_desc}. tessera-eo {__version__}, Python {platform.python_version()}.",
        f"Protocol (tessera/downstream/evaluate.py): leave-one-h3_l3_cell-out folds; "
        f"{', '.join(fraction_label(f) for f in args.fractions)} of each fold's training "
        f"samples (stratified, >= {args.min_per_class} per class present, nested across "
        f"fractions); seeds {seeds[0]}..{seeds[-1]}; classes with < {args.min_count} samples "
        f"-> 'other'. Cell: mean ± std over seeds of the per-seed mean over folds "
        f"({'folds weighted equally' if args.weight == 'fold' else 'folds weighted by test size'}"
        f"), accuracy and macro F1 on the held-out cell. `majority` predicts the most frequent "
        f"class of the labelled subset.",
        f"Runtime {elapsed:.0f} s.", ""]
    notes = ["", "Samples with a model flag (no valid S2 or S1 observation; embedded and predicted "
             "like the others) and without an embedding (scored as errors when tested):", ""]
    notes += [f"- {name}: {c['flagged']} flagged, {c['no_embedding']} without an embedding"
              for name, c in counts.items()]
    text = "\n".join(header) + "\n" + table_md + "\n".join(notes) + "\n"
    (args.out / "summary.md").write_text(text)
    summary = summary_dict(
        results, weight=args.weight, model=model_desc, random_init=random_init,
        checkpoint=str(checkpoint) if checkpoint and not random_init else None,
        preset=meta.get("preset"), seeds=seeds, fractions=args.fractions,
        min_count=args.min_count, min_per_class=args.min_per_class,
        n_estimators=args.n_estimators, raw_all_rows=args.raw_all_rows,
        runtime_s=round(elapsed, 1),
        tables=[{**t.info(), **counts[t.name]} for t in tables],
        software=f"tessera-eo {__version__}")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print()
    print(table_md)
    if random_init:
        print(f"{BANNER}\n!! RANDOM-INIT WEIGHTS: the embedding rows above measure an untrained "
              f"network\n{BANNER}")
    log(f"wrote {args.out}/results.csv, summary.md, summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
