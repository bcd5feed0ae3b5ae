"""Experiments that reproduce the paper's results (long runs; each writes tables and figures).

Each study module has a settings dataclass (a :class:`Study`), ``run_study(study, workers)``
and ``write_outputs(study, results, folder)``; ``pyro-lvae reproduce NAME`` runs one.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Study:
    """Base of the studies' settings dataclasses: :meth:`quick` applies ``QUICK``, the settings
    that finish in minutes on two CPU cores, then the caller's overrides."""

    QUICK: ClassVar[dict[str, Any]] = {}

    @classmethod
    def quick(cls, **overrides: Any):
        return cls(**{**cls.QUICK, **overrides})
