"""Point tables (`tessera.table`, `tessera embed-points`): parsing, encodings, errors, CLI."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fixtures import shared_path
from tessera.bands import S2_BANDS, s1_db_to_int16, s1_linear_to_int16
from tessera.infer import FLAG_NO_S1, FLAG_NO_S2
from tessera.table import (FILL_RULES, TableError, TableOptions, TableWarning, embed_table,
                           prepare_table, read_table, table_to_dpixels)

S2_ORDER = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
FRA = ("worldcereal", "extractions", "2022_FRA_LPIS_POLY_110.geoparquet")


def make_table(n_samples: int = 6, n_s2: int = 20, n_asc: int = 9, n_desc: int = 7,
               seed: int = 0, year: int = 2022) -> pd.DataFrame:
    """S2 rows (with SCL, ~25 % cloudy) and S1 rows (dB, with orbit) on separate rows."""
    rng = np.random.default_rng(seed)
    start = np.datetime64(f"{year}-01-01")
    rows = []
    for i in range(n_samples):
        sid = f"s{i:02d}"
        for d in np.sort(rng.choice(365, n_s2, replace=False)):
            scl = int(rng.choice([4, 5, 8, 9, 3, 4, 4, 6]))
            r = {"sample_id": sid, "date": start + np.timedelta64(int(d), "D"), "SCL": scl}
            r.update({b: float(rng.integers(100, 6000)) for b in S2_ORDER})
            rows.append(r)
        for orbit, n in (("ascending", n_asc), ("descending", n_desc)):
            for d in np.sort(rng.choice(365, n, replace=False)):
                rows.append({"sample_id": sid, "date": start + np.timedelta64(int(d), "D"),
                             "orbit": orbit, "VV": float(rng.uniform(-16, -6)),
                             "VH": float(rng.uniform(-24, -13))})
    df = pd.DataFrame(rows)
    df["date"] = pd.to_datetime(df["date"])
    return df[["sample_id", "date", "orbit", "SCL", *S2_ORDER, "VV", "VH"]]


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture(scope="module")
def base(table, tiny_model) -> pd.DataFrame:
    return _embed(table, tiny_model)


def _embed(df, model, **kw) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TableWarning)
        return embed_table(df, model=model, device="cpu", **kw)


def _emb(out: pd.DataFrame) -> np.ndarray:
    return out.filter(like="emb_").to_numpy(dtype=np.float32)


def _same(a: pd.DataFrame, b: pd.DataFrame, exact: bool = True) -> None:
    assert list(a["sample_id"]) == list(b["sample_id"])
    if exact:
        np.testing.assert_array_equal(_emb(a), _emb(b))
    else:
        np.testing.assert_allclose(_emb(a), _emb(b), atol=2e-4, rtol=1e-4)
    np.testing.assert_array_equal(a["flags"], b["flags"])


# --- output and determinism ---------------------------------------------------------------------

def test_embeddings_shape_counts_and_determinism(table, base, tiny_model):
    assert len(base) == 6 and list(base["sample_id"]) == [f"s{i:02d}" for i in range(6)]
    cols = list(base.columns)
    assert cols[:2] == ["sample_id", "emb_000"] and cols[128] == "emb_127"
    assert cols[129:] == ["flags", "n_s2_valid", "n_s1_valid"]
    assert base["emb_000"].dtype == np.float32 and np.isfinite(_emb(base)).all()
    assert (base["flags"] == 0).all()
    s2 = table[table["B02"].notna()]
    valid = s2["SCL"].isin([4, 5, 6, 7, 10, 11]).groupby(s2["sample_id"]).sum()
    np.testing.assert_array_equal(base["n_s2_valid"], valid.loc[base["sample_id"]].to_numpy())
    np.testing.assert_array_equal(base["n_s1_valid"], 16)
    _same(base, _embed(table, tiny_model))
    assert base.attrs["tessera"]["s2_observations"] == 120


def test_row_order_independence(table, base, tiny_model):
    shuffled = table.sample(frac=1.0, random_state=3).reset_index(drop=True)
    _same(base, _embed(shuffled, tiny_model))
    # v1 draws are keyed by a hash of the sample id: also independent of row order and chunking
    v1 = _embed(table, tiny_model, sampling="v1", seed=5)
    v1b = _embed(shuffled, tiny_model, sampling="v1", seed=5, chunk_samples=4)
    _same(v1, v1b, exact=False)


def test_nullable_integer_ids(table):
    """pandas' nullable Int64 ids (what read_parquet gives for an int column with nulls
    elsewhere) come back as plain int64 ids."""
    from tessera.table import prepare_table

    df = table.copy()
    codes = pd.factorize(df["sample_id"])[0]
    df["sample_id"] = pd.array(codes, dtype="Int64")
    prepared = prepare_table(df)
    assert prepared.sample_ids.dtype == np.int64
    assert sorted(prepared.sample_ids.tolist()) == sorted(set(codes.tolist()))


def test_dpixels_content(table):
    ids, batch = table_to_dpixels(table)
    assert list(ids) == [f"s{i:02d}" for i in range(6)]
    assert batch.s2.shape == (6, 20, 10) and batch.s1_asc.shape == (6, 9, 2)
    assert batch.s1_desc.shape == (6, 7, 2) and batch.s2_present.all()
    rows = table[(table["sample_id"] == "s03") & table["B02"].notna()].sort_values("date")
    np.testing.assert_array_equal(batch.s2[3], rows[list(S2_BANDS)].to_numpy(np.float32))
    np.testing.assert_array_equal(batch.s2_doy[3], rows["date"].dt.day_of_year.to_numpy())
    np.testing.assert_array_equal(batch.s2_valid[3], rows["SCL"].isin([4, 5, 6]).to_numpy())
    asc = table[(table["sample_id"] == "s03") & (table["orbit"] == "ascending")]
    code = s1_db_to_int16(asc[["VV", "VH"]].to_numpy())  # standard dB
    np.testing.assert_array_equal(batch.s1_asc[3], code)
    assert (np.diff(batch.s1_desc_doy[3]) > 0).all()


def test_s1_db_convention_matches_linear_power():
    # a standard dB value d and the linear power 10 ** (d / 10) give the same code
    db = np.array([-11.3, -17.5])
    assert np.array_equal(s1_db_to_int16(db), s1_linear_to_int16(10 ** (db / 10)))


def test_sample_without_s2_or_s1_is_flagged(table, tiny_model):
    df = table[~((table["sample_id"] == "s01") & table["B02"].notna())]
    df = df[~((df["sample_id"] == "s02") & df["VV"].notna())]
    out = _embed(df, tiny_model).set_index("sample_id")
    assert out.loc["s01", "flags"] == FLAG_NO_S2 and out.loc["s02", "flags"] == FLAG_NO_S1
    assert out.loc["s01", "n_s2_valid"] == 0 and out.loc["s02", "n_s1_valid"] == 0
    assert np.isfinite(out.filter(like="emb_").to_numpy()).all()


def test_valid_column_instead_of_scl(table):
    s2 = table["B02"].notna()
    df = table.drop(columns="SCL").assign(
        valid=np.where(s2, table["SCL"].isin([4, 5, 6]).map({True: "true", False: "false"}), None))
    _, a = table_to_dpixels(df)
    _, b = table_to_dpixels(table)
    np.testing.assert_array_equal(a.s2_valid, b.s2_valid)
    with pytest.raises(TableError, match=r"column 'valid', row 1 .*maybe"):
        prepare_table(df.assign(valid=df["valid"].where(df.index != 0, "maybe")))


def test_lazy_package_export():
    import tessera
    assert tessera.embed_table is embed_table


def test_same_row_layout(tiny_model):
    """S2 and S1 on the same rows (the WorldCereal layout, no orbit column)."""
    rng = np.random.default_rng(1)
    months = pd.date_range("2022-01-01", periods=12, freq="MS")
    df = pd.DataFrame([{"sample_id": i, "timestamp": m, **{b: rng.integers(100, 5000)
                        for b in S2_ORDER}, "VV": rng.uniform(-15, -7), "VH": rng.uniform(-22, -14)}
                       for i in range(4) for m in months])
    ids, batch = table_to_dpixels(df)
    assert list(ids) == [0, 1, 2, 3] and batch.s2.shape == (4, 12, 10)
    assert batch.s1_asc.shape == (4, 12, 2) and batch.s1_desc.shape == (4, 0, 2)
    out = _embed(df, tiny_model)
    assert out["sample_id"].dtype.kind == "i" and (out["flags"] == 0).all()
    assert (out["n_s2_valid"] == 12).all()  # no SCL / valid column: complete rows are valid


# --- encodings ----------------------------------------------------------------------------------

def test_s2_reflectance_equals_x10000(table, base, tiny_model):
    df = table.copy()
    df[S2_ORDER] = df[S2_ORDER] / 10000.0
    _same(base, _embed(df, tiny_model, s2_scale="reflectance"))
    with pytest.raises(TableError, match="reflectance"):
        prepare_table(df)  # float reflectance read as x10000


@pytest.mark.parametrize("encoding", ["linear", "int16", "amplitude"])
def test_s1_encodings_equal_db(table, base, tiny_model, encoding):
    df = table.copy()
    db = df[["VV", "VH"]].to_numpy()
    kw = {}
    if encoding == "linear":
        df[["VV", "VH"]] = 10 ** (db / 10)
    elif encoding == "int16":
        code = s1_db_to_int16(db).astype(float)
        code[np.isnan(db)] = np.nan
        df[["VV", "VH"]] = code
    else:  # amplitude DN, dB = 20 log10(DN) + offset
        df[["VV", "VH"]] = 10 ** ((db + 83.0) / 20)
        kw["s1_offset"] = -83.0
    out = _embed(df, tiny_model, s1_encoding=encoding, **kw)
    _same(base, out, exact=encoding == "int16")
    with pytest.raises(TableError, match="S1 values look like"):
        prepare_table(df) if encoding != "linear" else prepare_table(table, s1_encoding="linear")


def test_amplitude_offset_default_is_worldcereal(table):
    df = table.copy()
    df[["VV", "VH"]] = 10 ** ((df[["VV", "VH"]].to_numpy() + 83.0) / 20)
    _, a = table_to_dpixels(df, s1_encoding="amplitude")
    _, b = table_to_dpixels(table)
    assert np.abs(a.s1_asc.astype(int) - b.s1_asc).max() <= 1
    with pytest.raises(TableError, match="s1_offset"):
        TableOptions(s1_offset=-83.0)  # offset without amplitude


def test_nodata(table, base, tiny_model):
    df = table.copy()
    df[S2_ORDER + ["VV", "VH"]] = df[S2_ORDER + ["VV", "VH"]].fillna(65535)
    _same(base, _embed(df, tiny_model, nodata=[65535]))
    # one band missing on one SCL-valid row: the row is kept but no longer valid
    i = df.index[(df["sample_id"] == "s00") & (df["SCL"] == 4)][0]
    df.loc[i, "B11"] = 65535
    out = _embed(df, tiny_model, nodata=65535)
    assert out["n_s2_valid"].iloc[0] == base["n_s2_valid"].iloc[0] - 1
    _, batch = table_to_dpixels(df, nodata=[65535])
    assert batch.s2_present.all() and batch.s2.max() < 65535


def test_rename_and_patterns(table, base, tiny_model):
    df = table.rename(columns={"B04": "red", "VV": "sigma_vv", "sample_id": "field",
                               "date": "when"})
    out = _embed(df, tiny_model, rename={"red": "B04", "sigma_vv": "VV"}, id_column="field",
                 date_column="when")
    assert out.columns[0] == "field"
    np.testing.assert_array_equal(_emb(out), _emb(base))
    df = table.rename(columns={**{b: f"S2-L2A-{b}" for b in S2_ORDER},
                               "VV": "S1-SIGMA0-VV", "VH": "S1-SIGMA0-VH", "date": "timestamp"})
    _same(base, _embed(df, tiny_model, s2_pattern="S2-L2A-{band}", s1_pattern="S1-SIGMA0-{pol}"))
    suffixed = table.rename(columns={b: f"{b}_mean" for b in S2_ORDER + ["VV", "VH"]})
    _, batch = table_to_dpixels(suffixed, s2_pattern="{band}_mean", s1_pattern="{pol}_mean")
    assert batch.s2.shape == (6, 20, 10) and batch.s1_asc.shape == (6, 9, 2)
    with pytest.raises(TableError, match="B04"):
        prepare_table(df.drop(columns="S2-L2A-B04"), s2_pattern="S2-L2A-{band}",
                      s1_pattern="S1-SIGMA0-{pol}")


def test_year_filter(table, base, tiny_model):
    other = make_table(seed=9, year=2021)
    other = other[other["sample_id"] != "s05"]
    both = pd.concat([table, other, make_table(n_samples=1, seed=4, year=2023)
                      .assign(sample_id="only2023")], ignore_index=True)
    with pytest.raises(TableError, match="--year"):
        prepare_table(both)
    with pytest.warns(TableWarning, match="only2023"):
        out = embed_table(both, model=tiny_model, device="cpu", year=2022)
    _same(base, out)
    assert len(_embed(both, tiny_model, year=2021)) == 5


def test_fill_missing(table, tiny_model):
    no_b8a = table.drop(columns="B8A")
    with pytest.raises(TableError, match="B8A") as err:
        prepare_table(no_b8a)
    assert "fill" in str(err.value)
    with pytest.warns(TableWarning, match="B8A from B08"):
        out = embed_table(no_b8a, model=tiny_model, device="cpu", fill_missing=True)
    expected = _embed(table.assign(B8A=table["B08"]), tiny_model)
    _same(expected, out)
    # entirely nodata counts as absent
    all_nodata = table.assign(B8A=np.where(table["B02"].notna(), 65535.0, np.nan))
    with pytest.raises(TableError, match="B8A"):
        prepare_table(all_nodata, nodata=[65535])
    with pytest.warns(TableWarning, match="B8A"):
        _, batch = table_to_dpixels(all_nodata, nodata=[65535], fill_missing=True)
    assert np.array_equal(batch.s2[..., S2_BANDS.index("B8A")], batch.s2[..., S2_BANDS.index("B08")])
    # chained rules: B07 from B06 and the filled B8A
    with pytest.warns(TableWarning, match="B07 from B06/B8A"):
        prepare_table(table.drop(columns=["B07", "B8A"]), fill_missing=True)
    assert set(FILL_RULES) == set(S2_BANDS)


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, options, pattern", [
    (lambda d: d.drop(columns="VV"), {}, r"VV"),
    (lambda d: d.drop(columns="B05"), {}, r"B05"),
    (lambda d: d.assign(B13=1.0), {}, r"'B13'"),
    (lambda d: d.assign(red=1.0), {"rename": {"red": "RED"}}, r"'RED' is not a band"),
    (lambda d: d, {"rename": {"nope": "B04"}}, r"no column 'nope'"),
    (lambda d: d.drop(columns="sample_id"), {}, r"sample_id"),
    (lambda d: d.drop(columns="date"), {}, r"date"),
    (lambda d: pd.concat([d, d.iloc[[3]]], ignore_index=True), {}, r"row 217 \(sample_id 's00'\)"),
    (lambda d: d.assign(date=d["date"].astype(str).where(d.index != 7, "2022-13-45")), {},
     r"row 8 \(sample_id 's00'\).*2022-13-45"),
    (lambda d: d.assign(orbit=d["orbit"].where(d.index != 25, "sideways")), {},
     r"column 'orbit', row 26 .*sideways"),
    (lambda d: d.assign(B02=d["B02"].astype(object).where(d.index != 2, "abc")), {},
     r"column 'B02', row 3"),
    (lambda d: d, {"s2_scale": "percent"}, r"s2_scale"),
    (lambda d: d, {"s2_pattern": "S2-{bnd}"}, r"\{band\}"),
    (lambda d: d.iloc[:0], {}, r"no rows"),
])
def test_bad_input(table, mutate, options, pattern):
    with pytest.raises(TableError, match=pattern):
        prepare_table(mutate(table.copy()), TableOptions(**options) if options else None)


def test_duplicate_s1_rows_need_the_same_orbit(table):
    s1 = table[table["VV"].notna()].iloc[[0]]
    with pytest.raises(TableError, match=r"duplicate S1 .*sample_id 's00'"):
        prepare_table(pd.concat([table, s1], ignore_index=True))
    # the same date in the other orbit is a distinct observation
    prepare_table(pd.concat([table, s1.assign(orbit="descending")], ignore_index=True))


def test_read_table_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(TableError, match=r"t\.xlsx.*unsupported"):
        read_table(tmp_path / "t.xlsx")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(TableError, match=r"bad\.parquet"):
        read_table(tmp_path / "bad.parquet")


# --- int8 ---------------------------------------------------------------------------------------

def test_int8_output(table, base, tiny_model):
    out = _embed(table, tiny_model, int8=True)
    assert out["emb_000"].dtype == np.int8 and out["scale"].dtype == np.float32
    deq = _emb(out) * out["scale"].to_numpy()[:, None]
    f = _emb(base)
    cos = (deq * f).sum(1) / np.linalg.norm(deq, axis=1) / np.linalg.norm(f, axis=1)
    assert cos.min() > 0.9999


# --- CLI ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli():
    from tessera.cli import app
    return app


def _run(app, args):
    return CliRunner().invoke(app, ["embed-points", *map(str, args)])


def test_cli_csv_and_parquet(cli, table, base, tmp_path):
    csv = tmp_path / "points.csv"
    table.to_csv(csv, index=False)
    res = _run(cli, [csv, "-o", tmp_path / "out.parquet", "--preset", "tiny", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "6 samples" in res.stdout and "out.parquet" in res.stdout
    assert "RANDOMLY INITIALISED" not in res.stderr
    out = pd.read_parquet(tmp_path / "out.parquet")
    _same(base, out)  # tiny preset = the shipped weights, as the fixture

    pq = tmp_path / "points.parquet"
    table.rename(columns={"VV": "vv_lin"}).assign(
        vv_lin=10 ** (table["VV"] / 10)).to_parquet(pq)
    res = _run(cli, [pq, "-o", tmp_path / "out8.parquet", "--preset", "tiny", "--device", "cpu",
                     "--int8", "--rename", "vv_lin=VV", "--s1-encoding", "linear"])
    # VV linear but VH still dB: the encoding check refuses the mix
    assert res.exit_code == 2 and "S1 values look like" in res.stderr
    table.to_parquet(pq)
    res = _run(cli, [pq, "-o", tmp_path / "out8.parquet", "--preset", "tiny", "--device", "cpu",
                     "--int8"])
    assert res.exit_code == 0, res.output
    out8 = pd.read_parquet(tmp_path / "out8.parquet")
    assert out8["emb_000"].dtype == np.int8 and "scale" in out8
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_bad_input_one_line(cli, table, tmp_path):
    csv = tmp_path / "points.csv"
    table.drop(columns="VH").to_csv(csv, index=False)
    res = _run(cli, [csv, "-o", tmp_path / "out.parquet", "--preset", "tiny"])
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "VH" in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "out.parquet").exists()
    res = _run(cli, [tmp_path / "nope.csv", "-o", tmp_path / "out.parquet"])
    assert res.exit_code == 2 and res.stderr.startswith("error:") and "nope.csv" in res.stderr
    res = _run(cli, [csv, "-o", tmp_path / "out.parquet", "--rename", "oops"])
    assert res.exit_code == 2 and "OLD=NEW" in res.stderr


def test_cli_simulated_table(cli, tmp_path):
    simulate = pytest.importorskip("tessera.simulate")
    if not hasattr(simulate, "simulate_table"):
        pytest.skip("tessera.simulate.simulate_table is not available")
    df = simulate.simulate_table(10, simulate.SimConfig(height=32, width=32))
    path = tmp_path / "sim.parquet"
    df.to_parquet(path)
    res = _run(cli, [path, "-o", tmp_path / "emb.parquet", "--preset", "tiny", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = pd.read_parquet(tmp_path / "emb.parquet")
    assert len(out) == df["sample_id"].nunique() == 10
    assert np.isfinite(_emb(out)).all() and out["n_s2_valid"].gt(0).all()


def test_worldcereal_fra_2022(cli, tmp_path):
    path = shared_path(*FRA)
    res = _run(cli, [path, "-o", tmp_path / "fra.parquet", "--preset", "tiny", "--device", "cpu",
                     "--s2-pattern", "S2-L2A-{band}", "--s1-pattern", "S1-SIGMA0-{pol}",
                     "--s1-encoding", "amplitude", "--s1-offset", "-83", "--nodata", "65535",
                     "--year", "2022", "--fill-missing"])
    assert res.exit_code == 0, res.output
    assert "B8A from B08" in res.stderr
    n = pd.read_parquet(path, columns=["sample_id"])["sample_id"].nunique()
    out = pd.read_parquet(tmp_path / "fra.parquet")
    assert n == 500 and len(out) == n and out["sample_id"].is_unique
    assert np.isfinite(_emb(out)).all()
    # the S1 codes land on the published normalisation statistics (SPEC 2: 5484 / 3004)
    with pytest.warns(TableWarning, match="B8A"):
        _, batch = table_to_dpixels(read_table(path), s2_pattern="S2-L2A-{band}",
                                    s1_pattern="S1-SIGMA0-{pol}", s1_encoding="amplitude",
                                    nodata=[65535], year=2022, fill_missing=True)
    code = batch.s1_asc[batch.s1_asc_present & batch.s1_asc_valid]
    assert abs(code[:, 0].mean() - 5484) < 300 and abs(code[:, 1].mean() - 3004) < 300
    # without --year the 2021-09 .. 2023-01 span is refused, naming the option
    res = _run(cli, [path, "-o", tmp_path / "x.parquet", "--s2-pattern", "S2-L2A-{band}",
                     "--s1-pattern", "S1-SIGMA0-{pol}", "--s1-encoding", "amplitude",
                     "--nodata", "65535", "--fill-missing"])
    assert res.exit_code == 2 and "--year 2022" in res.stderr


def test_a_v2_student_at_a_matryoshka_width_is_recorded(table):
    import torch

    from tessera.model import TesseraModel
    from tessera.model.registry import get_model

    torch.manual_seed(0)
    student = TesseraModel(get_model("v2-small").config).eval()
    out = _embed(table, student, model_id="v2-small", dim=32)
    assert out.filter(like="emb_").shape == (6, 32)
    info = out.attrs["tessera"]
    assert (info["model"], info["family"], info["dims"], info["sampling"]) == \
        ("v2-small", "v2", 32, "v2")
    full = _embed(table, student, model_id="v2-small")
    np.testing.assert_array_equal(_emb(out), _emb(full)[:, :32])  # the first 32 dims
    with pytest.raises(Exception, match="--dim 48"):
        _embed(table, student, dim=48)
