"""Downstream use of embeddings: label-efficiency evaluation on labelled point tables.

The protocol is documented in `tessera.downstream.evaluate`; its parts: `tables` (samples,
labels, the evaluation year), `splits` (leave-one-cell-out folds, nested label fractions),
`features` (raw time series, embeddings), `evaluate` (methods, scores, the loop) and `report`
(summaries).
"""
