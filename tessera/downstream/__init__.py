"""Downstream use of embeddings: labels in, heads, honest evaluation, maps out.

    labels.py       labels from points, polygons, label rasters (GeoTIFF / netCDF) or embedded
                    tables, joined with a store's embeddings (dropped labels counted)
    heads.py        logistic, random forest, k-NN, gradient boosting, pixel MLP (unet.py: a
                    small UNet on patches): fit / predict / save / load, model-checked
    splits.py       random, grouped, spatial-block and column folds; nested label fractions
    metrics.py      accuracy, macro / per-class F1, confusion; RMSE, MAE, R2
    benchmark.py    the evaluation engine: heads x folds x fractions x seeds, baselines beside
    report.py       report.json, results.csv, summary.md, learning curve, confusion matrix
    predict_map.py  a head over a region in bounded memory: class + confidence GeoTIFF, PNG
    features.py     raw-data baselines (point-table series, d-pixel monthly medians), embedders
    tables.py, evaluate.py  the WorldCereal point-table protocol (leave-one-H3-cell-out)

The command line is `tessera head train | evaluate | predict` (tessera/cli/head.py).
"""
