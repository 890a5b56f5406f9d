"""`tessera embed-points --keep` (input columns carried into the output, one value per sample)
and the WIDE WorldCereal layout (`--wide`, or detected), on tiny synthetic tables and a handful
of samples of the real UGA/SSD 2017 wide table; the outputs read back as labels."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fixtures import shared_path
from tessera.bands import S2_BANDS
from tessera.downstream.labels import LabelWarning, join_embeddings, read_labels

UGA = ("worldcereal", "extractions", "2017_UGA_SSD_public_extractions_wide.parquet")
FAST = ["--model", "tiny", "--device", "cpu"]


@pytest.fixture(scope="module")
def cli():
    pytest.importorskip("torch")
    from tessera.cli import app
    return app


def run(app, *args):
    return CliRunner().invoke(app, ["embed-points", *map(str, args)])


def emb(df: pd.DataFrame) -> np.ndarray:
    return df[[c for c in df.columns if c.startswith("emb_")]].to_numpy(np.float32)


def long_table(n: int = 4, seed: int = 0) -> pd.DataFrame:
    """Monthly rows of S2 (x 10 000) and S1 (dB) per sample, a label, coordinates and a note
    that changes from row to row."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        for m in range(1, 13):
            r = {"sample_id": f"p{i}", "date": f"2022-{m:02d}-15", "crop": ["wheat", "maize"][i % 2],
                 "lon": 5.9 + i / 100, "lat": 45.0, "note": f"{i}-{m}",
                 "VV": rng.uniform(-14, -8), "VH": rng.uniform(-22, -15)}
            r.update({b: float(rng.integers(300, 4000)) for b in S2_BANDS})
            rows.append(r)
    return pd.DataFrame(rows)


def wide_table(n: int = 3, steps: int = 12, seed: int = 1) -> pd.DataFrame:
    """The WIDE WorldCereal layout: uint16 S2 x 10 000, S1 amplitude DN (dB = 20 log10 - 83)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {"sample_id": [f"w{i}" for i in range(n)],
                               "start_date": ["2021-01-01"] * n,
                               "ewoc_code": [1101, 1200, 1101][:n],
                               "lon": [33.5, 33.6, 33.7][:n], "lat": [4.7, 4.8, 4.9][:n]}
    for k in range(steps):
        for b in S2_BANDS:
            res = "10m" if b in ("B02", "B03", "B04", "B08") else "20m"
            cols[f"OPTICAL-{b}-ts{k}-{res}"] = rng.integers(300, 4000, n).astype(np.uint16)
        for pol, db in (("VV", -10.0), ("VH", -17.0)):
            dn = 10 ** ((db + rng.normal(0, 1, n) + 83) / 20)
            cols[f"SAR-{pol}-ts{k}-20m"] = dn.astype(np.uint16)
    return pd.DataFrame(cols)


def test_keep_columns_first_row_per_sample(cli, tmp_path):
    df = long_table()
    path = tmp_path / "long.csv"
    df.to_csv(path, index=False)
    plain = tmp_path / "plain.parquet"
    res = run(cli, path, "-o", plain, *FAST)
    assert res.exit_code == 0, res.output
    out = tmp_path / "kept.parquet"
    res = run(cli, path, "-o", out, *FAST, "--keep", "crop,lon,lat", "--keep", "note")
    assert res.exit_code == 0, res.output
    assert "keep column 'note' varies within 4 samples; the first row's value is kept" in (
        " ".join(res.stderr.split()))
    assert "kept crop, lon, lat, note" in res.stdout
    got = pd.read_parquet(out)
    assert list(got.columns[:5]) == ["sample_id", "crop", "lon", "lat", "note"]
    assert got["crop"].tolist() == ["wheat", "maize", "wheat", "maize"]
    assert got["note"].tolist() == ["0-1", "1-1", "2-1", "3-1"]  # the first row's
    np.testing.assert_allclose(got["lon"], [5.9, 5.91, 5.92, 5.93])
    np.testing.assert_array_equal(emb(got), emb(pd.read_parquet(plain)))
    # the output reads back as labels, joined without a store
    labels = read_labels(out, label="crop", keep=["note"])
    assert labels.kind == "embedded" and labels.classes == ["maize", "wheat"]
    j = join_embeddings(labels)
    np.testing.assert_array_equal(j.X, emb(got))
    assert j.y.tolist() == [1, 0, 1, 0] and j.model == "tiny"


def test_keep_errors_are_one_line(cli, tmp_path):
    path = tmp_path / "long.csv"
    long_table(2).to_csv(path, index=False)
    for keep, what in (("crop,nope", "keep column 'nope': the table has no such column"),
                       ("flags", "keep column 'flags': the output has a column")):
        res = run(cli, path, "-o", tmp_path / "o.parquet", *FAST, "--keep", keep)
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert lines[0].startswith("error:") and "long.csv" in res.stderr
        assert what in " ".join(res.stderr.split()) and "Traceback" not in res.output
        assert not (tmp_path / "o.parquet").exists()


def test_wide_flag_and_detection(cli, tmp_path):
    path = tmp_path / "wide.parquet"
    wide_table().to_parquet(path)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    res = run(cli, path, "-o", a, *FAST, "--wide", "--keep", "ewoc_code,lon,lat")
    assert res.exit_code == 0, res.output
    assert "3 samples from 36 rows" in res.stdout and "WIDE" not in res.stdout
    res = run(cli, path, "-o", b, *FAST, "--keep", "ewoc_code")
    assert res.exit_code == 0, res.output
    assert "read as the WIDE WorldCereal layout" in res.stdout
    ga, gb = pd.read_parquet(a), pd.read_parquet(b)
    assert ga["ewoc_code"].tolist() == [1101, 1200, 1101] and ga["sample_id"].tolist() == [
        "w0", "w1", "w2"]
    np.testing.assert_array_equal(emb(ga), emb(gb))
    assert (ga["n_s2_valid"] == 12).all() and (ga["n_s1_valid"] == 12).all()
    # the WorldCereal encodings are the wide defaults: the same as giving them explicitly
    c = tmp_path / "c.parquet"
    res = run(cli, path, "-o", c, *FAST, "--wide", "--s2-pattern", "S2-L2A-{band}",
              "--s1-pattern", "S1-SIGMA0-{pol}", "--s1-encoding", "amplitude", "--nodata",
              "65535", "--fill-missing")
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(emb(pd.read_parquet(c)), emb(ga))
    # a long table is not taken for wide
    long = tmp_path / "long.csv"
    long_table(2).to_csv(long, index=False)
    res = run(cli, long, "-o", tmp_path / "d.parquet", *FAST)
    assert res.exit_code == 0 and "WIDE" not in res.stdout


def test_uga_ssd_handful(cli, tmp_path):
    src = shared_path(*UGA)
    df = pd.read_parquet(src)
    few = df.groupby("sampling_label", sort=True).head(1).head(5)
    assert few["sampling_label"].nunique() == 5
    path = tmp_path / "uga5.parquet"
    few.to_parquet(path)
    out = tmp_path / "uga5_emb.parquet"
    res = run(cli, path, "-o", out, *FAST, "--year", "2017", "--keep",
              "ewoc_code,sampling_label,lon,lat,h3_l3_cell")
    assert res.exit_code == 0, res.output
    assert "read as the WIDE WorldCereal layout" in res.stdout
    got = pd.read_parquet(out)
    want = few.set_index("sample_id").loc[got["sample_id"]]
    assert len(got) == 5
    assert got["ewoc_code"].tolist() == want["ewoc_code"].tolist()
    assert got["sampling_label"].tolist() == want["sampling_label"].tolist()
    assert np.isfinite(emb(got)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LabelWarning)
        j = join_embeddings(read_labels(out, label="sampling_label", group="h3_l3_cell"))
    assert j.X.shape[1] == 128 and len(j) + sum(j.dropped.values()) == 5
    np.testing.assert_allclose(j.lon, got["lon"][j.table["label_row"]])
