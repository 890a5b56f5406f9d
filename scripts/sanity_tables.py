"""Parquet feature tables from the two NDVI-only data sets of ../shared/datasets, for checking
the evaluation engine (`tessera head evaluate TABLE --features 'ndvi_*'`; see the README,
"Sanity tables (not Sentinel)").

    .venv/bin/python scripts/sanity_tables.py -o /tmp/sanity [--datasets DIR] [--clouds keep]

Writes ucr_crop_train.parquet, ucr_crop_test.parquet and eolearn_lulc.parquet into the output
folder, which must lie outside this repository (the data is not to be copied into it). The
conversion itself is `tessera.downstream.sanity_tables`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"


def main(argv: list[str] | None = None) -> int:
    from tessera.downstream.sanity_tables import CLOUDS, eolearn_lulc_table, ucr_crop_tables
    from tessera.errors import TesseraError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, required=True, help="output folder (outside "
                    "the repository)")
    ap.add_argument("--datasets", type=Path, default=DATASETS, help=f"default {DATASETS}")
    ap.add_argument("--clouds", choices=CLOUDS, default="interpolate",
                    help="eo-learn: cloudy dates interpolated in time (default) or kept")
    ap.add_argument("--block-px", type=int, default=20, help="eo-learn: block edge in pixels "
                    "of the `block` column (default 20 = 200 m)")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    if out == ROOT or ROOT in out.parents:
        ap.error(f"{out}: inside the repository; write the tables elsewhere (e.g. /tmp/sanity)")
    try:
        for name, path in ucr_crop_tables(args.datasets / "ucr_crop_formosat2", out,
                                          overwrite=args.overwrite).items():
            print(f"wrote {path} (UCR Crop, {name})")
        path = eolearn_lulc_table(args.datasets / "eolearn_testeopatch", out,
                                  clouds=args.clouds, block_px=args.block_px,
                                  overwrite=args.overwrite)
        print(f"wrote {path} (eo-learn LULC pixels)")
    except TesseraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
