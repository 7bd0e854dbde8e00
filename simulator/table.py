"""A run's tables without pandas: named numpy columns of equal length, typed as pandas types
them, written as pandas' ``DataFrame.to_csv`` writes them.

``sparsesim simulate`` builds, sums and writes its tables (the per-GEMM table, the load-imbalance
and DRAM-timeline tables) with this, so the command does not import pandas (about a quarter of a
second). Whoever wants a DataFrame gets one from ``Table.to_frame`` (``Results.table`` does), the
same frame that ``pandas.DataFrame`` made of the same rows.

Column types: a column of whole numbers is ``int64``; with a float, or a row that lacks the
column, ``float64`` (NaN where missing); text is an ``object`` column (NaN where missing, which
pandas reads as its ``str`` type); ``True``/``False`` is ``bool`` (``object`` with a row missing).
Anything else (None, numbers beyond int64, mixed kinds), and concatenations other than these,
are left to pandas itself (imported then), so a table always equals the frame pandas would make.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

_INT64 = (-(2**63), 2**63 - 1)


class _Missing:
    """The cell of a row without the column."""


_MISSING = _Missing()
#: counters whose floats are whole are written as integers (``write_csv``)
_WHOLE_LIMIT = 2**53


class Table:
    """Named columns (1-D numpy arrays of one length) in order; ``table[name]`` is a column,
    ``table[list]`` the table of those columns, ``len(table)`` the rows."""

    __slots__ = ("_cols", "_rows", "_pd")

    def __init__(
        self,
        columns: dict[str, np.ndarray] | None = None,
        rows: int | None = None,
        pandas_types: dict[str, str] | None = None,
    ):
        self._cols: dict[str, np.ndarray] = {}
        self._rows = 0 if rows is None else rows
        for name, values in (columns or {}).items():
            self[name] = values
        #: the pandas type (``str`` or ``object``) of an ``object`` column, where known
        self._pd = {k: v for k, v in (pandas_types or {}).items() if k in self._cols}

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> Table:
        """The table of ``rows`` (dicts), as ``pandas.DataFrame(rows)`` types it: the columns in
        the order the keys first appear."""
        names: dict[str, None] = {}
        for r in rows:
            names.update(dict.fromkeys(r))
        cols = {}
        for name in names:
            col = _column([r.get(name, _MISSING) for r in rows])
            if col is None:
                return cls.from_frame(_pandas().DataFrame(list(rows)))
            cols[name] = col
        text = {
            k: "str" if any(isinstance(v, str) for v in c) else "object"
            for k, c in cols.items()
            if c.dtype == object
        }
        return cls(cols, len(rows), text)

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> Table:
        """The columns of ``df`` (copied): numpy-typed ones as they are; pandas' own types as
        ``float64`` (numbers) or ``object`` (text and the rest, NaN where missing)."""
        cols, types = {}, {}
        for name in df.columns:
            s = df[name]
            if isinstance(s.dtype, np.dtype):
                cols[str(name)] = s.to_numpy(copy=True)
            elif s.dtype.kind in "iuf":
                cols[str(name)] = s.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                cols[str(name)] = s.to_numpy(dtype=object, na_value=np.nan)
            if cols[str(name)].dtype == object:
                types[str(name)] = "str" if str(s.dtype) == "str" else "object"
        return cls(cols, len(df), types)

    def to_frame(self) -> pd.DataFrame:
        """This table as a pandas DataFrame (imports pandas)."""
        pd = _pandas()
        if not self._cols:
            return pd.DataFrame([{}] * self._rows)  # as pandas makes it of empty rows
        return pd.DataFrame(
            {
                name: pd.Series(col, dtype=self._pd[name], copy=True)
                if name in self._pd
                else col.copy()
                for name, col in self._cols.items()
            }
        )

    @property
    def columns(self) -> list[str]:
        return list(self._cols)

    @property
    def dtypes(self) -> list[np.dtype]:
        return [c.dtype for c in self._cols.values()]

    @property
    def pandas_types(self) -> dict[str, str]:
        """Of the ``object`` columns, those whose pandas type is known: ``str`` (text) or
        ``object``; ``to_frame`` makes them so (the others as pandas infers them)."""
        return dict(self._pd)

    def __len__(self) -> int:
        return self._rows

    def __contains__(self, name: object) -> bool:
        return name in self._cols

    def __getitem__(self, key: str | list[str]) -> Any:
        if isinstance(key, list):
            return Table({k: self._cols[k] for k in key}, self._rows, self._pd)
        return self._cols[key]

    def __setitem__(self, name: str, values: Any) -> None:
        col = np.asarray(values)
        if col.ndim != 1:
            raise ValueError(f"column {name!r}: expected one dimension, got {col.shape}")
        if self._cols and len(col) != self._rows:
            raise ValueError(f"column {name!r}: {len(col)} values for {self._rows} rows")
        self._rows = len(col)
        self._cols[name] = col
        if hasattr(self, "_pd"):  # a new column's type is pandas' to infer
            self._pd.pop(name, None)

    def take(self, rows: np.ndarray | Sequence[int]) -> Table:
        """The rows ``rows`` (positions, or a boolean mask), numbered from 0 again."""
        idx = np.asarray(rows)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.intp)
        return Table({k: c[idx] for k, c in self._cols.items()}, len(idx), self._pd)

    def copy(self) -> Table:
        return Table({k: c.copy() for k, c in self._cols.items()}, self._rows, self._pd)

    def to_csv(self, path: str | os.PathLike, whole: Iterable[str] = ()) -> None:
        """Write as ``DataFrame.to_csv(path, index=False)`` writes the same frame; the float
        columns named in ``whole`` whose values are all whole numbers below 2**53 (NaN aside)
        as pandas' ``Int64`` writes them (``simulator.results.write_csv``)."""
        whole = set(whole)
        cells = [_cells(c, name in whole) for name, c in self._cols.items()]
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(
                f,
                lineterminator="\n",
                delimiter=",",
                quoting=csv.QUOTE_MINIMAL,
                doublequote=True,
                escapechar=None,
                quotechar='"',
            )
            w.writerow(list(self._cols))
            w.writerows(zip(*cells, strict=True) if cells else [[]] * self._rows)


def concat(tables: Sequence[Table]) -> Table:
    """The rows of ``tables`` one after the other, as ``pandas.concat(frames,
    ignore_index=True)`` makes them: the columns in the order they first appear; a column some
    table lacks is missing (NaN) in its rows."""
    names: dict[str, None] = {}
    for t in tables:
        names.update(dict.fromkeys(t.columns))
    cols, types = {}, {}
    for name in names:
        parts = [t[name] if name in t else None for t in tables]
        col = _concat_column(parts, [len(t) for t in tables])
        if col is None:
            pd = _pandas()
            frames = [t.to_frame() for t in tables]
            return Table.from_frame(pd.concat(frames, ignore_index=True))
        cols[name] = col
        if col.dtype == object:  # text stays text; with anything else, object
            text = all(t._pd.get(name) == "str" for t in tables if name in t)
            types[name] = "str" if text else "object"
    return Table(cols, sum(len(t) for t in tables), types)


def column_sum(col: np.ndarray) -> Any:
    """``Series.sum`` of a column: NaN left out (pandas fills it with 0 and lets numpy add, in
    the same order)."""
    if col.dtype.kind == "f":
        return np.where(np.isnan(col), 0.0, col).sum()
    if col.dtype.kind in "iub":
        return col.sum()
    return sum(v for v in col.tolist() if not _isna(v))


def _pandas():
    import pandas as pd

    return pd


def _kind(v: Any) -> str | None:
    """The kind of one cell: ``b``ool, ``i``nteger (in int64), ``f``loat, ``s``tring, ``-``
    (missing), or None for anything else."""
    if v is _MISSING:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "b"
    if isinstance(v, (Integral, np.integer)):
        return "i" if _INT64[0] <= v <= _INT64[1] else None
    if isinstance(v, (float, np.floating)):
        return "f"
    if isinstance(v, Real) and not isinstance(v, np.generic):
        return None
    return "s" if isinstance(v, str) else None


#: the kind (``_kind``) of a cell of these exact types
_KINDS = {
    _Missing: "-",
    bool: "b",
    np.bool_: "b",
    int: "i",
    np.int64: "i",
    float: "f",
    np.float64: "f",
    str: "s",
}


def _column(values: list[Any]) -> np.ndarray | None:
    """One column of ``from_rows``, typed as pandas types it; None where that is not one of the
    cases this module knows."""
    types = {type(v) for v in values}
    if types <= _KINDS.keys():  # the usual cells, told apart by their type alone
        kinds = {_KINDS[t] for t in types}
        ints = [v for v in values if type(v) is int] if int in types else []
        if ints and not _INT64[0] <= min(ints) <= max(ints) <= _INT64[1]:
            return None
    else:
        kinds = {_kind(v) for v in values}
    if None in kinds:
        return None
    missing = "-" in kinds
    kinds.discard("-")
    if not kinds:
        return np.full(len(values), np.nan)
    if kinds == {"b"}:
        if not missing:
            return np.array(values, dtype=bool)
        return _object([np.nan if v is _MISSING else bool(v) for v in values])
    if kinds == {"s"}:
        return _object([np.nan if v is _MISSING else v for v in values])
    if kinds == {"i"} and not missing:
        return np.array(values, dtype=np.int64)
    if kinds <= {"i", "f"}:
        return np.array([np.nan if v is _MISSING else float(v) for v in values], dtype=np.float64)
    return None


def _object(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _concat_column(parts: list[np.ndarray | None], lengths: list[int]) -> np.ndarray | None:
    """One column of ``concat`` (None in ``parts``: that table lacks it), or None where pandas
    itself must say (a table without rows, a column all NaN, kinds this module does not mix)."""
    kinds = set()
    for p, n in zip(parts, lengths, strict=True):
        if n == 0:
            return None  # pandas' rules for empty tables vary with its version
        if p is None:
            kinds.add("-")
            continue
        if p.dtype == object and all(_isna(v) for v in p):
            return None  # all-NA columns: likewise
        kinds.add(p.dtype.kind)
    missing = "-" in kinds
    kinds.discard("-")
    if kinds <= {"i"} and not missing:
        return np.concatenate(parts)
    if kinds <= {"i", "f"}:
        return np.concatenate(
            [
                np.full(n, np.nan) if p is None else p.astype(np.float64)
                for p, n in zip(parts, lengths, strict=True)
            ]
        )
    if kinds == {"b"} and not missing:
        return np.concatenate(parts)
    if kinds in ({"O"}, {"b"}):
        return np.concatenate(
            [
                _object([np.nan] * n) if p is None else p.astype(object)
                for p, n in zip(parts, lengths, strict=True)
            ]
        )
    return None


def _isna(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and v != v)


def _cells(col: np.ndarray, whole: bool) -> list[Any]:
    """A column's cells as ``DataFrame.to_csv`` writes them (pandas'
    ``get_values_for_csv``): numbers by numpy's ``str``, missing values empty."""
    kind = col.dtype.kind
    if kind == "f":
        na = np.isnan(col)
        ok = col[~na]
        if whole and bool((ok == np.round(ok)).all()) and bool((np.abs(ok) < _WHOLE_LIMIT).all()):
            text = np.where(na, 0, col).astype(np.int64).astype(str).astype(object)
        else:
            text = col.astype(str).astype(object)
        text[na] = ""
        return text.tolist()
    if kind in "iub":
        return col.astype(str).tolist()
    return ["" if _isna(v) else v for v in col.tolist()]
