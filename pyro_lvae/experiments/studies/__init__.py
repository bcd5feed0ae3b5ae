"""Experiments that reproduce the paper's results (long runs; each writes tables and figures).

Each study module has a settings dataclass (a :class:`Study`), ``run_study(study, workers)``
and ``write_outputs(study, results, folder)``; ``pyro-lvae reproduce NAME`` runs one.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np


class Study:
    """Base of the studies' settings dataclasses: :meth:`quick` applies ``QUICK``, the settings
    that finish in minutes on two CPU cores, then the caller's overrides."""

    QUICK: ClassVar[dict[str, Any]] = {}

    @classmethod
    def quick(cls, **overrides: Any):
        return cls(**{**cls.QUICK, **overrides})


def paired_differences(a: list[dict[str, Any]], b: list[dict[str, Any]],
                       key: str = "elbo") -> np.ndarray:
    """``key`` of the runs ``a`` minus ``key`` of the runs ``b``, for the seeds both have, in
    seed order."""
    xa = {r["seed"]: r[key] for r in a}
    xb = {r["seed"]: r[key] for r in b}
    return np.array([xa[s] - xb[s] for s in sorted(set(xa) & set(xb))], dtype=float)


def mean_and_se(diff: np.ndarray) -> tuple[float, float, int]:
    """The mean of ``diff``, its standard error (nan with fewer than two values) and the number
    of values."""
    n = len(diff)
    if not n:
        return math.nan, math.nan, 0
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(diff.mean()), se, n


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str = "elbo"
           ) -> tuple[float, float, int]:
    """:func:`mean_and_se` of :func:`paired_differences`: mean of ``a - b`` in ``key`` over the
    seeds both have, its standard error and the number of seeds."""
    return mean_and_se(paired_differences(a, b, key))


def mean_sd(mean: float, sd: float, digits: int = 3) -> str:
    """``mean ± sd`` for a table (the mean alone when ``sd`` is nan, from one seed)."""
    return f"{mean:.{digits}f}" if math.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"
