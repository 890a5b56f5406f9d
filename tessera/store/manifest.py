"""The store manifest: a GeoParquet file with one row per tile and year.

Columns: tile, lon, lat, year, version, model, dims, weights, crs, transform (6 floats, rasterio
order a b c d e f), width, height, valid_pixels, created, `{kind}_path`, `{kind}_size`,
`{kind}_sha256` for each file kind (embeddings, scales, mask), the tile cell as a WKB polygon
(`geometry`, OGC:CRS84) and its `bbox` struct (GeoParquet 1.1 covering).

`model` (a registered model id, `tessera models`), `dims` (embedding width), `weights` (what
identifies the weights: a sha256 prefix, "random init seed N", "simulated") and `precision` (the
encoders' arithmetic, `tessera.infer.precision_label`: "fp32", "bf16", "int8-torch",
"int8-onnx") say what made the embeddings. Embeddings of different models, widths, weights or
precisions are not comparable, so a year holds one of them only: stores refuse a write that would
mix them and clients refuse to read a year that does (`check_one_model`). Manifests written
before these columns existed read with model "" (unrecorded) and precision "fp32" (the only one
there was). Queries by bbox, year and tile run as vectorised
pyarrow compute expressions over the columns, never as a Python loop over rows.

Hashes are of the file bytes as stored, so `tessera store check` and the client can verify any
copy against them; the manifest is rewritten atomically whenever a tile is added, so it never
goes stale relative to a completed write.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tessera.atomic import atomic_path
from tessera.errors import InputError, ManifestError
from tessera.store.layout import FILE_KINDS

GEOPARQUET_VERSION = "1.1.0"
FORMAT_VERSION = 3  # of this manifest's columns, in the file metadata (2: model, dims, weights;
# 3: precision)
#: Columns added by formats 2 and 3, and what an older manifest reads as.
_V2_COLUMNS = {"model": (pa.string(), ""), "dims": (pa.int16(), 128), "weights": (pa.string(), ""),
               "precision": (pa.string(), "fp32")}


def _file_fields() -> list[pa.Field]:
    out = []
    for k in FILE_KINDS:
        out += [pa.field(f"{k}_path", pa.string(), nullable=False),
                pa.field(f"{k}_size", pa.int64(), nullable=False),
                pa.field(f"{k}_sha256", pa.string(), nullable=False)]
    return out


_BBOX = pa.struct([("xmin", pa.float64()), ("ymin", pa.float64()),
                   ("xmax", pa.float64()), ("ymax", pa.float64())])
SCHEMA = pa.schema([
    pa.field("tile", pa.string(), nullable=False),
    pa.field("lon", pa.float64(), nullable=False),
    pa.field("lat", pa.float64(), nullable=False),
    pa.field("year", pa.int16(), nullable=False),
    pa.field("version", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("dims", pa.int16(), nullable=False),
    pa.field("weights", pa.string(), nullable=False),
    pa.field("precision", pa.string(), nullable=False),
    pa.field("crs", pa.string(), nullable=False),
    pa.field("transform", pa.list_(pa.float64(), 6), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("valid_pixels", pa.int64(), nullable=False),
    pa.field("created", pa.string(), nullable=False),
    *_file_fields(),
    pa.field("geometry", pa.binary(), nullable=False),
    pa.field("bbox", _BBOX, nullable=False),
])


@dataclasses.dataclass(frozen=True)
class FileEntry:
    path: str  # relative POSIX path inside the store
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class TileEntry:
    """One tile-year of a store."""

    tile: str
    lon: float
    lat: float
    year: int
    version: str
    crs: str
    transform: tuple[float, ...]
    width: int
    height: int
    valid_pixels: int
    files: dict[str, FileEntry]
    created: str = ""
    model: str = ""  # registered model id; "" = not recorded (format 1 manifests)
    dims: int = 128
    weights: str = ""
    precision: str = "fp32"  # the encoders' arithmetic (`tessera.infer.precision_label`)

    @property
    def provenance(self) -> tuple[str, int, str, str]:
        """What must agree between tiles of one year: (model, dims, weights, precision)."""
        return (self.model, int(self.dims), self.weights, self.precision or "fp32")

    def describe_model(self) -> str:
        if not self.model:
            what = "an unrecorded model (written before stores recorded models)"
            return what if self.precision in ("", "fp32") else f"{what} at {self.precision}"
        return (f"{self.model} ({self.dims} dims, weights {self.weights or 'unrecorded'}, "
                f"precision {self.precision or 'fp32'})")

    @property
    def affine(self) -> Any:
        from affine import Affine
        return Affine(*self.transform)

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Projected (left, bottom, right, top) in `crs`."""
        a = self.affine
        return (a.c, a.f + a.e * self.height, a.c + a.a * self.width, a.f)


def hash_file(path: str | os.PathLike | BinaryIO, chunk: int = 1 << 20) -> tuple[int, str]:
    """(size, sha256 hex) of a file, streamed in `chunk`-byte pieces."""
    h, n = hashlib.sha256(), 0
    # a file object is anything with `read` (mypy does not narrow the union on hasattr)
    f: BinaryIO = (open(path, "rb") if not hasattr(path, "read")  # noqa: SIM115
                   else path)  # type: ignore[assignment]
    try:
        while block := f.read(chunk):
            h.update(block)
            n += len(block)
    finally:
        if f is not path:
            f.close()
    return n, h.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _geo_metadata(table: pa.Table) -> bytes:
    if table.num_rows:
        b = table.column("bbox").combine_chunks()
        bbox = [pc.min(b.field("xmin")).as_py(), pc.min(b.field("ymin")).as_py(),
                pc.max(b.field("xmax")).as_py(), pc.max(b.field("ymax")).as_py()]
    else:
        bbox = []
    geo = {"version": GEOPARQUET_VERSION, "primary_column": "geometry",
           "columns": {"geometry": {
               "encoding": "WKB", "geometry_types": ["Polygon"], **({"bbox": bbox} if bbox else {}),
               "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}}}}
    return json.dumps(geo).encode()


class Manifest:
    """An immutable table of tile-years; every method returns a new Manifest."""

    def __init__(self, table: pa.Table | None = None) -> None:
        if table is None:
            table = SCHEMA.empty_table()
        for name, (typ, default) in _V2_COLUMNS.items():  # a format 1 manifest
            if name not in table.column_names:
                table = table.append_column(name, pa.array([default] * table.num_rows, typ))
        missing = [f.name for f in SCHEMA if f.name not in table.column_names]
        if missing:
            raise ManifestError(f"manifest: missing columns {', '.join(missing)}")
        self.table = table.select(SCHEMA.names).cast(SCHEMA)

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_entries(cls, entries: Iterable[TileEntry]) -> Manifest:
        import shapely

        from tessera.geo.grid import parse_tile_name

        entries = list(entries)
        cols: dict[str, list[Any]] = {n: [] for n in SCHEMA.names}
        for e in entries:
            missing = [k for k in FILE_KINDS if k not in e.files]
            if missing:
                raise ManifestError(f"{e.tile} {e.year}: no entry for file kinds {missing}")
            w, s, ea, n = parse_tile_name(e.tile).bounds
            for name, v in (("tile", e.tile), ("lon", e.lon), ("lat", e.lat), ("year", e.year),
                            ("version", e.version), ("model", e.model),
                            ("dims", int(e.dims)), ("weights", e.weights),
                            ("precision", e.precision or "fp32"), ("crs", e.crs),
                            ("transform", list(map(float, e.transform[:6]))),
                            ("width", e.width), ("height", e.height),
                            ("valid_pixels", e.valid_pixels), ("created", e.created or _now()),
                            ("bbox", {"xmin": w, "ymin": s, "xmax": ea, "ymax": n})):
                cols[name].append(v)
            cols["geometry"].append(shapely.to_wkb(shapely.box(w, s, ea, n)))
            for k in FILE_KINDS:
                f = e.files[k]
                cols[f"{k}_path"].append(f.path)
                cols[f"{k}_size"].append(int(f.size))
                cols[f"{k}_sha256"].append(f.sha256)
        m = cls(pa.table(cols, schema=SCHEMA))
        m._check_unique()
        return m

    @classmethod
    def read(cls, source: str | os.PathLike | bytes) -> Manifest:
        """From a path or the file's bytes (as fetched over HTTP)."""
        name = "manifest bytes" if isinstance(source, bytes) else str(source)
        try:
            table = pq.read_table(io.BytesIO(source) if isinstance(source, bytes) else source)
        except FileNotFoundError:
            raise ManifestError(f"{name}: no manifest there (is this a store?)") from None
        except (pa.ArrowInvalid, OSError) as exc:
            raise ManifestError(f"{name}: not a readable Parquet manifest ({exc})") from None
        try:
            return cls(table)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise ManifestError(f"{name}: columns do not match the manifest schema ({exc})"
                                ) from None

    def write(self, path: str | os.PathLike) -> Path:
        """Atomic: a temporary sibling, then rename."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {b"geo": _geo_metadata(self.table),
                b"tessera": json.dumps({"manifest_format": FORMAT_VERSION}).encode()}
        table = self.table.replace_schema_metadata(meta)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, row_group_size=16384)
        return path

    # --- access -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.table.num_rows

    def __iter__(self):
        return iter(self.entries())

    def years(self) -> list[int]:
        return sorted(set(self.table.column("year").to_pylist()))

    def tiles(self) -> list[str]:
        return sorted(set(self.table.column("tile").to_pylist()))

    @property
    def total_bytes(self) -> int:
        return int(sum(pc.sum(self.table.column(f"{k}_size")).as_py() or 0 for k in FILE_KINDS))

    def entries(self) -> list[TileEntry]:
        out = []
        for r in self.table.to_pylist():
            files = {k: FileEntry(r[f"{k}_path"], r[f"{k}_size"], r[f"{k}_sha256"])
                     for k in FILE_KINDS}
            out.append(TileEntry(r["tile"], r["lon"], r["lat"], r["year"], r["version"], r["crs"],
                                 tuple(r["transform"]), r["width"], r["height"],
                                 r["valid_pixels"], files, r["created"], r["model"],
                                 int(r["dims"]), r["weights"], r["precision"]))
        return out

    def get(self, tile: str, year: int) -> TileEntry | None:
        m = self.query(year=year, tiles=[tile])
        return m.entries()[0] if len(m) else None

    def entry(self, tile: str, year: int) -> TileEntry:
        """The tile-year, or a ManifestError saying what the store has instead."""
        e = self.get(tile, year)
        if e is not None:
            return e
        years = self.query(tiles=[tile]).years()
        if years:
            raise ManifestError(f"{tile}: year {year} is not in the store (it has "
                                f"{', '.join(map(str, years))})")
        raise ManifestError(f"{tile}: not in the store for any year (the store has "
                            f"{len(self.tiles())} tiles, years {self.years()})")

    def to_pandas(self):
        return self.table.drop(["geometry"]).to_pandas()

    # --- queries --------------------------------------------------------------------------------
    def query(self, bbox: tuple[float, float, float, float] | None = None,
              year: int | Iterable[int] | None = None, tiles: Iterable[str] | None = None
              ) -> Manifest:
        """Rows whose tile cell overlaps `bbox` (west, south, east, north; west > east crosses the
        antimeridian; touching edges do not count), of `year` (one or several) and among `tiles`."""
        t = self.table
        mask = pa.scalar(True)
        if year is not None:
            years = [int(year)] if isinstance(year, (int, np.integer)) else [int(y) for y in year]
            mask = pc.and_(mask, pc.is_in(t.column("year"), pa.array(years, pa.int16())))
        if tiles is not None:
            mask = pc.and_(mask, pc.is_in(t.column("tile"), pa.array(list(tiles), pa.string())))
        if bbox is not None:
            w, s, e, n = map(float, bbox)
            b = t.column("bbox")
            xmin, xmax = pc.struct_field(b, "xmin"), pc.struct_field(b, "xmax")
            lat_ok = pc.and_(pc.less(pc.struct_field(b, "ymin"), n),
                             pc.greater(pc.struct_field(b, "ymax"), s))
            if w <= e:
                lon_ok = pc.and_(pc.less(xmin, e), pc.greater(xmax, w))
            else:  # across the antimeridian
                lon_ok = pc.or_(pc.greater(xmax, w), pc.less(xmin, e))
            mask = pc.and_(mask, pc.and_(lat_ok, lon_ok))
        if isinstance(mask, pa.Scalar):
            return Manifest(t)
        return Manifest(t.filter(mask))

    # --- provenance -------------------------------------------------------------------------------
    def models(self, year: int) -> dict[tuple[str, int, str, str], list[str]]:
        """The distinct (model, dims, weights, precision) of a year, each with its tiles."""
        found: dict[tuple[str, int, str, str], list[str]] = {}
        cols = self.query(year=year).table.select(["model", "dims", "weights", "precision",
                                                   "tile"])
        for model, dims, weights, precision, tile in zip(*(c.to_pylist() for c in cols.columns)):
            found.setdefault((model, int(dims), weights, precision or "fp32"), []).append(tile)
        return found  # from the columns: no tile entry (nor its georeferencing) is built

    def check_one_model(self, year: int, adding: TileEntry | None = None) -> None:
        """Refuse a year whose tiles come from different models, widths, weights or precisions (with
        `adding`: refuse adding a tile that would make it so; the tile it replaces, if any,
        does not count)."""
        found = self.models(year)
        if adding is not None:
            others = {k: [t for t in v if t != adding.tile] for k, v in found.items()}
            found = {k: v for k, v in others.items() if v}
            if found and adding.provenance not in found:
                (key, tiles), = list(found.items())[:1]
                held = next(e for e in self.query(year=year, tiles=tiles[:1]).entries())
                raise ManifestError(
                    f"{adding.tile} {year}: the store's {year} holds embeddings of "
                    f"{held.describe_model()} (e.g. {tiles[0]}, {len(tiles)} tiles); refusing to "
                    f"add embeddings of {adding.describe_model()}: one model per year (write "
                    "into another store, or re-embed the year with one model)")
            return
        if len(found) > 1:
            parts = []
            for tiles in found.values():
                e = next(x for x in self.query(year=year, tiles=tiles[:1]).entries())
                parts.append(f"{e.describe_model()} in {len(tiles)} tiles (e.g. {tiles[0]})")
            raise ManifestError(f"year {year} mixes embeddings of different models: "
                                f"{'; '.join(parts)}; they are not comparable")

    # --- combination ------------------------------------------------------------------------------
    def _keys(self) -> list[tuple[str, int]]:
        return list(zip(self.table.column("tile").to_pylist(), self.table.column("year").to_pylist()))

    def _check_unique(self) -> None:
        dups = [k for k, n in Counter(self._keys()).items() if n > 1]
        if dups:
            raise ManifestError(f"manifest: {dups[0][0]} {dups[0][1]} appears more than once")

    def upsert(self, other: Manifest | Iterable[TileEntry]) -> Manifest:
        """This manifest with `other`'s rows added, replacing rows of the same tile and year."""
        other = other if isinstance(other, Manifest) else Manifest.from_entries(other)
        other._check_unique()
        new = set(other._keys())
        keep = pa.array([k not in new for k in self._keys()], pa.bool_())
        return Manifest(pa.concat_tables([self.table.filter(keep), other.table]))

    def merge(self, other: Manifest, on_conflict: str = "error") -> Manifest:
        """Union of two manifests (e.g. two machines each wrote part of a store). A tile-year in
        both with the same file hashes is kept once; with different hashes `on_conflict`
        decides: "error" (default) names it, "newer" keeps the row created later."""
        if on_conflict not in ("error", "newer"):
            raise InputError(f"on_conflict {on_conflict!r}: expected 'error' or 'newer'")
        mine = {(e.tile, e.year): e for e in self.entries()}
        theirs = {(e.tile, e.year): e for e in other.entries()}
        out = dict(mine)
        for k, e in theirs.items():
            cur = mine.get(k)
            if cur is None or {f: v.sha256 for f, v in cur.files.items()} == \
                    {f: v.sha256 for f, v in e.files.items()}:
                out.setdefault(k, e)
                continue
            if on_conflict == "error":
                raise ManifestError(f"merge: {k[0]} {k[1]} differs between the manifests "
                                    f"(created {cur.created} vs {e.created}); pass "
                                    "on_conflict='newer' to keep the later one")
            out[k] = e if e.created > cur.created else cur
        merged = Manifest.from_entries(sorted(out.values(), key=lambda e: (e.year, e.tile)))
        for year in merged.years():
            merged.check_one_model(year)
        return merged
