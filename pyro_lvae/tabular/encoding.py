"""Tables of mixed columns: an exactly invertible encoding and a mixed observation model.

:class:`TableTransformer` turns a table (a pandas ``DataFrame`` or a 2-D numpy array) into one
float per cell and back:

==============  ===========================================================================
column kind     encoding (and inverse)
==============  ===========================================================================
continuous      standardised, ``(x - mean) / std`` (or, with ``continuous="quantile"``, mapped
                to normal scores through the column's empirical distribution, exact at every
                training value); back: the inverse map, clipped to the observed range and
                rounded to the column's own number of decimals
integer         as continuous (spanning 4096 values or more: centred on an integer and scaled
                by a power of two, exact binary fractions); back: rounded to integers within
                the observed range. With the standard encoding (and ``integers="discrete"``,
                the default) the column keeps its lattice: the mixed observation model gives
                it the mass of a Normal on its integer values (edge values open), not a
                density (unless a value lies 2^23 or more from the centre)
binary          two values -> 0 / 1 (a Bernoulli column)
categorical     labels -> codes 0 .. K-1 (a Categorical column); labels never seen in training
                are refused
==============  ===========================================================================

Text, boolean and pandas categorical columns are categorical (booleans and two-valued columns
binary); numbers are continuous unless named in ``categorical``. Missing values are refused with
the columns and counts named, or dropped with ``missing="drop"``. Round trip: for the training
table, ``inverse_transform(transform(t))`` equals ``t`` exactly (tested) for every column whose
values a float32 cell holds apart; a column too wide for that is named in a warning with how far
its values come back off.

Numbers a float cannot encode are refused with the column, the row and the value named:
infinite values, integers beyond 2^53 (:data:`EXACT_INTEGER`: 64-bit identifiers, nanosecond
timestamps; name such a column in ``categorical`` to keep its values exactly as classes) and
values too large to standardise. :func:`read_csv` also refuses a header with an empty or a
repeated name and a row with more or fewer fields than the header, naming the line.

:class:`~pyro_lvae.observations.MixedObservation` is ``p(x | z)`` for such rows (its
``schema`` comes from :meth:`TableTransformer.schema`).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, DataError
from ..io import atomic_write_text

__all__ = ["Column", "TableTransformer", "read_csv", "INTEGER_MODES", "EXACT_INTEGER"]

logger = logging.getLogger(__name__)

#: how integer-valued numeric columns are modelled: on their lattice, or as continuous
INTEGER_MODES = ("discrete", "continuous")

#: 2^53: a float64 holds every integer up to this magnitude exactly, and not all beyond it
EXACT_INTEGER = 2**53

#: integer columns spanning at least this many values are centred on an integer and scaled by a
#: power of two (not by their exact mean and standard deviation), so that their encoded values
#: are exact binary fractions: float32 then holds them exactly up to 2^24 from the centre
_WIDE = 2**12

#: an integer column is kept on its lattice only while every value lies closer than this to its
#: centre: there the lattice's bin edges, half a step either side of a value, are exact in float32
_LATTICE_REACH = 2**23


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ConfigError("tables need pandas: pip install 'pyro-lvae[tabular]'") from None
    return pandas


@dataclass
class Column:
    """One column's kind and what its encoding needs."""

    name: str
    kind: str  # continuous | integer | binary | categorical
    dtype: str  # the original dtype, restored by inverse_transform
    categories: list[Any] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    minimum: float = 0.0
    maximum: float = 0.0
    decimals: int = 0
    values: list[float] = field(default_factory=list)  # quantile map: sorted unique values
    scores: list[float] = field(default_factory=list)  # ... and their normal scores


def _decimals(values: np.ndarray) -> int:
    for d in range(10):
        if np.allclose(np.round(values, d), values, rtol=0, atol=1e-9 * max(1.0, np.abs(
                values).max(initial=0))):
            return d
    return 10


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _where(df: Any, i: int) -> str:
    """Where the ``i``-th row of ``df`` is: its line in the CSV file it was read from by
    :func:`read_csv`, else its index label."""
    label = df.index[i]
    lines, source = df.attrs.get("csv_lines"), df.attrs.get("csv_source")
    if lines is not None and isinstance(label, (int, np.integer)) and 0 <= label < len(lines):
        return f"line {lines[label]} of {source}"
    return f"row {_plain(label)!r}"


def _is_integer(u: Any) -> bool:
    return isinstance(u, (int, np.integer)) and not isinstance(u, (bool, np.bool_))


def _beyond_exact(s: Any) -> int | None:
    """The position of the first integer in ``s`` beyond :data:`EXACT_INTEGER` in magnitude
    (which no float holds exactly), or ``None``."""
    if s.dtype == object:
        for i, u in enumerate(s.to_numpy()):
            if _is_integer(u) and abs(int(u)) > EXACT_INTEGER:
                return i
        return None
    values = s.to_numpy()
    if values.dtype.kind in "iu":
        if values.dtype.itemsize < 8:
            return None
        big = (values > EXACT_INTEGER) if values.dtype.kind == "u" else (
            (values > EXACT_INTEGER) | (values < -EXACT_INTEGER))
        hits = np.flatnonzero(big)
        return int(hits[0]) if len(hits) else None
    return None


def _integers_beyond_exact(s: Any) -> list[int] | None:
    """``s`` as exact Python integers when every value is an integer (or an integer written as
    text) and one lies beyond :data:`EXACT_INTEGER`; else ``None``."""
    out = []
    for u in s.to_numpy():
        if _is_integer(u):
            out.append(int(u))
        elif isinstance(u, str) and u.strip().lstrip("+-").isdigit():
            out.append(int(u.strip()))
        else:
            return None
    return out if any(abs(u) > EXACT_INTEGER for u in out) else None


def _refuse_beyond_exact(df: Any, name: str, i: int) -> None:
    value = _plain(df[name].iloc[i])
    raise DataError(f"column {name!r} holds the integer {value} at {_where(df, i)}, beyond "
                    f"2^53 = {EXACT_INTEGER}: no float holds it exactly (a 64-bit identifier "
                    f"or a nanosecond timestamp?). Name the column in --categorical "
                    f"(categorical=[{name!r}]) to keep its values exactly as classes, drop it "
                    f"(an identifier has nothing to learn), or rescale it (e.g. timestamps "
                    f"to seconds)")


def _check_numbers(df: Any, name: str) -> np.ndarray:
    """The numeric column ``name`` of ``df`` as float64, refusing integers beyond
    :data:`EXACT_INTEGER` and infinite values with the row and the value named."""
    s = df[name]
    big = _beyond_exact(s)
    if big is not None:
        _refuse_beyond_exact(df, name, big)
    v = s.to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(v))
    if len(bad):
        raise DataError(f"column {name!r} holds {_plain(s.iloc[bad[0]])} at "
                        f"{_where(df, int(bad[0]))} ({len(bad)} of its values not finite): a "
                        f"table's numbers must be finite; replace them, or empty their cells "
                        f"and drop their rows with --missing drop (missing='drop')")
    return v


def _moments(df: Any, name: str, v: np.ndarray) -> tuple[float, float]:
    """The mean and standard deviation of a column, refusing values too large for them."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(v.mean()), float(v.std())
    if not (np.isfinite(mean) and np.isfinite(std)):
        i = int(np.argmax(np.abs(v)))
        raise DataError(f"column {name!r} holds {_plain(df[name].iloc[i])} at {_where(df, i)}, "
                        f"too large to standardise (its square overflows a float): rescale "
                        f"the column (change its unit, or take its logarithm)")
    return mean, std


def _check_names(names: list[str], what: str) -> None:
    """Refuse empty and repeated column names, naming them and their positions (from 1)."""
    empty = [i for i, n in enumerate(names, 1) if not n.strip()]
    if empty:
        index = (" (an empty first name is often a row index written with the table: drop "
                 "that column, or write the table without its index)") if empty[0] == 1 else ""
        raise DataError(f"{what} has no name for column {_and(empty)}: name every "
                        f"column{index}")
    seen: dict[str, list[int]] = {}
    for i, n in enumerate(names, 1):
        seen.setdefault(n, []).append(i)
    repeated = {n: at for n, at in seen.items() if len(at) > 1}
    if repeated:
        raise DataError(f"{what} names " + "; ".join(
            f"{n!r} more than once (columns {_and(at)})" for n, at in repeated.items())
            + ": give every column its own name")


def _and(items: list[Any]) -> str:
    """``1``, ``1 and 2``, ``1, 2 and 3``."""
    words = [str(i) for i in items]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


class TableTransformer:
    """Encode a table as floats (one per cell) and decode back exactly (see module docstring)."""

    def __init__(self, columns: list[Column], continuous: str = "standard",
                 integers: str = "discrete") -> None:
        if integers not in INTEGER_MODES:
            raise ConfigError(f"Expected integers to be one of {INTEGER_MODES} but got "
                              f"{integers!r}")
        self.columns = columns
        self.continuous = continuous
        self.integers = integers

    # ---- fitting ----------------------------------------------------------------------------
    @classmethod
    def fit(cls, table: Any, categorical: list[str] | tuple[str, ...] = (),
            continuous: str = "standard", missing: str = "error",
            numeric: list[str] | tuple[str, ...] = (),
            integers: str = "discrete") -> TableTransformer:
        """Learn the columns of ``table``.

        :param categorical: names of numeric columns to treat as categories (their values are
            then labels, exact: the way to keep integers beyond 2^53)
        :param str continuous: ``standard`` or ``quantile`` (for multi-modal or skewed columns)
        :param str missing: ``error`` (refuse missing values) or ``drop`` (drop their rows)
        :param numeric: names of two-valued numeric columns to keep continuous (not binary); a
            text or boolean column here, or a column also in ``categorical``, is refused
        :param str integers: ``discrete`` (integer-valued numeric columns get the mass of a
            Normal on their lattice, with the standard encoding) or ``continuous`` (a Normal
            density, as models fitted before integer columns were discrete)
        """
        if continuous not in ("standard", "quantile"):
            raise ConfigError(f"Expected continuous to be 'standard' or 'quantile' but got "
                              f"{continuous!r}")
        df = cls._frame(table, missing)
        unknown = [c for c in (*categorical, *numeric) if c not in df.columns]
        if unknown:
            raise DataError(f"no column named {', '.join(map(repr, unknown))}; the table has "
                            f"{', '.join(map(str, df.columns))}")
        both = [c for c in numeric if c in categorical]
        if both:
            raise ConfigError(f"column(s) {', '.join(map(repr, both))} named both categorical "
                              f"and numeric (--categorical and --numeric); name each in one")
        pd = _pandas()
        columns = []
        for name in df.columns:
            s = df[name]
            dtype = str(s.dtype)
            is_number = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
            big = _beyond_exact(s)  # integers no float holds: numbers, if the table says so
            is_number = is_number or (big is not None and s.map(_is_integer).all())
            if name in numeric and not is_number:
                raise DataError(f"column {name!r} is named in --numeric (numeric=) but holds "
                                f"{'booleans' if pd.api.types.is_bool_dtype(s) else 'text'} "
                                f"such as {_plain(s.iloc[0])!r}: numeric keeps a two-valued "
                                f"column of numbers continuous; leave {name!r} out of it")
            uniques = pd.unique(s)
            if is_number and name not in categorical:
                if len(uniques) == 2 and name not in numeric:  # exact labels, as classes
                    if big is None:
                        _check_numbers(df, name)  # no infinite label
                    columns.append(Column(str(name), "binary", dtype,
                                          sorted(_plain(u) for u in uniques)))
                    continue
                v = _check_numbers(df, name)
                mean, std = _moments(df, name, v)
                integral = bool(np.all(v == np.round(v)) and np.abs(v).max() <= EXACT_INTEGER)
                if integral and v.max() - v.min() >= _WIDE:
                    # an integer centre and a power-of-two scale: exact binary fractions
                    mean, std = float(np.round(mean)), float(2.0 ** np.round(np.log2(std)))
                col = Column(str(name), "integer" if integral else "continuous", dtype,
                             mean=mean, std=std or 1.0,
                             minimum=float(v.min()), maximum=float(v.max()),
                             decimals=0 if integral else _decimals(v))
                if continuous == "quantile":
                    col.values, col.scores = cls._quantile_map(v)
                columns.append(col)
            else:
                labels = sorted((_plain(u) for u in uniques), key=lambda u: (str(type(u)), u))
                kind = "binary" if len(labels) == 2 else "categorical"
                columns.append(Column(str(name), kind, dtype, labels))
        transformer = cls(columns, continuous, integers)
        transformer._warn_inexact(df)
        return transformer

    def _warn_inexact(self, df: Any) -> dict[str, float]:
        """Warn of the numeric columns whose training values do not come back exactly through
        the encoded cells (of the default dtype, float32 unless changed); return the largest
        difference per such column. A column whose values have more decimals than it keeps
        (``Column.decimals``: at most 10, to a billionth of its largest value) promises no
        exact digits and is not checked."""
        back = self.inverse_transform(self.transform(df))
        off = {}
        for col in self.columns:
            if col.kind in ("continuous", "integer"):
                a = df[col.name].to_numpy(dtype=float)
                b = back[col.name].to_numpy(dtype=float)
                if not np.array_equal(a, b) and np.array_equal(np.round(a, col.decimals), a):
                    off[col.name] = (int((a != b).sum()), float(np.abs(a - b).max()))
        if off:
            dtype = str(torch.get_default_dtype()).replace("torch.", "")
            logger.warning(
                "column(s) %s do not come back exactly through %s cells (inverse_transform "
                "of the training table): %s. A column spanning more than about 2^24 steps of "
                "its last digit is too fine for float32: rescale it, name a column of few "
                "classes in --categorical, or encode in float64 "
                "(torch.set_default_dtype(torch.float64) before fitting)",
                ", ".join(off), dtype,
                "; ".join(f"{n}: {k} of {len(df)} values, off by up to {d:.6g}"
                          for n, (k, d) in off.items()))
        return {n: d for n, (_, d) in off.items()}

    @staticmethod
    def _quantile_map(v: np.ndarray) -> tuple[list[float], list[float]]:
        from scipy.special import ndtri

        values, counts = np.unique(v, return_counts=True)
        cdf = (np.cumsum(counts) - 0.5 * counts) / counts.sum()
        # scores a float32 cell holds exactly: a training value's cell decodes to that value
        return values.tolist(), ndtri(cdf).astype(np.float32).astype(float).tolist()

    @staticmethod
    def _frame(table: Any, missing: str = "error"):
        pd = _pandas()
        if isinstance(table, pd.DataFrame):
            df = table.copy()
        elif isinstance(table, np.ndarray):
            if table.ndim != 2:
                raise DataError(f"Expected a 2-D table but got an array of shape {table.shape}")
            df = pd.DataFrame(table, columns=[f"c{i}" for i in range(table.shape[1])])
        else:
            raise DataError(f"Expected a pandas DataFrame or a 2-D numpy array but got "
                            f"{type(table).__name__}")
        if df.shape[0] == 0 or df.shape[1] == 0:
            raise DataError(f"the table is empty ({df.shape[0]} rows, {df.shape[1]} columns)")
        df.columns = [str(c) for c in df.columns]
        _check_names(list(df.columns), "the table")
        blank = df.isna() | df.apply(lambda s: s.astype(str).str.strip() == "")
        if blank.to_numpy().any():
            counts = blank.sum()
            where = ", ".join(f"{c} ({n})" for c, n in counts.items() if n)
            if missing == "drop":  # the index stays: errors name the rows of the table given
                df = df[~blank.any(axis=1)]
                if df.shape[0] == 0:
                    raise DataError(f"every row has a missing value ({where})")
            elif missing == "error":
                raise DataError(f"missing values in {where}; fill them in, or drop their rows "
                                f"with --missing drop (missing='drop')")
            else:
                raise ConfigError(f"Expected missing to be 'error' or 'drop' but got "
                                  f"{missing!r}")
        for name in df.columns:  # numbers stored as text: read them as numbers
            if df[name].dtype == object:
                exact = _integers_beyond_exact(df[name])
                if exact is not None:  # integers no float holds: kept exact
                    df[name] = pd.Series(exact, index=df.index, dtype=object)
                    continue
                converted = pd.to_numeric(df[name], errors="coerce")
                if converted.notna().all():
                    df[name] = converted
        return df

    # ---- encoding ---------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """The column names, in the table's order."""
        return [c.name for c in self.columns]

    def transform(self, table: Any, missing: str = "error") -> torch.Tensor:
        """Encode ``table`` (with the fitted columns) as a float tensor ``(rows, columns)``."""
        df = self._frame(table, missing)
        absent = [n for n in self.names if n not in df.columns]
        if absent:
            raise DataError(f"the table lacks column(s) {', '.join(absent)} that the model was "
                            f"fitted on")
        out = np.zeros((len(df), len(self.columns)))
        pd = _pandas()
        for j, col in enumerate(self.columns):
            s = df[col.name]
            if col.kind in ("continuous", "integer"):
                big = _beyond_exact(s)
                if big is not None:
                    _refuse_beyond_exact(df, col.name, big)
                if not pd.api.types.is_numeric_dtype(s):
                    raise DataError(f"column {col.name} should hold numbers but holds "
                                    f"{s.dtype} values such as {s.iloc[0]!r}")
                v = _check_numbers(df, col.name)
                out[:, j] = (np.interp(v, col.values, col.scores) if col.values
                             else (v - col.mean) / col.std)
            else:
                index = {str(c): i for i, c in enumerate(col.categories)}
                keys = s.map(lambda u: str(_plain(u)))
                unseen = sorted(set(keys) - set(index))
                if unseen:
                    raise DataError(f"column {col.name} has value(s) {', '.join(unseen[:5])} "
                                    f"not seen when the model was fitted (known: "
                                    f"{', '.join(map(str, col.categories[:10]))})")
                out[:, j] = keys.map(index).to_numpy(dtype=float)
        return torch.as_tensor(out, dtype=torch.get_default_dtype())

    def inverse_transform(self, x: torch.Tensor | np.ndarray):
        """Decode rows ``(n, columns)`` back to a ``DataFrame`` with the original columns,
        dtypes and categories."""
        pd = _pandas()
        x = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if x.ndim != 2 or x.shape[1] != len(self.columns):
            raise DataError(f"Expected rows of {len(self.columns)} values but got shape "
                            f"{x.shape}")
        data = {}
        for j, col in enumerate(self.columns):
            v = x[:, j]
            if col.kind in ("continuous", "integer"):
                v = np.interp(v, col.scores, col.values) if col.values else v * col.std + col.mean
                v = np.clip(v, col.minimum, col.maximum)
                v = np.round(v, col.decimals)
                data[col.name] = pd.Series(v).astype(col.dtype if col.kind == "integer" or
                                                      col.dtype.startswith("float")
                                                      else "float64")
            else:
                codes = np.clip(np.round(v), 0, len(col.categories) - 1).astype(int)
                labels = [col.categories[c] for c in codes]
                series = pd.Series(labels)
                try:
                    series = series.astype(col.dtype)
                except (TypeError, ValueError):
                    pass
                data[col.name] = series
        return pd.DataFrame(data)

    @property
    def integer_columns(self) -> list[str]:
        """The columns read as integers that the model treats as quantised (a lattice of
        integer values): empty with ``integers="continuous"`` or the quantile encoding; an
        integer column with values 2^23 or more from its centre is continuous (its lattice is
        finer than float32 resolves)."""
        return [c.name for c in self.columns if self._on_lattice(c)]

    def _on_lattice(self, column: Column) -> bool:
        reach = max(abs(column.minimum - column.mean), abs(column.maximum - column.mean))
        return (column.kind == "integer" and self.integers == "discrete"
                and self.continuous == "standard" and reach < _LATTICE_REACH)

    def schema(self) -> list[list[Any]]:
        """Column kinds for :class:`MixedObservation`: ``["continuous"]``,
        ``["integer", step, low, high]`` (the encoded lattice of an integer column: spacing
        ``1 / std``, lowest and highest values), ``["binary"]`` or ``["categorical", K]`` per
        column."""
        out: list[list[Any]] = []
        for c in self.columns:
            if self._on_lattice(c):
                out.append(["integer", 1.0 / c.std, (c.minimum - c.mean) / c.std,
                            (c.maximum - c.mean) / c.std])
            elif c.kind in ("continuous", "integer"):
                out.append(["continuous"])
            elif c.kind == "binary":
                out.append(["binary"])
            else:
                out.append(["categorical", max(len(c.categories), 1)])
        return out

    # ---- files ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """A JSON-serialisable description of the fitted encoding (:meth:`from_state`)."""
        return {"format": "pyro-lvae-table", "version": 2, "continuous": self.continuous,
                "integers": self.integers, "columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_state(cls, state: dict[str, Any], source: str = "state") -> TableTransformer:
        """Rebuild from :meth:`state`; ``source`` names it in error messages."""
        if not isinstance(state, dict) or state.get("format") != "pyro-lvae-table":
            raise CheckpointError(f"{source} is not a pyro-lvae table transform")
        try:
            # version 1 (no "integers") modelled integer columns with a Normal density
            return cls([Column(**c) for c in state["columns"]], state["continuous"],
                       state.get("integers", "continuous"))
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{source} is incomplete or corrupt ({e})") from None

    def save(self, path: str | Path) -> None:
        """Write the encoding as JSON (atomically)."""
        atomic_write_text(json.dumps(self.state(), indent=1) + "\n", path)

    @classmethod
    def load(cls, path: str | Path) -> TableTransformer:
        """Read an encoding written by :meth:`save`."""
        try:
            state = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise CheckpointError(f"no such file: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path} is corrupt (not JSON)") from None
        return cls.from_state(state, str(path))


def _blank(record: list[str]) -> bool:
    return not record or (len(record) == 1 and not record[0].strip())


def _csv_lines(path: Path) -> list[int] | None:
    """Check the header and the field count of every record of a CSV file; return the line on
    which each data record starts (``None`` for a file without a header)."""
    limit = csv.field_size_limit(2**31 - 1)  # a long text field is no error here
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header, lines, line = None, [], 0
            for record in reader:
                start, line = line + 1, reader.line_num
                if _blank(record):
                    continue
                if header is None:
                    header = record
                    _check_names(record, f"the header of {path}")
                elif len(record) != len(header):
                    raise DataError(f"line {start} of {path} has {len(record)} "
                                    f"field{'s' * (len(record) != 1)} but the header has "
                                    f"{len(header)}: every row needs one value per column "
                                    f"(quote a value that holds a comma)")
                else:
                    lines.append(start)
    except (csv.Error, UnicodeDecodeError) as e:
        raise DataError(f"cannot parse {path} as CSV: {str(e).splitlines()[0]}") from None
    finally:
        csv.field_size_limit(limit)
    return None if header is None else lines


def read_csv(path: str | Path):
    """Read a CSV file into a ``DataFrame`` with clear errors for missing, empty and malformed
    files: an empty or repeated name in the header, and a row with more or fewer fields than
    the header, are refused with the line named. The rows' lines are kept (``attrs``) for the
    errors of :class:`TableTransformer` to name."""
    pd = _pandas()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    lines = _csv_lines(path)
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"cannot parse {path} as CSV: {str(e).splitlines()[0]}") from None
    if df.shape[0] == 0:
        raise DataError(f"{path} has a header but no rows")
    if lines is not None and len(lines) == len(df):
        df.attrs.update(csv_lines=lines, csv_source=str(path))
    return df
