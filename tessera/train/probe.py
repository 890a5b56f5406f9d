"""Linear probe used to monitor pretraining (SPEC section 4): embed a labelled point table with
the current weights and score a logistic regression by cross-validation.

Folds are by `group` (e.g. `h3_l3_cell`, so the score is geographic) when the table has at least
two groups, else stratified. The score is the mean fold accuracy. It selects the best
checkpoint, so the table must not be one of the sets used to report final numbers.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pandas as pd

from tessera.errors import InputError
from tessera.model import TesseraModel


class TableProbe:
    """A labelled long point table, parsed once, scored against any model."""

    def __init__(self, table: str | os.PathLike | pd.DataFrame, label: str = "ewoc_code",
                 group: str | None = "h3_l3_cell", min_count: int = 5, folds: int = 5,
                 device: str = "cpu", **table_options: Any) -> None:
        from tessera.table import read_table

        df = table if isinstance(table, pd.DataFrame) else read_table(table)
        name = "the probe table" if isinstance(table, pd.DataFrame) else str(table)
        if label not in df.columns:
            raise InputError(f"{name}: no label column {label!r}; columns are "
                             f"{', '.join(map(str, df.columns[:20]))}")
        from tessera.table import prepare_table

        self.df, self.options, self.device, self.folds = df, table_options, device, folds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_table(df, **table_options)  # fail now, not at the first probe
        id_col = prepared.id_column
        per_sample = df.groupby(id_col, sort=True).first().loc[prepared.sample_ids]
        labels = per_sample[label].astype(str)
        counts = labels.value_counts()
        self.labels = np.where(labels.map(counts) >= min_count, labels, "other")
        self.groups = (per_sample[group].astype(str).to_numpy()
                       if group is not None and group in per_sample.columns else None)
        if len(np.unique(self.labels)) < 2:
            raise InputError(f"{name}: fewer than 2 classes with >= {min_count} samples in "
                             f"{label!r}; a probe needs at least two")

    def embed(self, model: TesseraModel) -> np.ndarray:
        from tessera.table import embed_table, embedding_columns

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = embed_table(self.df, model=model, device=self.device, **self.options)
        return out[embedding_columns(model.config.latent_dim)].to_numpy(np.float32)

    def score(self, model: TesseraModel) -> float:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        was_training = model.training
        x = np.nan_to_num(self.embed(model))
        model.train(was_training)
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        if self.groups is not None and len(np.unique(self.groups)) >= 2:
            cv = GroupKFold(n_splits=min(self.folds, len(np.unique(self.groups))))
            scores = cross_val_score(clf, x, self.labels, groups=self.groups, cv=cv)
        else:
            smallest = int(pd.Series(self.labels).value_counts().min())
            cv = StratifiedKFold(n_splits=max(2, min(self.folds, smallest)), shuffle=True,
                                 random_state=0)
            scores = cross_val_score(clf, x, self.labels, cv=cv)
        return float(np.mean(scores))

    __call__ = score
