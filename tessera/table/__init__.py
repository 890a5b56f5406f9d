"""Point tables: embed labelled sample time series given as a long table ("embed-points").

The input is long form, one row per (sample_id, date): CSV or (Geo)Parquet with one column per
band. S2 and S1 may share rows (e.g. the WorldCereal monthly extractions, one row per month with
every band) or sit on separate rows. Columns:

- an id column (`sample_id`, or `id_column`) and a date column (`date`, `timestamp` or `time`,
  or `date_column`);
- Sentinel-2 bands B02 B03 B04 B05 B06 B07 B08 B8A B11 B12 (any column order; B01 B09 B10 are
  recognised and ignored, the model does not use them);
- Sentinel-1 VV and VH, with an optional `orbit` column (ascending / descending; default
  ascending);
- optionally `SCL` (scene classification, SPEC 1) or a boolean `valid` marking usable S2 rows.

Encodings (`TableOptions`): S2 as reflectance x 10 000 (default, BOA offset already removed -
this package never applies it) or float reflectance; S1 as standard backscatter dB (default),
linear power, the TESSERA int16 code, or amplitude DN with an offset (dB = 20 log10(DN) +
offset; WorldCereal uses -83). Values equal to a `nodata` value, or NaN, are missing.

On S1 units: "dB" here is the usual 10 log10(linear power) that GEE, SNAP, openEO and the
WorldCereal extractions give. The published TESSERA code applies 20 log10 to the linear RTC
power (SPEC 1, kept verbatim in `bands.s1_linear_to_int16`), so its int16 code holds twice the
standard dB value; `bands.s1_db_to_int16(d)` encodes a standard dB value d exactly as the
linear-power path encodes 10 ** (d / 10). (The S1 means of SPEC 2, 5484 / 3004, decode
to -22.6 / -35.0 in that doubled unit, i.e. -11.3 / -17.5 dB, typical land VV / VH.)

Per row: an S2 observation exists if any S2 band has a value; it is valid if every band has one
and the SCL class (or the `valid` column) says so. An S1 observation exists if VV or VH has a
value; it is valid iff VV != 0 or VH != 0 in the int16 code (SPEC 1). Observations are sorted by
date; the day of year comes from the date, so the dates must lie in one calendar year (`year`
keeps one). A sample without any S2 row gets one empty, invalid S2 step at day 180 (the rule
SPEC 5 gives for an empty S1 orbit) and is flagged `FLAG_NO_S2`.

The output has one row per sample (sorted by id): the id, `emb_000`.. float32 (or int8 with a
float32 `scale` column), `flags` (FLAG_* bits of `tessera.infer`) and the counts of valid S2 and
S1 observations (`n_s2_valid`, `n_s1_valid`).

Layout of the package, by job (importing it does not import torch; only `embed_table` and
`embed_points_file` load the model, and they import `tessera.infer` when called):
- `options`: `TableOptions`, the accepted encodings and column names, `TableWarning`;
- `read`: CSV / Parquet files -> DataFrame (`read_table`);
- `columns`: which column holds which band, id, date or auxiliary field;
- `values`: numbers, dates, S2 / S1 encodings, `valid` and `orbit` columns, duplicates;
- `prepare`: per-sensor observation streams and padded d-pixels (`prepare_table`,
  `PreparedTable`, `table_to_dpixels`);
- `embed`: `embed_table`, `embed_points_file`, `write_parquet`;
- `wide`: the WorldCereal WIDE layout -> the long layout (`wide_to_long`, `WORLDCEREAL_OPTIONS`).
The band filling of `fill_missing` is `tessera.bands.fill_s2_bands` / `tessera.bands.FILL_RULES`.
"""

from __future__ import annotations

from tessera.bands import FILL_RULES
from tessera.errors import TableError
from tessera.table.embed import (PointsSummary, embed_points_file, embed_table,
                                 embedding_columns, write_parquet)
from tessera.table.options import TableOptions, TableWarning
from tessera.table.prepare import PreparedTable, Stream, prepare_table, table_to_dpixels
from tessera.table.read import read_table

__all__ = ["FILL_RULES", "PointsSummary", "PreparedTable", "Stream", "TableError", "TableOptions",
           "TableWarning", "embed_points_file", "embed_table", "embedding_columns",
           "prepare_table", "read_table", "table_to_dpixels", "write_parquet"]
