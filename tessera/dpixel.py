"""The d-pixel data model: batches of pixel time series, and the published tile folder layout.

A d-pixel is the irregular annual history of one pixel. `DPixelBatch` holds N of them as padded
arrays plus masks, so pixels may have different dates (point tables) or share them (tiles).
`Tile` reads the published folder layout (SPEC section 1) lazily through memory maps and checks
every file before any pixel is used; `write_tile` writes one atomically.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tessera.atomic import atomic_dir
from tessera.bands import S1_POLS, S2_BANDS, s1_valid
from tessera.errors import TileFormatError

N_S2 = len(S2_BANDS)
N_S1 = len(S1_POLS)


@dataclasses.dataclass
class DPixelBatch:
    """N d-pixels, padded along time.

    `*_present` marks real observations (False = padding); S2 validity comes from the cloud mask
    (`s2_valid`), S1 validity from the values (VV != 0 or VH != 0). S2 values are reflectance x
    10 000 in model band order; S1 values are the TESSERA int16 code [VV, VH]. Orbits are kept
    separate, each with its own days of year (1-366).
    """

    s2: np.ndarray  # (N, T2, 10)
    s2_doy: np.ndarray  # (N, T2) int
    s2_valid: np.ndarray  # (N, T2) bool
    s2_present: np.ndarray  # (N, T2) bool
    s1_asc: np.ndarray  # (N, Ta, 2) int16 code
    s1_asc_doy: np.ndarray  # (N, Ta)
    s1_asc_present: np.ndarray  # (N, Ta) bool
    s1_desc: np.ndarray  # (N, Td, 2)
    s1_desc_doy: np.ndarray  # (N, Td)
    s1_desc_present: np.ndarray  # (N, Td) bool

    def __post_init__(self) -> None:
        self.validate()

    def __len__(self) -> int:
        return int(self.s2.shape[0])

    @property
    def s1_asc_valid(self) -> np.ndarray:
        return s1_valid(self.s1_asc) & self.s1_asc_present

    @property
    def s1_desc_valid(self) -> np.ndarray:
        return s1_valid(self.s1_desc) & self.s1_desc_present

    def validate(self) -> None:
        """Check shapes and day-of-year ranges; raise ValueError naming the field."""
        n = self.s2.shape[0]

        def check(name: str, arr: np.ndarray, ndim: int, last: int | None = None) -> None:
            if arr.ndim != ndim or arr.shape[0] != n or (last is not None and arr.shape[-1] != last):
                want = f"{ndim}-d (N={n}, T{', ' + str(last) if last else ''})"
                raise ValueError(f"DPixelBatch.{name}: shape {arr.shape}, expected {want}")

        check("s2", self.s2, 3, N_S2)
        for orbit in ("s1_asc", "s1_desc"):
            check(orbit, getattr(self, orbit), 3, N_S1)
        groups = {"s2": ("s2_doy", "s2_valid", "s2_present"),
                  "s1_asc": ("s1_asc_doy", "s1_asc_present"),
                  "s1_desc": ("s1_desc_doy", "s1_desc_present")}
        for values, fields in groups.items():
            t = getattr(self, values).shape[1]
            for f in fields:
                arr = getattr(self, f)
                if arr.shape != (n, t):
                    raise ValueError(f"DPixelBatch.{f}: shape {arr.shape}, expected {(n, t)} "
                                     f"to match {values}")
            doy = getattr(self, fields[0])
            present = getattr(self, fields[-1])
            bad = present & ((doy < 1) | (doy > 366))
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise ValueError(f"DPixelBatch.{fields[0]}: day of year {int(doy[i, j])} at pixel "
                                 f"{i}, step {j}; expected 1-366")

    def take(self, idx: np.ndarray | slice) -> "DPixelBatch":
        """A sub-batch of the given pixels."""
        return DPixelBatch(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})

    @classmethod
    def from_shared_dates(cls, s2: np.ndarray, s2_valid: np.ndarray, s2_doy: np.ndarray,
                          s1_asc: np.ndarray, s1_asc_doy: np.ndarray,
                          s1_desc: np.ndarray, s1_desc_doy: np.ndarray) -> "DPixelBatch":
        """Build a batch whose pixels share one date list per sensor (the tile case).

        Values are pixel-major: s2 (N, T2, 10), s2_valid (N, T2), s1_* (N, T, 2); dates (T,).
        """
        n = s2.shape[0]

        def tile_dates(doy: np.ndarray) -> np.ndarray:
            return np.broadcast_to(np.asarray(doy, dtype=np.int16)[None, :], (n, len(doy)))

        def all_present(doy: np.ndarray) -> np.ndarray:
            return np.ones((n, len(doy)), dtype=bool)

        return cls(
            s2=s2, s2_doy=tile_dates(s2_doy), s2_valid=np.asarray(s2_valid, dtype=bool),
            s2_present=all_present(s2_doy),
            s1_asc=s1_asc, s1_asc_doy=tile_dates(s1_asc_doy), s1_asc_present=all_present(s1_asc_doy),
            s1_desc=s1_desc, s1_desc_doy=tile_dates(s1_desc_doy),
            s1_desc_present=all_present(s1_desc_doy),
        )


# --- the published tile folder layout ---------------------------------------------------------

#: file name -> (dtype(s) accepted, description of the shape) for error messages.
TILE_FILES: dict[str, tuple[tuple[str, ...], str]] = {
    "bands.npy": (("uint16",), "(T_s2, H, W, 10)"),
    "masks.npy": (("uint8", "bool"), "(T_s2, H, W)"),
    "doys.npy": (("int16", "int32", "int64", "uint16"), "(T_s2,)"),
    "sar_ascending.npy": (("int16",), "(T_a, H, W, 2)"),
    "sar_ascending_doy.npy": (("int16", "int32", "int64", "uint16"), "(T_a,)"),
    "sar_descending.npy": (("int16",), "(T_d, H, W, 2)"),
    "sar_descending_doy.npy": (("int16", "int32", "int64", "uint16"), "(T_d,)"),
}


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy file, read from its header only; a truncated file is an error."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            header_len = f.tell()
    except FileNotFoundError:
        raise
    except Exception as exc:  # corrupt or not a .npy
        raise TileFormatError(f"{path}: not a readable .npy file ({exc})") from None
    if dtype.hasobject:
        raise TileFormatError(f"{path}: holds Python objects (dtype {dtype}); expected an array "
                              "of numbers")
    if fortran:
        raise TileFormatError(f"{path}: Fortran-ordered array; expected C order")
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = path.stat().st_size - header_len
    if have < need:
        raise TileFormatError(f"{path}: file is truncated ({have} of the {need} data bytes its "
                              f"header announces for {shape} {dtype})")
    return tuple(shape), dtype


def _load(path: Path, shape: tuple[int, ...], mmap: bool) -> np.ndarray:
    """The array of a checked .npy file: memory-mapped unless empty (empty files cannot be)."""
    if mmap and int(np.prod(shape)) > 0:
        return np.load(path, mmap_mode="r")
    return np.load(path)


@dataclasses.dataclass
class Tile:
    """A validated tile folder in the published layout; arrays are memory-mapped.

    Use `Tile.open(path)`. `read_rows(r0, r1)` yields the d-pixels of rows r0..r1 (row-major),
    so a tile of any size is processed in bounded memory.
    """

    path: Path
    bands: np.ndarray
    masks: np.ndarray
    doys: np.ndarray
    sar_ascending: np.ndarray
    sar_ascending_doy: np.ndarray
    sar_descending: np.ndarray
    sar_descending_doy: np.ndarray
    roi: np.ndarray
    crs: Any
    transform: Any

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.roi.shape[0]), int(self.roi.shape[1])

    @classmethod
    def open(cls, path: str | os.PathLike, mmap: bool = True) -> "Tile":
        path = Path(path)
        if not path.is_dir():
            raise TileFormatError(f"{path}: not a tile folder (directory not found)")
        missing = [name for name in [*TILE_FILES, "roi.tiff"] if not (path / name).exists()]
        if missing:
            raise TileFormatError(
                f"{path}: missing {', '.join(missing)}; a tile folder needs {', '.join(TILE_FILES)} "
                "and roi.tiff (an orbit without dates is stored as zero-length arrays)")
        headers = {}
        for name, (dtypes, desc) in TILE_FILES.items():
            shape, dtype = npy_header(path / name)
            if dtype.name not in dtypes:
                raise TileFormatError(f"{path / name}: dtype {dtype}, expected {' or '.join(dtypes)}")
            want_ndim = desc.count(",") + (0 if desc.endswith(",)") else 1)
            if len(shape) != want_ndim:
                raise TileFormatError(f"{path / name}: shape {shape}, expected {desc}")
            headers[name] = shape

        t2, h, w, nb = headers["bands.npy"]
        if nb != N_S2:
            raise TileFormatError(f"{path / 'bands.npy'}: {nb} bands in the last axis, expected "
                                  f"{N_S2} in the order {', '.join(S2_BANDS)}")
        if headers["masks.npy"] != (t2, h, w):
            raise TileFormatError(f"{path / 'masks.npy'}: shape {headers['masks.npy']}, expected "
                                  f"{(t2, h, w)} to match bands.npy")
        if headers["doys.npy"] != (t2,):
            raise TileFormatError(f"{path / 'doys.npy'}: {headers['doys.npy'][0]} dates, expected "
                                  f"{t2} (one per time step of bands.npy)")
        for orbit in ("ascending", "descending"):
            sar, doy = f"sar_{orbit}.npy", f"sar_{orbit}_doy.npy"
            ts, hs, ws, npol = headers[sar]
            if (hs, ws, npol) != (h, w, N_S1):
                raise TileFormatError(f"{path / sar}: shape {headers[sar]}, expected "
                                      f"({ts}, {h}, {w}, 2) with [VV, VH] last")
            if headers[doy] != (ts,):
                raise TileFormatError(f"{path / doy}: {headers[doy][0]} dates, expected {ts} "
                                      f"(one per time step of {sar})")

        arrays = {name[:-4]: _load(path / name, headers[name], mmap) for name in TILE_FILES}
        for name in ("doys", "sar_ascending_doy", "sar_descending_doy"):
            d = np.asarray(arrays[name])
            if d.size and (d.min() < 1 or d.max() > 366):
                bad = d[(d < 1) | (d > 366)][0]
                raise TileFormatError(f"{path / (name + '.npy')}: day of year {int(bad)}; "
                                      "expected values in 1-366")
            down = np.flatnonzero(np.diff(d.astype(np.int64)) < 0)
            if down.size:
                k = int(down[0])
                raise TileFormatError(f"{path / (name + '.npy')}: day of year {int(d[k + 1])} at "
                                      f"step {k + 1} follows {int(d[k])}; expected increasing "
                                      "days (dates in time order)")
            arrays[name] = d.astype(np.int16)

        roi, crs, transform = read_roi(path / "roi.tiff")
        if roi.shape != (h, w):
            raise TileFormatError(f"{path / 'roi.tiff'}: raster is {roi.shape[0]} x {roi.shape[1]}, "
                                  f"expected {h} x {w} to match bands.npy")
        return cls(path=path, roi=roi, crs=crs, transform=transform, **arrays)

    def recorded_year(self) -> int | None:
        """The calendar year the tile's sidecar records (`preprocess.json` of `tessera
        preprocess`, `simulation.json` of `tessera simulate`), or None."""
        import json

        for name, key in (("preprocess.json", ("year",)), ("simulation.json", ("config", "year"))):
            try:
                doc = json.loads((self.path / name).read_text())
            except (OSError, ValueError):
                continue
            for k in key:
                doc = doc.get(k) if isinstance(doc, dict) else None
            if isinstance(doc, int) and not isinstance(doc, bool):
                return doc
        return None

    def read_rows(self, r0: int, r1: int) -> DPixelBatch:
        """The d-pixels of rows [r0, r1), all columns, row-major."""
        def pixel_major(a: np.ndarray) -> np.ndarray:
            a = read_row_slab(a, r0, r1)  # (T, h, W, ...)
            n = a.shape[1] * a.shape[2]
            return np.ascontiguousarray(np.moveaxis(a, 0, 2)).reshape(n, a.shape[0], *a.shape[3:])

        return DPixelBatch.from_shared_dates(
            s2=pixel_major(self.bands), s2_valid=pixel_major(self.masks).astype(bool),
            s2_doy=self.doys,
            s1_asc=pixel_major(self.sar_ascending), s1_asc_doy=self.sar_ascending_doy,
            s1_desc=pixel_major(self.sar_descending), s1_desc_doy=self.sar_descending_doy,
        )


def read_row_slab(a: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Rows [r0, r1) of every date of a (T, H, W, ...) array, as a new array.

    For a memory-mapped file this is one plain read per date rather than page faults on the
    mapping: mapped reads pull the kernel's read-around window into the process (measured: about
    6x the bytes asked for on 500-pixel-wide tiles), which made resident memory grow with the
    tile width. Plain reads still use the page cache, but leave the process's memory flat.
    """
    filename = getattr(a, "filename", None)
    if not isinstance(a, np.memmap) or filename is None or a.size == 0:
        return np.array(a[:, r0:r1])
    out = np.empty((a.shape[0], r1 - r0, *a.shape[2:]), dtype=a.dtype)
    with open(filename, "rb", buffering=0) as f:
        for t in range(a.shape[0]):
            view = memoryview(out[t]).cast("B")
            f.seek(a.offset + t * a.strides[0] + r0 * a.strides[1])
            if f.readinto(view) != view.nbytes:
                raise TileFormatError(f"{filename}: short read at date index {t}")
    return out


def release_pages(*arrays: np.ndarray) -> None:
    """Drop the resident pages of memory-mapped arrays (flushing writable ones first), so that
    streaming through a large file keeps the resident memory flat. Plain arrays are ignored."""
    import mmap

    for a in arrays:
        m = getattr(a, "_mmap", None)
        if m is None or not hasattr(m, "madvise"):
            continue
        if a.flags.writeable:
            m.flush()
        m.madvise(mmap.MADV_DONTNEED)


def read_roi(path: Path) -> tuple[np.ndarray, Any, Any]:
    """Read roi.tiff: (mask uint8 (H, W), CRS, affine transform)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            if src.count != 1:
                raise TileFormatError(f"{path}: {src.count} bands, expected 1 (the ROI mask)")
            if src.crs is None:
                raise TileFormatError(f"{path}: no CRS; expected the patch's UTM CRS")
            return src.read(1).astype(np.uint8), src.crs, src.transform
    except RasterioIOError as exc:
        raise TileFormatError(f"{path}: not a readable GeoTIFF ({exc})") from None


def write_roi(path: Path, roi: np.ndarray, crs: Any, transform: Any) -> None:
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", height=roi.shape[0], width=roi.shape[1],
                       count=1, dtype="uint8", crs=crs, transform=transform,
                       compress="deflate") as dst:
        dst.write(roi.astype(np.uint8), 1)


def write_tile(path: str | os.PathLike, *, bands: np.ndarray, masks: np.ndarray, doys: np.ndarray,
               sar_ascending: np.ndarray, sar_ascending_doy: np.ndarray,
               sar_descending: np.ndarray, sar_descending_doy: np.ndarray,
               roi: np.ndarray, crs: Any, transform: Any, extra: dict[str, np.ndarray] | None = None,
               add_files: Callable[[Path], None] | None = None) -> Path:
    """Write a tile folder atomically (temporary sibling folder, validated with `Tile.open`,
    then renamed; an existing folder is replaced), so a tile that does not validate is never
    left in place. `extra`: more arrays saved as `{name}.npy`; `add_files(folder)` writes any
    other file (sidecars) into the folder before it is published."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        arrays = {"bands": (bands, np.uint16), "masks": (masks, np.uint8), "doys": (doys, np.int16),
                  "sar_ascending": (sar_ascending, np.int16),
                  "sar_ascending_doy": (sar_ascending_doy, np.int16),
                  "sar_descending": (sar_descending, np.int16),
                  "sar_descending_doy": (sar_descending_doy, np.int16)}
        for name, (arr, dtype) in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr, dtype=dtype))
        for name, arr in (extra or {}).items():
            np.save(tmp / f"{name}.npy", arr)
        write_roi(tmp / "roi.tiff", np.asarray(roi), crs, transform)
        if add_files is not None:
            add_files(tmp)
        Tile.open(tmp)  # validate before publishing
    return path
