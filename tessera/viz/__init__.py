"""False-colour views of a store (SPEC section 7, items 2, 3 and 7): one PCA fit for many tiles
(`pca`), per-tile GeoTIFFs and region mosaics (`render`), coverage maps (`coverage`).

Only numpy, rasterio, pyproj, shapely, scipy and matplotlib: pictures need no model."""

from tessera.errors import VizError
from tessera.viz.coverage import coverage_map, coverage_table
from tessera.viz.pca import (CHUNK_PIXELS, HISTOGRAM_LEVELS, PCA_FORMAT, PCA_FORMAT_VERSION,
                             STRETCHES, PcaRgb, PixelSample, fit_pca, sample_pixels)
from tessera.viz.render import (RenderedRegion, RenderedTile, render_region, render_tiles,
                                tile_rgba, write_png, write_rgba_geotiff)
from tessera.viz.tiles import TileLike, resolve_tiles

__all__ = ["CHUNK_PIXELS", "HISTOGRAM_LEVELS", "PCA_FORMAT", "PCA_FORMAT_VERSION", "STRETCHES",
           "PcaRgb", "PixelSample", "RenderedRegion", "RenderedTile", "TileLike", "VizError",
           "coverage_map", "coverage_table", "fit_pca", "render_region", "render_tiles",
           "resolve_tiles", "sample_pixels", "tile_rgba", "write_png", "write_rgba_geotiff"]
