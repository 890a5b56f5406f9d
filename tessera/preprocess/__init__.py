"""Preprocessing: real Sentinel-1/2 rasters (GeoTIFF/COG, STAC, netCDF) to d-pixel tile folders.

Flow: a `TargetGrid` (region -> UTM, 10 m, snapped), a source's `Granule`s for a year,
`plan()` (the dry run), then `run()` writing one tile folder per patch.
"""

from tessera.preprocess.acquisition import (ArrayAsset, Granule, PreprocessError, RasterAsset,
                                            Source)
from tessera.preprocess.compose import ComposeOptions, ConflictError
from tessera.preprocess.grid import Patch, RegionError, TargetGrid, utm_crs
from tessera.preprocess.pipeline import Plan, RunReport, plan, process_patch, run

__all__ = ["ArrayAsset", "ComposeOptions", "ConflictError", "Granule", "Patch", "Plan",
           "PreprocessError", "RasterAsset", "RegionError", "RunReport", "Source", "TargetGrid",
           "plan", "process_patch", "run", "utm_crs"]
