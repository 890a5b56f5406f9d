"""tessera: an open, fast implementation of TESSERA pixel-wise Sentinel-1/2 embeddings."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Heavy imports (torch, pandas) only when the public helpers are used.
    if name == "embed_table":
        from tessera.table import embed_table
        return embed_table
    raise AttributeError(f"module 'tessera' has no attribute {name!r}")


__all__ = ["__version__", "embed_table"]
