"""The errors a user can cause, under one base: `TesseraError`.

Why one base: the command line turns exactly these into a one-line `error: ...` and exit code 2
(everything else is a bug, reported as one), and a library caller can catch them all at once.
Each kind also derives from the built-in exception it refines, so `except ValueError` /
`except FileNotFoundError` keep working:

    TesseraError
    |-- InputError (ValueError)           a file, field, option or value that cannot be used
    |   |-- RegionError > GridError       (tessera.geo)
    |   |-- TileFormatError               (tessera.dpixel)
    |   |-- TableError, WideTableError    (tessera.table)
    |   |-- CheckpointError > CheckpointConfigError, CheckpointLayoutError (tessera.model)
    |   |-- PreprocessError > ConflictError (tessera.preprocess)
    |   |-- ManifestError, StoreError > ClientError (tessera.store)
    |   |-- ShardError, TrainError        (tessera.train)
    |   |-- HeadError                     (tessera.downstream.heads)
    |   `-- VizError                      (tessera.viz)
    |-- NotFoundError (FileNotFoundError) a named file, folder or resource that is not there
    |-- ExistsError (FileExistsError)     an output that exists and is not to be replaced
    |-- WriteError (OSError)              an output that cannot be written (no space, read-only)
    `-- DependencyError (ImportError)     an optional extra that is not installed

Messages name the file, field or value and say what was expected.
"""

from __future__ import annotations


class TesseraError(Exception):
    """Anything a user can cause: bad input, missing data, an output in the way."""


class InputError(TesseraError, ValueError):
    """A file, field, option or value that cannot be used; the message says which and why."""


class NotFoundError(TesseraError, FileNotFoundError):
    """A named file, folder, tile or resource that is not there."""


class ExistsError(TesseraError, FileExistsError):
    """An output that exists already and is not to be replaced (the message says how to)."""


class WriteError(TesseraError, OSError):
    """An output that cannot be written (no space left, read-only location); nothing partial
    is left under the final name."""


class DependencyError(TesseraError, ImportError):
    """A feature needs an optional extra that is not installed; the message names it."""


# --- the kinds of bad input, by the part of the package that detects them ----------------------

class RegionError(InputError):
    """A region (bbox, polygon file, GeoJSON, points) that cannot be used."""


class GridError(RegionError):
    """A tile name, coordinate or region that the global 0.1 degree grid cannot serve."""


class TileFormatError(InputError):
    """A tile folder file is missing or does not match the published layout."""


class TableError(InputError):
    """A point table that cannot be turned into d-pixels; the message names the column or row."""


class WideTableError(TableError):
    """A WIDE WorldCereal table that cannot be converted to the long layout."""


class CheckpointError(InputError):
    """A checkpoint that cannot be loaded (missing, unreadable, or for another model)."""


class PreprocessError(InputError):
    """Bad preprocessing input; the message names the file, band and date concerned."""


class ConflictError(PreprocessError):
    """Overlapping granules of one date disagree (with `on_conflict="error"`)."""


class ManifestError(InputError):
    """A store manifest that cannot be read, or a tile-year it does not list."""


class StoreError(InputError):
    """A store that cannot serve a request (missing tile or year, corrupt file, bad layout)."""


class ClientError(StoreError):
    """A request the client cannot serve: says which tile, year, region or file, and why."""


class ShardError(InputError):
    """Training shards that are missing, truncated or were written with other settings."""


class TrainError(InputError):
    """A pretraining run that cannot start or resume as asked."""


class HeadError(InputError):
    """A downstream head that cannot be built, trained, used or loaded as asked (bad kind or
    parameter, unusable training data, embeddings of another model, a foreign head file)."""


class VizError(InputError):
    """A visualisation request that cannot be served (no tiles, absent year, bad PCA file)."""


def error_text(exc: BaseException) -> str:
    """One line: the message of an exception and of those it was raised from (GDAL's reason
    sits under rasterio's "Read failed. See previous exception for details.")."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 4:
        text = " ".join(str(seen).split())
        if text and "See previous exception" not in text and text not in parts:
            parts.append(text)
        seen = seen.__cause__ or seen.__context__
    return "; ".join(parts) or type(exc).__name__


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def require(module: str, extra: str, feature: str) -> None:
    """Import `module` or raise DependencyError saying to `pip install 'tessera-eo[extra]'`.

    Called before work that needs an optional dependency, so the user learns which extra to
    install instead of reading an ImportError from deep inside a command."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise DependencyError(f"{feature} needs {module}, which is not installed: "
                              f"pip install 'tessera-eo[{extra}]'") from None


__all__ = ["CheckpointError", "ClientError",
           "ConflictError", "DependencyError", "ExistsError", "GridError", "HeadError", "InputError",
           "ManifestError", "NotFoundError", "PreprocessError", "RegionError", "ShardError",
           "StoreError", "TableError", "TesseraError", "TileFormatError", "TrainError",
           "VizError", "WideTableError", "WriteError", "error_text", "human_bytes", "require"]
