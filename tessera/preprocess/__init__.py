"""Preprocessing: real Sentinel-1/2 rasters (GeoTIFF/COG, STAC, netCDF) to d-pixel tile folders.

Flow: a `tessera.geo.TargetGrid` (region -> UTM, 10 m, snapped), a source's `Granule`s for a
year, `plan()` (the dry run), then `run()` writing one tile folder per patch.
"""

from tessera.errors import ConflictError, PreprocessError
from tessera.preprocess.acquisition import ArrayAsset, Granule, RasterAsset, Source
from tessera.preprocess.compose import ComposeOptions
from tessera.preprocess.pipeline import Plan, RunReport, plan, process_patch, run

__all__ = ["ArrayAsset", "ComposeOptions", "ConflictError", "Granule", "Plan", "PreprocessError",
           "RasterAsset", "RunReport", "Source", "plan", "process_patch", "run"]
