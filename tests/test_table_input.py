"""Table input a float cannot encode exactly, and malformed CSV files: refused with the column,
the row (the CSV line) and the value named, or read exactly, through the Python API and
``pyro-lvae tabular fit`` alike (exit status 2, one line, no traceback, nothing written)."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import folder_digest

import pyro_lvae as lv
from pyro_lvae.cli import main
from pyro_lvae.tabular import TableTransformer, TabularModel, read_csv

BIG = 9007199254740993  # 2^53 + 1: float64 reads it as 9007199254740992
THIRTY = 123456789012345678901234567890

TINY = dict(steps=3, hidden=8, blocks=1, latent_dim=2, progress=False, seed=0)


def ids_table():
    return pd.DataFrame({"id": np.array([BIG, BIG + 2, BIG + 4, 2**63 - 1], dtype=np.int64),
                         "x": [0.5, 1.25, 2.0, 1.0]})


# ---- the Python API ---------------------------------------------------------------------------

API_CASES = {
    "64-bit integers beyond 2^53": (
        lambda: ids_table(), {}, lv.DataError,
        r"column 'id' holds the integer 9007199254740993 at row 0, beyond 2\^53.*"
        r"--categorical \(categorical=\['id'\]\)"),
    "uint64 beyond 2^63": (
        lambda: pd.DataFrame({"u": np.array([1, 2, 2**64 - 1], dtype=np.uint64)}), {},
        lv.DataError, "column 'u' holds the integer 18446744073709551615 at row 2"),
    "30-digit integers": (
        lambda: pd.DataFrame({"a": pd.Series([THIRTY, 2, 3], dtype=object), "b": [1, 2, 3]}),
        {}, lv.DataError, f"column 'a' holds the integer {THIRTY} at row 0"),
    "30-digit integers written as text": (
        lambda: pd.DataFrame({"a": pd.Series([str(THIRTY), "2", "3"], dtype=object)}), {},
        lv.DataError, f"column 'a' holds the integer {THIRTY} at row 0"),
    "negative integers beyond 2^53": (
        lambda: pd.DataFrame({"a": [-BIG, 0, 5]}), {}, lv.DataError,
        "holds the integer -9007199254740993 at row 0"),
    "infinity": (
        lambda: pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.5, float("inf"), 2.5]},
                             index=[10, 11, 12]), {}, lv.DataError,
        r"column 'b' holds inf at row 11 \(1 of its values not finite\)"),
    "minus infinity in a two-valued column": (
        lambda: pd.DataFrame({"a": [1.0, -np.inf, 1.0]}), {}, lv.DataError,
        "column 'a' holds -inf at row 1"),
    "1e308": (lambda: pd.DataFrame({"a": [1e308, 2.0, 3.0]}), {}, lv.DataError,
              r"column 'a' holds 1e\+308 at row 0, too large to standardise"),
    "numeric on a text column": (
        lambda: pd.DataFrame({"a": [1, 2, 3], "c": ["x", "y", "x"]}), {"numeric": ["c"]},
        lv.DataError, "column 'c' is named in --numeric .* but holds text such as 'x'"),
    "numeric on a boolean column": (
        lambda: pd.DataFrame({"a": [1, 2, 3], "f": [True, False, True]}),
        {"numeric": ["f"]}, lv.DataError, "holds booleans such as True"),
    "a column both numeric and categorical": (
        lambda: pd.DataFrame({"a": [1, 2, 3], "b": [0, 1, 0]}),
        {"numeric": ["b"], "categorical": ["b"]}, lv.ConfigError,
        "'b' named both categorical and numeric"),
    "repeated column names": (
        lambda: pd.DataFrame([[1, 2, 3], [4, 5, 6]], columns=["a", "b", "a"]), {},
        lv.DataError, r"names 'a' more than once \(columns 1 and 3\)"),
    "names repeated once made text": (
        lambda: pd.DataFrame([[1, 2], [4, 5]], columns=[1, "1"]), {}, lv.DataError,
        r"names '1' more than once \(columns 1 and 2\)"),
    "an empty column name": (
        lambda: pd.DataFrame([[1, 2], [4, 5]], columns=["a", " "]), {}, lv.DataError,
        "no name for column 2"),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_table_transformer_refuses(case):
    make, options, error, message = API_CASES[case]
    with pytest.raises(error, match=message):
        TableTransformer.fit(make(), **options)


@pytest.mark.parametrize("case", ["64-bit integers beyond 2^53", "30-digit integers",
                                  "infinity", "1e308", "numeric on a text column"])
def test_tabular_model_refuses_before_training(case, tmp_path):
    make, options, error, message = API_CASES[case]
    with pytest.raises(error, match=message):
        TabularModel.fit(make(), **options, **TINY, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_integers_beyond_2_53_named_categorical_round_trip_exactly(tmp_path):
    df = ids_table()
    t = TableTransformer.fit(df, categorical=["id"])
    assert t.columns[0].kind == "categorical"
    back = t.inverse_transform(t.transform(df))
    pd.testing.assert_frame_equal(back, df)
    assert back["id"].tolist()[0] == BIG
    t.save(tmp_path / "t.json")  # JSON keeps the integers exactly
    again = TableTransformer.load(tmp_path / "t.json")
    pd.testing.assert_frame_equal(again.inverse_transform(again.transform(df)), df)
    # 30-digit integers as classes: exact Python integers back
    big = pd.DataFrame({"a": pd.Series([THIRTY, 2, THIRTY + 1], dtype=object),
                        "b": [1.5, 2.5, 3.5]})
    t = TableTransformer.fit(big, categorical=["a"])
    assert t.inverse_transform(t.transform(big))["a"].tolist() == [THIRTY, 2, THIRTY + 1]


def test_two_valued_integers_beyond_2_53_are_an_exact_binary_column():
    df = pd.DataFrame({"id": np.array([BIG, BIG + 2, BIG], dtype=np.int64),
                       "x": [0.5, 1.0, 2.0]})
    t = TableTransformer.fit(df)
    assert t.columns[0].kind == "binary" and t.columns[0].categories == [BIG, BIG + 2]
    pd.testing.assert_frame_equal(t.inverse_transform(t.transform(df)), df)


def test_transform_refuses_what_fit_refuses():
    t = TableTransformer.fit(pd.DataFrame({"a": [1, 2, 3, 4], "b": [0.5, 1.5, 2.5, 3.0]}))
    with pytest.raises(lv.DataError, match="column 'a' holds the integer 9007199254740993 at "
                                           "row 1"):
        t.transform(pd.DataFrame({"a": [1, BIG], "b": [0.5, 1.5]}))
    with pytest.raises(lv.DataError, match="column 'b' holds nan|column 'b' holds inf"):
        t.transform(pd.DataFrame({"a": [1, 2], "b": [np.inf, 1.5]}))


@pytest.mark.parametrize("high", [30_000, 10**6, 2**23])
def test_wide_integer_columns_are_exact_and_train(high):
    """An integer column spanning more than ~16,000 values used to fail the lattice check of the
    observation model (float32 rounding of its standardised values)."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"n": rng.integers(0, high, 60), "x": rng.normal(size=60).round(2)})
    df.loc[0, "n"], df.loc[1, "n"] = 0, high - 1
    t = TableTransformer.fit(df)
    assert t.integer_columns == ["n"]
    c = t.columns[0]
    assert c.mean == round(c.mean) and np.log2(c.std) == round(np.log2(c.std))
    x = t.transform(df)  # float32 cells: every value an exact lattice point
    assert x.dtype == torch.float32
    _, step, low, _ = t.schema()[0]
    k = (x[:, 0].double() - low) / step
    assert torch.equal(k, k.round())
    pd.testing.assert_frame_equal(t.inverse_transform(x), df)
    model = TabularModel.fit(df, **TINY)
    synth = model.sample(50, seed=0)
    assert synth["n"].between(0, high - 1).all() and synth["n"].dtype == df["n"].dtype


def test_narrow_integer_columns_keep_their_standardisation():
    df = pd.DataFrame({"n": [278, 1680, 500, 1000]})  # proline-like: the study's encoding
    c = TableTransformer.fit(df).columns[0]
    assert c.mean == pytest.approx(864.5) and c.std == pytest.approx(float(np.std(df["n"])))


def test_a_column_too_fine_for_float32_is_named_in_a_warning(caplog):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"pop": rng.integers(0, 10**9, 50), "x": rng.normal(size=50).round(2)})
    with caplog.at_level(logging.WARNING, logger="pyro_lvae.tabular.encoding"):
        t = TableTransformer.fit(df)
    assert len(caplog.records) == 1
    text = caplog.records[0].getMessage()
    assert text.startswith("column(s) pop do not come back exactly through float32 cells")
    assert "pop: 44 of 50 values, off by up to 16." in text
    assert t.integer_columns == []  # its lattice is finer than float32 resolves
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pyro_lvae.tabular.encoding"):
        TableTransformer.fit(df[["x"]])
    assert caplog.records == []
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        t = TableTransformer.fit(df)
        pd.testing.assert_frame_equal(t.inverse_transform(t.transform(df)), df)
    finally:
        torch.set_default_dtype(old)


def test_missing_drop_names_rows_of_the_table_given():
    df = pd.DataFrame({"a": [1.0, None, 3.0, 4.0], "b": [1.0, 2.0, np.inf, 3.0]})
    with pytest.raises(lv.DataError, match="column 'b' holds inf at row 2"):
        TableTransformer.fit(df, missing="drop")


# ---- CSV files ---------------------------------------------------------------------------------

CSV_CASES = {
    "64-bit integers beyond 2^53": (
        "id,x\n1,1.5\n9007199254740993,2.5\n3,3.0\n", [],
        "column 'id' holds the integer 9007199254740993 at line 3 of {csv}, beyond 2^53"),
    "30-digit integers": (
        f"a,b\n{THIRTY},1\n2,3\n3,4\n", [], f"column 'a' holds the integer {THIRTY} at line 2"),
    "inf": ("a,b\n1,2\n2,inf\n3,4\n", [], "column 'b' holds inf at line 3 of {csv}"),
    "a number beyond the float range": ("a,b\n1,2\n2,1e400\n3,4\n", [],
                                        "column 'b' holds inf at line 3"),
    "1e308": ("a,b\n1e308,1\n2,3\n3,4\n", [],
              "column 'a' holds 1e+308 at line 2 of {csv}, too large to standardise"),
    "a row with more fields than the header": (
        "a,b\n1,2\n3,4,5\n6,7\n", [], "line 3 of {csv} has 3 fields but the header has 2"),
    "every row with one field more than the header": (
        "a,b\n1,2,3\n4,5,6\n7,8,9\n", [], "line 2 of {csv} has 3 fields but the header has 2"),
    "a row with fewer fields than the header": (
        "a,b\n1,2\n3\n6,7\n", ["--missing", "drop"], "line 3 of {csv} has 1 field but"),
    "a repeated header name": ("a,a,b\n1,2,3\n4,5,6\n", [],
                               "the header of {csv} names 'a' more than once (columns 1 and 2)"),
    "an empty header name": ("a,,b\n1,2,3\n4,5,6\n", [],
                             "the header of {csv} has no name for column 2"),
    "a written row index": (",a,b\n0,1,2\n1,3,4\n", [],
                            "has no name for column 1: name every column (an empty first"),
    "numeric on a text column": ("a,c\n1,x\n2,y\n3,x\n", ["--numeric", "c"],
                                 "column 'c' is named in --numeric (numeric=) but holds text "
                                 "such as 'x'"),
}




@pytest.mark.parametrize("case", list(CSV_CASES))
def test_cli_refuses_table_input(case, tmp_path, capsys):
    text, flags, message = CSV_CASES[case]
    csv = tmp_path / "data.csv"
    csv.write_text(text)
    out = tmp_path / "mine"  # a folder of the user's, which a refusal leaves as it was
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    before = folder_digest(out)
    code = main(["tabular", "fit", str(csv), "--out", str(out), "--steps", "5", "--hidden",
                 "8", "--blocks", "1", "--quiet", *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert message.format(csv=csv) in err and "Traceback" not in err
    assert err.startswith("pyro-lvae: error:") and err.count("\n") == 1
    assert folder_digest(out) == before and sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("case", ["a row with more fields than the header",
                                  "a repeated header name", "an empty header name"])
def test_read_csv_refuses_malformed_files(case, tmp_path):
    text, _, message = CSV_CASES[case]
    csv = tmp_path / "data.csv"
    csv.write_text(text)
    with pytest.raises(lv.DataError) as e:
        read_csv(csv)
    assert message.format(csv=csv) in str(e.value)


def test_read_csv_keeps_what_it_read_before(tmp_path):
    """Blank lines, quoted commas and newlines, a byte-order mark and long text fields are
    read as before; errors name the file's lines past blank lines and multi-line fields."""
    csv = tmp_path / "data.csv"
    long = "y" * 200_000
    csv.write_text('\ufeffname,x\n"a, b",1.5\n\n"two\nlines",2.5\n' + long + ',inf\n',
                   encoding="utf-8")
    df = read_csv(csv)
    assert list(df.columns) == ["name", "x"] and df["name"].tolist() == ["a, b", "two\nlines",
                                                                          long]
    with pytest.raises(lv.DataError, match="column 'x' holds inf at line 6 of"):
        TableTransformer.fit(df)


def test_cli_reads_integers_beyond_2_53_named_categorical_exactly(tmp_path, capsys):
    csv = tmp_path / "ids.csv"
    csv.write_text("id,x\n9007199254740993,1.5\n9007199254740995,2.5\n9007199254740997,3.0\n"
                   "9007199254740993,2.0\n")
    run = tmp_path / "run"
    assert main(["tabular", "fit", str(csv), "--out", str(run), "--steps", "5", "--hidden", "8",
                 "--blocks", "1", "--quiet", "--categorical", "id"]) == 0
    model = TabularModel.load(run)
    table = read_csv(csv)
    pd.testing.assert_frame_equal(model.transformer.inverse_transform(model.encode(table)),
                                  table)
    out = tmp_path / "s.csv"
    assert main(["tabular", "sample", str(run), "-n", "20", "-o", str(out), "--seed", "0"]) == 0
    ids = {int(line.split(",")[0]) for line in out.read_text().splitlines()[1:]}
    assert ids <= {9007199254740993, 9007199254740995, 9007199254740997}


@pytest.mark.parametrize("loader", ["load_wine", "load_breast_cancer", "load_diabetes"])
def test_the_study_tables_round_trip_without_a_warning(loader, caplog):
    """The quantile scores are float32 values, so a training value's cell decodes to that
    value (breast cancer's concavity error came back 0.1535001 for 0.1535); diabetes' computed
    features, with more decimals than kept, come back to float32 precision, with no warning."""
    sklearn = pytest.importorskip("sklearn.datasets")
    df = getattr(sklearn, loader)(as_frame=True).frame
    for continuous in ("standard", "quantile"):
        with caplog.at_level(logging.WARNING, logger="pyro_lvae.tabular.encoding"):
            t = TableTransformer.fit(df, continuous=continuous)
        assert caplog.records == []
        back = t.inverse_transform(t.transform(df))
        for c in t.columns:
            a, b = df[c.name].to_numpy(), back[c.name].to_numpy()
            if np.array_equal(np.round(a, c.decimals), a):
                assert np.array_equal(a, b), c.name
            else:  # more decimals than kept: float32 precision of the spread
                assert loader == "load_diabetes" and np.abs(a - b).max() < 1e-6 * a.std()
