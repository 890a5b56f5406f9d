"""`tessera head train | evaluate | predict`: labels in, a trained head, an honest evaluation,
a map out (needs tessera-eo[eval]).

LABELS is what users have: points (CSV / GeoJSON / GeoParquet / GeoPackage with a label column),
polygons (every pixel inside, the polygon kept as the group), a label raster (fields = connected
components of one label), an embedded point table (`tessera embed-points --keep label`, no
store needed), or, for `evaluate`, a labelled point table of raw time series (the WorldCereal
extractions, long or WIDE): embedded here with --model, and the raw series give the baseline.
With --features COLUMNS, `train` and `evaluate` take plain numeric columns of a table instead of
embeddings (a sanity check of the heads, splits and reports on public tables; `--test-table` a
fixed test set).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from tessera.cli.common import (Bars, bbox_option, cache_option, command, dataset_version_option,
                                fail, need, out, overwrite_option, progress_option, region_of,
                                region_option, store_option_optional, tile_option)

if TYPE_CHECKING:

    from tessera.downstream.labels import Joined

HEAD_HELP = "logistic, random_forest, knn, gbm or mlp."
LABEL_HELP = ("Points (CSV/GeoJSON/GeoParquet/GeoPackage), polygons, a label raster (GeoTIFF) "
              "or an embedded point table.")


def _label_option() -> Any:
    return typer.Option("label", "--label", metavar="COLUMN", help="Label column.")


def _task_option() -> Any:
    return typer.Option(None, "--task", metavar="TASK", help="classification or regression "
                        "(default: from the labels).")


def _layer_option() -> Any:
    return typer.Option(None, "--layer", metavar="NAME", help="The layer of a GeoPackage, the "
                        "band of a label raster, or the label variable of a netCDF cube (e.g. "
                        "CT).")


def _features_option() -> Any:
    return typer.Option(None, "--features", metavar="COLUMNS", help="Score plain numeric "
                        "columns of a CSV / Parquet LABELS table instead of embeddings (no "
                        "store): names, a glob (ndvi_*) or a range (ndvi_000..ndvi_045), "
                        "comma-separated.")


def _params(items: Optional[list[str]]) -> dict[str, Any]:
    """--param KEY=VALUE (repeatable): values as JSON where they parse (numbers, true, lists),
    else text."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--param {item!r}: expected KEY=VALUE, e.g. --param n_estimators=300")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def _numbers(text: str, what: str, kind: type) -> list[Any]:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"{what} {text!r}: expected comma-separated {kind.__name__}s")
    if not values:
        fail(f"{what}: empty")
    return values


def _joined(labels_path: Path, store: Optional[str], year: Optional[int], label: str,
            group: Optional[str], task: Optional[str], bands: Optional[str],
            cache: Optional[Path], dataset: Optional[str], layer: Optional[str] = None
            ) -> tuple[Joined, list[int] | None]:
    """The labels of a file joined with their full-width embeddings (from the store, or the
    table's), and the --bands chosen among them (the head selects them itself, so it takes
    the store's full-width embeddings when it predicts)."""
    from tessera.dims import parse_bands
    from tessera.downstream.labels import join_embeddings, read_labels

    band: str | int | None = int(layer) if layer is not None and layer.isdigit() else layer
    labels = read_labels(labels_path, label=label, group=group, task=task, layer=band)
    if labels.embeddings is None:
        if store is None:
            fail(f"{labels_path}: {labels.kind} labels need embeddings: give --store (a store "
                 "or a folder of `tessera embed` outputs) and --year")
        if year is None:
            fail("--year is needed with a store")
    joined = join_embeddings(labels, store, year, dataset_version=dataset, cache_dir=cache)
    chosen = parse_bands(bands, joined.X.shape[1]) if bands is not None else None
    return joined, chosen


def _head_params(items: Optional[list[str]], kinds: list[str]) -> dict[str, dict[str, Any]]:
    """evaluate's --param HEAD.KEY=VALUE (repeatable): parameters per head kind, since one
    run scores several kinds."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in _params(items).items():
        kind, dot, name = key.partition(".")
        if not dot or not name:
            fail(f"--param {key}=...: expected HEAD.KEY=VALUE (evaluate scores several heads), "
                 "e.g. --param knn.n_neighbors=1")
        if kind not in kinds:
            fail(f"--param {key}=...: head {kind!r} is not among --heads {','.join(kinds)}")
        out.setdefault(kind, {})[name] = value
    return out


def _no_store_options(features: str, **given: Any) -> None:
    """--features reads everything from the table: options of the embedding paths refused."""
    used = [f"--{k.replace('_', '-')}" for k, v in given.items() if v]
    if used:
        fail(f"--features {features}: the features are table columns; leave out "
             f"{', '.join(used)} (options for embeddings)")


def _columns_mode(path: Path, features: str, test: Optional[Path], label: str,
                  group: Optional[str], task: Optional[str], split: Optional[str],
                  **embedding_options: Any) -> tuple[Any, ...]:
    """`evaluate --features`: X the table's columns, y its labels, groups / lon / lat when
    it has them, the fixed fold of a --test-table (else None) and the report's meta."""
    from tessera.downstream.feature_table import FEATURES, read_feature_table

    _no_store_options(features, **embedding_options)
    if test is not None and split not in (None, "holdout"):
        fail(f"--test-table {test} is the split: --split {split} does not apply")
    ft = read_feature_table(path, features, label=label, group=group, task=task, test=test)
    if split == "spatial" and ft.lon is None:
        fail(f"{path}: --split spatial needs lon and lat columns (degrees); the table has "
             "none (use --split grouped --group COLUMN or random)")
    if ft.filled:
        out.print("missing feature values filled with the training median: "
                  + ", ".join(f"{v} in {k}" for k, v in list(ft.filled.items())[:8])
                  + (" ..." if len(ft.filled) > 8 else ""))
    meta = {**ft.info(), "feature_set": FEATURES,
            "raw_baseline": "none: the table columns are the features (the majority / mean "
                            "reference is shown)"}
    return (ft.X, ft.y, ft.groups, ft.classes, ft.task, ft.lon, ft.lat,
            ft.holdout() if test is not None else None, meta)


def _train_on_columns(path: Path, features: str, output: Path, kind: str, label: str,
                      group: Optional[str], task: Optional[str], seed: int,
                      param: Optional[list[str]], overwrite: bool, progress: bool,
                      **embedding_options: Any) -> None:
    """`train --features`: a head on table columns; it records model `table-columns`, so
    `head predict` refuses every store's embeddings."""
    from tessera.downstream.feature_table import MODEL, read_feature_table
    from tessera.downstream.heads import make_head

    _no_store_options(features, **embedding_options)
    ft = read_feature_table(path, features, label=label, group=group, task=task)
    h = make_head(kind, ft.task, classes=ft.classes, seed=seed, model=MODEL, **_params(param))
    with Bars(progress) as bars:
        h.fit(ft.X, ft.y, progress=bars)
    h.info.extra.update({"labels": str(path), "label_column": label, **ft.info(),
                         "feature_columns": ft.columns})
    written = h.save(output, overwrite=overwrite)
    what = f"{len(ft.classes)} classes" if ft.task == "classification" else "regression"
    out.print(f"wrote {written}: {kind} head, {what}, {len(ft)} rows of {len(ft.columns)} "
              "table columns")


def _say_dropped(joined: Joined) -> None:
    gone = {k: v for k, v in joined.dropped.items() if v}
    if gone:
        out.print("labels without an embedding (left out): "
                  + ", ".join(f"{v} {k}" for k, v in gone.items()))


@command
def train(
    labels: Path = typer.Argument(..., metavar="LABELS", help=LABEL_HELP),
    output: Path = typer.Option(..., "-o", "--output", metavar="HEAD", help="The head file to "
                                "write (.skops for scikit-learn heads, .safetensors for mlp)."),
    store: Optional[str] = store_option_optional(),
    year: Optional[int] = typer.Option(None, "--year", metavar="YEAR", help="The embeddings' "
                                       "year (with --store)."),
    head: str = typer.Option("logistic", "--head", metavar="KIND", help=HEAD_HELP + " Or unet: "
                             "a UNet on patches of a label raster (--patch)."),
    label: str = _label_option(),
    group: Optional[str] = typer.Option(None, "--group", metavar="COLUMN", help="Group column "
                                        "(recorded; used by evaluate)."),
    task: Optional[str] = _task_option(),
    layer: Optional[str] = _layer_option(),
    bands: Optional[str] = typer.Option(None, "--bands", metavar="LIST", help="Embedding "
                                        "dimensions to use, e.g. 0-63."),
    features: Optional[str] = _features_option(),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the head."),
    param: Optional[list[str]] = typer.Option(None, "--param", metavar="KEY=VALUE",
                                              help="A head parameter (repeatable), e.g. "
                                              "n_estimators=300, epochs=50."),
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", metavar="FILE.tif",
                                              help="--head unet: a GeoTIFF of embeddings "
                                              "under the label raster (instead of --store)."),
    patch: Optional[int] = typer.Option(None, "--patch", metavar="PX", help="--head unet: "
                                        "the edge of the training patches (default 64)."),
    overwrite: bool = overwrite_option(),
    progress: bool = progress_option(),
    cache: Optional[Path] = cache_option(),
    dataset: Optional[str] = dataset_version_option(),
) -> None:
    """Train a head on labelled embeddings and save it (with the embedding model it needs).

    The saved head records the embedding model id, its width and bands, the class names and
    the training data's fingerprint; `head predict` refuses embeddings of another model.
    `--head unet` trains on patches of a label raster and the embeddings under it."""
    need("sklearn", "eval", "tessera head")
    from tessera.downstream.heads import make_head

    if head == "unet":
        _train_unet(labels, output, store, embeddings, year, task, layer, bands, seed,
                    _params(param), patch, overwrite, progress, cache, dataset,
                    features=features)
        return
    if embeddings is not None or patch is not None:
        fail(f"--embeddings / --patch are for --head unet; a {head} head takes labelled "
             "pixels from --store (a store or a folder of `tessera embed` outputs)")
    if features is not None:
        _train_on_columns(labels, features, output, head, label, group, task, seed, param,
                          overwrite, progress, store=store, bands=bands, layer=layer)
        return
    joined, chosen = _joined(labels, store, year, label, group, task, bands, cache, dataset,
                             layer)
    _say_dropped(joined)
    h = make_head(head, joined.task, classes=joined.classes, seed=seed, model=joined.model,
                  bands=chosen, **_params(param))
    with Bars(progress) as bars:
        h.fit(joined.X, joined.y, progress=bars)
    h.info.extra.update({"labels": str(labels), "label_column": label, "year": joined.year,
                         "store": str(store) if store else "", "weights": joined.weights,
                         "dropped": joined.dropped})
    path = h.save(output, overwrite=overwrite)
    what = (f"{len(joined.classes)} classes" if joined.task == "classification"
            else "regression")
    out.print(f"wrote {path}: {head} head, {what}, {len(joined)} samples of "
              f"{joined.model or 'an unrecorded model'} ({h.info.dims} dims)")


def _train_unet(labels: Path, output: Path, store: Optional[str], embeddings: Optional[Path],
                year: Optional[int], task: Optional[str], layer: Optional[str],
                bands: Optional[str], seed: int, params: dict[str, Any], patch: Optional[int],
                overwrite: bool, progress: bool, cache: Optional[Path],
                dataset: Optional[str], features: Optional[str] = None) -> None:
    """`train --head unet`: a label raster cut into patches with the embeddings under it
    (`tessera.downstream.patches`); pixels without a label are left out of the loss."""
    from tessera.dims import parse_bands
    from tessera.downstream.heads import make_head
    from tessera.downstream.patches import embedding_grids, raster_patches, read_label_raster
    from tessera.downstream.unet import UNetHead

    if features is not None:
        fail("--features: table columns have no neighbourhood; a unet head takes a label "
             "raster and embeddings")
    source: Any = embeddings if embeddings is not None else store
    if source is None:
        fail(f"{labels}: a unet head needs the embeddings under the labels: --store (a store "
             "or a folder of `tessera embed` outputs, with --year) or --embeddings FILE.tif")
    if embeddings is None and year is None:
        fail("--year is needed with a store")
    lab = read_label_raster(labels, layer=layer, task=task)
    grids = embedding_grids(source, year, lab, cache_dir=cache, dataset_version=dataset)
    with Bars(progress) as bars:
        p = raster_patches(lab, grids, 64 if patch is None else patch, progress=bars)
        gone = {k: v for k, v in p.dropped.items() if v}
        if gone:
            out.print("labelled pixels without an embedding (left out): "
                      + ", ".join(f"{v} {k}" for k, v in gone.items()))
        chosen = parse_bands(bands, p.dims) if bands is not None else None
        h = make_head("unet", p.task, classes=p.classes, seed=seed, model=p.model,
                      bands=chosen, **params)
        assert isinstance(h, UNetHead)
        h.fit_patches(p.X, p.Y, progress=bars)
    h.info.extra.update({"labels": str(labels), "label_column": lab.column, "year": p.year,
                         "store": str(source), "weights": p.weights, "patch": p.patch,
                         "embedding_sources": p.sources, "dropped": p.dropped})
    path = h.save(output, overwrite=overwrite)
    what = f"{len(p.classes)} classes" if p.task == "classification" else "regression"
    out.print(f"wrote {path}: unet head, {what}, {p.labelled} labelled pixels in {len(p)} "
              f"patches of {p.patch} x {p.patch} px of {p.model or 'an unrecorded model'} "
              f"({h.info.dims} dims)")


def _table_mode(path: Path, model: str, checkpoint: Optional[Path], min_count: int,
                year: Optional[int]) -> tuple[Any, Any, Any, Any, list[str], dict[str, Any]]:
    """A labelled point table of raw time series (the WorldCereal extractions): X embedded
    with the model, the raw series as the baseline, y its classes, groups its h3 cells."""
    import numpy as np

    from tessera.downstream.features import embed_samples, raw_features, tessera_embedder
    from tessera.downstream.tables import load_table

    table = load_table(path, min_count=min_count, year="auto" if year is None else year)
    emb = embed_samples(table, tessera_embedder(checkpoint=checkpoint, preset=model))
    raw, names = raw_features(table.year_rows(), table.sample_ids, id_column=table.id_column,
                              date_column=table.date_column)
    ok = ~emb.missing
    # gaps in the raw series (no observation that month, nodata): the column median over all
    # samples (features only, no labels), so every head kind takes the baseline
    med = np.nanmedian(np.where(np.isfinite(raw), raw, np.nan), axis=0) if raw.size else raw
    raw = np.where(np.isfinite(raw), raw, med[None, :]).astype(np.float32)
    classes = sorted({str(c) for c in table.labels})
    y = np.array([classes.index(str(c)) for c in table.labels], np.int64)
    meta = {"table": table.info(), "embedded_with": model or str(checkpoint),
            "raw_features": len(names), "samples_without_embedding": int((~ok).sum()),
            "raw_baseline": "the same heads on the raw series of the evaluation year (every "
                            "band at every date, gaps filled with the column median)",
            "class_names": {c: table.class_names.get(c, c) for c in classes}}
    return emb.x[ok], raw[ok], y[ok], table.cells[ok], classes, meta


@command
def evaluate(
    labels: Path = typer.Argument(..., metavar="LABELS", help=LABEL_HELP + " Or, with "
                                  "--model, a labelled point table of raw time series "
                                  "(WorldCereal extractions, long or WIDE)."),
    output: Path = typer.Option(..., "-o", "--output", metavar="DIR", help="Report folder "
                                "(report.json, results.csv, summary.md, learning_curve.png, "
                                "confusion_matrix.png, map_preview.png with a store)."),
    store: Optional[str] = store_option_optional(),
    year: Optional[int] = typer.Option(None, "--year", metavar="YEAR", help="The embeddings' "
                                       "year (with --store); with --model, the table's "
                                       "evaluation year (default: its main year)."),
    model: Optional[str] = typer.Option(None, "--model", metavar="ID", help="Embed a raw point "
                                        "table with this model (e.g. tiny, v1); its raw series "
                                        "become the baseline."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", metavar="FILE",
                                              help="Embed a raw point table with these "
                                              "weights."),
    heads: str = typer.Option("logistic,random_forest", "--heads", metavar="LIST",
                              help="Heads to score: " + HEAD_HELP),
    split: Optional[str] = typer.Option(None, "--split", metavar="METHOD", help="random, "
                                        "grouped (by --group, or polygons / raster fields), "
                                        "spatial (blocks of --block-size m) or column (one "
                                        "fold per --group value; the default for raw point "
                                        "tables: their h3 cells). Default: grouped when the "
                                        "labels have groups, else spatial 10 km blocks."),
    block_size: float = typer.Option(10_000.0, "--block-size", metavar="M", help="Spatial "
                                     "block edge in metres."),
    k: int = typer.Option(5, "--k", metavar="K", help="Folds (random, grouped, spatial)."),
    fractions: str = typer.Option("0.01,0.1,1", "--fractions", metavar="LIST",
                                  help="Label fractions of each training pool (nested)."),
    seeds: str = typer.Option("0,1,2", "--seeds", metavar="LIST", help="Seeds (subsets and "
                              "heads)."),
    label: str = _label_option(),
    group: Optional[str] = typer.Option(None, "--group", metavar="COLUMN", help="Group column "
                                        "(e.g. a field id or an H3 cell)."),
    task: Optional[str] = _task_option(),
    min_count: int = typer.Option(10, "--min-count", metavar="N", help="Raw point tables: "
                                  "classes with fewer samples merge into 'other'."),
    raw_tiles: Optional[list[Path]] = typer.Option(None, "--raw-tiles", metavar="DIR",
                                                   help="d-pixel tile folders the embeddings "
                                                   "came from (repeatable): their monthly "
                                                   "medians are the raw-data baseline."),
    layer: Optional[str] = _layer_option(),
    features: Optional[str] = _features_option(),
    test_table: Optional[Path] = typer.Option(None, "--test-table", metavar="TABLE",
                                              help="With --features: a second table with the "
                                              "same columns, the fixed test set (e.g. a UCR "
                                              "TEST file); the first table is the training "
                                              "pool."),
    param: Optional[list[str]] = typer.Option(None, "--param", metavar="HEAD.KEY=VALUE",
                                              help="A head parameter (repeatable), e.g. "
                                              "knn.n_neighbors=1."),
    progress: bool = progress_option(),
    cache: Optional[Path] = cache_option(),
    dataset: Optional[str] = dataset_version_option(),
) -> None:
    """Score heads on labelled embeddings with geographically separated splits, label
    fractions repeated over seeds, and baselines always beside them (the majority class or
    training mean; for raw point tables the same heads on the raw time series, on the same
    splits and subsets)."""
    need("sklearn", "eval", "tessera head")
    import numpy as np

    from tessera.downstream.benchmark import evaluate as run_eval
    from tessera.downstream.report import write_report
    from tessera.downstream.splits import make_folds

    kinds = [h.strip() for h in heads.split(",") if h.strip()]
    if "unet" in kinds:
        fail("--heads unet: head evaluate scores pixel heads only (a unet needs patches); "
             "train it with `head train --head unet` and check its map with `head predict "
             "--compare`")
    fracs = _numbers(fractions, "--fractions", float)
    seed_list = _numbers(seeds, "--seeds", int)
    meta: dict[str, Any] = {"labels": str(labels), "heads": kinds}
    baselines = None
    head_params = _head_params(param, kinds)
    fixed: Any = None  # the folds of a --test-table
    feature_set = "embedding"
    if features is not None:
        X, y, groups, classes, t, lon, lat, fixed, more = _columns_mode(
            labels, features, test_table, label, group, task, split,
            store=store, model=model or checkpoint, raw_tiles=raw_tiles, layer=layer)
        feature_set = str(more.pop("feature_set"))
        meta.update(more)
        split = fixed[0].method if fixed else (
            split or ("grouped" if groups is not None else "spatial" if lon is not None
                      else "random"))
    elif test_table is not None:
        fail("--test-table is for plain feature tables: give --features COLUMNS too")
    elif model is not None or checkpoint is not None:
        X, raw, y, groups, classes, more = _table_mode(labels, model or "", checkpoint,
                                                       min_count, year)
        meta.update(more)
        t = "classification"
        baselines = {"raw": raw}
        lon = lat = None
        split = split or "column"
        if split != "column":
            fail("raw point tables are split by their h3 cells (--split column)")
    else:
        joined, _ = _joined(labels, store, year, label, group, task, None, cache, dataset,
                            layer)
        _say_dropped(joined)
        X, y, groups, classes, t = joined.X, joined.y, joined.groups, joined.classes, joined.task
        lon, lat = joined.lon, joined.lat
        meta.update({"store": str(store) if store else "", "year": joined.year,
                     "model": joined.model, "dims": joined.dims, "dropped": joined.dropped,
                     "raw_baseline": "none: a store holds embeddings only (the majority / "
                                     "mean reference is shown; --raw-tiles adds one)"})
        if raw_tiles:
            raw, covered = _raw_from_tiles(raw_tiles, np.asarray(lon), np.asarray(lat))
            baselines = {"raw": raw}
            meta["raw_baseline"] = (
                "the same heads on monthly medians of the d-pixel tiles' S2 bands and S1 VV / "
                f"VH ({raw.shape[1]} features; gaps filled with the column median); "
                f"{covered} of {len(raw)} labelled pixels inside the tiles")
        split = split or ("grouped" if groups is not None else "spatial")
    data: Any = ({"lon": np.asarray(lon), "lat": np.asarray(lat)} if lon is not None
                 else len(y))
    if split in ("grouped", "column") and groups is None:
        fail(f"--split {split} needs groups: --group COLUMN, or polygon / raster labels")
    folds = fixed or make_folds(data, split, k=k, seed=seed_list[0],
                                labels=np.asarray(classes, dtype=object)[y]
                                if t == "classification" else None,
                                group=groups if split in ("grouped", "column") else None,
                                block_size_m=block_size if split == "spatial" else None)
    meta.update({"split": split, "block_size_m": block_size if split == "spatial" else None})
    with Bars(progress) as bars:
        res = run_eval(X, y, task=t, classes=classes, folds=folds, heads=kinds,
                       fractions=fracs, seeds=seed_list, baselines=baselines, progress=bars,
                       head_params=head_params, features=feature_set)
    if features is not None:
        meta["map_preview"] = ("none: the features are columns of a table, not embeddings of "
                               "a place: there is no area to map")
    elif model is not None or checkpoint is not None:
        meta["map_preview"] = ("none: a raw point table holds time series at its points only; "
                               "there are no embeddings of the area around them to map (give "
                               "labels with --store to get one)")
    elif not store:
        meta["map_preview"] = ("none: the labels carry their own embeddings and no --store "
                               "was given: there is no raster of embeddings to map")
    else:
        meta["map_preview"] = _evaluate_preview(
            res, X, y, classes, seed_list[0], head_params, store, meta.get("year") or year,
            lon, lat, str(meta.get("model") or ""), output, progress, cache, dataset)
    title = (f"Heads on table columns of {labels.name}" if features is not None
             else f"TESSERA heads on {labels.name}")
    files = write_report(res, output, title=title, meta=meta)
    out.print((output / "summary.md").read_text() if (output / "summary.md").exists() else "")
    out.print("wrote " + ", ".join(str(p) for p in files.values())
              + (f", {output / 'map_preview.png'}"
                 if str(meta["map_preview"]).startswith("map_preview.png") else ""))


def _evaluate_preview(res: Any, X: Any, y: Any, classes: list[str], seed: int,
                      head_params: dict[str, dict[str, Any]], store: str, year: Optional[int],
                      lon: Any, lat: Any, model: str, output: Path, progress: bool,
                      cache: Optional[Path], dataset: Optional[str]) -> str:
    """evaluate's map_preview.png: the best head on embeddings (at the largest fraction) fitted
    on all the labels and drawn over their bounding box (`tessera.downstream.preview`); the
    line report.json and summary.md say about it, or why there is none."""
    from tessera.downstream.benchmark import best_method
    from tessera.downstream.heads import make_head
    from tessera.downstream.preview import PREVIEW_PX, map_preview
    from tessera.cli.common import warn
    from tessera.errors import TesseraError, error_text

    if lon is None or lat is None or year is None:
        return "none: the labels have no coordinates or no year to map"
    kind = best_method(res) or res.methods[0]["head"]
    h = make_head(kind, res.task, classes=classes, seed=seed, model=model,
                  **(head_params or {}).get(kind, {}))
    output.mkdir(parents=True, exist_ok=True)
    with Bars(progress) as bars:
        h.fit(X, y, progress=bars)
        try:
            pv = map_preview(h, store, int(year), lon, lat, output / "map_preview.png",
                             max_px=PREVIEW_PX, dataset_version=dataset, cache_dir=cache,
                             progress=bars)
        except TesseraError as exc:
            warn(f"map preview: {error_text(exc)}")
            return f"none: the preview failed ({error_text(exc)})"
    return (f"{pv.describe()}: the {kind} head (the best on embeddings with "
            f"{res.fractions[-1]:.0%} of the labels) fitted on all {len(y)} labels, over their "
            "bounding box")


@command
def predict(
    head: Path = typer.Argument(..., metavar="HEAD", help="A head file (`tessera head train`)."),
    output: Path = typer.Option(..., "-o", "--output", metavar="MAP.tif", help="The map "
                                "GeoTIFF: class (with a colour table and class names) + "
                                "confidence, or the predicted value."),
    store: Optional[str] = store_option_optional(),
    year: Optional[int] = typer.Option(None, "--year", metavar="YEAR", help="The embeddings' "
                                       "year (with --store)."),
    bbox: Optional[str] = bbox_option(),
    region: Optional[Path] = region_option(),
    tile: Optional[list[str]] = tile_option(),
    png: Optional[Path] = typer.Option(None, "--png", metavar="FILE", help="A preview PNG with "
                                       "a legend (default: MAP.png)."),
    crs: Optional[str] = typer.Option(None, "--crs", metavar="CRS", help="Map CRS (default: "
                                      "the UTM zone of the region's centre)."),
    compare: Optional[Path] = typer.Option(None, "--compare", metavar="LABELS", help="A label "
                                           "raster (GeoTIFF, or a netCDF cube with --layer): "
                                           "also MAP_vs_labels.png, the labels beside the "
                                           "prediction in the same colours."),
    layer: Optional[str] = typer.Option(None, "--layer", metavar="NAME", help="The band or "
                                        "netCDF variable of --compare."),
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", metavar="FILE.tif",
                                              help="Instead of a store and a region: a GeoTIFF "
                                              "of embeddings (`tessera embed --geotiff`, an "
                                              "export), mapped on its own grid."),
    precision: Optional[str] = typer.Option(None, "--precision", metavar="P", help="mlp "
                                            "heads: fp32 (exact, the default) or bf16 (about "
                                            "4x faster on CPUs with AVX512-BF16)."),
    progress: bool = progress_option(),
    cache: Optional[Path] = cache_option(),
    dataset: Optional[str] = dataset_version_option(),
) -> None:
    """Apply a head to a region of a store (or to a GeoTIFF of embeddings): a map GeoTIFF and
    a PNG preview, in bounded memory (strip by strip: the same for a 100 km region as for a
    tile)."""
    need("sklearn", "eval", "tessera head")
    from tessera.downstream.heads import Head
    from tessera.downstream.predict_map import predict_map
    from tessera.store import open_store
    from tessera.store.client import Client

    if output.suffix.lower() not in (".tif", ".tiff"):
        fail(f"{output}: expected a .tif/.tiff output")
    h = Head.load(head)
    if precision is not None:
        if "precision" not in h.info.params or precision not in ("fp32", "bf16"):
            fail(f"--precision {precision}: expected fp32 or bf16, for mlp heads "
                 f"({h.info.kind} head {head})")
        h.info.params["precision"] = precision
    if embeddings is not None:
        if bbox or region or tile:
            fail("--embeddings maps the whole file; --bbox / --region / --tile are for stores")
        with Bars(progress) as bars:
            res = _predict_file(h, embeddings, output, png or output.with_suffix(".png"), bars)
        out.print(f"wrote {res}")
        if compare is not None:
            out.print(f"wrote {_compare_png(h, res.tif, compare, layer)}")
        return
    if not store:
        fail("--store is needed (or $TESSERA_STORE), or --embeddings FILE.tif")
    if year is None:
        fail("--year is needed with a store")
    where = region_of(bbox, region, tile)
    client = Client(open_store(store, cache_dir=cache, dataset_version=dataset))
    with Bars(progress) as bars:
        res = predict_map(h, client, where, year, output,
                          png=png or output.with_suffix(".png"), crs=crs, progress=bars)
    out.print(f"wrote {res}")
    if compare is not None:
        out.print(f"wrote {_compare_png(h, res.tif, compare, layer)}")


def _predict_file(head: Any, path: Path, out_tif: Path, png: Path, progress: Any) -> Any:
    """`head predict --embeddings`: a GeoTIFF of embeddings mapped strip by strip (rows of
    256 px), checked against the head's model (the file's `model` / TESSERA_MODEL tag)."""
    import numpy as np
    import rasterio

    from tessera.downstream.predict_map import predict_strips
    from tessera.geotiff import Window, read_embeddings
    from tessera.store.results import EmbeddingRaster

    with rasterio.open(path) as src:
        tags, h, w, crs, transform = src.tags(), src.height, src.width, src.crs, src.transform
    first, dims = read_embeddings(path, Window(0, 0, min(h, 1), min(w, 1)))
    model = str(tags.get("TESSERA_MODEL") or tags.get("model") or "")
    head.check_input(model, len(dims), str(path))
    year = int(tags["year"]) if str(tags.get("year", "")).strip().isdigit() else 0
    rows = 256

    def strips() -> Any:
        for r in range(0, h, rows):
            win = Window(r, 0, min(rows, h - r), w)
            e, _ = read_embeddings(path, win)
            ok = np.isfinite(e).all(axis=2)
            scales = np.where(ok, np.float32(1), np.float32(np.nan))
            yield EmbeddingRaster(np.where(ok[..., None], e, np.nan).astype(np.float32),
                                  scales, crs, transform * transform.translation(0, r), year)

    return predict_strips(head, strips(), crs=crs, transform=transform, width=w, height=h,
                          dims=len(dims), out_tif=out_tif, png=png, progress=progress,
                          tags={"TESSERA_MODEL": model, "TESSERA_SOURCE": str(path)},
                          title=path.name)


def _raw_from_tiles(tiles: list[Path], lon: Any, lat: Any) -> tuple[Any, int]:
    """The raw-data baseline at labelled pixels: `tile_raw_features` of the tile folder
    holding each one (median-filled gaps; rows outside every tile get the medians only)."""
    import numpy as np
    from pyproj import Transformer

    from tessera.dpixel import Tile
    from tessera.downstream.features import tile_raw_features

    out: Any = None
    covered = np.zeros(len(lon), bool)
    for d in tiles:
        feats, _ = tile_raw_features(d)
        t = Tile.open(d)
        if out is None:
            out = np.full((len(lon), feats.shape[2]), np.nan, np.float32)
        x, y = Transformer.from_crs("EPSG:4326", t.crs, always_xy=True).transform(lon, lat)
        col, row = ~t.transform * (np.asarray(x), np.asarray(y))
        r, c = np.floor(row).astype(int), np.floor(col).astype(int)
        inside = (r >= 0) & (r < feats.shape[0]) & (c >= 0) & (c < feats.shape[1]) & ~covered
        out[inside] = feats[r[inside], c[inside]]
        covered |= inside
    med = np.nanmedian(out, axis=0)
    med = np.where(np.isfinite(med), med, 0.0)
    return np.where(np.isfinite(out), out, med[None, :]).astype(np.float32), int(covered.sum())


def _compare_png(head: Any, map_tif: Path, labels: Path, layer: Optional[str]) -> str:
    """`MAP_vs_labels.png`: the label raster (resampled nearest onto the map's grid) beside the
    predicted classes, in the map's colours, with one legend; and the pixel agreement."""
    import contextlib

    import matplotlib
    import numpy as np
    import rasterio
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from rasterio.warp import Resampling, reproject

    from tessera.atomic import atomic_path
    from tessera.downstream.labels import netcdf_layer
    from tessera.downstream.predict_map import class_colors

    matplotlib.use("Agg")
    classes = list(head.info.classes)
    if head.info.task != "classification":
        fail("--compare draws class maps: the head is a regression head")
    with rasterio.open(map_tif) as m:
        pred, nodata, shape = m.read(1), m.nodata, (m.height, m.width)
        crs, transform = m.crs, m.transform
    opener = (netcdf_layer(labels, layer) if labels.suffix.lower() == ".nc"
              else contextlib.nullcontext(str(labels)))
    with opener as path, rasterio.open(path) as src:
        band = int(layer) if layer and layer.isdigit() and labels.suffix.lower() != ".nc" else 1
        lab = np.full(shape, np.nan, np.float64)
        reproject(src.read(band).astype(np.float64), lab, src_transform=src.transform,
                  src_crs=src.crs, src_nodata=src.nodata, dst_transform=transform,
                  dst_crs=crs, dst_nodata=np.nan, resampling=Resampling.nearest)
    index = {c: i for i, c in enumerate(classes)}
    truth = np.full(shape, -1, np.int64)
    for v in np.unique(lab[np.isfinite(lab)]):
        key = str(int(v)) if float(v).is_integer() else str(v)
        truth[lab == v] = index.get(key, -2)  # -2: a label the head does not know
    colors = class_colors(classes) / 255.0
    predicted = pred != nodata

    def rgba(cls: Any, ok: Any) -> Any:
        img = np.zeros((*shape, 4))
        img[ok, :3] = colors[cls[ok]]
        img[ok, 3] = 1.0
        return img

    known = truth >= 0
    both = known & predicted
    agree = float((pred[both] == truth[both]).mean()) if both.any() else float("nan")
    fig = Figure(figsize=(10, 5.4), dpi=120)
    for i, (img, title) in enumerate(((rgba(truth, known), f"labels{f' ({layer})' if layer else ''}"),
                                      (rgba(pred.astype(np.int64), predicted),
                                       f"predicted ({head.info.kind}): {agree:.1%} of "
                                       "labelled pixels agree"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.legend(handles=[Patch(color=colors[i], label=c) for i, c in enumerate(classes)],
               loc="lower center", ncol=min(len(classes), 6), fontsize=8, frameon=False)
    fig.suptitle(labels.name, fontsize=8)
    out_png = map_tif.with_name(f"{map_tif.stem}_vs_labels.png")
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    return (f"{out_png}: {agree:.1%} of {int(both.sum())} labelled pixels agree with the map"
            + (f" ({int((truth == -2).sum())} labelled with classes the head does not know)"
               if (truth == -2).any() else ""))
