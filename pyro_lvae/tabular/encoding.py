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
integer         as continuous; back: rounded to integers within the observed range. With the
                standard encoding (and ``integers="discrete"``, the default) the column keeps
                its lattice: the mixed observation model gives it the mass of a Normal on
                its integer values (edge values open), not a density
binary          two values -> 0 / 1 (a Bernoulli column)
categorical     labels -> codes 0 .. K-1 (a Categorical column); labels never seen in training
                are refused
==============  ===========================================================================

Text, boolean and pandas categorical columns are categorical (booleans and two-valued columns
binary); numbers are continuous unless named in ``categorical``. Missing values are refused with
the columns and counts named, or dropped with ``missing="drop"``. Round trip: for the training
table, ``inverse_transform(transform(t))`` equals ``t`` exactly (tested).

:class:`~pyro_lvae.observations.MixedObservation` is ``p(x | z)`` for such rows (its
``schema`` comes from :meth:`TableTransformer.schema`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, DataError
from ..io import atomic_write_text

__all__ = ["Column", "TableTransformer", "read_csv", "INTEGER_MODES"]

#: how integer-valued numeric columns are modelled: on their lattice, or as continuous
INTEGER_MODES = ("discrete", "continuous")


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

        :param categorical: names of numeric columns to treat as categories
        :param str continuous: ``standard`` or ``quantile`` (for multi-modal or skewed columns)
        :param str missing: ``error`` (refuse missing values) or ``drop`` (drop their rows)
        :param numeric: names of two-valued numeric columns to keep continuous (not binary)
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
        pd = _pandas()
        columns = []
        for name in df.columns:
            s = df[name]
            dtype = str(s.dtype)
            is_number = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
            uniques = pd.unique(s)
            if is_number and name not in categorical:
                v = s.to_numpy(dtype=float)
                if len(uniques) == 2 and name not in numeric:
                    columns.append(Column(str(name), "binary", dtype,
                                          sorted(_plain(u) for u in uniques)))
                    continue
                integral = bool(np.all(v == np.round(v)))
                col = Column(str(name), "integer" if integral else "continuous", dtype,
                             mean=float(v.mean()), std=float(v.std()) or 1.0,
                             minimum=float(v.min()), maximum=float(v.max()),
                             decimals=0 if integral else _decimals(v))
                if continuous == "quantile":
                    col.values, col.scores = cls._quantile_map(v)
                columns.append(col)
            else:
                labels = sorted((_plain(u) for u in uniques), key=lambda u: (str(type(u)), u))
                kind = "binary" if len(labels) == 2 else "categorical"
                columns.append(Column(str(name), kind, dtype, labels))
        return cls(columns, continuous, integers)

    @staticmethod
    def _quantile_map(v: np.ndarray) -> tuple[list[float], list[float]]:
        from scipy.special import ndtri

        values, counts = np.unique(v, return_counts=True)
        cdf = (np.cumsum(counts) - 0.5 * counts) / counts.sum()
        return values.tolist(), ndtri(cdf).tolist()

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
        if len(set(df.columns)) != len(df.columns):
            raise DataError("the table has duplicate column names")
        blank = df.isna() | df.apply(lambda s: s.astype(str).str.strip() == "")
        if blank.to_numpy().any():
            counts = blank.sum()
            where = ", ".join(f"{c} ({n})" for c, n in counts.items() if n)
            if missing == "drop":
                df = df[~blank.any(axis=1)].reset_index(drop=True)
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
                if not pd.api.types.is_numeric_dtype(s):
                    raise DataError(f"column {col.name} should hold numbers but holds "
                                    f"{s.dtype} values such as {s.iloc[0]!r}")
                v = s.to_numpy(dtype=float)
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
        integer values): empty with ``integers="continuous"`` or the quantile encoding."""
        return [c.name for c in self.columns if self._on_lattice(c)]

    def _on_lattice(self, column: Column) -> bool:
        return (column.kind == "integer" and self.integers == "discrete"
                and self.continuous == "standard")

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


def read_csv(path: str | Path):
    """Read a CSV file into a ``DataFrame`` with clear errors for missing, empty and malformed
    files."""
    pd = _pandas()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"cannot parse {path} as CSV: {str(e).splitlines()[0]}") from None
    if df.shape[0] == 0:
        raise DataError(f"{path} has a header but no rows")
    return df
