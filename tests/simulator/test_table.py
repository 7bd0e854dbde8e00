"""simulator.table against pandas itself: the frame of a Table is the frame pandas makes of the
same rows, a concatenation is ``pandas.concat``'s, and a Table's CSV is ``to_csv``'s bytes
(through ``simulator.results.write_csv``, counters as ``Int64`` included)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.results import COUNT_COLUMNS, write_csv
from simulator.table import Table, column_sum, concat

#: names with what a CSV must quote, and counters (written as integers when whole)
NAMES = ["Layer", "a,b", 'say "x"', "two\nlines", "M", "Gated Computes", "DRAM Bytes", "x"]
assert {"M", "Gated Computes", "DRAM Bytes"} <= set(COUNT_COLUMNS)

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -3.0, 0.5, 1e16, 2.0**53, 2.0**53 - 1, -(2.0**53), 1e-300,
                     5e-324, 1.7976931348623157e308, 123456789.0, 0.1 + 0.2, float("nan")]),
    st.integers(-(2**60), 2**60).map(float),
)
INTS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5))
TEXT = st.one_of(st.text(max_size=6), st.sampled_from(["", ",", '"', "a,b", 'q"q', "l\nm", "\r",
                                                        " ", "nan", "None", "1.0"]))
VALUES = {"f": FLOATS, "i": INTS, "s": TEXT, "b": st.booleans(),
          "if": st.one_of(INTS, FLOATS), "mixed": st.one_of(INTS, FLOATS, TEXT, st.none())}


@st.composite
def rows(draw, max_rows: int = 8) -> list[dict]:
    """Rows of dicts: each column of one kind (or mixed), some rows without some columns."""
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    kinds = {n: draw(st.sampled_from(sorted(VALUES))) for n in names}
    out = []
    for _ in range(draw(st.integers(0, max_rows))):
        row = {}
        for n in draw(st.permutations(names)):
            if draw(st.integers(0, 4)):  # mostly there
                row[n] = draw(VALUES[kinds[n]])
        out.append(row)
    return out


def _csv(write, obj, path) -> bytes:
    write(obj, path)
    return path.read_bytes()


@settings(max_examples=400, deadline=None)
@given(rows())
def test_a_table_is_the_frame_pandas_makes(rs):
    pd.testing.assert_frame_equal(Table.from_rows(rs).to_frame(), pd.DataFrame(rs),
                                  check_exact=True)


@settings(max_examples=400, deadline=None)
@given(rows())
def test_a_table_writes_the_bytes_pandas_writes(tmp_path_factory, rs):
    d = tmp_path_factory.mktemp("csv")
    t = Table.from_rows(rs)
    assert _csv(write_csv, t, d / "ours.csv") == _csv(write_csv, pd.DataFrame(rs), d / "pd.csv")
    # and the columns' values round-trip through the frame, as a DataFrame's do
    again = Table.from_frame(t.to_frame())
    assert _csv(write_csv, again, d / "again.csv") == (d / "pd.csv").read_bytes()


@settings(max_examples=300, deadline=None)
@given(st.lists(rows(max_rows=4), min_size=1, max_size=4))
def test_concat_is_pandas_concat(parts):
    tables = [Table.from_rows(rs) for rs in parts]
    want = pd.concat([pd.DataFrame(rs) for rs in parts], ignore_index=True)
    # (a frame of no columns makes pandas' column labels ``object``, not ``str``: labels only)
    pd.testing.assert_frame_equal(concat(tables).to_frame(), want, check_exact=True,
                                  check_column_type=not any(t.columns == [] for t in tables))


@settings(max_examples=200, deadline=None)
@given(rows(), st.data())
def test_rows_taken_and_columns_chosen_write_as_pandas_does(tmp_path_factory, rs, data):
    d = tmp_path_factory.mktemp("take")
    t, df = Table.from_rows(rs), pd.DataFrame(rs)
    mask = data.draw(st.lists(st.booleans(), min_size=len(rs), max_size=len(rs)))
    cols = data.draw(st.lists(st.sampled_from(t.columns), unique=True)) if t.columns else []
    ours = t.take(np.array(mask, dtype=bool))[cols]
    theirs = df[np.array(mask, dtype=bool)].reset_index(drop=True)[cols]
    assert _csv(write_csv, ours, d / "a.csv") == _csv(write_csv, theirs, d / "b.csv")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(FLOATS, st.just(float("nan"))), max_size=40))
def test_column_sum_is_series_sum(values):
    col = np.array(values, dtype=np.float64)
    got, want = column_sum(col), pd.Series(col).sum()
    assert (math.isnan(got) and math.isnan(want)) or got == want


def test_column_sum_of_integers_is_exact():
    col = np.array([2**62, 2**62 - 1, -5], dtype=np.int64)
    assert column_sum(col) == pd.Series(col).sum() == 2**63 - 6


@pytest.mark.parametrize("rs", [[], [{}, {}], [{"a": 1}], [{"x": float("nan")}],
                                [{"x": ""}], [{"x": None}]])
def test_empty_and_one_cell_tables(tmp_path, rs):
    t = Table.from_rows(rs)
    pd.testing.assert_frame_equal(t.to_frame(), pd.DataFrame(rs))
    assert _csv(write_csv, t, tmp_path / "a") == _csv(write_csv, pd.DataFrame(rs), tmp_path / "b")
    empty = t.take([])  # the columns, no rows
    assert (_csv(write_csv, empty, tmp_path / "c")
            == _csv(write_csv, pd.DataFrame(rs).iloc[:0], tmp_path / "d"))


def test_the_cells_written(tmp_path):
    """What the writer must produce, spelled out (the hypothesis tests compare with pandas;
    this pins the bytes themselves)."""
    t = Table.from_rows([
        {"M": 3.0, "K": -0.0, "x": 1e16, "Layer": 'a "b", c', "s": 5e-324, "b": True},
        {"M": 2.0**53, "x": -0.0, "Layer": "l\nm", "s": 0.1 + 0.2, "b": False},
        {"K": 7.0, "x": 2.5, "s": 1e-05},
    ])
    write_csv(t, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == (
        "M,K,x,Layer,s,b\n"
        '3.0,0,1e+16,"a ""b"", c",5e-324,True\n'  # M is not whole below 2**53: floats
        '9007199254740992.0,,-0.0,"l\nm",0.30000000000000004,False\n'
        ",7,2.5,,1e-05,\n"
    )


def test_anything_else_is_left_to_pandas():
    rs = [{"a": None, "b": 2**64, "c": 1}, {"a": "x", "b": 1, "c": "y"}]
    t = Table.from_rows(rs)
    pd.testing.assert_frame_equal(t.to_frame(), pd.DataFrame(rs))


def test_a_column_must_fit_the_table():
    t = Table({"a": np.arange(3)})
    with pytest.raises(ValueError, match="3 rows"):
        t["b"] = np.arange(4)
    with pytest.raises(ValueError, match="one dimension"):
        t["c"] = np.zeros((3, 1))
