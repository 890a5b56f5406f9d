"""False-colour views of a store (SPEC section 7, items 2, 3 and 7): one PCA fit for many tiles
(`pca`), per-tile GeoTIFFs and region mosaics (`render`), coverage maps and JSON (`coverage`);
and of embedding files, GeoTIFFs, .npy tiles and Zarr stores (`sources`, `files`), with colour
balances (`balance`) and reprojection for web maps (`georef`).

Only numpy, rasterio, pyproj, shapely, scipy, zarr and matplotlib: pictures need no model."""

from tessera.errors import VizError
from tessera.viz.balance import BALANCES, equalize_adaptive
from tessera.viz.coverage import (COVERAGE_FORMAT, COVERAGE_FORMAT_VERSION, coverage_doc,
                                  coverage_json_path, coverage_map, coverage_table,
                                  write_coverage_json)
from tessera.viz.files import RenderedFiles, fit_views, plan_views, render_files
from tessera.viz.georef import WEB_MERCATOR, reproject_rgba, write_world_file
from tessera.viz.pca import (CHUNK_PIXELS, HISTOGRAM_LEVELS, PCA_FORMAT, PCA_FORMAT_VERSION,
                             STRETCHES, PcaRgb, PixelSample, fit_pca, fit_sample, sample_pixels)
from tessera.viz.render import (Picture, RenderedRegion, RenderedTile, finish_picture,
                                render_region, render_tiles, tile_rgba, write_png,
                                write_rgba_geotiff)
from tessera.viz.sources import EmbeddingRaster, open_inputs
from tessera.viz.tiles import TileLike, resolve_tiles

__all__ = ["BALANCES", "CHUNK_PIXELS", "COVERAGE_FORMAT", "COVERAGE_FORMAT_VERSION",
           "EmbeddingRaster", "HISTOGRAM_LEVELS", "PCA_FORMAT", "PCA_FORMAT_VERSION", "STRETCHES",
           "PcaRgb", "Picture", "PixelSample", "RenderedFiles", "RenderedRegion", "RenderedTile",
           "TileLike", "VizError", "WEB_MERCATOR", "coverage_doc", "coverage_json_path",
           "coverage_map", "coverage_table", "equalize_adaptive", "finish_picture", "fit_pca",
           "fit_sample", "fit_views", "open_inputs", "plan_views", "render_files",
           "render_region", "render_tiles", "reproject_rgba", "resolve_tiles", "sample_pixels",
           "tile_rgba", "write_coverage_json", "write_png", "write_rgba_geotiff",
           "write_world_file"]
