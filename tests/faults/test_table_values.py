"""Point tables: an infinite band value is no observation (read as missing, with a warning), so
a pixel whose only S1 value is inf is flagged "no valid S1", never counted as valid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tessera.errors import TableError
from tessera.table import TableWarning, prepare_table


def _table():
    rows = []
    for d, day in enumerate(("2022-03-01", "2022-05-01", "2022-07-01")):
        rows.append({"sample_id": "a", "date": day, "B02": 500, "B03": 600, "B04": 700,
                     "B05": 800, "B06": 900, "B07": 1000, "B08": 1100, "B8A": 1200,
                     "B11": 1300, "B12": 1400, "VV": -11.0 - d, "VH": -17.0 - d})
    return pd.DataFrame(rows)


def test_an_infinite_vv_is_not_a_valid_observation():
    df = _table()
    df["VV"] = df["VV"].astype(float)
    df["VH"] = df["VH"].astype(float)
    df.loc[1, "VV"] = np.inf
    df.loc[1, "VH"] = np.nan  # VV was this row's only S1 value
    with pytest.warns(TableWarning, match=r"column 'VV': 1 infinite value.*row 2"):
        t = prepare_table(df, year=2022)
    n2, n1 = t.counts()
    assert n2.tolist() == [3] and n1.tolist() == [2]  # the inf row is no S1 observation


def test_an_infinite_s2_band_makes_that_observation_invalid():
    df = _table()
    df["B04"] = df["B04"].astype(float)
    df.loc[0, "B04"] = -np.inf
    with pytest.warns(TableWarning, match="B04"):
        t = prepare_table(df, year=2022)
    n2, _ = t.counts()
    assert n2.tolist() == [2]


def test_a_text_value_is_still_an_error_naming_the_row():
    df = _table().astype({"VV": object})
    df.loc[2, "VV"] = "n/a?"
    with pytest.raises(TableError, match=r"column 'VV', row 3"):
        prepare_table(df, year=2022)
