"""SIMULATED Sentinel-1/2 tiles: a seeded, deterministic generator of synthetic d-pixel data.

Nothing this module produces was observed by a satellite. It writes *simulated* tiles in the
published tile folder layout (SPEC section 1) so that the pipeline, tests and benchmarks can run
without downloads, and so that embeddings and task heads can be checked against a known truth
(the per-pixel class labels). Every folder written here carries a ``simulation.json`` sidecar
with ``"simulated": true``, the seed and the full configuration.

The scene
    A parcel map (rectangles split recursively, their borders warped into irregular polygons)
    whose fields get one class each from `CLASSES`: five crops, grassland, forest, bare soil and a
    village (urban), plus a meandering river and small lakes (water). Forests cluster on a
    smooth low-frequency field, the village is one compact cluster of parcels.

Sentinel-2 (`bands`, `masks`, `scl`, `doys`)
    Each field follows its class's crop calendar (`PHENOLOGY`: double-logistic green-up and
    senescence, dry matter until harvest, stubble, autumn emergence of the next winter crop,
    rapeseed flowering, grassland mowing), with per-field jitter of dates and peak cover. Each
    pixel is a linear mix of green vegetation, dry vegetation, flowers and a background (soil,
    water, urban) spectrum, in the model band order `bands.S2_BANDS`, as reflectance x 10 000
    (offset-free, as stored in tiles). A static within-field texture, soil moisture from a daily
    rain series, per-date atmospheric gain, per-pixel noise and 2 x 2 block resampling of the
    20 m bands follow. Dates are irregular (about every 5 days, some dropped). Clouds are
    thresholded smooth random fields with a seasonal cover (cloudier in winter, bimodal per
    date), cloud shadows are the cloud field shifted away from the sun (sun elevation from the
    tile's latitude and the day), with dark rims, thin cirrus (valid), rare winter snow (valid)
    and swath edges (no data, values 0). A scene classification (SCL, classes 0-11, see
    `bands.SCL_NAMES`) is produced per date and the masks are ``bands.scl_valid(scl)``. Cloudy
    pixels hold bright cloud spectra, not zeros. The cloud cover over all dates matches
    ``SimConfig.cloud_fraction`` (fraction of observations in SCL 8/9), whatever the ROI:
    like the published pipeline, no date is dropped for being cloudy.

Sentinel-1 (`sar_ascending`, `sar_descending`)
    VV/VH backscatter in dB from class, green and dry cover (VH rises with biomass), soil
    moisture (bare soil) and wind (water, about -24 dB VV when calm), with a static per-field
    roughness and per-orbit look-direction offsets (strong for urban), multiplicative gamma
    speckle (``SimConfig.enl`` looks), occasional swath edges; encoded with
    `bands.s1_db_to_int16` (standard dB; the published code's unit is twice that, see bands).
    Each orbit has its own regular revisit (about 12 days), its own
    offset and a few missing acquisitions.

Everything is a function of ``SimConfig.seed``: the static scene and each date draw from their
own `numpy.random.default_rng` streams, so changing e.g. the number of S1 dates leaves the S2
data unchanged. Generation runs date by date in float32, vectorised over pixels; a 512 x 512
tile with 70 S2 and 30 + 30 S1 dates takes a few seconds.

Public API: `SimConfig`, `simulate_arrays`, `simulate_tile`, `simulate_table`, `CLASSES`,
`CLASS_IDS`, `PHENOLOGY`, `Phenology`, `cover_fractions`, `peak_doy`, `tile_geometry`.

Layout of the package: `classes` (the class table, crop calendars, spectra, S1 response),
`config` (`SimConfig`, `tile_geometry`, the random streams), `dates` (acquisition days, soil
moisture, cloud cover, sun), `scene` (parcels, classes, statics, ROI), `sensors` (one S2 or S1
date) and `tile` (`simulate_arrays`, `simulate_tile`, `simulate_table`).
"""

from __future__ import annotations

from tessera.simulate.classes import (CLASS_IDS, CLASSES, CROP_CLASSES, DEFAULT_CLASS_WEIGHTS,
                                      PHENOLOGY, Phenology, cover_fractions, peak_doy)
from tessera.simulate.config import SimConfig, tile_geometry
from tessera.simulate.tile import TABLE_COLUMNS, simulate_arrays, simulate_table, simulate_tile

__all__ = [
    "CLASSES", "CLASS_IDS", "CROP_CLASSES", "DEFAULT_CLASS_WEIGHTS", "PHENOLOGY", "Phenology",
    "SimConfig", "TABLE_COLUMNS",
    "cover_fractions", "peak_doy", "simulate_arrays", "simulate_table", "simulate_tile",
    "tile_geometry",
]
